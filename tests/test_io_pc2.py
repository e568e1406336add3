"""PC2 caches: exact float32 round trips, header bytes per Blender's reader, resumable writer."""
import os
import struct

import numpy as np
import pytest

from metaphys.io.pc2 import PC2Writer, append_pc2, read_pc2, read_pc2_header, truncate_pc2, write_pc2


def test_pc2_roundtrip_header_and_size(tmp_path, frames):
    p = tmp_path / "c.pc2"
    write_pc2(p, frames, start=1.0, sample_rate=1.0)
    raw = p.read_bytes()
    F, V = frames.shape[:2]
    assert len(raw) == 32 + F * V * 12
    assert raw[:12] == b"POINTCACHE2\0"
    assert raw[12:32] == struct.pack("<iiffi", 1, V, 1.0, 1.0, F)
    assert raw[32:44] == struct.pack("<3f", *frames[0, 0].tolist())
    got, start, rate = read_pc2(p)
    assert got.dtype == np.float32 and np.array_equal(got, frames)
    assert (start, rate) == (1.0, 1.0)
    write_pc2(p, frames.astype(np.float64), start=10.0, sample_rate=0.5)
    got, start, rate = read_pc2(p)
    assert np.array_equal(got, frames) and (start, rate) == (10.0, 0.5)


def test_pc2_rejects_nonfinite_and_keeps_old(tmp_path, frames):
    p = tmp_path / "c.pc2"
    write_pc2(p, frames)
    old = p.read_bytes()
    bad = frames.copy()
    bad[2, 5, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2"):
        write_pc2(p, bad)
    big = frames.astype(np.float64)
    big[3, 0, 0] = 1e300  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="frame 3"):
        write_pc2(p, big)
    with pytest.raises(ValueError, match="vertices"):
        append_pc2(p, frames[:, :10])
    with pytest.raises(ValueError, match="frame 5"):
        append_pc2(p, bad[1:3])  # appended frames are numbered after the existing 4
    assert p.read_bytes() == old
    assert os.listdir(tmp_path) == ["c.pc2"]


def test_pc2_append(tmp_path, frames):
    p = tmp_path / "c.pc2"
    assert append_pc2(p, frames[:2], start=3.0) == 2
    assert append_pc2(p, frames[2]) == 3
    assert append_pc2(p, frames[3:]) == 4
    got, start, _ = read_pc2(p)
    assert np.array_equal(got, frames) and start == 3.0


def test_pc2_writer_resume_and_torn_tail(tmp_path, frames):
    p = tmp_path / "c.pc2"
    with PC2Writer(p, 15) as w:
        w.write(frames[0])
        w.write(frames[1:3])
    assert np.array_equal(read_pc2(p)[0], frames[:3])
    with open(p, "ab") as fh:  # a crash after data, before the header count: torn tail
        fh.write(b"\x01" * 100)
    assert np.array_equal(read_pc2(p)[0], frames[:3])  # readers ignore it
    with PC2Writer(p, 15, resume=True, keep=2) as w:  # manifest says 2 frames done
        assert w.frames_written == 2
        w.write(frames[2:])
    assert os.path.getsize(p) == 32 + 4 * 15 * 12
    assert np.array_equal(read_pc2(p)[0], frames)
    with pytest.raises(ValueError, match="15 points"):
        PC2Writer(p, 16, resume=True)
    truncate_pc2(p, 1)
    assert read_pc2_header(p).num_samples == 1 and os.path.getsize(p) == 32 + 15 * 12


def test_pc2_rejects_garbage(tmp_path):
    p = tmp_path / "x.pc2"
    p.write_bytes(b"NOTACACHE!!!" + b"\0" * 20)
    with pytest.raises(ValueError, match="magic"):
        read_pc2(p)
    p.write_bytes(b"POINTCACHE2\0" + struct.pack("<iiffi", 1, 10, 0, 1, 5))
    with pytest.raises(ValueError, match="truncated"):
        read_pc2(p)
