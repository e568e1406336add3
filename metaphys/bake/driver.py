"""The bake loop shared by cloth and smoke.

Protocol per frame (makes every bake resumable and every interruption harmless):
  1. sim.step(); refuse non-finite results (BakeError naming the frame); check convergence and
     strain (a warning, or with ``strict`` an error: the frame is not written);
  2. the kind's writer writes the frame's files atomically;
  3. the simulation state is saved atomically to OUT/.state/frame_XXXX.pt;
  4. the manifest records the frame with its full StepRecord and the sha256 of every file the frame
     wrote and of the state (atomic rewrite).
The manifest therefore always lists exactly the complete frames on disk; ``resume`` checks every
recorded file against its sha256 (refusing a damaged bake), restarts from the state of the last
listed frame (loaded as tensors and plain values only: a bake folder someone sends you cannot run
code) and reproduces an uninterrupted bake bit for bit.

The output folder is owned by one bake at a time (``OUT/.metaphys.lock``). A bake starts only in
an empty folder or resumes the bake already there (``resume``); any other non-empty folder is
refused unless ``force``, which first clears the previous bake's outputs (the files its manifest
and naming scheme own, never others). A bake never writes or deletes through a symbolic link that
leaves its folder.
"""
from __future__ import annotations

import collections
import glob
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from metaphys.bake.errors import BakeError, input_error
from metaphys.bake.owned import OWNED, SAMPLED
from metaphys.bake.progress import Progress
from metaphys.io import pc2
from metaphys.io.atomic import atomic_path, make_temp, remove_stale_temps
from metaphys.io.manifest import BakeManifest, sha256_file
from metaphys.optim.weights_file import WeightsError, load_plain


STATE_DIR = ".state"
LOCK_NAME = ".metaphys.lock"
MANIFEST = "manifest.json"
# what every refusal to resume a damaged bake suggests
REPLACE_HINT = "replace it: bake again with --force instead of --resume (or choose an empty --out)"


# ---- simulation state --------------------------------------------------------------------------------
def _state_path(out: str, index: int) -> str:
    return os.path.join(out, STATE_DIR, f"frame_{index:05d}.pt")


# what a safe (weights-only) torch.load reads back; anything else would make the bake unresumable
_PLAIN_LEAVES = (str, bytes, int, float, bool, complex, type(None), torch.Tensor, torch.dtype, torch.device)


def plain_state(obj, where: str = "state"):
    """``obj`` with numpy scalars as Python numbers; BakeError naming the key for any other value a
    safe resume could not load (a sim's state_dict must hold tensors and plain values only)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, _PLAIN_LEAVES):
        return obj
    if type(obj) in (dict, collections.OrderedDict):
        return type(obj)((k, plain_state(v, f"{where}[{k!r}]")) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(plain_state(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise BakeError(f"the simulation's {where} is a {type(obj).__module__}.{type(obj).__name__}; a bake saves "
                    "only tensors and plain values (so that --resume never unpickles objects), so this "
                    "simulation cannot be baked resumably: a bug in its state_dict()")


def save_state(out: str, index: int, state: dict) -> str:
    """Save the state after ``index`` frames atomically and drop older ones; return its sha256 (the
    manifest records it and --resume checks it before loading)."""
    path = _state_path(out, index)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # through memory: torch.save names the zip's records after the file it writes, and the temporary
    # file's random name would make two identical bakes' states differ byte for byte
    buf = io.BytesIO()
    torch.save(plain_state(state), buf)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
        digest = sha256_file(tmp)
    for old in glob.glob(os.path.join(out, STATE_DIR, "frame_*.pt")):
        m = re.fullmatch(r"frame_(\d+)\.pt", os.path.basename(old))
        if m and old != path and int(m.group(1)) < index - 1:
            os.remove(old)
    return digest


def load_state(out: str, index: int, sha256: str) -> dict:
    """The state after ``index`` frames, if its bytes have the recorded ``sha256``; loaded as tensors
    and plain values only (never unpickling objects)."""
    path = _state_path(out, index)
    if not os.path.isfile(path):
        raise input_error(f"cannot resume: simulation state for frame index {index} ({path}) is missing; "
                          f"{REPLACE_HINT}")
    if sha256_file(path) != sha256:
        raise input_error(f"cannot resume: the saved simulation state {path} is corrupted: it was changed since "
                          f"the bake wrote it (its sha256 differs from the one in {MANIFEST}); {REPLACE_HINT}")
    try:
        state = load_plain(path, "the saved simulation state")
    except WeightsError as exc:
        raise input_error(f"cannot resume: {exc}; {REPLACE_HINT}") from None
    if not isinstance(state, dict):
        raise input_error(f"cannot resume: {path} does not hold a simulation state; {REPLACE_HINT}")
    return state


# ---- per-frame checksums --------------------------------------------------------------------------------
def _sample_digest(out: str, key: str, index) -> Optional[str]:
    """sha256 of sample ``index`` of the cache file ``key`` names (a PC2 sample), None if absent."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None
    path = os.path.join(out, SAMPLED[key])
    try:
        size = pc2.read_pc2_header(path).num_points * 12
        with open(path, "rb") as fh:
            fh.seek(pc2.PC2_HEADER_SIZE + index * size)
            data = fh.read(size)
    except (OSError, ValueError, OverflowError):
        return None
    return hashlib.sha256(data).hexdigest() if len(data) == size else None


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _file_digest(out: str, rel: str) -> Optional[str]:
    """sha256 of the regular file ``rel`` inside ``out``, None if missing or it resolves outside."""
    if os.path.isabs(rel):
        return None
    path = os.path.join(out, rel)
    if not _inside(os.path.realpath(out), os.path.realpath(path)) or not os.path.isfile(path):
        return None
    return sha256_file(path)


def _digest(out: str, key: str, value) -> Optional[str]:
    """sha256 of what one entry of a frame's ``files`` names: a file inside OUT, or a sample of a
    cache file the frames share; None when that is missing."""
    if isinstance(value, str):
        return _file_digest(out, value)
    return _sample_digest(out, key, value) if key in SAMPLED else None


def frame_digests(out: str, files: dict) -> Dict[str, str]:
    """sha256 of what a frame wrote, under the names its writer gave (``files``)."""
    digests = {}
    for key, value in files.items():
        digest = _digest(out, key, value)
        if digest is None:
            raise BakeError(f"the writer reported {key}={value!r}, which is not a file in {out!r}: a bug in the writer")
        digests[key] = digest
    return digests


def _frame_damage(out: str, record: dict) -> List[str]:
    """How the files of one manifest frame differ from the sha256 it recorded ([] when intact)."""
    number = record["frame"]
    files, digests = record.get("files") or {}, record.get("sha256")
    if not isinstance(digests, dict) or not isinstance(files, dict):
        return [f"frame {number} records no checksums (written by a metaphys older than checksummed "
                "manifests), so its files cannot be verified"]
    problems = []
    for key, value in files.items():
        what = value if isinstance(value, str) else f"sample {value} of {SAMPLED.get(key, key)}"
        actual = _digest(out, key, value)
        if actual is None:
            problems.append(f"{what} (frame {number}) is missing")
        elif actual != digests.get(key):
            problems.append(f"{what} (frame {number}) was changed since the bake wrote it")
    return problems


def check_bake_intact(out: str, manifest: BakeManifest) -> None:
    """Refuse (input error) to resume a bake whose frame files are missing or differ from their
    recorded sha256: resuming would mix damaged frames into the result."""
    problems = [p for record in manifest.frames for p in _frame_damage(out, record)]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems) - 5} more)" if len(problems) > 5 else "")
        raise input_error(f"cannot resume the bake in {out!r}: its files no longer match "
                          f"{os.path.join(out, MANIFEST)}: {shown}; {REPLACE_HINT}")


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
    if pid <= 0:  # os.kill(0 or -1, ...) would ask about a whole process group, not one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _as_pid(value) -> int:
    """A lock's recorded pid, -1 (no live process) for anything that is not a positive integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else -1


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
                holder = json.load(fh)
        except (OSError, ValueError, RecursionError):
            return None
        return holder if isinstance(holder, dict) else None

    def _refuse_non_file(self) -> None:
        """A folder (or other non-file) where the lock belongs cannot be a lock: say so, touch nothing."""
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            return
        except OSError as exc:
            raise input_error(f"cannot use the bake lock {self.path}: {exc}") from None
        if not stat.S_ISREG(mode):
            what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise input_error(f"{self.path} is {what}, not a metaphys bake lock; a bake keeps its lock file at that "
                              "path: remove it or choose another --out")

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
        self._refuse_non_file()
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
                    self._refuse_non_file()  # created meanwhile as a folder: never remove that
                    holder = self._holder()
                    if holder is not None and (holder.get("host") != self.info["host"]
                                               or _pid_alive(_as_pid(holder.get("pid")))):
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


def refuse_links_leaving(out: str) -> None:
    """Input error naming the first path a bake writes or clears in ``out`` that is a symbolic link
    leading out of it: a bake never writes or deletes through such a link (into a user's folder)."""
    root = os.path.realpath(out)
    names = {MANIFEST, STATE_DIR}
    for files, dirs in OWNED.values():
        names.update(files, dirs)
    for name in sorted(names):
        path = os.path.join(out, name)
        if os.path.islink(path) and not _inside(root, os.path.realpath(path)):
            raise input_error(f"{path} is a symbolic link to {os.path.realpath(path)!r}, outside the bake folder "
                              f"{out!r}; a bake never writes or deletes through a link that leaves its folder: "
                              "remove the link or choose another --out")


def _real_folder_inside(out: str, rel: str) -> Optional[str]:
    """OUT/rel if it is a folder that resolves inside OUT, else None."""
    folder = os.path.join(out, rel) if rel else out
    if os.path.isdir(folder) and _inside(os.path.realpath(out), os.path.realpath(folder)):
        return folder
    return None


def remove_bake_temps(out: str) -> List[str]:
    """Delete what killed atomic writes left in the bake's folders (OUT, .state/, frame folders)."""
    removed = []
    folders = {"", STATE_DIR} | {d for _, dirs in OWNED.values() for d in dirs}
    for rel in sorted(folders):
        folder = _real_folder_inside(out, rel)
        if folder is not None:
            removed += [os.path.join(rel, n) for n in remove_stale_temps(folder, keep=_is_lock_attempt)]
    return removed


def _is_lock_attempt(name: str) -> bool:
    """A temp file another bake is about to link as its lock: in use, not a leftover."""
    return name.endswith(os.path.splitext(LOCK_NAME)[1])


def _remove_owned_file(out: str, rel: str) -> bool:
    """Delete OUT/rel if it is a file inside OUT (a link: the link itself, never what it points to)."""
    if os.path.isabs(rel):
        return False
    path = os.path.join(out, rel)
    if not _inside(os.path.realpath(out), os.path.realpath(os.path.dirname(path))):  # ../ or a linked folder
        return False
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        return False
    os.remove(path)
    return True


def _clear_frame_folder(out: str, rel: str, pattern: str) -> List[str]:
    """Delete the numbered frames in OUT/rel (also those an interrupted bake's manifest missed); drop
    the folder if that empties it."""
    folder = _real_folder_inside(out, rel)
    if folder is None:
        return []
    removed = [os.path.join(rel, n) for n in sorted(os.listdir(folder))
               if re.fullmatch(pattern, n) and _remove_owned_file(out, os.path.join(rel, n))]
    if not os.path.islink(folder) and not os.listdir(folder):
        os.rmdir(folder)
    return removed


def _remove_state_folder(out: str) -> None:
    path = os.path.join(out, STATE_DIR)
    if os.path.islink(path):  # inside OUT (refuse_links_leaving refused others): the link, not its target
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _listed_files(manifest: BakeManifest) -> set:
    """The file names a previous bake's manifest lists (frame files and outputs that are not folders)."""
    files, dirs = _owned(manifest.kind)
    listed = set(files)
    for record in manifest.frames:
        listed.update(v for v in (record.get("files") or {}).values() if isinstance(v, str))
    listed.update(v for v in manifest.outputs.values() if isinstance(v, str) and v not in dirs)
    return listed


def clear_previous_bake(out: str, new_kind: str) -> List[str]:
    """Remove what the previous bake in ``out`` wrote (files named by its manifest or by its kind's
    naming scheme, .state/, temporary leftovers); refuse a folder holding bake-named files that no
    manifest owns, and any link leading out of ``out`` where the bake writes."""
    refuse_links_leaving(out)
    manifest_path = os.path.join(out, MANIFEST)
    if not os.path.lexists(manifest_path):
        files, _ = _owned(new_kind)
        clash = [f for f in files if os.path.lexists(os.path.join(out, f))]
        if clash:
            raise input_error(f"{out!r} already holds {', '.join(clash)} but no metaphys manifest.json owns "
                              "them; bake into an empty folder (or remove those files)")
        return remove_bake_temps(out)
    try:
        old = BakeManifest.load(manifest_path)
    except (OSError, ValueError) as exc:
        raise input_error(f"{manifest_path} is not a readable metaphys bake manifest ({exc}); bake into an "
                          "empty folder (or remove that file)") from None
    removed = remove_bake_temps(out)  # first: a frame folder emptied below is then removed too
    removed += [rel for rel in sorted(_listed_files(old)) if _remove_owned_file(out, rel)]
    for rel, pattern in _owned(old.kind)[1].items():
        removed += _clear_frame_folder(out, rel, pattern)
    _remove_state_folder(out)
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
        old = BakeManifest.load(os.path.join(out, MANIFEST))
    except (OSError, ValueError):
        return "an unreadable manifest.json"
    total = old.parameters.get("frames")
    count = f"{old.frames_done} of {total} frames" if total is not None else f"{old.frames_done} frames"
    return f"a {old.status} {old.kind} bake ({count})"


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
        return dict(BakeManifest.load(os.path.join(out, MANIFEST)).settings)
    except (OSError, ValueError):  # --resume then refuses the manifest with the reason
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
        budget = getattr(record, "budget_hit", "")
        why = {"time": "; the frame reached its time budget (frame_time_budget) and kept its best iterate",
               "iterations": "; the frame reached its iteration cap and kept its best iterate"}.get(budget, "")
        problems.append(f"frame {number}: relative residual {rr:.2e} missed the tolerance {tol:g} "
                        f"(finished by {record.finished_by}{why})" if rr is not None and tol is not None else
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


def _resume_manifest(kind, sim, out, frames, parameters, model_sha256, settings) -> BakeManifest:
    """The manifest of the bake in ``out``, checked to continue: same kind, spec and settings, every
    recorded file intact, ``sim`` restored from the last frame's verified state."""
    refuse_links_leaving(out)
    remove_bake_temps(out)  # leftovers of the killed run (never listed by the manifest)
    manifest_path = os.path.join(out, MANIFEST)
    try:
        manifest = BakeManifest.resume(manifest_path, parameters=parameters, model_sha256=model_sha256,
                                       settings=settings, kind=kind, ignore=("frames",), save=False)
    except (OSError, ValueError) as exc:
        raise input_error(f"{exc}; {REPLACE_HINT}") from None
    done = manifest.frames_done
    if frames < done:
        raise input_error(f"cannot resume: the bake in {out!r} already has {done} frames, more than the "
                          f"{frames} asked for (--frames may only extend a bake)")
    check_bake_intact(out, manifest)
    if done:
        state = load_state(out, done, manifest.frames[-1].get("state_sha256"))
        try:
            sim.load_state_dict(state)
        except Exception as exc:
            raise input_error(f"cannot resume: the saved simulation state of frame index {done} does not "
                              f"fit this simulation ({type(exc).__name__}: {str(exc)[:120]}); {REPLACE_HINT}") from None
    manifest.parameters["frames"] = frames
    manifest.settings = {**settings, **manifest.settings}  # a manifest older than settings records them now
    return manifest


def _run_locked(kind, sim, writer, out, frames, parameters, model_sha256, progress, resume, start_frame,
                settings, strict, force=False) -> BakeManifest:
    manifest_path = os.path.join(out, MANIFEST)
    if resume and os.path.lexists(manifest_path):
        manifest = _resume_manifest(kind, sim, out, frames, parameters, model_sha256, settings)
        done = manifest.frames_done
        writer.resume(done)
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
    if hasattr(sim, "on_progress"):  # long frames report their solver's iterations (throttled)
        sim.on_progress = prog.inner
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
            digests = frame_digests(out, files)
            state_sha256 = save_state(out, index + 1, sim.state_dict())
            fields = _record_fields(record)
            warnings.extend(problems)
            manifest.add_frame(number, wall_s=time.time() - t0, files=files, sha256=digests,
                               state_sha256=state_sha256, **fields)
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
