"""Optional ONNX export of the Metamizer for game engines (ONNX Runtime, Unity Sentis, Unreal NNE).

Same contract as the TorchScript weights: inputs grad, prev_grad, prev_step float64 [N,1,H,W]
(H, W >= 16, dynamic) and scale float64 [N]; outputs step float64 [N,1,H,W], new_scale [N].
The export traces the eager module rebuilt from the TorchScript weights' parameters.
"""
from __future__ import annotations

import warnings

import torch

from metaphys.io.atomic import atomic_path
from metaphys.optim.metamizer import MetamizerNet
from metaphys.optim.unet import fold_batchnorm


def _eager_from_scripted(scripted, hidden: int, padding_mode: str) -> MetamizerNet:
    model = MetamizerNet(hidden=hidden, padding_mode=padding_mode).eval()
    fold_batchnorm(model.unet)
    model.load_state_dict(scripted.state_dict())
    return model


def export_onnx(weights: str | None, out: str, opset: int = 17) -> str:
    from metaphys.optim.weights import default_weights_path, load_metadata, load_torchscript
    path = weights or default_weights_path()
    meta = load_metadata(path)
    model = _eager_from_scripted(load_torchscript(path), meta["hidden"], meta["padding_mode"])
    n, h, w = 2, 32, 32
    z = torch.zeros(n, 1, h, w, dtype=torch.float64)
    args = (torch.randn(n, 1, h, w, dtype=torch.float64), z, z, torch.full((n,), 0.05, dtype=torch.float64))
    axes = {"grad": {0: "N", 2: "H", 3: "W"}, "prev_grad": {0: "N", 2: "H", 3: "W"},
            "prev_step": {0: "N", 2: "H", 3: "W"}, "scale": {0: "N"}, "step": {0: "N", 2: "H", 3: "W"},
            "new_scale": {0: "N"}}
    with warnings.catch_warnings(), atomic_path(out) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, tmp, input_names=["grad", "prev_grad", "prev_step", "scale"],
                          output_names=["step", "new_scale"], dynamic_axes=axes, opset_version=opset, dynamo=False)
    return out
