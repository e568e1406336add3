"""Cloth bake: spec -> ClothSim; PC2 cache (mesh vertex order, output_matrix applied), rest OBJ in the
same order and space, one mesh per frame, preview GIF. Spec keys: metaphys.spec.schema (docs/bake-spec.md)."""
from __future__ import annotations

import hashlib
import os
from typing import Dict

import numpy as np

from metaphys.bake.errors import input_error
from metaphys.sims.cloth import ClothSim
from metaphys.io import meshseq, pc2, preview, usd

# Arrays kept out of the manifest by value (a digest still makes --resume refuse a changed track).
_DIGESTED = ("pin_targets",)


def manifest_parameters(p: dict) -> dict:
    """Parameters as the manifest records them (large per-frame tracks by digest)."""
    out = dict(p)
    for k in _DIGESTED:
        if out.get(k) is not None:
            arr = np.ascontiguousarray(out[k], dtype=np.float64)
            out[k] = {"shape": list(arr.shape), "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}
    return out


MESH_FORMATS = ("obj", "ply", "glb")


def parse_format(fmt: str):
    """``--format`` obj|ply|glb|usd|none -> (per-frame mesh format or "none", write cloth.usdc).

    cloth.usdc is written beside cloth.pc2 whenever usd-core imports; ``usd`` asks for it without
    per-frame meshes and is an input error (ValueError, with the pip command) when usd-core is missing."""
    if fmt not in MESH_FORMATS + ("usd", "none"):
        raise ValueError(f"--format must be one of obj, ply, glb, usd, none, got {fmt!r}")
    if fmt == "usd":
        try:
            usd.require_pxr()
        except ImportError as exc:
            raise ValueError(f"--format usd: {exc}") from None
        return "none", True
    return fmt, usd.usd_available()


def usd_note() -> str:
    """Why a cloth bake will not write cloth.usdc here ('' when it will)."""
    if usd.usd_available():
        return ""
    return (f"usd-core is not installed, so cloth.usdc is not written "
            f"(pip install '{usd.USD_REQUIREMENT}', see requirements.txt)")


def make_cloth_sim(p: dict, optimizer, device: str = "cpu", threads: int = None):
    """The bake's ClothSim from validated parameters; a parameter the sim refuses is an input error."""
    try:
        return ClothSim.from_params(p, optimizer=optimizer, device=device, threads=threads)
    except (ValueError, TypeError) as exc:
        raise input_error(str(exc)) from None


class ClothWriter:
    def __init__(self, out: str, params: dict, fmt: str = "obj"):
        self.out = out
        self.rows, self.cols = int(params["rows"]), int(params["cols"])
        self.fmt, self.usd = parse_format(fmt)  # per-frame mesh format; cloth.usdc at the end
        self.fps = float(params.get("fps", 24.0))
        self.start_frame = int(params.get("start_frame", 1))
        # validated by the spec schema (a permutation; a 4x4 matrix)
        order = params.get("vertex_index")
        self.order = None if order is None else np.asarray(order, dtype=np.int64)
        m = params.get("output_matrix")
        self.matrix = None if m is None else np.asarray(m, dtype=np.float64).reshape(-1, 4, 4)  # one per frame
        self.rest = None
        self.pc2_path = os.path.join(out, "cloth.pc2")
        self.pc2 = None

    def _to_output(self, grid_positions: np.ndarray, index: int = 0) -> np.ndarray:
        """Grid-order world positions of output frame ``index`` -> mesh-order positions with that
        frame's output matrix applied (the rest mesh uses the first)."""
        p = grid_positions.reshape(-1, 3)
        if self.matrix is not None:
            m = self.matrix[min(index, len(self.matrix) - 1)]
            p = p @ m[:3, :3].T + m[:3, 3]
        if self.order is not None:
            out = np.empty_like(p)
            out[self.order] = p
            p = out
        return p

    def _write_rest(self, rest: np.ndarray) -> None:
        """rest.obj in the PC2's vertex order and space, so its faces fit the cache (Mesh Cache modifier)."""
        path = os.path.join(self.out, "rest.obj")
        if self.order is None and self.matrix is None:
            meshseq.write_rest_obj(path, rest, self.rows, self.cols)
            return
        faces = meshseq.grid_faces(self.rows, self.cols, quads=True)
        uvs = meshseq.grid_uvs(self.rows, self.cols)
        if self.order is not None:  # grid vertex g is mesh vertex order[g]
            faces = self.order[faces]
            mesh_uvs = np.empty_like(uvs)
            mesh_uvs[self.order] = uvs
            uvs = mesh_uvs
        meshseq.write_obj(path, self._to_output(rest), faces, uvs=uvs, object_name="cloth",
                          header=f"metaphys rest mesh, grid {self.rows}x{self.cols}, mesh vertex order, "
                                 "output_matrix applied")

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
            self._write_rest(self.rest)
        grid = sim.positions.reshape(-1, 3)
        self.pc2.write(self._to_output(grid, index)[None].astype(np.float32))
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
            self._write_rest(sim.rest_positions)
        outputs = {"pc2": "cloth.pc2", "rest": "rest.obj"}
        if self.usd and len(frames):  # from the PC2's float32 samples: the same numbers, the same vertex order
            faces = meshseq.grid_faces(self.rows, self.cols, quads=True)
            uvs = meshseq.grid_uvs(self.rows, self.cols)
            if self.order is not None:
                faces = self.order[faces]
                mesh_uvs = np.empty_like(uvs)
                mesh_uvs[self.order] = uvs
                uvs = mesh_uvs
            usd.write_cloth_usd(os.path.join(self.out, "cloth.usdc"), frames, faces, uvs,
                                start_frame=self.start_frame, fps=self.fps)
            outputs["usd"] = "cloth.usdc"
        if self.matrix is None:
            outputs["preview"] = "preview.gif"
        if self.fmt != "none":
            outputs["frames"] = "frames"
        return outputs
