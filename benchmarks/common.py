"""Shared helpers of the benchmark scripts: arguments, machine/load description, weights, timing,
thresholds, markdown tables and plots. Every script runs all of its methods side by side in one
process on the same machine and writes benchmarks/results/<name>.md (+ PNGs)."""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _blas_threads_from_argv() -> str:
    """--threads N also applies to OpenBLAS (numpy/scipy), set before numpy is imported: a
    multi-threaded BLAS on a machine whose other core is busy spin-waits (LGMRES inside scipy's
    newton_krylov ran 30x slower with 2 OpenBLAS threads next to the training run)."""
    n = "1"
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    return n


if "numpy" in sys.modules:
    warnings.warn("benchmarks/common.py was imported after numpy; BLAS thread settings may not apply")
# only OpenBLAS (numpy/scipy here): MKL_NUM_THREADS / OMP_NUM_THREADS would also change torch's default
os.environ.setdefault("OPENBLAS_NUM_THREADS", _blas_threads_from_argv())

import numpy as np  # noqa: E402

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
import metaphys  # noqa: E402,F401  (before torch, as the CLI: it bounds OpenMP's idle spinning)
import torch  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
F64 = torch.float64


# --------------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------------
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--weights", default=os.path.join(ROOT, "weights", "metamizer.pt"),
                   help="TorchScript Metamizer weights (with the .json sha256 beside them)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and iteration counts (CI smoke run)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results; --quick: "
                                               "a temporary folder unless given)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for every method (default 1: the fairest setting on a "
                        "2-core machine with one core busy; scipy/pyamg are single-threaded)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (median)")
    return p


def setup(args) -> str:
    """Apply the thread setting, silence TorchScript deprecation noise, pick the output folder."""
    torch.set_num_threads(max(1, args.threads))
    warnings.filterwarnings("ignore", message=r".*(TorchScript|torch\.jit).*")
    if args.out is None:
        if args.quick:
            import tempfile
            args.out = tempfile.mkdtemp(prefix="metaphys_bench_")
        else:
            args.out = RESULTS
    os.makedirs(args.out, exist_ok=True)
    import matplotlib
    matplotlib.use("Agg")
    return args.out


# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------
def load_weights(path: str):
    """(TorchScript module, description dict) with the verified sha256 and training step."""
    from metaphys.optim.weights import load_metadata, load_torchscript, sha256_of
    model = load_torchscript(path).eval()
    meta = {}
    try:
        meta = load_metadata(path)
    except (OSError, ValueError):
        pass
    training = meta.get("training", {}) if isinstance(meta, dict) else {}
    return model, {"path": os.path.relpath(os.path.abspath(path), ROOT) if os.path.abspath(path).startswith(ROOT)
                   else path, "sha256": sha256_of(path), "hidden": meta.get("hidden"),
                   "step": training.get("step"), "source": training.get("source")}


def fast_model(model, dtype=torch.float32):
    from metaphys.optim.fast import optimize_for_inference
    return optimize_for_inference(model, dtype=dtype)


# --------------------------------------------------------------------------------------------
# machine and background load
# --------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
        name = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "?")
        fam = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("cpu family")), "?")
        mod = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model\t")), "?")
        flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
        simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
        return f"{name} (family {fam}, model {mod}; {', '.join(simd)})"
    except OSError:
        return platform.processor() or "?"


def _proc_times() -> Dict[int, tuple]:
    """pid -> (cpu seconds, command line) for all processes (Linux /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                parts = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            out[int(d)] = ((int(parts[11]) + int(parts[12])) / tick, cmd)
        except (OSError, IndexError, ValueError):
            continue
    return out


class LoadMonitor:
    """Records load averages and which other processes used CPU during the benchmark."""

    def __init__(self):
        self.t0 = time.time()
        self.start = _proc_times()
        self.load0 = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        self.samples: List[float] = [self.load0[0]]

    def sample(self):
        if hasattr(os, "getloadavg"):
            self.samples.append(os.getloadavg()[0])

    def report(self) -> dict:
        t1 = time.time()
        end = _proc_times()
        wall = max(t1 - self.t0, 1e-9)
        me = os.getpid()
        users = []
        for pid, (cpu, cmd) in end.items():
            if pid == me:
                continue
            c0 = self.start.get(pid, (0.0, cmd))[0] if pid in self.start else 0.0
            share = (cpu - c0) / wall
            if share > 0.05:
                users.append((share, pid, cmd[:110] or "?"))
        users.sort(reverse=True)
        training = [u for u in users if "metaphys.train" in u[2]]
        self.sample()
        return {"wall_s": wall, "load_start": self.load0, "load_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
                "load_samples": self.samples, "others": users[:8], "training": training}


def machine_info() -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    import scipy
    try:
        import pyamg
        pyamg_v = pyamg.__version__
    except ImportError:
        pyamg_v = "missing"
    from metaphys import _ops
    return {"cpu": _cpu_model(), "cores": cores, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "numpy": np.__version__, "scipy": scipy.__version__, "pyamg": pyamg_v,
            "python": platform.python_version(), "kernels": _ops.kernels_available(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "git": _git_rev()}


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def environment_md(machine: dict, load: dict, weights: Optional[dict], args, extra: str = "") -> str:
    lines = ["## Machine and conditions", "",
             f"- CPU: {machine['cpu']}; {machine['cores']} cores visible; no GPU used.",
             f"- torch {machine['torch']} with **{machine['threads']} intra-op thread(s)** for every torch method; "
             f"numpy {machine['numpy']}, scipy {machine['scipy']}, pyamg {machine['pyamg']} with "
             f"{os.environ.get('OPENBLAS_NUM_THREADS', '?')} OpenBLAS thread(s) (sparse kernels are single-threaded); "
             f"Python {machine['python']}; compiled metaphys kernels: {'yes' if machine['kernels'] else 'no (PyTorch twins)'}; "
             f"oneDNN: {'yes' if machine['mkldnn'] else 'no'}.",
             f"- Run: {machine['date']}, git {machine['git']}, {load['wall_s']:.0f} s wall"
             f"{' (--quick)' if getattr(args, 'quick', False) else ''}.",
             ]
    la0, la1 = load["load_start"], load["load_end"]
    samples = load["load_samples"]
    lines.append(f"- **Background load**: 1-min load average {la0[0]:.2f} at start, {la1[0]:.2f} at end "
                 f"(median of {len(samples)} samples {statistics.median(samples):.2f}) on {machine['cores']} cores.")
    if load["training"]:
        for share, pid, cmd in load["training"]:
            lines.append(f"  - the training run `{cmd}` (pid {pid}) used {share:.2f} core on average during this "
                         "benchmark: one of the two cores was busy, as planned for this machine.")
    else:
        lines.append("  - no `metaphys.train` process was seen running during this benchmark.")
    others = [u for u in load["others"] if "metaphys.train" not in u[2]]
    if others:
        lines.append("  - other processes that used CPU meanwhile (share of one core): " +
                     "; ".join(f"`{cmd[:70]}` {share:.2f}" for share, pid, cmd in others[:5]) + ".")
    lines.append("- Wall-clock times are medians over repeats; contention from the processes above inflates "
                 "all of them, torch and scipy alike (all methods interleave in one process).")
    if weights:
        lines.append(f"- Weights: `{weights['path']}`, sha256 `{weights['sha256']}` (hidden {weights['hidden']}, "
                     f"training step {weights['step']}, from `{weights['source']}`).")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# timing and thresholds
# --------------------------------------------------------------------------------------------
def median(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def timed(fn: Callable, repeats: int) -> tuple:
    """(median wall seconds, median CPU seconds of this process, last result) over ``repeats`` calls.

    CPU time (time.process_time) is reported beside wall time because the machine is shared: with
    one thread per method it is what the run would take on an otherwise idle core."""
    ts, cs, out = [], [], None
    for _ in range(max(1, repeats)):
        c = time.process_time()
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return statistics.median(ts), statistics.median(cs), out


def first_below(values: Sequence[float], threshold: float) -> Optional[int]:
    """Index of the first value <= threshold (values[0] = before the first iteration), or None."""
    for i, v in enumerate(values):
        if v is not None and math.isfinite(v) and v <= threshold:
            return i
    return None


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if x != x:
        return "—"
    if x == float("inf"):
        return "∞"
    if x == 0:
        return "0"
    return f"{x:.{digits}e}" if (abs(x) < 1e-2 or abs(x) >= 1e4) else f"{x:.{digits + 1}g}"


def fmt_time(s) -> str:
    if s is None or s != s:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def md_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out) + "\n"


def write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# problems shared by several scripts
# --------------------------------------------------------------------------------------------
def laplace_benchmark(h: int, w: Optional[int] = None):
    """Notes 9.1: 2-cell frame, b = (j/W)(i/H), f = 0, u0 = 0; the exact solution is b itself."""
    from metaphys.physics.laplace import bilinear_laplace
    return bilinear_laplace(h, w)


from metaphys.seeds import BENCHMARK as HELD_OUT_SEED  # noqa: E402  (all held-out seeds in one place; no numpy)


def laplace_random(h: int, seed: int = HELD_OUT_SEED):
    from metaphys.problems.grid import make_laplace
    return make_laplace(1, h, h, torch.Generator().manual_seed(seed + h))


def run_iterations(problem, optimizer, iterations: int, tol: Optional[float] = None, u0=None,
                   guard: bool = False, accelerate: int = 0):
    """The product loop metaphys.optim.solve.iterate (paper-faithful without the step guard and
    the subspace acceleration; ``guard=True`` is the TimeStepper default, ``accelerate=20`` the
    product's) with a wall-clock and a CPU-time stamp after every iteration: (residual history
    [K+1], wall stamps [K+1] (0 first), CPU stamps [K+1], final u)."""
    from metaphys.optim.solve import iterate
    u = problem.initial_guess() if u0 is None else u0
    stamps, cpu = [0.0], [0.0]
    t0 = [0.0, 0.0]

    def cb(it, uu, residual):
        stamps.append(time.perf_counter() - t0[0])
        cpu.append(time.process_time() - t0[1])

    t0[1] = time.process_time()
    t0[0] = time.perf_counter()
    state = optimizer.init_state(tuple(u.shape), device=u.device)
    res = iterate(problem, optimizer, u, state, iterations=None if tol else iterations, tol=tol,
                  max_iterations=iterations, callback=cb, guard=guard, accelerate=accelerate)
    hist = [float(r[0]) for r in res.residuals]
    return hist, stamps, cpu, res.u


def plot_curves(path: str, title: str, curves: Dict[str, dict], thresholds: Sequence[float] = (),
                xlabel_time: str = "wall time [s]", ylabel: str = "MSR",
                xlabel_iter: str = "iterations (solver's own unit, see table)") -> None:
    """Two panels: residual vs time and vs iterations (log-log), one line per method.

    curves[name] = {"t": [...], "r": [...], "it": [...] (optional, else 0..len-1),
                    "t_r": [...] (optional residuals for the time panel), "style": "-"}"""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for k, (name, c) in enumerate(curves.items()):
        color = cmap(k % cmap.N)
        lw = 2.4 if name.startswith("metamizer") else 1.3
        if name.endswith("+guard"):
            lw = 1.4  # drawn over the unguarded run; often the same trajectory
        t, r = c.get("t"), c.get("t_r", c.get("r"))
        if t is not None and len(t):
            tt, rr = np.asarray(t, dtype=float), np.asarray(r, dtype=float)[:len(t)]
            keep = tt > 0  # the start (t = 0) cannot be drawn on a log axis
            axes[0].loglog(tt[keep], np.maximum(rr[keep], 1e-40), c.get("style", "-"), color=color,
                           lw=lw, label=name, marker=c.get("marker") or ("o" if keep.sum() == 1 else None), ms=4)
        r2 = c.get("r")
        if r2 is not None and len(r2):
            it = c.get("it", np.arange(len(r2)))
            it = np.maximum(np.asarray(it, dtype=float), 0.8)
            axes[1].loglog(it, np.maximum(np.asarray(r2, dtype=float), 1e-40), c.get("style", "-"), color=color,
                           lw=lw, label=name, marker=c.get("marker"), ms=3)
    for ax, xl in zip(axes, (xlabel_time, xlabel_iter)):
        for th in thresholds:
            ax.axhline(th, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(xl)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
