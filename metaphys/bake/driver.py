"""The bake loop shared by cloth and smoke.

Protocol per frame (makes every bake resumable and every interruption harmless):
  1. sim.step(); refuse non-finite results (BakeError naming the frame); check convergence and
     strain (a warning, or with ``strict`` an error: the frame is not written);
  2. the kind's writer writes the frame's files atomically;
  3. the simulation state is saved atomically to OUT/.state/frame_XXXX.pt;
  4. the manifest records the frame with its full StepRecord (atomic rewrite).
The manifest therefore always lists exactly the complete frames on disk; ``resume`` restarts
from the state of the last listed frame and reproduces an uninterrupted bake bit for bit.

The output folder is owned by one bake at a time (``OUT/.metaphys.lock``). A bake starts only in
an empty folder or resumes the bake already there (``resume``); any other non-empty folder is
refused unless ``force``, which first clears the previous bake's outputs (the files its manifest
and naming scheme own, never others).
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import time
from typing import Callable, List, Optional

import torch

from metaphys.bake.errors import BakeError, input_error
from metaphys.bake.owned import OWNED
from metaphys.bake.progress import Progress
from metaphys.io.atomic import atomic_path, is_temp_name, make_temp
from metaphys.io.manifest import BakeManifest, read_manifest


STATE_DIR = ".state"
LOCK_NAME = ".metaphys.lock"
MANIFEST = "manifest.json"


# ---- simulation state --------------------------------------------------------------------------------
def _state_path(out: str, index: int) -> str:
    return os.path.join(out, STATE_DIR, f"frame_{index:05d}.pt")


def save_state(out: str, index: int, state: dict) -> None:
    path = _state_path(out, index)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in glob.glob(os.path.join(out, STATE_DIR, "frame_*.pt")):
        if old != path and int(os.path.basename(old)[6:11]) < index - 1:
            os.remove(old)


def load_state(out: str, index: int) -> dict:
    path = _state_path(out, index)
    if not os.path.exists(path):
        raise input_error(f"cannot resume: simulation state for frame index {index} ({path}) is missing; "
                          "bake again without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated/garbled pickle or zip: any loader error means the same
        raise input_error(f"cannot resume: the saved simulation state {path} is corrupted "
                          f"({type(exc).__name__}: {str(exc)[:120]}); bake again without --resume") from None
    if not isinstance(state, dict):
        raise input_error(f"cannot resume: {path} does not hold a simulation state; bake again without --resume")
    return state


# ---- the output folder ---------------------------------------------------------------------------------
def check_output_dir(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write_probe.{os.getpid()}")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise input_error(f"output folder {out!r} is not writable: {exc}") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """``OUT/.metaphys.lock``: one bake per folder. Created by an atomic hard link of a complete
    file, so a reader never sees a half-written lock; a lock whose process is gone is stale."""

    def __init__(self, out: str, kind: str):
        self.path = os.path.join(out, LOCK_NAME)
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "kind": kind,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.held = False

    def _holder(self) -> Optional[dict]:
        try:
            with open(self.path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def _create(self, tmp: str) -> None:
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: exclusive create (a reader may see it empty briefly)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            with os.fdopen(fd, "w") as fh:
                json.dump(self.info, fh)

    def acquire(self) -> "OutputLock":
        tmp = str(make_temp(self.path))  # linked to the lock's name: the lock appears complete or not at all
        with open(tmp, "w") as fh:
            json.dump(self.info, fh)
        try:
            for _ in range(2):
                try:
                    self._create(tmp)
                    self.held = True
                    return self
                except FileExistsError:
                    holder = self._holder()
                    if holder is not None and (holder.get("host") != self.info["host"]
                                               or _pid_alive(int(holder.get("pid", -1)))):
                        raise input_error(
                            f"another bake is writing into {os.path.dirname(self.path)!r} "
                            f"({holder.get('kind', '?')} bake, pid {holder.get('pid')} on {holder.get('host')}, "
                            f"started {holder.get('started')}); wait for it to finish or choose another --out "
                            f"(if that process is gone, delete {self.path})") from None
                    try:  # stale: its process died without releasing it
                        os.remove(self.path)
                    except FileNotFoundError:
                        pass
            raise input_error(f"could not take the lock {self.path}: another bake keeps recreating it")
        finally:
            os.remove(tmp)

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder is not None and holder.get("pid") == self.info["pid"]:
                os.remove(self.path)
            self.held = False


def _owned(kind: str):
    return OWNED.get(kind, ((), {}))


def clear_previous_bake(out: str, new_kind: str) -> List[str]:
    """Remove what the previous bake in ``out`` wrote (files named by its manifest or by its kind's
    naming scheme, .state/); refuse a folder holding bake-named files that no manifest owns."""
    manifest_path = os.path.join(out, MANIFEST)
    if not os.path.exists(manifest_path):
        files, _ = _owned(new_kind)
        clash = [f for f in files if os.path.exists(os.path.join(out, f))]
        if clash:
            raise input_error(f"{out!r} already holds {', '.join(clash)} but no metaphys manifest.json owns "
                              "them; bake into an empty folder (or remove those files)")
        return []
    try:
        old = read_manifest(manifest_path)
        if not isinstance(old, dict) or not str(old.get("schema", "")).startswith("metaphys.bake/"):
            raise ValueError("not a metaphys bake manifest")
    except (OSError, ValueError) as exc:
        raise input_error(f"{manifest_path} is not a readable metaphys bake manifest ({exc}); bake into an "
                          "empty folder (or remove that file)") from None
    files, dirs = _owned(old.get("kind", ""))
    listed = set(files)
    for fr in old.get("frames", []):
        for v in (fr.get("files") or {}).values():
            if isinstance(v, str):
                listed.add(v)
    for v in (old.get("outputs") or {}).values():
        if isinstance(v, str) and v not in dirs:
            listed.add(v)
    removed = []
    root = os.path.realpath(out)
    for rel in sorted(listed):
        path = os.path.realpath(os.path.join(out, rel))
        if path.startswith(root + os.sep) and os.path.isfile(path):  # never outside OUT
            os.remove(path)
            removed.append(rel)
    for d, pattern in dirs.items():
        folder = os.path.join(out, d)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):  # frames of an interrupted bake that the manifest missed
            if re.fullmatch(pattern, name) or is_temp_name(name):
                os.remove(os.path.join(folder, name))
                removed.append(os.path.join(d, name))
        if not os.listdir(folder):
            os.rmdir(folder)
    shutil.rmtree(os.path.join(out, STATE_DIR), ignore_errors=True)
    os.remove(manifest_path)
    return removed


def folder_contents(out: str) -> List[str]:
    """What is in ``out`` (top level, folders with a trailing /), ignoring bake locks: a lock held by a
    live bake has already been refused, a stale one is taken over."""
    try:
        names = os.listdir(out)
    except FileNotFoundError:
        return []
    return sorted(n + ("/" if os.path.isdir(os.path.join(out, n)) else "") for n in names
                  if not n.startswith(LOCK_NAME))


def _describe_previous(out: str) -> str:
    try:
        old = read_manifest(os.path.join(out, MANIFEST))
        frames = len(old.get("frames") or [])
        total = (old.get("parameters") or {}).get("frames")
        count = f"{frames} of {total} frames" if total is not None else f"{frames} frames"
        return f"a {old.get('status', '?')} {old.get('kind', '?')} bake ({count})"
    except (OSError, ValueError, AttributeError):
        return "an unreadable manifest.json"


def refuse_non_empty(out: str, contents: List[str], resume: bool) -> BakeError:
    """The error for a bake into a folder that holds something and is not resumed (exit 2, untouched)."""
    shown = ", ".join(contents[:8]) + (f" ... ({len(contents) - 8} more)" if len(contents) > 8 else "")
    if MANIFEST in contents:
        what = f"it holds {_describe_previous(out)}: {shown}"
        hint = ("continue that bake with --resume (same spec, --frames may extend it), " if not resume else "")
    else:
        what = f"it holds {shown}"
        hint = ""
    return input_error(f"output folder {out!r} is not empty ({what}); {hint}choose an empty --out, or pass "
                       "--force to replace the previous bake (--force removes only the files a metaphys "
                       "bake wrote there, never other files)")


def previous_settings(out: str) -> dict:
    """The run settings (format, threads...) the bake in ``out`` recorded, or {} (for --resume defaults)."""
    try:
        return dict(read_manifest(os.path.join(out, MANIFEST)).get("settings") or {})
    except (OSError, ValueError, AttributeError):
        return {}


# ---- per-frame physics checks -------------------------------------------------------------------------
# optim.solve.iterate tries each step 1 + guard_retries (default 3) times before it gives up
GUARD_TRIES = 4


def all_steps_rejected(record) -> bool:
    """The Metamizer's every step of this frame was rejected by the guard and nothing else finished
    it: the frame did not move (NaN or untrained weights look like this)."""
    return (record.iterations > 0 and record.guard_rejections >= GUARD_TRIES * record.iterations
            and getattr(record, "finished_by", "metamizer") != "newton")


def frame_problems(record, number: int, tol, strain_limit) -> List[str]:
    """What is wrong with a finished frame: missed tolerance, excessive strain, a frozen solve."""
    problems = []
    if all_steps_rejected(record):
        problems.append(f"frame {number}: the step guard rejected every optimizer step ({record.guard_rejections} "
                        f"rejections in {record.iterations} iterations), so the frame did not move; the weights "
                        "cannot solve this scene (NaN or untrained weights? check --weights)")
    if record.converged is False:
        rr = record.relative_residual
        problems.append(f"frame {number}: relative residual {rr:.2e} missed the tolerance {tol:g} "
                        f"(finished by {record.finished_by})" if rr is not None and tol is not None else
                        f"frame {number}: the solver did not converge (finished by {record.finished_by})")
    if strain_limit is not None and record.max_strain is not None and record.max_strain > strain_limit:
        problems.append(f"frame {number}: max strain {100 * record.max_strain:.1f}% exceeds the strain limit "
                        f"{100 * strain_limit:g}%")
    return problems


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _record_fields(record) -> dict:
    d = record.as_dict() if hasattr(record, "as_dict") else dict(vars(record))
    d.pop("frame", None)  # the sim's own step count; the manifest numbers frames from start_frame
    return d


def run_bake(kind: str, sim, writer, out: str, frames: int, *, parameters: dict, model_sha256: str,
             progress: str = "bar", resume: bool = False, start_frame: int = 1, settings: dict = None,
             strict: bool = False, finalize: Callable = None, force: bool = False) -> BakeManifest:
    """Bake ``frames`` frames of ``sim`` into ``out`` with ``writer(sim, frame_number, index)``.

    ``settings`` (format, threads, device...) are recorded; ``--resume`` refuses different ones.
    ``manifest.extra["warnings"]`` lists the frames that missed the tolerance or the strain limit;
    with ``strict`` such a frame ends the bake (BakeError, code 1) before it is written.
    A non-empty ``out`` that is not resumed is refused (code 2) unless ``force``, which clears the
    previous bake's outputs first.
    """
    check_output_dir(out)
    lock = OutputLock(out, kind).acquire()
    try:
        return _run_locked(kind, sim, writer, out, frames, parameters, model_sha256, progress, resume,
                           start_frame, dict(settings or {}), strict, force)
    finally:
        lock.release()


def _run_locked(kind, sim, writer, out, frames, parameters, model_sha256, progress, resume, start_frame,
                settings, strict, force=False) -> BakeManifest:
    manifest_path = os.path.join(out, MANIFEST)
    if resume and os.path.exists(manifest_path):
        try:
            manifest = BakeManifest.resume(manifest_path, parameters=parameters, model_sha256=model_sha256,
                                           settings=settings, kind=kind, ignore=("frames",),
                                           save=False)
        except ValueError as exc:
            raise input_error(str(exc)) from None
        done = manifest.frames_done
        if frames < done:
            raise input_error(f"cannot resume: the bake in {out!r} already has {done} frames, more than the "
                              f"{frames} asked for (--frames may only extend a bake)")
        manifest.parameters["frames"] = frames
        if done:
            state = load_state(out, done)
            try:
                sim.load_state_dict(state)
            except Exception as exc:
                raise input_error(f"cannot resume: the saved simulation state of frame index {done} does not "
                                  f"fit this simulation ({type(exc).__name__}: {str(exc)[:120]}); bake again "
                                  "without --resume") from None
        writer.resume(done)
        manifest.settings = {**settings, **manifest.settings}  # a manifest older than settings records them now
        manifest.save()
    else:
        contents = folder_contents(out)
        if contents and not force:  # never replace what is there without being asked to
            raise refuse_non_empty(out, contents, resume)
        clear_previous_bake(out, kind)
        manifest = BakeManifest(manifest_path, kind=kind, parameters=parameters, model_sha256=model_sha256,
                                start_frame=start_frame, settings=settings)
        done = 0
        writer.start()
    tol, strain_limit = parameters.get("tol"), parameters.get("strain_limit")
    warnings = manifest.extra.setdefault("warnings", [])
    prog = Progress(progress, frames, kind, initial=done)
    prog.emit("start", kind=kind, frames=frames, out=out, resumed_at=done)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.time()
    try:
        for index in range(done, frames):
            t0 = time.time()
            record = sim.step()
            number = start_frame + index
            if not sim.finite():
                raise BakeError(f"the simulation diverged at frame {number}: non-finite values "
                                "(try more iterations per step or a smaller time step); nothing was written "
                                "for this frame")
            problems = frame_problems(record, number, tol, strain_limit)
            if index == 0 and all_steps_rejected(record):  # frozen from the start: never a valid bake
                raise BakeError(problems[0] + "; nothing was written for this frame")
            if problems and strict:
                raise BakeError("; ".join(problems) + " (--strict: this frame was not written; the "
                                f"{index} finished frames before it are kept)")
            files = writer.write(sim, number, index)
            save_state(out, index + 1, sim.state_dict())
            fields = _record_fields(record)
            warnings.extend(problems)
            manifest.add_frame(number, wall_s=time.time() - t0, files=files, **fields)
            prog.frame(frame=number, index=index, frames=frames, elapsed=round(time.time() - started, 3), **fields)
            for msg in problems:
                prog.emit("warning", frame=number, message=msg)
        for name, path in writer.finish(sim).items():
            manifest.outputs[name] = path
        manifest.extra.update(getattr(writer, "manifest_extra", dict)())  # e.g. the VDB transform
        manifest.finish("complete")
        prog.emit("done", out=out, manifest=manifest_path, elapsed=round(time.time() - started, 3),
                  summary=manifest.summary())
        return manifest
    except KeyboardInterrupt:
        manifest.finish("cancelled")
        prog.emit("error", message=f"cancelled after {manifest.frames_done} frames; resume with --resume")
        raise
    except Exception as exc:
        if not isinstance(exc, BakeError):  # a solver/sim/writer error: name the frame, never a traceback
            where = f"frame {start_frame + manifest.frames_done}" if manifest.frames_done < frames else "the end"
            exc = BakeError(f"the bake failed at {where}: {type(exc).__name__}: {exc}; the "
                            f"{manifest.frames_done} finished frames are kept")
        manifest.fail(exc)
        prog.emit("error", message=str(exc))
        raise exc from None
    finally:
        signal.signal(signal.SIGTERM, old_term)
        prog.close()
