"""Compiled kernel vs PyTorch twin: wall time of one loss + gradient evaluation per op and size.

    python benchmarks/ops.py                 # CPU: C++ kernel vs twin, writes benchmarks/results/ops.md
    python benchmarks/ops.py --quick         # tiny sizes, prints only (a smoke test of the script)
    python benchmarks/ops.py --device cuda   # CUDA kernel vs twin on the GPU vs C++ kernel on the CPU
                                             # (benchmarks/gpu_check.sh runs this)

Each row is the median over repeats (at least --min-reps calls and --min-time seconds) of one
call returning (loss [N], grad), batch N = 1, float64. Other ops join the table by appending a
``Case`` to ``CASES`` (see the four grid ops below for the pattern).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Sequence, Tuple

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from metaphys import _ops  # noqa: E402
from metaphys.physics.burgers import burgers_twin  # noqa: E402
from metaphys.physics.cloth import cloth_twin, rest_grid, table_from_lists  # noqa: E402
from metaphys.physics.diffusion import diffusion_twin  # noqa: E402
from metaphys.physics.fluid import add_obstacle, fluid_geometry, fluid_twin  # noqa: E402
from metaphys.physics.laplace import frame_mask, laplace_twin  # noqa: E402
from metaphys.physics.wave import wave_twin  # noqa: E402

F64 = torch.float64
Size = Tuple[int, int]


@dataclass
class Case:
    """One op to time. ``make_args(h, w, device, true_grad)`` returns the op's full argument tuple."""

    name: str
    op: str  # torch.ops.metaphys.<op>
    twin: Callable
    make_args: Callable[[int, int, str, bool], tuple]
    cpu_sizes: Sequence[Size] = ((100, 100), (400, 400), (1000, 1000))
    gpu_sizes: Sequence[Size] = ((256, 256), (1024, 1024), (2048, 2048))
    quick_sizes: Sequence[Size] = ((16, 16), (33, 20))
    modes: Sequence[bool] = (False, True)  # true_grad values to time
    note: str = ""
    extra: dict = field(default_factory=dict)


def _rand(g, c, h, w, device, scale=1.0):
    return (scale * torch.randn(1, c, h, w, generator=g, dtype=F64)).to(device)


def _mask(h, w, device):
    return frame_mask(1, h, w, width=2, device=device)


def _p(x, device):
    return torch.tensor([x], dtype=F64, device=device)


def laplace_args(h, w, device, true_grad, stencil=9):
    g = torch.Generator().manual_seed(0)
    return (_rand(g, 1, h, w, device), _mask(h, w, device), _rand(g, 1, h, w, device), _rand(g, 1, h, w, device, 0.1),
            stencil, true_grad)


def diffusion_args(h, w, device, true_grad, stencil=9):
    g = torch.Generator().manual_seed(1)
    return (_rand(g, 1, h, w, device), _rand(g, 1, h, w, device), _mask(h, w, device), _rand(g, 1, h, w, device),
            _rand(g, 2, h, w, device, 2.0), _rand(g, 1, h, w, device, 0.1), _p(1.0, device), _p(1.0, device),
            stencil, true_grad)


def wave_args(h, w, device, true_grad, stencil=9):
    g = torch.Generator().manual_seed(2)
    return (_rand(g, 1, h, w, device), _rand(g, 1, h, w, device), _rand(g, 1, h, w, device), _mask(h, w, device),
            _rand(g, 1, h, w, device), _p(2.0, device), _p(1.0, device), stencil, true_grad)


def burgers_args(h, w, device, true_grad, stencil=9):
    g = torch.Generator().manual_seed(3)
    return (_rand(g, 2, h, w, device), _rand(g, 2, h, w, device), _mask(h, w, device), _rand(g, 2, h, w, device),
            _p(0.3, device), _p(1.0, device), stencil, true_grad)


def fluid_args(h, w, device, true_grad):
    """Wind tunnel with a cylinder (the reference's geometry), random (a, p) and a_old; the op
    always returns the true gradient (``true_grad`` is ignored)."""
    g = torch.Generator().manual_seed(4)
    mask, bc = fluid_geometry(1, h, w, kind="tunnel", inflow=1.0, inflow_margin=max(3, h // 10))
    mask, bc = add_obstacle(mask, bc, "circle", center=(h / 2, w / 3), radius=max(2.0, h / 10), omega=0.1)
    return (_rand(g, 2, h, w, device), _rand(g, 1, h, w, device), mask.to(device), bc.to(device),
            _rand(g, 2, h, w, device, 0.1), _p(1.0, device), _p(0.1, device), _p(1.0, device), 1.0, 20.0, 0.1, 0.1)


def cloth_args(h, w, device, true_grad):
    """h x w vertex cloth, two hard corner pins + soft pins, one sphere and one box in contact,
    gravity, wind and damping on; the op always returns the true gradient."""
    g = torch.Generator().manual_seed(5)
    x = rest_grid(1, h, w) + 0.05 * torch.randn(1, 3, h, w, generator=g, dtype=F64)
    pin_w = torch.zeros(1, 1, h, w, dtype=F64)
    pin_w[..., 0, 0] = pin_w[..., -1, 0] = 1.0
    pin_w[..., h // 2, w // 2] = 0.5
    spheres = torch.tensor([[[w / 2, 0.0, -2.0, h / 4]]], dtype=F64)
    boxes = torch.tensor([[[w / 4, h / 4, -1.0, 2.0, 2.0, 1.0]]], dtype=F64)
    vec = lambda *v: torch.tensor([v], dtype=F64, device=device)  # noqa: E731
    params = [_p(v, device) for v in (1.0, 1000.0, 10.0, 0.1, 1.0, 0.1, 100.0, 1000.0, 0.05, 1.0)]
    colliders = table_from_lists(1, spheres, boxes)   # the collider table (metaphys.colliders)
    return (_rand(g, 3, h, w, device, 0.1), x.to(device), _rand(g, 3, h, w, device, 0.1), pin_w.to(device),
            x.to(device), colliders.to(device), vec(0.0, 0.0, -1.0), vec(0.1, 0.0, 0.0), *params)


# The table's rows. Navier-Stokes and cloth append their own Case here (with their sizes).
CASES: List[Case] = [
    Case("laplace", "laplace_loss_grad", laplace_twin, laplace_args),
    Case("diffusion", "diffusion_loss_grad", diffusion_twin, diffusion_args),
    Case("wave", "wave_loss_grad", wave_twin, wave_args),
    Case("burgers", "burgers_loss_grad", burgers_twin, burgers_args),
    Case("fluid", "fluid_loss_grad", fluid_twin, fluid_args, cpu_sizes=((64, 64), (128, 128), (256, 256)),
         gpu_sizes=((256, 256), (1024, 1024), (2048, 2048)), quick_sizes=((24, 24), (33, 40)), modes=(True,),
         note="MAC Navier-Stokes, unknown (a, p), true gradient"),
    Case("cloth", "cloth_loss_grad", cloth_twin, cloth_args, cpu_sizes=((32, 32), (64, 64), (128, 128)),
         gpu_sizes=((128, 128), (512, 512), (1024, 1024)), quick_sizes=((8, 8), (9, 13)), modes=(True,),
         note="spring-mass cloth, unknown a, true gradient"),
]


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn, device: str, min_reps: int, min_time: float, max_reps: int = 1000) -> float:
    """Median seconds of fn() over at least min_reps calls and min_time seconds (after one warm-up)."""
    fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_line(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [f"CPU: {cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
             f"({torch.get_num_threads()} intra-op threads by default)", f"Python {platform.python_version()}"]
    if hasattr(os, "getloadavg"):
        parts.append("load average %.1f at start (other jobs on the machine inflate the times)" % os.getloadavg()[0])
    if device.startswith("cuda"):
        parts.append(f"GPU: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    return "; ".join(parts)


def _fmt_ms(s: float) -> str:
    ms = 1e3 * s
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def run(cases: Sequence[Case], device: str, quick: bool, min_reps: int, min_time: float, only=None,
        threads: Sequence[int] = (0,)):
    if not _ops.kernels_available():
        raise SystemExit(f"metaphys._C is not built ({_ops._state['error']}); run `make build` first")
    if device.startswith("cuda") and not _ops.cuda_kernels_available():
        raise SystemExit("metaphys._C was built without CUDA kernels; rebuild with a CUDA torch and CUDA_HOME")
    gpu = device.startswith("cuda")
    rows = []
    for case in cases:
        if only and case.name not in only:
            continue
        sizes = case.quick_sizes if quick else (case.gpu_sizes if gpu else case.cpu_sizes)
        op = getattr(torch.ops.metaphys, case.op)
        for (h, w) in sizes:
            for true_grad in case.modes:
                args = case.make_args(h, w, device, true_grad)
                for nt in threads:
                    if nt > 0:
                        torch.set_num_threads(nt)
                    t_kernel = time_call(lambda: op(*args), device, min_reps, min_time)
                    t_twin = time_call(lambda: case.twin(*args), device, min_reps, min_time)
                    row = dict(op=case.name, size=f"{h}x{w}", grad="true" if true_grad else "pseudo",
                               threads=torch.get_num_threads(), kernel=t_kernel, twin=t_twin)
                    if gpu:
                        cpu_args = case.make_args(h, w, "cpu", true_grad)
                        row["cpu"] = time_call(lambda: op(*cpu_args), "cpu", min_reps, min_time)
                    rows.append(row)
                    print(_format_row(row, gpu), flush=True)
    return rows


def _header(gpu: bool) -> List[str]:
    if gpu:
        return ["op", "grid", "gradient", "CPU threads", "CUDA kernel ms", "twin on GPU ms", "C++ on CPU ms",
                "twin / CUDA", "CPU / CUDA"]
    return ["op", "grid", "gradient", "threads", "C++ kernel ms", "PyTorch twin ms", "twin / kernel"]


def _cells(row, gpu: bool) -> List[str]:
    cells = [row["op"], row["size"], row["grad"], str(row["threads"]), _fmt_ms(row["kernel"]), _fmt_ms(row["twin"])]
    if gpu:
        cells += [_fmt_ms(row["cpu"]), f"{row['twin'] / row['kernel']:.1f}x", f"{row['cpu'] / row['kernel']:.1f}x"]
    else:
        cells.append(f"{row['twin'] / row['kernel']:.1f}x")
    return cells


def _format_row(row, gpu: bool) -> str:
    return "  ".join(f"{c:>14}" for c in _cells(row, gpu))


def markdown(rows, device: str, args, machine: str) -> str:
    gpu = device.startswith("cuda")
    head = _header(gpu)
    out = [f"# metaphys ops: {'CUDA' if gpu else 'C++ CPU'} kernel vs PyTorch twin (loss + gradient)", "",
           f"- {machine}",
           f"- {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; batch N = 1, float64, 9-point stencil, "
           f"2-cell Dirichlet frame; median of >= {args.min_reps} calls and >= {args.min_time:g} s per entry",
           "- gradient: pseudo = the Appendix-D stop-gradient gradient used in training; true = exact gradient",
           f"- command: `python benchmarks/ops.py {' '.join(sys.argv[1:])}`", "",
           "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_cells(row, gpu)) + " |")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, few repeats, no results file")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--ops", default="", help="comma-separated subset of op names (default: all)")
    ap.add_argument("--min-reps", type=int, default=5)
    ap.add_argument("--threads", default="0", help="comma-separated torch intra-op thread counts to time, e.g. 1,2 "
                                                   "(default 0: torch's choice)")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds of timing per entry (at least)")
    ap.add_argument("--out", default=None, help="markdown results file (default: benchmarks/results/ops.md on CPU, "
                                                "benchmarks/results/gpu_check.md on CUDA; none with --quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.min_reps, args.min_time = 2, 0.0
    threads = [int(t) for t in args.threads.split(",") if t.strip()] or [0]
    only = set(filter(None, args.ops.split(",")))
    gpu = args.device.startswith("cuda")
    machine = machine_line(args.device)
    print(machine)
    print("  ".join(f"{c:>14}" for c in _header(gpu)))
    rows = run(CASES, args.device, args.quick, args.min_reps, args.min_time, only, threads)
    out = args.out
    if out is None and not args.quick:
        here = os.path.dirname(os.path.abspath(__file__))
        out = os.path.join(here, "results", "gpu_check.md" if gpu else "ops.md")
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as fh:
            fh.write(markdown(rows, args.device, args, machine))
        print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
