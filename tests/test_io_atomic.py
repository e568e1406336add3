"""Atomic writes: success replaces, failure keeps the old bytes and leaves no temp file."""
import os

import pytest

from metaphys.io.atomic import (TEMP_MARKER, atomic_directory, atomic_open, atomic_path, atomic_write_bytes,
                                atomic_write_text, remove_stale_temps)


def _listing(d):
    return sorted(os.listdir(d))


def test_write_bytes_and_text(tmp_path):
    p = tmp_path / "a.bin"
    atomic_write_bytes(p, b"\x00\x01abc")
    assert p.read_bytes() == b"\x00\x01abc"
    atomic_write_text(p, "héllo\nworld\r\n")
    assert p.read_bytes() == "héllo\nworld\r\n".encode("utf-8")
    assert _listing(tmp_path) == ["a.bin"]


def test_failure_keeps_old_bytes_and_no_temp(tmp_path):
    p = tmp_path / "cache.pc2"
    old = bytes(range(256)) * 3
    p.write_bytes(old)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(p, "wb") as fh:
            fh.write(b"partial new content")
            raise RuntimeError("boom")
    assert p.read_bytes() == old
    assert _listing(tmp_path) == ["cache.pc2"]

    with pytest.raises(KeyboardInterrupt):  # a cancelled bake
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"xx")
            raise KeyboardInterrupt
    assert p.read_bytes() == old
    assert _listing(tmp_path) == ["cache.pc2"]


def test_atomic_path_keeps_extension_and_mode(tmp_path):
    p = tmp_path / "frame_0001.obj"
    with atomic_path(p) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        assert tmp.endswith(".obj") and TEMP_MARKER in tmp
        with open(tmp, "w") as fh:
            fh.write("v 0 0 0\n")
    assert p.read_text() == "v 0 0 0\n"
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_directory(tmp_path):
    d = tmp_path / "frame_0001"
    with atomic_directory(d) as tmp:
        with open(os.path.join(tmp, "a.txt"), "w") as fh:
            fh.write("one")
    assert (d / "a.txt").read_text() == "one"
    with pytest.raises(ValueError):
        with atomic_directory(d) as tmp:
            with open(os.path.join(tmp, "b.txt"), "w") as fh:
                fh.write("two")
            raise ValueError("fail")
    assert _listing(d) == ["a.txt"]
    with atomic_directory(d) as tmp:
        with open(os.path.join(tmp, "b.txt"), "w") as fh:
            fh.write("two")
    assert _listing(d) == ["b.txt"]
    assert _listing(tmp_path) == ["frame_0001"]


def test_remove_stale_temps(tmp_path):
    (tmp_path / "keep.obj").write_text("x")
    (tmp_path / f".keep.abc{TEMP_MARKER}.obj").write_text("torn")
    assert remove_stale_temps(tmp_path) == [f".keep.abc{TEMP_MARKER}.obj"]
    assert _listing(tmp_path) == ["keep.obj"]


def test_package_import_is_light():
    import subprocess
    import sys

    code = ("import sys, metaphys.io; "
            "print(sorted(m for m in ('bpy', 'openvdb', 'trimesh', 'matplotlib', 'PIL', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_remove_stale_temps_keeps_what_it_is_told_and_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("x")
    d = tmp_path / "d"
    d.mkdir()
    os.symlink(outside, d / f".frames.abc{TEMP_MARKER}")
    (d / f"..metaphys.x{TEMP_MARKER}.lock").write_text("a concurrent lock attempt")
    assert remove_stale_temps(d, keep=lambda n: n.endswith(".lock")) == [f".frames.abc{TEMP_MARKER}"]
    assert (outside / "precious.txt").exists() and os.listdir(d) == [f"..metaphys.x{TEMP_MARKER}.lock"]
