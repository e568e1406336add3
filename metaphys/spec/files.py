"""Reading a bake spec file (``metaphys bake --spec FILE``): bounded, strict JSON, no engine imports.

What a careless or hostile file cannot do here: make the reader block (a FIFO) or exhaust memory
(``/dev/zero``, a huge file: only regular files up to ``MAX_SPEC_BYTES`` are read), crash the
parser (nesting deeper than ``MAX_DEPTH``: a clear error instead of a RecursionError), or say two
things at once (a key twice in one object: refused, naming the key, where JSON readers would
silently keep the last). Every error is a ``SpecFileError`` (a ValueError) that names the file.
"""
from __future__ import annotations

import json
import os
import stat
from typing import Any, List, Tuple

__all__ = ["SpecFileError", "read_spec_file", "check_depth", "MAX_SPEC_BYTES", "MAX_DEPTH"]

MAX_SPEC_BYTES = 16 * 1024 * 1024  # a 256^2 cloth with per-frame pin targets for 100 frames is ~10 MB of JSON
MAX_DEPTH = 16                      # the deepest spec value (colliders[i].center per frame) nests 5 levels
_RELATIVE_PATH_KEYS = ("emitters", "obstacles")  # .npy paths, relative to the spec file


class SpecFileError(ValueError):
    """A spec file that cannot be read as one JSON object; the message names the file."""


class _DuplicateKey(ValueError):
    def __init__(self, key: str, keys: List[str]):
        self.key, self.keys = key, keys


def _refuse_duplicates(pairs: List[Tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key, [k for k, _ in pairs])
        out[key] = value
    return out


def check_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of a JSON value (a scalar: 0), without recursion; stops past ``limit``."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list, tuple)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((x, depth) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _read_bytes(path: str, limit: int) -> bytes:
    """The file's bytes: a regular file of at most ``limit`` bytes, opened without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except OSError as exc:
        raise SpecFileError(f"cannot read spec file {path!r}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SpecFileError(f"spec file {path!r} is not a regular file (a device, FIFO or socket); "
                                "expected a JSON file")
        data = fh.read(limit + 1) if st.st_size <= limit else b""
    if st.st_size > limit or len(data) > limit:
        raise SpecFileError(f"spec file {path!r} is larger than {limit // (1024 * 1024)} MB; a bake spec is "
                            "at most that (large arrays belong in .npy files it names)")
    return data


def _parse(path: str, data: bytes) -> Any:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecFileError(f"spec file {path!r} is not UTF-8 text (byte {exc.start}); expected a JSON file") from None
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as dup:
        raise SpecFileError(f"spec file {path!r}: key {json.dumps(dup.key)} appears twice in one object "
                            f"(keys {', '.join(json.dumps(k) for k in dup.keys)}); each key may appear once") from None
    except json.JSONDecodeError as exc:
        raise SpecFileError(f"spec file {path!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise SpecFileError(f"spec file {path!r} nests arrays or objects too deeply to parse; a bake spec "
                            f"nests at most {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise SpecFileError(f"spec file {path!r} cannot be read as JSON: {exc}") from None


def read_spec_file(path: str, max_bytes: int = MAX_SPEC_BYTES) -> dict:
    """The spec file's JSON object, with relative ``emitters``/``obstacles`` .npy paths made relative
    to the file's folder. Raises SpecFileError naming the file and what is wrong."""
    spec = _parse(path, _read_bytes(path, max_bytes))
    if not isinstance(spec, dict):
        raise SpecFileError(f"spec file {path!r} must hold a JSON object, got {type(spec).__name__}")
    depth = check_depth(spec)
    if depth > MAX_DEPTH:
        raise SpecFileError(f"spec file {path!r} nests more than {MAX_DEPTH} levels deep; a bake spec nests "
                            f"at most {MAX_DEPTH} levels")
    base = os.path.dirname(os.path.abspath(path))
    for key in _RELATIVE_PATH_KEYS:
        if isinstance(spec.get(key), str) and not os.path.isabs(spec[key]):
            spec[key] = os.path.join(base, spec[key])
    return spec
