"""Faster Metamizer inference on CPU: a frozen, layout-tuned module with the same forward contract.

``optimize_for_inference(model)`` takes the shipped TorchScript weights (``load_torchscript``), a
``MetamizerNet`` (BatchNorm folded or not) or an earlier result of this function, and returns a
frozen TorchScript module with the weights contract of ``metaphys.optim.metamizer``:

    forward(grad f64 [N,1,H,W], prev_grad f64 [N,1,H,W], prev_step f64 [N,1,H,W], scale f64 [N])
        -> (step f64 [N,1,H,W], new_scale f64 [N])

for a 2-D network, and the same on [N,1,D,H,W] fields for the 3-D one (``MetamizerNet(dims=3)``,
weights/metamizer3d.pt; issue #28); the module keeps ``dims`` and refuses fields of the other shape.

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
* **Lean levels** (``lean=True``, default, 2-D and 3-D): no zero-pad copy when the upsampled
  field already has the skip's size, the 1x1 output convolution as one matrix-vector product
  (PyTorch runs a one-channel conv3d on its im2col path after a layout copy).
* **3-D: every convolution through oneDNN, output channels packed** (``onednn``/``pack``, default
  on for 3-D only). PyTorch's own rule sends one-sample conv3d fields up to 32^3 to its im2col path
  (``OneDNNConv``: 5x faster forward for one sample at 32^3); the 3-D network has 8 channels at
  full resolution, half of oneDNN's AVX-512 output block, so two neighbouring x positions are
  computed as 16 channels (``pack_factor``): ~1.3x on the full-resolution convolutions. Measured
  in benchmarks/profile_iteration.py --part 3d (profile.md part 4; 2-core Intel Xeon, AVX-512, busy
  machine): forward 1.4-1.8x (batch 4, the smoke's channels) and 2.8-6x (batch 1) less CPU time
  than the shipped module at 16^3-64^3, the smoke-like solve() iteration 1.3-1.7x.
* **Fused input normalization**: both gradients share one reciprocal RMS, the soft clamp runs as
  one float32 ``tanh`` over the three stacked channels after the float64 division (the ratio is
  formed in float64 so 1e-40-sized gradients do not underflow), and nothing is concatenated in
  float64.
* **Optional bfloat16** network (``dtype=torch.bfloat16``): on CPUs with native bf16 (AVX512-BF16
  or AMX) the convolutions run ~2-3x faster. The steps then differ from the float32 network by
  ~1e-2 relative (bf16 has 8 mantissa bits); the physics, the state and the scale stay float64.
  Opt-in only: it does *not* reproduce the float32 steps, check convergence on your problems.

With the default float32 settings the steps equal the plain module's to ~1e-6 relative (oneDNN
sums in a different order; tests/test_optim_fast.py, tests/test_optim_fast3d.py). Thread count is
the caller's choice (``torch.set_num_threads``); on a machine whose other cores are busy, one
thread is fastest.

``FastMetamizer`` is ``Metamizer`` with such a module; it plugs into ``solve``/``iterate``/
``TimeStepper`` unchanged.
"""
from __future__ import annotations

import copy
import functools
import math
import os
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from metaphys.optim.metamizer import INITIAL_SCALE, Metamizer, MetamizerNet
from metaphys.optim.unet import UNet, fold_batchnorm

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)


def normalize_inputs(grad: torch.Tensor, prev_grad: torch.Tensor, prev_step: torch.Tensor) -> torch.Tensor:
    """The network input [N,3,*S] float32 (S = (H, W) or (D, H, W)): 10*tanh(x/(10*rho)) of (grad,
    prev_grad) with rho the current gradient RMS and of prev_step with its own RMS (rho floored at
    1e-40/sqrt(cells)).

    The ratio is formed in float64 (gradients of 1e-40 stay representable), ``tanh`` runs in
    float32 on the stacked channels (equal to the float64 soft clamp rounded to float32 to ~1 ulp).
    Works on the flattened cells, so one code serves every number of spatial dims."""
    n = grad.shape[0]
    g = grad.reshape(n, 1, -1)
    root = math.sqrt(float(g.shape[2]))
    inv_g = (0.1 * root) / torch.linalg.vector_norm(g, 2.0, dim=(1, 2)).clamp_min(1e-40)
    s = prev_step.reshape(n, 1, -1)
    inv_s = (0.1 * root) / torch.linalg.vector_norm(s, 2.0, dim=(1, 2)).clamp_min(1e-40)
    ratio = torch.cat([g * inv_g.view(-1, 1, 1), prev_grad.reshape(n, 1, -1) * inv_g.view(-1, 1, 1),
                       s * inv_s.view(-1, 1, 1)], dim=1)
    out = torch.tanh(ratio.to(torch.float32)).mul_(10.0)
    return out.view([n, 3] + list(grad.shape[2:]))


class FastMetamizerNet(nn.Module):
    """MetamizerNet's forward with the fused normalization; ``unet`` is float32 or bfloat16, of
    ``dims`` 2 or 3 (its own: the fields it takes are [N,1,H,W] or [N,1,D,H,W])."""

    def __init__(self, unet: nn.Module, dtype: torch.dtype = torch.float32, channels_last: bool = True):
        super().__init__()
        self.unet = unet
        self.dims = int(getattr(unet, "dims", 2))
        self.channels_last = bool(channels_last)
        # the network dtype, as a buffer so it survives scripting and becomes a constant when frozen
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype), persistent=False)

    def forward(self, grad: torch.Tensor, prev_grad: torch.Tensor, prev_step: torch.Tensor,
                scale: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if grad.dim() != self.dims + 2 or grad.shape[1] != 1:
            raise ValueError("the fields' shape does not fit this network: a 2-D network takes [N, 1, H, W] "
                             "fields, a 3-D network [N, 1, D, H, W]")
        if prev_grad.shape != grad.shape or prev_step.shape != grad.shape or scale.shape != grad.shape[:1]:
            raise ValueError("grad, prev_grad and prev_step must have one shape [N, 1, ...] and scale [N]")
        x = normalize_inputs(grad, prev_grad, prev_step)
        if self.dtype_probe.dtype != torch.float32:
            x = x.to(self.dtype_probe.dtype)
        if self.channels_last:
            # oneDNN's preferred layout for few channels (NHWC / NDHWC)
            if self.dims == 3:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            else:
                x = x.contiguous(memory_format=torch.channels_last)
        o_d, o_s = self.unet(x)
        d = torch.tanh(o_d.to(torch.float64)).contiguous()
        lam = 2.0 * torch.tanh(o_s.to(torch.float64).view(-1) / 2.0) - 1.0
        new_scale = scale * torch.exp(lam)
        return new_scale.view([-1] + [1] * (d.dim() - 1)) * d, new_scale


class LeanUp(nn.Module):
    """``unet.Up`` for inference: the same arithmetic without the copy that ``F.pad`` makes when the
    upsampled field already has the skip's size (every power-of-two grid, every level)."""

    def __init__(self, up: nn.Module):
        super().__init__()
        self.dims = int(up.dims)
        self.conv = up.conv

    def forward(self, x, skip):
        if self.dims == 3:
            x = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=True)
            dz = skip.shape[2] - x.shape[2]
            dy = skip.shape[3] - x.shape[3]
            dx = skip.shape[4] - x.shape[4]
            if dz != 0 or dy != 0 or dx != 0:
                x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2, dz // 2, dz - dz // 2])
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
            dy = skip.shape[2] - x.shape[2]
            dx = skip.shape[3] - x.shape[3]
            if dy != 0 or dx != 0:
                x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class PointwiseHead(nn.Module):
    """The 1x1 output convolution (C -> 1) as one matrix-vector product over the channels of the
    channels_last field: PyTorch sends a one-output-channel conv3d to its im2col path (after
    copying a channels_last input to the contiguous layout); measured 9 ms vs 0.4 ms at 4 x 32^3."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().reshape(-1).clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, y):
        rows = y.movedim(1, -1).reshape(-1, y.shape[1])   # a view for channels_last y
        return torch.addmv(self.bias, rows, self.weight).view([y.shape[0], 1] + list(y.shape[2:]))


VECTOR_FLOATS = 16   # float32 lanes of an AVX-512 register: oneDNN's output-channel block there


class OneDNNConv(nn.Module):
    """A zero-padded 3x3(x3) convolution always through oneDNN (``torch.mkldnn_convolution``), with
    ``pack`` neighbouring x positions computed as extra output channels.

    Why oneDNN always: PyTorch sends a batch-1 float32 convolution to its im2col path when N*C*D*H
    (2-D: N*C*H*W) is under 20480 values; for conv3d it leaves out the last dim, so a one-sample
    3-D field takes the im2col path at every level up to 32^3 (measured 41 ms vs ~6 ms for one
    8 -> 8 conv at 32^3).

    Why packing: oneDNN computes output channels in blocks of one vector register (16 floats with
    AVX-512), so a conv with 8 output channels costs as much as one with 16 (measured at 4 x 32^3:
    8 -> 8 23.7 ms, 8 -> 16 24.2 ms). With ``pack`` = k, the conv runs with stride k along x and a
    kernel k + 2 wide whose k output groups are the 3-wide kernel shifted by 0..k-1 cells: output
    channel s*C + c at x-block j is channel c at x = k*j + s. In channels_last memory that is
    exactly the [N, *S, C] layout of the plain output (a view, no copy); each value sums the same
    products (the extra taps are zeros). (k + 2)/3 more multiply-adds, measured 1.35x faster for
    the 8 -> 8 and 16 -> 8 convs at 32^3 with k = 2. A field whose width k does not divide runs the
    plain kernel."""

    def __init__(self, conv: nn.Module, pack: int = 1):
        super().__init__()
        dims = conv.weight.dim() - 2
        fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
        w = conv.weight.detach()
        self.weight = nn.Parameter(w.contiguous(memory_format=fmt), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.padding = list(conv.padding)
        self.ones = [1] * dims
        self.pack = int(pack)
        self.stride = [1] * (dims - 1) + [self.pack]
        kx = w.shape[-1]
        packed = w.new_zeros((self.pack, w.shape[0]) + tuple(w.shape[1:-1]) + (kx + self.pack - 1,))
        for shift in range(self.pack):
            packed[shift, ..., shift:shift + kx] = w
        self.packed_weight = nn.Parameter(packed.flatten(0, 1).contiguous(memory_format=fmt), requires_grad=False)
        self.packed_bias = nn.Parameter(self.bias.detach().repeat(self.pack), requires_grad=False)

    def forward(self, x):
        if self.pack == 1 or x.shape[-1] % self.pack != 0:
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.ones, self.ones, 1)
        o = torch.mkldnn_convolution(x, self.packed_weight, self.packed_bias, self.padding, self.stride,
                                     self.ones, 1)
        # [N, k*C, *S', W/k] -> [N, *S', W/k, k*C] -> [N, *S, C] (views for channels_last o) -> [N, C, *S]
        c = self.bias.shape[0]
        shape = [x.shape[0]] + list(x.shape[2:]) + [c]
        return o.movedim(1, -1).reshape(shape).movedim(-1, 1)


def pack_factor(out_channels: int) -> int:
    """x positions per oneDNN conv that fill a vector register's worth of output channels: 2 for 8
    channels on an AVX-512 CPU, else 1 (measured: no gain to find where a vector already fills)."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return 1
    if out_channels < VECTOR_FLOATS and VECTOR_FLOATS % out_channels == 0 and out_channels >= 4:
        return VECTOR_FLOATS // out_channels
    return 1


def _onednn_convs(module: nn.Module, pack: bool) -> None:
    for name, child in module.named_children():
        if (isinstance(child, (nn.Conv2d, nn.Conv3d)) and child.padding_mode == "zeros" and child.groups == 1
                and all(k == 3 for k in child.kernel_size) and all(p == 1 for p in child.padding)):
            setattr(module, name, OneDNNConv(child, pack_factor(child.out_channels) if pack else 1))
        else:
            _onednn_convs(child, pack)


def lean_unet(unet: UNet, onednn: bool = False, pack: bool = False) -> UNet:
    """``unet`` (an inference copy) with ``LeanUp`` levels and the ``PointwiseHead``; ``onednn``:
    every 3x3(x3) zero-padded convolution as ``OneDNNConv`` (``pack``: with ``pack_factor``)."""
    for name in ("up1", "up2", "up3", "up4"):
        setattr(unet, name, LeanUp(getattr(unet, name)))
    unet.outc = PointwiseHead(unet.outc)
    if onednn:
        _onednn_convs(unet, pack)
    return unet


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def eager_from_any(model) -> MetamizerNet:
    """An eager, eval-mode MetamizerNet with BatchNorm folded, from a MetamizerNet or a
    TorchScript module with its weights (the shipped ``metamizer.pt`` / ``metamizer3d.pt`` or a
    scripted net); 2-D or 3-D as ``model`` is."""
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
        dims = sd["unet.inc.block.0.weight"].dim() - 2   # conv2d [O,I,3,3] or conv3d [O,I,3,3,3]
        padding = "zeros"
        try:
            padding = str(model.padding_mode)
        except (AttributeError, RuntimeError):
            pass
        net = MetamizerNet(hidden=hidden, padding_mode=padding, dims=dims).eval()
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
                           mkldnn: bool = False, freeze: bool = True, device=None, lean: bool = True,
                           onednn: Optional[bool] = None, pack: Optional[bool] = None):
    """A frozen TorchScript module with the MetamizerNet forward contract (see the module doc).

    dtype: torch.float32 (default; same steps as ``model`` to ~1e-6) or torch.bfloat16 (opt-in).
    mkldnn: prepack the convolutions for oneDNN (``torch.jit.optimize_for_inference``); default
    False (slower than channels_last on the CPUs measured); float32 on CPU only, ignored otherwise.
    lean: the U-Net's levels without the zero-pad copy and its 1x1 head as a matrix-vector product
    (``lean_unet``). onednn: every 3x3(x3) convolution through oneDNN (``OneDNNConv``); pack: with
    ``pack_factor`` x positions per output-channel block. Both default to True for a 3-D network
    (measured 1.5-5x there) and False for a 2-D one (no gain measured); float32 on CPU only.
    freeze: False returns the scripted module unfrozen (for debugging).
    """
    if getattr(model, "_metaphys_fast", False):
        return model
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    net = eager_from_any(model)
    unet: UNet = net.unet.to(dtype)
    three_d = unet.dims == 3
    if lean:
        use = ((three_d and not mkldnn) if onednn is None else bool(onednn)) and dtype == torch.float32 \
            and device.type == "cpu" and torch.backends.mkldnn.is_available()
        unet = lean_unet(unet, onednn=use, pack=use and (three_d if pack is None else bool(pack)))
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last_3d if three_d else torch.channels_last)
    fast = FastMetamizerNet(unet, dtype=dtype, channels_last=channels_last).to(device).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    ctx = _quiet()
    try:
        scripted = torch.jit.script(fast)
        if not freeze:
            return scripted
        # `dims` stays readable (Metamizer.dims, the sims' check of the network's dimension)
        frozen = torch.jit.freeze(scripted.eval(), preserved_attrs=["dims"])
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

    model: as for ``Metamizer`` (a network, TorchScript weights or a path to them; default: the
    shipped weights, ``dims=3`` the 3-D network's). The options are passed to
    ``optimize_for_inference``. Thread count stays the caller's (``torch.set_num_threads``).
    """

    name = "metamizer-fast"

    def __init__(self, model=None, initial_scale: float = INITIAL_SCALE, device=None, *,
                 dtype: torch.dtype = torch.float32, channels_last: bool = True, mkldnn: bool = False,
                 dims: int = 2, onednn: Optional[bool] = None, pack: Optional[bool] = None):
        if model is None and dims == 3:
            from metaphys.optim.weights_file import DEFAULT_WEIGHTS_3D, load_torchscript
            model = load_torchscript(DEFAULT_WEIGHTS_3D)
        elif model is None:
            from metaphys.optim.weights_file import load_default_model
            model = load_default_model()
        elif isinstance(model, (str, os.PathLike)):
            from metaphys.optim.weights_file import load_torchscript
            model = load_torchscript(os.fspath(model))
        fast = optimize_for_inference(model, dtype=dtype, channels_last=channels_last, mkldnn=mkldnn,
                                      device=device, onednn=onednn, pack=pack)
        super().__init__(fast, initial_scale=initial_scale, device=None)
        self.dtype = dtype


@functools.lru_cache(maxsize=None)
def shipped_fast_module(dims: int, dtype: torch.dtype = torch.float32):
    """The fast module of the shipped weights of a ``dims``-D network (checksummed at load) in ``dtype``,
    built once per process (scripting and freezing take ~1 s; the frozen module holds no state)."""
    from metaphys.optim.weights_file import DEFAULT_WEIGHTS_3D, load_default_model, load_torchscript
    model = load_torchscript(DEFAULT_WEIGHTS_3D) if dims == 3 else load_default_model()
    return optimize_for_inference(model, dtype=dtype)


# the environment variable that picks the sims' network precision: "auto" (sim_network_dtype's choice),
# "float32" or "bfloat16"
NETWORK_DTYPE_ENV = "METAPHYS_NETWORK_DTYPE"
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def sim_network_dtype(dims: int) -> torch.dtype:
    """The precision of the network a ``dims``-D sim runs by default on CPU: bfloat16 for the 3-D network
    where the CPU has bf16 in hardware (``native_bf16``), else float32. Why only 3-D: the 3-D smoke's
    fluid step stops at its tolerance whatever the network's precision, and there the bf16 forward
    halves the network's time (4 x 64^3, one thread, AMX: 431 -> 218 ms) with the same iterations per
    frame: 1.34x (32^3) and 1.40x (64^3) less CPU per frame, benchmarks/results/smoke3d_precision*.md. ``METAPHYS_NETWORK_DTYPE`` = float32 / bfloat16 overrides
    it (bfloat16 without native bf16 is emulated: slower, not refused); anything else is a ValueError."""
    choice = os.environ.get(NETWORK_DTYPE_ENV, "auto").strip().lower() or "auto"
    if choice == "auto":
        return torch.bfloat16 if dims == 3 and native_bf16() else torch.float32
    if choice not in DTYPE_NAMES:
        raise ValueError(f"{NETWORK_DTYPE_ENV} must be auto, float32 or bfloat16, got {choice!r}")
    return DTYPE_NAMES[choice]


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
