"""Smoke bake: spec -> SmokeSim, per-frame density PNG, npz (density, velocity, pressure, temperature) and VDB,
flipbook and preview at the end."""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

from metaphys.bake.owned import frame_sort_key
from metaphys.bake.errors import BakeError, input_error
from metaphys.sims.smoke import SmokeSim
from metaphys.io import images, preview, usd, vdb


def make_smoke_sim(p: dict, optimizer, device: str = "cpu", threads=None):
    """The bake's SmokeSim from validated parameters; a parameter the sim refuses is an input error."""
    try:
        return SmokeSim.from_params(p, optimizer=optimizer, device=device, threads=threads)
    except (ValueError, TypeError, OSError) as exc:
        raise input_error(str(exc)) from None


class SmokeWriter:
    def __init__(self, out: str, params: dict):
        self.out = out
        self.dir = os.path.join(out, "density")
        self.png_max = float(params["png_max"])
        self.cell_size = float(params["cell_size"])  # metres (the schema fills it in from size_m)
        self.want_vdb = params["vdb"] and vdb.vdb_available()
        self.fps = float(params["fps"])
        self.min_density = None  # over all frames on disk, found by finish()

    def start(self):
        os.makedirs(self.dir, exist_ok=True)

    def resume(self, done: int):
        os.makedirs(self.dir, exist_ok=True)

    def _name(self, number: int, ext: str) -> str:
        return os.path.join(self.dir, f"density_{number:04d}.{ext}")

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
                                  clamp_negative=False)
            files["vdb"] = os.path.relpath(self._name(number, "vdb"), self.out)
        return files

    def manifest_extra(self) -> dict:
        """Facts readers of the bake need beside the files: the density's minimum over all frames (>= 0:
        the transport is monotone, nothing is clamped) and the VDB grids' index-to-world transform."""
        extra = {} if self.min_density is None else {"min_density": self.min_density}
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
        cols = int(np.ceil(np.sqrt(len(frames))))
        images.write_flipbook(os.path.join(self.out, "flipbook.png"), frames, columns=cols, vmax=vmax,
                              sidecar=os.path.join(self.out, "flipbook.json"), fps=self.fps)
        preview.density_gif(os.path.join(self.out, "preview.gif"), frames, vmax=vmax, fps=self.fps)
        outputs = {"flipbook": "flipbook.png", "flipbook_layout": "flipbook.json", "preview": "preview.gif",
                   "density": "density"}
        # smoke.usda: a UsdVolVolume over the VDB sequence (needs usd-core and the VDB files)
        vdbs = {int(f[len("density_"):-len(".vdb")]): os.path.join(self.dir, f)
                for f in sorted(os.listdir(self.dir)) if f.startswith("density_") and f.endswith(".vdb")}
        if vdbs and usd.usd_available():
            fields = {"density": vdbs}
            if vdb.has_velocity(next(iter(vdbs.values()))):
                fields["velocity"] = vdbs  # the same files hold a vec3 grid "velocity"
            usd.write_volume_usd(os.path.join(self.out, "smoke.usda"), fields, fps=self.fps)
            outputs["usd"] = "smoke.usda"
        return outputs
