"""The bake spec's value types (``spec.types``) applied to keyword arguments of the Python API.

The sims check their keyword arguments with the same ``Number``/``Int``/``Vector``/``Choice``/...
objects the spec schemas (``spec.schema``) use -- for the keys a spec has, the schema's very entries
(``schema_types``) -- so ``ClothSim(fps="24")`` is refused exactly like ``"fps": "24"`` in a bake
spec, in the same words, and the two cannot drift. Nothing is coerced: a bool is not a number,
2.5 is not an int, "no" is not a bool. Messages name the call and the argument as the user wrote
them::

    ClothSim(gravity=...): expected a list of 3 numbers [x, y, z] (m/s^2), got "down"
    ClothSim(colliders=...): colliders[0].radius: expected a number > 0 (metres), got "big"

Python values are read as the JSON they stand for: tuples and numpy arrays / torch tensors (anything
with ``__array__``) count as lists, numpy scalars as numbers; array-valued types (``types.Array``)
keep numpy arrays as they are (fast, and their dtype is checked).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping

import numpy as np

from metaphys.spec.types import Array, Invalid, Key, Many, Type

__all__ = ["ArgumentError", "OrNone", "schema_types", "check_arguments", "check_value", "argument_error"]


class ArgumentError(ValueError, TypeError):
    """Invalid arguments of a Python API call; ``errors`` holds one line per problem, each naming
    the call and the argument (``ClothSim(gravity=...): expected ..., got ...``).

    Both a ValueError and a TypeError (as numpy's AxisError is both a ValueError and an
    IndexError): a wrong type and a wrong value are one kind of mistake here, and callers that
    catch either keep working."""

    def __init__(self, owner: str, errors: List[str]):
        self.owner, self.errors = owner, list(errors)
        if len(self.errors) == 1:
            msg = self.errors[0]
        else:
            msg = f"invalid arguments of {owner} ({len(self.errors)} problems):\n  " + "\n  ".join(self.errors)
        super().__init__(msg)


class OrNone(Type):
    """``inner``, or None: the Python API's "not given" where a spec key cannot be null (a spec
    leaves the key out instead)."""

    def __init__(self, inner: Type):
        self.inner = inner

    def describe(self) -> str:
        return f"{self.inner.describe()} or None"

    def check(self, value, path):
        if value is None:
            return None
        try:
            return self.inner.check(value, path)
        except Invalid as problem:  # "expected <inner>" would hide that None is fine too
            plain = f"expected {self.inner.describe()}, "
            if problem.path == path and problem.message.startswith(plain):
                raise Invalid(path, f"expected {self.describe()}, " + problem.message[len(plain):]) from None
            raise


def schema_types(schema: Mapping[str, Key], names: Iterable[str], nullable: Iterable[str] = ()) -> Dict[str, Type]:
    """The value types of ``names`` in a spec schema (e.g. ``spec.schema.CLOTH_SCHEMA``); the names
    in ``nullable`` also take None (the API's default there means "computed" or "none")."""
    nullable = set(nullable)
    out = {}
    for name in names:
        t = schema[name].type
        out[name] = OrNone(t) if name in nullable and not getattr(t, "nullable", False) else t
    return out


_JSON_TO_PYTHON = {"null": "None", "true": "True", "false": "False"}


def _python_words(text: str) -> str:
    """A type's message in Python's words where JSON's differ (null, true, false)."""
    text = text.replace(" or null", " or None").replace("true or false", "True or False")
    head, sep, got = text.rpartition("got ")
    return head + sep + _JSON_TO_PYTHON[got] if sep and got in _JSON_TO_PYTHON else text


def _takes_arrays(t: Type) -> bool:
    inner = t.inner if isinstance(t, OrNone) else t
    return isinstance(inner, Array) or getattr(inner, "takes_arrays", False)


def _as_ndarray(value):
    """A torch tensor (or anything else with ``__array__`` but not an ndarray) as an ndarray; the
    value unchanged where that fails (a CUDA tensor: the type check then names it)."""
    if isinstance(value, np.ndarray) or not hasattr(value, "__array__"):
        return value
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001 - any conversion failure leaves the value for the type to refuse
        return value


def _as_json(value):
    """A Python value as the JSON value it stands for: arrays and tuples -> lists, recursively."""
    value = _as_ndarray(value)
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype != object else [_as_json(v) for v in value]
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value


def _problems(owner: str, name: str, t: Type, value, context: str = ""):
    """(checked value, []) or (None, one line per problem naming ``owner(name=...)``)."""
    value = _as_ndarray(value) if _takes_arrays(t) else _as_json(value)
    try:
        return t.check(value, name), []
    except Invalid as problem:
        found = [problem]
    except Many as many:
        found = many.errors
    lines = []
    for problem in found:
        where = "" if problem.path == name else f"{problem.path}: "
        lines.append(f"{owner}({name}=...): {context}{where}{_python_words(problem.message)}")
    return None, lines


def check_arguments(owner: str, types: Mapping[str, Type], values: Mapping[str, Any]) -> Dict[str, Any]:
    """Check ``values[name]`` against ``types[name]`` for every name present in both (other names
    are the caller's business); return the checked values (numbers as float/int, vectors as lists,
    arrays as numpy arrays, paths as given). Raises ArgumentError listing every problem."""
    out, errors = {}, []
    for name, t in types.items():
        if name in values:
            out[name], lines = _problems(owner, name, t, values[name])
            errors.extend(lines)
    if errors:
        raise ArgumentError(owner, errors)
    return out


def check_value(owner: str, name: str, t: Type, value, context: str = ""):
    """One value that came from an argument (e.g. what a callback returned) checked as a ``t``; the
    message reads ``owner(name=...): <context><problem>``. Returns the checked value."""
    checked, lines = _problems(owner, name, t, value, context)
    if lines:
        raise ArgumentError(owner, lines)
    return checked


def argument_error(owner: str, name: str, message: str) -> ArgumentError:
    """One problem found beyond the value types (a shape against the grid, an unreadable file) in
    the same words: ``argument_error("ClothSim", "pin_targets", "expected shape ...")``."""
    return ArgumentError(owner, [f"{owner}({name}=...): {message}"])
