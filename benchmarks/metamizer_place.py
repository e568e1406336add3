"""The Metamizer's place in cloth's solver, measured (issue #24 item 5): one U-Net forward against
the pieces of a Newton-Krylov iteration at the same grid size, on one CPU thread.

Newton-Krylov (the cloth default) spends its time in CG iterations, each one triangular solve with
a lagged SuperLU factor plus one product with the analytic sparse Hessian, and in assembling that
Hessian once per Newton iteration (and factoring it when CG stops converging fast). The Metamizer
could enter as CG's preconditioner (a forward per CG iteration instead of a triangular solve) or as
a warm start (its iterations before Newton). A preconditioner only pays where a forward costs less
than the triangular solve it replaces times the CG iterations it saves; this script prints the
ratio per size. Cloth's three position components are a batch of three fields for the U-Net.

    python benchmarks/metamizer_place.py [--sizes 32 64 96 128] [--quick]
writes benchmarks/results/metamizer_place.md.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: sets the BLAS thread count before numpy loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, common.ROOT)
from metaphys.sims.cloth import ClothSim  # noqa: E402


def hanging_cloth_hessian(n: int):
    """(problem, a, H): a 1 m cloth pinned at two corners after three default frames, and the
    analytic Hessian Newton-Krylov works with at its last step (identity rows at the pins)."""
    pins = np.zeros(n * n)
    pins[0] = pins[n - 1] = 1.0
    sim = ClothSim(n, n, threads=1, pin_weights=pins)
    sim.run(3)
    a = sim.a_prev
    return sim.problem, a, sim.problem.hessian_matrix(a, identity_at_pins=True).tocsc()


def measure(n: int, model, repeats: int) -> dict:
    import scipy.sparse.linalg as spla

    problem, a, H = hanging_cloth_hessian(n)
    b = np.random.default_rng(0).standard_normal(H.shape[0])
    t_fact, _, lu = common.timed(lambda: spla.splu(H, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1,
                                                   options={"SymmetricMode": True}), max(3, repeats // 4))
    t_solve, _, _ = common.timed(lambda: lu.solve(b), repeats)
    t_matvec, _, _ = common.timed(lambda: H.dot(b), repeats)
    t_assemble, _, _ = common.timed(lambda: problem.hessian_matrix(a, identity_at_pins=True), max(3, repeats // 4))
    t_grad, _, _ = common.timed(lambda: problem.loss_and_grad(a), repeats)
    x = torch.randn(3, 1, n, n, dtype=torch.float64)
    scale = torch.full((3,), 0.05, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(3):          # the first forwards of a frozen module specialize it: not timed
            model(x, x, x, scale)
        t_unet, _, _ = common.timed(lambda: model(x, x, x, scale), repeats)
    return {"n": n, "unknowns": H.shape[0], "nnz": H.nnz, "factor": t_fact, "solve": t_solve, "matvec": t_matvec,
            "assemble": t_assemble, "gradient": t_grad, "unet": t_unet}


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None)
    args = p.parse_args(argv)
    out = common.setup(args)
    sizes = args.sizes or ([16, 24] if args.quick else [32, 64, 96, 128])
    repeats = args.repeats or (3 if args.quick else 20)
    monitor = common.LoadMonitor()
    machine = common.machine_info()
    model, wdesc = common.load_weights(args.weights)
    model = common.fast_model(model)       # what the sims run: frozen, channels_last, float32
    rows = []
    for n in sizes:
        r = measure(n, model, repeats)
        monitor.sample()
        rows.append(r)
        print(f"{n}²: U-Net {1e3 * r['unet']:.2f} ms, triangular solve {1e3 * r['solve']:.2f} ms", flush=True)
    ms = lambda s: f"{1e3 * s:.2f}"
    table = common.md_table(
        ["grid", "unknowns", "U-Net forward (3 fields)", "triangular solve", "Hessian product", "gradient kernel",
         "Hessian assembly", "SuperLU factorization", "forward / solve"],
        [[f"{r['n']}²", r["unknowns"], ms(r["unet"]), ms(r["solve"]), ms(r["matvec"]), ms(r["gradient"]),
          ms(r["assemble"]), ms(r["factor"]), f"{r['unet'] / r['solve']:.1f}"] for r in rows])
    cheaper = [r["n"] for r in rows if r["unet"] < r["solve"]]
    verdict = (f"A U-Net forward is cheaper than a triangular solve from {min(cheaper)}² on (of the sizes run)."
               if cheaper else "A U-Net forward costs more than a triangular solve at every size run: as CG's "
               "preconditioner it would have to save that many CG iterations per forward to pay.")
    ratios = ", ".join(f"{r['n']}²: {r['unet'] / r['solve']:.1f}" for r in rows)
    verdict += (f" Forward / solve by size: {ratios} (the forward grows with the cells, the solve faster: "
                f"its factor fills in); a refresh of the factorization costs "
                f"{rows[-1]['factor'] / rows[-1]['unet']:.0f} forwards at {rows[-1]['n']}².")
    md = "\n".join(["# The Metamizer's place in cloth's solver (benchmarks/metamizer_place.py)", "",
                    common.environment_md(machine, monitor.report(), wdesc, args), "",
                    "Times in ms, median of repeats, 1 thread, the state of a 1 m cloth pinned at two corners "
                    "after three frames. One Newton-Krylov CG iteration = one triangular solve + one Hessian "
                    "product; one Newton iteration adds a gradient kernel call per line-search try and one "
                    "Hessian assembly; a refresh of the lagged preconditioner is one factorization.", "",
                    "## Costs per size", "", table, "", "## Verdict", "", verdict, ""])
    print("\n## Costs per size\n\n" + table + "\n\n## Verdict\n\n" + verdict, flush=True)
    common.write(os.path.join(out, "metamizer_place.md"), md)


if __name__ == "__main__":
    main()
