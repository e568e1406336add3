"""Faster Metamizer inference on CPU: a frozen, layout-tuned module with the same forward contract.

``optimize_for_inference(model)`` takes the shipped TorchScript weights (``load_torchscript``), a
``MetamizerNet`` (BatchNorm folded or not) or an earlier result of this function, and returns a
frozen TorchScript module with the weights contract of ``metaphys.optim.metamizer``:

    forward(grad f64 [N,1,H,W], prev_grad f64 [N,1,H,W], prev_step f64 [N,1,H,W], scale f64 [N])
        -> (step f64 [N,1,H,W], new_scale f64 [N])

What it changes (measured in benchmarks/profile_iteration.py, results in benchmarks/results/profile.md):

* **Frozen graph** (``torch.jit.freeze``): weights become constants (BatchNorm folded) and the
  training-only branch (head-gradient normalizer) and attribute lookups disappear.
* **channels_last** weights and input (``channels_last=True``, default): oneDNN's preferred
  layout for few channels; the convolutions, ReLUs, pooling, upsampling and concatenations all
  stay in it, with no reorder between layers. On the 2-core AMD EPYC (Zen 4) this is the fastest
  float32 setting: 1.4x less CPU time per forward than the shipped module at 100^2 and 400^2.
* Optional oneDNN prepacking (``mkldnn=True``, float32 only): ``torch.jit.optimize_for_inference``
  converts every convolution to a prepacked oneDNN op (also the coarse-level ones that eager
  PyTorch runs on its im2col path), but converts the tensors to oneDNN's blocked format and back
  around every other op; measured ~20 % slower than channels_last here, so off by default.
* **Fused input normalization**: both gradients share one reciprocal RMS, the soft clamp runs as
  one float32 ``tanh`` over the three stacked channels after the float64 division (the ratio is
  formed in float64 so 1e-40-sized gradients do not underflow), and nothing is concatenated in
  float64.
* **Optional bfloat16** network (``dtype=torch.bfloat16``): on CPUs with native bf16 (AVX512-BF16
  or AMX) the convolutions run ~2-3x faster. The steps then differ from the float32 network by
  ~1e-2 relative (bf16 has 8 mantissa bits); the physics, the state and the scale stay float64.
  Opt-in only: it does *not* reproduce the float32 steps, check convergence on your problems.

With the default float32 settings the steps equal the plain module's to ~1e-6 relative (oneDNN
sums in a different order; tests/test_optim_fast.py). Thread count is the caller's choice
(``torch.set_num_threads``); on a machine whose other cores are busy, one thread is fastest.

``FastMetamizer`` is ``Metamizer`` with such a module; it plugs into ``solve``/``iterate``/
``TimeStepper`` unchanged.
"""
from __future__ import annotations

import copy
import math
import os
import warnings
from typing import Optional, Tuple

import torch
from torch import nn

from metaphys.optim.metamizer import INITIAL_SCALE, Metamizer, MetamizerNet
from metaphys.optim.unet import UNet, fold_batchnorm

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)


def normalize_inputs(grad: torch.Tensor, prev_grad: torch.Tensor, prev_step: torch.Tensor) -> torch.Tensor:
    """The network input [N,3,H,W] float32: 10*tanh(x/(10*rho)) of (grad, prev_grad) with rho the
    current gradient RMS and of prev_step with its own RMS (rho floored at 1e-40/sqrt(HW)).

    The ratio is formed in float64 (gradients of 1e-40 stay representable), ``tanh`` runs in
    float32 on the stacked channels (equal to the float64 soft clamp rounded to float32 to ~1 ulp)."""
    n = grad.shape[0]
    root = math.sqrt(float(grad.shape[-1] * grad.shape[-2]))
    inv_g = (0.1 * root) / torch.linalg.vector_norm(grad.reshape(n, -1), 2.0, dim=1).clamp_min(1e-40)
    inv_s = (0.1 * root) / torch.linalg.vector_norm(prev_step.reshape(n, -1), 2.0, dim=1).clamp_min(1e-40)
    ratio = torch.cat([grad * inv_g.view(-1, 1, 1, 1), prev_grad * inv_g.view(-1, 1, 1, 1),
                       prev_step * inv_s.view(-1, 1, 1, 1)], dim=1)
    return torch.tanh(ratio.to(torch.float32)).mul_(10.0)


class FastMetamizerNet(nn.Module):
    """MetamizerNet's forward with the fused normalization; ``unet`` is float32 or bfloat16."""

    def __init__(self, unet: nn.Module, dtype: torch.dtype = torch.float32, channels_last: bool = True):
        super().__init__()
        self.unet = unet
        self.channels_last = bool(channels_last)
        # the network dtype, as a buffer so it survives scripting and becomes a constant when frozen
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype), persistent=False)

    def forward(self, grad: torch.Tensor, prev_grad: torch.Tensor, prev_step: torch.Tensor,
                scale: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = normalize_inputs(grad, prev_grad, prev_step)
        if self.dtype_probe.dtype != torch.float32:
            x = x.to(self.dtype_probe.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        o_d, o_s = self.unet(x)
        d = torch.tanh(o_d.to(torch.float64))
        lam = 2.0 * torch.tanh(o_s.to(torch.float64).view(-1) / 2.0) - 1.0
        new_scale = scale * torch.exp(lam)
        return new_scale.view(-1, 1, 1, 1) * d.contiguous(), new_scale


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def eager_from_any(model) -> MetamizerNet:
    """An eager, eval-mode MetamizerNet with BatchNorm folded, from a MetamizerNet or a
    TorchScript module with its weights (the shipped ``metamizer.pt`` or a scripted net)."""
    if isinstance(model, MetamizerNet):
        net = copy.deepcopy(model).cpu().eval()
        net.normalize_head_gradients = False
        if _has_batchnorm(net.unet):
            fold_batchnorm(net.unet)
        return net
    if isinstance(model, torch.jit.ScriptModule):
        sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if "unet.inc.block.0.weight" not in sd:
            raise TypeError("the TorchScript module does not hold MetamizerNet weights "
                            "(no unet.inc.block.0.weight); already frozen? pass the loaded weights")
        hidden = int(sd["unet.inc.block.0.weight"].shape[0])
        padding = "zeros"
        try:
            padding = str(model.padding_mode)
        except (AttributeError, RuntimeError):
            pass
        net = MetamizerNet(hidden=hidden, padding_mode=padding).eval()
        if "unet.inc.block.1.running_mean" not in sd:  # shipped weights: BatchNorm already folded
            fold_batchnorm(net.unet)
            net.load_state_dict(sd)
        else:
            net.load_state_dict(sd)
            fold_batchnorm(net.unet)
        return net.eval()
    raise TypeError(f"expected a MetamizerNet or its TorchScript module, got {type(model).__name__}")


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    for cat in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", message=r".*(TorchScript|torch\.jit).*", category=cat)
    return ctx


def optimize_for_inference(model, *, dtype: torch.dtype = torch.float32, channels_last: bool = True,
                           mkldnn: bool = False, freeze: bool = True, device=None):
    """A frozen TorchScript module with the MetamizerNet forward contract (see the module doc).

    dtype: torch.float32 (default; same steps as ``model`` to ~1e-6) or torch.bfloat16 (opt-in).
    mkldnn: prepack the convolutions for oneDNN (``torch.jit.optimize_for_inference``); default
    False (slower than channels_last on the CPUs measured); float32 on CPU only, ignored otherwise.
    freeze: False returns the scripted module unfrozen (for debugging).
    """
    if getattr(model, "_metaphys_fast", False):
        return model
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    net = eager_from_any(model)
    unet: UNet = net.unet.to(dtype)
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    fast = FastMetamizerNet(unet, dtype=dtype, channels_last=channels_last).to(device).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    ctx = _quiet()
    try:
        scripted = torch.jit.script(fast)
        if not freeze:
            return scripted
        frozen = torch.jit.freeze(scripted.eval())
        if mkldnn and dtype == torch.float32 and device.type == "cpu" and torch.backends.mkldnn.is_available():
            frozen = torch.jit.optimize_for_inference(frozen)
    finally:
        ctx.__exit__(None, None, None)
    try:
        frozen._metaphys_fast = True
    except (AttributeError, RuntimeError):  # some TorchScript builds refuse new attributes
        pass
    return frozen


def native_bf16() -> bool:
    """True if this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX-BF16; Linux only)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


class FastMetamizer(Metamizer):
    """``Metamizer`` driving an ``optimize_for_inference`` module (same steps, faster on CPU).

    model: as for ``Metamizer`` (default: the shipped weights). The options are passed to
    ``optimize_for_inference``. Thread count stays the caller's (``torch.set_num_threads``).
    """

    name = "metamizer-fast"

    def __init__(self, model=None, initial_scale: float = INITIAL_SCALE, device=None, *,
                 dtype: torch.dtype = torch.float32, channels_last: bool = True, mkldnn: bool = False):
        if model is None:
            from metaphys.optim.weights_file import load_default_model
            model = load_default_model()
        fast = optimize_for_inference(model, dtype=dtype, channels_last=channels_last, mkldnn=mkldnn,
                                      device=device)
        super().__init__(fast, initial_scale=initial_scale, device=None)
        self.dtype = dtype


def threads_hint() -> int:
    """Cores this process may use minus those kept busy by other processes (1-minute load), >= 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, int(round(cores - busy))))
