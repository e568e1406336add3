"""The one place that chooses between the compiled kernels (metaphys._C) and the PyTorch twins.

Every physics op has the signature ``op(u, *args) -> (loss [N], grad like u)``: the per-sample
mean squared residual in float64 and the gradient that drives the optimizer, computed in one
pass. ``call`` dispatches by availability and device; ``differentiable_loss`` wraps the pair in
an autograd.Function whose backward is ``grad_loss * grad`` so training can backpropagate
through "loss after the step".

Backend selection: METAPHYS_BACKEND=auto (default) | kernel | twin, or ``set_backend``.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

_state = {"loaded": False, "module": None, "error": None, "warned": False,
          "backend": os.environ.get("METAPHYS_BACKEND", "auto")}


def _load():
    if _state["loaded"]:
        return _state["module"]
    _state["loaded"] = True
    try:
        from metaphys import _C  # noqa: F401  (registers torch.ops.metaphys.*)
        _state["module"] = _C
        from metaphys import _fake  # noqa: F401  (fake kernels + autograd for torch.library)
    except ImportError as exc:  # the extension was not built: fall back to the twins
        _state["error"] = exc
    return _state["module"]


def kernels_available() -> bool:
    """True when the compiled extension metaphys._C was built and imported."""
    return _load() is not None


def cuda_kernels_available() -> bool:
    mod = _load()
    return bool(mod is not None and getattr(mod, "with_cuda", lambda: False)())


def set_backend(name: str) -> None:
    """'auto' (kernels when built, else twins), 'kernel' (error if not built) or 'twin'."""
    if name not in ("auto", "kernel", "twin"):
        raise ValueError(f"backend must be 'auto', 'kernel' or 'twin', got {name!r}")
    _state["backend"] = name


def backend() -> str:
    return _state["backend"]


def _warn_once():
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            "metaphys: the compiled kernels (metaphys._C) are not built; using the PyTorch twins "
            f"(slower, same results). Build with `make build`. Import error: {_state['error']}",
            RuntimeWarning, stacklevel=3)


def use_kernel(name: str, u: torch.Tensor) -> bool:
    """Decide, for one call, whether op ``name`` runs as a compiled kernel."""
    mode = _state["backend"]
    if mode == "twin":
        return False
    mod = _load()
    if mod is None:
        if mode == "kernel":
            raise RuntimeError(f"metaphys kernel '{name}' requested but metaphys._C is not built "
                               f"({_state['error']}); run `make build`")
        _warn_once()
        return False
    if u.is_cuda and not cuda_kernels_available():
        if mode == "kernel":
            raise RuntimeError(f"'{name}' got CUDA tensors but metaphys._C was built without CUDA; "
                               "rebuild on a machine with a CUDA torch and toolkit, or use CPU tensors")
        return False  # the twin runs on any device
    if not hasattr(torch.ops.metaphys, name):
        return False  # not declared in this build
    key = "CUDA" if u.is_cuda else "CPU"
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"metaphys::{name}", key):
        return False  # declared but not implemented for this device in this build
    return True


def call(name: str, twin: Callable, *args):
    """Run op ``name`` (compiled if possible, else ``twin``) with identical arguments."""
    if use_kernel(name, args[0]):
        return getattr(torch.ops.metaphys, name)(*args)
    return twin(*args)


def differentiable_loss(name: str, twin: Callable, u: torch.Tensor, *args) -> torch.Tensor:
    """loss [N] whose autograd gradient w.r.t. ``u`` is the op's gradient (pseudo or true)."""
    return _LossFn.apply(u, name, twin, len(args), *args)


class _LossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, name, twin, n_extra, *args):
        loss, grad = call(name, twin, u.detach(), *args)
        ctx.save_for_backward(grad)
        ctx.n_extra = n_extra
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        shape = (-1,) + (1,) * (grad.dim() - 1)
        return (grad_loss.reshape(shape) * grad, None, None, None) + (None,) * ctx.n_extra
