"""The backward-only gradient normalizer N (paper: gradient normalization, Chen et al. 2018).

Forward: identity. Backward: each sample's incoming gradient is divided by its L2 norm over all
non-batch dims (floored at 1e-40) and clamped to [-10, 10]. Every single-channel sample thus
gives an equally sized training signal whatever its loss magnitude, PDE or optimization stage;
on the scalar head it reduces to sign(dL/dlambda), a learned line search.
"""
from __future__ import annotations

import torch

NORM_FLOOR = 1e-40
CLAMP = 10.0


class _GradientNormalizer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        norm = g.flatten(1).norm(dim=1).clamp_min(NORM_FLOOR)
        shape = (-1,) + (1,) * (g.dim() - 1)
        return (g / norm.view(shape)).clamp(-CLAMP, CLAMP)


def normalize_gradient(x: torch.Tensor) -> torch.Tensor:
    return _GradientNormalizer.apply(x)
