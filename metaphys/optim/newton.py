"""Newton's method with an exact sparse Hessian: the converged reference for any grid Problem.

The Hessian is the problem's own analytic sparse matrix where it has one (``hessian_matrix``:
cloth, the default ``hessian="auto"``), else it is assembled from Hessian-vector products --
central differences of the problem's compiled gradient, or exact ones of its twice differentiable
loss ``problem.pure_loss`` -- with a graph coloring of the grid: every Hessian
row couples a grid point only to the points at ``problem.hessian_offsets``, so probing all
points of one color at once recovers one column per point (Curtis-Powell-Reid). A linear
coloring c = (i + q j) mod m is searched so that no two points coupled to the same row share
a color (14 colors for the cloth stencil instead of 25 for a 5x5 block).

Each iteration solves H d = -g on the free unknowns with a sparse factorization (SciPy's SuperLU, or
MKL PARDISO's symmetric LDL^T, and Cholesky for Newton-Krylov's lagged factor of the projected
Hessian: ``factorization``, ``metaphys.optim.pardiso``). Where
the energy is not convex (compressed springs, bending), H may be indefinite: then d is not a
descent direction, and H + lambda * D (D = diag(H) magnitudes) is used instead, raising lambda
until it is (Levenberg). An Armijo backtracking line search on the loss keeps every step
downhill; near round-off, where loss differences are noise, a step that lowers the gradient
norm is accepted. Stops at a relative gradient tolerance (``problem.relative_residual``) or
an absolute one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch


class NewtonError(RuntimeError):
    """The problem cannot be solved by Newton's method (missing twice-differentiable loss...)."""


def linear_coloring(offsets: Sequence[Tuple[int, int]]) -> Tuple[int, int]:
    """Smallest (m, q) such that c(i, j) = (i + q j) mod m gives distinct colors to all points
    of {0} U offsets around any row point (so each probe hits at most one coupled column)."""
    pts = {(0, 0)} | {tuple(o) for o in offsets}
    for m in range(len(pts), 400):
        for q in range(m):
            vals = {(a + q * b) % m for a, b in pts}
            if len(vals) == len(pts):
                return m, q
    raise NewtonError("no linear coloring found for the Hessian stencil")  # pragma: no cover


def _pure_grad(problem, u: torch.Tensor, create_graph: bool):
    uu = u.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = problem.pure_loss(uu)
        (g,) = torch.autograd.grad(loss.sum(), uu, create_graph=create_graph)
    return uu, g


def sparse_hessian_correction(problem, u: torch.Tensor):
    """The problem's PSD correction of its Hessian (CSR), e.g. compressed springs for cloth."""
    return problem.hessian_psd_correction(u).tocsr()


def color_probes(offsets: Sequence[Tuple[int, int]], C: int, H: int, W: int, device=None):
    """(color [H, W], probes [P, C, H, W]): one probe per (color, channel), 1 on that color's points."""
    m, q = linear_coloring(offsets)
    color = (torch.arange(H).view(H, 1) + q * torch.arange(W).view(1, W)) % m
    probes = torch.zeros(m * C, C, H, W, dtype=torch.float64, device=device)
    for k in range(m):
        for c in range(C):
            probes[k * C + c, c] = (color == k).to(torch.float64)
    return color, probes


def assemble_from_probes(products: torch.Tensor, color: torch.Tensor, offsets, C: int, H: int, W: int):
    """The sparse matrix [n, n] (n = C*H*W, (c, i, j) order) whose products with the probes of
    ``color_probes`` are ``products`` [P, C, H, W]: row point (i, j) couples only to the column
    points (i + di, j + dj) of ``offsets``, each with a distinct color (Curtis-Powell-Reid)."""
    import scipy.sparse as sp

    rows, cols, vals = [], [], []
    flat = torch.arange(C * H * W).view(C, H, W)
    products = products.detach().cpu()
    for di, dj in [(0, 0)] + list(offsets):
        i0, i1 = max(0, -di), min(H, H - di)
        j0, j1 = max(0, -dj), min(W, W - dj)
        if i0 >= i1 or j0 >= j1:
            continue
        col_color = color[i0 + di:i1 + di, j0 + dj:j1 + dj]
        for c in range(C):
            probe = (col_color * C + c).unsqueeze(0)                   # index into the probes
            col_index = flat[c, i0 + di:i1 + di, j0 + dj:j1 + dj].reshape(-1)
            for d in range(C):
                v = torch.gather(products[:, d, i0:i1, j0:j1], 0, probe).squeeze(0)
                rows.append(flat[d, i0:i1, j0:j1].reshape(-1))
                cols.append(col_index)
                vals.append(v.reshape(-1))
    r, cc, v = (torch.cat(x).numpy() for x in (rows, cols, vals))
    keep = v != 0
    n = C * H * W
    return sp.csr_matrix((v[keep], (r[keep], cc[keep])), shape=(n, n))


# relative step of the central differences of the gradient: the Hessian-vector products then agree
# with exact (autograd) ones to ~1e-10 relative on the cloth scenes (1e-4: 1e-8, 1e-7: 1e-8)
DIFFERENCE_STEP = 1e-5
HESSIAN_METHODS = ("auto", "analytic", "difference", "autograd")


def hessian_method(problem, method: str) -> str:
    """"auto": the problem's analytic sparse Hessian (``problem.hessian_matrix``: cloth) where it has
    one, else central differences of its gradient."""
    if method == "auto":
        return "analytic" if hasattr(problem, "hessian_matrix") else "difference"
    return method


def sparse_hessian(problem, u: torch.Tensor, *, method: str = "auto", probes_per_batch: int = 14):
    """Hessian of sample 0's loss at ``u`` [1, C, H, W] as a scipy CSR matrix [n, n], n = C*H*W,
    in u's flattened (c, i, j) order, symmetrized.

    ``method="analytic"`` (``"auto"`` picks it where the problem has ``hessian_matrix``): the problem's
    own sparse Hessian (cloth: analytic element Hessians, ~100x faster than differences at 32^2).
    ``method="difference"``: central differences of the problem's own gradient (the compiled
    kernel, all probes in one batched call each way): 6x faster than ``"autograd"`` on the cloth
    at 32^2 (23 vs 142 ms) and exact to ~1e-10 relative, since the gradient itself is exact.
    ``"autograd"``: exact Hessian-vector products of ``problem.pure_loss`` (double backward)."""
    if u.shape[0] != 1:
        raise NewtonError(f"sparse_hessian works on one sample at a time, got a batch of {u.shape[0]}")
    if method not in HESSIAN_METHODS:
        raise ValueError(f"method must be one of {HESSIAN_METHODS}, got {method!r}")
    method = hessian_method(problem, method)
    if method == "analytic":
        return problem.hessian_matrix(u, project=False)
    _, C, H, W = u.shape
    offsets = list(problem.hessian_offsets)
    color, V = color_probes(offsets, C, H, W, device=u.device)
    # terms that couple points beyond the stencil (cloth self-collision) would alias into the
    # colored probes: they are left out of the probes and added as their own sparse blocks
    full_problem = problem
    if hasattr(problem, "local_part"):
        problem = problem.local_part()
    P = V.shape[0]
    if method == "difference":
        eps = DIFFERENCE_STEP * max(1.0, float(u.abs().max()))
        sub = problem.select(torch.zeros(P, dtype=torch.long, device=u.device))
        base = u.expand(P, C, H, W)
        _, g_plus = sub.loss_and_grad((base + eps * V).contiguous())
        _, g_minus = sub.loss_and_grad((base - eps * V).contiguous())
        hv = (g_plus - g_minus) / (2 * eps)
    else:
        hv = torch.empty(P, C, H, W, dtype=torch.float64, device=u.device)
        for start in range(0, P, probes_per_batch):
            chunk = V[start:start + probes_per_batch]
            sub = problem.select(torch.zeros(chunk.shape[0], dtype=torch.long, device=u.device))
            uu, g = _pure_grad(sub, u.expand(chunk.shape[0], C, H, W).contiguous(), create_graph=True)
            with torch.enable_grad():
                (h,) = torch.autograd.grad((g * chunk).sum(), uu)
            hv[start:start + chunk.shape[0]] = h.detach()
    Hm = assemble_from_probes(hv, color, offsets, C, H, W)
    if hasattr(full_problem, "nonlocal_hessian"):
        nonlocal_part = full_problem.nonlocal_hessian(u)
        if nonlocal_part is not None:
            Hm = Hm + nonlocal_part
    return 0.5 * (Hm + Hm.T)  # exact up to round-off (differences: ~1e-10); symmetrize it away


def _curvature_majorizer(problem, u):
    """The problem's PSD addition to Newton-Krylov's Hessian (``problem.curvature_majorizer``: cloth
    friction's majorizer), a scipy matrix on all unknowns, or None."""
    if not hasattr(problem, "curvature_majorizer"):
        return None
    return problem.curvature_majorizer(u)


def _krylov_matrix(problem, u, project: bool, free: np.ndarray):
    """Newton-Krylov's matrix from the problem's analytic Hessian, full size (identity rows at hard
    pins, ``free`` False there): exact, or where ``project`` (far from the answer, and for the lagged
    preconditioner) plus its PSD correction (``hessian_psd_correction``: compressed springs, the
    contacts of every collider kind) and its curvature majorizer (friction). Not the kernel's per-element eigenvalue
    projection (``hessian_matrix(project=True)``): that costs 10x the exact Hessian (33 vs 3.3 ms at
    32^2) and made frames slower (curtain 32^2: 148 vs 70 ms/frame)."""
    in_blocks = project and hasattr(problem, "psd_correction_blocks")
    # the correction added to the element blocks before the sparse matrix is made (cloth), else as a matrix
    H = (problem.hessian_matrix(u, project=False, identity_at_pins=True, psd_correction=True) if in_blocks else
         problem.hessian_matrix(u, project=False, identity_at_pins=True))
    if project and not in_blocks and hasattr(problem, "hessian_psd_correction"):
        # no coupling into the pinned identity rows
        H = add_on_pattern(H, problem.hessian_psd_correction(u), keep=free)
    majorizer = _curvature_majorizer(problem, u) if project else None
    if majorizer is not None:
        H = add_on_pattern(H, majorizer)
    return H.tocsr()


_PATTERN_KEYS: dict = {}   # id(indices) -> (indices, indptr, sorted row * n + col keys) of a fixed pattern


def _pattern_keys(A) -> np.ndarray:
    """row * n + col of A's stored entries (CSR, sorted indices), cached per pattern: the Hessian's
    index arrays are shared by every matrix of one grid size (``blocks_to_csr_pattern``)."""
    hit = _PATTERN_KEYS.get(id(A.indices))
    if hit is not None and hit[0] is A.indices and hit[1] is A.indptr:
        return hit[2]
    keys = np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr)) * A.shape[1] + A.indices
    if len(_PATTERN_KEYS) > 8:
        _PATTERN_KEYS.clear()
    _PATTERN_KEYS[id(A.indices)] = (A.indices, A.indptr, keys)
    return keys


def add_on_pattern(A, B, keep: Optional[np.ndarray] = None):
    """A + B (scipy sparse) on A's sparsity pattern where B's entries all lie in it (explicit zeros of
    A kept), else the plain sum. ``keep`` [n] bool: only B's entries whose row and column are both
    kept are added (the pinned unknowns' identity rows stay untouched). The Hessian's pattern is fixed
    per grid size (explicit zeros kept); scipy's sum drops entries that happen to be zero (a flat
    sheet's x-z couplings), so the pattern would change from step to step and every factorization
    would need a new symbolic analysis."""
    A = A.tocsr()
    if not A.has_sorted_indices:
        A = A.sorted_indices()
    B = B.tocoo()
    rows, cols, vals = B.row, B.col, B.data
    if keep is not None:
        inside_kept = keep[rows] & keep[cols]
        rows, cols, vals = rows[inside_kept], cols[inside_kept], vals[inside_kept]
    key_a = _pattern_keys(A)
    key_b = rows.astype(np.int64) * A.shape[1] + cols
    pos = np.searchsorted(key_a, key_b)
    if not (np.all(pos < key_a.size) and np.array_equal(key_a[pos], key_b)):
        Bk = type(A)((vals, (rows, cols)), shape=A.shape) if keep is not None else B
        return (A + Bk).tocsr()
    data = A.data + np.bincount(pos, weights=vals, minlength=A.data.size)
    return type(A)((data, A.indices, A.indptr), shape=A.shape)


LINEAR_SOLVERS = ("direct", "pcg")
PRECISIONS = ("double", "single")
FACTORIZATIONS = ("auto", "superlu", "pardiso")
# "auto" factors with MKL PARDISO from this many unknowns (where the `mkl` wheel loads): every size, since
# Newton-Krylov's refactorizations reuse PARDISO's symbolic analysis (the pattern is fixed per grid) and
# factor in float32. Measured on the cloth scenes (1 thread, CPU ms/frame median, same run): curtain 16^2
# SuperLU 33.6 / PARDISO 32.2, curtain 32^2 112.7 / 67.8, drape 32^2 788 / 612 (double precision; before
# the reuse PARDISO paid off only from 48^2: benchmarks/results/cloth_factorizations.md)
PARDISO_FROM = 0
# refresh the lagged factor when CG needed more than this many iterations, per factorization: PARDISO's
# refactorizations cost far less (analysis reused, float32), so refreshing sooner pays (measured, same
# run, CPU ms/frame median, float32 factor, after 8 / after 4: drape 32^2 628 / 478, curtain 64^2 295 / 296;
# SuperLU 20 vs PARDISO 8 before: benchmarks/results/cloth_factorizations.md)
REFACTOR_AFTER = {"superlu": 20, "pardiso": 4}
# after Cholesky refused a projected Hessian (not definite: non-convex bending or shear left in it), the
# lagged factor is LDL^T for this many factorizations before Cholesky is tried again
INDEFINITE_AFTER_REFUSAL = 8
KRYLOV_HESSIANS = ("projected", "exact")
# the step stop's contraction estimate is never below this (see _error_estimate)
STEP_CONTRACTION_FLOOR = 0.1
PROJECT_ABOVE = 1e-3   # relative residual above which CG uses the projected Hessian


class LaggedFactor:
    """A factorization of an earlier projected Hessian, reused as the preconditioner of CG across
    Newton iterations and frames while CG keeps converging in a few iterations (a frame of
    animated cloth changes its Hessian little). ``key`` ties it to one set of free unknowns."""

    def __init__(self):
        self.lu = None
        self.key = None
        self.stale = True
        self.factorizations = 0
        self.definite_refusals = 0   # Cholesky refused (the projected Hessian was not definite): LDL^T instead
        # factorizations left that go straight to LDL^T after a refusal: a refusal costs a partial
        # factorization and a new analysis, and the next Hessians of the same contact are alike
        self.indefinite_for = 0
        self.source = None   # (problem fields, u) the factor was built from: a resumed sim rebuilds it
        # the last PARDISO factor of the other kind (Cholesky / LDL^T), kept for its symbolic analysis:
        # contact frames switch kinds (a refused Cholesky, LDL^T for a while, Cholesky again), and each
        # switch cost a new analysis, ~3x a refactorization (drape 32^2, 12 frames: 18 analyses -> 3)
        self.spares = {}

    def reusable(self, previous, mtype: int):
        """The earlier factor whose analysis a new PARDISO factor of kind ``mtype`` takes over: ``previous``
        where it is of that kind, else the spare of that kind (``previous`` then becomes the spare of
        its own kind). None where there is none."""
        mtype_of = getattr(previous, "mtype", None)
        if previous is not None and mtype_of == mtype:
            return previous
        spare = self.spares.pop(mtype, None)
        if mtype_of is not None:
            self.keep_spare(previous)
        return spare

    def keep_spare(self, factor) -> None:
        """Keep ``factor`` (for its analysis) as the spare of its kind, releasing the one it replaces."""
        old = self.spares.pop(factor.mtype, None)
        if old is not None and old is not factor:
            old.release()
        self.spares[factor.mtype] = factor

    def usable(self, key) -> bool:
        return self.lu is not None and not self.stale and self.key == key

    def set(self, lu, key, source=None) -> None:
        self.lu, self.key, self.stale, self.source = lu, key, False, source
        self.factorizations += 1


def preconditioned_cg(matvec, g: np.ndarray, precond, rtol: float, max_iterations: int):
    """Approximately solve H d = -g by preconditioned CG, stopping early at negative curvature
    (truncated Newton: where the energy is not convex, the last iterate is still downhill).

    Returns (d, iterations, status) with status "converged", "max_iterations", "negative_curvature"
    or "bad_preconditioner" (r . P^-1 r <= 0: the lagged factor no longer fits the matrix)."""
    d = np.zeros_like(g)
    r = -g
    z = precond(r)
    rz = float(r @ z)
    if not (rz > 0):
        return d, 0, "bad_preconditioner"
    p = z.copy()
    target = rtol * float(np.linalg.norm(g))
    for k in range(max_iterations):
        Hp = matvec(p)
        pHp = float(p @ Hp)
        if not (pHp > 0):
            if k == 0:
                return z, 1, "negative_curvature"   # the preconditioned gradient: downhill
            return d, k, "negative_curvature"
        alpha = rz / pHp
        d += alpha * p
        r -= alpha * Hp
        if float(np.linalg.norm(r)) <= target:
            return d, k + 1, "converged"
        z = precond(r)
        rz_new = float(r @ z)
        if not (rz_new > 0):
            return d, k + 1, "bad_preconditioner"
        p = z + (rz_new / rz) * p
        rz = rz_new
    return d, max_iterations, "max_iterations"


@dataclass
class NewtonResult:
    u: torch.Tensor
    iterations: int = 0
    residuals: List[float] = field(default_factory=list)           # relative residual per iteration
    converged: bool = False
    regularized: int = 0                                           # iterations that needed lambda > 0
    line_search_halvings: int = 0
    hessians: int = 0                                              # Hessians assembled and factored
    chord_steps: int = 0                                           # steps that reused a factorization
    exact_retry: bool = False                                      # the difference Hessian missed tol: solved again exactly
    krylov_iterations: int = 0                                     # preconditioned CG iterations (linear="pcg")
    budget_hit: str = ""                                           # "" or what ended the solve early: "iterations", "time"
    stopped_by: str = ""                                           # converged by "residual" (tol/atol) or "step" (step_tol)
    seconds: float = 0.0


class NewtonSolver:
    """Damped Newton with an exact sparse Hessian; ``solve(problem, u)`` for problems with
    ``pure_loss``, ``hessian_offsets`` and (optionally) ``relative_residual_from``.

    ``tol``: stop when the problem's relative residual (scale-free; the gradient RMS relative to
    the external forces for cloth) is <= tol; ``atol``: or the absolute gradient RMS <= atol.
    """

    name = "newton"
    # CG's loosest relative tolerance (see _forcing). With the analytic Hessian a CG iteration costs a
    # triangular solve and a sparse product, a Newton iteration adds an assembly and a line search:
    # measured (1 thread, 12 frames, median ms/frame, 0.5 -> 0.1): curtain 32^2 78 -> 64, stiff bend
    # 92 -> 83, drape 451 -> 430, moving sphere 404 -> 290; curtain 64^2 458 -> 302 (0.01: faster
    # without contact, slower with it)
    forcing_max = 0.1

    def __init__(self, tol: float = 1e-10, atol: float = 0.0, max_iterations: int = 50,
                 armijo: float = 1e-4, max_halvings: int = 30, exact_below: float = float("inf"),
                 hessian: str = "auto", linear: str = "direct", time_budget: Optional[float] = None,
                 krylov_max_iterations: int = 40, refactor_after: Optional[int] = None, krylov_hessian: str = "projected",
                 factorization: str = "auto", preconditioner_precision: str = "single",
                 step_tol: Optional[float] = None):
        if step_tol is not None and not (float(step_tol) > 0):
            raise ValueError(f"step_tol must be None or a length > 0, got {step_tol!r}")
        self.step_tol = None if step_tol is None else float(step_tol)
        if preconditioner_precision not in PRECISIONS:
            raise ValueError(f"preconditioner_precision must be one of {PRECISIONS}, got {preconditioner_precision!r}")
        self.preconditioner_precision = preconditioner_precision
        if factorization not in FACTORIZATIONS:
            raise ValueError(f"factorization must be one of {FACTORIZATIONS}, got {factorization!r}")
        if factorization == "pardiso":
            from metaphys.optim import pardiso
            if not pardiso.available():
                raise ValueError("factorization='pardiso' needs MKL (pip package `mkl`, installed by the README's "
                                 "set-up); use 'auto' or 'superlu'")
        self.factorization = factorization
        if krylov_hessian not in KRYLOV_HESSIANS:
            raise ValueError(f"krylov_hessian must be one of {KRYLOV_HESSIANS}, got {krylov_hessian!r}")
        self.krylov_hessian = krylov_hessian
        if linear not in LINEAR_SOLVERS:
            raise ValueError(f"linear must be one of {LINEAR_SOLVERS}, got {linear!r}")
        if time_budget is not None and not (float(time_budget) > 0):
            raise ValueError(f"time_budget must be None or a number of seconds > 0, got {time_budget!r}")
        self.linear = linear
        self.time_budget = None if time_budget is None else float(time_budget)
        self.krylov_max_iterations = int(krylov_max_iterations)
        # None: by the factorization's cost (REFACTOR_AFTER): a cheaper factorization is refreshed sooner
        self.refactor_after = None if refactor_after is None else int(refactor_after)
        self.preconditioner = LaggedFactor()   # kept across solves: frames reuse earlier factorizations
        if hessian not in HESSIAN_METHODS:
            raise ValueError(f"hessian must be one of {HESSIAN_METHODS}, got {hessian!r}")
        self.hessian = hessian
        if not (tol >= 0 and atol >= 0) or (tol == 0 and atol == 0):
            raise ValueError(f"give tol > 0 or atol > 0, got tol={tol!r}, atol={atol!r}")
        if int(max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations!r}")
        self.tol, self.atol = float(tol), float(atol)
        self.max_iterations = int(max_iterations)
        self.armijo, self.max_halvings = float(armijo), int(max_halvings)
        # far from the solution (relative residual above this) only the projected Hessian is used:
        # exact Newton steps aim at saddles where the energy is not convex
        self.exact_below = float(exact_below)

    def prepare(self, problem) -> None:
        """Load what a first solve of ``problem`` would otherwise pay for: SciPy's sparse modules, MKL
        PARDISO and the problem's fixed Hessian pattern (``prepare_hessian``). Sims call it when they
        are built, so their first frame costs what the later ones do (curtain 32^2: the first frame
        took 365 ms against 47 for the second, ~250 ms of it imports, the MKL library and the pattern;
        then 120 against 22 ms, ~60 ms of it the kernels' import and MKL's first factorization)."""
        import scipy.sparse as sp
        import scipy.sparse.linalg  # noqa: F401  (imported by the first factorization otherwise)

        from metaphys._ops import kernels_available
        kernels_available()   # the compiled extension's import (~35 ms), else in the first kernel call
        if hasattr(problem, "prepare_hessian"):
            problem.prepare_hessian()
        if self.factorization == "auto" or self.factorization == "pardiso":
            from metaphys.optim import pardiso
            if pardiso.available():
                # MKL sets itself up on its first factorization (~25 ms at 32^2): a 2 x 2 one here
                pardiso.PardisoFactor(sp.csr_matrix(np.array([[2.0, 1.0], [1.0, 2.0]])), definite=True,
                                      single=self.single_precision_preconditioner).release()

    def _check(self, problem):
        method = hessian_method(problem, self.hessian)
        needs = {"autograd": ("pure_loss", "hessian_offsets"), "analytic": ("hessian_matrix",)}
        for attr in needs.get(method, ("hessian_offsets",)):
            if not hasattr(problem, attr):
                raise NewtonError(f"{type(problem).__name__} has no {attr}: Newton's method needs a twice "
                                  "differentiable loss and its Hessian stencil (cloth has both)")

    def _measure(self, problem, loss, grad, scale):
        rms = float(grad.flatten(1).norm(dim=1)[0]) / math.sqrt(grad[0].numel())
        rel = rms / scale if scale > 0 else rms
        return rel, rms

    def _done(self, rel, rms):
        return (self.tol > 0 and rel <= self.tol) or (self.atol > 0 and rms <= self.atol)

    def _error_estimate(self, problem, moves: List[float]) -> float:
        """An a-posteriori bound on the distance left to the answer, in the problem's lengths
        (``problem.displacement``; cloth: edge lengths), from the last two steps' sizes: for an
        iteration that contracts by q = |d_k| / |d_k-1| per step, what is left is at most
        |d_k| q / (1 - q). Infinite until two full (uncut) steps were taken, or where they do not contract by 2x."""
        if len(moves) < 2 or not (moves[-2] > 0 and moves[-1] >= 0):   # NaN: a step cut by the line search
            return math.inf
        # q no smaller than CG's loosest relative tolerance: an inexact Newton step's own error
        q = max(moves[-1] / moves[-2], STEP_CONTRACTION_FLOOR)
        return moves[-1] * q / (1 - q) if q < 0.5 else math.inf

    @property
    def single_precision_preconditioner(self) -> bool:
        """Newton-Krylov's lagged factor in float32 (PARDISO only; SuperLU factors in float64)."""
        return self.preconditioner_precision == "single"

    def factorization_for(self, n: int) -> str:
        """The sparse factorization this solver uses for an [n, n] system: ``factorization``, or for
        "auto" MKL PARDISO from ``PARDISO_FROM`` unknowns where the `mkl` wheel loads, else SuperLU."""
        if self.factorization != "auto":
            return self.factorization
        from metaphys.optim import pardiso
        return "pardiso" if n >= PARDISO_FROM and pardiso.available() else "superlu"

    def _refactor_after(self, n: int) -> int:
        if self.refactor_after is not None:
            return self.refactor_after
        return REFACTOR_AFTER[self.factorization_for(n)]

    def _factor(self, Hm, g, reuse=None, single: bool = False, definite: bool = False):
        """(factor, d) for H d = -g (factor: anything with ``solve(b)``), or (None, None) when H is
        singular or d is not downhill. PARDISO only: ``reuse`` an earlier factor's symbolic analysis
        (that factor is consumed), ``single`` precision (for a preconditioner), ``definite``: try
        Cholesky first (a projected Hessian: cheaper), LDL^T where H turns out not to be definite."""
        if self.factorization_for(Hm.shape[0]) == "pardiso":
            from metaphys.optim.pardiso import (MTYPE_SYMMETRIC_DEFINITE, MTYPE_SYMMETRIC_INDEFINITE, PardisoError,
                                                PardisoFactor, PardisoRefused)
            reuse = reuse if isinstance(reuse, PardisoFactor) else None
            pc = self.preconditioner if reuse is not None else None   # the lagged factor's kinds
            lu = None
            if definite:
                take = pc.reusable(reuse, MTYPE_SYMMETRIC_DEFINITE) if pc is not None else reuse
                reuse = None   # consumed: taken over, or kept as the spare of its kind
                try:
                    lu = PardisoFactor(Hm, reuse=take, single=single, definite=True)
                except PardisoError as refused:
                    self.preconditioner.definite_refusals += 1
                    self.preconditioner.indefinite_for = INDEFINITE_AFTER_REFUSAL
                    if pc is not None and isinstance(refused, PardisoRefused):
                        pc.keep_spare(refused.analysis)   # its analysis serves the next Cholesky
            try:
                if lu is None:
                    take = pc.reusable(reuse, MTYPE_SYMMETRIC_INDEFINITE) if pc is not None else reuse
                    lu = PardisoFactor(Hm, reuse=take, single=single)
            except PardisoError:
                return None, None
        else:
            import scipy.sparse.linalg as spla
            try:
                # a symmetric matrix: an ordering of A + A^T and diagonal pivots where they are not tiny
                # (measured on the drape's 32^2 Hessian: fill 0.93M -> 0.66M, factorization ~2x faster)
                lu = spla.splu(Hm.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1,
                               options={"SymmetricMode": True})
            except RuntimeError:  # exactly singular
                return None, None
        d = lu.solve(-g)
        if not np.all(np.isfinite(d)) or float(g @ d) >= 0:
            return None, None
        return lu, d

    def _regularized_factor(self, Hm, g, lam):
        """Factor H + lam D (D = |diag H|), raising lam until the direction is downhill."""
        import scipy.sparse as sp
        D = sp.diags(np.abs(Hm.diagonal()) + 1e-300)
        for _ in range(40):
            lu, d = self._factor((Hm + lam * D).tocsc(), g)
            if lu is not None:
                return lu, d, lam
            lam = max(1e-8, lam * 10)
        raise NewtonError("no descent direction found (Hessian regularization exhausted)")

    @staticmethod
    def _projected_hessian(problem, u, idx, H_exact, method):
        """The Hessian made PSD (projected Newton) on the free unknowns ``idx``: the exact one (``H_exact``
        or assembled here) plus the problem's PSD correction where it has one."""
        if H_exact is None:
            H_exact = sparse_hessian(problem, u, method=method).tocsr()[idx][:, idx]
        if hasattr(problem, "hessian_psd_correction"):
            return (sparse_hessian_correction(problem, u)[idx][:, idx] + H_exact).tocsc()
        return H_exact.tocsc()

    def _line_search(self, problem, u, loss, grad, g, d, idx, min_alpha: float):
        """Armijo backtracking along d from alpha = 1 (or the largest step the problem's hard
        constraints allow: ``problem.max_step``, e.g. cloth layers that must not pass through each
        other) down to min_alpha (or max_halvings)."""
        step = torch.zeros(u.numel(), dtype=torch.float64)
        step[torch.as_tensor(idx)] = torch.as_tensor(d)
        step = step.view_as(u).to(u.device)
        slope = float(g @ d)
        alpha, halvings = 1.0, 0
        if hasattr(problem, "max_step"):
            alpha = min(1.0, float(problem.max_step(u, step)))
        while halvings <= self.max_halvings and alpha >= min_alpha:
            u_new = problem.apply(u, alpha * step)
            loss_new, grad_new = problem.loss_and_grad(u_new)
            if bool(torch.isfinite(loss_new).all()):
                decrease = float(loss_new[0] - loss[0])
                if decrease <= self.armijo * alpha * slope:
                    return True, u_new, loss_new, grad_new, halvings
                # round-off regime: loss differences are noise, the gradient is not
                noise = 1e-12 * max(abs(float(loss[0])), 1e-300)
                if abs(decrease) <= noise and float(grad_new.norm()) < float(grad.norm()):
                    return True, u_new, loss_new, grad_new, halvings
            alpha *= 0.5
            halvings += 1
        return False, u, loss, grad, halvings

    def solve(self, problem, u: torch.Tensor, *, scale: Optional[float] = None, callback=None) -> NewtonResult:
        """Minimize sample-wise from ``u`` [N, C, H, W]; samples are solved one after another."""
        self._check(problem)
        if u.shape[0] > 1:
            outs = [self.solve(problem.select(torch.tensor([k], device=u.device)), u[k:k + 1], scale=scale)
                    for k in range(u.shape[0])]
            res = NewtonResult(torch.cat([o.u for o in outs]), max(o.iterations for o in outs),
                               [max(v) for v in zip(*[o.residuals for o in outs])] if outs else [],
                               all(o.converged for o in outs), sum(o.regularized for o in outs),
                               sum(o.line_search_halvings for o in outs))
            return res
        if self.linear == "pcg":
            return self._solve_one_pcg(problem, u, scale, callback)
        out = self._solve_one(problem, u, scale, callback, self.hessian)
        if (not out.converged and hessian_method(problem, self.hessian) == "difference"
                and hasattr(problem, "pure_loss")):
            # with contact, Newton is sensitive to its Hessian near the penalty's kink (differences
            # there average both sides): measured on a cloth falling on a sphere, one frame stalled
            # at 7e-5 after 100 iterations where the exact Hessian converges; retry exactly
            exact = self._solve_one(problem, u, scale, callback, "autograd")
            total = out.iterations + exact.iterations
            if exact.converged or exact.residuals[-1] < out.residuals[-1]:
                out = exact
            out.iterations, out.exact_retry = total, True   # the cost of both attempts
        return out

    def _newton_loop(self, problem, u, scale, callback, step) -> NewtonResult:
        """The loop both linear solvers share: stop at the tolerance, the time budget or the
        iteration cap; ``step(u, loss, grad, g, rel, scale, free, idx, out)`` finds the next iterate
        (direction and line search) and returns (accepted, u, loss, grad)."""
        t0 = time.perf_counter()
        free = problem.impose(torch.ones_like(u)).flatten() != 0        # unknowns Newton may move
        idx = free.nonzero().view(-1).cpu().numpy()
        loss, grad = problem.loss_and_grad(u)
        if scale is None:
            scale = problem.residual_scale(grad) if hasattr(problem, "residual_scale") else 1.0
        rel, rms = self._measure(problem, loss, grad, scale)
        out = NewtonResult(u=u, residuals=[rel])
        by_step = self.step_tol is not None and hasattr(problem, "displacement")
        moves: List[float] = []   # each accepted step's size (problem.displacement), for the step stop
        for it in range(self.max_iterations):
            if self._done(rel, rms) or (by_step and self._error_estimate(problem, moves) <= self.step_tol):
                out.converged = True
                out.stopped_by = "residual" if self._done(rel, rms) else "step"
                break
            if self.time_budget is not None and time.perf_counter() - t0 > self.time_budget:
                out.budget_hit = "time"
                break
            g = grad.flatten()[free].cpu().numpy()
            halvings_before = out.line_search_halvings
            accepted, u_new, loss_new, grad_new = step(u, loss, grad, g, rel, scale, free, idx, out)
            if not accepted:
                break  # stalled (round-off): report the residual reached
            if by_step:   # a step the line search cut says nothing about the contraction: not counted
                cut = out.line_search_halvings > halvings_before
                moves.append(math.nan if cut else problem.displacement(u_new - u))
            u, loss, grad = u_new, loss_new, grad_new
            rel, rms = self._measure(problem, loss, grad, scale)
            out.residuals.append(rel)
            out.iterations = it + 1
            if callback is not None:
                callback(it + 1, u, rel)
        else:
            out.converged = self._done(rel, rms) or (by_step and self._error_estimate(problem, moves) <= self.step_tol)
            if out.converged:
                out.stopped_by = "residual" if self._done(rel, rms) else "step"
            else:
                out.budget_hit = "iterations"
        # a solve that stops early keeps its best iterate: the last one, since every accepted step
        # lowers the energy (the residual is not monotone; the energy is what the step minimizes)
        out.u = u
        out.seconds = time.perf_counter() - t0
        return out

    def _solve_one(self, problem, u, scale, callback, hessian: str) -> NewtonResult:
        """Newton with a factorization per Hessian: chord steps while they pay, the exact step when
        it is downhill, else the projected Hessian regularized until downhill."""
        memo = {"lam": 0.0, "lu": None}   # the last factorization, reused (chord steps) while it pays off

        def step(u, loss, grad, g, rel, scale, free, idx, out):
            accepted, u_new, loss_new, grad_new = False, u, loss, grad
            # 0) a chord step with the previous factorization: one kernel call and two triangular
            #    solves instead of a Hessian; kept only while it cuts the residual by 2x or more
            if memo["lu"] is not None:
                d = memo["lu"].solve(-g)
                if np.all(np.isfinite(d)) and float(g @ d) < 0:
                    accepted, u_new, loss_new, grad_new, _ = self._line_search(problem, u, loss, grad, g, d, idx,
                                                                               min_alpha=1.0)
                    if accepted and self._measure(problem, loss_new, grad_new, scale)[0] > 0.5 * rel:
                        memo["lu"] = None  # slow progress: take the step, refresh the Hessian next time
                if not accepted:
                    memo["lu"] = None
                else:
                    out.chord_steps += 1
            if accepted:
                return accepted, u_new, loss_new, grad_new
            H_exact = sparse_hessian(problem, u, method=hessian).tocsr()[idx][:, idx].tocsc()
            out.hessians += 1
            # 1) the exact Newton step, taken when it is downhill with (nearly) a full step:
            #    near a minimum this converges quadratically, also where springs are compressed
            memo["lu"], d = self._factor(H_exact, g) if rel < self.exact_below else (None, None)
            if d is not None:
                accepted, u_new, loss_new, grad_new, halvings = self._line_search(problem, u, loss, grad, g, d,
                                                                                  idx, min_alpha=0.25)
                out.line_search_halvings += halvings
            # 2) otherwise the projected Hessian (compressed-spring curvature removed),
            #    regularized until downhill, with a full backtracking line search
            if not accepted:
                Hm = self._projected_hessian(problem, u, idx, H_exact, hessian)
                lam = 0.0 if memo["lam"] == 0.0 else memo["lam"] / 10  # try less regularization again
                for _ in range(6):
                    _, d, lam = self._regularized_factor(Hm, g, lam)
                    out.regularized += int(lam > 0)
                    accepted, u_new, loss_new, grad_new, halvings = self._line_search(problem, u, loss, grad,
                                                                                      g, d, idx, min_alpha=0.0)
                    out.line_search_halvings += halvings
                    if accepted:
                        break
                    lam = max(1e-6, lam * 100)  # the quadratic model was poor here: regularize more
                memo["lam"] = lam
                memo["lu"] = None  # a regularized factorization is a poor chord: refresh next time
            return accepted, u_new, loss_new, grad_new

        return self._newton_loop(problem, u, scale, callback, step)

    # --- Newton-Krylov with a lagged factorization (linear="pcg") --------------------------------
    def _refactor(self, problem, u, g, idx, key, H_proj=None):
        """Assemble the projected Hessian at ``u`` (or take ``H_proj``), factor it, keep it as the
        preconditioner."""
        if hessian_method(problem, self.hessian) == "analytic":
            # full size (hard pins as identity rows, g = 0 there): no submatrix copies per iteration
            free = np.zeros(u[:1].numel(), dtype=bool)
            free[idx] = True
            # CSR: PARDISO reads a CSR matrix's upper triangle on its cached pattern (SuperLU converts)
            H = _krylov_matrix(problem, u, True, free) if H_proj is None else H_proj
            if g.shape[0] != H.shape[0]:
                g = problem.loss_and_grad(u)[1][:1].flatten().cpu().numpy()
        else:
            H = self._projected_hessian(problem, u, idx, None, self.hessian)
            majorizer = _curvature_majorizer(problem, u)
            if majorizer is not None:
                H = H + majorizer.tocsr()[idx][:, idx]
            H = H.tocsc()
        # the earlier lagged factor is replaced: its symbolic analysis is reused where the pattern holds
        previous, self.preconditioner.lu = self.preconditioner.lu, None
        pc = self.preconditioner
        definite, pc.indefinite_for = pc.indefinite_for == 0, max(0, pc.indefinite_for - 1)
        lu, _ = self._factor(H, g, reuse=previous, single=self.single_precision_preconditioner, definite=definite)
        if lu is None:
            lu, _, _ = self._regularized_factor(H, g, 1e-6)
        source = ({k: v.clone() for k, v in problem.fields.items()}, u.detach().clone())
        self.preconditioner.set(lu, key, source)

    # the lagged factor is part of the solver's state: a bake resumed from a saved frame rebuilds
    # the same factorization (SuperLU is deterministic), so it continues bit for bit
    def state_dict(self) -> dict:
        pc = self.preconditioner
        if pc.source is None:
            return {}
        fields, u = pc.source
        # which factorization it was (Cholesky or LDL^T) and the LDL^T count left: a resumed bake
        # rebuilds the same one and continues the same sequence
        definite = getattr(pc.lu, "mtype", None) == 2
        return {"fields": {k: v.clone() for k, v in fields.items()}, "u": u.clone(), "stale": bool(pc.stale),
                "definite": definite, "indefinite_for": int(pc.indefinite_for)}

    def load_state_dict(self, problem, state: dict) -> None:
        """Rebuild the lagged factorization saved by ``state_dict`` (``problem``: any problem of the
        same kind and shape; its fields are swapped for the saved ones while the factor is built)."""
        self.preconditioner = LaggedFactor()
        if not state:
            return
        saved = problem.fields
        try:
            problem.fields = {k: v.clone() for k, v in state["fields"].items()}
            u = state["u"]
            g_full = problem.loss_and_grad(u)[1]
            free = problem.impose(torch.ones_like(u)).flatten() != 0
            idx = free.nonzero().view(-1).cpu().numpy()
            # straight to LDL^T where the saved factor was one (_refactor counts this rebuild down)
            self.preconditioner.indefinite_for = 0 if state.get("definite", True) else 1
            self._refactor(problem, u, g_full.flatten()[free].cpu().numpy(), idx, (tuple(u.shape), idx.tobytes()))
        finally:
            problem.fields = saved
        self.preconditioner.factorizations = 0
        self.preconditioner.definite_refusals = 0
        self.preconditioner.indefinite_for = int(state.get("indefinite_for", 0))
        self.preconditioner.stale = bool(state.get("stale", False))

    def _solve_one_pcg(self, problem, u, scale, callback) -> NewtonResult:
        """Inexact Newton: each step solves H d = -g by CG, preconditioned by a factorization of an
        earlier projected Hessian that is refreshed only when CG needs more than ``refactor_after``
        iterations. H: the problem's analytic sparse Hessian where it has one (a sparse product per
        CG iteration), else exact Hessian-vector products by forward differences of the compiled
        gradient (one kernel call each). Either way a step costs a few triangular solves instead of
        a Hessian factorization."""
        if hessian_method(problem, self.hessian) == "analytic":
            return self._newton_loop(problem, u, scale, callback, self._analytic_pcg_step(problem))

        def step(u, loss, grad, g, rel, scale, free, idx, out):
            key = (tuple(u.shape), idx.tobytes())
            full = torch.zeros(u.numel(), dtype=torch.float64, device=u.device)
            idx_t = torch.as_tensor(idx, device=u.device)
            # far from the answer, CG on the projected Hessian (compressed springs' and contacts'
            # negative curvature removed): fewer negative-curvature stops on contact frames (drape
            # 32^2: 340 -> 277 Newton and 3830 -> 3276 CG iterations over 12 frames); near it, the
            # exact Hessian, whose Newton steps converge fast where the projected ones crawl
            correction = None
            if self.krylov_hessian == "projected" and rel > PROJECT_ABOVE:
                if hasattr(problem, "hessian_psd_correction"):
                    correction = sparse_hessian_correction(problem, u)
                majorizer = _curvature_majorizer(problem, u)
                if majorizer is not None:
                    correction = majorizer if correction is None else correction + majorizer
            if correction is not None:
                correction = correction.tocsr()[idx][:, idx]
                if correction.nnz == 0:
                    correction = None

            def matvec(v):
                vmax = float(np.abs(v).max())
                if vmax == 0.0:
                    return np.zeros_like(v)
                eps = 1e-7 * max(1.0, float(u.abs().max())) / vmax
                f = full.clone()
                f[idx_t] = torch.as_tensor(v, device=u.device)
                _, g_eps = problem.loss_and_grad((u + eps * f.view_as(u)).contiguous())
                hv = ((g_eps - grad).flatten()[free] / eps).cpu().numpy()
                return hv if correction is None else hv + correction @ v

            return self._pcg_attempts(problem, u, loss, grad, g, rel, idx, key, out, matvec, g, lambda d: d)

        return self._newton_loop(problem, u, scale, callback, step)

    def _forcing(self, rel: float) -> float:
        """CG's relative tolerance: loose far from the answer (Eisenstat-Walker, sqrt of the residual,
        at most ``forcing_max``), never tighter than this step needs to reach the tolerance (a linear
        residual of rtol*|g| leaves about rtol*rel)."""
        return min(self.forcing_max, max(math.sqrt(max(rel, 1e-16)), 0.3 * self.tol / max(rel, 1e-300)))

    def _pcg_attempts(self, problem, u, loss, grad, g, rel, idx, key, out, matvec, g_cg, to_free, H_proj=None):
        """CG with the lagged factor (refreshed first when stale), then the line search; a lagged
        factor that gives no downhill step is refreshed and CG runs once more. ``g_cg``: the right-hand
        side CG works on (``to_free`` maps its solution to the free unknowns, ``g``'s space)."""
        pc = self.preconditioner
        accepted, u_new, loss_new, grad_new = False, u, loss, grad
        for _attempt in range(2):
            fresh = not pc.usable(key)
            if fresh:
                self._refactor(problem, u, g_cg, idx, key, H_proj)
                out.hessians += 1
            d, k, status = preconditioned_cg(matvec, g_cg, pc.lu.solve, self._forcing(rel), self.krylov_max_iterations)
            d = to_free(d)
            out.krylov_iterations += k
            if status in ("max_iterations", "bad_preconditioner") or k > self._refactor_after(g_cg.shape[0]):
                pc.stale = True   # the lagged factor no longer fits: refresh it at the next step
            if float(g @ d) < 0:
                accepted, u_new, loss_new, grad_new, halvings = self._line_search(
                    problem, u, loss, grad, g, d, idx, min_alpha=0.0)
                out.line_search_halvings += halvings
            if accepted or fresh:
                break
            pc.stale = True       # a lagged factor gave no downhill step: refresh it, try again
        return accepted, u_new, loss_new, grad_new

    def _analytic_pcg_step(self, problem):
        """Newton-Krylov on the problem's assembled sparse Hessian (``hessian_matrix``), in full size:
        hard-pinned unknowns are identity rows with a zero gradient, so CG leaves them at 0 and no
        submatrix is ever copied."""
        def step(u, loss, grad, g, rel, scale, free, idx, out):
            key = (tuple(u.shape), idx.tobytes())
            g_full = grad[:1].flatten().cpu().numpy()
            project = self.krylov_hessian == "projected" and rel > PROJECT_ABOVE
            H = _krylov_matrix(problem, u, project, free.cpu().numpy())
            return self._pcg_attempts(problem, u, loss, grad, g, rel, idx, key, out, H.dot, g_full,
                                      lambda d: d[idx], H if project else None)

        return step
