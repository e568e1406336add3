"""Atomic file writes: a reader (Blender, a game engine, a resumed bake) never sees a half-written file.

Every writer writes into a temporary file in the *same directory* as the target, flushes and
fsyncs it, then ``os.replace``s it over the target (atomic on POSIX and on Windows for files on
one volume) and fsyncs the directory. If the body of the context raises (an error, a
``KeyboardInterrupt`` from a cancelled bake), the temporary file is removed and the previous
target, if any, is left byte-identical.

A process killed with SIGKILL cannot clean up: it may leave a hidden temporary file
(``.<name>.<random>.metaphys-tmp<ext>``) beside the target, never a torn target.
``remove_stale_temps(directory)`` deletes such leftovers, e.g. when a bake resumes.

Temporary names keep the target's extension last, so writers that pick a format from the file
name (trimesh, imageio, openvdb) behave as they would for the target.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

TEMP_MARKER = ".metaphys-tmp"

__all__ = [
    "atomic_path",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_directory",
    "remove_stale_temps",
    "make_temp",
    "is_temp_name",
    "TEMP_MARKER",
]


def _umask() -> int:
    # os.umask is the only portable way to read the umask: set it and put it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(directory: bool = False) -> int:
    """Mode a plain open()/mkdir() would give a new file/directory (mkstemp/mkdtemp give 0o600/0o700)."""
    return (0o777 if directory else 0o666) & ~_umask()


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _split_ext(name: str) -> tuple[str, str]:
    # "frame_0001.obj" -> ("frame_0001", ".obj"); keeps multi-part names' last suffix only.
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def make_temp(target: PathLike) -> Path:
    """A new empty temporary file beside ``target`` (hidden, marked, ending in the target's extension)."""
    target = Path(target)
    stem, ext = _split_ext(target.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f"{TEMP_MARKER}{ext}", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file or folder of this module (a killed write's leftover)."""
    return name.startswith(".") and TEMP_MARKER in name


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _commit(tmp: Path, target: Path) -> None:
    if not tmp.exists():
        raise RuntimeError(f"atomic write of {str(target)!r}: the writer removed its temporary file "
                           f"{str(tmp)!r}; nothing was written")
    try:
        mode = os.stat(target).st_mode & 0o7777 if target.exists() else _default_mode()
        os.chmod(tmp, mode)
    except OSError:
        pass
    _fsync_file(tmp)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path (a ``str``) to write; on success it replaces ``path`` atomically.

    Use it with writers that want a file name (``trimesh.export``, ``imageio``, ``openvdb``)::

        with atomic_path("out/frame_0001.glb") as tmp:
            mesh.export(tmp)

    The temporary file exists (empty) when the body starts. The parent directory must exist.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"atomic write target {str(target)!r} is a directory")
    tmp = make_temp(target)
    try:
        yield str(tmp)
        _commit(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: str | None = None,
                newline: str | None = None) -> Iterator[IO]:
    """Yield an open file object (``mode`` 'w'/'wb'/'x'-less write modes) replacing ``path`` on success.

    The file is flushed and fsynced before the replace. Text modes default to UTF-8.
    """
    if mode not in ("w", "wb", "wt", "w+", "wb+", "w+b"):
        raise ValueError(f"atomic_open mode must be a write mode like 'w' or 'wb', got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (newlines written as given, no translation)."""
    with atomic_open(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_directory(path: PathLike, overwrite: bool = True) -> Iterator[str]:
    """Yield a temporary directory beside ``path``; on success it takes ``path``'s place.

    For per-frame folders (several files that belong together). On failure the temporary
    directory is removed and an existing ``path`` is untouched. With ``overwrite=True`` an
    existing directory is first renamed aside and removed after the new one is in place: two
    renames, so a reader may briefly see no directory, but never a partial one.
    With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` at commit.
    """
    target = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_MARKER, dir=target.parent))
    try:
        yield str(tmp)
        for root, _dirs, files in os.walk(tmp):
            for f in files:
                _fsync_file(Path(root) / f)
        os.chmod(tmp, _default_mode(directory=True))
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{str(target)!r} exists and overwrite=False")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", suffix=TEMP_MARKER,
                                        dir=target.parent))
            os.rmdir(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temps(directory: PathLike, keep: Callable[[str], bool] | None = None) -> list[str]:
    """Delete temporary files/dirs left in ``directory`` by killed atomic writes; return their names.

    Only names carrying the ``.metaphys-tmp`` marker are touched, and of those none that ``keep(name)``
    accepts; a link is removed itself, never followed. Do not call it while another process writes
    into the same directory.
    """
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in sorted(d.iterdir()):
        if is_temp_name(p.name) and not (keep is not None and keep(p.name)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                _remove_quietly(p)
            removed.append(p.name)
    return removed
