#!/usr/bin/env bash
# GPU benchmark of the Metamizer (issue #9), prepared for a CUDA machine (Python 3.12,
# torch 2.11+cu130, no internet). NOT RUN YET: no GPU was available when it was written.
#
#   bash benchmarks/gpu_bench.sh [--weights weights/metamizer.pt] [--sizes 100,400] [--quick]
#
# Measures, on one GPU, in one process:
#   1. time per Metamizer iteration (physics kernel + network + update) at each size for
#      (a) the shipped TorchScript module on CUDA, (b) the frozen channels_last module of
#      metaphys.optim.fast (float32), (c) (b) with TF32 convolutions allowed (different steps, ~1e-3),
#      (d) one whole iteration captured as a CUDA graph (b, replayed; no host sync per iteration);
#   2. time to MSR 1e-20 (Laplace benchmark of the notes, section 9.1) for those variants, against
#      the CPU's best classical solvers on this machine's CPU in the same run: scipy CG and pyamg
#      smoothed aggregation as a CG preconditioner (setup included), via benchmarks/laplace.py.
# Writes benchmarks/results/gpu_bench.md (and a copy to $OUT when that is set).
# Environment: PYTHON (default: .venv/bin/python if it exists, else python3). If metaphys._C does
# not import (e.g. it was built for another Python) and nvcc exists, the extension is rebuilt in
# place first (set GPU_BENCH_NO_BUILD=1 to skip; the PyTorch twins then run on the GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
echo "gpu_bench: python $($PYTHON -c 'import sys; print(sys.version.split()[0])'), torch $($PYTHON -c 'import torch; print(torch.__version__, torch.version.cuda)')"
# GPU_BENCH_DEVICE=cpu runs the same script on the CPU (a plumbing check only; no CUDA graph)
if [ "${GPU_BENCH_DEVICE:-cuda}" = "cuda" ] && ! $PYTHON -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_bench: torch.cuda.is_available() is False; this script needs a CUDA GPU" >&2
  exit 2
fi
if [ -z "${GPU_BENCH_NO_BUILD:-}" ] && ! $PYTHON -c "import metaphys._C" 2>/dev/null; then
  if command -v nvcc >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
    echo "gpu_bench: building metaphys._C with CUDA (setup.py build_ext --inplace)"
    export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
    mkdir -p build
    $PYTHON setup.py -q build_ext --inplace > build/gpu_bench_build.log 2>&1 \
      || { echo "gpu_bench: build failed (tail of build/gpu_bench_build.log below); using the PyTorch twins"; tail -20 build/gpu_bench_build.log; }
  else
    echo "gpu_bench: no nvcc; the physics runs as PyTorch twins on the GPU"
  fi
fi

export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
$PYTHON - "$@" <<'PYEOF'
import argparse, datetime, os, platform, shutil, statistics, subprocess, sys, time, warnings
warnings.filterwarnings("ignore")
ROOT = os.getcwd()
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import numpy as np
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--weights", default=os.path.join(ROOT, "weights", "metamizer.pt"))
ap.add_argument("--sizes", default="100,400")
ap.add_argument("--quick", action="store_true", help="sizes 64 only, short runs (plumbing check)")
ap.add_argument("--cap", type=int, default=600, help="iteration cap for time-to-1e-20")
args = ap.parse_args()
sizes = [64] if args.quick else [int(s) for s in args.sizes.split(",")]
cap = 80 if args.quick else args.cap
dev = torch.device(os.environ.get("GPU_BENCH_DEVICE", "cuda"))
ON_GPU = dev.type == "cuda"
torch.backends.cudnn.benchmark = True

import common
from metaphys import _ops
from metaphys.optim.fast import optimize_for_inference
from metaphys.optim.metamizer import Metamizer
from metaphys.optim.weights import load_torchscript, sha256_of

F64 = torch.float64
lines, errors = [], []
weights = load_torchscript(args.weights, map_location="cpu").eval()
plain = load_torchscript(args.weights, map_location=str(dev)).eval()
fast = optimize_for_inference(weights, device=dev, mkldnn=False)  # frozen, channels_last, float32
fast_tf32 = fast  # same module; TF32 is a global switch toggled around its runs


def sync():
    if ON_GPU:
        torch.cuda.synchronize()


def problem_on(size):
    return common.laplace_benchmark(size).to(dev)


def loop(problem, model, iters, tol=None, tf32=False):
    """Product-like loop without per-iteration host syncs; residuals kept on the device."""
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    opt = Metamizer(model)
    u = problem.initial_guess()
    state = opt.init_state(tuple(u.shape), device=dev)
    hist = torch.empty(iters + 1, dtype=F64, device=dev)
    sync()
    t = time.perf_counter()
    loss, grad = problem.loss_and_grad(u)
    hist[0] = loss[0]
    for k in range(iters):
        step, state = opt.step(grad, state)
        u = problem.apply(u, step)
        loss, grad = problem.loss_and_grad(u)
        hist[k + 1] = loss[0]
    sync()
    secs = time.perf_counter() - t
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return hist.cpu().tolist(), secs


class Graphed:
    """One whole iteration (loss+grad, network, update) captured as a CUDA graph."""

    def __init__(self, problem, model):
        self.problem, self.model = problem, model
        u = problem.initial_guess()
        n, c, h, w = u.shape
        self.u = u.clone()
        self.pg = torch.zeros(n * c, 1, h, w, dtype=F64, device=dev)
        self.ps = torch.zeros_like(self.pg)
        self.s = torch.full((n * c,), 0.05, dtype=F64, device=dev)
        self.loss = torch.zeros(n, dtype=F64, device=dev)
        self.u0 = u.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(4):  # warm-up (TorchScript profiling runs, cuDNN autotuning)
                self._body()
        torch.cuda.current_stream().wait_stream(side)
        self.reset()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self._body()
        self.reset()

    def _body(self):
        loss, grad = self.problem.loss_and_grad(self.u)
        g = grad.reshape(self.pg.shape)
        step, scale = self.model(g, self.pg, self.ps, self.s)
        self.u.copy_(self.problem.apply(self.u, step.reshape(self.u.shape)))
        self.pg.copy_(g)
        self.ps.copy_(step)
        self.s.copy_(scale)
        self.loss.copy_(loss)

    def reset(self):
        self.u.copy_(self.u0)
        self.pg.zero_()
        self.ps.zero_()
        self.s.fill_(0.05)

    def run(self, iters):
        """Replays; hist[k] = loss before the k-th update (hist[0] at u0)."""
        self.reset()
        hist = torch.empty(iters + 1, dtype=F64, device=dev)
        sync()
        t = time.perf_counter()
        for k in range(iters + 1):
            self.graph.replay()
            hist[k] = self.loss[0]
        sync()
        return hist.cpu().tolist(), time.perf_counter() - t


def first_below(h, th):
    return common.first_below(h, th)


results = {}
for size in sizes:
    problem = problem_on(size)
    row = {}
    variants = {"shipped TorchScript (float32)": (plain, False), "fast: frozen channels_last (float32)": (fast, False),
                "fast + TF32 convolutions": (fast_tf32, True)}
    for name, (m, tf32) in variants.items():
        try:
            loop(problem, m, 5, tf32=tf32)  # warm-up
            its = 20 if args.quick else 100
            per = statistics.median(loop(problem, m, its, tf32=tf32)[1] / its for _ in range(3))
            hist, _ = loop(problem, m, cap, tf32=tf32)
            k = first_below(hist, 1e-20)
            tt = statistics.median(loop(problem, m, k, tf32=tf32)[1] for _ in range(3)) if k else None
            row[name] = (per, k, tt, hist[-1])
        except Exception as exc:  # report, keep going
            errors.append(f"{size}²: {name}: {type(exc).__name__}: {exc}")
    try:
        if not ON_GPU:
            raise RuntimeError("no CUDA device (GPU_BENCH_DEVICE=cpu plumbing check)")
        g = Graphed(problem, fast)
        its = 20 if args.quick else 100
        per = statistics.median(g.run(its)[1] / (its + 1) for _ in range(3))
        hist, _ = g.run(cap)
        k = first_below(hist, 1e-20)
        tt = statistics.median(g.run(k)[1] for _ in range(3)) if k else None
        row["fast + CUDA graph (one iteration per replay)"] = (per, k, tt, hist[-1])
    except Exception as exc:
        errors.append(f"{size}²: CUDA graph: {type(exc).__name__}: {exc}")
    # CPU classical solvers on this machine, same process
    try:
        import laplace as lap
        from metaphys.optim.baselines import laplace_system
        cpu_problem = common.laplace_benchmark(size)
        A, b, free_index = laplace_system(cpu_problem)
        for method, label in (("cg", "scipy CG (CPU)"), ("pyamg_sa_cg", "pyamg SA + CG (CPU, setup incl.)")):
            r = lap.run_linear(cpu_problem, method, A, b, free_index, 8000 if size >= 300 else 3000, 3, True)
            c = lap.crossing(r, 1e-20, False)
            row[label] = (r.get("per_it"), c[0] if c else None, c[1] if c else None, r["final"])
    except Exception as exc:
        errors.append(f"{size}²: CPU solvers: {type(exc).__name__}: {exc}")
    results[size] = row
    print(size, {k: (f"{v[0]*1e3:.2f} ms/it" if v[0] else "", v[1], v[2]) for k, v in row.items()}, flush=True)

gpu = torch.cuda.get_device_name(0) if ON_GPU else "none (GPU_BENCH_DEVICE=cpu plumbing check, not a GPU result)"
cpu = common._cpu_model()
md = ["# GPU benchmark (benchmarks/gpu_bench.sh)", "",
      f"- GPU: {gpu}; CUDA {torch.version.cuda}; torch {torch.__version__}; Python {platform.python_version()}",
      f"- CPU (for the classical solvers): {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
      f"- metaphys CUDA kernels: {'yes' if _ops.cuda_kernels_available() else 'no (PyTorch twins on the GPU)'}",
      f"- Weights: {os.path.relpath(args.weights, ROOT)}, sha256 {sha256_of(args.weights)}",
      f"- Run {datetime.datetime.now():%Y-%m-%d %H:%M}{' (--quick)' if args.quick else ''}; "
      "wall-clock medians of 3 runs after warm-up, synchronized with torch.cuda.synchronize.", "",
      "Time to 1e-20: the Metamizer loops keep residuals on the GPU (no host sync per iteration); the "
      "iteration count comes from a recording run, the time from runs of exactly that many iterations. "
      "CPU solvers: timed unrecorded prefix runs (benchmarks/laplace.py). TF32 changes the steps (~1e-3).", ""]
for size, row in results.items():
    cg = row.get("scipy CG (CPU)")
    md += [f"## Laplace benchmark {size}x{size}", "",
           "| method | time/iteration | iterations to 1e-20 | time to 1e-20 | vs CPU CG | final MSR |",
           "|---|---|---|---|---|---|"]
    for name, (per, k, tt, fin) in row.items():
        ratio = f"{tt / cg[2]:.3g}×" if tt and cg and cg[2] else "—"
        md.append(f"| {name} | {common.fmt_time(per)} | {k if k else '—'} | {common.fmt_time(tt)} | {ratio} | "
                  f"{common.fmt(fin)} |")
    md.append("")
if errors:
    md += ["## Errors", ""] + [f"- {e}" for e in errors] + [""]
text = "\n".join(md)
dest = os.path.join(ROOT, "benchmarks", "results", "gpu_bench.md" if ON_GPU else "gpu_bench_cpu_dryrun.md")
if not ON_GPU:
    dest = os.path.join(os.environ.get("TMPDIR", "/tmp"), "gpu_bench_cpu_dryrun.md")
os.makedirs(os.path.dirname(dest), exist_ok=True)
with open(dest, "w") as fh:
    fh.write(text)
if os.environ.get("OUT"):
    shutil.copy(dest, os.path.join(os.environ["OUT"], "gpu_bench.md"))
print(text)
PYEOF
