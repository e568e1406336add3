"""Classical baselines behind the same optimizer interface, for comparisons and benchmarks.

* ``TorchOptimizer``: any torch.optim first-order optimizer (SGD, Adam, AdamW, RMSprop, Adagrad,
  Adadelta) fed the problem's gradient (the same pseudo-gradient the Metamizer sees).
* ``lbfgs_solve``: torch L-BFGS with strong-Wolfe line search on ``problem.loss`` (use a
  problem built with ``true_grad=True`` so loss and gradient are consistent).
* ``laplace_system`` / ``linear_solve``: the Laplace/Poisson problem as a sparse SPD system on
  the free cells, solved by scipy (cg, minres, gmres, lgmres, gcrotmk, bicgstab), pyamg
  (Ruge-Stuben, smoothed aggregation) or a direct sparse solve, with per-iteration history.
"""
from __future__ import annotations

import copy
import time
from typing import Dict, List, Optional

import numpy as np
import torch

TORCH_OPTIMIZERS = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
}


class TorchOptimizer:
    """Wraps a torch.optim optimizer: the parameter is the accumulated displacement of u."""

    def __init__(self, name: str, lr: float, **kwargs):
        key = name.lower()
        if key not in TORCH_OPTIMIZERS:
            raise ValueError(f"unknown torch optimizer {name!r}; choose from {sorted(TORCH_OPTIMIZERS)}")
        self.name, self.cls, self.lr, self.kwargs = key, TORCH_OPTIMIZERS[key], float(lr), kwargs

    def init_state(self, shape, device=None):
        p = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64, device=device))
        return {"param": p, "opt": self.cls([p], lr=self.lr, **self.kwargs)}

    def step(self, grad, state):
        p, opt = state["param"], state["opt"]
        before = p.detach().clone()
        p.grad = grad.detach().clone()
        opt.step()
        return p.detach() - before, state

    @staticmethod
    def export_state(state) -> dict:
        """The state as a snapshot to save (resumable bakes): displacement and torch.optim state."""
        return {"param": state["param"].detach().clone(), "opt": copy.deepcopy(state["opt"].state_dict())}

    @staticmethod
    def import_state(saved: dict, fresh):
        """``fresh`` (an ``init_state``) continuing from ``saved`` (``export_state``)."""
        with torch.no_grad():
            fresh["param"].copy_(saved["param"])
        fresh["opt"].load_state_dict(saved["opt"])
        return fresh

    @staticmethod
    def shrink(state, factor):
        for group in state["opt"].param_groups:
            group["lr"] *= float(factor.min())


def lbfgs_solve(problem, iterations: int, lr: float = 1.0, history_size: int = 100,
                max_eval: Optional[int] = None):
    """L-BFGS on problem.loss; returns (u, residual history [iterations+1, N], evaluations)."""
    u = problem.initial_guess().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([u], lr=lr, max_iter=iterations, max_eval=max_eval or iterations,
                            history_size=history_size, tolerance_grad=0.0, tolerance_change=0.0,
                            line_search_fn="strong_wolfe")
    history = [problem.residual(u.detach())]
    count = [0]

    def closure():
        opt.zero_grad()
        loss = problem.loss(u).sum()
        loss.backward()
        count[0] += 1
        history.append(problem.residual(u.detach()))
        return loss

    opt.step(closure)
    return problem.impose(u.detach()), torch.stack(history), count[0]


# --- Laplace/Poisson as a sparse linear system -------------------------------------------------
def laplace_system(problem, sample: int = 0):
    """(A, b, free_index) with A SPD on the free cells: -L(u) = f with Dirichlet values moved to b."""
    import scipy.sparse as sp

    if problem.stencil not in (5, 9):
        raise ValueError("laplace_system supports the 5- and 9-point stencils")
    m = problem.fields["mask"][sample, 0].cpu().numpy()
    bc = problem.fields["bc"][sample, 0].cpu().numpy()
    f = problem.fields["f"][sample, 0].cpu().numpy()
    h, w = m.shape
    free = m == 0
    idx = -np.ones((h, w), dtype=np.int64)
    idx[free] = np.arange(int(free.sum()))
    if problem.stencil == 9:
        weights = {(-1, -1): 0.25, (-1, 1): 0.25, (1, -1): 0.25, (1, 1): 0.25,
                   (-1, 0): 0.5, (1, 0): 0.5, (0, -1): 0.5, (0, 1): 0.5}
        centre = 3.0
    else:
        weights = {(-1, 0): 1.0, (1, 0): 1.0, (0, -1): 1.0, (0, 1): 1.0}
        centre = 4.0
    ii, jj = np.nonzero(free)
    rows, cols, vals = [idx[ii, jj]], [idx[ii, jj]], [np.full(len(ii), centre)]
    rhs = f[ii, jj].astype(np.float64).copy()
    for (di, dj), wgt in weights.items():
        ni, nj = ii + di, jj + dj
        inside = (ni >= 0) & (ni < h) & (nj >= 0) & (nj < w)
        ni_c, nj_c = np.clip(ni, 0, h - 1), np.clip(nj, 0, w - 1)
        nb_free = inside & free[ni_c, nj_c]
        rows.append(idx[ii[nb_free], jj[nb_free]])
        cols.append(idx[ni_c[nb_free], nj_c[nb_free]])
        vals.append(np.full(int(nb_free.sum()), -wgt))
        nb_dir = inside & ~free[ni_c, nj_c]
        np.add.at(rhs, np.nonzero(nb_dir)[0], wgt * bc[ni_c[nb_dir], nj_c[nb_dir]])
    n = len(ii)
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return A, rhs, (ii, jj)


def field_from_free(problem, x: np.ndarray, free_index, sample: int = 0) -> torch.Tensor:
    u = problem.impose(torch.zeros_like(problem.fields["bc"][sample:sample + 1]))
    ii, jj = free_index
    u[0, 0, torch.as_tensor(ii), torch.as_tensor(jj)] = torch.as_tensor(x, dtype=torch.float64)
    return u


LINEAR_METHODS = ("cg", "minres", "gmres", "lgmres", "gcrotmk", "bicgstab", "pyamg_rs", "pyamg_sa", "direct")


def linear_solve(problem, method: str, maxiter: int, sample: int = 0, record: bool = True) -> Dict:
    """Solve one sample with a classical solver; records the iterate after every iteration.

    Returns {"u": final field [1,1,H,W], "iterates": list of x, "seconds": solve time without
    recording overhead is not separable, so ``seconds`` is measured in a separate unrecorded run}."""
    import scipy.sparse.linalg as spla

    if method not in LINEAR_METHODS:
        raise ValueError(f"unknown linear method {method!r}; choose from {LINEAR_METHODS}")
    A, b, free_index = laplace_system(problem, sample)
    iterates: List[np.ndarray] = []

    def run(rec: bool):
        cb = (lambda xk: iterates.append(np.array(xk, copy=True))) if rec else None
        if method == "direct":
            return spla.spsolve(A.tocsc(), b)
        if method.startswith("pyamg"):
            import pyamg
            ml = pyamg.ruge_stuben_solver(A) if method == "pyamg_rs" else pyamg.smoothed_aggregation_solver(A)
            return ml.solve(b, tol=1e-300, maxiter=maxiter, callback=cb)
        fn = getattr(spla, method)
        kwargs = {"maxiter": maxiter, "callback": cb}
        if method == "minres":
            kwargs["rtol"] = 1e-300
        else:
            kwargs["rtol"], kwargs["atol"] = 1e-300, 0.0
        if method == "gmres":  # scipy counts restart cycles in maxiter
            kwargs["callback_type"] = "x"
            kwargs["restart"] = min(200, maxiter)
            kwargs["maxiter"] = max(1, maxiter // kwargs["restart"])
        x, _ = fn(A, b, **kwargs)
        return x

    t = time.perf_counter()
    x = run(False)
    seconds = time.perf_counter() - t
    if record and method != "direct":
        run(True)
    return {"u": field_from_free(problem, x, free_index, sample), "seconds": seconds,
            "iterates": [field_from_free(problem, xi, free_index, sample) for xi in iterates] if record else [],
            "unknowns": A.shape[0]}
