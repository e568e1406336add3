"""The README's "Use from Python" snippets run as written (the cloth/smoke one on tiny sizes: every
substitution must still match the README, so the test fails when the snippet changes); the export
snippet continues the cloth/smoke one and writes into a temporary folder."""
import os
import re

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# snippet index -> (README text, tiny replacement); only sizes and frame counts change
TINY = {0: [("ClothSim(32, 32,", "ClothSim(16, 16,"), ("cloth.run(48)", "cloth.run(2)"),
            ("SmokeSim((64, 64),", "SmokeSim((16, 16),"), ("smoke.run(48)", "smoke.run(2)")]}


def snippets():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def run_snippet(index, monkeypatch, ns=None, cwd=ROOT):
    """Run snippet ``index`` in ``cwd`` (the checkout: snippets name weights/metamizer.pt relative to
    it), in the namespace ``ns`` of earlier snippets it continues; returns that namespace."""
    code = snippets()[index]
    for old, new in TINY.get(index, []):
        assert old in code, f"README snippet {index} no longer contains {old!r}: update TINY"
        code = code.replace(old, new)
    monkeypatch.chdir(cwd)
    torch.set_num_threads(1)
    ns = {} if ns is None else ns
    exec(compile(code, f"README.md python block {index}", "exec"), ns)
    return ns


def test_the_readme_has_the_python_snippets_this_test_runs():
    blocks = snippets()
    assert len(blocks) == 5
    for name in ("write_pc2", "write_cloth_usd", "write_flipbook"):
        assert name in blocks[1]
    for name in ('"rotation"', '"mesh"', "friction", "self_collision"):
        assert name in blocks[2]
    for name in ("DiffusionSim", "WaveSim", "BurgersSim", "solve_poisson"):
        assert name in blocks[3]


def test_cloth_and_smoke_snippet(monkeypatch):
    ns = run_snippet(0, monkeypatch)
    assert ns["frames"].shape == (2, 256, 3) and np.isfinite(ns["frames"]).all()
    r = ns["r"]
    assert r.finished_by in ("newton", "metamizer") and r.max_strain is not None
    assert ns["smoke"].density.shape[-2:] == (16, 16)


def test_export_snippet_writes_pc2_usd_and_flipbook(monkeypatch, tmp_path):
    from metaphys.io.images import read_flipbook_layout
    from metaphys.io.pc2 import read_pc2
    from metaphys.io.usd import read_cloth_usd
    ns = run_snippet(1, monkeypatch, ns=run_snippet(0, monkeypatch), cwd=tmp_path)
    cache, start, _ = read_pc2(tmp_path / "cloth.pc2")
    assert cache.shape == (2, 256, 3) and start == 1.0
    assert np.array_equal(cache, ns["frames"].astype(np.float32))
    usd = read_cloth_usd(tmp_path / "cloth.usdc")
    assert np.array_equal(usd["frames"], cache) and usd["fps"] == 24
    layout = read_flipbook_layout(tmp_path / "smoke.json")
    assert layout["frames"] == 2 and layout["tile_width"] == 16 and ns["layout"] == layout
    assert (tmp_path / "cloth_rest.obj").read_text().count("\nv ") == 256


def test_colliders_snippet(monkeypatch):
    ns = run_snippet(2, monkeypatch, ns=run_snippet(0, monkeypatch))
    scene = ns["scene"]
    assert len(scene.records) == 3 and all(r.converged for r in scene.records)
    table = scene.problem.fields["colliders"][0]   # the collider table: the rotated box's row and the mesh's
    assert [int(c) for c in table[:, 0]] == [2, 3] and scene.self_collision
    assert not torch.allclose(table[0, 1:10], torch.eye(3, dtype=table.dtype).reshape(-1))


def test_other_systems_snippet(monkeypatch):
    ns = run_snippet(3, monkeypatch)
    assert ns["u"].shape == (64, 64) and float(ns["result"].residual.max()) <= 1e-20
    assert ns["u"][31, 21] < 0 < ns["u"][31, 41]  # -Laplace(u) = f: u follows the sign of f
    assert ns["c"].shape == (10, 64, 64) and ns["c"][-1, 32, 32] > ns["c"][0, 32, 32] > 0
    assert ns["heights"].shape == (10, 64, 64) and ns["heights"][0, 32, 32] < ns["bump"][32, 32]
    assert ns["velocity"].shape == (5, 2, 64, 64) and np.isfinite(ns["velocity"]).all()


def test_laplace_snippet(monkeypatch):
    ns = run_snippet(4, monkeypatch)
    hist = ns["result"].history()
    assert hist.shape[0] == 51 and float(hist[-1].max()) < 1e-12 * float(hist[0].max())
    # the exact discrete solution is the bilinear boundary field itself
    assert float((ns["result"].u - ns["bc"]).abs().max()) < 1e-6
