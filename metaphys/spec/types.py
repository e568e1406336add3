"""Value types of the bake spec schemas (metaphys.spec.schema): each checks one JSON value without
coercion and describes what it expects, so errors read ``path: expected <describe()>, got <value>``."""
from __future__ import annotations

import difflib
import json
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


class SpecError(ValueError):
    """An invalid bake spec; ``errors`` lists one ``"path: expected ..., got ..."`` line per problem."""

    def __init__(self, kind: str, errors: List[str]):
        self.kind, self.errors = kind, list(errors)
        if len(errors) == 1:
            msg = f"invalid {kind} spec: {errors[0]}"
        else:
            msg = f"invalid {kind} spec ({len(errors)} problems):\n  " + "\n  ".join(errors)
        super().__init__(msg)


class Invalid(Exception):
    def __init__(self, path: str, message: str):
        self.path, self.message = path, message


def show(value: Any) -> str:
    """The offending value as the user wrote it (JSON), shortened."""
    if _is_int(value) and abs(int(value)) > 10 ** 50:  # printing a huge int is slow or refused (4300 digits)
        return f"an integer of {len(str(abs(int(value)) // 10 ** 50)) + 50} digits"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = object.__repr__(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(v) -> bool:  # bool is an int subclass in Python, but never a number in a spec
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _finite(v) -> bool:
    """A finite float; an int too large for a float (10**400) is not."""
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


INT_LIMIT = 2 ** 31 - 1  # the largest integer any spec value may have (C++ kernels and torch take int32)


# ---- value types ---------------------------------------------------------------------------------
class Type:
    nullable = False

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, value, path: str):
        raise NotImplementedError

    def fail(self, value, path: str, expected: Optional[str] = None):
        raise Invalid(path, f"expected {expected or self.describe()}, got {show(value)}")


def _num(x) -> str:
    """A bound as written: integers in full (1048574, not 1.04857e+06), other numbers short."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _range_text(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return ""


class Number(Type):
    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, unit="", nullable=False, integer=False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.unit, self.nullable, self.integer = unit, nullable, integer

    def describe(self) -> str:
        rng = _range_text(self.lo, self.hi, self.lo_open, self.hi_open)
        text = ("an integer" if self.integer else "a number") + (f" {rng}" if rng else "")
        if self.unit:
            text += f" ({self.unit})"
        return text + (" or null" if self.nullable else "")

    def check(self, value, path):
        if value is None and self.nullable:
            return None
        ok_type = _is_int(value) if self.integer else _is_number(value)
        if not ok_type or (not self.integer and not _finite(value)):
            self.fail(value, path)
        v = int(value) if self.integer else float(value)
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            self.fail(value, path)
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            self.fail(value, path)
        if self.integer and abs(v) > INT_LIMIT:  # C++/torch take 32-bit ints: say so instead of an OverflowError
            self.fail(value, path, f"{self.describe()}, at most {INT_LIMIT} in size")
        return v


def Int(lo=None, hi=None, unit="", nullable=False) -> Number:
    return Number(lo, hi, unit=unit, nullable=nullable, integer=True)


class Bool(Type):
    def describe(self):
        return "true or false"

    def check(self, value, path):
        if not isinstance(value, (bool, np.bool_)):
            self.fail(value, path)
        return bool(value)


class Choice(Type):
    def __init__(self, *options):
        self.options = options

    def describe(self):
        return "one of " + ", ".join(json.dumps(o) for o in self.options)

    def check(self, value, path):
        if not isinstance(value, str) or value not in self.options:
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(value, self.options, n=1)
                hint = f" (did you mean {json.dumps(close[0])}?)" if close else ""
            raise Invalid(path, f"expected {self.describe()}, got {show(value)}{hint}")
        return value


class Vector(Type):
    """A fixed-length list of finite numbers, optionally per element in a range."""

    def __init__(self, n: int, unit="", lo=None, lo_open=False, integer=False, names="", hi=None):
        self.n, self.unit, self.lo, self.lo_open, self.integer, self.names = n, unit, lo, lo_open, integer, names
        self.hi = hi
        self.elem = Number(lo, hi, lo_open=lo_open, integer=integer)

    def describe(self):
        what = "integers" if self.integer else "numbers"
        rng = " and ".join(r for r in (_range_text(self.lo, None, self.lo_open, False),
                                       _range_text(None, self.hi, False, False)) if r)
        text = f"a list of {self.n} {what}" + (f" {rng}" if rng else "")
        if self.names:
            text += f" {self.names}"
        return text + (f" ({self.unit})" if self.unit else "")

    def check(self, value, path):
        if not isinstance(value, (list, tuple)) or len(value) != self.n:
            self.fail(value, path)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(self.elem.check(v, f"{path}[{i}]"))
            except Invalid:
                self.fail(value, path)
        return out


class Track(Type):
    """A vector, or a per-frame list of vectors (animated; sampled at the end of each step)."""

    def __init__(self, vec: Vector):
        self.vec = vec

    def describe(self):
        return f"{self.vec.describe()}, or a per-frame list of them"

    def check(self, value, path):
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
            return [self.vec.check(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (list, tuple)) and len(value) == self.vec.n:
            return self.vec.check(value, path)
        self.fail(value, path)


class Array(Type):
    """A (nested) list of finite numbers; shapes against other keys are checked by the schema's ``cross``."""

    def __init__(self, what: str, integer=False, nullable=True, path_ok=False, lo=None, hi=None):
        self.what, self.integer, self.nullable, self.path_ok, self.lo, self.hi = what, integer, nullable, path_ok, lo, hi

    def describe(self):
        return self.what + (" or null" if self.nullable else "")

    def check(self, value, path):
        if value is None and self.nullable:
            return None
        if isinstance(value, str) and self.path_ok:
            if not value.endswith(".npy"):
                self.fail(value, path, f"{self.what} (a path must name a .npy file)")
            if not os.path.isfile(value):
                raise Invalid(path, f"file not found: {value}")
            try:
                arr = np.load(value, allow_pickle=False)
            except Exception as exc:  # a truncated or non-npy file
                raise Invalid(path, f"cannot read {value} as a .npy array ({type(exc).__name__}: {exc})") from None
            if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
                raise Invalid(path, f"{value} holds {arr.dtype} values, expected real numbers")
        else:
            if not isinstance(value, (list, tuple, np.ndarray)):
                self.fail(value, path)
            bad = _first_non_number(value, path, self.integer)
            if bad is not None:
                raise Invalid(bad[0], f"expected {'an integer' if self.integer else 'a number'} "
                                       f"(in {self.what}), got {show(bad[1])}")
            try:
                arr = np.asarray(value, dtype=np.int64 if self.integer else np.float64)
            except OverflowError:  # an int beyond float64 / int64
                raise Invalid(path, f"expected finite numbers in {self.what}, got a number too large") from None
            except ValueError:
                self.fail(value, path, f"{self.what} (rows of equal length)")
        if not np.isfinite(arr).all():
            raise Invalid(path, f"expected finite numbers in {self.what}, got NaN or infinity")
        if self.lo is not None and arr.size and arr.min() < self.lo or self.hi is not None and arr.size and arr.max() > self.hi:
            k = int(np.argmax((arr.ravel() < (self.lo if self.lo is not None else -np.inf))
                              | (arr.ravel() > (self.hi if self.hi is not None else np.inf))))
            bound = (f"values in [{self.lo:g}, {self.hi:g}]" if self.lo is not None and self.hi is not None else
                     f"values >= {self.lo:g}" if self.lo is not None else f"values <= {self.hi:g}")
            raise Invalid(path, f"expected {bound}, got {arr.ravel()[k]:g} at flat index {k}")
        return value if isinstance(value, str) else arr


def _first_non_number(value, path, integer) -> Optional[Tuple[str, Any]]:
    stack = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, np.ndarray):
            if v.dtype == object or v.dtype == bool or not np.issubdtype(v.dtype, np.number):
                return p, v.dtype.name
            if integer and not np.issubdtype(v.dtype, np.integer):
                return p, v.dtype.name
            continue
        if isinstance(v, (list, tuple)):
            stack.extend((x, f"{p}[{i}]") for i, x in reversed(list(enumerate(v))))
        elif not (_is_int(v) if integer else _is_number(v)):
            return p, v
    return None


@dataclass
class Key:
    type: Type
    default: Any = None
    doc: str = ""
    default_doc: Optional[str] = None   # how the default reads in the docs when it is computed
    required: bool = False


class Object(Type):
    """A JSON object with known keys; ``tag`` names a discriminating key (e.g. collider ``type``)."""

    def __init__(self, name: str, keys: Dict[str, Key], tag: Optional[str] = None,
                 variants: Optional[Dict[str, Dict[str, Key]]] = None):
        self.name, self.keys, self.tag, self.variants = name, keys, tag, variants or {}

    def describe(self):
        if self.tag:
            return (f"an object with {json.dumps(self.tag)}: " + " or ".join(json.dumps(v) for v in self.variants))
        return "an object"

    def check(self, value, path):
        if not isinstance(value, dict):
            self.fail(value, path)
        keys = dict(self.keys)
        if self.tag:
            t = value.get(self.tag)
            keys.update({self.tag: Key(Choice(*self.variants), required=True)})
            if t in self.variants:
                keys.update(self.variants[t])
        out, errors = {}, []
        for k in value:
            if k not in keys:
                errors.append(unknown_key(k, keys, path))
        for k, key in keys.items():
            p = f"{path}.{k}" if path else k
            if k not in value:
                if key.required:
                    errors.append(Invalid(p, f"missing (expected {key.type.describe()})"))
                continue
            _collect(errors, lambda: out.__setitem__(k, key.type.check(value[k], p)))
        if errors:
            raise Many(errors)
        return out


class Many(Exception):
    def __init__(self, errors):
        self.errors = errors


def _collect(errors: list, check) -> None:
    """Run one check; keep its error(s) so a spec reports every problem at once."""
    try:
        check()
    except Invalid as e:
        errors.append(e)
    except Many as many:
        errors.extend(many.errors)


class ListOf(Type):
    def __init__(self, item: Type, what: str):
        self.item, self.what = item, what

    def describe(self):
        return f"a list of {self.what}"

    def check(self, value, path):
        if not isinstance(value, list):
            self.fail(value, path)
        out, errors = [], []
        for i, v in enumerate(value):
            _collect(errors, lambda: out.append(self.item.check(v, f"{path}[{i}]")))
        if errors:
            raise Many(errors)
        return out


def unknown_key(k, keys, path, renamed: Optional[Dict[str, str]] = None) -> Invalid:
    """An unknown key, with what it became (``renamed``) or the closest known key."""
    p = f"{path}.{k}" if path else str(k)
    if renamed and k in renamed:
        return Invalid(p, renamed[k])
    close = difflib.get_close_matches(str(k), list(keys), n=1, cutoff=0.6)
    hint = f"; did you mean {json.dumps(close[0])}?" if close else f"; known keys: {', '.join(sorted(keys))}"
    return Invalid(p, f"unknown key{hint}")
