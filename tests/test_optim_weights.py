"""The TorchScript weights contract: round trip, plain-torch loading, checksums."""
import json
import os
import subprocess
import sys

import pytest
import torch

from metaphys.optim.metamizer import MetamizerNet
from metaphys.optim.weights import WeightsError, export_torchscript, load_torchscript


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = MetamizerNet(hidden=6)
    # train-mode forward passes give BatchNorm non-trivial running statistics to fold
    net.train()
    with torch.no_grad():
        for _ in range(3):
            g = torch.randn(4, 1, 20, 20, dtype=torch.float64)
            net(g, g, g, torch.full((4,), 0.05, dtype=torch.float64))
    net.eval()
    path = str(tmp_path_factory.mktemp("w") / "metamizer.pt")
    meta = export_torchscript(net, path, {"training": {"steps": 0}})
    return net, path, meta


@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (2, 1, 17, 23), (1, 1, 40, 33)])
def test_scripted_equals_eager(exported, shape):
    net, path, _ = exported
    scripted = load_torchscript(path)
    g = torch.randn(shape, dtype=torch.float64)
    pg = torch.randn(shape, dtype=torch.float64)
    ps = torch.randn(shape, dtype=torch.float64)
    sc = torch.rand(shape[0], dtype=torch.float64) + 0.01
    with torch.no_grad():
        a_step, a_scale = net(g, pg, ps, sc)
        b_step, b_scale = scripted(g, pg, ps, sc)
    assert b_step.dtype == torch.float64 and b_scale.dtype == torch.float64
    assert b_step.shape == shape and b_scale.shape == (shape[0],)
    assert torch.allclose(a_step, b_step, rtol=1e-6, atol=1e-6 * float(a_step.abs().max()))
    assert torch.allclose(a_scale, b_scale, rtol=1e-6)


def test_loads_with_plain_torch_without_metaphys(exported, tmp_path):
    _, path, _ = exported
    code = (
        "import sys, torch\n"
        f"m = torch.jit.load({path!r})\n"
        "z = torch.zeros(2, 1, 18, 18, dtype=torch.float64)\n"
        "g = torch.randn(2, 1, 18, 18, dtype=torch.float64)\n"
        "step, s = m(g, z, z, torch.full((2,), 0.05, dtype=torch.float64))\n"
        "assert step.shape == (2, 1, 18, 18) and s.shape == (2,)\n"
        "assert 'metaphys' not in sys.modules\n"
        "print('ok')\n")
    env = dict(os.environ, PYTHONPATH="")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path), env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_metadata_records_architecture_and_checksum(exported):
    _, path, meta = exported
    with open(os.path.splitext(path)[0] + ".json") as fh:
        on_disk = json.load(fh)
    assert on_disk == meta
    assert on_disk["hidden"] == 6 and on_disk["padding_mode"] == "zeros" and len(on_disk["sha256"]) == 64


def test_checksum_mismatch_names_the_file(exported, tmp_path):
    _, path, _ = exported
    bad = tmp_path / "metamizer.pt"
    data = bytearray(open(path, "rb").read())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "metamizer.json").write_text(open(os.path.splitext(path)[0] + ".json").read())
    with pytest.raises(WeightsError, match="checksum mismatch for .*metamizer.pt"):
        load_torchscript(str(bad))


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="not found: .*nothing.pt"):
        load_torchscript(str(tmp_path / "nothing.pt"))


def test_missing_metadata_is_an_error(exported, tmp_path):
    _, path, _ = exported
    lonely = tmp_path / "lonely.pt"
    lonely.write_bytes(open(path, "rb").read())
    with pytest.raises(WeightsError, match="lonely.json"):
        load_torchscript(str(lonely))


def test_no_torchscript_deprecation_warning_reaches_the_user(exported, recwarn):
    _, path, _ = exported
    load_torchscript(path)
    assert not [w for w in recwarn if "TorchScript" in str(w.message) or "torch.jit" in str(w.message)]


def test_metamizer_accepts_a_weights_path_and_rejects_other_types(tmp_path):
    import pytest
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.weights import WeightsError, default_weights_path
    opt = Metamizer(default_weights_path())
    assert hasattr(opt.model, "forward")
    with pytest.raises(TypeError, match="MetamizerNet, a TorchScript module or a path"):
        Metamizer(42)
    with pytest.raises(WeightsError, match="not found"):
        Metamizer(str(tmp_path / "missing.pt"))


def test_a_truncated_weights_file_is_a_weights_error(tmp_path):
    import json
    import shutil
    import pytest
    from metaphys.optim.weights import WeightsError, default_weights_path, load_torchscript, sha256_of
    src = default_weights_path()
    dst = tmp_path / "metamizer.pt"
    data = open(src, "rb").read()
    dst.write_bytes(data[: len(data) // 2])
    meta = json.load(open(src[:-3] + ".json"))
    meta["sha256"] = sha256_of(str(dst))  # a matching checksum: only the archive itself is broken
    (tmp_path / "metamizer.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="not a readable TorchScript file"):
        load_torchscript(str(dst))


# ---- the self-test at load: a checksum does not prove the weights can solve anything ----------------------
def _untrained_weights(tmp_path, nan=False):
    """Weights exported with a matching checksum: untrained (random init) or with NaN parameters."""
    from metaphys.optim.weights import default_weights_path, sha256_of
    torch.manual_seed(3)
    path = tmp_path / ("nan.pt" if nan else "untrained.pt")
    if nan:
        model = load_torchscript(default_weights_path())
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
        torch.jit.save(model, str(path))
        meta = json.load(open(os.path.splitext(default_weights_path())[0] + ".json"))
        meta["sha256"] = sha256_of(str(path))
        path.with_suffix(".json").write_text(json.dumps(meta))
    else:
        export_torchscript(MetamizerNet(), str(path))
    return path


def test_shipped_weights_pass_the_self_test_with_a_small_fixed_amount_of_work(weights_path):
    """Every load runs the self-test, so its cost is bounded by its work -- a handful of network steps on a
    32² grid, counted here -- not by a wall-clock limit (which a loaded CI machine broke: 0.23 s > 0.2 s)."""
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim import weights as W
    opt = Metamizer(weights_path)
    calls = []
    forward = opt.model.forward
    opt.model = _Counting(forward, calls)
    W.self_test(opt, None, weights_path)
    assert 0 < len(calls) <= W.SELF_TEST_ITERATIONS <= 20
    assert all(tuple(shape[-2:]) == (W.SELF_TEST_SIZE,) * 2 for shape in calls) and W.SELF_TEST_SIZE <= 32
    # the check is real: the residual it demands is far below where the problem starts
    p = W.self_test_problem()
    assert float(p.residual(p.initial_guess()).max()) > 1e-3


class _Counting:
    """A network stand-in that records the grid shape of every forward and passes it on."""

    def __init__(self, forward, calls):
        self.forward, self.calls = forward, calls

    def __call__(self, grad, *rest):
        self.calls.append(tuple(grad.shape))
        return self.forward(grad, *rest)

    def parameters(self):
        return iter(())


@pytest.mark.parametrize("nan", [False, True], ids=["untrained", "nan"])
def test_weights_that_cannot_solve_are_a_weights_error(tmp_path, nan):
    from metaphys.sims.common import default_optimizer
    path = _untrained_weights(tmp_path, nan)
    with pytest.raises(WeightsError, match=f"the weights {path} cannot solve: on the self-test") as info:
        default_optimizer("cpu", weights=path)
    assert ("residual nan" if nan else "the residual went from") in str(info.value)


def test_self_test_verdict_is_cached_per_sha256(tmp_path, monkeypatch):
    from metaphys.optim import weights as W
    from metaphys.optim.metamizer import Metamizer
    path = _untrained_weights(tmp_path)
    opt = Metamizer(str(path))
    sha = W.sha256_of(str(path))
    monkeypatch.setattr(W, "_SELF_TESTS", {})  # earlier tests may have cached these very weights
    calls = []
    import metaphys.optim.solve as S
    real = S.iterate
    monkeypatch.setattr(S, "iterate", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(3):
        with pytest.raises(WeightsError, match="cannot solve"):
            W.self_test(opt, sha, str(path))
    assert len(calls) == 1  # the failure is remembered, not recomputed
    W.self_test(Metamizer(W.default_weights_path()), "shipped-key", "shipped")
    W.self_test(Metamizer(W.default_weights_path()), "shipped-key", "shipped")
    assert len(calls) == 2


def test_cli_bake_with_untrained_weights_exits_2(tmp_path):
    path = _untrained_weights(tmp_path)
    out = tmp_path / "o"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "metaphys", "bake", "smoke", "--out", str(out), "--size", "16",
                        "--frames", "1", "--iterations", "2", "--weights", str(path), "--progress", "none"],
                       capture_output=True, text=True, cwd=root, env=dict(os.environ, OMP_NUM_THREADS="1"),
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"the weights {path} cannot solve" in r.stderr
    assert not (out / "manifest.json").exists()


def test_the_published_eval_describes_the_shipped_weights():
    """benchmarks/results/eval.md (the README's accuracy table, the model card's `report`) must be
    the evaluation of the weights that ship: its header names their sha256. Shipping new weights
    without rerunning `metaphys eval` fails here."""
    import json
    import os
    import re
    from metaphys.optim.weights import default_weights_path, sha256_of
    src = default_weights_path()
    sha = sha256_of(src)
    assert json.load(open(src[:-3] + ".json"))["sha256"] == sha
    report = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results", "eval.md")
    header = open(report, encoding="utf-8").read(2000)
    shown = re.search(r"sha256 ([0-9a-f]{8,64})", header)
    assert shown, "eval.md does not name the weights' sha256"
    assert sha.startswith(shown.group(1)), f"eval.md evaluated {shown.group(1)}..., the shipped weights are {sha[:16]}..."


def test_weights_load_from_every_format_without_unpickling(tmp_path, weights_path):
    """Snapshot, checkpoint, raw state dict and shipped TorchScript all give the network's weights;
    a snapshot of another network is a WeightsError naming the file, not a traceback."""
    from metaphys.optim.metamizer import MetamizerNet
    from metaphys.optim.weights import WeightsError, load_state_dict_any, model_from_snapshot
    net = MetamizerNet(hidden=4)
    sd = net.state_dict()
    torch.save({"ema": sd, "step": 3, "hidden": 4, "padding_mode": "zeros"}, tmp_path / "snap.pt")
    torch.save({"model": sd, "ema": sd, "config": {"hidden": 4}}, tmp_path / "checkpoint.pt")
    torch.save(sd, tmp_path / "raw.pt")
    for name in ("snap.pt", "checkpoint.pt", "raw.pt"):
        got = load_state_dict_any(str(tmp_path / name))
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    assert model_from_snapshot(str(tmp_path / "checkpoint.pt")).hidden == 4
    shipped = load_state_dict_any(weights_path)  # TorchScript: unfolded BatchNorm
    assert any(k.endswith("running_var") for k in shipped)
    torch.save({"ema": MetamizerNet(hidden=6).state_dict(), "hidden": 4}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"other\.pt does not hold weights of this network"):
        model_from_snapshot(str(tmp_path / "other.pt"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match=r"list\.pt is not a metaphys training snapshot or checkpoint"):
        model_from_snapshot(str(tmp_path / "list.pt"))


def test_two_exports_of_the_same_network_are_the_same_bytes(exported, tmp_path):
    """The eval that ships names the exported file's sha256: exporting the same snapshot again must give
    that file, not one whose archive differs by a temp file's random name."""
    net, path, meta = exported
    again = str(tmp_path / "elsewhere" / "metamizer.pt")
    assert export_torchscript(net, again, {"training": {"steps": 0}})["sha256"] == meta["sha256"]
    assert open(again, "rb").read() == open(path, "rb").read()
    assert torch.equal(load_torchscript(again)(*(torch.ones(1, 1, 16, 16, dtype=torch.float64),) * 3,
                                               torch.full((1,), 0.05, dtype=torch.float64))[0],
                       load_torchscript(path)(*(torch.ones(1, 1, 16, 16, dtype=torch.float64),) * 3,
                                              torch.full((1,), 0.05, dtype=torch.float64))[0])
