"""The shipped weights file: where it is, its checksum and loading it (verified against the JSON
beside it). Below the Metamizer (which loads the default weights) and ``weights`` (export,
conversions, self-test), so neither imports the other.

``load_plain`` is the one way metaphys reads a ``torch.save`` file (snapshots, checkpoints, bake
states): tensors and plain values only, never pickled objects, because unpickling a file someone
sent you can run any code it carries."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
import zipfile
from typing import Optional

import torch

DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "weights", "metamizer.pt")
# the 3-D network's weights (issue #28): its own file, so the 2-D weights are untouched
DEFAULT_WEIGHTS_3D = os.path.join(os.path.dirname(DEFAULT_WEIGHTS), "metamizer3d.pt")


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


def is_torchscript(path: str) -> bool:
    """True for a TorchScript archive (a zip with ``constants.pkl``, as ``torch.jit.save`` writes):
    ``torch.jit.load`` reads those; ``load_plain`` refuses them."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.split("/", 1)[-1] == "constants.pkl" for name in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _refusal_reason(message: str) -> str:
    """Why torch's weights-only loader refused a file, from its error message."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f"it holds Python objects other than tensors and plain values (it asks for {m.group(1)})"
    return "it is not a torch.save file of tensors and plain values (a bare pickle, or damaged data)"


def load_plain(path: str, what: str = "file", map_location="cpu"):
    """``torch.load`` restricted to tensors and plain values (dict, list, str, numbers...): a file
    holding any other Python object is refused, never unpickled. ``what`` names the file's role in
    the messages (``WeightsError``, naming the file)."""
    if not os.path.isfile(path):
        raise WeightsError(f"{what} {path} not found")
    if is_torchscript(path):
        raise WeightsError(f"{what} {path} is a TorchScript archive (exported weights), not a file of "
                           "tensors and plain values; pass a training snapshot or checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _unreadable(path, what, exc) from None
        raise WeightsError(f"refusing to load {what} {path}: {_refusal_reason(str(exc))}, and unpickling that "
                           "could run code hidden in the file. metaphys writes only tensors and plain values, so "
                           "this file was made elsewhere or altered; use a file metaphys wrote") from None
    except Exception as exc:  # truncated or garbled: torch's zip/pickle readers raise many types for it
        raise _unreadable(path, what, exc) from None


def _unreadable(path: str, what: str, exc: Exception) -> WeightsError:
    first = str(exc).splitlines()[0][:160] if str(exc) else ""
    return WeightsError(f"{what} {path} is not a readable torch file ({type(exc).__name__}: {first}); "
                        "it is truncated, damaged or not a torch.save file")


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
