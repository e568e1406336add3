"""Profile one Metamizer iteration on the CPU (Laplace 100^2 and 400^2) and compare speedups.

Part 1, breakdown of one iteration of metaphys.optim.solve.iterate (physics kernel, input
normalization incl. the float64 -> float32 conversion, U-Net, output conversion + step formation,
Python/loop overhead = the rest), for the shipped module and for metaphys.optim.fast, each
component timed in isolation (median of repeats), plus the torch profiler's top operators.

Part 2, before/after in the same run (variants interleaved repeat by repeat): time per iteration
of the whole loop for the shipped module with torch's default thread count (before) and with one
thread, the frozen channels_last module (metaphys.optim.fast, float32: same steps to ~1e-6), the
same with oneDNN prepacking, 2 threads, and the opt-in bfloat16 network; the
effect of batching samples into one forward; then the time to MSR 1e-20 on the Laplace 100^2
benchmark (notes 9.1) against scipy CG and pyamg in the same run.

Part 3, the product's iteration (what solve() and the sims run: subspace acceleration with memory
20, two physics evaluations per iteration) at 32^2, 100^2 and 400^2, one thread: its components --
the U-Net forward (shipped module; frozen channels_last; the same with every convolution through
oneDNN; bfloat16 where the CPU has it), its FLOPs, the physics kernel, the accelerator with fresh
temporaries (optim/accelerate.py) and with preallocated ones (the scripted solver) -- and the
steady-state time per iteration (history full) of solve() and of the TorchScript solver module
(optim/scripted_solver.py: driven from Python with the compiled kernel, and solve_poisson alone).

Part 4, the 3-D network (issue #28; weights/metamizer3d.pt), one thread, at 16^3, 32^3, 48^3, 64^3: where
a forward's time goes by operator kind (torch profiler, self CPU: conv3d on oneDNN or on PyTorch's im2col
path, trilinear upsampling, concatenation, pooling, ReLU, copies, the float64 normalization and step),
for the shipped module and the fast one; the forward time of each fast variant against the shipped
module (interleaved, median; batch 4 = the smoke sim's four unknown channels, and batch 1 = one 3-D
Laplace field); then the product's iteration (solve(), subspace acceleration 20) on the 3-D
Navier-Stokes problem and on 3-D Laplace, before (the shipped module) and after (the fast module that
SmokeSim3D and solve() now run), interleaved, median. ``--part 3d`` runs this part alone and replaces
its section of profile.md, keeping the rest.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: sets the BLAS thread count before numpy loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402


F64 = torch.float64


def med_call(fn, repeats, warm=2):
    for _ in range(warm):
        fn()
    w, c, _ = common.timed(fn, repeats)
    return w, c


class _NullOptimizer:
    """Returns a zero step without any network: iterate() with it measures kernel + apply + loop."""

    def init_state(self, shape, device=None):
        return None

    def step(self, grad, state):
        return torch.zeros_like(grad), state


class _NullNet(torch.nn.Module):
    def forward(self, grad, prev_grad, prev_step, scale):
        return grad, scale


def breakdown(problem, model, fast, repeats, iters):
    """Component times (wall, cpu) for the plain and the fast module at this size, each measured
    directly (no differences of large numbers)."""
    from metaphys.optim.fast import normalize_inputs
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.solve import iterate
    u = problem.initial_guess()
    _, g = problem.loss_and_grad(u)
    pg, ps = 0.3 * g, 1e-3 * torch.randn_like(g)
    scale = torch.full((1,), 0.05, dtype=F64)
    out = {}
    out["physics kernel (loss_and_grad)"] = med_call(lambda: problem.loss_and_grad(u), repeats * 5)
    out["apply (u + step, impose)"] = med_call(lambda: problem.apply(u, ps), repeats * 5)
    n_null = max(iters, 20)
    null = med_call(lambda: iterate(problem, _NullOptimizer(), u, None, iterations=n_null), repeats)
    out["iterate() bookkeeping (per iteration, no-op optimizer, minus kernel and apply)"] = tuple(
        null[i] / n_null - out["physics kernel (loss_and_grad)"][i] - out["apply (u + step, impose)"][i]
        for i in range(2))
    wrap = Metamizer(torch.jit.script(_NullNet()))
    st = wrap.init_state(tuple(u.shape))
    out["Metamizer.step wrapper (split/merge channels, state; trivial network)"] = med_call(
        lambda: wrap.step(g, st), repeats * 5)
    with torch.no_grad():
        x = model.network_input(g, pg, ps)
        out["plain: input normalization (float64, cat, ->float32)"] = med_call(lambda: model.network_input(g, pg, ps),
                                                                              repeats * 5)
        x64 = x.to(F64)
        out["  of which the float64->float32 cast"] = med_call(lambda: x64.to(torch.float32), repeats * 5)
        out["plain: U-Net (TorchScript, float32)"] = med_call(lambda: model.unet(x), repeats)
        o_d, o_s = model.unet(x)

        def head():
            d = torch.tanh(o_d.to(F64))
            lam = 2.0 * torch.tanh(o_s.to(F64).view(-1) / 2.0) - 1.0
            ns = scale * torch.exp(lam)
            return ns.view(-1, 1, 1, 1) * d

        out["output: float32->float64, tanh, exp, step"] = med_call(head, repeats * 5)
        out["plain: whole forward"] = med_call(lambda: model(g, pg, ps, scale), repeats)
        out["fast: fused input normalization (->float32)"] = med_call(lambda: normalize_inputs(g, pg, ps), repeats * 5)
        out["fast: whole forward (frozen, channels_last)"] = med_call(lambda: fast(g, pg, ps, scale), repeats)
    for name, m in (("plain", model), ("fast", fast)):
        per = []
        for _ in range(max(1, repeats // 2)):
            hist, wall, cpu, _ = common.run_iterations(problem, Metamizer(m), iters)
            per.append(((wall[-1] - wall[1]) / (iters - 1), (cpu[-1] - cpu[1]) / (iters - 1)))
        out[f"{name}: one iteration of iterate() (measured)"] = (common.median(p[0] for p in per),
                                                                 common.median(p[1] for p in per))
    return out


def profiler_table(problem, model, iters, rows=12):
    from torch.profiler import ProfilerActivity, profile

    from metaphys.optim.metamizer import Metamizer
    common.run_iterations(problem, Metamizer(model), 3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        common.run_iterations(problem, Metamizer(model), iters)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def per_iteration(problem, variants, iters, repeats):
    """Interleaved: for each repeat, each variant runs ``iters`` iterations; median per-iteration."""
    from metaphys.optim.metamizer import Metamizer
    res = {k: [] for k in variants}
    for _ in range(repeats):
        for name, (m, threads) in variants.items():
            torch.set_num_threads(threads)
            hist, wall, cpu, _ = common.run_iterations(problem, Metamizer(m), iters)
            res[name].append(((wall[-1] - wall[1]) / (iters - 1), (cpu[-1] - cpu[1]) / (iters - 1)))
    torch.set_num_threads(1)
    return {k: (common.median(p[0] for p in v), common.median(p[1] for p in v)) for k, v in res.items()}


def time_to(problem, variants, threshold, cap, repeats):
    from metaphys.optim.metamizer import Metamizer
    res = {k: [] for k in variants}
    for rep in range(repeats):
        for name, (m, threads) in variants.items():
            if threads > 1 and rep > 0:  # multi-threaded runs on a busy machine are slow: one repeat
                continue
            torch.set_num_threads(threads)
            hist, wall, cpu, _ = common.run_iterations(problem, Metamizer(m), cap, tol=threshold)
            k = common.first_below(hist, threshold)
            res[name].append((k, wall[k] if k is not None else None, cpu[k] if k is not None else None, hist[-1]))
    torch.set_num_threads(1)
    out = {}
    for k, v in res.items():
        ok = [x for x in v if x[0] is not None]
        out[k] = (ok[0][0], common.median(x[1] for x in ok), common.median(x[2] for x in ok)) if ok else (None, None, None,
                                                                                                       v[-1][3])
    return out


# ---- part 3: the product's iteration ------------------------------------------------------------
PRODUCT_SIZES = (32, 100, 400)
MEMORY = 20          # optim.accelerate.DEFAULT_MEMORY: the history is full from iteration 10 on
STEADY = {32: (10, 40), 100: (10, 30), 400: (10, 14)}   # time iterations k1+1..k2 (history full)


def onednn_convs(model):
    """metaphys.optim.fast's module with every convolution through oneDNN (``OneDNNConv``; the 3-D
    default, a candidate for 2-D, measured here)."""
    from metaphys.optim.fast import optimize_for_inference
    return optimize_for_inference(model, onednn=True, pack=False)


def unet_flops(model, size: int) -> float:
    """Floating-point operations of one U-Net forward (convolutions and the linear head, 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    from metaphys.optim.fast import eager_from_any
    net = eager_from_any(model)
    x = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.unet(x)
    return float(counter.get_total_flops())


def accelerator_step(acc, u, g, buffers=None):
    """One iteration's accelerator work with a full history: propose, then push two points.
    ``buffers``: preallocated difference tensors (what the scripted solver does), else fresh ones."""
    from metaphys.optim.accelerate import SubspaceAccelerator
    if buffers is None:
        acc.propose(u, g)
    else:
        k = acc._count
        du = torch.sub(acc._u[:, :k], u.flatten(1)[:, None], out=buffers[0][:, :k])
        dg = torch.sub(acc._g[:, :k], g.flatten(1)[:, None], out=buffers[1][:, :k])
        torch.einsum("ni,nid->nd", SubspaceAccelerator._energy(du, dg, g.flatten(1)), du)
    acc.push(u, g)
    acc.push(u, g)


def product_iteration(model, fast, bf16, sizes, repeats, quick):
    """Part 3 (see the module doc): markdown lines."""
    from metaphys.optim.accelerate import SubspaceAccelerator
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.scripted_solver import MetamizerSolver, run
    from metaphys.optim.solve import iterate
    onednn = onednn_convs(model)
    solver = torch.jit.script(MetamizerSolver(model).eval())
    forwards = {"U-Net forward: shipped module": model, "U-Net forward: fast (frozen, channels_last)": fast,
                "U-Net forward: fast + every convolution through oneDNN": onednn}
    if bf16 is not None:
        forwards["U-Net forward: fast, bfloat16 network (opt-in, different steps)"] = bf16
    cells, t = {}, {}   # (row, size) -> markdown cell; (row, size) -> (CPU s, wall s)

    def put(name, size, cpu, wall, note=""):
        t[name, size] = (cpu, wall)
        bold = "**" if name.startswith("iteration") else ""
        cells[name, size] = f"{bold}{common.fmt_time(cpu)}{bold} ({common.fmt_time(wall)}){note}"

    for s in sizes:
        problem = common.laplace_random(s)
        fl = problem.fields
        u = problem.initial_guess()
        _, g = problem.loss_and_grad(u)
        g = g + 1e-3 * torch.randn_like(g)
        pg, ps, sc = 0.3 * g, 1e-3 * torch.randn_like(g), torch.full((1,), 0.05, dtype=F64)
        reps = repeats * (10 if s <= 100 else 1)
        flops = unet_flops(model, s)
        cells["U-Net FLOPs per forward", s] = f"{flops / 1e9:.3f} G"
        with torch.no_grad():
            ref = model(g, pg, ps, sc)[0]
            for name, m in forwards.items():
                w, c = med_call(lambda: m(g, pg, ps, sc), reps)
                diff = float((m(g, pg, ps, sc)[0] - ref).abs().max() / ref.abs().max())
                put(name, s, c, w, f", step Δ {diff:.0e}" if diff else "")
        rate = flops / t["U-Net forward: fast (frozen, channels_last)", s][0] / 1e9
        cells["rate of the fast forward (CPU time)", s] = f"{rate:.0f} GFLOP/s"
        w, c = med_call(lambda: problem.loss_and_grad(u), reps * 5)
        put("physics kernel, 2 evaluations", s, 2 * c, 2 * w)
        acc = SubspaceAccelerator(MEMORY)
        for _ in range(MEMORY):
            acc.push(u + torch.randn_like(u), torch.randn_like(g))
        buffers = (torch.empty_like(acc._u), torch.empty_like(acc._g))
        for name, b in (("accelerator, fresh temporaries (optim/accelerate.py)", None),
                        ("accelerator, preallocated differences (scripted solver)", buffers)):
            w, c = med_call(lambda: accelerator_step(acc, u, g, b), max(3, reps))
            put(name, s, c, w)
        k1, k2 = (2, 6) if quick else STEADY[s]
        runners = {
            "iteration: solve() with the shipped module": lambda k: iterate(
                problem, Metamizer(model), u, Metamizer(model).init_state(tuple(u.shape)), iterations=k,
                accelerate=MEMORY),
            "iteration: solve() with the fast module": lambda k: iterate(
                problem, Metamizer(fast), u, Metamizer(fast).init_state(tuple(u.shape)), iterations=k,
                accelerate=MEMORY),
            "iteration: scripted solver, ask/tell from Python (compiled kernel)": lambda k: run(
                solver, u, problem.loss_and_grad, mask=fl["mask"], values=fl["bc"], max_iterations=k),
            "iteration: scripted solver, solve_poisson (all TorchScript)": lambda k: solver.solve_poisson(
                fl["mask"], fl["bc"], fl["f"], 9, None, k),
        }
        for name, fn in runners.items():
            t1 = med_call(lambda: fn(k1), repeats)   # warm-up calls first: TorchScript optimizes on its 2nd run
            t2 = med_call(lambda: fn(k2), repeats)
            w, c = ((t2[i] - t1[i]) / (k2 - k1) for i in range(2))
            put(name, s, c, w)
        print(f"part 3: {s}x{s} done", flush=True)
    names = list(dict.fromkeys(name for name, _ in cells))
    table = common.md_table(["component (CPU time, wall in parentheses)"] + [f"{s}²" for s in sizes],
                            [[name] + [cells.get((name, s), "") for s in sizes] for name in names])
    print("\n## The product's iteration\n\n" + table, flush=True)
    summary = []
    for s in sizes:
        it = t["iteration: solve() with the fast module", s][0]
        fwd = t["U-Net forward: fast (frozen, channels_last)", s][0]
        fresh = t["accelerator, fresh temporaries (optim/accelerate.py)", s][0]
        pre = t["accelerator, preallocated differences (scripted solver)", s][0]
        kern = t["physics kernel, 2 evaluations", s][0]
        summary.append(f"- {s}²: one iteration of solve() with the fast module {common.fmt_time(it)} CPU: U-Net "
                       f"{100 * fwd / it:.0f} %, accelerator {100 * fresh / it:.0f} % "
                       f"({common.fmt_time(fresh)}; {common.fmt_time(pre)} with preallocated differences), "
                       f"physics {100 * kern / it:.1f} %.")
        if s == 100:
            summary.append(f"  Target of issue #29 (one iteration at 100² ≤ 4 ms): "
                           f"{'met' if it <= 4e-3 else 'not met'} with float32 ({common.fmt_time(it)}).")
    return ["## The product's iteration (subspace acceleration on), 1 thread", "",
            f"Laplace with obstacles (benchmarks/common.py laplace_random), batch 1. Iterations: the steady state "
            f"with the history full, (T(k2) - T(k1)) / (k2 - k1) for k1, k2 = {STEADY if not quick else (2, 6)}. "
            "Forwards: medians of single calls; 'step Δ': the largest step difference from the shipped module, "
            "relative to the largest step (float32 rounding is ~1e-6; bfloat16 ~1e-2). The accelerator rows are "
            "one iteration's work with a full history of 20 (propose, two pushes): the fresh [N, 20, H*W] "
            "difference tensors of optim/accelerate.py cost page faults on every iteration; writing them into "
            "buffers kept from one iteration to the next (as the scripted solver does) gives the same bits.", "",
            table, "", "Where the time goes (CPU time):", ""] + summary + [""]


# ---- part 4: the 3-D network ----------------------------------------------------------------------
SIZES_3D = (16, 32, 48, 64)
ITER_SIZES_3D = (16, 32, 64)
BEGIN_3D, END_3D = "<!-- part 4 (3-D network): begin -->", "<!-- part 4 (3-D network): end -->"
OP_KINDS = (  # (label, aten op names whose self CPU time it sums); the rest is "everything else"
    ("conv3d on oneDNN (mkldnn_convolution)", ("aten::mkldnn_convolution",)),
    ("conv3d on PyTorch's im2col path (slow_conv3d)", ("aten::slow_conv3d_forward", "aten::slow_conv3d")),
    ("trilinear upsampling", ("aten::upsample_trilinear3d",)),
    ("concatenation (skip + upsampled)", ("aten::cat",)),
    ("max pooling", ("aten::max_pool3d_with_indices", "aten::max_pool3d")),
    ("ReLU", ("aten::clamp_min_", "aten::relu_", "aten::clamp_min", "aten::relu")),
    ("copies (zero pad, layout)", ("aten::copy_", "aten::clone", "aten::constant_pad_nd")),
    ("1x1 head as matrix-vector product", ("aten::addmv", "aten::mv")),
    ("float64 normalization and step (norm, tanh, mul, div, exp, casts)",
     ("aten::linalg_vector_norm", "aten::tanh", "aten::mul", "aten::div", "aten::exp", "aten::_to_copy",
      "aten::mul_", "aten::clamp_min", "aten::sub", "aten::add", "aten::reciprocal")),
)


def op_kinds(module, args, repeats=3):
    """{kind: share of the self CPU time} of one forward: each of ``repeats`` forwards (after two
    warm-up calls) profiled on its own, each operator's median over them (the profiler's times are
    wall clock: the median drops the forwards that another process preempted)."""
    from torch.profiler import ProfilerActivity, profile
    runs = []
    with torch.no_grad():
        module(*args)
        module(*args)
        for _ in range(repeats):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                module(*args)
            runs.append({e.key: e.self_cpu_time_total for e in prof.key_averages()})
    keys = set().union(*runs)
    selfs = {k: common.median(r.get(k, 0.0) for r in runs) for k in keys}
    total = sum(selfs.values()) or 1.0
    out, seen = {}, set()
    for label, names in OP_KINDS:
        out[label] = sum(selfs.get(n, 0.0) for n in names if n not in seen) / total
        seen.update(names)
    out["everything else (dispatch, views, empty, ...)"] = 1.0 - sum(out.values())
    return out


def _inputs3d(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(n, 1, size, size, size, generator=g, dtype=F64)
    return grad, 0.3 * torch.randn_like(grad), 1e-3 * torch.randn_like(grad), torch.full((n,), 0.05, dtype=F64)


def network3d(args, monitor):
    """Part 4 (see the module doc): markdown lines."""
    from torch.utils.flop_counter import FlopCounterMode

    from metaphys.optim.accelerate import SubspaceAccelerator
    from metaphys.optim.fast import FastMetamizer, eager_from_any, native_bf16, optimize_for_inference
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.weights_file import DEFAULT_WEIGHTS_3D
    from metaphys.problems.grid3d import make_fluid3d, make_laplace3d
    torch.set_num_threads(1)
    model, wdesc = common.load_weights(DEFAULT_WEIGHTS_3D)
    t = time.perf_counter()
    fast = optimize_for_inference(model)
    build_s = time.perf_counter() - t
    variants = {"shipped module (before)": model,
                "frozen, channels_last_3d, fused normalization": optimize_for_inference(
                    model, lean=False, onednn=False, pack=False),
                "+ lean levels (no zero-pad copy, 1x1 head as addmv)": optimize_for_inference(
                    model, onednn=False, pack=False),
                "+ every conv through oneDNN": optimize_for_inference(model, onednn=True, pack=False),
                "+ 8-channel convs packed as 16 = **fast module (after, default)**": fast,
                "fast with oneDNN prepacking (torch.jit.optimize_for_inference)": optimize_for_inference(
                    model, mkldnn=True)}
    if native_bf16():
        variants["fast, bfloat16 network (opt-in, different steps)"] = optimize_for_inference(
            model, dtype=torch.bfloat16)
    if args.quick:   # the plumbing only: before and after
        variants = {k: v for k, v in variants.items() if k.startswith(("shipped", "+ 8-channel"))}
    sizes = (16,) if args.quick else SIZES_3D
    iter_sizes = (16,) if args.quick else ITER_SIZES_3D
    repeats = 1 if args.quick else 3
    lines = ["## Part 4: the 3-D network (issue #28), 1 thread", "",
             f"Weights `{wdesc['path']}` (sha256 `{wdesc['sha256'][:16]}...`, hidden {wdesc['hidden']}: 8, 16, 32, "
             f"64, 64 channels by level). The fast module is built once per process: {build_s:.1f} s. "
             "Times: CPU time (wall in parentheses), medians; variants interleaved repeat by repeat. "
             "'step Δ': the largest step difference from the shipped module relative to the largest step.", ""]
    # -- where the time goes
    kinds = {}
    for s in sizes:
        a4, a1 = _inputs3d(4, s), _inputs3d(1, s)
        if not args.quick:
            kinds[s, "plain", 4] = op_kinds(model, a4, 3 if s >= 48 else 5)
            kinds[s, "fast", 4] = op_kinds(fast, a4, 3 if s >= 48 else 5)
        if s == 32 or args.quick:
            kinds[s, "plain", 1] = op_kinds(model, a1, 5)
            kinds[s, "fast", 1] = op_kinds(fast, a1, 5)
        print(f"part 4: operator profile {s}^3 done", flush=True)
    monitor.sample()
    cols = [k for k in kinds]
    hdr = ["operator kind (share of the forward's self CPU time)"] + [
        f"{s}³ ×{n} {'shipped' if v == 'plain' else 'fast'}" for s, v, n in cols]
    rows = [[label] + [f"{100 * kinds[c][label]:.1f} %" for c in cols] for label in kinds[cols[0]]]
    lines += ["### Where a forward's time goes (torch profiler)", "",
              "×4: batch 4, the smoke sim's four unknown channels (a_z, a_y, a_x, p) in one forward; ×1: one "
              "field (3-D Laplace).", "", common.md_table(hdr, rows), ""]
    # -- forward per variant
    cells, fw = {}, {}
    flops = {}
    net = eager_from_any(model)
    for s in sizes:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net.unet(torch.zeros(4, 3, s, s, s))
        flops[s] = float(counter.get_total_flops())
        for n in ((1,) if args.quick else (4, 1)):
            a = _inputs3d(n, s)
            with torch.no_grad():
                ref = model(*a)[0]
                diffs = {}
                for name, m in variants.items():
                    m(*a)
                    m(*a)
                    diffs[name] = float((m(*a)[0] - ref).abs().max() / ref.abs().max())
                res = {name: [] for name in variants}
                reps = repeats if s <= 32 else max(1, repeats - 1)
                for _ in range(reps):
                    for name, m in variants.items():
                        res[name].append(med_call(lambda: m(*a), 1, warm=0))
            for name in variants:
                w, c = common.median(x[0] for x in res[name]), common.median(x[1] for x in res[name])
                fw[name, s, n] = (c, w)
            for name in variants:
                c, w = fw[name, s, n]
                c0 = fw["shipped module (before)", s, n][0]
                note = f", step Δ {diffs[name]:.0e}" if diffs[name] else ""
                cells[name, s, n] = f"{common.fmt_time(c)} ({common.fmt_time(w)}) {c0 / c:.2f}×{note}"
            print(f"part 4: forwards {s}^3 x{n} done", flush=True)
        monitor.sample()
    colsf = [(s, n) for s in sizes for n in ((1,) if args.quick else (4, 1))]
    rows = [[name] + [cells[name, s, n] for s, n in colsf] for name in variants]
    rows.append(["U-Net GFLOP per forward (batch 4; batch 1 a quarter)"] + [
        f"{flops[s] / 1e9:.2f}" if n == 4 else f"{flops[s] / 4e9:.2f}" for s, n in colsf])
    after = "+ 8-channel convs packed as 16 = **fast module (after, default)**"
    rows.append(["rate of the fast module (CPU time)"] + [
        f"{(flops[s] / (4 if n == 1 else 1)) / fw[after, s, n][0] / 1e9:.0f} GFLOP/s" for s, n in colsf])
    lines += ["### Forward pass per variant (CPU (wall), speedup in CPU time against the shipped module)", "",
              common.md_table(["variant"] + [f"{s}³ ×{n}" for s, n in colsf], rows), ""]
    # -- the product's iteration
    it_rows = []
    summary = []
    for s in iter_sizes:
        gen = torch.Generator().manual_seed(common.HELD_OUT_SEED + s)
        for label, problem in ((f"3-D Navier-Stokes {s}³ (4 channels)", make_fluid3d(1, s, s, gen)),
                               (f"3-D Laplace {s}³ (1 channel)", make_laplace3d(1, s, s, gen))):
            if "Laplace" in label and s == 64 or "Navier" in label and args.quick:
                continue   # the one-channel case is shown at 16^3 and 32^3; --quick: Laplace 16^3 only
            iters = 4 if args.quick else (14 if s <= 32 else 8)
            k1 = 2 if args.quick else (6 if s <= 32 else 4)
            opts = {"before: shipped module": lambda: Metamizer(model), "after: fast module": lambda: FastMetamizer(fast)}
            per = {k: [] for k in opts}
            for _ in range(repeats if s <= 32 else 2):
                for name, make in opts.items():
                    _, wall, cpu, _ = common.run_iterations(problem, make(), iters, accelerate=MEMORY)
                    per[name].append(((wall[-1] - wall[k1]) / (iters - k1), (cpu[-1] - cpu[k1]) / (iters - k1)))
            u = problem.initial_guess()
            kern = med_call(lambda: problem.loss_and_grad(u), 5)
            _, g = problem.loss_and_grad(u)
            acc = SubspaceAccelerator(MEMORY)
            for _ in range(MEMORY):
                acc.push(u + torch.randn_like(u), torch.randn_like(g))
            accel = med_call(lambda: accelerator_step(acc, u, g), 5)
            b = (common.median(p[1] for p in per["before: shipped module"]),
                 common.median(p[0] for p in per["before: shipped module"]))
            a = (common.median(p[1] for p in per["after: fast module"]),
                 common.median(p[0] for p in per["after: fast module"]))
            it_rows.append([label, f"{common.fmt_time(b[0])} ({common.fmt_time(b[1])})",
                            f"**{common.fmt_time(a[0])}** ({common.fmt_time(a[1])})", f"**{b[0] / a[0]:.2f}×** "
                            f"({b[1] / a[1]:.2f}×)", f"{common.fmt_time(2 * kern[1])}",
                            f"{100 * 2 * kern[1] / b[0]:.0f} % / {100 * 2 * kern[1] / a[0]:.0f} %",
                            f"{common.fmt_time(accel[1])} ({100 * accel[1] / a[0]:.0f} %)"])
            print(f"part 4: iteration {label} done", flush=True)
        monitor.sample()
    lines += ["### The product's iteration, before / after (solve(), subspace acceleration 20, 1 thread)", "",
              "Per iteration, median over repeats of (T(k) - T(k1)) / (k - k1) after the first iterations "
              "(history filling); the problems are the held-out-seeded generators of metaphys.problems.grid3d "
              "(a cavity or tunnel with an obstacle; obstacle boxes with sine boundary values).", "",
              common.md_table(["problem", "before (shipped module)", "after (fast module)", "speedup CPU (wall)",
                               "physics kernel, 2 evaluations", "kernel share before / after",
                               "accelerator (share of after)"], it_rows), "",
              "The accelerator column is one iteration's work of optim/accelerate.py with a full history "
              "(propose, two pushes; fresh [N, 20, cells] float64 difference tensors each iteration): with the "
              "network faster, it and the physics kernel are the rest of the iteration.", ""]
    return lines, wdesc


def splice_3d(path: str, section: str) -> str:
    """profile.md with its part-4 section (between the markers) replaced by ``section``, or appended."""
    old = ""
    if os.path.exists(path):
        with open(path) as fh:
            old = fh.read()
    block = f"{BEGIN_3D}\n{section.rstrip()}\n{END_3D}\n"
    if BEGIN_3D in old and END_3D in old:
        head, rest = old.split(BEGIN_3D, 1)
        return head + block + rest.split(END_3D, 1)[1].lstrip("\n")
    return old.rstrip("\n") + "\n\n" + block


def main_3d(args, out, monitor, machine) -> int:
    """``--part 3d``: part 4 with its own conditions, spliced into profile.md."""
    lines, wdesc = network3d(args, monitor)
    load = monitor.report()
    samples = load["load_samples"]
    others = "; ".join(f"`{cmd[:60]}` {share:.2f}" for share, _, cmd in load["others"][:4])
    cond = (f"Run on its own (`--part 3d`): {machine['date']}, git {machine['git']}, {load['wall_s']:.0f} s wall; "
            f"CPU {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']}, 1 thread, oneDNN "
            f"{'yes' if machine['mkldnn'] else 'no'}, CPU capability {torch.backends.cpu.get_cpu_capability()}. "
            f"**Background load**: 1-min load average {load['load_start'][0]:.2f} at start, "
            f"{load['load_end'][0]:.2f} at end (median of {len(samples)} samples {common.median(samples):.2f}) on "
            f"{machine['cores']} cores" + (f"; other processes using CPU meanwhile (share of one core): {others}" if others
                                           else "") + ". Wall times are inflated by that load; CPU times less so.")
    section = "\n".join(lines[:1] + ["", cond] + lines[1:])
    path = os.path.join(out, "profile.md")
    common.write(path, splice_3d(path, section))
    print("\n".join(lines))
    print(f"wrote part 4 into {path}")
    return 0


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "2d", "3d"), default="all",
                   help="3d: part 4 alone, written into profile.md in place of its earlier section")
    args = p.parse_args(argv)
    try:  # torch's own default intra-op thread count is the number of (physical) cores
        default_threads = len(os.sched_getaffinity(0))
    except AttributeError:
        default_threads = os.cpu_count() or 1
    out = common.setup(args)
    monitor = common.LoadMonitor()
    machine = common.machine_info()
    if args.part == "3d":
        return main_3d(args, out, monitor, machine)
    model, wdesc = common.load_weights(args.weights)
    from metaphys.optim.fast import native_bf16, optimize_for_inference
    t = time.perf_counter()
    fast = optimize_for_inference(model)
    build_s = time.perf_counter() - t
    fast_mkl = optimize_for_inference(model, mkldnn=True)
    bf16 = optimize_for_inference(model, dtype=torch.bfloat16) if native_bf16() else None
    sizes = (32,) if args.quick else (100, 400)
    repeats = args.repeats or (2 if args.quick else 5)
    lines = []
    shares = {}
    # ---- part 1: breakdown
    for s in sizes:
        problem = common.laplace_benchmark(s)
        iters = 6 if args.quick else (30 if s <= 100 else 8)
        reps = repeats if s <= 100 else max(2, repeats // 2)
        bd = breakdown(problem, model, fast, reps, iters)
        monitor.sample()
        it_plain = bd["plain: one iteration of iterate() (measured)"]
        it_fast = bd["fast: one iteration of iterate() (measured)"]
        kern = bd["physics kernel (loss_and_grad)"]
        shares[s] = (kern[1] / it_plain[1], kern[1] / it_fast[1])
        rows = []
        for name, (w, c) in bd.items():
            ref = it_fast if name.startswith("fast") else it_plain
            share = "" if "one iteration" in name else f"{100 * c / ref[1]:.1f} %"
            if not name.startswith(("plain", "fast", "  ")):
                share = f"{100 * c / it_plain[1]:.1f} % / {100 * c / it_fast[1]:.1f} % (plain / fast)"
            rows.append([name, common.fmt_time(w), common.fmt_time(c), share])
        common_parts = ("physics kernel (loss_and_grad)", "apply (u + step, impose)",
                        "iterate() bookkeeping (per iteration, no-op optimizer, minus kernel and apply)",
                        "Metamizer.step wrapper (split/merge channels, state; trivial network)")
        for name, fwd, it in (("plain", "plain: whole forward", it_plain),
                              ("fast", "fast: whole forward (frozen, channels_last)", it_fast)):
            parts = sum(bd[k][1] for k in common_parts) + bd[fwd][1]
            py = sum(bd[k][1] for k in common_parts[2:])
            rows.append([f"{name}: sum of the parts above (forward + kernel + apply + bookkeeping + wrapper)", "",
                         common.fmt_time(parts), f"{100 * parts / it[1]:.0f} % of the measured iteration"])
            rows.append([f"{name}: Python overhead (bookkeeping + wrapper)", "", common.fmt_time(py),
                         f"{100 * py / it[1]:.1f} %"])
        table = common.md_table(["component", "wall", "CPU", "share of its iteration (CPU)"], rows)
        lines += [f"### Breakdown at {s}x{s} (1 thread)", "", table, ""]
        print(f"\n## Breakdown at {s}x{s} (1 thread)\n\n{table}", flush=True)
        if s == sizes[0]:
            n_prof = 3 if args.quick else 10
            prof_plain = profiler_table(problem, model, n_prof)
            prof_fast = profiler_table(problem, fast, n_prof)
            lines += [f"torch profiler, {n_prof} iterations at {s}x{s}, shipped module (top operators by self CPU; "
                      "`aten::_slow_conv2d_forward` is PyTorch's im2col path, which it picks for batch-1 float32 "
                      "convolutions on fewer than 20480 input values, i.e. the coarse U-Net levels):", "",
                      "```", prof_plain.strip(), "```", "", "the same with metaphys.optim.fast:", "", "```",
                      prof_fast.strip(), "```", ""]
    # ---- part 2: before / after
    variants = {"before: shipped module, default threads (%d)" % default_threads: (model, default_threads),
                "shipped module, 1 thread": (model, 1),
                "after: fast (frozen, channels_last, fused normalization), 1 thread": (fast, 1),
                "fast with oneDNN prepacking (optimize_for_inference), 1 thread": (fast_mkl, 1),
                "fast, %d threads" % default_threads: (fast, default_threads)}
    if args.quick:  # multi-threaded variants are slow on a busy machine; the quick run only checks the plumbing
        variants.pop("fast, %d threads" % default_threads)
    if bf16 is not None:
        variants["fast bfloat16 network (opt-in, different steps), 1 thread"] = (bf16, 1)
    speed_rows = []
    per_size = {}
    for s in sizes:
        problem = common.laplace_benchmark(s)
        iters = 4 if args.quick else (25 if s <= 100 else 6)
        per_size[s] = per_iteration(problem, variants, iters, 1 if args.quick else (repeats if s <= 100 else 3))
        monitor.sample()
    base = list(variants)[0]
    for name in variants:
        row = [name]
        for s in sizes:
            w, c = per_size[s][name]
            bw, bc = per_size[s][base]
            row += [f"{common.fmt_time(w)} ({common.fmt_time(c)})", f"{bw / w:.2f}× ({bc / c:.2f}×)"]
        speed_rows.append(row)
    hdr = ["variant"]
    for s in sizes:
        hdr += [f"time/iteration {s}² wall (CPU)", f"speedup vs before {s}²"]
    speed = common.md_table(hdr, speed_rows)
    print("\n## Time per iteration, before/after\n\n" + speed, flush=True)
    # batching
    s0 = sizes[0]
    g = torch.randn(4, 1, s0, s0, dtype=F64)
    sc = torch.full((4,), 0.05, dtype=F64)
    with torch.no_grad():
        b4 = med_call(lambda: fast(g, g, g, sc), repeats)
        b1 = med_call(lambda: [fast(g[i:i + 1], g[i:i + 1], g[i:i + 1], sc[i:i + 1]) for i in range(4)], repeats)
    batching = (f"Batching: 4 samples of {s0}² in one forward {common.fmt_time(b4[0])} "
                f"(CPU {common.fmt_time(b4[1])}) vs 4 separate forwards {common.fmt_time(b1[0])} "
                f"(CPU {common.fmt_time(b1[1])}): {b1[1] / b4[1]:.2f}× (CPU). metaphys.optim.Metamizer already "
                "splits channels into samples of one batched forward (Burgers/NS: 2, cloth: 3), and a batched "
                "problem (N simulations) is one forward too.")
    # time to 1e-20 at the first size vs CG / pyamg
    import laplace as lap
    from metaphys.optim.baselines import laplace_system
    s = sizes[0]
    problem = common.laplace_benchmark(s)
    tt_vars = {k: v for k, v in variants.items() if not k.startswith("fast with ") and not k.startswith("fast, ")
               and not (args.quick and k.startswith("before"))}
    tt = time_to(problem, tt_vars, 1e-20, 80 if args.quick else 400, repeats if not args.quick else 1)
    A, b, free_index = laplace_system(problem)
    lin = {}
    for method in ("cg", "pyamg_sa_cg"):
        r = lap.run_linear(problem, method, A, b, free_index, 400 if args.quick else 2000, repeats, args.quick)
        lin[method] = lap.crossing(r, 1e-20, False)
    monitor.sample()
    tt_rows = []
    cg = lin["cg"]
    for name, v in list(tt.items()) + [("scipy CG", lin["cg"]), ("pyamg SA + CG", lin["pyamg_sa_cg"])]:
        if v is None or v[0] is None:
            tt_rows.append([name, "not reached", "—", "—", "—"])
            continue
        tt_rows.append([name, v[0], common.fmt_time(v[1]), common.fmt_time(v[2]),
                        f"{v[1] / cg[1]:.3g}× ({v[2] / max(cg[2], 1e-9):.3g}×)" if cg else "—"])
    ttable = common.md_table(["method", "iterations", "wall", "CPU", "vs scipy CG wall (CPU)"], tt_rows)
    print(f"\n## Time to MSR 1e-20, Laplace benchmark {s}x{s}\n\n" + ttable, flush=True)
    sizes3 = (32,) if args.quick else PRODUCT_SIZES
    product_md = product_iteration(model, fast, bf16, sizes3, 1 if args.quick else max(3, repeats // 2), args.quick)
    monitor.sample()
    load = monitor.report()
    target = ""
    after = tt.get("after: fast (frozen, channels_last, fused normalization), 1 thread")
    if after and after[0] is not None and cg:
        target = (f"**Target (time to MSR 1e-20 at {s}² within 5× of scipy CG): reached {after[1] / cg[1]:.3g}× "
                  f"wall, {after[2] / max(cg[2], 1e-9):.3g}× CPU with the float32 fast module"
                  f"{' — target met' if after[1] / cg[1] <= 5 else ' — target NOT met'}.**")
        bfv = [v for k, v in tt.items() if "bfloat16" in k]
        if bfv and bfv[0][0] is not None:
            target += (f" The opt-in bfloat16 network: {bfv[0][1] / cg[1]:.3g}× wall, "
                       f"{bfv[0][2] / max(cg[2], 1e-9):.3g}× CPU.")
    share_txt = "; ".join(f"{s}²: {100 * a:.1f} % of a shipped-module iteration, {100 * b:.1f} % of a fast one"
                          for s, (a, b) in shares.items())
    md = ["# Profile of one Metamizer iteration (CPU) and the speedups", "",
          common.environment_md(machine, load, wdesc, args), "",
          "## What was measured", "", __doc__.split("\n", 2)[2].strip(), "",
          f"The fast module is built once per process: {build_s:.1f} s (rebuilding, scripting and freezing).",
          "", "## Headline", "", target, "",
          f"Physics kernel share (CPU time of loss_and_grad / one iteration): {share_txt}.", "",
          "## Time per iteration, before/after (same run, interleaved)", "", speed, "", batching, "",
          f"## Time to MSR 1e-20, Laplace benchmark {s}x{s}", "", ttable, "",
          "## Breakdown of one iteration", ""] + lines + product_md
    if args.part == "all":
        part4, _ = network3d(args, monitor)
        print("\n" + "\n".join(part4), flush=True)
        md += ["", BEGIN_3D, "\n".join(part4).rstrip(), END_3D]
    common.write(os.path.join(out, "profile.md"), "\n".join(md) + "\n")
    print(target)
    print(f"wrote {os.path.join(out, 'profile.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
