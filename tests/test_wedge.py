"""`metaphys wedge`: variants expanded and validated before anything runs; a 3-variant wedge on a local
Ray instance (2 CPUs, started once for the module) bakes each variant exactly as the same bake run
alone; the contact sheet; resume skips finished variants; a failed variant does not stop the others."""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from metaphys.bake import wedge as W
from metaphys.bake.contact_sheet import sheet_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"resolution": [16, 16], "frames": 3, "iterations_per_step": 5}  # a smoke bake of about a second


def smoke_wedge(parameters, mode="product", base=None):
    return W.expand({"kind": "smoke", "base": dict(TINY if base is None else base), "parameters": parameters,
                     "mode": mode})


# ---- expansion and validation (no Ray) --------------------------------------------------------------------
def test_product_and_zip_expand_in_order_with_deterministic_names():
    w = smoke_wedge({"buoyancy": [1, 2], "viscosity": {"geomspace": [1e-4, 1e-2, 3]}})
    assert len(w.variants) == 6
    assert [v.values for v in w.variants[:3]] == [{"buoyancy": 1, "viscosity": 1e-4},
                                                  {"buoyancy": 1, "viscosity": pytest.approx(1e-3)},
                                                  {"buoyancy": 1, "viscosity": 1e-2}]
    assert w.variants[0].name == "00_buoyancy=1_viscosity=0.0001" and w.variants[5].name == "05_buoyancy=2_viscosity=0.01"
    assert w.variants[4].spec == {**TINY, "buoyancy": 2, "viscosity": pytest.approx(1e-3)}
    assert smoke_wedge({"buoyancy": [1, 2], "viscosity": {"geomspace": [1e-4, 1e-2, 3]}}).variants[3].name == \
        w.variants[3].name  # the same description names the same folders
    z = smoke_wedge({"smoke.buoyancy": {"linspace": [0, 1, 3]}, "frames": {"range": [2, 5]}}, mode="zip")
    assert [v.spec["buoyancy"] for v in z.variants] == [0.0, 0.5, 1.0]
    assert [v.spec["frames"] for v in z.variants] == [2, 3, 4]
    # a path into a list the base spec lacks starts from the schema's default
    wind = smoke_wedge({"wind.1": [0.5, 1.5]}).variants
    assert [v.spec["wind"] for v in wind] == [[0.0, 0.5], [0.0, 1.5]]
    assert len(smoke_wedge({}).variants) == 1  # no parameters: the base spec alone


@pytest.mark.parametrize("wedge, message", [
    ({"kind": "smoke", "paramters": {}}, 'unknown wedge key "paramters" (did you mean "parameters"?)'),
    ({"kind": "fire"}, 'kind: expected "cloth" or "smoke", got "fire"'),
    ({"kind": "smoke", "parameters": {"buoyancy": []}}, "parameters.buoyancy: the list of values is empty"),
    ({"kind": "smoke", "parameters": {"buoyancy": {"linspace": [0, 1]}}}, "parameters.buoyancy.linspace: expected [start, stop, n]"),
    ({"kind": "smoke", "parameters": {"buoyancy": {"logspace": [0, 1, 2]}}}, "expected a list of values or one of"),
    ({"kind": "smoke", "parameters": {"a": [1, 2], "b": [1]}, "mode": "zip"}, "every list must have the same length"),
    ({"kind": "cloth", "base": {"colliders": [{"type": "sphere", "center": [0, 0, 0], "radius": 0.2}]},
      "parameters": {"colliders.3.radius": [0.1]}}, 'parameters.colliders.3.radius: "3" is not an index of a list of 1'),
    ({"kind": "cloth", "parameters": {"colliders.0.radius": [0.1]}}, 'the base spec has no "colliders"'),
])
def test_bad_descriptions_are_refused_naming_the_key(wedge, message):
    with pytest.raises(W.WedgeError) as err:
        W.expand(wedge)
    assert message in str(err.value) and err.value.code == 2


def test_every_variant_is_validated_by_the_bake_schema_naming_variant_and_key():
    W.validate_variants(smoke_wedge({"buoyancy": [1.0, 2.0]}))  # valid: no error
    with pytest.raises(W.WedgeError) as err:
        W.validate_variants(smoke_wedge({"viscosity": [1e-3, -1.0], "buoyancy": [1.0, 2.0]}))
    text = str(err.value)
    assert "variant 2 (viscosity=-1, buoyancy=1) and 1 more: viscosity: expected a number >= 0" in text
    assert "variant 0" not in text and "nothing was baked" in text
    with pytest.raises(W.WedgeError, match='every variant: buoyncy: unknown key; did you mean "buoyancy"'):
        W.validate_variants(smoke_wedge({"buoyncy": [1.0, 2.0]}))
    with pytest.raises(W.WedgeError, match='a smoke bake spec has no "seed" key'):
        W.validate_variants(W.expand({"kind": "smoke", "base": TINY, "seeds": {"range": [0, 4]}}))


def test_the_cli_refuses_a_bad_wedge_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "smoke", "base": TINY, "parameters": {"buoyancy": [1.0, "up"]}}))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "metaphys", "wedge", str(bad), "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'variant 1 (buoyancy=up): buoyancy: expected a number' in r.stderr
    assert not out.exists()
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"kind": "smoke", "base": TINY, "parameters": {"buoyancy": [1.0, 2.0]}}))
    code = "import sys; from metaphys.cli import main; rc = main(sys.argv[1:]); assert 'ray' not in sys.modules; " \
           "sys.exit(rc)"  # --list: validated, Ray not imported
    r = subprocess.run([sys.executable, "-c", code, "wedge", str(good), "--list"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["00_buoyancy=1\tbuoyancy=1", "01_buoyancy=2\tbuoyancy=2"]


# ---- on a local Ray instance --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 1024 * 1024)
    yield ray
    ray.shutdown()


def cli_bake(argv):
    from metaphys.cli import main
    return main(argv)


def run(wedge, out, **kw):
    from metaphys.cli import main
    W.validate_variants(wedge)
    return W.run_wedge(wedge, str(out), main, progress="none", **kw)


def files_of(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def zip_records(path):
    """A torch.save archive's records, without the archive's folder name (torch names it after the
    temporary file the bake's atomic write used, so it differs between any two bakes)."""
    with zipfile.ZipFile(path) as z:
        return {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}


TIMING = {"created", "updated", "wall_time_s"}


def assert_same_bake(a, b):
    assert files_of(a) == files_of(b)
    for rel in files_of(a):
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        if rel == "manifest.json":
            ma, mb = json.load(open(pa)), json.load(open(pb))
            assert {k for k in ma if ma[k] != mb[k]} <= TIMING | {"frames"}
            for fa, fb in zip(ma["frames"], mb["frames"]):  # every frame file's sha256 the same
                assert {k for k in fa if fa[k] != fb[k]} <= {"wall_s", "state_sha256"}
        elif rel.startswith(".state" + os.sep):
            assert zip_records(pa) == zip_records(pb), rel
        else:
            assert open(pa, "rb").read() == open(pb, "rb").read(), rel


def test_three_variant_wedge_bakes_each_variant_as_the_bake_alone(ray_local, tmp_path):
    # no VDB files: OpenVDB's header holds a random file UUID (io/vdbfile.py), so no two bakes share their bytes
    wedge = smoke_wedge({"buoyancy": [1.0, 4.0, 8.0], "emitter_heat": [0.0, 0.0, 3.0]}, mode="zip",
                        base={**TINY, "vdb": False})
    out = tmp_path / "wedge"
    result = run(wedge, out, contact_cell=64)
    m = json.load(open(out / "wedge.json"))
    assert result.exit_code == 0 and m["status"] == "complete" and m["counts"] == {"complete": 3}
    assert [v["status"] for v in m["variants"]] == ["complete"] * 3
    assert all(v["torch_threads"] == 1 and v["exit_code"] == 0 for v in m["variants"])
    assert m["settings"]["threads"] == 1 and m["settings"]["ray"]
    densities = []
    for v in m["variants"]:
        folder = out / v["folder"]
        bm = json.load(open(folder / "manifest.json"))
        assert bm["status"] == "complete" and bm["settings"]["threads"] == 1
        assert bm["parameters"]["buoyancy"] == v["values"]["buoyancy"]
        alone = tmp_path / "alone" / v["folder"]  # the same bake, run alone, from the spec file the wedge wrote
        argv = W.bake_argv("smoke", str(out / v["spec_file"]), str(alone), threads=1)
        assert cli_bake(argv) == 0
        assert_same_bake(str(alone), str(folder))
        densities.append(np.load(folder / "density" / "density_0003.npz")["density"])
    assert not np.array_equal(densities[0], densities[2])  # the parameters reached the bakes
    from PIL import Image
    sheet = m["contact_sheet"]
    width, height, columns, rows = sheet_size(3, 1 + 2 + 1, 64)  # index, 2 values, frame number
    with Image.open(out / "contact_sheet.png") as img:
        assert img.size == (width, height) == tuple(sheet["size"]) and (columns, rows) == (2, 2)
        px = np.asarray(img.convert("RGB"))
    cells = [px[4 + r * (64 + 4 * 12 + 4):][:64, 4 + c * 68:][:, :64] for r, c in ((0, 0), (0, 1), (1, 0))]
    assert all(cell.std() > 0 for cell in cells) and not np.array_equal(cells[0], cells[2])
    assert sheet["frames_shown"] == [3, 3, 3]


def test_resume_bakes_only_unfinished_variants(ray_local, tmp_path):
    wedge = smoke_wedge({"buoyancy": [1.0, 2.0]}, base={**TINY, "frames": 2, "flipbook": False, "vdb": False})
    out = tmp_path / "wedge"
    assert run(wedge, out).exit_code == 0
    with pytest.raises(W.WedgeError, match="is not empty: it holds a wedge"):
        run(wedge, out)
    first, second = (out / v.name for v in wedge.variants)
    stamps = {f: os.stat(first / f).st_mtime_ns for f in files_of(first)}
    m = json.load(open(out / "wedge.json"))
    m["variants"][1]["status"] = "cancelled"  # as a Ctrl-C leaves it: its bake stopped after frame 1
    json.dump(m, open(out / "wedge.json", "w"))
    bm = json.load(open(second / "manifest.json"))
    last = (second / "density" / "density_0002.npz").read_bytes()
    partial = dict(bm, status="cancelled", frames=bm["frames"][:1], frames_done=1)
    json.dump(partial, open(second / "manifest.json", "w"))
    (second / "density" / "density_0002.npz").unlink()
    result = run(wedge, out, resume=True)
    assert (result.exit_code, result.ran, result.skipped) == (0, 1, 1)
    assert {f: os.stat(first / f).st_mtime_ns for f in files_of(first)} == stamps  # untouched
    runs = (out / "logs" / f"{wedge.variants[1].name}.log").read_text().split("$ metaphys bake")
    assert len(runs) == 3 and runs[2].splitlines()[0].endswith("--resume")  # the log goes on
    resumed = json.load(open(second / "manifest.json"))
    assert resumed["status"] == "complete" and [f["sha256"] for f in resumed["frames"]] == \
        [f["sha256"] for f in bm["frames"]]
    assert (second / "density" / "density_0002.npz").read_bytes() == last  # frame 2 baked again, the same
    other = smoke_wedge({"buoyancy": [1.0, 3.0]}, base={**TINY, "frames": 2, "flipbook": False, "vdb": False})
    with pytest.raises(W.WedgeError, match="made from a different description"):
        run(other, out, resume=True)


def test_a_failed_variant_is_recorded_and_the_others_finish(ray_local, tmp_path):
    wedge = smoke_wedge({"buoyancy": [1.0, 2.0]}, base={**TINY, "frames": 1, "flipbook": False, "vdb": False})
    out = tmp_path / "wedge"
    (out / wedge.variants[0].name).mkdir(parents=True)
    (out / wedge.variants[0].name / "preview.gif").write_text("not a bake's")  # the bake refuses this folder
    with pytest.raises(W.WedgeError, match="is not empty"):
        run(wedge, out)
    result = run(wedge, out, force=True)
    m = result.manifest
    assert result.exit_code == 1 and m["status"] == "failed"
    bad, good = m["variants"]
    assert bad["status"] == "failed" and bad["exit_code"] == 2 and "preview.gif" in bad["error"]
    assert good["status"] == "complete"
    assert (out / wedge.variants[0].name / "preview.gif").read_text() == "not a bake's"


def test_the_readme_wedge_example_is_a_valid_wedge():
    """The README's `metaphys wedge` command names a wedge file that expands to the variants it says."""
    import re
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().split("## Wedges", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"metaphys wedge (\S+) --out \S+ --workers 2 +# (\d+) variants", text)
    assert commands, "the README's Wedges section lost its example command"
    for path, count in commands:
        wedge = W.expand(W.read_wedge(os.path.join(ROOT, path)))
        assert len(W.validate_variants(wedge)) == len(wedge.variants) == int(count)
