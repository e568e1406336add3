"""Subspace acceleration of any optimizer's iterates (a multi-secant, Anderson-type step).

After the optimizer has stepped to ``u_P`` (gradient ``g_P``), the loss is minimized over the
affine span of ``u_P`` and the last ``m`` iterates ``u_i``, using only gradients already computed:
with ``dU_i = u_i - u_P`` and ``dG_i = g_i - g_P`` (for a quadratic loss ``dG = H dU``),

    L(u_P + dU b) ~ L_P + g_P . dU b + 1/2 b^T (dU^T dG) b   ->   (dU^T dG) b = -dU^T g_P

exact for the quadratic losses of linear PDEs (a Krylov-like method with the network as a
variable preconditioner) and a secant model otherwise. The caller evaluates the candidate (one
loss + gradient) and keeps it only where it lowers the loss. The history is kept either way:
dropping it after a rejected candidate (a restart) stalled gradient descent on Laplace 32^2 at
2e-5 where keeping it reaches 5e-16.

Measured on the held-out cases (shipped weights, 1 thread; plain -> memory 20): Laplace 100^2 at
50 iterations 1.7e-22 -> 7e-33, Laplace 400^2 ~1e-12 -> 1.4e-21 by iteration 60, wave c=2 at
100 it/step 1.3e-18 -> 4e-32, Navier-Stokes 64^2 at 20 it/step 1.1e-4 -> 4.9e-6, advection-
diffusion D=0.1 at 20 it/step 1.6e-8 -> 1.7e-9.

The ``"gradient"`` model minimizes |g_P + dG b| instead (Anderson type II on the gradient; with
the pseudo-gradients of the grid PDEs, g is proportional to the residual, so this is GMRES-like
where the energy model is CG-like). A problem picks it with ``subspace_model = "gradient"`` when
its operator is far from symmetric: advection-diffusion D=0.1 at 20 it/step 1.7e-9 -> 8e-11 with
it, while on Laplace 400^2 it is far worse (2.6e-9 vs 1e-28 at iteration 200).
"""
from __future__ import annotations

import torch

DEFAULT_MEMORY = 20
# eigenvalues of the column-normalized secant Gram matrix below this fraction of the largest are
# dropped: old iterates become nearly collinear as the iteration converges
EIG_CUTOFF = 1e-12
MODELS = ("energy", "gradient")


class SubspaceAccelerator:
    """Per-sample ring buffer of (u, grad) pairs and the subspace minimizer over it."""

    def __init__(self, memory: int = DEFAULT_MEMORY, model: str = "energy"):
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
            raise ValueError(f"accelerate (the subspace memory) must be an int >= 1, got {memory!r}")
        if model not in MODELS:
            raise ValueError(f"subspace model must be one of {MODELS}, got {model!r}")
        self.memory = memory
        self.model = model
        self._u = self._g = None      # [N, m, D]
        self._du = self._dg = None    # difference buffers reused across proposals: fresh [N, m, D]
        self._count = 0               # temporaries page-fault in every time (400^2: 31 -> 12.7 ms)
        self._next = 0

    def push(self, u: torch.Tensor, g: torch.Tensor) -> None:
        if self._u is None or self._u.shape[0] != u.shape[0] or self._u.shape[2] != u[0].numel():
            n, d = u.shape[0], u[0].numel()
            self._u = torch.empty(n, self.memory, d, dtype=u.dtype, device=u.device)
            self._g = torch.empty_like(self._u)
            self._count = self._next = 0
        self._u[:, self._next] = u.flatten(1)
        self._g[:, self._next] = g.flatten(1)
        self._next = (self._next + 1) % self.memory
        self._count = min(self._count + 1, self.memory)

    def propose(self, u_p: torch.Tensor, g_p: torch.Tensor) -> torch.Tensor:
        """The correction ``dU b`` (shaped like u_p) minimizing the secant model; zero without history."""
        if not self._count:
            return torch.zeros_like(u_p)
        up, gp = u_p.flatten(1), g_p.flatten(1)
        if self._du is None or self._du.shape != self._u.shape:
            self._du, self._dg = torch.empty_like(self._u), torch.empty_like(self._g)
        du = torch.sub(self._u[:, :self._count], up[:, None], out=self._du[:, :self._count])   # [N, m, D]
        dg = torch.sub(self._g[:, :self._count], gp[:, None], out=self._dg[:, :self._count])
        beta = self._energy(du, dg, gp) if self.model == "energy" else self._gradient(dg, gp)
        correction = torch.einsum("ni,nid->nd", beta, du)
        return torch.nan_to_num(correction, nan=0.0, posinf=0.0, neginf=0.0).view_as(u_p)

    @staticmethod
    def _energy(du, dg, gp):
        """b minimizing the quadratic model (dU^T dG symmetrized; positive curvature only)."""
        norm = torch.linalg.vector_norm(du, dim=2)                      # [N, m]
        inv = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-300), torch.zeros_like(norm))
        gram = torch.einsum("nid,njd->nij", du, dg) * inv[:, :, None] * inv[:, None, :]
        gram = 0.5 * (gram + gram.transpose(1, 2))
        rhs = -torch.einsum("nid,nd->ni", du, gp) * inv
        lam, vec = torch.linalg.eigh(gram)
        # only directions of positive curvature: a minimizer, never a saddle step
        keep = lam > EIG_CUTOFF * lam.abs().amax(1, keepdim=True).clamp_min(1e-300)
        coef = torch.einsum("nji,nj->ni", vec, rhs) / torch.where(keep, lam, torch.ones_like(lam))
        return torch.einsum("nij,nj->ni", vec, torch.where(keep, coef, torch.zeros_like(coef))) * inv

    @staticmethod
    def _gradient(dg, gp):
        """b minimizing |g_P + dG b| (least squares by QR; near-dependent columns dropped)."""
        norm = torch.linalg.vector_norm(dg, dim=2)                      # [N, m]
        inv = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-300), torch.zeros_like(norm))
        q, r = torch.linalg.qr((dg * inv[:, :, None]).transpose(1, 2))  # [N, D, m], [N, m, m]
        diag = torch.diagonal(r, dim1=1, dim2=2).abs()
        ok = diag > EIG_CUTOFF ** 0.5 * diag.amax(1, keepdim=True).clamp_min(1e-300)
        rhs = torch.where(ok, -torch.einsum("ndi,nd->ni", q, gp), torch.zeros_like(diag))
        r = torch.where(ok[:, :, None], r, torch.diag_embed(torch.ones_like(diag)))  # dropped: b_i = 0
        return torch.linalg.solve_triangular(r, rhs[..., None], upper=True)[..., 0] * inv
