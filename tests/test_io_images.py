"""Density PNGs (16-bit), flipbook sprite sheets with JSON layout, per-frame .npz."""
import numpy as np
import pytest

from metaphys.io.images import (density_to_pixels, read_density_png, read_flipbook_layout, read_frame_npz, read_png,
                                write_density_png, write_density_sequence, write_flipbook, write_frame_npz)


def test_png16_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    d = rng.random((17, 23)) * 5.0
    d[0, 0] = -0.3  # undershoot clamps to 0
    p = tmp_path / "d.png"
    vmax = write_density_png(p, d)
    raw = p.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[24] == 16 and raw[25] == 0  # 16-bit grayscale
    assert vmax == pytest.approx(d.max())
    back = read_density_png(p, vmax)
    assert back.shape == d.shape
    assert np.abs(back - np.clip(d, 0, None)).max() <= vmax / 65535
    px = read_png(p)
    assert px.dtype == np.uint16 and px[0, 0] == 0 and px.max() == 65535
    # row 0 at the top; row0='bottom' flips
    write_density_png(p, d, vmax=vmax, row0="bottom")
    assert np.array_equal(read_png(p), density_to_pixels(d, vmax)[::-1])
    with pytest.raises(ValueError, match="non-finite"):
        write_density_png(p, np.full((3, 3), np.nan))


def test_sequence_shared_vmax(tmp_path):
    frames = np.stack([np.full((4, 4), k, dtype=float) for k in range(1, 4)])
    paths, vmax = write_density_sequence(tmp_path, frames)
    assert vmax == 3.0 and len(paths) == 3
    assert read_png(paths[0]).max() == round(65535 / 3)
    assert read_png(paths[2]).max() == 65535


@pytest.mark.parametrize("bits", [8, 16])
def test_flipbook_layout(tmp_path, bits):
    F, H, W = 7, 6, 5
    frames = np.stack([np.full((H, W), k + 1.0) for k in range(F)])
    p = tmp_path / "fb.png"
    layout = write_flipbook(p, frames, columns=3, bits=bits, fps=24)
    assert (layout["rows"], layout["columns"]) == (3, 3)
    assert (layout["width"], layout["height"]) == (15, 18)
    assert read_flipbook_layout(p) == layout
    sheet = read_png(p)
    assert sheet.dtype == (np.uint16 if bits == 16 else np.uint8) and sheet.shape == (18, 15)
    maxval = 2 ** bits - 1
    for t in layout["tiles"]:
        tile = sheet[t["y"]:t["y"] + t["h"], t["x"]:t["x"] + t["w"]]
        assert (tile == round((t["frame"] + 1) / F * maxval)).all()
    assert layout["tiles"][4]["x"] == 5 and layout["tiles"][4]["y"] == 6  # frame 4: row 1, col 1
    assert layout["tiles"][0]["uv"] == [0.0, pytest.approx(2 / 3), pytest.approx(1 / 3), 1.0]
    assert (sheet[12:18, 5:15] == 0).all()  # unused tiles are black


def test_npz(tmp_path):
    d = np.random.default_rng(3).random((8, 8))
    vel = np.zeros((2, 8, 8), np.float32)
    p = tmp_path / "f.npz"
    write_frame_npz(p, density=d, velocity=vel, pressure=None, step=np.int64(4))
    got = read_frame_npz(p)
    assert set(got) == {"density", "velocity", "step"}
    assert np.array_equal(got["density"], d) and got["velocity"].dtype == np.float32
    with pytest.raises(ValueError, match="pressure"):
        write_frame_npz(p, pressure=np.array([np.inf]))
    assert np.array_equal(read_frame_npz(p)["density"], d)
