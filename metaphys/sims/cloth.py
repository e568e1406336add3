"""Cloth for animation: a regular rows x cols vertex grid in physical units (metres, seconds).

Internally the cloth is simulated in the units the Metamizer was trained in: length unit = the
mean rest edge length, time unit = one solver step (1 / (fps * substeps)). So gravity and wind
(m/s^2) become g * dt^2 / L0, damping (1/s) becomes damping * dt, and stiffness values are the
model's dimensionless ones (stretch ~100-1000, shear 1-1000, bend 0.01-1000, see the physics
docstring in metaphys.physics.cloth). ``mass_per_area`` scales inertia relative to stiffness
(0.2 kg/m^2 = the model's unit mass). Pins: weight 1 = hard, in (0, 1) = soft spring; targets
may be animated per frame (interpolated linearly over substeps). Colliders: spheres and
axis-aligned boxes, static or animated per frame.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import torch

from metaphys.optim.solve import iterate
from metaphys.physics.cloth import ClothProblem
from metaphys.sims.common import SolverSettings, StepRecord, check_positive, check_vector, default_optimizer

F64 = torch.float64
REFERENCE_AREAL_DENSITY = 0.2  # kg/m^2 that maps to the model's unit mass


def flat_cloth(rows: int, cols: int, size_m: float = 1.0, height: float = 1.0,
               plane: str = "xy") -> np.ndarray:
    """Rest positions [rows*cols, 3], row-major: a square ``size_m`` wide, horizontal (plane
    'xy' at z = height) or hanging (plane 'xz', top row at z = height)."""
    jj, ii = np.meshgrid(np.linspace(0, size_m, cols), np.linspace(0, size_m * (rows - 1) / max(cols - 1, 1), rows))
    if plane == "xy":
        pos = np.stack([jj - size_m / 2, ii - ii.max() / 2, np.full_like(ii, height)], -1)
    elif plane == "xz":
        pos = np.stack([jj - size_m / 2, np.zeros_like(ii), height - ii], -1)
    else:
        raise ValueError(f"plane must be 'xy' or 'xz', got {plane!r}")
    return pos.reshape(-1, 3)


class ClothSim:
    def __init__(self, rows: int = 32, cols: int = 32, *, rest_positions=None, size_m: float = 1.0,
                 fps: float = 24.0, substeps: int = 1, gravity: Sequence[float] = (0.0, 0.0, -9.81),
                 mass_per_area: float = 0.2, stretch: float = 1000.0, shear: float = 10.0, bend: float = 0.1,
                 damping: float = 0.1, wind: Sequence[float] = (0.0, 0.0, 0.0), pin_weights=None,
                 pin_targets=None, colliders: Optional[List[dict]] = None, contact_margin: float = 0.25,
                 iterations_per_step: Optional[int] = 30, tol: Optional[float] = None, max_iterations: int = 200,
                 guard: bool = True, device="cpu", optimizer=None):
        if not (isinstance(rows, int) and isinstance(cols, int)) or rows < 16 or cols < 16:
            raise ValueError(f"rows and cols must be ints >= 16 (the optimizer's minimum grid), got {rows}x{cols}")
        self.rows, self.cols = rows, cols
        nv = rows * cols
        self.device = torch.device(device)
        self.settings = SolverSettings(iterations_per_step, tol, max_iterations, guard)
        self.fps = check_positive("fps", fps)
        if not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"substeps must be a positive int, got {substeps!r}")
        self.substeps = substeps
        self.dt = 1.0 / (self.fps * substeps)
        rest = flat_cloth(rows, cols, size_m) if rest_positions is None else np.asarray(rest_positions, np.float64)
        if rest.shape != (nv, 3) or not np.isfinite(rest).all():
            raise ValueError(f"rest_positions must be finite with shape ({nv}, 3) (rows*cols, xyz), got {rest.shape}")
        grid = rest.reshape(rows, cols, 3)
        edges = np.concatenate([np.linalg.norm(np.diff(grid, axis=0), axis=-1).ravel(),
                                np.linalg.norm(np.diff(grid, axis=1), axis=-1).ravel()])
        if edges.min() <= 0:
            raise ValueError("rest_positions has zero-length edges (coincident neighbouring vertices)")
        self.length_unit = float(edges.mean())
        self.rest_positions = rest
        self.gravity = check_vector("gravity", gravity, 3)
        self.wind = check_vector("wind", wind, 3)
        for name, v in (("stretch", stretch), ("shear", shear), ("bend", bend), ("damping", damping)):
            check_positive(name, v, allow_zero=True)
        self.mass = check_positive("mass_per_area", mass_per_area) / REFERENCE_AREAL_DENSITY
        self.pin_w = self._pin_weights(pin_weights)
        self.pin_targets = self._pin_targets(pin_targets)
        self.colliders = self._colliders(colliders or [])
        self.optimizer = optimizer if optimizer is not None else default_optimizer(self.device)
        scale = self.dt ** 2 / self.length_unit
        x0 = self._to_model(rest)
        self.problem = ClothProblem(
            x0, pin_w=self._grid1(self.pin_w), pin_x=self._to_model(self._targets_at(0.0)),
            gravity=(self.gravity * scale).tolist(), wind=(self.wind * scale * self.mass).tolist(),
            k_stretch=float(stretch), k_shear=float(shear), k_bend=float(bend), mass=self.mass,
            damping=float(damping) * self.dt, margin=float(contact_margin), dt=1.0)
        self._set_colliders(0.0)
        self.u = self.problem.initial_guess()
        self.state = self.optimizer.init_state(tuple(self.u.shape), device=self.device)
        self.frame = 0
        self.records: List[StepRecord] = []

    # --- construction helpers ---------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: dict, *, optimizer=None, device="cpu", size: int = 32) -> "ClothSim":
        """Build from a bake spec (docs/bake-spec.md)."""
        from metaphys.bake.cloth import cloth_parameters, make_cloth_sim
        return make_cloth_sim(cloth_parameters(spec, size=size), optimizer, device=device)

    def _pin_weights(self, w):
        nv = self.rows * self.cols
        if w is None:
            w = np.zeros(nv)
            w[0] = w[self.cols - 1] = 1.0  # the two corners of the first row
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if w.shape != (nv,):
            raise ValueError(f"pin_weights must have rows*cols = {nv} entries, got {w.shape[0]}")
        if not np.isfinite(w).all() or w.min() < 0 or w.max() > 1:
            bad = int(np.argmax(~np.isfinite(w) | (w < 0) | (w > 1)))
            raise ValueError(f"pin_weights must be in [0, 1], got {w[bad]} at vertex {bad}")
        return w

    def _pin_targets(self, t):
        nv = self.rows * self.cols
        if t is None:
            return self.rest_positions[None]
        t = np.asarray(t, dtype=np.float64)
        if t.shape == (nv, 3):
            t = t[None]
        if t.ndim != 3 or t.shape[1:] != (nv, 3) or not np.isfinite(t).all():
            raise ValueError(f"pin_targets must be finite with shape ({nv}, 3) or (frames, {nv}, 3), got {t.shape}")
        return t

    def _colliders(self, colliders):
        out = []
        for k, c in enumerate(colliders):
            kind = c.get("type")
            center = np.asarray(c.get("center"), dtype=np.float64)
            if center.shape[-1:] != (3,) or center.ndim not in (1, 2) or not np.isfinite(center).all():
                raise ValueError(f"colliders[{k}].center must be [x,y,z] or a per-frame list of them")
            if kind == "sphere":
                r = c.get("radius")
                if r is None or not (float(r) > 0):
                    raise ValueError(f"colliders[{k}].radius must be > 0, got {r!r}")
                out.append({"type": "sphere", "center": np.atleast_2d(center), "radius": float(r)})
            elif kind == "box":
                he = np.asarray(c.get("half_extents"), dtype=np.float64)
                if he.shape != (3,) or (he <= 0).any():
                    raise ValueError(f"colliders[{k}].half_extents must be three positive numbers")
                out.append({"type": "box", "center": np.atleast_2d(center), "half_extents": he})
            else:
                raise ValueError(f"colliders[{k}].type must be 'sphere' or 'box', got {kind!r}")
        return out

    # --- unit conversions ---------------------------------------------------------------------
    def _grid1(self, w):
        return torch.as_tensor(w, dtype=F64, device=self.device).view(1, 1, self.rows, self.cols)

    def _to_model(self, pos: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(pos / self.length_unit, dtype=F64, device=self.device)
        return t.view(self.rows, self.cols, 3).permute(2, 0, 1).unsqueeze(0).contiguous()

    def _to_world(self, x: torch.Tensor) -> np.ndarray:
        return (x[0].permute(1, 2, 0).reshape(-1, 3).cpu().numpy() * self.length_unit)

    @staticmethod
    def _interp(track: np.ndarray, t: float) -> np.ndarray:
        """Value of a per-frame track at fractional frame index t (clamped at the ends)."""
        if len(track) == 1:
            return track[0]
        t = min(max(t, 0.0), len(track) - 1.0)
        k = int(math.floor(t))
        f = t - k
        return track[k] if f == 0 or k + 1 >= len(track) else (1 - f) * track[k] + f * track[k + 1]

    def _targets_at(self, t: float) -> np.ndarray:
        return self._interp(self.pin_targets, t)

    def _set_colliders(self, t: float):
        spheres = [np.r_[self._interp(c["center"], t) / self.length_unit, c["radius"] / self.length_unit]
                   for c in self.colliders if c["type"] == "sphere"]
        boxes = [np.r_[self._interp(c["center"], t) / self.length_unit, c["half_extents"] / self.length_unit]
                 for c in self.colliders if c["type"] == "box"]
        self.problem.set_colliders(spheres=torch.tensor(np.array(spheres).reshape(1, -1, 4), dtype=F64),
                                   boxes=torch.tensor(np.array(boxes).reshape(1, -1, 6), dtype=F64))

    # --- stepping -----------------------------------------------------------------------------
    def step(self) -> StepRecord:
        """Advance one frame (``substeps`` solver steps); returns the frame's record."""
        iters, rej, cap = 0, 0, False
        start = end = 0.0
        for s in range(self.substeps):
            t = self.frame + (s + 1) / self.substeps  # targets/colliders at the END of the substep
            self.problem.set_pins(pin_x=self._to_model(self._targets_at(t)))
            self._set_colliders(t)
            res = iterate(self.problem, self.optimizer, self.u, self.state, guard=self.settings.guard,
                          **self.settings.solve_kwargs())
            self.state = res.state
            g0 = float(res.residuals[0].max())
            start = g0 if s == 0 else start
            end = float(res.residual.max())
            iters += res.iterations
            rej += res.guard_rejections
            cap = cap or res.hit_cap
            self.u = self.problem.advance(res.u)
        self.frame += 1
        rec = StepRecord(self.frame, iters, end, start, rej, cap)
        self.records.append(rec)
        return rec

    def run(self, frames: int, callback=None) -> np.ndarray:
        """Simulate ``frames`` frames; world positions [frames, rows*cols, 3] (grid order)."""
        out = []
        for _ in range(int(frames)):
            self.step()
            out.append(self.positions.reshape(-1, 3).copy())
            if callback is not None:
                callback(self)
        return np.stack(out)

    # --- results ------------------------------------------------------------------------------
    @property
    def positions(self) -> np.ndarray:
        """Current world positions [rows, cols, 3] in metres."""
        return self._to_world(self.problem.fields["x_old"]).reshape(self.rows, self.cols, 3)

    def max_stretch(self) -> float:
        return float(self.problem.max_stretch().max()) * 1.0

    def finite(self) -> bool:
        return bool(torch.isfinite(self.problem.fields["x_old"]).all())

    def state_dict(self) -> dict:
        return {"fields": {k: v.clone() for k, v in self.problem.fields.items()}, "u": self.u.clone(),
                "state": vars(self.state).copy(), "frame": self.frame,
                "records": [r.as_dict() for r in self.records]}

    def load_state_dict(self, sd: dict) -> None:
        from metaphys.optim.metamizer import MetamizerState
        self.problem.fields = {k: v.to(self.device) for k, v in sd["fields"].items()}
        self.u = sd["u"].to(self.device)
        self.state = MetamizerState(**{k: v.to(self.device) for k, v in sd["state"].items()})
        self.frame = int(sd["frame"])
        self.records = [StepRecord(**r) for r in sd["records"]]
