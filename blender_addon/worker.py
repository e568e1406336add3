"""Client side of the bake contract (docs/bake-spec.md): run ``metaphys bake`` in a subprocess.

Pure Python (no bpy): the add-on keeps torch out of Blender's process by running the engine with
another interpreter and reading its JSON-lines progress stream::

    python -m metaphys bake cloth|smoke --spec SPEC.json --out DIR --progress json

* ``WorkerProcess`` starts the worker, reads stdout on a thread (so Blender's UI never blocks on
  a pipe), hands parsed events to ``poll()``, keeps stderr in a log file, and cancels with
  SIGTERM (the engine keeps its finished frames and exits 130; the add-on throws the staging
  folder away).
* ``probe_interpreter`` checks that an interpreter can import metaphys (fast: torch is not
  imported) and explains what to do when it cannot.
* ``candidate_interpreters`` lists the places "Detect" tries.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

__all__ = ["WorkerProcess", "BakeOutcome", "build_command", "worker_env", "probe_interpreter",
           "candidate_interpreters", "find_repo_root", "detect_interpreter", "EXIT_OK", "EXIT_FAILED",
           "EXIT_BAD_INPUT", "EXIT_CANCELLED"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130

_IS_WIN = os.name == "nt"


def build_command(python: str, kind: str, spec_path: str, out_dir: str, device: str = "",
                  extra: tuple = ()) -> list[str]:
    if kind not in ("cloth", "smoke"):
        raise ValueError(f"kind must be 'cloth' or 'smoke', got {kind!r}")
    cmd = [python, "-m", "metaphys", "bake", kind, "--spec", spec_path, "--out", out_dir, "--progress", "json"]
    if device:
        cmd += ["--device", device]
    return cmd + list(extra)


def worker_env(pythonpath: str = "", base: dict | None = None) -> dict:
    """Environment for the worker: ``pythonpath`` (a metaphys checkout) first on PYTHONPATH.

    Blender's own PYTHONHOME/PYTHONPATH (if any) must not leak into another interpreter.
    """
    env = dict(os.environ if base is None else base)
    for k in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):
        env.pop(k, None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


@dataclass
class BakeOutcome:
    status: str                 # "done" | "error" | "cancelled"
    message: str = ""
    returncode: int | None = None
    frames_done: int = 0
    elapsed: float = 0.0
    events: list = field(default_factory=list)


class WorkerProcess:
    """One ``metaphys bake`` run. ``poll()`` is non-blocking; ``wait()`` blocks."""

    def __init__(self, cmd: list[str], env: dict | None = None, cwd: str | None = None,
                 log_path: str | None = None):
        self.cmd = list(cmd)
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._q: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._log = None
        self.frames_total = 0
        self.frames_done = 0
        self.error_message = ""
        self.done_event: dict | None = None
        self.start_event: dict | None = None
        self.events: list[dict] = []
        self.cancelled = False
        self.t0 = 0.0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "WorkerProcess":
        kwargs = {}
        if _IS_WIN:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | \
                getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # our own process group: a cancel reaches its children
        if self.log_path:
            self._log = open(self.log_path, "wb")
            stderr = self._log
        else:
            stderr = subprocess.DEVNULL
        self.t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.cwd, **kwargs)
        except OSError as e:
            self._close_log()
            raise RuntimeError(f"cannot start the metaphys worker {self.cmd[0]!r}: {e.strerror or e}") from e
        self._reader = threading.Thread(target=self._read, name="metaphys-worker-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = None
            if isinstance(ev, dict) and "event" in ev:
                self._q.put(ev)
            elif self._log is not None:  # stray prints belong in the log, not in the protocol
                try:
                    self._log.write(b"[stdout] " + raw)
                    self._log.flush()
                except ValueError:
                    pass
        self._q.put(None)  # EOF marker

    def _close_log(self) -> None:
        if self._log is not None:
            try:
                self._log.close()
            except OSError:
                pass
            self._log = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self):
        return None if self.proc is None else self.proc.poll()

    def _handle(self, ev: dict) -> None:
        self.events.append(ev)
        kind = ev.get("event")
        if kind == "start":
            self.start_event = ev
            self.frames_total = int(ev.get("frames") or self.frames_total or 0)
        elif kind == "frame":
            idx = ev.get("index")
            self.frames_done = int(idx) + 1 if isinstance(idx, int) else self.frames_done + 1
            if ev.get("frames"):
                self.frames_total = int(ev["frames"])
        elif kind == "done":
            self.done_event = ev
        elif kind == "error":
            self.error_message = str(ev.get("message") or "unknown error")

    def poll(self) -> list[dict]:
        """Events that arrived since the last call (never blocks)."""
        out = []
        while True:
            try:
                ev = self._q.get_nowait()
            except queue.Empty:
                break
            if ev is None:
                self._q.put(None)  # keep the EOF marker for finished()
                break
            self._handle(ev)
            out.append(ev)
        return out

    def finished(self) -> bool:
        """True once the process exited and its stdout was read to the end."""
        if self.proc is None or self.proc.poll() is None:
            return False
        return self._reader is None or not self._reader.is_alive()

    def wait(self, timeout: float | None = None, on_event=None, should_cancel=None) -> "BakeOutcome":
        """Block until the worker ends; ``on_event(ev)`` for each event; ``should_cancel()`` polled."""
        t_end = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.finished():
                for ev in self.poll():
                    if on_event is not None:
                        on_event(ev)
                if should_cancel is not None and should_cancel():
                    self.cancel()
                    break
                if t_end is not None and time.monotonic() > t_end:
                    self.cancel()
                    self.error_message = self.error_message or f"the worker did not finish within {timeout:.0f} s"
                    break
                time.sleep(0.05)
        except KeyboardInterrupt:
            self.cancel()
        for ev in self.poll():
            if on_event is not None:
                on_event(ev)
        return self.outcome()

    def cancel(self, grace: float = 15.0, settle: float = 0.1) -> None:
        """SIGTERM the worker (its process group); kill it after ``grace`` seconds.

        The engine turns SIGTERM into KeyboardInterrupt between two bytecodes, i.e. inside the running
        solver iteration, marks its manifest "cancelled" (finished frames kept) and reports an "error"
        event. What follows is only the interpreter's teardown (about 0.5 s with torch loaded), so
        ``settle`` seconds after that report the process group is killed instead of waited for."""
        self.cancelled = True
        p = self.proc
        if p is None or p.poll() is not None:
            self._join()
            return
        seen = len(self.events)
        self._signal(signal.SIGTERM)
        t_end = time.monotonic() + grace
        reported_at = None
        while p.poll() is None and time.monotonic() < t_end:
            self.poll()
            if reported_at is None and any(e.get("event") == "error" for e in self.events[seen:]):
                reported_at = time.monotonic()
            if reported_at is not None and time.monotonic() - reported_at > settle:
                break
            time.sleep(0.005)
        if p.poll() is None:
            self._signal(signal.SIGKILL if not _IS_WIN else None)
            p.wait()
        self._join()

    def _signal(self, sig) -> None:
        p = self.proc
        try:
            if _IS_WIN:
                p.terminate() if sig == signal.SIGTERM else p.kill()
            else:
                os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(5.0)
        if self.proc is not None and self.proc.stdout is not None and (self._reader is None or not self._reader.is_alive()):
            try:
                self.proc.stdout.close()
            except OSError:
                pass
        self._close_log()

    def stderr_tail(self, lines: int = 6) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 8192))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        rows = [r for r in text.splitlines() if r.strip()]
        return "\n".join(rows[-lines:])

    def outcome(self) -> BakeOutcome:
        """Summarise a finished run (call after ``finished()`` or ``cancel()``)."""
        self.poll()
        self._join()
        rc = self.returncode
        elapsed = time.monotonic() - self.t0
        if self.done_event is not None and rc == EXIT_OK and not self.cancelled:
            return BakeOutcome("done", "", rc, self.frames_done, float(self.done_event.get("elapsed", elapsed)),
                               self.events)
        if self.cancelled or rc == EXIT_CANCELLED:
            return BakeOutcome("cancelled", self.error_message or "bake cancelled", rc, self.frames_done, elapsed,
                               self.events)
        msg = self.error_message
        if not msg:
            tail = self.stderr_tail(1)
            if rc == EXIT_OK:
                msg = "the worker exited without a 'done' event"
            else:
                msg = f"the worker exited with code {rc}"
            if tail:
                msg += f": {tail.strip()}"
            if self.log_path:
                msg += f" (log: {self.log_path})"
        return BakeOutcome("error", msg, rc, self.frames_done, elapsed, self.events)


# -- interpreter discovery ---------------------------------------------------------------------
_PROBE = r"""
import importlib.util, json, sys
out = {"python": sys.executable, "version": sys.version.split()[0]}
try:
    import metaphys
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
else:
    out["metaphys"] = getattr(metaphys, "__version__", "?")
    out["metaphys_path"] = getattr(metaphys, "__file__", "")
    out["cli"] = importlib.util.find_spec("metaphys.__main__") is not None
    out["torch"] = importlib.util.find_spec("torch") is not None
print("METAPHYS_PROBE " + json.dumps(out))
"""


def probe_interpreter(python: str, pythonpath: str = "", timeout: float = 60.0) -> tuple[bool, str, dict]:
    """Can ``python`` (with ``pythonpath``) run the metaphys worker? Returns (ok, message, info)."""
    if not python:
        return False, "no Python interpreter is set (Preferences > Add-ons > metaphys: Detect)", {}
    if not (os.path.isfile(python) or shutil.which(python)):
        return False, f"Python interpreter {python!r} does not exist", {}
    try:
        # cwd: a neutral folder, so a metaphys/ folder in Blender's working directory is not picked up
        r = subprocess.run([python, "-c", _PROBE], capture_output=True, timeout=timeout,
                           env=worker_env(pythonpath), stdin=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"cannot run {python!r}: {e}", {}
    info = {}
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("METAPHYS_PROBE "):
            try:
                info = json.loads(line[len("METAPHYS_PROBE "):])
            except ValueError:
                pass
    if not info:
        err = r.stderr.decode("utf-8", "replace").strip().splitlines()
        return False, f"{python!r} is not a working Python 3 interpreter ({err[-1] if err else 'no output'})", {}
    if "error" in info:
        where = f" with PYTHONPATH={pythonpath}" if pythonpath else ""
        return False, (f"{python!r}{where} cannot import metaphys ({info['error']}). Install metaphys into that "
                       "environment (pip install -e <metaphys checkout>), set 'metaphys folder' to the checkout, "
                       "or choose the Python of the environment where metaphys is installed"), info
    if not info.get("torch"):
        return False, f"{python!r} imports metaphys {info['metaphys']} but has no torch installed", info
    if not info.get("cli"):
        return False, (f"{python!r} imports metaphys {info['metaphys']} from {info.get('metaphys_path')} but it has "
                       "no 'python -m metaphys' command line (too old a checkout?)"), info
    return True, f"metaphys {info['metaphys']} (Python {info['version']}) at {info['python']}", info


def find_repo_root(start: str) -> str:
    """The metaphys checkout above ``start`` (a folder holding metaphys/__init__.py), or ''."""
    d = os.path.realpath(start)
    if os.path.isfile(d):
        d = os.path.dirname(d)
    for _ in range(6):
        if os.path.isfile(os.path.join(d, "metaphys", "__init__.py")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return ""


def _venv_python(root: str) -> list[str]:
    out = []
    for venv in (".venv", "venv", "env"):
        for rel in (("bin", "python"), ("bin", "python3"), ("Scripts", "python.exe")):
            p = os.path.join(root, venv, *rel)
            if os.path.isfile(p):
                out.append(p)
                break
    return out


def _shebang_python(exe: str) -> str:
    try:
        with open(exe, "rb") as fh:
            first = fh.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    if not first.startswith("#!"):
        return ""
    parts = first[2:].split()
    if not parts:
        return ""
    if os.path.basename(parts[0]) == "env" and len(parts) > 1:
        return shutil.which(parts[1]) or ""
    return parts[0]


def candidate_interpreters(addon_dir: str, metaphys_folder: str = "", blender_python: str = "") -> list[tuple[str, str]]:
    """(python, pythonpath) pairs "Detect" tries, most specific first, without duplicates."""
    cands: list[tuple[str, str]] = []
    roots = [r for r in (metaphys_folder, find_repo_root(addon_dir), find_repo_root(os.getcwd())) if r]
    env = os.environ.get("METAPHYS_PYTHON")
    if env:
        cands.append((env, ""))
    for root in roots:
        for py in _venv_python(root):
            cands += [(py, ""), (py, root)]
    exe = shutil.which("metaphys")
    if exe:
        py = _shebang_python(exe)
        if py:
            cands.append((py, ""))
    for conda in (os.environ.get("VIRTUAL_ENV"), os.environ.get("CONDA_PREFIX")):
        if conda:
            cands += [(py, "") for py in _venv_python(os.path.dirname(conda))]
            for rel in (("bin", "python"), ("python.exe",)):
                p = os.path.join(conda, *rel)
                if os.path.isfile(p):
                    cands.append((p, ""))
    for name in ("python3", "python"):
        p = shutil.which(name)
        if p:
            cands.append((p, ""))
            cands += [(p, root) for root in roots]
    if blender_python:
        cands.append((blender_python, ""))
        cands += [(blender_python, root) for root in roots]
    seen, out = set(), []
    for py, pp in cands:
        key = (os.path.realpath(py) if os.path.exists(py) else py, pp)
        if key not in seen:
            seen.add(key)
            out.append((py, pp))
    return out


def detect_interpreter(addon_dir: str, metaphys_folder: str = "", blender_python: str = "",
                       timeout: float = 60.0) -> tuple[str, str, str, list[str]]:
    """First working candidate: (python, pythonpath, message, notes about the failed ones)."""
    notes = []
    for py, pp in candidate_interpreters(addon_dir, metaphys_folder, blender_python):
        ok, msg, _ = probe_interpreter(py, pp, timeout)
        if ok:
            return py, pp, msg, notes
        notes.append(msg)
    return "", "", "", notes


if __name__ == "__main__":  # pragma: no cover - manual check: python worker.py
    print(detect_interpreter(os.path.dirname(__file__), blender_python=sys.executable))
