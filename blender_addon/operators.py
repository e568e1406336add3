"""Bake / free operators. A bake is a modal operator around a ``BakeJob``:

1. extract the spec from the scene (nothing is written when that fails: the report says why);
2. make a staging folder next to the cache, write the spec (and the smoke masks) into it;
3. run ``python -m metaphys bake <kind> --spec ... --out <staging>/out --progress json`` with the
   preference's interpreter; progress goes to the status bar and the window manager's progress;
   ESC cancels (the worker is terminated, the staging folder thrown away: the previous cache
   stays byte-identical);
4. on success swap the staging folder in as the cache and load the result (Mesh Cache modifier /
   Volume object). Errors become reports with the reason from the worker's "error" event.

Headless (``blender -b file.blend --python-expr ...`` or bpy as a module) the same operators run
synchronously: ``bpy.ops.metaphys.bake_cloth(object_name="Grid")``; a failure raises RuntimeError
with the reason, as every operator error does in Blender's Python API.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from . import cache, preferences, results, worker
from .common import atomic_path
from .extract_cloth import ExtractError, cloth_spec
from .extract_smoke import smoke_spec

# object name -> running BakeJob (one bake per object; the UI shows its progress)
JOBS: dict = {}


def cache_dir_for(obj, group) -> str:
    """Absolute cache folder of ``obj`` (per-object override, else <preference root>/<object name>)."""
    if group.cache_dir:
        d = group.cache_dir
        if d.startswith("//") and not bpy.data.filepath:
            d = os.path.join(tempfile.gettempdir(), "metaphys_cache", d[2:])
        return os.path.normpath(bpy.path.abspath(d))
    root = preferences.settings().cache_root
    if root.startswith("//") and not bpy.data.filepath:
        root = os.path.join(tempfile.gettempdir(), "metaphys_cache")
    return os.path.normpath(os.path.join(bpy.path.abspath(root), bpy.path.clean_name(obj.name)))


class BakeJob:
    """One bake of one object: spec -> staging -> worker -> commit -> import."""

    def __init__(self, context, obj, kind: str, frames: int | None = None):
        self.obj_name = obj.name
        self.kind = kind
        self.frames_override = frames
        self.group = obj.metaphys_cloth if kind == "cloth" else obj.metaphys_smoke
        self.final_dir = cache_dir_for(obj, self.group)
        self.staging: cache.Staging | None = None
        self.proc: worker.WorkerProcess | None = None
        self.spec: dict = {}
        self.info: dict = {}
        self.frames = 0
        self.t0 = time.monotonic()
        self.outcome: worker.BakeOutcome | None = None

    @property
    def obj(self):
        return bpy.data.objects.get(self.obj_name)

    # 1-2: spec + staging (raises ExtractError / RuntimeError; nothing left behind)
    def prepare(self, context, report=None) -> None:
        obj = self.obj
        parent = os.path.dirname(self.final_dir)
        parent_existed = os.path.isdir(parent)
        python, pythonpath = preferences.resolve_interpreter(report)
        self.staging = cache.make_staging(self.final_dir)
        try:   # both kinds write their large arrays (.npy) into the staging input folder
            if self.kind == "cloth":
                self.spec, self.info = cloth_spec(context, obj, self.frames_override, self.staging.input_dir)
            else:
                self.spec, self.info = smoke_spec(context, obj, self.staging.input_dir, self.frames_override)
        except BaseException:
            cache.discard(self.staging)
            self.staging = None
            if not parent_existed:
                try:
                    os.rmdir(parent)
                except OSError:
                    pass
            raise
        self.frames = int(self.spec["frames"])
        with open(self.staging.spec_path, "w") as fh:
            json.dump(self.spec, fh)
        s = preferences.settings()
        cmd = worker.build_command(python, self.kind, self.staging.spec_path, self.staging.out_dir, s.device)
        self.proc = worker.WorkerProcess(cmd, env=worker.worker_env(pythonpath), cwd=self.staging.root,
                                         log_path=self.staging.log_path)

    # 3
    def start(self) -> None:
        try:
            self.proc.start()
        except Exception:
            self.discard()
            raise
        JOBS[self.obj_name] = self

    def poll(self) -> list:
        return self.proc.poll() if self.proc is not None else []

    def finished(self) -> bool:
        return self.proc is None or self.proc.finished()

    @property
    def frames_done(self) -> int:
        return self.proc.frames_done if self.proc is not None else 0

    def progress_text(self) -> str:
        n = self.frames_done
        el = time.monotonic() - self.t0
        eta = ""
        if n:
            eta = f", about {el / n * (self.frames - n):.0f} s left"
        return f"metaphys {self.kind} '{self.obj_name}': frame {n}/{self.frames}{eta} (Esc to cancel)"

    def cancel(self) -> None:
        if self.proc is not None:
            self.proc.cancel()
            self.outcome = self.proc.outcome()
        self.discard()
        JOBS.pop(self.obj_name, None)

    def discard(self) -> None:
        if self.staging is not None:
            cache.discard(self.staging)
            self.staging = None

    # 4
    def finish(self, context) -> tuple[str, str]:
        """Commit + import, or clean up. Returns (report level, message)."""
        JOBS.pop(self.obj_name, None)
        self.outcome = out = self.proc.outcome()
        if out.status != "done":
            if out.status == "error" and self.staging is not None and os.path.exists(self.staging.log_path):
                try:
                    shutil.copy2(self.staging.log_path, os.path.join(tempfile.gettempdir(), "metaphys_worker_last.log"))
                except OSError:
                    pass
            self.discard()
            if out.status == "cancelled":
                return "WARNING", f"metaphys: bake of '{self.obj_name}' cancelled; the previous cache is unchanged"
            return "ERROR", f"metaphys bake of '{self.obj_name}' failed: {out.message}"
        obj = self.obj
        if obj is None:
            self.discard()
            return "ERROR", f"metaphys: object '{self.obj_name}' was removed during the bake"
        try:
            if self.kind == "cloth":
                pc2 = os.path.join(self.staging.out_dir, "cloth.pc2")
                if not os.path.exists(pc2):
                    raise RuntimeError("the worker finished but wrote no cloth.pc2")
            final = cache.commit(self.staging)
            self.staging = None
        except Exception as e:  # noqa: BLE001 - shown to the user
            self.discard()
            return "ERROR", f"metaphys: could not store the bake of '{self.obj_name}': {e}"
        g = obj.metaphys_cloth if self.kind == "cloth" else obj.metaphys_smoke
        g.baked_dir = results.blend_path(final)
        msg = f"{self.frames} frames in {out.elapsed:.1f} s"
        warnings = list(self.info.get("warnings", []))
        if self.kind == "cloth":
            results.apply_cloth_cache(obj, os.path.join(final, "cloth.pc2"), int(self.spec.get("start_frame", 1)))
        else:
            vol = results.import_smoke_volume(context, obj, final, self.spec, self.info["geometry"],
                                              obj.metaphys_smoke.density_scale)
            if vol is None:
                warnings.append("the worker wrote no .vdb files (the spec's \"vdb\" option is off?); "
                                "only PNG/npz frames were baked")
            else:
                results.reload_volume(vol)
        g.bake_info = msg
        try:  # the per-frame residual / strain of this bake, shown in the panel (manifest.json has them all)
            stats = results.bake_stats(os.path.join(final, "manifest.json"))
            g.bake_stats = json.dumps(stats)
            summary = results.stats_summary(stats)
            if summary:
                msg += f"; {summary}"
        except (OSError, ValueError) as e:
            g.bake_stats = ""
            warnings.append(f"manifest.json unreadable ({e})")
        text = f"metaphys: baked '{self.obj_name}' ({msg}) to {final}"
        if warnings:
            return "WARNING", text + ". " + " ".join(warnings)
        return "INFO", text


def _target(context, name: str):
    if name:
        ob = bpy.data.objects.get(name)
        if ob is None:
            raise ExtractError(f"no object named '{name}'")
        return ob
    ob = getattr(context, "object", None) or context.view_layer.objects.active
    if ob is None:
        raise ExtractError("no active object")
    return ob


class _BakeBase:
    bl_options = {"REGISTER"}
    kind = "cloth"

    object_name: StringProperty(name="Object", description="Object to bake (default: the active object)",
                                options={"SKIP_SAVE"})
    blocking: BoolProperty(name="Blocking", description="Bake synchronously (always so in background mode)",
                           default=False, options={"SKIP_SAVE"})
    frames: IntProperty(name="Frames", description="Override the number of frames (0: the frame range)",
                        default=0, min=0, options={"SKIP_SAVE"})

    _job = None
    _timer = None

    def _make_job(self, context):
        obj = _target(context, self.object_name)
        if self.kind == "smoke" and obj.metaphys_smoke.role != "DOMAIN":
            # bake the domain of an emitter/obstacle? keep it explicit
            raise ExtractError(f"'{obj.name}' is not a metaphys smoke domain (Physics > metaphys Smoke > Role)")
        if obj.name in JOBS:
            raise ExtractError(f"'{obj.name}' is already baking")
        job = BakeJob(context, obj, self.kind, self.frames or None)
        job.prepare(context, self.report)
        return job

    def execute(self, context):
        try:
            job = self._make_job(context)
            job.start()
        except (ExtractError, RuntimeError, OSError) as e:
            self.report({"ERROR"}, f"metaphys: {e}")
            return {"CANCELLED"}
        if self.blocking or bpy.app.background or context.window is None:
            return self._run_blocking(context, job)
        return self._start_modal(context, job)

    def invoke(self, context, event):
        return self.execute(context)

    def _run_blocking(self, context, job):
        last = [0.0]

        def on_event(ev):
            if ev.get("event") == "frame" and time.monotonic() - last[0] > 1.0:
                last[0] = time.monotonic()
                print(job.progress_text().replace(" (Esc to cancel)", ""), flush=True)

        job.proc.wait(on_event=on_event)  # Ctrl+C cancels
        level, msg = job.finish(context)
        self.report({level}, msg)
        return {"FINISHED"} if level != "ERROR" and job.outcome.status == "done" else {"CANCELLED"}

    def _start_modal(self, context, job):
        self._job = job
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, max(job.frames, 1))
        wm.modal_handler_add(self)
        self._status(context, job.progress_text())
        return {"RUNNING_MODAL"}

    def _status(self, context, text):
        try:
            context.workspace.status_text_set(text)
        except (AttributeError, RuntimeError):
            pass

    def _end_modal(self, context):
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        self._status(context, None)
        for area in context.screen.areas if context.screen else []:
            area.tag_redraw()

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            self._end_modal(context)
            self.report({"WARNING"}, f"metaphys: bake of '{job.obj_name}' cancelled; the previous cache is unchanged")
            return {"CANCELLED"}
        if event.type == "TIMER":
            if job.poll():
                context.window_manager.progress_update(job.frames_done)
                self._status(context, job.progress_text())
                for area in context.screen.areas if context.screen else []:
                    if area.type == "PROPERTIES":
                        area.tag_redraw()
            if job.finished():
                job.poll()
                self._end_modal(context)
                level, msg = job.finish(context)
                self.report({level}, msg)
                return {"FINISHED"} if job.outcome.status == "done" else {"CANCELLED"}
        return {"PASS_THROUGH"}


class METAPHYS_OT_bake_cloth(_BakeBase, bpy.types.Operator):
    """Bake metaphys cloth for the active grid mesh (Esc cancels; the previous bake is kept until the new one succeeds)"""
    bl_idname = "metaphys.bake_cloth"
    bl_label = "Bake Cloth"
    kind = "cloth"


class METAPHYS_OT_bake_smoke(_BakeBase, bpy.types.Operator):
    """Bake metaphys smoke for the active domain (a plane: 2D, a box: 3D; Esc cancels; the previous bake is kept until the new one succeeds)"""
    bl_idname = "metaphys.bake_smoke"
    bl_label = "Bake Smoke"
    kind = "smoke"


class _FreeBase:
    bl_options = {"REGISTER", "UNDO"}
    object_name: StringProperty(name="Object", options={"SKIP_SAVE"})
    kind = "cloth"

    def execute(self, context):
        try:
            obj = _target(context, self.object_name)
        except ExtractError as e:
            self.report({"ERROR"}, f"metaphys: {e}")
            return {"CANCELLED"}
        if obj.name in JOBS:
            self.report({"ERROR"}, f"metaphys: '{obj.name}' is baking; cancel it first (Esc)")
            return {"CANCELLED"}
        g = obj.metaphys_cloth if self.kind == "cloth" else obj.metaphys_smoke
        if self.kind == "cloth":
            results.remove_cloth_cache(obj)
        else:
            results.remove_smoke_volume(obj)
        folder = bpy.path.abspath(g.baked_dir) if g.baked_dir else cache_dir_for(obj, g)
        try:
            removed = cache.remove_cache(folder)
            cache.remove_stale_staging(folder)
        except (RuntimeError, OSError) as e:
            self.report({"ERROR"}, f"metaphys: {e}")
            return {"CANCELLED"}
        g.baked_dir = ""
        g.bake_info = ""
        self.report({"INFO"}, f"metaphys: freed the bake of '{obj.name}'" + (f" ({folder})" if removed else ""))
        return {"FINISHED"}


class METAPHYS_OT_free_cloth(_FreeBase, bpy.types.Operator):
    """Remove the metaphys Mesh Cache modifier and delete the cloth cache files"""
    bl_idname = "metaphys.free_cloth"
    bl_label = "Free Bake"
    kind = "cloth"


class METAPHYS_OT_free_smoke(_FreeBase, bpy.types.Operator):
    """Remove the smoke Volume object and delete the smoke cache files"""
    bl_idname = "metaphys.free_smoke"
    bl_label = "Free Bake"
    kind = "smoke"


class METAPHYS_OT_export_alembic(bpy.types.Operator):
    """Export the baked cloth (the Mesh Cache result) as an Alembic cache with Blender's own exporter"""
    bl_idname = "metaphys.export_alembic"
    bl_label = "Export Alembic"
    bl_options = {"REGISTER"}

    object_name: StringProperty(name="Object", options={"SKIP_SAVE"})
    filepath: StringProperty(name="File", subtype="FILE_PATH", options={"SKIP_SAVE"},
                             description="Alembic file to write (default: cloth.abc in the bake's cache folder)")

    def execute(self, context):
        try:
            obj = _target(context, self.object_name)
            path = export_alembic(context, obj, self.filepath)
        except (ExtractError, RuntimeError, OSError) as e:
            self.report({"ERROR"}, f"metaphys: {e}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"metaphys: exported '{obj.name}' to {path}")
        return {"FINISHED"}


def export_alembic(context, obj, filepath: str = "") -> str:
    """Write ``obj``'s baked cloth over the bake's frames with ``wm.alembic_export`` (evaluated mesh: the Mesh
    Cache modifier applied, UVs and normals), atomically; returns the file's absolute path."""
    g = obj.metaphys_cloth
    if not g.baked_dir or obj.modifiers.get(results.CACHE_MODIFIER) is None:
        raise ExtractError(f"'{obj.name}' has no metaphys cloth bake to export (Bake Cloth first)")
    folder = bpy.path.abspath(g.baked_dir)
    with open(os.path.join(folder, "manifest.json")) as fh:
        man = json.load(fh)
    first = int(man.get("start_frame") or (man["frames"][0]["frame"] if man.get("frames") else 1))
    last = first + int(man.get("frames_done") or len(man.get("frames") or [])) - 1
    if last < first:
        raise ExtractError(f"the bake of '{obj.name}' has no finished frames")
    path = os.path.abspath(bpy.path.abspath(filepath)) if filepath else os.path.join(folder, "cloth.abc")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    view_layer = context.view_layer
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    frame = context.scene.frame_current
    try:
        for o in selected:
            o.select_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj
        with atomic_path(path) as tmp:  # a reader never sees a half-written cache
            r = bpy.ops.wm.alembic_export(filepath=tmp, start=first, end=last, selected=True, uvs=True,
                                          normals=True, flatten=False, as_background_job=False,
                                          evaluation_mode="RENDER", check_existing=False)
            if "FINISHED" not in r or os.path.getsize(tmp) == 0:
                raise RuntimeError(f"Blender's Alembic exporter did not write {path!r} ({r})")
    finally:
        obj.select_set(False)
        for o in selected:
            if o.name in view_layer.objects:
                o.select_set(True)
        view_layer.objects.active = active
        context.scene.frame_set(frame)
    return path


classes = (METAPHYS_OT_bake_cloth, METAPHYS_OT_bake_smoke, METAPHYS_OT_free_cloth, METAPHYS_OT_free_smoke,
           METAPHYS_OT_export_alembic)


def cancel_all() -> None:
    for job in list(JOBS.values()):
        try:
            job.cancel()
        except Exception:  # noqa: BLE001 - best effort on unload/exit
            pass
    JOBS.clear()


_atexit_done = []


def register():
    if not _atexit_done:  # a Blender quitting mid-bake must not leave the worker running
        import atexit
        atexit.register(cancel_all)
        _atexit_done.append(True)
    for c in classes:
        bpy.utils.register_class(c)


def unregister():
    cancel_all()
    for c in reversed(classes):
        bpy.utils.unregister_class(c)
