"""Weight averaging of EMA snapshots from one training run (stochastic weight averaging, a "soup").

Why: late snapshots of the CPU run each trade one case for another (a snapshot better on
Navier-Stokes is worse at 1000^2, the next the other way round); the uniform average of a stretch
of them is flatter and generalizes better than any single one (measured in the model card). The
average is written in the snapshot format, so `metaphys eval` and `metaphys export-weights`
take it like any snapshot, and it names its sources (file, step, sha256) so it can be rebuilt.
"""
from __future__ import annotations

import os
from typing import List, Sequence

import torch

from metaphys.io.atomic import atomic_path
from metaphys.optim.weights_file import WeightsError, load_plain, sha256_of


class AverageError(ValueError):
    """The snapshots cannot be averaged (missing, different networks, non-finite values)."""


def _load(path: str) -> dict:
    try:
        sd = load_plain(path, "snapshot")  # tensors and plain values only: a snapshot cannot run code
    except WeightsError as exc:
        raise AverageError(str(exc)) from None
    if not isinstance(sd, dict) or "ema" not in sd:
        raise AverageError(f"{path} is not an EMA snapshot of metaphys.train (expected a dict with 'ema'; "
                           "TorchScript weights and raw state dicts cannot be averaged here)")
    return sd


def _source(path: str, sd: dict) -> dict:
    """How the model card names one input; an input that is itself an average names its own
    sources (averaging an average with a snapshot is how a weighted mix is built)."""
    src = {"file": os.path.basename(path), "step": sd.get("step"), "sha256": sha256_of(path)}
    if sd.get("averaged_from"):
        src["averaged_from"] = sd["averaged_from"]
    return src


def average_snapshots(paths: Sequence[str], out: str) -> dict:
    """Uniform average of the snapshots' EMA weights (in float64, in step order), written to ``out``
    atomically. Integer buffers (BatchNorm's batch counter) are taken from the first snapshot.
    Returns the written dict (``averaged_from`` lists the sources)."""
    if len(paths) < 2:
        raise AverageError(f"averaging needs at least 2 snapshots, got {len(paths)}")
    snaps = sorted(((p, _load(p)) for p in paths), key=lambda ps: int(ps[1].get("step") or 0))
    first_path, first = snaps[0]
    for p, sd in snaps[1:]:
        for field in ("hidden", "padding_mode"):
            if sd.get(field) != first.get(field):
                raise AverageError(f"{p} has {field}={sd.get(field)!r} but {first_path} has "
                                   f"{first.get(field)!r}: only snapshots of one network can be averaged")
        if set(sd["ema"]) != set(first["ema"]):
            raise AverageError(f"{p} and {first_path} hold different parameters: not the same network")
    weight = 1.0 / len(snaps)
    ema = {}
    for name, ref in first["ema"].items():
        if not ref.is_floating_point():
            ema[name] = ref.clone()
            continue
        acc = sum(weight * sd["ema"][name].double() for _, sd in snaps)
        if not bool(torch.isfinite(acc).all()):
            bad = [p for p, sd in snaps if not bool(torch.isfinite(sd["ema"][name]).all())]
            raise AverageError(f"parameter {name} is not finite in {', '.join(bad) or 'the average'}")
        ema[name] = acc.to(ref.dtype)
    last = snaps[-1][1]
    result = {"ema": ema, "step": last.get("step"), "elapsed": last.get("elapsed"),
              "hidden": first.get("hidden"), "padding_mode": first.get("padding_mode"),
              "averaged_from": [_source(p, sd) for p, sd in snaps]}
    with atomic_path(out) as tmp:
        torch.save(result, tmp)
    return result


def snapshots_between(run_dir: str, first_step: int, last_step: int) -> List[str]:
    """The run's EMA snapshot files with first_step <= step <= last_step, in step order."""
    if not os.path.isdir(run_dir):
        raise AverageError(f"run directory {run_dir} not found")
    found = []
    for name in os.listdir(run_dir):
        if name.startswith("ema_step") and name.endswith(".pt"):
            try:
                step = int(name[len("ema_step"):-3])
            except ValueError:
                continue
            if first_step <= step <= last_step:
                found.append((step, os.path.join(run_dir, name)))
    if not found:
        raise AverageError(f"no ema_step*.pt in {run_dir} between steps {first_step} and {last_step}")
    return [p for _, p in sorted(found)]
