"""Smoke bake: spec -> SmokeSim, per-frame density PNG, npz (density, velocity, pressure, temperature) and VDB;
at the end the game flipbook (io/flipbook.py: sheets, sidecar, motion-blended preview) and the preview GIF,
both made from the saved frames, so a resumed bake writes the same ones.

A 3-D spec (a resolution of 3 entries: ``SmokeSim3D``) bakes with ``SmokeWriter3D``: per frame an npz of
the volumes and a VDB with ``density``, ``velocity`` (world, m/s) and ``temperature`` (with emitter heat) as
3-D grids placed at the spec's ``origin``; at the end ``smoke.usda`` over them and a preview GIF of the
density projected along the depth (what a front view sees). ``smoke_writer`` picks the writer."""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

from metaphys.bake.owned import frame_sort_key
from metaphys.bake.errors import BakeError, input_error
from metaphys.sims.smoke import SmokeSim
from metaphys.io import flipbook, images, preview, usd, vdb


def make_smoke_sim(p: dict, optimizer, device: str = "cpu", threads=None):
    """The bake's SmokeSim from validated parameters; a parameter the sim refuses is an input error."""
    try:
        return SmokeSim.from_params(p, optimizer=optimizer, device=device, threads=threads)
    except (ValueError, TypeError, OSError) as exc:
        raise input_error(str(exc)) from None


class _DensityFrames:
    """What both smoke writers share: the per-frame files live in OUT/density/ as density_NNNN.EXT."""

    dir: str

    def start(self):
        os.makedirs(self.dir, exist_ok=True)

    def resume(self, done: int):
        os.makedirs(self.dir, exist_ok=True)

    def _name(self, number: int, ext: str) -> str:
        return os.path.join(self.dir, f"density_{number:04d}.{ext}")


class SmokeWriter(_DensityFrames):
    def __init__(self, out: str, params: dict):
        self.out = out
        self.dir = os.path.join(out, "density")
        self.png_max = float(params["png_max"])
        self.cell_size = float(params["cell_size"])  # metres (the schema fills it in from size_m)
        self.want_vdb = params["vdb"] and vdb.vdb_available()
        self.heat = float(params["emitter_heat"]) > 0   # a temperature grid in the VDB only where there is heat
        self.fps = float(params["fps"])
        self.min_density = None  # over all frames on disk, found by finish()
        self.flipbook = {k[len("flipbook_"):]: params[k] for k in params if k.startswith("flipbook_")} \
            if params.get("flipbook", True) else None
        self.flipbook_facts = None

    def write(self, sim, number: int, index: int) -> Dict[str, str]:
        d = sim.density
        if d.ndim != 2:
            raise BakeError("bakes write one simulation (batch = 1)")
        # written as simulated: the transport keeps the density >= 0 (each frame's record has its minimum)
        files = {}
        images.write_density_png(self._name(number, "png"), d, vmax=self.png_max, bits=16)
        files["png"] = os.path.relpath(self._name(number, "png"), self.out)
        images.write_frame_npz(self._name(number, "npz"), density=d, velocity=sim.velocity, pressure=sim.pressure,
                               temperature=sim.temperature)
        files["npz"] = os.path.relpath(self._name(number, "npz"), self.out)
        if self.want_vdb:
            # velocity (m/s) beside density, for motion blur and pipelines
            vdb.write_density_vdb(self._name(number, "vdb"), d, voxel_size=self.cell_size, velocity=sim.velocity,
                                  clamp_negative=False, grids={"temperature": sim.temperature} if self.heat else None)
            files["vdb"] = os.path.relpath(self._name(number, "vdb"), self.out)
        return files

    def manifest_extra(self) -> dict:
        """Facts readers of the bake need beside the files: the density's minimum over all frames (>= 0:
        the transport is monotone, nothing is clamped) and the VDB grids' index-to-world transform."""
        extra = {} if self.min_density is None else {"min_density": self.min_density}
        if self.flipbook_facts is not None:
            extra["flipbook"] = self.flipbook_facts
        if self.want_vdb:
            extra["vdb_index_to_world"] = vdb.index_to_world(self.cell_size).tolist()
        return extra

    def finish(self, sim) -> Dict[str, str]:
        names = sorted((f for f in os.listdir(self.dir) if f.endswith(".npz")), key=frame_sort_key)  # 9998 < 10000
        frames = [images.read_frame_npz(os.path.join(self.dir, f))["density"] for f in names]
        if not frames:
            return {}
        self.min_density = float(min(f.min() for f in frames))
        vmax = max(images.sequence_max(frames), 1e-12)
        preview.density_gif(os.path.join(self.out, "preview.gif"), frames, vmax=vmax, fps=self.fps)
        outputs = {"preview": "preview.gif", "density": "density"}
        if self.flipbook is not None:
            numbers = [int(frame_sort_key(f)[1]) for f in names]
            outputs.update(self._write_flipbook(names, numbers))
        # smoke.usda: a UsdVolVolume over the VDB sequence (needs usd-core and the VDB files)
        vdbs = {int(f[len("density_"):-len(".vdb")]): os.path.join(self.dir, f)
                for f in sorted(os.listdir(self.dir)) if f.startswith("density_") and f.endswith(".vdb")}
        if vdbs:
            outputs.update(_volume_usd(self.out, vdbs, self.fps))
        return outputs

    def _write_flipbook(self, names, numbers) -> Dict[str, str]:
        """The game flipbook of the saved frames (io/flipbook.py): frame selection, motion vectors traced
        through the saved velocities (m/s -> cells per frame), sheets, sidecar and preview."""
        o = self.flipbook
        rows, cols = o["layout"]
        first, last = 0, len(names) - 1
        if o["range"] is not None:  # frame numbers -> positions among the saved frames
            first = next((i for i, n in enumerate(numbers) if n >= o["range"][0]), len(numbers))
            last = max((i for i, n in enumerate(numbers) if n <= o["range"][1]), default=-1)
            if first > last:
                raise BakeError(f"flipbook_range {o['range']} holds none of the baked frames "
                                f"{numbers[0]}..{numbers[-1]}")
        loop = int(o["loop"])
        mode = o.get("loop_mode", "crossfade")
        picked = flipbook.select_frames(len(names), rows * cols, o["step"], first, last,
                                        flipbook.loop_extra_frames(loop, mode))
        step = picked[1] - picked[0] if len(picked) > 1 else (o["step"] or 1)
        if loop and 2 * loop > len(picked):
            raise BakeError(f"flipbook_loop {loop} needs at least {2 * loop} frames in the flipbook's range; "
                            f"it has {len(picked)} (bake more frames, or a smaller loop)")
        lo, hi = picked[0], min(picked[-1] + step, len(names) - 1)
        data = {i: images.read_frame_npz(os.path.join(self.dir, names[i])) for i in range(lo, hi + 1)}
        to_cells = 1.0 / (self.fps * self.cell_size)   # m/s -> cells per frame; (vx, vy up) -> (col, row down)
        vel = [np.stack([data[i]["velocity"][..., 0], -data[i]["velocity"][..., 1]], axis=-1) * to_cells
               for i in range(lo, hi + 1)]
        motion = np.stack([flipbook.motion_from_velocity(vel, i - lo, i - lo + step) for i in picked])
        density = np.stack([data[i]["density"] for i in picked])
        temperature = np.stack([data[i].get("temperature", np.zeros_like(data[i]["density"])) for i in picked])
        layout = flipbook.write_game_flipbook(
            self.out, density, motion, temperature, rows=rows, cols=cols, cell=o["cell"], loop=loop, loop_mode=mode,
            alpha=o["alpha"], engine=o["engine"], motion_bits=int(o["motion_bits"]), motion_scale=o["motion_scale"],
            normal_strength=o["normal_strength"], fps=self.fps / step, source_frames=[numbers[i] for i in picked])
        seam = flipbook.loop_seam(flipbook.read_flipbook(self.out)["alpha"]) if layout["frames"] > 2 else None
        self.flipbook_facts = {"frames": layout["frames"], "step": step, "motion_scale": layout["motion_scale"],
                               "loop_seam": seam}
        files = flipbook.FILES
        return {f"flipbook_{k}": files[k] for k in ("color", "emissive", "motion", "normal", "preview")} | \
            {"flipbook_layout": files["sidecar"]}


def smoke_writer(out: str, params: dict):
    """The writer of a smoke bake: 2-D (``SmokeWriter``) or 3-D (``SmokeWriter3D``) by the resolution."""
    return SmokeWriter3D(out, params) if len(params["resolution"]) == 3 else SmokeWriter(out, params)


class SmokeWriter3D(_DensityFrames):
    """A 3-D smoke bake's files: ``density/density_NNNN.npz`` and ``.vdb`` per frame, then ``smoke.usda``
    and ``preview.gif``."""

    def __init__(self, out: str, params: dict):
        self.out = out
        self.dir = os.path.join(out, "density")
        self.cell_size = float(params["cell_size"])
        self.origin = [float(x) for x in params["origin"]]
        self.want_vdb = params["vdb"] and vdb.vdb_available()
        self.heat = float(params["emitter_heat"]) > 0   # a temperature grid only where there is heat
        self.fps = float(params["fps"])
        self.min_density = None

    def write(self, sim, number: int, index: int) -> Dict[str, str]:
        d = sim.density
        if d.ndim != 3:
            raise BakeError("bakes write one simulation (batch = 1)")
        velocity = sim.velocity
        images.write_frame_npz(self._name(number, "npz"), density=d, velocity=velocity, pressure=sim.pressure,
                               temperature=sim.temperature)
        files = {"npz": os.path.relpath(self._name(number, "npz"), self.out)}
        if self.want_vdb:
            vdb.write_density_vdb(self._name(number, "vdb"), d, voxel_size=self.cell_size, origin=self.origin,
                                  velocity=velocity, velocity_axes="world", clamp_negative=False,
                                  grids={"temperature": sim.temperature} if self.heat else None)
            files["vdb"] = os.path.relpath(self._name(number, "vdb"), self.out)
        return files

    def manifest_extra(self) -> dict:
        extra = {} if self.min_density is None else {"min_density": self.min_density}
        if self.want_vdb:
            extra["vdb_index_to_world"] = vdb.index_to_world(self.cell_size, self.origin).tolist()
        return extra

    def finish(self, sim) -> Dict[str, str]:
        names = sorted((f for f in os.listdir(self.dir) if f.endswith(".npz")), key=frame_sort_key)
        if not names:
            return {}
        lows, fronts = [], []
        for f in names:
            d = images.read_frame_npz(os.path.join(self.dir, f))["density"]
            lows.append(float(d.min()))
            fronts.append(d.mean(axis=0))      # projected along the depth: the front view [H, W]
        self.min_density = min(lows)
        preview.density_gif(os.path.join(self.out, "preview.gif"), fronts,
                            vmax=max(images.sequence_max(fronts), 1e-12), fps=self.fps)
        outputs = {"preview": "preview.gif", "density": "density"}
        vdbs = {int(frame_sort_key(f)[1]): os.path.join(self.dir, f)
                for f in sorted(os.listdir(self.dir)) if f.startswith("density_") and f.endswith(".vdb")}
        if vdbs:
            outputs.update(_volume_usd(self.out, vdbs, self.fps))
        return outputs


def _volume_usd(out: str, vdbs: Dict[int, str], fps: float) -> Dict[str, str]:
    """smoke.usda: a UsdVolVolume over the VDB sequence, one field per grid the files hold (needs usd-core)."""
    if not usd.usd_available():
        return {}
    first = vdb.grid_names(next(iter(vdbs.values())))
    fields = {g: vdbs for g in ("density", "temperature", "velocity") if g in first}
    usd.write_volume_usd(os.path.join(out, "smoke.usda"), fields, fps=fps)
    return {"usd": "smoke.usda"}
