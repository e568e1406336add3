"""The one protocol between physics and optimizers: a batched ``Problem``.

A problem is a physical system at one time step for N independent samples. It holds its
per-sample data in ``self.fields`` (tensors with leading dim N) and exposes

    loss_and_grad(u) -> (loss [N], grad like u)   # compiled kernel or PyTorch twin
    loss(u)          -> loss [N], differentiable w.r.t. u through the op's gradient
    residual(u)      -> per-sample mean squared residual (the metric users see)
    apply(u, step)   -> u + step with hard Dirichlet cells re-imposed
    initial_guess()  -> the unknown at the start of a solve
    advance(u)       -> roll to the next time step; returns the warm start for it

Optimizers only see this protocol; training pools use ``select``/``assign`` to work on subsets.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict

import torch

from metaphys import _ops


def masked_mse_and_grad(residual_fn: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor,
                        free: torch.Tensor):
    """Per-sample mean of free*r^2 (over free cells x channels) and its autograd gradient.

    The twins express each PDE's residual once; stop-gradients inside ``residual_fn`` make the
    gradient the paper's pseudo-gradient, no stop-gradients make it the true gradient.
    """
    channels = u.shape[1]
    count = (free.flatten(1).sum(1) * channels).clamp_min(1.0)
    with torch.enable_grad():
        uu = u.detach().requires_grad_(True)
        r = residual_fn(uu)
        loss = (free * r * r).flatten(1).sum(1) / count
        (grad,) = torch.autograd.grad(loss.sum(), uu)
    return loss.detach(), grad


class Problem:
    """Base class; subclasses set ``op_name``, ``twin``, ``channels`` and implement ``op_args``."""

    op_name: str = ""
    channels: int = 1
    time_dependent: bool = False
    # Divergence threshold on the per-sample loss, used by training pools to reset a sample.
    divergence_threshold: float = 1e6

    def __init__(self, fields: Dict[str, torch.Tensor], **config):
        self.fields = fields
        self.config = config

    # --- subclass hooks -------------------------------------------------------------------
    @staticmethod
    def twin(*args):  # pragma: no cover - abstract
        raise NotImplementedError

    def op_args(self) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    def impose(self, u: torch.Tensor) -> torch.Tensor:
        """Hard Dirichlet values on the unknown (default: mask/bc fields if present)."""
        if "mask" in self.fields and "bc" in self.fields:
            m = self.fields["mask"]
            return m * self.fields["bc"] + (1 - m) * u
        return u

    # --- protocol -------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return next(iter(self.fields.values())).shape[0]

    @property
    def shape(self):
        """Shape of the unknown [N, C, H, W]."""
        ref = self.fields["mask"]
        return (ref.shape[0], self.channels, ref.shape[-2], ref.shape[-1])

    @property
    def device(self) -> torch.device:
        return next(iter(self.fields.values())).device

    def check_unknown(self, u: torch.Tensor) -> torch.Tensor:
        from metaphys.physics.checks import check_field
        return check_field("u", u, shape=self.shape, device=self.device)

    def loss_and_grad(self, u: torch.Tensor):
        return _ops.call(self.op_name, type(self).twin, u.contiguous(), *self.op_args())

    def loss(self, u: torch.Tensor) -> torch.Tensor:
        return _ops.differentiable_loss(self.op_name, type(self).twin, u.contiguous(), *self.op_args())

    def residual(self, u: torch.Tensor) -> torch.Tensor:
        return self.residual_from(*self.loss_and_grad(u))

    def residual_from(self, loss: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The per-sample metric users see, from one op evaluation (default: the loss = MSR)."""
        return loss

    def apply(self, u: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return self.impose(u + step)

    def initial_guess(self) -> torch.Tensor:
        return self.impose(torch.zeros(self.shape, dtype=torch.float64, device=self.device))

    def advance(self, u: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} is stationary; it has no time step to advance")

    # --- subsets for batched pools ---------------------------------------------------------
    def select(self, idx: torch.Tensor) -> "Problem":
        sub = copy.copy(self)
        sub.fields = {k: v[idx] for k, v in self.fields.items()}
        return sub

    def assign(self, idx: torch.Tensor, sub: "Problem") -> None:
        for k, v in sub.fields.items():
            self.fields[k][idx] = v

    def to(self, device) -> "Problem":
        out = copy.copy(self)
        out.fields = {k: v.to(device) for k, v in self.fields.items()}
        return out
