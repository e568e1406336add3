"""The shipped weights file: where it is, its checksum and loading it (verified against the JSON
beside it). Below the Metamizer (which loads the default weights) and ``weights`` (export,
conversions, self-test), so neither imports the other."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Optional

import torch

DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "weights", "metamizer.pt")


class WeightsError(RuntimeError):
    """Missing, corrupted or mismatching weights; the message names the file."""


def default_weights_path() -> str:
    return os.environ.get("METAPHYS_WEIGHTS", DEFAULT_WEIGHTS)


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def metadata_path(pt_path: str) -> str:
    return os.path.splitext(pt_path)[0] + ".json"


def quiet_torchscript():
    """TorchScript is deprecated upstream and warns on use; hide only those warnings."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=UserWarning)
    return ctx


def load_torchscript(path: Optional[str] = None, verify: bool = True, map_location="cpu"):
    """Load shipped weights; verify the sha256 recorded in the JSON beside them."""
    path = path or default_weights_path()
    if not os.path.exists(path):
        raise WeightsError(f"Metamizer weights not found: {path}. Train them (`metaphys train`) or set "
                           "METAPHYS_WEIGHTS to a metamizer.pt")
    if verify:
        mpath = metadata_path(path)
        if not os.path.exists(mpath):
            raise WeightsError(f"metadata file {mpath} (with the sha256 of {path}) is missing")
        with open(mpath) as fh:
            expected = json.load(fh).get("sha256")
        actual = sha256_of(path)
        if expected != actual:
            raise WeightsError(f"checksum mismatch for {path}: metadata {mpath} records {expected}, "
                               f"file has {actual}; the weights file is corrupted or was replaced")
    ctx = quiet_torchscript()
    try:
        return torch.jit.load(path, map_location=map_location)
    except (RuntimeError, ValueError, OSError) as exc:  # truncated / not a TorchScript archive
        raise WeightsError(f"cannot load the Metamizer weights {path}: not a readable TorchScript file "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                           "re-export it with `metaphys export-weights`") from None
    finally:
        ctx.__exit__(None, None, None)


def load_metadata(path: Optional[str] = None) -> dict:
    with open(metadata_path(path or default_weights_path())) as fh:
        return json.load(fh)


def load_default_model(device=None):
    return load_torchscript(map_location=device or "cpu")
