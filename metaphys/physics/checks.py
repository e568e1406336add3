"""Input validation at the op boundary: messages name the argument, what it was, what it must be."""
from __future__ import annotations

import math
from typing import Sequence

import torch

FLOAT64 = torch.float64


def check_field(name: str, t, *, shape: Sequence[int | None] | None = None, ndim: int = 4,
                dtype: torch.dtype = FLOAT64, device: torch.device | None = None) -> torch.Tensor:
    """A tensor of the given rank/dtype/device whose dims match ``shape`` (None = any)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions [N, C, H, W], got shape {tuple(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype} (physics runs in float64), got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the unknown is on {device}; put all inputs on one device")
    if shape is not None:
        for k, (got, want) in enumerate(zip(t.shape, shape)):
            if want is not None and got != want:
                want_s = tuple("*" if s is None else s for s in shape)
                raise ValueError(f"{name} must have shape {want_s}, got {tuple(t.shape)} (dim {k} differs)")
    return t


def check_grid(name: str, t: torch.Tensor, min_size: int = 3) -> None:
    h, w = t.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f"{name} grid must be at least {min_size}x{min_size}, got {h}x{w}")


def check_mask(name: str, m: torch.Tensor) -> None:
    bad = (m != 0) & (m != 1)
    if bool(bad.any()):
        raise ValueError(f"{name} must contain only 0 (free) and 1 (Dirichlet), found other values")


def check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def batch_param(name: str, value, n: int, *, device, positive: bool = False,
                nonnegative: bool = False) -> torch.Tensor:
    """A per-sample float64 parameter of shape [N] from a number, a sequence or a tensor."""
    t = torch.as_tensor(value, dtype=FLOAT64, device=device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must be a number or have shape [{n}] (one per sample), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist() if n <= 8 else 'NaN/Inf entries'}")
    if positive and bool((t <= 0).any()):
        raise ValueError(f"{name} must be > 0, got min {float(t.min())}")
    if nonnegative and bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0, got min {float(t.min())}")
    return t.contiguous()


def check_stencil(stencil: int) -> int:
    if stencil not in (5, 9):
        raise ValueError(f"stencil must be 9 (isotropic, default) or 5, got {stencil!r}")
    return int(stencil)


def as_field(name: str, value, like: torch.Tensor, channels: int) -> torch.Tensor:
    """Broadcast a number or a [N|1, channels|1, H, W] tensor to a contiguous [N, channels, H, W] field."""
    n, _, h, w = like.shape
    if value is None:
        return torch.zeros(n, channels, h, w, dtype=FLOAT64, device=like.device)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return torch.full((n, channels, h, w), float(value), dtype=FLOAT64, device=like.device)
    check_field(name, value, device=like.device)
    vn, vc, vh, vw = value.shape
    if (vh, vw) != (h, w) or vn not in (1, n) or vc not in (1, channels):
        raise ValueError(f"{name} must broadcast to shape ({n}, {channels}, {h}, {w}), got {tuple(value.shape)}")
    return value.expand(n, channels, h, w).contiguous()
