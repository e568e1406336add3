"""The bake loop shared by cloth and smoke.

Protocol per frame (makes every bake resumable and every interruption harmless):
  1. sim.step(); refuse non-finite results (BakeError naming the frame);
  2. the kind's writer writes the frame's files atomically;
  3. the simulation state is saved atomically to OUT/.state/frame_XXXX.pt;
  4. the manifest records the frame (atomic rewrite).
The manifest therefore always lists exactly the complete frames on disk; ``resume`` restarts
from the state of the last listed frame and reproduces an uninterrupted bake bit for bit.
"""
from __future__ import annotations

import glob
import os
import signal
import time
from typing import Callable

import torch

from metaphys.bake.progress import Progress
from metaphys.io.manifest import BakeManifest


class BakeError(RuntimeError):
    """A bake that cannot start (bad input) or that failed at a named frame."""


STATE_DIR = ".state"


def _state_path(out: str, index: int) -> str:
    return os.path.join(out, STATE_DIR, f"frame_{index:05d}.pt")


def save_state(out: str, index: int, state: dict) -> None:
    path = _state_path(out, index)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in glob.glob(os.path.join(out, STATE_DIR, "frame_*.pt")):
        if old != path and int(os.path.basename(old)[6:11]) < index - 1:
            os.remove(old)


def load_state(out: str, index: int) -> dict:
    path = _state_path(out, index)
    if not os.path.exists(path):
        raise BakeError(f"cannot resume: simulation state for frame index {index} ({path}) is missing")
    return torch.load(path, map_location="cpu", weights_only=False)


def check_output_dir(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_probe")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise BakeError(f"output folder {out!r} is not writable: {exc}") from None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_bake(kind: str, sim, writer, out: str, frames: int, *, parameters: dict, model_sha256: str,
             progress: str = "bar", resume: bool = False, start_frame: int = 1,
             finalize: Callable = None) -> BakeManifest:
    """Bake ``frames`` frames of ``sim`` into ``out`` with ``writer(sim, frame_number, index)``."""
    check_output_dir(out)
    manifest_path = os.path.join(out, "manifest.json")
    if resume and os.path.exists(manifest_path):
        manifest = BakeManifest.resume(manifest_path, parameters=parameters, model_sha256=model_sha256)
        done = manifest.frames_done
        if done:
            sim.load_state_dict(load_state(out, done))
        writer.resume(done)
    else:
        manifest = BakeManifest(manifest_path, kind=kind, parameters=parameters, model_sha256=model_sha256,
                                start_frame=start_frame)
        done = 0
        writer.start()
    prog = Progress(progress, frames, kind, initial=done)
    prog.emit("start", kind=kind, frames=frames, out=out, resumed_at=done)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.time()
    try:
        for index in range(done, frames):
            t0 = time.time()
            record = sim.step()
            if not sim.finite():
                raise BakeError(f"the simulation diverged at frame {start_frame + index}: non-finite values "
                                "(try more iterations per step or a smaller time step); nothing was written "
                                "for this frame")
            number = start_frame + index
            files = writer.write(sim, number, index)
            save_state(out, index + 1, sim.state_dict())
            manifest.add_frame(number, iterations=record.iterations, residual=record.residual,
                               guard_rejections=record.guard_rejections, hit_cap=record.hit_cap,
                               wall_s=time.time() - t0, files=files)
            prog.frame(frame=number, index=index, frames=frames, iterations=record.iterations,
                       residual=record.residual, guard_rejections=record.guard_rejections,
                       elapsed=round(time.time() - started, 3))
        for name, path in writer.finish(sim).items():
            manifest.outputs[name] = path
        manifest.finish("complete")
        prog.emit("done", out=out, manifest=manifest_path, elapsed=round(time.time() - started, 3))
        return manifest
    except KeyboardInterrupt:
        manifest.finish("cancelled")
        prog.emit("error", message=f"cancelled after {manifest.frames_done} frames; resume with --resume")
        raise
    except Exception as exc:
        manifest.fail(exc)
        prog.emit("error", message=str(exc))
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
        prog.close()
