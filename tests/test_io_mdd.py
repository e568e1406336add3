"""MDD vertex caches: big-endian header and times, exact float32 round trip."""
import struct

import numpy as np
import pytest

from metaphys.io.mdd import read_mdd, write_mdd


def test_mdd_roundtrip(tmp_path, frames):
    p = tmp_path / "c.mdd"
    write_mdd(p, frames, fps=24.0)
    raw = p.read_bytes()
    F, V = frames.shape[:2]
    assert len(raw) == 8 + 4 * F + 12 * F * V
    assert raw[:8] == struct.pack(">ii", F, V)
    assert raw[8:12] == struct.pack(">f", 0.0) and raw[12:16] == struct.pack(">f", 1 / 24)
    got, times = read_mdd(p)
    assert np.array_equal(got, frames)
    assert np.array_equal(times, (np.arange(F) / 24.0).astype(np.float32))
    write_mdd(p, frames, times=[0.0, 0.5, 1.0, 2.0])
    assert np.array_equal(read_mdd(p)[1], np.float32([0, 0.5, 1, 2]))
    with pytest.raises(ValueError, match="one entry per frame"):
        write_mdd(p, frames, times=[0.0])
