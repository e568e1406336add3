"""The scale-invariant Metamizer (notes section 3) and its per-sample optimizer state.

``MetamizerNet`` is the product's weights contract (shipped as TorchScript):
    forward(grad, prev_grad, prev_step, scale) -> (step, new_scale)
grad/prev_grad/prev_step: float64 [N,1,H,W]; scale: float64 [N]; the caller applies u <- u + step.
Inputs are normalized in float64 (gradients by the *current* gradient RMS, the previous step by
its own RMS, both soft-clamped with 10*tanh(x/10)), the U-Net runs in float32, and the step is
formed in float64: d = tanh(o_d), lambda = 2*tanh(o_s/2) - 1, s = scale*exp(lambda), step = s*d.
The absolute scale never enters the network, which makes the optimizer invariant to the loss
scale and equivariant to the units of the unknown.

``Metamizer`` is the optimizer object used by solvers and simulations: it splits C channels into
C single-channel samples, holds the state as tensors (``MetamizerState``) and calls the network.

3-D (issue #28): ``MetamizerNet(dims=3)`` is the same contract on [N,1,D,H,W] fields (RMS over the
D*H*W cells, a 3-D U-Net); the state, the channel splitting, ``shrink`` and ``step`` work for any
number of spatial dims, so ``solve``/``iterate``, the subspace acceleration and the step guard run a
3-D problem unchanged. A network only takes fields of its own dimension (``Metamizer.init_state``
says so). 2-D is unchanged bit for bit.
"""

import math
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from metaphys.optim.gradnorm import normalize_gradient
from metaphys.optim.unet import UNet

RMS_FLOOR = 1e-40
SOFT_CLAMP = 10.0
INITIAL_SCALE = 0.05
MIN_SIZE = 16


def _rms(x: torch.Tensor) -> torch.Tensor:
    # max(||x||, 1e-40) / sqrt(H*W) per sample. The cell count comes from a tensor op (not a Python
    # int) so traced exports (ONNX) stay valid at every grid size; literals, not module constants,
    # because TorchScript cannot close over Python globals.
    count = torch.ones_like(x).flatten(1).sum(1)
    return torch.linalg.vector_norm(x.flatten(1), 2.0, dim=1).clamp_min(1e-40) / torch.sqrt(count)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[M] -> [M, 1, ...] broadcastable against ``like`` (2-D: the original view(-1, 1, 1, 1))."""
    if like.dim() == 4:
        return v.view(-1, 1, 1, 1)
    return v.view(-1, 1, 1, 1, 1)


def _soft(x: torch.Tensor, rms: torch.Tensor) -> torch.Tensor:
    return 10.0 * torch.tanh(x / (10.0 * _per_sample(rms, x)))


class MetamizerNet(nn.Module):
    """Normalization + float32 U-Net + step formation. See the module docstring for the contract."""

    def __init__(self, hidden: int = 20, padding_mode: str = "zeros", dims: int = 2):
        super().__init__()
        self.unet = UNet(hidden=hidden, in_channels=3, padding_mode=padding_mode, dims=dims)
        self.hidden = hidden
        self.padding_mode = padding_mode
        self.dims = dims
        # Training applies the backward-only gradient normalizer to both heads; never in export.
        self.normalize_head_gradients = False

    def network_input(self, grad, prev_grad, prev_step) -> torch.Tensor:
        rho_g = _rms(grad)
        x = torch.cat([_soft(grad, rho_g), _soft(prev_grad, rho_g), _soft(prev_step, _rms(prev_step))], dim=1)
        return x.to(torch.float32)

    def forward(self, grad: torch.Tensor, prev_grad: torch.Tensor, prev_step: torch.Tensor,
                scale: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        o_d, o_s = self.unet(self.network_input(grad, prev_grad, prev_step))
        d = torch.tanh(o_d.to(torch.float64))
        lam = 2.0 * torch.tanh(o_s.to(torch.float64).view(-1) / 2.0) - 1.0
        if self.normalize_head_gradients:
            d = self._normalize(d)
            lam = self._normalize(lam.view(-1, 1)).view(-1)
        new_scale = scale * torch.exp(lam)
        return _per_sample(new_scale, d) * d, new_scale

    @torch.jit.unused
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return normalize_gradient(x)


@dataclass
class MetamizerState:
    """Per single-channel sample: previous gradient, previous step [M,1,H,W] and scale [M]."""

    prev_grad: torch.Tensor
    prev_step: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fresh(cls, m: int, *spatial: int, device=None, initial_scale: float = INITIAL_SCALE):
        """``spatial``: (H, W) or (D, H, W)."""
        z = torch.zeros(m, 1, *spatial, dtype=torch.float64, device=device)
        return cls(z, z.clone(), torch.full((m,), float(initial_scale), dtype=torch.float64, device=device))

    def reset(self, which: torch.Tensor, initial_scale: float = INITIAL_SCALE) -> None:
        """Reset the samples selected by a bool mask or index tensor to the fresh state."""
        self.prev_grad[which] = 0
        self.prev_step[which] = 0
        self.scale[which] = initial_scale

    def select(self, idx):
        return MetamizerState(self.prev_grad[idx], self.prev_step[idx], self.scale[idx])

    def assign(self, idx, other: "MetamizerState") -> None:
        self.prev_grad[idx] = other.prev_grad
        self.prev_step[idx] = other.prev_step
        self.scale[idx] = other.scale

    def detached(self) -> "MetamizerState":
        return MetamizerState(self.prev_grad.detach(), self.prev_step.detach(), self.scale.detach())


def split_channels(x: torch.Tensor) -> torch.Tensor:
    """[N,C,*S] -> [N*C,1,*S], sample-major (sample 0 channel 0, sample 0 channel 1, ...); S = (H, W)
    or (D, H, W)."""
    n, c = x.shape[:2]
    return x.reshape(n * c, 1, *x.shape[2:])


def merge_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    m = x.shape[0]
    return x.reshape(m // channels, channels, *x.shape[2:])


class Metamizer:
    """The learned optimizer behind the common optimizer interface.

    ``init_state(shape)`` -> state for a [N,C,H,W] unknown; ``step(grad, state)`` -> (step, state).
    ``model`` is a MetamizerNet or a loaded TorchScript module with the same forward contract; without
    one, the shipped weights (``dims=3``: the 3-D network's, weights/metamizer3d.pt).
    """

    name = "metamizer"
    # the subspace acceleration (optim/accelerate.py) rescales the state to the step it took
    state_follows_taken_step = True

    def __init__(self, model: Optional[nn.Module] = None, initial_scale: float = INITIAL_SCALE,
                 device=None, dims: int = 2):
        if model is None and dims == 3:  # the 3-D network's shipped weights (issue #28)
            from metaphys.optim.weights_file import DEFAULT_WEIGHTS_3D, load_torchscript
            model = load_torchscript(DEFAULT_WEIGHTS_3D)
        elif model is None:
            from metaphys.optim.weights_file import load_default_model
            model = load_default_model()
        elif isinstance(model, (str, os.PathLike)):  # a path to TorchScript weights (checksummed)
            from metaphys.optim.weights_file import load_torchscript
            model = load_torchscript(os.fspath(model))
        elif not isinstance(model, nn.Module):
            raise TypeError(f"model must be a MetamizerNet, a TorchScript module or a path to weights, "
                            f"got {type(model).__name__}")
        self.model = model.to(device) if device is not None else model
        self.model.eval()
        self.initial_scale = float(initial_scale)

    @property
    def dims(self) -> int:
        """Spatial dims of the network's fields (2 for weights exported before 3-D networks existed)."""
        return int(getattr(self.model, "dims", 2))

    def init_state(self, shape, device=None) -> MetamizerState:
        n, c, *spatial = shape
        if len(spatial) != self.dims:
            kind = {2: "2-D [N, C, H, W]", 3: "3-D [N, C, D, H, W]"}
            raise ValueError(f"this Metamizer's network is {self.dims}-D but the unknown has shape {tuple(shape)}: "
                             f"it takes {kind.get(self.dims, self.dims)} fields"
                             + ("; 3-D problems need the 3-D network (weights/metamizer3d.pt)"
                                if len(spatial) == 3 else ""))
        if min(spatial) < MIN_SIZE:
            raise ValueError(f"the Metamizer needs grids of at least {'x'.join([str(MIN_SIZE)] * len(spatial))}, "
                             f"got {'x'.join(map(str, spatial))}")
        return MetamizerState.fresh(n * c, *spatial, device=device, initial_scale=self.initial_scale)

    @staticmethod
    def shrink(state: MetamizerState, factor: torch.Tensor) -> None:
        """Multiply each sample's scale by factor [N] (all its channels); used by the step guard."""
        c = state.scale.shape[0] // factor.shape[0]
        state.scale.mul_(factor.repeat_interleave(c))
        state.prev_step.mul_(_per_sample(factor.repeat_interleave(c), state.prev_step))

    @torch.no_grad()
    def step(self, grad: torch.Tensor, state: MetamizerState):
        c = grad.shape[1]
        g = split_channels(grad)
        step, scale = self.model(g, state.prev_grad, state.prev_step, state.scale)
        new_state = MetamizerState(g, step, scale)
        return merge_channels(step, c), new_state
