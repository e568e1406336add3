import argparse
import importlib.util
import json
import os
import signal
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE))))


def emit(**ev):
    sys.stdout.write(json.dumps(ev) + "\n")
    sys.stdout.flush()


def real_io():
    """The repository's metaphys.io (for VDB/npz), loaded as a top-level package under another name."""
    io_dir = os.path.join(REPO, "metaphys", "io")
    spec = importlib.util.spec_from_file_location("realmetaphys_io", os.path.join(io_dir, "__init__.py"),
                                                  submodule_search_locations=[io_dir])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["realmetaphys_io"] = mod
    spec.loader.exec_module(mod)
    return mod


class Cancelled(Exception):
    pass


def _term(signum, frame):
    raise Cancelled()


def write_pc2(path, frames):
    frames = np.asarray(frames, dtype="<f4")
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<12siiffi", b"POINTCACHE2\0", 1, frames.shape[1], 1.0, 1.0, frames.shape[0]))
        fh.write(frames.tobytes())
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="metaphys")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bake")
    b.add_argument("kind", choices=["cloth", "smoke"])
    b.add_argument("--spec")
    b.add_argument("--out", required=True)
    b.add_argument("--progress", default="bar")
    b.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    spec = json.load(open(a.spec)) if a.spec else {}
    delay = float(os.environ.get("METAPHYS_STUB_DELAY", "0"))
    fail_at = int(os.environ.get("METAPHYS_STUB_FAIL_AT", "-1"))
    frames = int(spec.get("frames", 48))
    t0 = time.time()
    if a.kind == "cloth":
        w = np.asarray(spec.get("pin_weights", []), dtype=float)
        if w.size and (w.min() < 0 or w.max() > 1):
            emit(event="error", message=f"pin_weights must be in [0, 1], got {w.max()}")
            return 2
    os.makedirs(a.out, exist_ok=True)
    emit(event="start", kind=a.kind, frames=frames, out=a.out)
    try:
        if a.kind == "cloth":
            rows, cols = spec["rows"], spec["cols"]
            rest = np.asarray(spec["rest_positions"], dtype=float)
            g = np.asarray(spec.get("gravity", [0, 0, -9.81]))
            fps = float(spec.get("fps", 24))
            vidx = np.asarray(spec.get("vertex_index", np.arange(rows * cols)))
            M = np.asarray(spec.get("output_matrix", np.eye(4)), dtype=float)
            M = M[None] if M.ndim == 2 else M  # one matrix, or one per output frame (the last holds)
            targets = np.asarray(spec.get("pin_targets", rest), dtype=float)
            if targets.ndim == 2:
                targets = targets[None]
            out = []
            for k in range(frames):
                if k == fail_at:
                    raise RuntimeError(f"stub failure at frame {k}")
                t = (k + 1) / fps
                # like the engine: output frame k is pulled towards track entry k + 1 (0 = initial state)
                tgt = targets[min(k + 1, len(targets) - 1)]
                p = (1 - w[:, None]) * (rest + 0.5 * g * t * t) + w[:, None] * tgt
                mesh = np.empty_like(p)
                mesh[vidx] = p
                Mk = M[min(k, len(M) - 1)]
                out.append(mesh @ Mk[:3, :3].T + Mk[:3, 3])
                write_pc2(os.path.join(a.out, "cloth.pc2"), out)
                time.sleep(delay)
                emit(event="frame", frame=spec.get("start_frame", 1) + k, index=k, frames=frames, iterations=1,
                     residual=0.0, guard_rejections=0, elapsed=time.time() - t0)
        else:
            io = real_io()
            rows, cols = spec.get("resolution", [32, 32])
            em = np.load(spec["emitters"]) if "emitters" in spec else np.zeros((rows, cols), np.float32)
            c = float(spec.get("cell_size", 1.0 / rows))
            os.makedirs(os.path.join(a.out, "density"), exist_ok=True)
            for k in range(frames):
                if k == fail_at:
                    raise RuntimeError(f"stub failure at frame {k}")
                m = em[k] if em.ndim == 3 else em
                d = (m * (k + 1) / frames).astype(np.float32)
                n = spec.get("start_frame", 1) + k
                base = os.path.join(a.out, "density", f"density_{n:04d}")
                np.savez(base + ".npz", density=d)
                io.write_density_vdb(base + ".vdb", d, voxel_size=c)
                time.sleep(delay)
                emit(event="frame", frame=n, index=k, frames=frames, iterations=1, residual=0.0,
                     guard_rejections=0, elapsed=time.time() - t0)
        json.dump({"kind": a.kind, "complete": True, "frames_written": frames}, open(os.path.join(a.out, "manifest.json"), "w"))
    except Cancelled:
        return 130
    except Exception as e:
        emit(event="error", message=str(e))
        return 1
    emit(event="done", out=a.out, manifest=os.path.join(a.out, "manifest.json"), elapsed=time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
