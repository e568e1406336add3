"""Bake manifests: JSON records of what a bake wrote, rewritten atomically after every frame.

``write_manifest`` writes strict JSON (sorted keys, indent 2, UTF-8, trailing newline): NaN and
Infinity are rejected with an error naming the offending key, numpy scalars/arrays and paths are
converted to plain JSON values.

``BakeManifest`` is the commit record of a bake. The protocol, which makes an interrupted
bake resumable:

1. write frame n's files (each atomically: ``pc2.PC2Writer.write``, ``meshseq.write_mesh``...);
2. ``manifest.add_frame(n, iterations=..., residual=...)`` rewrites the manifest atomically.

A crash between 1 and 2 leaves at most one frame on disk that the manifest does not list; on
resume, ``BakeManifest.resume(path, ...)`` gives ``frames_done``/``next_frame`` and the bake
overwrites (or, for a PC2 cache, truncates to ``frames_done`` with
``PC2Writer(..., resume=True, keep=manifest.frames_done)``) anything beyond. So the frames the
manifest lists are always on disk and complete.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import time
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from .atomic import PathLike, atomic_write_text

__all__ = ["write_manifest", "read_manifest", "to_jsonable", "sha256_file", "BakeManifest",
           "MANIFEST_SCHEMA"]

MANIFEST_SCHEMA = "metaphys.bake/1"


def to_jsonable(obj: Any, where: str = "$") -> Any:
    """Convert ``obj`` to plain JSON types; raise ValueError naming the first NaN/Inf (e.g. ``$.frames[3].residual``)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if not math.isfinite(x):
            raise ValueError(f"manifest value at {where} is {x}: NaN/Infinity are not valid JSON and are "
                             f"rejected (record a finite number, a string or null instead)")
        return x
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), where)
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise ValueError(f"manifest key at {where} must be a string, got {type(k).__name__} {k!r}")
            out[str(k)] = to_jsonable(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict(), where)
    raise ValueError(f"manifest value at {where} has type {type(obj).__name__}, which JSON cannot hold")


def dumps_manifest(data: dict) -> str:
    if not isinstance(data, dict):
        raise ValueError(f"a manifest must be a dict, got {type(data).__name__}")
    return json.dumps(to_jsonable(data), sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def write_manifest(path: PathLike, data: dict) -> None:
    """Write ``data`` as strict JSON (sorted keys, indent 2), atomically. NaN/Inf raise ValueError."""
    atomic_write_text(path, dumps_manifest(data))


def read_manifest(path: PathLike) -> dict:
    """Read a manifest: a JSON object, strictly (NaN/Infinity literals, duplicate keys, invalid or
    absurdly nested JSON raise ValueError naming the file)."""
    def _bad_constant(name):
        raise ValueError(f"{str(path)!r} holds {name}, which is not valid JSON")

    def _unique_keys(pairs):
        data = dict(pairs)
        if len(data) != len(pairs):
            seen = set()
            dupe = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise ValueError(f"{str(path)!r} repeats the key {dupe!r} in one object (invalid or edited by hand)")
        return data

    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh, parse_constant=_bad_constant, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{str(path)!r} is not valid JSON ({exc})") from None
        except RecursionError:
            raise ValueError(f"{str(path)!r} is nested too deeply to be a manifest") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{str(path)!r} is not UTF-8 text ({exc.reason})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (e.g. the model weights a bake used)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _frames_problem(frames, start_frame: int) -> str:
    """What is wrong with a manifest's "frames" ('' when it is a list of consecutive frame records)."""
    if not isinstance(frames, list):
        return f'"frames" must be a list of frame records, got {json.dumps(frames)[:40]}'
    for i, record in enumerate(frames):
        if not isinstance(record, dict):
            return f'"frames"[{i}] must be a frame record (an object), got {json.dumps(record)[:40]}'
        if record.get("frame") != start_frame + i or not _is_int(record.get("frame")):
            return (f'"frames"[{i}] is frame {json.dumps(record.get("frame"))[:40]}, expected {start_frame + i} '
                    f"(frames are numbered from start_frame {start_frame} without gaps)")
        for key in ("files", "sha256"):
            if key in record and not isinstance(record[key], dict):
                return f'"frames"[{i}].{key} must be an object, got {json.dumps(record[key])[:40]}'
    return ""


def _shape_problem(d: dict) -> str:
    """The first field of a manifest dict that does not have its type ('' when all do)."""
    start = d.get("start_frame", 1)
    if not _is_int(start):
        return f'"start_frame" must be an integer, got {json.dumps(start)[:40]}'
    for key in ("parameters", "outputs", "extra", "settings"):
        if d.get(key) is not None and not isinstance(d[key], dict):
            return f'"{key}" must be an object, got {json.dumps(d[key])[:40]}'
    for key in ("kind", "status"):
        if key in d and not isinstance(d[key], str):
            return f'"{key}" must be a string, got {json.dumps(d[key])[:40]}'
    return _frames_problem(d.get("frames", []), start)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _metaphys_version() -> str:
    try:
        from ..version import __version__
    except ImportError:  # metaphys.io loaded as a top-level package (the Blender tests' stub engine does)
        return "unknown"
    return __version__


class BakeManifest:
    """The manifest of one bake, saved atomically on every change.

    ``BakeManifest(path, kind="cloth", parameters={...}, model_sha256=..., outputs={...})``
    starts a new bake (and saves it, status "running"). ``BakeManifest.resume(path, ...)``
    continues one. After each frame's files are written, call ``add_frame``; at the end
    ``finish()`` (or ``fail(error)``/``finish('cancelled')``).

    Saved fields: ``schema, kind, status, parameters, model_sha256, metaphys_version, created,
    updated, start_frame, frames`` (list of ``{"frame", "iterations", "residual", "wall_s", ...}``:
    bakes store every StepRecord field), ``frames_done``, ``wall_time_s`` (sum of the frames'
    ``wall_s``, across resumes), ``outputs`` (name -> path, relative to the manifest's folder by
    convention), ``error``, ``extra``, ``settings`` (how the bake ran: format, threads, device;
    ``resume`` refuses different ones) and ``summary`` (derived from the frames: see ``summary()``).
    """

    def __init__(self, path: PathLike, kind: str = "bake", parameters: dict | None = None,
                 model_sha256: str | None = None, outputs: dict | None = None, start_frame: int = 1,
                 extra: dict | None = None, save: bool = True, settings: dict | None = None):
        self.path = Path(path)
        self.kind = str(kind)
        self.parameters = to_jsonable(dict(parameters or {}), "$.parameters")
        self.model_sha256 = model_sha256
        self.outputs = to_jsonable(dict(outputs or {}), "$.outputs")
        self.start_frame = int(start_frame)
        self.extra = to_jsonable(dict(extra or {}), "$.extra")
        self.settings = to_jsonable(dict(settings or {}), "$.settings")
        self.frames: list[dict] = []
        self.status = "running"
        self.error: str | None = None
        self.metaphys_version = _metaphys_version()
        self.created = _now()
        self.updated = self.created
        self._last_tick = time.monotonic()
        if save:
            self.save()

    # ---- loading / resuming -------------------------------------------------------------
    @classmethod
    def from_dict(cls, path: PathLike, d: dict) -> "BakeManifest":
        """The manifest ``d`` read from ``path``; ValueError naming the file when it is not a metaphys
        bake manifest or its fields do not have their types (a damaged or edited file)."""
        if not isinstance(d, dict) or d.get("schema") != MANIFEST_SCHEMA:
            schema = d.get("schema") if isinstance(d, dict) else None
            raise ValueError(f"{str(path)!r} is not a metaphys bake manifest (schema {schema!r}, "
                             f"expected {MANIFEST_SCHEMA!r})")
        problem = _shape_problem(d)
        if problem:
            raise ValueError(f"{str(path)!r} is damaged or was edited: {problem}")
        m = cls(path, kind=d.get("kind", "bake"), parameters=d.get("parameters"),
                model_sha256=d.get("model_sha256"), outputs=d.get("outputs"),
                start_frame=d.get("start_frame", 1), extra=d.get("extra"), save=False,
                settings=d.get("settings"))
        m.frames = list(d.get("frames", []))
        m.status = d.get("status", "running")
        m.error = d.get("error")
        m.metaphys_version = d.get("metaphys_version", m.metaphys_version)
        m.created = d.get("created", m.created)
        m.updated = d.get("updated", m.updated)
        return m

    @classmethod
    def load(cls, path: PathLike) -> "BakeManifest":
        return cls.from_dict(path, read_manifest(path))

    @classmethod
    def resume(cls, path: PathLike, parameters: dict | None = None, model_sha256: str | None = None,
               check: bool = True, settings: dict | None = None, kind: str | None = None,
               ignore: tuple = (), save: bool = True) -> "BakeManifest":
        """Load ``path`` to continue its bake; with ``check``, refuse if the kind, parameters (except
        the ``ignore`` keys), run settings (format, threads...) or model differ.

        Sets status back to "running", records the current metaphys version, saves, and returns
        the manifest: continue at ``next_frame`` (``frames_done`` frames are complete on disk).
        """
        m = cls.load(path)
        if check:
            problems = []
            if kind is not None and kind != m.kind:
                problems.append(f"it is a {m.kind} bake, not a {kind} bake")
            if parameters is not None:
                new = to_jsonable(dict(parameters), "$.parameters")
                for k in sorted((set(new) | set(m.parameters)) - set(ignore)):
                    if new.get(k, "<missing>") != m.parameters.get(k, "<missing>"):
                        problems.append(f"parameter {k!r}: manifest has {m.parameters.get(k, '<missing>')!r}, "
                                        f"resume asked for {new.get(k, '<missing>')!r}")
            for k, v in to_jsonable(dict(settings or {}), "$.settings").items():
                if k in m.settings and m.settings[k] != v:
                    how = (f"set the environment variable METAPHYS_NETWORK_DTYPE={m.settings[k]}" if k == "network_dtype"
                           else f"omit the option or pass {m.settings[k]!r}")
                    problems.append(f"{k}: the bake was written with {m.settings[k]!r}, resume asked for {v!r} "
                                    f"(a resumed bake must match it: {how})")
            if model_sha256 is not None and m.model_sha256 is not None and model_sha256 != m.model_sha256:
                problems.append(f"model sha256: manifest has {m.model_sha256}, resume asked for {model_sha256}")
            if problems:
                raise ValueError(f"cannot resume the bake of {str(path)!r}: " + "; ".join(problems))
        m.status = "running"
        m.error = None
        m.metaphys_version = _metaphys_version()
        m._last_tick = time.monotonic()
        if save:  # False: the caller saves once it knows the bake can continue
            m.save()
        return m

    # ---- frames ------------------------------------------------------------------------------
    @property
    def frames_done(self) -> int:
        """Number of complete frames (the first ``frames_done`` frames from ``start_frame``)."""
        return len(self.frames)

    @property
    def next_frame(self) -> int:
        return self.start_frame + len(self.frames)

    @property
    def wall_time_s(self) -> float:
        return float(sum(f.get("wall_s") or 0.0 for f in self.frames))

    def add_frame(self, frame: int | None = None, iterations: int | None = None, residual: float | None = None,
                  wall_s: float | None = None, **extra) -> None:
        """Record frame ``frame`` (default: ``next_frame``) as complete on disk and save atomically.

        Frames must be recorded in order without gaps. ``wall_s`` defaults to the time since the
        previous ``add_frame`` (or since start/resume). ``residual`` and every value must be
        finite: a ValueError is raised (and nothing saved) for NaN/Inf.
        """
        frame = self.next_frame if frame is None else int(frame)
        if frame != self.next_frame:
            raise ValueError(f"frames must be added in order: expected frame {self.next_frame}, got {frame}")
        now = time.monotonic()
        if wall_s is None:
            wall_s = now - self._last_tick
        rec = {"frame": frame, "iterations": None if iterations is None else int(iterations),
               "residual": residual, "wall_s": wall_s, **extra}
        rec = to_jsonable(rec, f"$.frames[{len(self.frames)}] (frame {frame})")
        self.frames.append(rec)
        try:
            self.save()
        except BaseException:
            self.frames.pop()
            raise
        self._last_tick = now

    def truncate(self, frames_done: int) -> None:
        """Keep only the first ``frames_done`` frames (e.g. to restart from an earlier frame) and save."""
        if not 0 <= int(frames_done) <= len(self.frames):
            raise ValueError(f"frames_done must be in [0, {len(self.frames)}], got {frames_done}")
        self.frames = self.frames[:int(frames_done)]
        self.status = "running"
        self.save()

    def set_output(self, name: str, path: PathLike) -> None:
        """Record an output file (stored as given; relative to the manifest folder by convention) and save."""
        self.outputs[str(name)] = to_jsonable(Path(path) if not isinstance(path, str) else path)
        self.save()

    def finish(self, status: str = "complete", error: str | None = None) -> None:
        if status not in ("complete", "failed", "cancelled", "running"):
            raise ValueError(f"status must be complete, failed, cancelled or running, got {status!r}")
        self.status = status
        self.error = error
        self.save()

    def fail(self, error: BaseException | str) -> None:
        self.finish("failed", error if isinstance(error, str) else f"{type(error).__name__}: {error}")

    # ---- saving ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": MANIFEST_SCHEMA, "kind": self.kind, "status": self.status,
            "parameters": self.parameters, "model_sha256": self.model_sha256,
            "metaphys_version": self.metaphys_version, "created": self.created, "updated": self.updated,
            "start_frame": self.start_frame, "frames": self.frames, "frames_done": self.frames_done,
            "wall_time_s": self.wall_time_s, "outputs": self.outputs, "error": self.error, "extra": self.extra,
            "settings": self.settings, "summary": self.summary(),
        }

    def summary(self) -> dict:
        """Convergence over the frames on disk: how many the Newton stage finished, which missed the
        tolerance or the strain limit (``parameters["strain_limit"]``), the worst strain, guard rejections."""
        fr = self.frames
        limit = self.parameters.get("strain_limit")
        strains = [(f["max_strain"], f["frame"]) for f in fr if f.get("max_strain") is not None]
        worst = max(strains) if strains else (None, None)
        return {
            "frames": len(fr),
            "finished_by_newton": sum(1 for f in fr if f.get("finished_by") == "newton"),
            "not_converged": [f["frame"] for f in fr if f.get("converged") is False],
            "max_strain": worst[0], "max_strain_frame": worst[1], "strain_limit": limit,
            "over_strain_limit": [s[1] for s in strains if limit is not None and s[0] > limit],
            "guard_rejections": sum(int(f.get("guard_rejections") or 0) for f in fr),
            "threads": self.settings.get("threads"),
        }

    def save(self) -> None:
        self.updated = _now()
        write_manifest(self.path, self.to_dict())

    def __repr__(self) -> str:
        return (f"BakeManifest({str(self.path)!r}, kind={self.kind!r}, status={self.status!r}, "
                f"frames_done={self.frames_done})")
