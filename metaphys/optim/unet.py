"""The Metamizer's U-Net backbone (float32): 4 down / 4 up levels, bilinear upsampling.

DoubleConv = (Conv3x3 -> BatchNorm -> ReLU) x 2; Down = MaxPool2 -> DoubleConv; Up = bilinear x2
(align_corners=True) -> zero-pad to the skip's size -> cat[skip, up] -> DoubleConv with mid =
in/2. Two heads: a 1x1 conv giving the direction field o_d [N,1,H,W], and a scalar o_s [N,1]
from the global spatial max of the bottleneck through a Linear layer. ``padding_mode`` is
"zeros" (default, the paper's evaluated model) or "circular", the same in training and inference.
Works for any H, W >= 16.

Sides that are not a multiple of ``ALIGN`` (4) are zero-padded at their high end before the first
level and the output cropped back (zeros padding mode only; a circular network keeps its sides).
Why: an odd side at full or half resolution makes the upsampled features one cell short of the skip,
and the network alone stalled there (issue #29, benchmarks/results/network_sizes.md: 63², 99², 101²
at ~1e-10 after 50 plain iterations where 64² and 100² reach ~1e-30); padded, they reach ~1e-28 to
1e-32. A padded cell carries zero gradient, like a Dirichlet cell, which is what the network sees at
every border in training. Odd sides deeper in the pyramid (1/4, 1/8) cost nothing measurable, and
sides already a multiple of 4 run exactly as before. 2-D only: the shipped 3-D network solves odd
sides unpadded about as well as even ones and measured worse padded (3 held-out Laplace layouts, 50
plain iterations, mean log10 MSR: 33³ -21.4 unpadded / -17.7 padded, 35³ -20.4 / -13.8, 31³ -23.4 /
-22.2; 32³ -20.3 either way), so a 3-D U-Net has ``align`` 1.

``dims=3`` is the same design one dimension up (issue #28): Conv3d 3x3x3 / BatchNorm3d, MaxPool
2x2x2, trilinear x2 upsampling (align_corners=True), zero-pad to the skip's size along (D, H, W),
the scalar from the global max over (D, H, W); input [N,3,D,H,W], o_d [N,1,D,H,W]. Any D, H, W >= 16.
``dims=2`` (default) is the 2-D network unchanged (same modules, parameter names and arithmetic).
"""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn


ALIGN = 4   # sides are padded up to a multiple of this (see the module docstring)


def _check_dims(dims: int) -> int:
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    return dims


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int, mid: int, padding_mode: str, dims: int = 2):
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if _check_dims(dims) == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.block = nn.Sequential(
            conv(cin, mid, 3, padding=1, padding_mode=padding_mode),
            norm(mid),
            nn.ReLU(inplace=True),
            conv(mid, cout, 3, padding=1, padding_mode=padding_mode),
            norm(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.block(x)


class Down(nn.Module):
    def __init__(self, cin: int, cout: int, padding_mode: str, dims: int = 2):
        super().__init__()
        self.dims = dims
        self.conv = DoubleConv(cin, cout, cout, padding_mode, dims)

    def forward(self, x):
        if self.dims == 3:
            return self.conv(F.max_pool3d(x, 2))
        return self.conv(F.max_pool2d(x, 2))


class Up(nn.Module):
    def __init__(self, cin: int, cout: int, padding_mode: str, dims: int = 2):
        super().__init__()
        self.dims = dims
        self.conv = DoubleConv(cin, cout, cin // 2, padding_mode, dims)

    def forward(self, x, skip):
        if self.dims == 3:
            x = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=True)
            dz = skip.shape[2] - x.shape[2]
            dy = skip.shape[3] - x.shape[3]
            dx = skip.shape[4] - x.shape[4]
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2, dz // 2, dz - dz // 2])
            return self.conv(torch.cat([skip, x], dim=1))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        dy = skip.shape[2] - x.shape[2]
        dx = skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    def __init__(self, hidden: int = 20, in_channels: int = 3, padding_mode: str = "zeros", dims: int = 2):
        super().__init__()
        _check_dims(dims)
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(f"padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
        h = hidden
        self.hidden = hidden
        self.padding_mode = padding_mode
        self.dims = dims
        self.align = ALIGN if dims == 2 else 1   # the 3-D network measured worse padded (module docstring)
        self.inc = DoubleConv(in_channels, h, h, padding_mode, dims)
        self.down1 = Down(h, 2 * h, padding_mode, dims)
        self.down2 = Down(2 * h, 4 * h, padding_mode, dims)
        self.down3 = Down(4 * h, 8 * h, padding_mode, dims)
        self.down4 = Down(8 * h, 8 * h, padding_mode, dims)
        self.up1 = Up(16 * h, 4 * h, padding_mode, dims)
        self.up2 = Up(8 * h, 2 * h, padding_mode, dims)
        self.up3 = Up(4 * h, h, padding_mode, dims)
        self.up4 = Up(2 * h, h, padding_mode, dims)
        self.outc = nn.Conv2d(h, 1, 1) if dims == 2 else nn.Conv3d(h, 1, 1)
        self.scalar_head = nn.Linear(8 * h, 1)

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        sides: List[int] = x.shape[2:]
        pad: List[int] = []
        for s in sides:   # F.pad lists the last dimension first: (left, right) pairs from W backwards
            pad = [0, (self.align - s % self.align) % self.align] + pad
        # traced (the ONNX export): always pad, by amounts the trace computes from the input's sides
        padded = self.padding_mode == "zeros" and (torch.jit.is_tracing() or sum(pad) > 0)
        if padded:
            x = F.pad(x, pad)
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        if self.dims == 3:
            o_s = self.scalar_head(torch.amax(x5, dim=(2, 3, 4)))
        else:
            o_s = self.scalar_head(torch.amax(x5, dim=(2, 3)))
        y = self.up1(x5, x4)
        y = self.up2(y, x3)
        y = self.up3(y, x2)
        y = self.up4(y, x1)
        o_d = self.outc(y)
        if padded:
            for k in range(len(sides)):
                o_d = o_d.narrow(2 + k, 0, sides[k])
        return o_d, o_s


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the preceding conv (for the shipped TorchScript)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        if isinstance(module, DoubleConv):
            seq = module.block
            layers = list(seq)
            fused = [fuse_conv_bn_eval(layers[0], layers[1]), nn.Identity(), layers[2],
                     fuse_conv_bn_eval(layers[3], layers[4]), nn.Identity(), layers[5]]
            module.block = nn.Sequential(*fused)
    return model
