"""Cloth bake: spec -> ClothSim; PC2 cache (mesh vertex order, output_matrix applied), rest OBJ,
one mesh per frame, preview GIF. Spec keys: docs/bake-spec.md."""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

from metaphys.bake.driver import BakeError
from metaphys.io import meshseq, pc2, preview

CLOTH_KEYS = {"rows", "cols", "rest_positions", "size_m", "height", "vertex_index", "output_matrix", "frames",
              "fps", "start_frame", "substeps", "gravity", "mass_per_area", "stretch", "shear", "bend",
              "damping", "wind", "pin_weights", "pin_targets", "colliders", "iterations_per_step", "tol",
              "max_iterations", "contact_margin"}

CLOTH_DEFAULTS = {"frames": 48, "fps": 24, "start_frame": 1, "substeps": 1, "size_m": 1.0, "height": 1.0,
                  "gravity": [0.0, 0.0, -9.81], "mass_per_area": 0.2, "stretch": 1000.0, "shear": 10.0,
                  "bend": 0.1, "damping": 0.1, "wind": [0.0, 0.0, 0.0], "iterations_per_step": 30,
                  "max_iterations": 200}


def default_colliders(size_m: float, height: float):
    """The default scene: a sphere under the cloth's free half, so the cloth swings onto it."""
    return [{"type": "sphere", "center": [0.0, 0.15 * size_m, height - 0.45 * size_m], "radius": 0.25 * size_m}]


def cloth_parameters(spec: dict, size: int = 32) -> dict:
    unknown = set(spec) - CLOTH_KEYS
    if unknown:
        raise BakeError(f"unknown cloth spec keys: {sorted(unknown)}; see docs/bake-spec.md")
    p = dict(CLOTH_DEFAULTS)
    p.update({k: v for k, v in spec.items() if v is not None or k == "tol"})
    p.setdefault("rows", size)
    p.setdefault("cols", p["rows"] if "rest_positions" not in spec else size)
    if "colliders" not in spec and "rest_positions" not in spec:
        p["colliders"] = default_colliders(float(p["size_m"]), float(p["height"]))
    return p


def make_cloth_sim(p: dict, optimizer, device: str = "cpu"):
    from metaphys.sims.cloth import ClothSim, flat_cloth
    rows, cols = int(p["rows"]), int(p["cols"])
    rest = p.get("rest_positions")
    if rest is None:
        rest = flat_cloth(rows, cols, float(p["size_m"]), float(p["height"]))
    kwargs = dict(rest_positions=rest, fps=p["fps"], substeps=int(p["substeps"]), gravity=p["gravity"],
                  mass_per_area=p["mass_per_area"], stretch=p["stretch"], shear=p["shear"], bend=p["bend"],
                  damping=p["damping"], wind=p["wind"], pin_weights=p.get("pin_weights"),
                  pin_targets=p.get("pin_targets"), colliders=p.get("colliders"),
                  max_iterations=int(p["max_iterations"]), device=device, optimizer=optimizer)
    if p.get("contact_margin") is not None:
        kwargs["contact_margin"] = p["contact_margin"]
    if p.get("tol") is not None:
        kwargs.update(tol=float(p["tol"]), iterations_per_step=None)
    else:
        kwargs["iterations_per_step"] = int(p["iterations_per_step"])
    try:
        return ClothSim(rows, cols, **kwargs)
    except (ValueError, TypeError) as exc:
        raise BakeError(str(exc)) from None


class ClothWriter:
    def __init__(self, out: str, params: dict, fmt: str = "obj"):
        self.out = out
        self.rows, self.cols = int(params["rows"]), int(params["cols"])
        nv = self.rows * self.cols
        self.fmt = fmt
        self.start_frame = int(params.get("start_frame", 1))
        order = params.get("vertex_index")
        if order is None:
            self.order = None
        else:
            order = np.asarray(order, dtype=np.int64)
            if order.shape != (nv,) or sorted(order.tolist()) != list(range(nv)):
                raise BakeError(f"vertex_index must be a permutation of 0..{nv - 1} (one mesh vertex per grid vertex)")
            self.order = order
        m = params.get("output_matrix")
        self.matrix = None if m is None else np.asarray(m, dtype=np.float64)
        if self.matrix is not None and (self.matrix.shape != (4, 4) or not np.isfinite(self.matrix).all()):
            raise BakeError(f"output_matrix must be a finite 4x4 matrix, got shape {self.matrix.shape}")
        self.rest = None
        self.pc2_path = os.path.join(out, "cloth.pc2")
        self.pc2 = None

    def _to_output(self, grid_positions: np.ndarray) -> np.ndarray:
        """Grid-order world positions -> mesh-order positions with the output matrix applied."""
        p = grid_positions.reshape(-1, 3)
        if self.matrix is not None:
            p = p @ self.matrix[:3, :3].T + self.matrix[:3, 3]
        if self.order is not None:
            out = np.empty_like(p)
            out[self.order] = p
            p = out
        return p

    def start(self):
        self.pc2 = pc2.PC2Writer(self.pc2_path, self.rows * self.cols, start=float(self.start_frame))
        if self.fmt != "none":
            os.makedirs(os.path.join(self.out, "frames"), exist_ok=True)

    def resume(self, done: int):
        self.pc2 = pc2.PC2Writer(self.pc2_path, self.rows * self.cols, start=float(self.start_frame),
                                 resume=True, keep=done)
        if self.fmt != "none":
            os.makedirs(os.path.join(self.out, "frames"), exist_ok=True)

    def write(self, sim, number: int, index: int) -> Dict[str, str]:
        if self.rest is None:
            self.rest = sim.rest_positions
            meshseq.write_rest_obj(os.path.join(self.out, "rest.obj"), self.rest, self.rows, self.cols)
        grid = sim.positions.reshape(-1, 3)
        self.pc2.write(self._to_output(grid)[None].astype(np.float32))
        files = {"pc2_sample": index}
        if self.fmt != "none":
            path = meshseq.sequence_path(os.path.join(self.out, "frames"), number, self.fmt)
            meshseq.write_mesh(path, grid, H=self.rows, W=self.cols, format=self.fmt)
            files["mesh"] = os.path.relpath(path, self.out)
        return files

    def finish(self, sim) -> Dict[str, str]:
        if self.pc2 is not None:
            self.pc2.close()
        frames, _, _ = pc2.read_pc2(self.pc2_path)
        grid_frames = frames
        if self.order is not None:
            grid_frames = frames[:, self.order]
        if self.matrix is None:
            preview.cloth_gif(os.path.join(self.out, "preview.gif"), grid_frames, H=self.rows, W=self.cols,
                              view="front")
        if self.rest is None:
            meshseq.write_rest_obj(os.path.join(self.out, "rest.obj"), sim.rest_positions, self.rows, self.cols)
        outputs = {"pc2": "cloth.pc2", "rest": "rest.obj"}
        if self.matrix is None:
            outputs["preview"] = "preview.gif"
        if self.fmt != "none":
            outputs["frames"] = "frames"
        return outputs
