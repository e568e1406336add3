"""Build the Blender extension zip (what `blender --command extension build` makes) without Blender.

    python blender_addon/tools/build_zip.py [--out build/blender]

The zip holds the add-on files at its root beside blender_manifest.toml, minus the manifest's
[build] paths_exclude_pattern (gitignore-style: "dir/" for folders, leading "/" anchors to the root).
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import tomllib
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # blender_addon/


def _addon_common():
    """blender_addon/common.py (its atomic_path), loaded by file: this script runs outside Blender and the
    add-on is not an importable package here."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("metaphys_addon_common", os.path.join(HERE, "common.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _excluded(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    name = os.path.basename(rel)
    for p in patterns:
        dir_only = p.endswith("/")
        q = p.rstrip("/")
        if dir_only and not is_dir:
            continue
        if q.startswith("/"):
            if fnmatch.fnmatch(rel, q[1:]):
                return True
        elif fnmatch.fnmatch(name, q) or fnmatch.fnmatch(rel, q):
            return True
    return False


def build(out_dir: str) -> str:
    with open(os.path.join(HERE, "blender_manifest.toml"), "rb") as fh:
        manifest = tomllib.load(fh)
    for key in ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                "blender_version_min", "license"):
        if key not in manifest:
            sys.exit(f"blender_manifest.toml: missing {key!r}")
    if len(manifest["tagline"]) > 64 or manifest["tagline"][-1:] in ".!?,;:":
        sys.exit("blender_manifest.toml: the tagline must be at most 64 characters without final punctuation")
    patterns = list(manifest.get("build", {}).get("paths_exclude_pattern", []))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{manifest['id']}-{manifest['version']}.zip")
    n = 0
    with _addon_common().atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for base, dirs, files in os.walk(HERE):
            rel_base = os.path.relpath(base, HERE)
            rel_base = "" if rel_base == "." else rel_base.replace(os.sep, "/")
            dirs[:] = sorted(d for d in dirs if not _excluded(f"{rel_base}/{d}".lstrip("/"), True, patterns))
            for f in sorted(files):
                rel = f"{rel_base}/{f}".lstrip("/")
                if _excluded(rel, False, patterns):
                    continue
                zf.write(os.path.join(base, f), rel)
                n += 1
    print(f"{path} ({n} files)")
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "build", "blender"))
    build(ap.parse_args().out)
