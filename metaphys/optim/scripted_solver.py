"""The product's iteration as one TorchScript module, for C++ tools and game engines.

``MetamizerSolver`` wraps the shipped network (the weights contract, ``weights/metamizer.pt``) with
what ``optim.solve.iterate`` adds around it -- the subspace acceleration (``optim/accelerate.py``),
the step guard, the tolerance stop -- so a program that embeds libtorch gets the iterates of
``solve(problem, Metamizer())`` without Python (same operations in the same order: equal to
rounding, ``tests/test_scripted_solver.py``). ``metaphys export-solver`` writes it to
``weights/metamizer_solver.pt`` with a JSON beside it naming the weights it wraps.

TorchScript cannot call back into the caller's code, so the loop is turned inside out (reverse
communication, "ask/tell"): the module says where it needs the loss and gradient, the caller
evaluates them with its own physics and tells the module, which picks the next point:

    state = solver.start(u0, mask, values, tol, max_iterations)      # Dict[str, Tensor], opaque
    while not solver.done(state):
        loss, grad = my_physics(solver.query(state))    # [N], like u: the caller's only job
        state = solver.tell(state, loss, grad)          # consumes the state
    u, history = solver.solution(state), solver.residuals(state)

``mask``/``values``: cells with mask 1 are held at ``values`` (default: u0's values), as
``Problem.apply`` does; ``previous``: a time-dependent caller passes the state the last step ended
with, so the network's state carries across steps as in ``TimeStepper``. An iteration asks for 2 evaluations (the network's step and the
accelerated candidate) plus one per guard retry, exactly those of ``iterate``. The tolerance is
judged on ``residual`` if the caller passes one to ``tell``, else on the loss (``iterate`` uses
``problem.residual_from``, which is the loss for the grid PDEs). The built-in Poisson/Laplace
problem (5- or 9-point stencil, a Dirichlet mask: ``LaplaceProblem``) runs the same loop inside:
``solve_poisson(mask, bc, f, stencil, tol, max_iterations)``. ``forward`` is the network's own
contract, so the file also serves wherever ``metamizer.pt`` does.
"""
from __future__ import annotations

import io
import json
import os
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaphys.io.atomic import atomic_write_bytes, atomic_write_text
from metaphys.optim.accelerate import DEFAULT_MEMORY, EIG_CUTOFF
from metaphys.optim.metamizer import INITIAL_SCALE, MIN_SIZE
from metaphys.optim.solve import DIVERGENCE_FACTOR
from metaphys.optim.weights_file import (WeightsError, default_weights_path, load_torchscript, metadata_path,
                                         quiet_torchscript, sha256_of)

FORMAT = "metaphys-metamizer-solver-torchscript/1"
DEFAULT_SOLVER = os.path.join(os.path.dirname(default_weights_path()), "metamizer_solver.pt")


class MetamizerSolver(nn.Module):
    """The Metamizer's whole iteration around a weights-contract network (see the module doc)."""

    # the phases of one iteration: which point the caller is evaluating
    START = 0       # u0
    TRIAL = 1       # the network's step (or a guard retry of it)
    CANDIDATE = 2   # the subspace-accelerated point
    DONE = 3
    min_size = MIN_SIZE
    __constants__ = ["START", "TRIAL", "CANDIDATE", "DONE", "min_size"]

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        # float attributes, not constants: TorchScript writes the constant 1e10 as an int literal
        # that its own loader then refuses (torch 2.13)
        self.eig_cutoff = EIG_CUTOFF
        self.divergence_factor = DIVERGENCE_FACTOR

    def forward(self, grad: Tensor, prev_grad: Tensor, prev_step: Tensor, scale: Tensor) -> Tuple[Tensor, Tensor]:
        """The weights contract itself: (step, new_scale)."""
        return self.net(grad, prev_grad, prev_step, scale)

    # ---- the ask/tell loop ------------------------------------------------------------------
    @torch.jit.export
    def start(self, u0: Tensor, mask: Optional[Tensor] = None, values: Optional[Tensor] = None,
              tol: Optional[float] = None, max_iterations: int = 1000, accelerate: int = DEFAULT_MEMORY,
              subspace_model: str = "energy", guard: bool = False, guard_growth: float = 1.0,
              guard_shrink: float = 0.25, guard_retries: int = 3, initial_scale: float = INITIAL_SCALE,
              previous: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
        """A solve from u0 [N,C,H,W] float64; evaluate at ``query(state)`` first. ``previous``: the
        state the last time step ended with; the network's state carries over (as in TimeStepper)."""
        if u0.dim() != 4 or u0.dtype != torch.float64:
            raise ValueError("u0 must be a float64 [N, C, H, W] tensor, got {} {}".format(u0.dtype, u0.shape))
        n, c, h, w = u0.shape
        if h < self.min_size or w < self.min_size:
            raise ValueError("the Metamizer needs grids of at least {}x{}, got {}x{}".format(
                self.min_size, self.min_size, h, w))
        if tol is not None and not tol > 0:
            raise ValueError("tol must be > 0, got {}".format(tol))
        if max_iterations < 0 or accelerate < 0 or guard_retries < 0:
            raise ValueError("max_iterations, accelerate and guard_retries must be >= 0, got {}, {}, {}".format(
                max_iterations, accelerate, guard_retries))
        if subspace_model != "energy" and subspace_model != "gradient":
            raise ValueError("subspace_model must be 'energy' or 'gradient', got '{}'".format(subspace_model))
        if not (guard_shrink > 0.0 and guard_shrink < 1.0 and initial_scale > 0.0):
            raise ValueError("guard_shrink must be in (0, 1) and initial_scale > 0, got {}, {}".format(
                guard_shrink, initial_scale))
        s: Dict[str, Tensor] = {}
        if mask is not None:
            s["mask"] = self._like_u("mask", mask, u0).to(torch.float64)
            s["values"] = u0 if values is None else self._like_u("values", values, u0)
        elif values is not None:
            raise ValueError("values without a mask: pass the mask of the cells they hold")
        dev = u0.device
        if tol is not None:
            s["tol"] = torch.tensor(tol, dtype=torch.float64, device=dev)
        s["max_iterations"] = torch.tensor(max_iterations)
        s["memory"] = torch.tensor(accelerate)
        s["gradient_model"] = torch.tensor(subspace_model == "gradient")
        s["guard"] = torch.tensor(guard)
        s["guard_growth"] = torch.tensor(guard_growth, dtype=torch.float64)
        s["guard_shrink"] = torch.tensor(guard_shrink, dtype=torch.float64)
        s["guard_retries"] = torch.tensor(guard_retries)
        # the network's state, one single-channel sample per channel (as Metamizer.init_state)
        s["prev_grad"] = torch.zeros(n * c, 1, h, w, dtype=torch.float64, device=dev)
        s["prev_step"] = torch.zeros(n * c, 1, h, w, dtype=torch.float64, device=dev)
        s["scale"] = torch.full([n * c], initial_scale, dtype=torch.float64, device=dev)
        if previous is not None:
            for key in ("prev_grad", "prev_step", "scale"):
                if previous[key].shape != s[key].shape:
                    raise ValueError("previous is the state of another problem: its {} is {}, not {}".format(
                        key, previous[key].shape, s[key].shape))
                s[key] = previous[key]
        if accelerate > 0:  # the accelerator's ring buffer of (u, grad) per sample, and a workspace for
            # the differences: allocating those afresh each iteration costs page faults (at 400^2 more
            # than the arithmetic: benchmarks/results/profile.md)
            for key in ("hist_u", "hist_g", "du", "dg"):
                s[key] = torch.empty(n, accelerate, c * h * w, dtype=torch.float64, device=dev)
        for key in ("hist_count", "hist_next", "iteration", "retry", "guard_rejections"):
            s[key] = torch.tensor(0)
        s["phase"] = torch.tensor(self.START)
        s["hit_cap"] = torch.tensor(False)
        s["u"] = u0
        s["query"] = u0
        return s

    def _like_u(self, name: str, t: Tensor, u0: Tensor) -> Tensor:
        """t itself if it is [N, 1 or C, H, W] for u0 [N, C, H, W] (one channel broadcasts)."""
        n, c, h, w = u0.shape
        if t.dim() != 4 or t.size(0) != n or t.size(2) != h or t.size(3) != w or (t.size(1) != 1 and t.size(1) != c):
            raise ValueError("{} must be [N, 1 or C, H, W] like u0 {}, got {}".format(name, u0.shape, t.shape))
        return t

    @torch.jit.export
    def tell(self, state: Dict[str, Tensor], loss: Tensor, grad: Tensor,
             residual: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The loss [N] and gradient (like u) at ``query(state)``; returns the next state."""
        phase = int(state["phase"])
        if phase == self.DONE:
            raise RuntimeError("this solve is finished (done(state) is true); start a new one")
        u = state["query"]
        if grad.shape != u.shape or loss.dim() != 1 or loss.size(0) != u.size(0) \
                or grad.dtype != torch.float64 or loss.dtype != torch.float64:
            raise ValueError("tell needs float64 loss [N] and grad shaped like u {}, got {} {} and {} {}".format(
                u.shape, loss.dtype, loss.shape, grad.dtype, grad.shape))
        res = loss if residual is None else residual
        if phase == self.START:
            self._started(state, loss, grad, res)
        elif phase == self.TRIAL:
            self._trial_told(state, loss, grad, res)
        else:
            self._candidate_told(state, loss, grad, res)
        return state

    @torch.jit.export
    def query(self, state: Dict[str, Tensor]) -> Tensor:
        """The point whose loss and gradient ``tell`` needs next (the solution once done)."""
        return state["query"]

    @torch.jit.export
    def done(self, state: Dict[str, Tensor]) -> bool:
        return int(state["phase"]) == self.DONE

    @torch.jit.export
    def solution(self, state: Dict[str, Tensor]) -> Tensor:
        return state["u"]

    @torch.jit.export
    def residuals(self, state: Dict[str, Tensor]) -> Tensor:
        """[iterations + 1, N]: row 0 before the first step (``SolveResult.history()``)."""
        return state["history"]

    @torch.jit.export
    def iterations(self, state: Dict[str, Tensor]) -> int:
        return int(state["iteration"])

    @torch.jit.export
    def guard_rejections(self, state: Dict[str, Tensor]) -> int:
        return int(state["guard_rejections"])

    @torch.jit.export
    def hit_cap(self, state: Dict[str, Tensor]) -> bool:
        """True when a tolerance was given and the iteration cap came first for some sample."""
        return bool(state["hit_cap"])

    # ---- the built-in problem -------------------------------------------------------------------
    @torch.jit.export
    def poisson_loss_and_grad(self, u: Tensor, mask: Tensor, bc: Tensor, f: Tensor,
                              stencil: int = 9) -> Tuple[Tensor, Tensor]:
        """``LaplaceProblem``'s loss and pseudo-gradient: r = L(m*bc + (1-m)*u) + f, the mean of r^2
        over free cells, and 2/N_free * w_c * (1-m)^2 * r (w_c the stencil's centre weight)."""
        free = 1.0 - mask
        ut = mask * bc + free * u
        h, w = u.size(2), u.size(3)
        p = F.pad(ut, [1, 1, 1, 1])
        axis = p[:, :, 0:h, 1:w + 1] + p[:, :, 2:h + 2, 1:w + 1] + p[:, :, 1:h + 1, 0:w] + p[:, :, 1:h + 1, 2:w + 2]
        if stencil == 9:
            diag = p[:, :, 0:h, 0:w] + p[:, :, 0:h, 2:w + 2] + p[:, :, 2:h + 2, 0:w] + p[:, :, 2:h + 2, 2:w + 2]
            r = 0.25 * diag + 0.5 * axis - 3.0 * ut + f
            centre = -3.0
        elif stencil == 5:
            r = axis - 4.0 * ut + f
            centre = -4.0
        else:
            raise ValueError("stencil must be 9 or 5, got {}".format(stencil))
        count = (free.flatten(1).sum(1) * u.size(1)).clamp_min(1.0)
        q = free * r
        loss = (q * r).flatten(1).sum(1) / count
        grad = (2.0 / count).view(-1, 1, 1, 1) * centre * free * q
        return loss, grad

    @torch.jit.export
    def solve_poisson(self, mask: Tensor, bc: Tensor, f: Tensor, stencil: int = 9, tol: Optional[float] = None,
                      max_iterations: int = 1000, accelerate: int = DEFAULT_MEMORY, guard: bool = False,
                      initial_scale: float = INITIAL_SCALE) -> Tuple[Tensor, Tensor]:
        """-Laplace(u) = f with u = bc where mask is 1, all [N,1,H,W] float64, from u = mask*bc;
        returns (u, residual history [iterations + 1, N])."""
        if mask.shape != bc.shape or f.shape != bc.shape or bc.dim() != 4 or bc.size(1) != 1:
            raise ValueError("mask, bc and f must all be [N, 1, H, W], got {}, {}, {}".format(
                mask.shape, bc.shape, f.shape))
        u0 = mask * bc + (1.0 - mask) * torch.zeros_like(bc)
        state = self.start(u0, mask, bc, tol, max_iterations, accelerate, "energy", guard, 1.0, 0.25, 3,
                           initial_scale, None)
        while not self.done(state):
            loss, grad = self.poisson_loss_and_grad(self.query(state), mask, bc, f, stencil)
            state = self.tell(state, loss, grad, None)
        return self.solution(state), self.residuals(state)

    # ---- one iteration, phase by phase (optim.solve.iterate's body) -------------------------------
    def _started(self, state: Dict[str, Tensor], loss: Tensor, grad: Tensor, res: Tensor):
        if not bool(torch.isfinite(loss).all()):
            raise RuntimeError("the starting point already has a non-finite residual")
        u = state["query"]
        state["start"] = res.abs().clamp_min(1e-300)
        state["history"] = res.unsqueeze(0)
        self._set_point(state, u, loss, grad, res)
        if int(state["memory"]) > 0:
            self._push(state, u, grad)
        self._next_step(state)

    def _next_step(self, state: Dict[str, Tensor]):
        """Stop, or ask for the network's step from the current point."""
        u, grad, res = state["u"], state["grad"], state["residual"]
        if int(state["iteration"]) >= int(state["max_iterations"]):
            if "tol" in state:
                state["hit_cap"] = (res > state["tol"]).any()
            self._finish(state)
            return
        # a sample whose gradient is exactly zero is at a stationary point: it does not move
        active = grad.flatten(1).abs().amax(1) > 0
        if "tol" in state:
            active = active & (res > state["tol"])
        if not bool(active.any()):
            self._finish(state)
            return
        n, c, h, w = u.shape
        g = grad.reshape(n * c, 1, h, w)
        step, scale = self._network(g, state["prev_grad"], state["prev_step"], state["scale"])
        state["prev_grad"] = g
        state["prev_step"] = step
        state["scale"] = scale
        state["step"] = step.reshape(n, c, h, w) * active.view(-1, 1, 1, 1).to(step.dtype)
        state["active"] = active
        state["retry"] = torch.tensor(0)
        state["query"] = self._apply(state, u, state["step"])
        state["phase"] = torch.tensor(self.TRIAL)

    def _network(self, g: Tensor, prev_grad: Tensor, prev_step: Tensor, scale: Tensor) -> Tuple[Tensor, Tensor]:
        with torch.no_grad():
            out = self.net(g, prev_grad, prev_step, scale)
        return out

    def _trial_told(self, state: Dict[str, Tensor], loss_new: Tensor, grad_new: Tensor, res_new: Tensor):
        """The step guard (retry shrunk or stay put) or the divergence check, then the candidate."""
        u, loss, active = state["u"], state["loss"], state["active"]
        u_new = state["query"]
        if bool(state["guard"]):
            growth = float(state["guard_growth"])
            bad = active & (~torch.isfinite(loss_new) | (loss_new > loss + growth * loss.abs()))
            if bool(bad.any()):
                if int(state["retry"]) < int(state["guard_retries"]) + 1:
                    state["guard_rejections"] = state["guard_rejections"] + bad.sum()
                    shrink = torch.where(bad, float(state["guard_shrink"]), 1.0).to(torch.float64)
                    state["step"] = state["step"] * shrink.view(-1, 1, 1, 1)
                    self._shrink(state, shrink)
                    state["retry"] = state["retry"] + 1
                    state["query"] = self._apply(state, u, state["step"])
                    return
                keep = bad.view(-1, 1, 1, 1)   # retries spent: those samples stay put this iteration
                u_new = torch.where(keep, u, u_new)
                loss_new = torch.where(bad, loss, loss_new)
                grad_new = torch.where(keep, state["grad"], grad_new)
                res_new = torch.where(bad, state["residual"], res_new)
        else:
            start = state["start"]
            if not bool(torch.isfinite(loss_new).all()) or not bool(torch.isfinite(res_new).all()) \
                    or bool((res_new.abs() > self.divergence_factor * start).any()):
                worst = int(torch.argmax(torch.nan_to_num(res_new.abs(), nan=float("inf"))))
                raise RuntimeError(
                    "optimizer diverged at iteration {}: sample {} has residual {} (started at {}); enable the "
                    "step guard (guard=True) or use more iterations per time step".format(
                        int(state["iteration"]) + 1, worst, float(res_new[worst]), float(start[worst])))
        if int(state["memory"]) == 0:
            self._commit(state, u_new, loss_new, grad_new, res_new)
            return
        state["u_p"] = u_new
        state["loss_p"] = loss_new
        state["grad_p"] = grad_new
        state["res_p"] = res_new
        correction = self._propose(state, u_new, grad_new) * active.view(-1, 1, 1, 1).to(u_new.dtype)
        state["query"] = self._apply(state, u_new, correction)
        state["phase"] = torch.tensor(self.CANDIDATE)

    def _candidate_told(self, state: Dict[str, Tensor], loss_a: Tensor, grad_a: Tensor, res_a: Tensor):
        """Keep the accelerated point where it lowers the loss (optim.solve._accelerated)."""
        u_p, loss_p, grad_p = state["u_p"], state["loss_p"], state["grad_p"]
        u_a = state["query"]
        # both points join the history, taken or not: each is a valid secant sample
        self._push(state, u_p, grad_p)
        self._push(state, u_a, grad_a)
        better = state["active"] & torch.isfinite(loss_a) & (loss_a < loss_p)
        if bool(better.any()):  # the network sees the length actually taken
            taken = torch.linalg.vector_norm((u_a - state["u"]).flatten(1), 2.0, dim=1)
            own = torch.linalg.vector_norm(state["step"].flatten(1), 2.0, dim=1).clamp_min(1e-300)
            self._shrink(state, torch.where(better, taken / own, torch.ones_like(taken)).to(torch.float64))
        pick = better.view(-1, 1, 1, 1)
        self._commit(state, torch.where(pick, u_a, u_p), torch.where(better, loss_a, loss_p),
                     torch.where(pick, grad_a, grad_p), torch.where(better, res_a, state["res_p"]))

    def _commit(self, state: Dict[str, Tensor], u: Tensor, loss: Tensor, grad: Tensor, res: Tensor):
        self._set_point(state, u, loss, grad, res)
        state["history"] = torch.cat([state["history"], res.unsqueeze(0)])
        state["iteration"] = state["iteration"] + 1
        self._next_step(state)

    def _finish(self, state: Dict[str, Tensor]):
        state["query"] = state["u"]
        state["phase"] = torch.tensor(self.DONE)

    def _set_point(self, state: Dict[str, Tensor], u: Tensor, loss: Tensor, grad: Tensor, res: Tensor):
        state["u"] = u
        state["loss"] = loss
        state["grad"] = grad
        state["residual"] = res

    def _apply(self, state: Dict[str, Tensor], u: Tensor, step: Tensor) -> Tensor:
        """u + step with the held cells re-imposed (Problem.apply)."""
        x = u + step
        if "mask" in state:
            m = state["mask"]
            return m * state["values"] + (1 - m) * x
        return x

    def _shrink(self, state: Dict[str, Tensor], factor: Tensor):
        """Each sample's scale and previous step times factor [N] (Metamizer.shrink)."""
        per_channel = factor.repeat_interleave(state["scale"].size(0) // factor.size(0))
        state["scale"] = state["scale"] * per_channel
        state["prev_step"] = state["prev_step"] * per_channel.view(-1, 1, 1, 1)

    # ---- the subspace acceleration (optim.accelerate.SubspaceAccelerator) -------------------------
    def _push(self, state: Dict[str, Tensor], u: Tensor, g: Tensor):
        memory, nxt = int(state["memory"]), int(state["hist_next"])
        hist_u, hist_g = state["hist_u"], state["hist_g"]
        hist_u[:, nxt] = u.flatten(1)
        hist_g[:, nxt] = g.flatten(1)
        state["hist_next"] = torch.tensor((nxt + 1) % memory)
        state["hist_count"] = torch.tensor(min(int(state["hist_count"]) + 1, memory))

    def _propose(self, state: Dict[str, Tensor], u_p: Tensor, g_p: Tensor) -> Tensor:
        count = int(state["hist_count"])
        if count == 0:
            return torch.zeros_like(u_p)
        up, gp = u_p.flatten(1), g_p.flatten(1)
        du = torch.sub(state["hist_u"][:, :count], up.unsqueeze(1), out=state["du"][:, :count])
        dg = torch.sub(state["hist_g"][:, :count], gp.unsqueeze(1), out=state["dg"][:, :count])
        if bool(state["gradient_model"]):
            beta = self._gradient_model(dg, gp)
        else:
            beta = self._energy_model(du, dg, gp)
        correction = torch.einsum("ni,nid->nd", beta, du)
        return torch.nan_to_num(correction, nan=0.0, posinf=0.0, neginf=0.0).view_as(u_p)

    def _energy_model(self, du: Tensor, dg: Tensor, gp: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(du, 2.0, dim=2)
        inv = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-300), torch.zeros_like(norm))
        gram = torch.einsum("nid,njd->nij", du, dg) * inv[:, :, None] * inv[:, None, :]
        gram = 0.5 * (gram + gram.transpose(1, 2))
        rhs = -torch.einsum("nid,nd->ni", du, gp) * inv
        lam, vec = torch.linalg.eigh(gram)
        keep = lam > self.eig_cutoff * lam.abs().amax(1, keepdim=True).clamp_min(1e-300)
        coef = torch.einsum("nji,nj->ni", vec, rhs) / torch.where(keep, lam, torch.ones_like(lam))
        return torch.einsum("nij,nj->ni", vec, torch.where(keep, coef, torch.zeros_like(coef))) * inv

    def _gradient_model(self, dg: Tensor, gp: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(dg, 2.0, dim=2)
        inv = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-300), torch.zeros_like(norm))
        q, r = torch.linalg.qr((dg * inv[:, :, None]).transpose(1, 2))
        diag = torch.diagonal(r, dim1=1, dim2=2).abs()
        ok = diag > self.eig_cutoff ** 0.5 * diag.amax(1, keepdim=True).clamp_min(1e-300)
        rhs = torch.where(ok, -torch.einsum("ndi,nd->ni", q, gp), torch.zeros_like(diag))
        r = torch.where(ok[:, :, None], r, torch.diag_embed(torch.ones_like(diag)))
        return torch.linalg.solve_triangular(r, rhs.unsqueeze(-1), upper=True).select(-1, 0) * inv


# ---- building, exporting, loading ------------------------------------------------------------------
def build_solver(weights: Optional[str] = None) -> torch.jit.ScriptModule:
    """The scripted solver around the weights at ``weights`` (default: the shipped, checksummed)."""
    net = load_torchscript(weights)
    for p in net.parameters():
        p.requires_grad_(False)
    ctx = quiet_torchscript()
    try:
        return torch.jit.script(MetamizerSolver(net).eval())
    finally:
        ctx.__exit__(None, None, None)


def export_solver(out: str, weights: Optional[str] = None) -> dict:
    """Write the solver module to ``out`` and its JSON (sha256 of both files, the interface)."""
    weights = weights or default_weights_path()
    solver = build_solver(weights)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    buffer = io.BytesIO()  # saved in memory: the archive's folder is then not the temp file's random name
    ctx = quiet_torchscript()
    try:
        torch.jit.save(solver, buffer)
    finally:
        ctx.__exit__(None, None, None)
    atomic_write_bytes(out, buffer.getvalue())
    meta = {"format": FORMAT,
            "wraps": {"file": os.path.basename(weights), "sha256": sha256_of(weights)},
            "interface": ("state = start(u0, mask=None, values=None, tol=None, max_iterations=1000, accelerate=20, "
                          "subspace_model='energy', guard=False, guard_growth=1.0, guard_shrink=0.25, "
                          "guard_retries=3, initial_scale=0.05); while not done(state): loss, grad = "
                          "f(query(state)); state = tell(state, loss, grad[, residual]); then solution(state), "
                          "residuals(state), iterations(state), guard_rejections(state), hit_cap(state). "
                          "solve_poisson(mask, bc, f, stencil=9, tol=None, max_iterations=1000, accelerate=20, "
                          "guard=False, initial_scale=0.05) -> (u, residual history); "
                          "forward = the weights contract of the wrapped file"),
            "torch": torch.__version__.split("+")[0],
            "sha256": sha256_of(out)}
    atomic_write_text(metadata_path(out), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def load_solver(path: Optional[str] = None, map_location="cpu") -> torch.jit.ScriptModule:
    """Load a solver module, verifying the sha256 in the JSON beside it."""
    path = path or DEFAULT_SOLVER
    mpath = metadata_path(path)
    if not os.path.isfile(path) or not os.path.isfile(mpath):
        raise WeightsError(f"solver module {path} or its metadata {mpath} not found; write them with "
                           "`metaphys export-solver --out PATH`")
    with open(mpath) as fh:
        expected = json.load(fh).get("sha256")
    if expected != sha256_of(path):
        raise WeightsError(f"checksum mismatch for {path}: {mpath} records {expected}; re-export it")
    ctx = quiet_torchscript()
    try:
        return torch.jit.load(path, map_location=map_location)
    finally:
        ctx.__exit__(None, None, None)


def run(solver, u0: Tensor, loss_and_grad: Callable[[Tensor], Tuple[Tensor, Tensor]],
        **options) -> Tuple[Tensor, Tensor]:
    """The caller's side of the loop in Python: (u, residual history); ``options`` go to ``start``."""
    mask, values = options.pop("mask", None), options.pop("values", None)
    state = solver.start(u0, mask, values, **options)
    while not solver.done(state):
        loss, grad = loss_and_grad(solver.query(state))
        state = solver.tell(state, loss, grad)
    return solver.solution(state), solver.residuals(state)
