"""The Metamizer's U-Net backbone (float32): 4 down / 4 up levels, bilinear upsampling.

DoubleConv = (Conv3x3 -> BatchNorm -> ReLU) x 2; Down = MaxPool2 -> DoubleConv; Up = bilinear x2
(align_corners=True) -> zero-pad to the skip's size -> cat[skip, up] -> DoubleConv with mid =
in/2. Two heads: a 1x1 conv giving the direction field o_d [N,1,H,W], and a scalar o_s [N,1]
from the global spatial max of the bottleneck through a Linear layer. ``padding_mode`` is
"zeros" (default, the paper's evaluated model) or "circular", the same in training and inference.
Works for any H, W >= 16.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int, mid: int, padding_mode: str):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1, padding_mode=padding_mode),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, padding_mode=padding_mode),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.block(x)


class Down(nn.Module):
    def __init__(self, cin: int, cout: int, padding_mode: str):
        super().__init__()
        self.conv = DoubleConv(cin, cout, cout, padding_mode)

    def forward(self, x):
        return self.conv(F.max_pool2d(x, 2))


class Up(nn.Module):
    def __init__(self, cin: int, cout: int, padding_mode: str):
        super().__init__()
        self.conv = DoubleConv(cin, cout, cin // 2, padding_mode)

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        dy = skip.shape[2] - x.shape[2]
        dx = skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    def __init__(self, hidden: int = 20, in_channels: int = 3, padding_mode: str = "zeros"):
        super().__init__()
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(f"padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
        h = hidden
        self.hidden = hidden
        self.padding_mode = padding_mode
        self.inc = DoubleConv(in_channels, h, h, padding_mode)
        self.down1 = Down(h, 2 * h, padding_mode)
        self.down2 = Down(2 * h, 4 * h, padding_mode)
        self.down3 = Down(4 * h, 8 * h, padding_mode)
        self.down4 = Down(8 * h, 8 * h, padding_mode)
        self.up1 = Up(16 * h, 4 * h, padding_mode)
        self.up2 = Up(8 * h, 2 * h, padding_mode)
        self.up3 = Up(4 * h, h, padding_mode)
        self.up4 = Up(2 * h, h, padding_mode)
        self.outc = nn.Conv2d(h, 1, 1)
        self.scalar_head = nn.Linear(8 * h, 1)

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        o_s = self.scalar_head(torch.amax(x5, dim=(2, 3)))
        y = self.up1(x5, x4)
        y = self.up2(y, x3)
        y = self.up3(y, x2)
        y = self.up4(y, x1)
        return self.outc(y), o_s


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
