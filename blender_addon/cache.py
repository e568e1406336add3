"""Cache folders: bake into a fresh staging folder, swap it in only when the bake succeeded.

Pure Python (no bpy). Layout for an object's cache ``<root>/<name>/``::

    <root>/.<name>.bake-XXXX/          staging (one per bake, removed on cancel/failure)
        input/bake_spec.json, *.npy    what the add-on sends the worker
        out/                           the worker's --out DIR
        worker.log                     the worker's stderr
    <root>/<name>/                     the committed cache: out/ + bake_spec.json + worker.log

``commit`` renames the old cache aside, renames the new one in and only then deletes the old one,
so a reader sees either the old or the new cache; if the second rename fails the old one is put
back. ``recover`` repairs the one window a crash can leave (old renamed aside, new not yet in).
A cancelled or failed bake never touches ``<root>/<name>/``.

Only folders marked as ours (a ``.metaphys_cache`` file, written into every cache and staging
folder the add-on makes) are ever replaced or deleted: the Cache Folder is a setting saved in the
.blend, and pointing it at a project folder must never wipe that folder. An existing folder
without the marker (unless empty), a file or a symbolic link there is refused (CacheError).
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile

__all__ = ["Staging", "make_staging", "commit", "discard", "recover", "remove_cache", "cache_files_hash",
           "check_replaceable", "is_metaphys_cache", "CacheError", "SPEC_NAME", "LOG_NAME", "MARKER"]

SPEC_NAME = "bake_spec.json"
LOG_NAME = "worker.log"
MARKER = ".metaphys_cache"  # marks a folder as ours: only marked folders are replaced or deleted


class CacheError(RuntimeError):
    """A cache folder the add-on refuses to replace or delete (the message names it and says why)."""


def _mark(folder: str, what: str) -> None:
    with open(os.path.join(folder, MARKER), "w") as fh:
        fh.write(f"metaphys Blender add-on {what}\n")


def is_metaphys_cache(folder: str) -> bool:
    """True for a real folder (not a link) holding the add-on's marker file."""
    return (os.path.isdir(folder) and not os.path.islink(folder)
            and os.path.isfile(os.path.join(folder, MARKER)))


def check_replaceable(final_dir: str) -> None:
    """CacheError unless ``final_dir`` is absent, empty or a metaphys cache: never replace a user's folder."""
    if os.path.islink(final_dir):
        raise CacheError(f"the cache folder {final_dir!r} is a symbolic link; the add-on never replaces or "
                         "deletes through links: set the object's Cache Folder to a real folder")
    if not os.path.lexists(final_dir) or is_metaphys_cache(final_dir):
        return
    if not os.path.isdir(final_dir):
        raise CacheError(f"the cache folder {final_dir!r} is a file; set the object's Cache Folder to a new "
                         "or empty folder (the add-on bakes into a folder it owns)")
    if os.listdir(final_dir):
        raise CacheError(f"the cache folder {final_dir!r} already holds files and is not a metaphys cache (no "
                         f"{MARKER} file), so baking would replace it; it was left untouched. Set the object's "
                         "Cache Folder to a new or empty folder")


class Staging:
    def __init__(self, root: str, final_dir: str):
        self.root = root
        self.final_dir = final_dir
        self.input_dir = os.path.join(root, "input")
        self.out_dir = os.path.join(root, "out")
        self.log_path = os.path.join(root, LOG_NAME)
        self.spec_path = os.path.join(self.input_dir, SPEC_NAME)


def make_staging(final_dir: str) -> Staging:
    final_dir = os.path.abspath(final_dir)
    parent, name = os.path.split(final_dir)
    check_replaceable(final_dir)  # refuse before the bake runs, not after it
    os.makedirs(parent, exist_ok=True)
    recover(final_dir)
    root = tempfile.mkdtemp(prefix=f".{name}.bake-", dir=parent)
    _mark(root, "staging folder")
    st = Staging(root, final_dir)
    os.makedirs(st.input_dir)
    return st


def _aside_name(final_dir: str) -> str:
    parent, name = os.path.split(final_dir)
    fd, path = tempfile.mkstemp(prefix=f".{name}.old-", dir=parent)
    os.close(fd)
    os.remove(path)
    return path


def commit(st: Staging) -> str:
    """Make the staging bake the cache: ``out/`` plus the spec and log, swapped in. Returns the cache dir."""
    new = st.out_dir
    if not os.path.isdir(new):
        raise RuntimeError(f"the worker wrote no output folder {new!r}")
    shutil.copy2(st.spec_path, os.path.join(new, SPEC_NAME))
    for extra in glob.glob(os.path.join(st.input_dir, "*.npy")):
        shutil.copy2(extra, os.path.join(new, os.path.basename(extra)))
    if os.path.exists(st.log_path):
        shutil.copy2(st.log_path, os.path.join(new, LOG_NAME))
    _mark(new, "cache")
    final = st.final_dir
    check_replaceable(final)  # again: the folder may have changed while the bake ran
    old = None
    if os.path.lexists(final):
        old = _aside_name(final)
        os.rename(final, old)
    try:
        os.rename(new, final)
    except OSError:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    discard(st)
    return final


def discard(st: Staging) -> None:
    shutil.rmtree(st.root, ignore_errors=True)


def recover(final_dir: str) -> None:
    """Put back a cache a crash left renamed aside, drop stale staging/aside folders of ``final_dir``."""
    parent, name = os.path.split(os.path.abspath(final_dir))
    olds = sorted((p for p in glob.glob(os.path.join(parent, f".{name}.old-*")) if _ours_or_empty(p)),
                  key=os.path.getmtime)
    if olds and not os.path.lexists(final_dir):
        os.rename(olds.pop(), final_dir)
    for p in olds:
        shutil.rmtree(p, ignore_errors=True)


def _ours_or_empty(folder: str) -> bool:
    """A folder the add-on may delete: marked as ours, or an empty real folder."""
    return is_metaphys_cache(folder) or (os.path.isdir(folder) and not os.path.islink(folder)
                                         and not os.listdir(folder))


def remove_stale_staging(final_dir: str) -> None:
    """Delete staging folders of ``final_dir`` that a crash left (only marked ones: ours)."""
    parent, name = os.path.split(os.path.abspath(final_dir))
    for p in glob.glob(os.path.join(parent, f".{name}.bake-*")):
        if is_metaphys_cache(p):
            shutil.rmtree(p, ignore_errors=True)


def remove_cache(final_dir: str) -> bool:
    """Delete a committed cache folder (only one the add-on made). True if something was removed."""
    if not final_dir or not os.path.lexists(final_dir):
        return False
    if os.path.islink(final_dir) or not is_metaphys_cache(final_dir):
        raise CacheError(f"{final_dir!r} is not a metaphys cache folder (no {MARKER} file, or a link); "
                         "not deleting it")
    shutil.rmtree(final_dir)
    parent = os.path.dirname(final_dir)
    try:
        os.rmdir(parent)  # the metaphys_cache folder, if now empty
    except OSError:
        pass
    return True


def cache_files_hash(folder: str) -> dict:
    """{relative path: sha256} of every file under ``folder`` (tests: a cancelled bake changes nothing)."""
    import hashlib
    out = {}
    for base, _dirs, files in os.walk(folder):
        for f in files:
            p = os.path.join(base, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out
