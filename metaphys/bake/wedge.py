"""Wedges: one bake spec, parameter ranges over any of its keys, every variant baked on Ray.

A wedge file (JSON, read like a spec file: bounded, strict, each key once)::

    {"kind": "smoke",
     "base": {"resolution": [48, 48], "frames": 24},        # a spec object, or a spec file's path
     "parameters": {"buoyancy": [1, 2, 4],                  # a list of values
                    "viscosity": {"geomspace": [1e-4, 1e-2, 3]}},
     "mode": "product"}                                      # or "zip"

``parameters`` maps a dotted path into the spec (``buoyancy``, ``colliders.0.radius``, ``wind.2``;
a leading kind name is allowed: ``smoke.buoyancy``) to its values: a list, or
``{"linspace": [start, stop, n]}``, ``{"geomspace": [start, stop, n]}``, ``{"range": [start, stop]}`` /
``{"range": [start, stop, step]}`` (integers, stop excluded). ``seeds`` (a list or a range) is the
key ``seed`` varied like any other, so it is refused while no bake schema has a ``seed`` key (the
bakes are deterministic). ``mode`` "product" (the default) bakes every combination, in the order of
``parameters`` with the last key varying fastest; "zip" pairs the i-th values of every key (all
lists the same length). Every variant's spec is validated by the bake's own validation before
anything runs; errors name the variant and the key.

A wedge folder::

    OUT/wedge.json                 the wedge manifest (atomic rewrites): variants, their values, the
                                   sha256 of their spec files, status, exit code, error, wall time
    OUT/specs/NAME.json            the exact spec each variant's bake read
    OUT/NAME/                      a normal bake folder (manifest.json, resume, lock...)
    OUT/logs/NAME.log              what that bake printed
    OUT/contact_sheet.png          one labelled frame of every variant

``NAME`` is the variant's index and a slug of its values, e.g. ``03_buoyancy=2_viscosity=0.001``.
Each variant is one Ray task running the normal bake (the ``metaphys bake`` command, in-process in a
Ray worker) into its own folder; Ray places the tasks (``num_cpus`` = the bake's threads). Ray is
imported only here, and only when a wedge runs.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import itertools
import json
import math
import os
import re
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from metaphys.bake.errors import BakeError
from metaphys.io.atomic import atomic_write_bytes, atomic_write_text
from metaphys.spec.files import SpecFileError, read_spec_file

__all__ = ["WedgeError", "Variant", "Wedge", "read_wedge", "expand", "validate_variants", "run_wedge",
           "WEDGE_SCHEMA", "WEDGE_MANIFEST", "CONTACT_SHEET"]

WEDGE_SCHEMA = "metaphys.wedge/1"
WEDGE_MANIFEST = "wedge.json"
CONTACT_SHEET = "contact_sheet.png"
SPECS_DIR, LOGS_DIR = "specs", "logs"
KINDS = ("cloth", "smoke")
MODES = ("product", "zip")
RANGES = ("linspace", "geomspace", "range")
WEDGE_KEYS = ("kind", "base", "parameters", "seeds", "mode", "description")
MAX_VARIANTS = 10000
_SPEC_PATH_KEYS = ("emitters", "obstacles")  # .npy paths: relative to the file that names them


class WedgeError(BakeError):
    """A wedge that cannot start (bad description, bad variant, an occupied folder): exit code 2."""

    def __init__(self, message: str):
        super().__init__(message, code=2)


@dataclass
class Variant:
    index: int
    name: str
    values: Dict[str, Any]          # dotted key -> value, in the order of the wedge's parameters
    spec: Dict[str, Any]            # the complete spec its bake reads

    def label(self) -> str:
        return ", ".join(f"{k}={_show(v)}" for k, v in self.values.items()) or "base spec"


@dataclass
class Wedge:
    kind: str
    base: Dict[str, Any]
    parameters: Dict[str, List[Any]]     # dotted key -> its expanded values
    mode: str
    variants: List[Variant] = field(default_factory=list)
    description: str = ""


# ---- the description -----------------------------------------------------------------------------------
def _show(v) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "x".join(_show(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _range_values(key: str, rng: dict) -> List[Any]:
    """``{"linspace": [a, b, n]}`` and the like -> a list of plain Python numbers."""
    where = f"parameters.{key}"
    if len(rng) != 1 or next(iter(rng)) not in RANGES:
        raise WedgeError(f"{where}: expected a list of values or one of "
                         f"{', '.join(json.dumps({r: '[...]'}) for r in RANGES)}, got {json.dumps(rng)[:120]}")
    how, args = next(iter(rng.items()))
    if not isinstance(args, list) or not all(_is_number(a) for a in args):
        raise WedgeError(f"{where}.{how}: expected a list of numbers, got {json.dumps(args)[:120]}")
    if how == "range":
        if len(args) not in (2, 3) or not all(_is_int(a) for a in args) or (len(args) == 3 and args[2] == 0):
            raise WedgeError(f"{where}.range: expected [start, stop] or [start, stop, step] integers (step != 0, "
                             f"stop excluded), got {json.dumps(args)}")
        values = list(range(*args))
    else:
        if len(args) != 3 or not _is_int(args[2]) or args[2] < 1:
            raise WedgeError(f"{where}.{how}: expected [start, stop, n] with an integer n >= 1, got {json.dumps(args)}")
        a, b, n = float(args[0]), float(args[1]), args[2]
        if n > MAX_VARIANTS:
            raise WedgeError(f"{where}.{how}: n = {n} is more than the {MAX_VARIANTS} variants a wedge may have")
        if how == "geomspace":
            if a <= 0 or b <= 0:
                raise WedgeError(f"{where}.geomspace: expected start and stop > 0, got {json.dumps(args)}")
            values = [a] if n == 1 else [a * (b / a) ** (i / (n - 1)) for i in range(n)]
            values[-1] = b if n > 1 else a
        else:
            values = [a] if n == 1 else [a + (b - a) * i / (n - 1) for i in range(n)]
            values[-1] = b if n > 1 else a
    if not values:
        raise WedgeError(f"{where}.{how}: {json.dumps(args)} holds no values")
    return values


def parameter_values(key: str, given) -> List[Any]:
    """The values of one wedge parameter (a list, or a range object)."""
    if isinstance(given, list):
        if not given:
            raise WedgeError(f"parameters.{key}: the list of values is empty")
        return copy.deepcopy(given)
    if isinstance(given, dict):
        return _range_values(key, given)
    raise WedgeError(f"parameters.{key}: expected a list of values or a range such as "
                     f"{{\"linspace\": [start, stop, n]}}, got {json.dumps(given)[:120]}")


def _split_key(kind: str, key: str) -> List[str]:
    if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
        raise WedgeError(f"parameters: {json.dumps(key)} is not a dotted spec key such as \"buoyancy\" or "
                         "\"colliders.0.radius\"")
    parts = key.split(".")
    if len(parts) > 1 and parts[0] == kind:  # "smoke.buoyancy" in a smoke wedge
        parts = parts[1:]
    return parts


def set_key(kind: str, spec: dict, key: str, value) -> None:
    """Set the dotted ``key`` of ``spec`` (in place). A top-level key is set whether or not the spec
    has it (the validation judges it); a path into a list or object needs that container, taken from
    the spec or else from the schema's default."""
    parts = _split_key(kind, key)
    node: Any = spec
    for depth, part in enumerate(parts[:-1]):
        child_key: Any = part
        if isinstance(node, list):
            child_key = _list_index(key, node, part)
        elif not isinstance(node, dict):
            raise WedgeError(f"parameters.{key}: {'.'.join(parts[:depth]) or 'the spec'} is a "
                             f"{type(node).__name__}, not an object or a list")
        if isinstance(node, dict) and part not in node:
            default = _schema_default(kind, part) if depth == 0 else None
            if not isinstance(default, (list, dict)):
                raise WedgeError(f"parameters.{key}: the base spec has no {json.dumps('.'.join(parts[:depth + 1]))} "
                                 "to vary an entry of (give it in the base spec)")
            node[part] = default
        node = node[child_key]
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(key, node, last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise WedgeError(f"parameters.{key}: {'.'.join(parts[:-1])} is a {type(node).__name__}, not an object "
                         "or a list")


def _list_index(key: str, node: list, part: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise WedgeError(f"parameters.{key}: {json.dumps(part)} is not an index of a list of {len(node)} entries")
    return int(part)


def _schema_default(kind: str, name: str):
    from metaphys.spec.schema import defaults
    return copy.deepcopy(defaults(kind).get(name))


def _slug(index: int, width: int, values: dict) -> str:
    parts = [f"{index:0{width}d}"] + [f"{k}={_show(v)}" for k, v in values.items()]
    slug = re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join(parts))
    return slug[:80].rstrip("-_")


def _resolve_paths(spec: dict, folder: str) -> dict:
    for key in _SPEC_PATH_KEYS:
        if isinstance(spec.get(key), str) and not os.path.isabs(spec[key]):
            spec[key] = os.path.join(folder, spec[key])
    return spec


def read_wedge(path: str) -> dict:
    """The wedge file's JSON object (read like a spec file); a ``base`` given as a path is read too
    (relative to the wedge file), and relative .npy paths of the base are made absolute."""
    try:
        wedge = read_spec_file(path)
    except SpecFileError as exc:
        raise WedgeError(str(exc).replace("spec file", "wedge file", 1)) from None
    folder = os.path.dirname(os.path.abspath(path))
    base = wedge.get("base")
    if isinstance(base, str):
        base_path = base if os.path.isabs(base) else os.path.join(folder, base)
        try:
            wedge["base"] = read_spec_file(base_path)
        except SpecFileError as exc:
            raise WedgeError(f"wedge file {path!r}: base: {exc}") from None
    elif isinstance(base, dict):
        wedge["base"] = _resolve_paths(dict(base), folder)
    return wedge


def expand(wedge: dict) -> Wedge:
    """The wedge's variants (not yet validated against the bake schema: ``validate_variants``)."""
    if not isinstance(wedge, dict):
        raise WedgeError(f"a wedge must be a JSON object, got {type(wedge).__name__}")
    unknown = [k for k in wedge if k not in WEDGE_KEYS]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], WEDGE_KEYS, n=1)
        raise WedgeError(f"unknown wedge key {json.dumps(unknown[0])}" + (f" (did you mean {json.dumps(hint[0])}?)"
                                                                        if hint else "")
                         + f"; a wedge has the keys {', '.join(WEDGE_KEYS)}")
    kind = wedge.get("kind")
    if kind not in KINDS:
        raise WedgeError(f"kind: expected \"cloth\" or \"smoke\", got {json.dumps(kind)}")
    base = wedge.get("base", {})
    if not isinstance(base, dict):
        raise WedgeError(f"base: expected a spec object or a spec file's path, got {json.dumps(base)[:120]}")
    mode = wedge.get("mode", "product")
    if mode not in MODES:
        raise WedgeError(f"mode: expected \"product\" or \"zip\", got {json.dumps(mode)}")
    given = wedge.get("parameters", {})
    if not isinstance(given, dict):
        raise WedgeError(f"parameters: expected an object of dotted spec key -> values, got {json.dumps(given)[:120]}")
    params = {key: parameter_values(key, values) for key, values in given.items()}
    if "seeds" in wedge:
        if "seed" in params:
            raise WedgeError("seeds and parameters.seed say the same thing: give one of them")
        params["seed"] = parameter_values("seed", wedge["seeds"])
    for key in params:
        _split_key(kind, key)
    if mode == "zip" and len({len(v) for v in params.values()}) > 1:
        lengths = ", ".join(f"{k}: {len(v)}" for k, v in params.items())
        raise WedgeError(f"mode \"zip\" pairs the i-th values of every parameter, so every list must have the same "
                         f"length; got {lengths}")
    keys = list(params)
    combos = (zip(*params.values()) if mode == "zip" else itertools.product(*params.values())) if keys else [()]
    combos = list(itertools.islice(combos, MAX_VARIANTS + 1))
    if len(combos) > MAX_VARIANTS:
        raise WedgeError(f"the wedge expands to more than {MAX_VARIANTS} variants")
    width = max(2, len(str(len(combos) - 1)))
    variants = []
    for index, combo in enumerate(combos):
        values = dict(zip(keys, combo))
        spec = copy.deepcopy(base)
        for key, value in values.items():
            set_key(kind, spec, key, copy.deepcopy(value))
        variants.append(Variant(index, _slug(index, width, values), values, spec))
    return Wedge(kind, base, params, mode, variants, str(wedge.get("description", "")))


def validate_variants(wedge: Wedge, limit: int = 12) -> List[dict]:
    """Every variant's spec checked by the bake's own validation (``spec.params``), before anything runs;
    WedgeError lists the problems, each naming the variant (its index and values) and the key; a
    problem every variant has is said once."""
    from metaphys.spec.params import cloth_parameters, smoke_parameters
    from metaphys.spec.schema import SCHEMAS
    if "seed" in wedge.parameters and "seed" not in SCHEMAS[wedge.kind]:
        raise WedgeError(f"seeds: a {wedge.kind} bake spec has no \"seed\" key: its bakes are deterministic (the "
                         "same spec bakes the same bytes), so seeds would bake identical variants; vary a spec key "
                         "instead")
    check = cloth_parameters if wedge.kind == "cloth" else smoke_parameters
    problems: Dict[str, List[Variant]] = {}
    out = []
    for v in wedge.variants:
        try:
            out.append(check(v.spec))
        except ValueError as exc:
            for line in list(getattr(exc, "errors", None) or [str(exc)]):  # SpecError: one line per problem
                problems.setdefault(line, []).append(v)
    if problems:
        n = len(wedge.variants)
        lines = []
        for line, vs in problems.items():
            if len(vs) == n and n > 1:
                lines.append(f"every variant: {line}")
            else:
                more = f" and {len(vs) - 1} more" if len(vs) > 1 else ""
                lines.append(f"variant {vs[0].index} ({vs[0].label()}){more}: {line}")
        shown = lines[:limit] + ([f"... ({len(lines) - limit} more)"] if len(lines) > limit else [])
        raise WedgeError(f"{len(lines)} problem(s) in the wedge's variants, nothing was baked:\n  " + "\n  ".join(shown))
    return out


def spec_text(spec: dict) -> str:
    return json.dumps(spec, indent=1) + "\n"


def spec_sha256(spec: dict) -> str:
    return hashlib.sha256(spec_text(spec).encode()).hexdigest()


# ---- the wedge folder and its manifest ------------------------------------------------------------------
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def load_manifest(out: str) -> Optional[dict]:
    """The wedge manifest in ``out`` (None when there is none); WedgeError when it is not one."""
    path = os.path.join(out, WEDGE_MANIFEST)
    if not os.path.lexists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise WedgeError(f"{path} is not a readable wedge manifest ({exc}); replace the wedge with --force or "
                         "choose another --out") from None
    if not isinstance(data, dict) or data.get("schema") != WEDGE_SCHEMA or not isinstance(data.get("variants"), list):
        raise WedgeError(f"{path} is not a metaphys wedge manifest (schema {WEDGE_SCHEMA!r}); replace it with "
                         "--force or choose another --out")
    return data


def save_manifest(out: str, manifest: dict) -> None:
    manifest["updated"] = _now()
    counts: Dict[str, int] = {}
    for v in manifest["variants"]:
        counts[v["status"]] = counts.get(v["status"], 0) + 1
    manifest["counts"] = counts
    atomic_write_text(os.path.join(out, WEDGE_MANIFEST), json.dumps(manifest, indent=1) + "\n")


def new_manifest(wedge: Wedge, settings: dict) -> dict:
    return {"schema": WEDGE_SCHEMA, "kind": wedge.kind, "mode": wedge.mode, "description": wedge.description,
            "status": "running", "created": _now(), "updated": _now(), "settings": settings,
            "base": wedge.base, "parameters": wedge.parameters,
            "variants": [{"index": v.index, "name": v.name, "folder": v.name, "values": v.values,
                          "spec_file": f"{SPECS_DIR}/{v.name}.json", "spec_sha256": spec_sha256(v.spec),
                          "log": f"{LOGS_DIR}/{v.name}.log", "status": "pending", "exit_code": None, "error": None,
                          "wall_s": None, "host": None, "pid": None}
                         for v in wedge.variants]}


def _bake_status(out: str, name: str) -> Optional[str]:
    try:
        with open(os.path.join(out, name, "manifest.json"), encoding="utf-8") as fh:
            return json.load(fh).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def prepare_folder(wedge: Wedge, out: str, resume: bool, force: bool, settings: dict) -> dict:
    """The wedge manifest to run with: a new one, or (``resume``) the one in ``out`` checked to be this
    wedge. A folder holding something else is refused (unless ``force``)."""
    old = load_manifest(out) if os.path.isdir(out) else None
    if resume and old is not None:
        theirs = [(v.get("name"), v.get("spec_sha256")) for v in old["variants"]]
        mine = [(v.name, spec_sha256(v.spec)) for v in wedge.variants]
        if old.get("kind") != wedge.kind or theirs != mine:
            raise WedgeError(f"cannot resume: the wedge in {out!r} was made from a different description (its "
                             f"{len(theirs)} variants or their specs differ from these {len(mine)}); resume with "
                             "the same wedge file, or replace it with --force, or choose another --out")
        old["settings"] = {**settings, "threads": old.get("settings", {}).get("threads", settings["threads"])}
        return old
    if os.path.isdir(out) and os.listdir(out) and not force:
        what = "a wedge (continue it with --resume)" if old is not None else f"{', '.join(sorted(os.listdir(out))[:6])}"
        raise WedgeError(f"output folder {out!r} is not empty: it holds {what}; choose an empty --out or pass "
                         "--force to bake every variant again (each variant's bake --force removes only files "
                         "a metaphys bake wrote)")
    return new_manifest(wedge, settings)


def write_specs(wedge: Wedge, out: str) -> None:
    """OUT/specs/NAME.json: the spec each variant's bake reads (rewritten only when missing or changed)."""
    os.makedirs(os.path.join(out, SPECS_DIR), exist_ok=True)
    os.makedirs(os.path.join(out, LOGS_DIR), exist_ok=True)
    for v in wedge.variants:
        path = os.path.join(out, SPECS_DIR, f"{v.name}.json")
        text = spec_text(v.spec)
        try:
            with open(path, encoding="utf-8") as fh:
                if fh.read() == text:
                    continue
        except OSError:
            pass
        atomic_write_text(path, text)


def bake_argv(kind: str, spec_path: str, folder: str, *, threads: int, device: str = "cpu",
              weights: Optional[str] = None, fmt: Optional[str] = None, resume: bool = False,
              force: bool = False) -> List[str]:
    """The ``metaphys bake`` command line of one variant (the same command bakes it alone)."""
    argv = ["bake", kind, "--spec", spec_path, "--out", folder, "--progress", "none", "--threads", str(threads),
            "--device", device]
    if weights:
        argv += ["--weights", weights]
    if fmt and kind == "cloth":
        argv += ["--format", fmt]
    if resume:
        argv.append("--resume")
    elif force:
        argv.append("--force")
    return argv


def _error_of(log_path: str, start: int = 0) -> Optional[str]:
    """The bake's error message in its log (written from byte ``start`` on: this run's part)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            fh.seek(start)
            lines = [line.rstrip() for line in fh if line.strip()]
    except OSError:
        return None
    errors = [line.split("error: ", 1)[1] for line in lines if line.startswith("metaphys bake: error: ")]
    return errors[-1] if errors else (lines[-1] if lines else None)


def bake_task(bake: Callable[[List[str]], int], argv: List[str], log_path: str) -> dict:
    """One variant, as a Ray task: the normal bake (``bake(argv)``, the ``metaphys bake`` entry point)
    with its output in ``log_path``; returns its exit code and where and how long it ran."""
    started = time.time()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    start = os.path.getsize(log_path) if os.path.exists(log_path) else 0  # a resumed variant's log goes on
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        print(f"$ metaphys {' '.join(argv)}", flush=True)
        try:
            code = bake(argv)
        except KeyboardInterrupt:  # ray.cancel: the bake has recorded its state as cancelled
            code = 130
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 -- a task reports every failure as its result
            traceback.print_exc()
            code = 1
        log.flush()
    torch = sys.modules.get("torch")  # the bake imported it: record the threads it ran with
    return {"exit_code": int(code or 0), "wall_s": round(time.time() - started, 3), "host": socket.gethostname(),
            "pid": os.getpid(), "torch_threads": torch.get_num_threads() if torch is not None else None,
            "error": _error_of(log_path, start) if code else None}


# ---- running on Ray -------------------------------------------------------------------------------------
def ray_version() -> Optional[str]:
    try:
        from importlib.metadata import version
        return version("ray")
    except Exception:  # noqa: BLE001
        return None


def _token_auth_for(address: str) -> None:
    """Send this machine's Ray token to an explicit ``address``, as Ray itself does for "auto".

    Ray 2.60 clusters use token authentication by default (``ray start --head`` writes the token to
    ~/.ray/auth_token), but ``ray.init(address="host:port")`` sends a token only when RAY_AUTH_MODE
    is "token" ("auto" turns it on when it finds a token): without this an explicit address to a
    cluster on this machine, or to one whose token was copied here, fails with InvalidAuthToken. A
    set RAY_AUTH_MODE is respected; a token sent to a cluster without authentication is ignored."""
    if address == "auto" or os.environ.get("RAY_AUTH_MODE") is not None:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)
    except ImportError:  # a Ray without token authentication
        return
    import logging
    quiet = logging.getLogger(maybe_enable_token_auth_if_token_available.__module__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "token authentication is enabled" warning is about new clusters
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        quiet.setLevel(level)


def start_ray(workers: Optional[int] = None, address: Optional[str] = None):
    """Connect to Ray: the running connection if there is one, ``address`` (an existing cluster), or a
    new local instance with ``workers`` CPUs (default: all). Returns (ray, whether we started it)."""
    try:
        import ray
    except ImportError:
        raise WedgeError("metaphys wedge needs Ray: pip install 'ray==2.60.0' (see requirements.txt)") from None
    if ray.is_initialized():
        return ray, False
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="warning")
    try:
        if address:
            _token_auth_for(address)
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), object_store_memory=128 * 1024 * 1024, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise WedgeError(f"cannot start or reach {where}: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[-1][:300]} (nothing was baked; --resume continues "
                         "this wedge)") from None
    return ray, True


class _Bar:
    def __init__(self, mode: str, total: int, done: int):
        self.mode, self.bar = mode, None
        if mode == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=done, unit="variant", desc="wedge", file=sys.stderr)

    def emit(self, event: str, **data) -> None:
        if self.mode == "json":
            sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
            sys.stdout.flush()

    def variant(self, entry: dict, done: int, total: int) -> None:
        line = f"[{done}/{total}] {entry['name']}: {entry['status']}"
        if entry.get("wall_s") is not None:
            line += f" in {entry['wall_s']:.1f} s"
        if entry.get("error"):
            line += f" ({entry['error']})"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
            self.bar.update(1)
        self.emit("variant", done=done, total=total, **{k: entry[k] for k in
                                                       ("index", "name", "status", "exit_code", "error", "wall_s")})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _record(entry: dict, result: dict, out: str) -> None:
    entry.update({k: result.get(k) for k in ("exit_code", "wall_s", "host", "pid", "torch_threads", "error")})
    code, status = result.get("exit_code"), _bake_status(out, entry["folder"])
    if code == 0 and status == "complete":
        entry["status"], entry["error"] = "complete", None
    elif code == 130:
        entry["status"], entry["error"] = "cancelled", None
    else:
        entry["status"] = "failed"
        entry["error"] = entry["error"] or f"exit code {code}, bake status {status}"


@dataclass
class WedgeResult:
    manifest: dict
    exit_code: int
    elapsed_s: float
    ran: int
    skipped: int


def run_wedge(wedge: Wedge, out: str, bake: Callable[[List[str]], int], *, workers: Optional[int] = None,
              address: Optional[str] = None, resume: bool = False, force: bool = False, threads: Optional[int] = None,
              device: str = "cpu", weights: Optional[str] = None, fmt: Optional[str] = None, progress: str = "bar",
              contact_frame: Optional[int] = None, contact_cell: int = 192) -> WedgeResult:
    """Bake every variant of ``wedge`` (validated: ``validate_variants``) into ``out`` on Ray.

    ``bake(argv)`` is the bake command's entry point (``metaphys.cli.main``), run in a Ray worker per
    variant; ``threads`` torch threads per variant (default 1; its Ray task asks for as many CPUs).
    With ``resume`` the variants already complete are skipped and the others continue with the bake's
    own ``--resume``. A failed variant is recorded and the others go on; Ctrl-C cancels the pending and
    running tasks (``ray.cancel``: a running bake stops between frames' writes and stays resumable).
    Exit code: 0 all complete, 1 some failed, 130 cancelled.
    """
    out = os.path.abspath(out)
    if resume and threads is None:
        old = load_manifest(out) if os.path.isdir(out) else None
        threads = (old or {}).get("settings", {}).get("threads")
    threads = int(threads or 1)
    settings = {"threads": threads, "device": device, "weights": weights, "format": fmt, "workers": workers,
                "address": address, "ray": ray_version(), "contact_frame": contact_frame}
    manifest = prepare_folder(wedge, out, resume, force, settings)
    os.makedirs(out, exist_ok=True)
    write_specs(wedge, out)
    entries = manifest["variants"]
    todo = [e for e in entries if not (resume and e["status"] == "complete"
                                       and _bake_status(out, e["folder"]) == "complete")]
    for e in todo:
        e.update(status="pending", exit_code=None, error=None)
    manifest["status"] = "running"
    save_manifest(out, manifest)
    total, done = len(entries), len(entries) - len(todo)
    bar = _Bar(progress, total, done)
    bar.emit("start", out=out, variants=total, to_run=len(todo), threads=threads)
    started, cancelled = time.time(), False
    ray = None
    owned = False
    try:
        if todo:
            ray, owned = start_ray(workers, address)
            task = ray.remote(bake_task).options(num_cpus=threads, max_retries=0)
            refs = {}
            for e in todo:
                argv = bake_argv(wedge.kind, os.path.join(out, e["spec_file"]), os.path.join(out, e["folder"]),
                                 threads=threads, device=device, weights=weights, fmt=fmt,
                                 resume=resume, force=force and not resume)
                refs[task.remote(bake, argv, os.path.join(out, e["log"]))] = e
                e["status"] = "queued"
            save_manifest(out, manifest)
            pending = list(refs)
            try:
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                    for ref in ready:
                        e = refs[ref]
                        try:
                            _record(e, ray.get(ref), out)
                        except Exception as exc:  # noqa: BLE001 -- a crashed worker, a lost node
                            e.update(status="failed", exit_code=None,
                                     error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}")
                        done += 1
                        save_manifest(out, manifest)
                        bar.variant(e, done, total)
            except KeyboardInterrupt:
                cancelled = True
                _cancel(ray, pending, refs, out, manifest)
    finally:
        bar.close()
        if owned and ray is not None:
            ray.shutdown()
    failed = [e for e in entries if e["status"] == "failed"]
    if cancelled or any(e["status"] in ("cancelled", "pending", "queued") for e in entries):
        manifest["status"] = "cancelled"
    else:
        manifest["status"] = "failed" if failed else "complete"
    try:
        cells = [(os.path.join(out, e["folder"]), [e["name"].split("_", 1)[0]]
                  + [f"{k}={_show(v)}" for k, v in e["values"].items()]
                  + ([e["status"]] if e["status"] != "complete" else [])) for e in entries]
        from metaphys.bake.contact_sheet import write_contact_sheet
        manifest["contact_sheet"] = write_contact_sheet(os.path.join(out, CONTACT_SHEET), wedge.kind, cells,
                                                        frame=contact_frame, cell=contact_cell)
    except Exception as exc:  # noqa: BLE001 -- the bakes are done; a sheet that cannot be drawn is said
        manifest["contact_sheet"] = {"error": f"{type(exc).__name__}: {exc}"}
    elapsed = time.time() - started
    manifest["elapsed_s"] = round(elapsed, 3)
    save_manifest(out, manifest)
    code = 130 if manifest["status"] == "cancelled" else (1 if failed else 0)
    bar.emit("done", out=out, status=manifest["status"], counts=manifest["counts"], elapsed=round(elapsed, 3))
    return WedgeResult(manifest, code, elapsed, len(todo), total - len(todo))


def _cancel(ray, pending, refs, out: str, manifest: dict, grace_s: float = 60.0) -> None:
    """Ctrl-C: cancel every unfinished task (queued ones never start; running bakes get a
    KeyboardInterrupt, record their state as cancelled and return), then wait for them to settle."""
    print(f"metaphys wedge: cancelling {len(pending)} unfinished variant(s); finished variants are kept "
          "(continue with --resume)", file=sys.stderr)
    for ref in pending:
        try:
            ray.cancel(ref, force=False)
        except Exception:  # noqa: BLE001 -- already finished
            pass
    deadline = time.time() + grace_s
    for ref in pending:
        e = refs[ref]
        try:
            _record(e, ray.get(ref, timeout=max(1.0, deadline - time.time())), out)
        except Exception:  # noqa: BLE001 -- TaskCancelledError (never started), a timeout
            e.update(status="cancelled", exit_code=130, error=None)
    save_manifest(out, manifest)
