"""The weights contract: TorchScript export, checksummed loading, checkpoint conversions.

``weights/metamizer.pt`` is a TorchScript MetamizerNet (eval mode, BatchNorm folded) with
forward(grad, prev_grad, prev_step, scale) -> (step, new_scale); ``weights/metamizer.json``
beside it records architecture, padding mode, training summary and the .pt's sha256, which is
verified at load. The 3-D network (issue #28, ``MetamizerNet(dims=3)``) ships the same way in its
own file, ``weights/metamizer3d.pt`` + ``.json`` (``DEFAULT_WEIGHTS_3D``), with fields [N,1,D,H,W].
"""
from __future__ import annotations

import copy
import io
import json
import os
import re
from typing import Optional

import torch

from metaphys.io.atomic import atomic_write_bytes, atomic_write_text
from metaphys.optim.metamizer import MetamizerNet
from metaphys.optim.unet import fold_batchnorm
from metaphys.optim.weights_file import (DEFAULT_WEIGHTS, DEFAULT_WEIGHTS_3D, WeightsError, default_weights_path,
                                         is_torchscript, load_default_model, load_metadata, load_plain, load_torchscript,
                                         metadata_path, quiet_torchscript, sha256_of)

# the file functions stay importable from here (their public home before weights_file.py)
__all__ = ["DEFAULT_WEIGHTS", "DEFAULT_WEIGHTS_3D", "WeightsError", "default_weights_path", "load_default_model",
           "load_metadata",
           "load_torchscript", "metadata_path", "sha256_of", "script_model", "export_torchscript",
           "load_plain", "is_torchscript", "load_snapshot",
           "unfold_torchscript_state", "load_state_dict_any", "model_from_snapshot", "self_test_problem",
           "self_test", "SELF_TEST_SIZE", "SELF_TEST_ITERATIONS", "SELF_TEST_REDUCTION"]


def script_model(model: MetamizerNet) -> torch.jit.ScriptModule:
    m = copy.deepcopy(model).cpu().eval()
    m.normalize_head_gradients = False
    fold_batchnorm(m.unet)
    ctx = quiet_torchscript()
    try:
        return torch.jit.script(m)
    finally:
        ctx.__exit__(None, None, None)


def export_torchscript(model: MetamizerNet, path: str, metadata: Optional[dict] = None) -> dict:
    """Script (eval, BatchNorm folded), save atomically, write the metadata JSON with the sha256."""
    scripted = script_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # saved in memory, then written atomically: saved to the temp file directly, the archive's folder took
    # the temp file's random name, so two exports of the same snapshot had different sha256s and an
    # eval of one export did not describe another. (Same bytes within one process only: across processes
    # TorchScript orders a module's constants by Python's string hash and stamps a new serialization id.)
    buffer = io.BytesIO()
    ctx = quiet_torchscript()
    try:
        torch.jit.save(scripted, buffer)
    finally:
        ctx.__exit__(None, None, None)
    atomic_write_bytes(path, buffer.getvalue())
    dims = int(getattr(model, "dims", 2))
    f, sizes, arch = (("[N,1,H,W]", "H, W >= 16", "unet4-bilinear") if dims == 2 else
                      ("[N,1,D,H,W]", "D, H, W >= 16", "unet4-trilinear-3d"))
    meta = {"format": "metaphys-metamizer-torchscript/1",
            "contract": f"forward(grad f64 {f}, prev_grad f64 {f}, prev_step f64 {f}, "
                        f"scale f64 [N]) -> (step f64 {f}, new_scale f64 [N]); u <- u + step; "
                        f"fresh problem: prev_grad = prev_step = 0, scale = 0.05; {sizes}",
            "architecture": arch, "hidden": model.hidden, "padding_mode": model.padding_mode,
            "parameters": sum(p.numel() for p in model.parameters()),
            "initial_scale": 0.05}
    if dims != 2:  # the 2-D card keeps its fields as they were
        meta["dims"] = dims
    meta.update(metadata or {})
    meta["sha256"] = sha256_of(path)
    atomic_write_text(metadata_path(path), json.dumps(meta, indent=2, sort_keys=True))
    return meta


def unfold_torchscript_state(ts_state: dict) -> dict:
    """MetamizerNet state dict from a shipped TorchScript's (BatchNorm folded into the convs).

    The folded conv keeps its weight and gains a bias; each BatchNorm becomes the identity in eval
    mode (weight 1, bias 0, mean 0, var 1 - eps). Training from it needs ``freeze_batchnorm``:
    batch statistics would change the function the weights encode.
    """
    out = {}
    eps = 1e-5
    for key, value in ts_state.items():
        m = re.match(r"(.*\.block)\.(0|3)\.(weight|bias)$", key)
        if m is None:
            out[key] = value
            continue
        prefix, conv, kind = m.groups()
        out[key] = value
        if kind == "weight":
            bn = f"{prefix}.{int(conv) + 1}"
            c = value.shape[0]
            out[f"{bn}.weight"] = torch.ones(c)
            out[f"{bn}.bias"] = torch.zeros(c)
            out[f"{bn}.running_mean"] = torch.zeros(c)
            out[f"{bn}.running_var"] = torch.full((c,), 1.0 - eps)
            out[f"{bn}.num_batches_tracked"] = torch.tensor(0)
    return out


def _torchscript_state(path: str) -> dict:
    """The MetamizerNet state dict of a shipped TorchScript file (TorchScript carries no Python pickles)."""
    ctx = quiet_torchscript()
    try:
        ts = torch.jit.load(path, map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise WeightsError(f"cannot load {path}: a damaged TorchScript archive ({type(exc).__name__})") from None
    finally:
        ctx.__exit__(None, None, None)
    return unfold_torchscript_state({k: v.detach().clone() for k, v in ts.state_dict().items()})


def load_snapshot(path: str) -> dict:
    """A training checkpoint or EMA snapshot as plain data, loaded without unpickling objects (a
    snapshot someone sends you cannot run code); WeightsError names the file otherwise."""
    sd = load_plain(path, "training snapshot")
    if not isinstance(sd, dict) or not any(k in sd for k in ("ema", "model")):
        raise WeightsError(f"{path} is not a metaphys training snapshot or checkpoint (expected a dict with "
                           f"'ema' or 'model', got {type(sd).__name__})")
    return sd


def _network_state(sd) -> dict:
    """The network weights inside a loaded checkpoint (its EMA), snapshot or raw state dict."""
    if isinstance(sd, dict) and "ema" in sd:
        return sd["ema"]
    if isinstance(sd, dict) and "model" in sd:
        return sd["model"]
    return sd


def load_state_dict_any(path: str) -> dict:
    """Network weights from a training checkpoint (EMA), an EMA snapshot, a raw state dict, or a
    shipped TorchScript file (unfolded: see ``unfold_torchscript_state``). Never unpickles objects."""
    if is_torchscript(path):
        return _torchscript_state(path)
    sd = _network_state(load_plain(path, "weights"))
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} holds a {type(sd).__name__}, not network weights (a state dict)")
    return sd


def model_from_snapshot(path: str) -> MetamizerNet:
    """The MetamizerNet (eval mode) of a training checkpoint or EMA snapshot."""
    sd = load_snapshot(path)
    config = sd.get("config") if isinstance(sd.get("config"), dict) else {}
    model = MetamizerNet(hidden=sd.get("hidden") or config.get("hidden", 20),
                         padding_mode=sd.get("padding_mode") or config.get("padding_mode", "zeros"),
                         dims=int(sd.get("dims") or config.get("dims", 2)))
    try:
        model.load_state_dict(_network_state(sd))
    except (RuntimeError, TypeError, ValueError) as exc:  # other network or shapes: name the file
        raise WeightsError(f"{path} does not hold weights of this network ({str(exc).splitlines()[0][:200]})") from None
    return model.eval()


# ---- self-test at load ----------------------------------------------------------------------------------
# A checksum only proves the file is the one its JSON names; weights with NaN parameters, or untrained
# ones exported with a matching checksum, pass it and then leave every simulation frozen. The self-test
# runs the weights on a fixed problem with a known answer: Laplace on 32^2 (the smallest grid the
# 4-level U-Net solves; at 16^2 even good weights stall) with the bilinear boundary values of the eval
# case, whose exact discrete solution is the bilinear field itself. Shipped weights reduce its MSR by
# ~1e-7 in 12 iterations (~25 ms warm); untrained weights leave it at ~1 x the start.
SELF_TEST_SIZE = 32
SELF_TEST_ITERATIONS = 12
SELF_TEST_REDUCTION = 1e-4  # the MSR after the iterations must be <= this x the starting MSR
_SELF_TESTS: dict = {}       # sha256 -> None (passed) or the failure message, per process


def self_test_problem(device=None):
    """The fixed self-test problem: 32^2 Laplace, 2-cell Dirichlet frame, b = (j/W)(i/H)."""
    from metaphys.physics.laplace import bilinear_laplace
    return bilinear_laplace(SELF_TEST_SIZE, device=device)


def _model_device(optimizer):
    model = getattr(optimizer, "model", optimizer)
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError, RuntimeError):
        return torch.device("cpu")


def self_test(optimizer, sha256: Optional[str] = None, source: str = "the Metamizer weights") -> None:
    """Raise WeightsError unless ``optimizer`` (a Metamizer) solves the fixed self-test problem to
    SELF_TEST_REDUCTION x its starting residual in SELF_TEST_ITERATIONS iterations. ``source`` names
    the weights in the message; with ``sha256`` the verdict is cached for the process."""
    if sha256 is not None and sha256 in _SELF_TESTS:
        if _SELF_TESTS[sha256] is not None:
            raise WeightsError(_SELF_TESTS[sha256])
        return
    from metaphys.optim.solve import DivergenceError, iterate
    what = (f"the weights {source} cannot solve: on the self-test (Laplace {SELF_TEST_SIZE}x{SELF_TEST_SIZE}, "
            f"{SELF_TEST_ITERATIONS} iterations, must reach {SELF_TEST_REDUCTION:g} x the starting residual)")
    fix = "; they are untrained, corrupted or NaN: use trained weights (the shipped weights/metamizer.pt)"
    problem = self_test_problem(_model_device(optimizer))
    u = problem.initial_guess()
    start = float(problem.residual(u).max())
    failure = None
    try:
        with torch.no_grad():
            res = iterate(problem, optimizer, u, optimizer.init_state(tuple(u.shape), device=u.device),
                          iterations=SELF_TEST_ITERATIONS)
        end = float(res.residual.max())
        if not end == end or end > SELF_TEST_REDUCTION * start:  # NaN compares false: caught by the first test
            failure = f"{what} the residual went from {start:.3e} to {end:.3e}{fix}"
    except DivergenceError as exc:
        failure = f"{what} {str(exc).split(';')[0]}{fix}"  # not the solver's "enable the guard" advice
    except (RuntimeError, ValueError, TypeError) as exc:  # a forward() that breaks the contract
        failure = f"{what} the network failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}){fix}"
    if sha256 is not None:
        _SELF_TESTS[sha256] = failure
    if failure is not None:
        raise WeightsError(failure)
