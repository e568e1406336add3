"""The modal bake path (what a click on "Bake" runs) driven with a fake window manager and events,
since background Blender has no window: progress updates, Esc cancels, the finished bake is loaded."""
import os
import time
import types

from conftest import add_grid, addon_module, bpy, new_scene


class _WM:
    def __init__(self):
        self.calls = []

    def event_timer_add(self, step, window=None):
        self.calls.append(("timer_add", step))
        return object()

    def event_timer_remove(self, timer):
        self.calls.append(("timer_remove",))

    def modal_handler_add(self, op):
        self.calls.append(("modal_handler_add",))

    def progress_begin(self, a, b):
        self.calls.append(("progress_begin", a, b))

    def progress_update(self, v):
        self.calls.append(("progress_update", v))

    def progress_end(self):
        self.calls.append(("progress_end",))


class _Workspace:
    def __init__(self):
        self.texts = []

    def status_text_set(self, text):
        self.texts.append(text)


def _fake_operator(cls):
    op = types.SimpleNamespace(_job=None, _timer=None, reports=[])
    for name in ("_start_modal", "_status", "_end_modal", "modal"):
        setattr(op, name, types.MethodType(getattr(cls, name), op))
    op.report = lambda level, msg: op.reports.append((set(level).pop(), msg))
    return op


def _context():
    return types.SimpleNamespace(window_manager=_WM(), workspace=_Workspace(), window=object(), screen=None,
                                 scene=bpy.context.scene, view_layer=bpy.context.view_layer,
                                 evaluated_depsgraph_get=bpy.context.evaluated_depsgraph_get)


def _event(kind, value="NOTHING"):
    return types.SimpleNamespace(type=kind, value=value)


def _run_modal(op, ctx, stop_after_frames=None, timeout=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.05)
        if stop_after_frames is not None and op._job.frames_done >= stop_after_frames:
            return op.modal(ctx, _event("ESC", "PRESS"))
        r = op.modal(ctx, _event("TIMER"))
        if r != {"PASS_THROUGH"}:
            return r
    raise AssertionError("modal bake did not finish")


def test_modal_bake_progress_and_finish(blend_dir, stub_engine):
    ops = addon_module("operators")
    new_scene(blend_dir)
    ob = add_grid(6, 6)
    cls = ops.METAPHYS_OT_bake_cloth
    op = _fake_operator(cls)
    ctx = _context()
    job = ops.BakeJob(ctx, ob, "cloth")
    job.prepare(ctx)
    job.start()
    assert op._start_modal(ctx, job) == {"RUNNING_MODAL"}
    assert op.modal(ctx, _event("MOUSEMOVE")) == {"PASS_THROUGH"}
    assert _run_modal(op, ctx) == {"FINISHED"}
    wm = ctx.window_manager.calls
    assert wm[0][0] == "timer_add" and ("progress_begin", 0, 10) in wm and wm[-1] == ("progress_end",)
    assert ("progress_update", 10) in wm
    assert any("frame" in t for t in ctx.workspace.texts if t) and ctx.workspace.texts[-1] is None
    assert op.reports[-1][0] == "INFO" and "baked 'Grid'" in op.reports[-1][1]
    assert ob.modifiers["metaphys cloth"].filepath == "//metaphys_cache/Grid/cloth.pc2"
    assert not ops.JOBS


def test_modal_escape_cancels(blend_dir, stub_engine, monkeypatch):
    ops = addon_module("operators")
    cache = addon_module("cache")
    new_scene(blend_dir)
    ob = add_grid(6, 6)
    bpy.ops.metaphys.bake_cloth(object_name=ob.name)
    d = os.path.join(blend_dir, "metaphys_cache", "Grid")
    before = cache.cache_files_hash(d)
    monkeypatch.setenv("METAPHYS_STUB_DELAY", "0.2")
    op = _fake_operator(ops.METAPHYS_OT_bake_cloth)
    ctx = _context()
    job = ops.BakeJob(ctx, ob, "cloth", frames=100)
    job.prepare(ctx)
    job.start()
    op._start_modal(ctx, job)
    assert _run_modal(op, ctx, stop_after_frames=2) == {"CANCELLED"}
    assert op.reports[-1][0] == "WARNING" and "cancelled" in op.reports[-1][1]
    assert ctx.window_manager.calls[-1] == ("progress_end",)
    assert not job.proc.running and not ops.JOBS
    assert cache.cache_files_hash(d) == before
