"""torch.library registrations that make the compiled ops first-class: fake (meta) kernels for
tracing/torch.compile and an autograd formula (d loss / d unknown = the op's gradient output).
Imported by metaphys._ops once metaphys._C has loaded."""
from __future__ import annotations

import torch

from metaphys.registry import KERNELS  # the unknown is always the first argument


def _fake(u, *args):
    return u.new_empty((u.shape[0],)), torch.empty_like(u)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.n_inputs = len(inputs)


def _backward(ctx, grad_loss, grad_grad):
    (grad,) = ctx.saved_tensors
    shape = (-1,) + (1,) * (grad.dim() - 1)
    return (grad_loss.reshape(shape) * grad,) + (None,) * (ctx.n_inputs - 1)


for _name in KERNELS:
    if hasattr(torch.ops.metaphys, _name):
        qual = f"metaphys::{_name}"
        torch.library.register_fake(qual)(_fake)
        torch.library.register_autograd(qual, _backward, setup_context=_setup_context)


# cloth_hessian (not a registry op: the Hessian beside cloth_loss_grad, metaphys/physics/cloth_hessian.py):
# blocks [N, 13, 3, 3, H, W]; no autograd formula (nothing differentiates through it)
if hasattr(torch.ops.metaphys, "cloth_hessian"):
    @torch.library.register_fake("metaphys::cloth_hessian")
    def _cloth_hessian_fake(a, *args):
        return a.new_empty((a.shape[0], 13, 3, 3, a.shape[2], a.shape[3]))
