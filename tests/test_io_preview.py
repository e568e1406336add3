"""GIF previews: right frame count, fast."""
import time

import numpy as np
import pytest

from metaphys.io.preview import cloth_gif, colormap_lut, density_gif, gif_frame_count, write_gif


def test_density_gif(tmp_path):
    rng = np.random.default_rng(5)
    frames = rng.random((50, 64, 64))
    p = tmp_path / "d.gif"
    t0 = time.perf_counter()
    density_gif(p, frames, fps=24)
    assert time.perf_counter() - t0 < 2.0  # ~0.2 s; generous for a shared machine
    assert gif_frame_count(p) == 50
    from PIL import Image

    with Image.open(p) as im:
        assert im.size == (256, 256)


def test_cloth_gif(tmp_path):
    H = W = 32
    u, v = np.meshgrid(np.linspace(0, 1, W), np.linspace(0, 1, H))
    frames = np.stack([np.stack([u, 0.3 * np.sin(3 * u + 0.2 * k) * v, 1 - v], -1) for k in range(50)])
    p = tmp_path / "c.gif"
    t0 = time.perf_counter()
    cloth_gif(p, frames, view="side", size=200)
    assert time.perf_counter() - t0 < 2.0
    assert gif_frame_count(p) == 50
    cloth_gif(tmp_path / "c2.gif", frames.reshape(50, -1, 3), H=H, W=W, view="top")
    assert gif_frame_count(tmp_path / "c2.gif") == 50
    with pytest.raises(ValueError):
        cloth_gif(p, frames.reshape(50, -1, 3))  # H, W missing


def test_write_gif_and_lut(tmp_path):
    lut = colormap_lut("inferno")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert colormap_lut("gray")[128].tolist() == [128, 128, 128]
    imgs = [np.full((8, 8, 3), k * 20, np.uint8) for k in range(5)]
    write_gif(tmp_path / "g.gif", imgs)
    assert gif_frame_count(tmp_path / "g.gif") == 5
