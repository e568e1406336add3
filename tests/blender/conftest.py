"""Headless Blender (bpy as a module) with the metaphys add-on installed from the source folder.

The add-on is linked into a throw-away user extension repository (BLENDER_USER_RESOURCES points
at a temp dir, so the real ~/.config/blender is never touched) and enabled the way Blender
enables an installed extension: ``bl_ext.user_default.metaphys``.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADDON_SRC = os.path.join(REPO, "blender_addon")
ADDON_MODULE = "bl_ext.user_default.metaphys"

_USER = tempfile.mkdtemp(prefix="metaphys-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER

bpy = pytest.importorskip("bpy", reason="bpy not installed: pip install -r requirements-blender.txt")
import addon_utils  # noqa: E402  (needs bpy)

if REPO not in sys.path:
    sys.path.insert(0, REPO)  # metaphys for the reference simulations


def _link_addon() -> None:
    repo_dir = bpy.utils.user_resource("EXTENSIONS", path="user_default", create=True)
    link = os.path.join(repo_dir, "metaphys")
    if not os.path.lexists(link):
        os.symlink(ADDON_SRC, link)


def enable_addon():
    mod = addon_utils.enable(ADDON_MODULE, default_set=True, handle_error=_raise)
    assert mod is not None, "the metaphys add-on failed to enable"
    return mod


def disable_addon():
    addon_utils.disable(ADDON_MODULE, default_set=True, handle_error=_raise)


def _raise(ex):
    raise ex


def addon_prefs():
    return bpy.context.preferences.addons[ADDON_MODULE].preferences


_link_addon()
addon_utils.extensions_refresh(ensure_wheels=False) if hasattr(addon_utils, "extensions_refresh") else None
enable_addon()
# the worker runs with this venv's Python and the repository on PYTHONPATH
addon_prefs().python_path = sys.executable
addon_prefs().metaphys_folder = REPO


def engine_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("metaphys.__main__") is not None and importlib.util.find_spec("metaphys.sims") is not None


def cloth_engine_available() -> bool:
    import importlib.util
    return engine_available() and importlib.util.find_spec("metaphys.sims.cloth") is not None


needs_engine = pytest.mark.skipif(not engine_available(),
                                  reason="the metaphys bake CLI (python -m metaphys bake) is not there yet")
needs_cloth_engine = pytest.mark.skipif(not cloth_engine_available(),
                                        reason="metaphys.sims.cloth / 'metaphys bake cloth' is not there yet")


def new_scene(blend_dir: str | None = None):
    """Empty scene; saved as <blend_dir>/scene.blend when given (so caches go to //metaphys_cache)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 10
    scene.frame_set(1)
    if blend_dir:
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(blend_dir, "scene.blend"))
    return scene


@pytest.fixture
def blend_dir(tmp_path):
    return str(tmp_path)


def pytest_sessionfinish(session, exitstatus):
    try:
        disable_addon()
    except Exception:
        pass
    shutil.rmtree(_USER, ignore_errors=True)


STUB_ENGINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stub_engine")


def addon_module(name: str):
    """A submodule of the enabled add-on, e.g. addon_module('operators')."""
    import importlib
    return importlib.import_module(f"{ADDON_MODULE}.{name}")


@pytest.fixture
def stub_engine(monkeypatch):
    """Point the worker at the protocol stub (tests/blender/stub_engine) instead of the real engine."""
    p = addon_prefs()
    old = p.metaphys_folder
    p.metaphys_folder = STUB_ENGINE
    monkeypatch.delenv("METAPHYS_STUB_DELAY", raising=False)
    monkeypatch.delenv("METAPHYS_STUB_FAIL_AT", raising=False)
    yield
    p.metaphys_folder = old


def add_grid(rows: int = 16, cols: int = 16, size: float = 1.0, location=(0.0, 0.0, 1.0), pins=True):
    """A rows x cols vertex grid (Add > Mesh > Grid) with the two corners of its last row pinned."""
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=cols - 1, y_subdivisions=rows - 1, size=size, location=location)
    ob = bpy.context.object
    assert len(ob.data.vertices) == rows * cols
    if pins:
        co = [v.co.copy() for v in ob.data.vertices]
        ymax = max(c.y for c in co)
        top = [i for i, c in enumerate(co) if abs(c.y - ymax) < 1e-6]
        left = min(top, key=lambda i: co[i].x)
        right = max(top, key=lambda i: co[i].x)
        vg = ob.vertex_groups.new(name="pin")
        vg.add([left, right], 1.0, "REPLACE")
        ob.metaphys_cloth.pin_group = "pin"
    ob.metaphys_cloth.enabled = True
    return ob


def evaluated_world(ob, frame: int):
    """World-space vertex positions [V, 3] of the evaluated mesh at ``frame``."""
    import numpy as np
    bpy.context.scene.frame_set(frame)
    dg = bpy.context.evaluated_depsgraph_get()
    oe = ob.evaluated_get(dg)
    me = oe.data
    co = np.empty(len(me.vertices) * 3, dtype=np.float32)
    me.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3).astype(np.float64)
    m = np.array([list(r) for r in oe.matrix_world], dtype=np.float64)
    return co @ m[:3, :3].T + m[:3, 3]


def ensure_engine_weights(tmpdir: str) -> str:
    """Metamizer weights for the engine: the shipped weights/metamizer.pt (or $METAPHYS_WEIGHTS);
    before training has produced them, the newest training snapshot (runs/*/best.pt) or, failing
    that, an untrained network, exported into ``tmpdir`` and put in $METAPHYS_WEIGHTS (which the
    worker processes inherit). The add-on tests check plumbing (add-on result == Python API
    result), not physical accuracy, so any of them will do (an untrained one is much slower)."""
    import glob
    shipped = os.environ.get("METAPHYS_WEIGHTS") or os.path.join(REPO, "weights", "metamizer.pt")
    if os.path.exists(shipped):
        return shipped
    import torch
    from metaphys.optim.metamizer import MetamizerNet
    from metaphys.optim.weights import export_torchscript, model_from_snapshot
    path = os.path.join(tmpdir, "metamizer.pt")
    model, note = None, "untrained, tests only"
    for snap in sorted(glob.glob(os.path.join(REPO, "runs", "*", "best.pt")), key=os.path.getmtime, reverse=True):
        try:
            model, note = model_from_snapshot(snap), f"training snapshot {snap}, tests only"
            break
        except Exception:  # noqa: BLE001 - a snapshot being rewritten by the training run
            continue
    if model is None:
        torch.manual_seed(0)
        model = MetamizerNet()
    export_torchscript(model, path, {"note": note})
    os.environ["METAPHYS_WEIGHTS"] = path
    print(f"metaphys weights for the Blender tests: {note}")
    return path


@pytest.fixture(scope="session")
def engine_weights(tmp_path_factory):
    had = "METAPHYS_WEIGHTS" in os.environ
    path = ensure_engine_weights(str(tmp_path_factory.mktemp("weights")))
    yield path
    if not had:
        os.environ.pop("METAPHYS_WEIGHTS", None)
