"""Game flipbooks (metaphys.io.flipbook): motion vectors, loops, sidecar, alpha modes, channel encodings."""
import json

import numpy as np
import pytest

from metaphys.io import flipbook as fb


def blob(h, w, cy, cx, r=5.0):
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * r * r))


def swirl_velocity(h, w, speed=1.5):
    """A rotating flow (cells per frame, (col, row) components) with a drift upward."""
    rows, cols = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij")
    y, x = rows - h / 2, cols - w / 2
    return np.stack([-y * 0.04 * speed, x * 0.04 * speed - 0.6 * speed], axis=-1)


def advect(img, vel, frames):
    """Frames of ``img`` carried by the steady flow ``vel`` (fine semi-Lagrangian sub-steps)."""
    out = [img]
    for _ in range(frames):
        m = fb.motion_from_velocity([vel, vel], 0, 1, max_cells=0.1)
        out.append(fb.warp(out[-1], m))
    return np.stack(out)


def test_motion_vectors_predict_the_next_frame_better_than_none():
    h = w = 48
    vel = swirl_velocity(h, w)
    seq = advect(blob(h, w, 30, 20) + 0.5 * blob(h, w, 26, 30, 3), vel, 4)
    vels = [vel] * len(seq)
    for k in range(len(seq) - 1):
        m = fb.motion_from_velocity(vels, k, k + 1)
        with_mv = np.abs(fb.warp(seq[k], m) - seq[k + 1]).mean()
        without = np.abs(seq[k] - seq[k + 1]).mean()
        assert with_mv < 0.25 * without, (k, with_mv, without)
    # the wrong sign makes it worse than no motion at all: the test can fail
    m = fb.motion_from_velocity(vels, 0, 1)
    assert np.abs(fb.warp(seq[0], -m) - seq[1]).mean() > np.abs(seq[0] - seq[1]).mean()


def test_motion_over_several_frames_is_the_traced_path():
    vel = np.zeros((20, 20, 2))
    vel[..., 0] = 0.75   # 0.75 columns per frame to the right
    m = fb.motion_from_velocity([vel] * 5, 1, 4)
    assert np.allclose(m[..., 0], 2.25) and np.allclose(m[..., 1], 0.0)
    assert np.allclose(fb.motion_from_velocity([vel] * 5, 2, 2), 0.0)


def test_loop_seam_is_no_larger_than_consecutive_frames():
    rng = np.random.default_rng(3)
    n = 40
    base = np.cumsum(rng.normal(size=(n, 16, 16)) * 0.05, axis=0) + np.linspace(0, 3, n)[:, None, None]
    plain = fb.loop_seam(base[: n - 8])
    looped = fb.loop_seam(fb.loop_blend(base, 8))
    assert plain["seam"] > 3 * plain["mean"]            # a drifting sequence does not loop by itself
    assert looped["seam"] <= looped["mean"], looped
    assert fb.loop_blend(base, 8).shape == (n - 8, 16, 16)
    assert np.array_equal(fb.loop_blend(base, 8)[8:], base[8:n - 8])   # frames past the crossfade kept
    with pytest.raises(ValueError, match="needs at least"):
        fb.loop_blend(base[:10], 6)


def scrolled_texture(n, v0=0.2, acc=0.02, size=32, seed=0):
    """A smooth random texture scrolled up ever faster (v0 + acc * t rows per frame): a synthetic
    accelerating sequence whose consecutive steps grow ~4x over 60 frames and whose frames far
    apart are unrelated, like a plume still speeding up."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(1024)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2
    tex = np.real(np.fft.ifft2(np.fft.fft2(rng.random((1024, size))) * np.exp(-k * (8 * np.pi) ** 2 / 2)))
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    frames = []
    for t in range(n):
        y = 900 - (v0 * t + 0.5 * acc * t * t) + np.arange(size)
        y0 = np.floor(y).astype(int)
        f = (y - y0)[:, None]
        frames.append(tex[y0] * (1 - f) + tex[y0 + 1] * f)
    return np.stack(frames)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_phase_loop_seam_on_an_accelerating_sequence(seed):
    n, ramp = 48, 12
    seq = scrolled_texture(n + ramp, seed=seed)
    steps = [np.abs(seq[k + 1] - seq[k]).mean() for k in range(n - 1)]
    assert steps[-1] > 3 * steps[0]                                   # accelerating
    # the crossfade's seam is the range's last (largest) natural step: above the mean
    cross = fb.loop_seam(fb.loop_blend(seq, ramp, "crossfade"))
    assert cross["seam"] > cross["mean"], cross
    # two_phase: the seam is a step from the middle of the range, no larger than the mean
    looped = fb.loop_blend(seq[:n], ramp, "two_phase")
    two = fb.loop_seam(looped)
    assert two["seam"] <= two["mean"], two
    assert two["seam"] < cross["seam"]
    # its construction: all n frames kept; the seam shows phase B (frame n/2) alone; between the
    # ramps phase A alone; the seam step is phase B's natural step up to A's small weight there
    assert looped.shape == seq[:n].shape
    assert np.array_equal(looped[0], seq[n // 2])
    assert np.array_equal(looped[ramp:n - ramp + 1], seq[ramp:n - ramp + 1])
    w = fb._smoothstep(1 / ramp)
    assert np.allclose(looped[-1], w * seq[n - 1] + (1 - w) * seq[n // 2 - 1])
    assert fb.loop_extra_frames(ramp, "two_phase") == 0 and fb.loop_extra_frames(ramp, "crossfade") == ramp
    with pytest.raises(ValueError, match="loop of 25 frames needs at least 50 frames, got 48"):
        fb.loop_blend(seq[:n], 25, "two_phase")
    with pytest.raises(ValueError, match="ramps of 1..24 frames, got 0"):
        fb.loop_two_phase(seq[:n], 0)
    with pytest.raises(ValueError, match="loop mode must be one of"):
        fb.loop_blend(seq[:n], 4, "pingpong")


def test_select_frames():
    assert fb.select_frames(48, 64) == list(range(48))
    assert fb.select_frames(200, 64) == list(range(0, 200, 4))[:64]
    assert fb.select_frames(100, 16, step=2, first=10, last=30, loop=2) == list(range(10, 31, 2))
    assert len(fb.select_frames(100, 16, loop=4)) == 20
    with pytest.raises(ValueError, match="frame range"):
        fb.select_frames(10, 4, first=5, last=12)


def synthetic(n=6, h=24, w=32):
    d = np.stack([blob(h, w, 14 - k, 10 + k, 4) * (0.5 + 0.1 * k) for k in range(n)])
    t = 2.0 * d ** 2
    m = np.zeros((n, h, w, 2))
    m[..., 0], m[..., 1] = 1.0, -1.0   # one column right, one row up per frame
    return d, t, m


@pytest.mark.parametrize("engine, bits", [("unity", 16), ("unreal", 8)])
def test_channels_decode_back_within_quantization(tmp_path, engine, bits):
    d, t, m = synthetic()
    layout = fb.write_game_flipbook(tmp_path, d, m, t, rows=2, cols=4, engine=engine, motion_bits=bits, fps=24)
    assert layout["frames"] == 6 and (layout["cell_height"], layout["cell_width"]) == (24, 32)
    back = fb.read_flipbook(tmp_path)
    q8, qm = 0.5 / 255 + 1e-12, 0.5 / (2 ** bits - 1) + 1e-12
    assert np.abs(back["density"] - d).max() <= q8 * layout["density_max"]
    assert np.abs(back["emissive"] - t / t.max()).max() <= q8
    sign = -1 if engine == "unity" else 1   # Unity's v points up, rows point down
    want = np.stack([m[..., 0] / 32, sign * m[..., 1] / 24], axis=-1)
    assert np.abs(back["motion"] - want).max() <= 2 * qm * layout["motion_scale"] + 1e-12
    assert layout["motion_scale"] == pytest.approx(1 / 24, rel=1e-2)   # the largest component, rounded up
    n = back["normal"]
    assert np.abs(np.linalg.norm(n, axis=-1) - 1).max() < 0.02 and (n[..., 2] > 0).all()
    ref = np.stack([fb.normal_map(d[k] / layout["density_max"], 0.05, engine) for k in range(6)])
    assert np.abs(n - ref).max() <= 2 * q8 + 1e-9
    # empty cells: transparent, no motion, flat normal
    sheet = fb.read_png(tmp_path / "flipbook_color.png")
    assert sheet.shape == (48, 128, 4) and not sheet[24:, 64:].any()
    mv = fb.read_png(tmp_path / "flipbook_motion.png")
    assert mv.dtype == (np.uint16 if bits == 16 else np.uint8) and (mv[24:, 64:, :2] == 2 ** (bits - 1)).all()


def test_normals_point_away_from_the_density_peak_and_flip_green_for_unreal():
    h = blob(33, 33, 16, 16, 5)
    unity, unreal = fb.normal_map(h, 0.05, "unity"), fb.normal_map(h, 0.05, "unreal")
    assert unity[16, 8, 0] < 0 and unity[16, 24, 0] > 0        # left of the peak leans left (-u)
    assert unity[8, 16, 1] > 0 and unreal[8, 16, 1] < 0         # above the peak: +v up (unity), -v (unreal)
    assert np.allclose(unity[..., 0], unreal[..., 0])


@pytest.mark.parametrize("alpha", ["straight", "premultiplied"])
def test_alpha_modes(tmp_path, alpha):
    d, t, m = synthetic()
    fb.write_game_flipbook(tmp_path, d, m, t, rows=2, cols=3, alpha=alpha, color=(1.0, 0.5, 0.25))
    back = fb.read_flipbook(tmp_path)
    a, rgb = back["alpha"], back["rgb"]
    col = np.array([1.0, 0.5, 0.25])
    if alpha == "premultiplied":
        assert np.abs(rgb - a[..., None] * col).max() <= 1 / 255 + 1e-9
        assert np.all(rgb <= a[..., None] + 1e-9)
    else:
        assert np.abs(rgb - col).max() <= 0.5 / 255 + 1e-9
    assert fb.read_sidecar(tmp_path)["alpha_mode"] == alpha


def test_sidecar_round_trip(tmp_path):
    d, t, m = synthetic(n=10)
    layout = fb.write_game_flipbook(tmp_path, d, m, t, rows=2, cols=4, loop=2, cell=64, fps=12,
                                    source_frames=range(5, 15))
    side = fb.read_sidecar(tmp_path / "flipbook.json")
    assert side == json.loads(json.dumps(layout)) == fb.read_sidecar(tmp_path)
    assert (side["rows"], side["columns"], side["frames"]) == (2, 4, 8)
    assert (side["cell_width"], side["cell_height"]) == (64, 48) and (side["width"], side["height"]) == (256, 96)
    assert side["fps"] == 12 and side["loop"]["frames"] == 2 and side["source_frames"] == list(range(5, 15))
    assert side["motion_scale"] > 0 and side["alpha_mode"] == "straight" and side["engine"] == "unity"
    for name in ("flipbook_color.png", "flipbook_motion.png", "flipbook_normal.png", "flipbook_emissive.png",
                 "flipbook_preview.gif"):
        assert (tmp_path / name).exists(), name
    from PIL import Image
    with Image.open(tmp_path / "flipbook_preview.gif") as gif:
        assert gif.n_frames == 8 * fb.PREVIEW_STEPS  # looped: every frame and its in-betweens, the seam too
    with pytest.raises(ValueError, match="do not fit"):
        fb.write_game_flipbook(tmp_path, d, m, t, rows=2, cols=4)
    assert side["loop"]["mode"] == "crossfade"
    # two_phase: the sheet holds every selected frame, its sidecar says how it loops
    (tmp_path / "two").mkdir()
    two = fb.write_game_flipbook(tmp_path / "two", d[:8], m[:8], t[:8], rows=2, cols=4, loop=2, loop_mode="two_phase")
    assert two["frames"] == 8 and two["loop"]["mode"] == "two_phase" and two["loop"]["frames"] == 2
    assert "F_((j + h) mod N)" in two["loop"]["formula"]
    with pytest.raises(ValueError, match="loop_mode must be one of"):
        fb.write_game_flipbook(tmp_path / "bad", d[:8], m[:8], t[:8], rows=2, cols=4, loop=2, loop_mode="x")


def test_png_writer_round_trips_16_bit_rgb(tmp_path):
    rng = np.random.default_rng(0)
    for shape, dtype in (((5, 7, 3), np.uint16), ((5, 7, 4), np.uint8), ((5, 7), np.uint16)):
        px = rng.integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)
        fb.write_png(tmp_path / "x.png", px)
        back = fb.read_png(tmp_path / "x.png")
        assert back.dtype == dtype and np.array_equal(back.reshape(px.shape), px)


def test_resize_keeps_mean_and_shape():
    img = blob(64, 64, 30, 30, 6)
    small, big = fb.resize(img, (16, 16)), fb.resize(img, (128, 128))
    assert small.shape == (16, 16) and big.shape == (128, 128)
    assert small.mean() == pytest.approx(img.mean(), rel=0.02) and big.mean() == pytest.approx(img.mean(), rel=0.02)
