"""2D smoke in physical units: incompressible Navier-Stokes (MAC grid, vector potential) carrying a
density that floats.

Units. The arguments are SI, as in the bake spec: the domain's longer side is ``size_m`` metres, a
frame lasts 1/``fps`` s, ``buoyancy`` is the upward acceleration (m/s^2) of smoke of density 1,
``viscosity`` and ``density_diffusion`` are m^2/s, ``emitter_density`` is density injected per
second, ``emitter_velocity`` m/s and ``wind`` m/s^2. Fire-like plumes: emitters may also inject
heat (``emitter_heat``, temperature per second; temperature is relative to the ambient air and
dimensionless, like the density), which rises with ``heat_buoyancy`` (m/s^2 per unit temperature),
is carried and diffused with the density and cools as exp(-``cooling`` * t). Inside, the solver works in grid units
(``GridUnits``, the one place the mapping lives): lengths in cells (dx = size_m / max(rows, cols)),
time in frames. So the same scene gives the same plume at any resolution and any fps, up to the
discretisation error (benchmarks/results/smoke_units.md measures it).

Steps. A frame is n fluid steps of 1/n frame: n = max(``substeps``, ceil(speed / ``cfl``)), where
speed (cells per frame) is the fastest face velocity at the frame start plus what buoyancy, wind and
the emitters can add within the frame; so no step carries the flow much more than ``cfl`` cells.
Each step: (1) buoyancy, wind and the emitters' push are set as forces on the velocity faces, (2) the
fluid step (trapezoidal in time) is solved for (a, p) by the optimizer, (3) the density and the
temperature are carried by the step's mean velocity (physics.fluid.transport: upwind finite volumes
with limited MUSCL face values, Heun sub-steps short enough that no cell can go negative; walls pass
nothing, so mass changes only by the emitters) and the temperature cools (exactly: a factor). The density is >= 0 by construction, not clamped; each frame's
record has its minimum (``min_density``) and the bake manifest keeps it. The domain is a closed box
with no-slip walls (``wall`` cells thick); obstacles are masks (fixed or per frame) or moving shapes
(in cells, row 0 = top). Row 0 is the TOP of the domain.
"""
from __future__ import annotations

import inspect
import math
from typing import List, Optional, Sequence

import numpy as np
import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.step_solvers import MetamizerStep, initial_state
from metaphys.physics.fluid import FluidProblem, add_obstacle, corner_velocity, curl, fluid_geometry, transport
from metaphys.sims.base import Sim, step_residuals
from metaphys.sims.common import (COMMON_ARGUMENTS, SimulationDiverged, SolverSettings, check_threads,
                                  fastest_forward, optimizer_for, refuse_solver_settings)
from metaphys.sims.smoke_common import REMOVED_ARGUMENTS, GridUnits, SmokeState, SmokeStepRecord, _push  # noqa: F401 (API)
from metaphys.spec.params import SMOKE_SIM_KEYS, smoke_parameters, smoke_sim_kwargs
from metaphys.spec.schema import SMOKE_SCHEMA
from metaphys.spec.types import Int
from metaphys.spec.validate import argument_error, check_arguments, schema_types

F64 = torch.float64
# SmokeSim's keyword arguments, checked with the bake spec's own types (spec/validate.py): those a
# spec has are the schema's entries; the others (API only) use the same value types
ARGUMENTS = {**COMMON_ARGUMENTS,
             **schema_types(SMOKE_SCHEMA, ("resolution", "iterations_per_step", "tol") + SMOKE_SIM_KEYS,
                            nullable=("iterations_per_step", "obstacle_shapes")),
             "wall": Int(1, unit="cells"),
             "batch": Int(1)}


def _frames_array(name: str, value, h: int, w: int) -> Optional[np.ndarray]:
    """None, [H,W] or [F >= 1,H,W] in [0,1] (or a .npy path; values and paths checked by the
    schema's type) -> float64 array."""
    if value is None:
        return None
    arr = np.asarray(np.load(value, allow_pickle=False) if isinstance(value, str) else value, dtype=np.float64)
    if arr.ndim not in (2, 3) or arr.shape[-2:] != (h, w) or len(arr) == 0:
        raise argument_error("SmokeSim", name, f"expected shape [{h}, {w}] or [frames >= 1, {h}, {w}] (the "
                                               f"resolution), got shape {list(arr.shape)}")
    if arr.min() < 0 or arr.max() > 1:
        raise argument_error("SmokeSim", name, f"expected values in [0, 1], got range [{arr.min():g}, {arr.max():g}]")
    return arr


class SmokeSim(SmokeState, Sim):
    """Batched 2D smoke simulation (``batch`` independent sims of the same size); ``step()`` is one frame."""

    step_unit = "frames"

    def __new__(cls, resolution: Sequence[int] = (64, 64), *args, **kwargs):
        """A 3-tuple resolution (depth, rows, cols) makes the 3-D sim, ``SmokeSim3D`` (sims/smoke3d.py)."""
        if cls is SmokeSim and isinstance(resolution, (list, tuple)) and len(resolution) == 3:
            from metaphys.sims.smoke3d import SmokeSim3D
            return SmokeSim3D(resolution, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, resolution: Sequence[int] = (64, 64), *, size_m: float = 1.0, fps: float = 24.0,
                 substeps: int = 1, cfl: float = 4.0, emitters=None, obstacles=None,
                 obstacle_shapes: Optional[List[dict]] = None, emitter_density: float = 1.0,
                 emitter_velocity: Sequence[float] = (0.0, 0.0), buoyancy: float = 4.0, viscosity: float = 1e-3,
                 density_diffusion: float = 0.0, wind: Sequence[float] = (0.0, 0.0), emitter_heat: float = 0.0,
                 heat_buoyancy: float = 4.0, cooling: float = 1.0, wall: int = 2,
                 iterations_per_step: Optional[int] = 20, tol: Optional[float] = None, max_iterations: int = 200,
                 guard: bool = True, batch: int = 1, device="cpu", optimizer=None, weights=None,
                 accelerate: int = DEFAULT_MEMORY, threads: Optional[int] = None, step_solver=None, **removed):
        self._refuse_removed(removed)
        a = check_arguments("SmokeSim", ARGUMENTS, locals())  # the arguments as passed: no coercion
        refuse_solver_settings("SmokeSim", SmokeSim.__init__, locals())
        self.h, self.w = int(resolution[0]), int(resolution[1])
        # torch threads while stepping (None: sims.common.threads_for_grid, the rule bakes use too)
        self.threads = check_threads(threads, self.h, self.w)
        self.n = int(batch)
        self.device = torch.device(device)
        # accelerate: the fluid step's subspace acceleration (optim/accelerate.py; 0 = plain)
        self.settings = SolverSettings(iterations_per_step, tol, max_iterations, guard, accelerate)
        self.size_m, self.fps = a["size_m"], a["fps"]
        self.substeps, self.cfl = a["substeps"], a["cfl"]
        self.units = GridUnits(self.size_m / max(self.h, self.w), 1.0 / self.fps)
        self.buoyancy, self.viscosity = a["buoyancy"], a["viscosity"]
        self.density_diffusion, self.emitter_density = a["density_diffusion"], a["emitter_density"]
        self.emitter_velocity, self.wind = list(a["emitter_velocity"]), list(a["wind"])
        self.emitter_heat, self.heat_buoyancy, self.cooling = a["emitter_heat"], a["heat_buoyancy"], a["cooling"]
        if 2 * wall + 3 > min(self.h, self.w):
            raise argument_error("SmokeSim", "wall", f"expected walls that leave room for fluid (2 * wall + 3 <= "
                                                     f"{min(self.h, self.w)} cells), got {wall!r}")
        self.wall = int(wall)
        self.emitters = _frames_array("emitters", emitters, self.h, self.w)
        if self.emitters is None:
            self.emitters = self.default_emitter(self.h, self.w)
        self.obstacles = _frames_array("obstacles", obstacles, self.h, self.w)
        self.obstacle_shapes = list(a["obstacle_shapes"] or [])
        # the fluid step's solver: the Metamizer loop of the settings, or the one given (step_solver=)
        if step_solver is None:
            step_solver = MetamizerStep(optimizer_for(optimizer, weights, self.device, fastest=True),
                                        **self.settings.step_solver_kwargs())
        self.step_solver = step_solver
        self.frame = 0
        mask, bc = self._geometry(0, 1.0)
        # grid units: unit fluid density (forces are accelerations), viscosity in cells^2 per frame
        self.fluid = FluidProblem(mask, bc, rho=1.0, mu=self.units.diffusivity(self.viscosity), dt=1.0)
        self.u = self.fluid.initial_guess()
        self.fluid_state = initial_state(self.step_solver, self.u)
        self.density_field = torch.zeros(self.n, 1, self.h, self.w, dtype=F64, device=self.device)
        self.temperature_field = torch.zeros_like(self.density_field)
        self.records: List[SmokeStepRecord] = []
        self.injected = torch.zeros(self.n, dtype=F64, device=self.device)

    @staticmethod
    def _refuse_removed(removed: dict) -> None:
        for name in removed:
            if name in REMOVED_ARGUMENTS:
                raise argument_error("SmokeSim", name, REMOVED_ARGUMENTS[name])
            raise TypeError(f"SmokeSim() got an unexpected keyword argument {name!r}")

    @classmethod
    def from_spec(cls, spec: dict, *, optimizer=None, device="cpu", size: int = 128) -> "SmokeSim":
        """Build from a bake spec (docs/bake-spec.md)."""
        return cls.from_params(smoke_parameters(spec, size=size), optimizer=optimizer, device=device)

    @classmethod
    def from_params(cls, p: dict, *, optimizer=None, device="cpu", threads: Optional[int] = None) -> "SmokeSim":
        """Build from validated spec parameters (metaphys.spec.params.smoke_parameters), with the
        fastest measured forward pass of the given (or shipped) Metamizer; 3-D parameters (a resolution
        of 3 entries) build a ``SmokeSim3D`` with the 3-D Metamizer."""
        if len(p["resolution"]) == 3:
            from metaphys.sims.smoke3d import SmokeSim3D
            return SmokeSim3D.from_params(p, optimizer=optimizer, device=device, threads=threads)
        optimizer = cls.fastest_optimizer(device, optimizer)
        return cls(tuple(p["resolution"]), optimizer=optimizer, device=device, threads=threads,
                   **smoke_sim_kwargs(p))

    @staticmethod
    def fastest_optimizer(device, optimizer=None):
        """The shipped (or given plain) Metamizer with the fastest measured forward pass: on CPU
        the frozen channels_last module of optim/fast.py (same steps to ~1e-6), else as is."""
        return fastest_forward(optimizer_for(optimizer, None, device), device)

    @staticmethod
    def default_emitter(h: int, w: int) -> np.ndarray:
        """A disc at the bottom centre: radius 0.1 of the shorter side, centre 0.15 of the height above
        the bottom; rim cells hold the fraction of them it covers, so its area (and the smoke it
        injects) does not change with the resolution."""
        r = 0.1 * min(h, w)
        y = h - 0.5 - np.arange(h)[:, None]          # cell centres above the bottom, in cells
        x = np.arange(w)[None, :] + 0.5
        dist = np.hypot(x - 0.5 * w, y - 0.15 * h)
        return np.clip(r - dist + 0.5, 0.0, 1.0)

    # --- geometry per fluid step ---------------------------------------------------------------
    def _pick(self, arr: Optional[np.ndarray], frame: int) -> Optional[np.ndarray]:
        if arr is None:
            return None
        return arr if arr.ndim == 2 else arr[min(frame, arr.shape[0] - 1)]

    @staticmethod
    def _shape_motion(shape: dict, frame: int, fraction: float):
        """(centre, velocity in cells per frame) of a shape ``fraction`` of the way through ``frame``:
        a track's entry k is where the shape is at the end of frame k; it moves in a straight line
        from the previous entry during the frame."""
        c = np.asarray(shape["center"], dtype=np.float64)
        if c.ndim == 1:
            return c, np.zeros(2)
        end = c[min(frame, len(c) - 1)]
        start = c[max(0, min(frame, len(c) - 1) - 1)]
        return start + fraction * (end - start), end - start

    def _geometry(self, frame: int, fraction: float):
        mask, bc = fluid_geometry(self.n, self.h, self.w, kind="box", wall_rows=self.wall, wall_cols=self.wall,
                                  device=self.device)
        obst = self._pick(self.obstacles, frame)
        if obst is not None:
            m = torch.as_tensor(obst >= 0.5, dtype=F64, device=self.device)
            mask = torch.maximum(mask, m.expand_as(mask)).contiguous()
        for s in self.obstacle_shapes:
            center, velocity = self._shape_motion(s, frame, fraction)  # wall velocity (v_y, v_x): rows/cols per frame
            size = {"radius": float(s["radius"])} if s["type"] == "circle" else {"half": tuple(s["half"])}
            mask, bc = add_obstacle(mask, bc, s["type"], center=tuple(center), velocity=tuple(velocity), **size)
        return mask, bc

    # --- forces and step sizes (grid units: cells, frames) -------------------------------------
    def _accelerations(self):
        """(buoyancy per unit density, per unit temperature, wind x, wind up) in cells/frame^2."""
        g = self.units
        return (g.acceleration(self.buoyancy), g.acceleration(self.heat_buoyancy), g.acceleration(self.wind[0]),
                g.acceleration(self.wind[1]))

    def _forces(self, emitter: torch.Tensor, dt: float) -> torch.Tensor:
        """Force per unit mass on the (v_y, v_x) faces: buoyancy of the density and the heat, wind (+y is
        up = -rows) and the emitters' push, which brings the flow inside them up to ``emitter_velocity``
        within a step."""
        b, b_heat, wind_x, wind_up = self._accelerations()
        lift = b * self.density_field + b_heat * self.temperature_field
        lift_y = 0.5 * (lift + torch.nn.functional.pad(lift, (0, 1))[..., 1:])  # v_y faces sit at (i, j+1/2)
        f_y = -(lift_y + wind_up)
        f_x = torch.full_like(f_y, wind_x)
        push_x, push_up = (self.units.speed(v) for v in self.emitter_velocity)
        if push_x or push_up:
            vy, vx = curl(self.fluid.fields["a_old"])
            e_y = 0.5 * (emitter + torch.nn.functional.pad(emitter, (0, 1))[..., 1:])
            e_x = 0.5 * (emitter + torch.nn.functional.pad(emitter, (0, 0, 0, 1))[..., 1:, :])
            f_y = f_y + e_y * _push(vy, -push_up) / dt
            f_x = f_x + e_x * _push(vx, push_x) / dt
        return torch.cat([f_y, f_x], dim=1).contiguous()

    def _peak_speed(self) -> float:
        """Fastest face velocity now (cells per frame)."""
        vy, vx = curl(self.fluid.fields["a_old"])
        return float(torch.maximum(vy.abs().max(), vx.abs().max()))

    def _steps_for_frame(self) -> int:
        """Fluid steps this frame: enough that the flow (as fast as it is, plus what buoyancy, wind and
        the emitters can add within the frame) moves at most ``cfl`` cells per step; more than
        MAX_SUBSTEPS is refused (SimulationDiverged naming the forces)."""
        b, b_heat, wind_x, wind_up = self._accelerations()
        gain = (abs(b) * float(self.density_field.max()) + abs(b_heat) * float(self.temperature_field.max())
                + math.hypot(wind_x, wind_up))
        push = self.units.speed(math.hypot(*self.emitter_velocity))
        speed = max(self._peak_speed() + gain, push)
        return self._fluid_steps(speed)

    # --- stepping -----------------------------------------------------------------------------
    def _step(self) -> SmokeStepRecord:
        frame = self.frame
        n = self._steps_for_frame()
        dt = 1.0 / n
        em_np = self._pick(self.emitters, frame)
        emitter_grid = torch.as_tensor(em_np, dtype=F64, device=self.device).expand(self.n, 1, self.h, self.w)
        iterations = rejections = carried = 0
        hit_cap, residual, residual_start, courant = False, 0.0, None, 0.0
        for k in range(n):
            mask, bc = self._geometry(frame, (k + 1) / n)
            emitter = emitter_grid * (1 - mask)
            self.fluid.set_boundary(mask=mask, bc=bc, force=self._forces(emitter, dt))
            self.fluid.fields["dt"].fill_(dt)
            res = self.step_solver.solve(self.fluid, self.u, self.fluid_state)
            r0, r1 = step_residuals(self.fluid, self.u, res)
            self.fluid_state = res.state
            u_new = res.u
            courant = max(courant, self._check_resolved(u_new, dt, frame + 1))
            carried += self._carry_density(u_new, mask, emitter, dt)
            self.u = self.fluid.advance(u_new)
            iterations += res.iterations
            rejections += res.guard_rejections
            hit_cap = hit_cap or res.hit_cap
            residual = max(residual, float(r1.max()))
            residual_start = float(r0.max()) if residual_start is None else residual_start
        self.frame += 1
        rec = SmokeStepRecord(self.frame, iterations, residual, residual_start, rejections, hit_cap, substeps=n,
                              courant=courant, transport_substeps=carried,
                              min_density=float(self.density_field.min()), time_s=self.frame / self.fps)
        self.records.append(rec)
        return rec

    def _carry_density(self, u_new: torch.Tensor, mask: torch.Tensor, emitter: torch.Tensor, dt: float) -> int:
        """Carry the density and the temperature through one fluid step (the step's mean velocity), with
        the emitters' sources, then cool the temperature; returns the transport's sub-steps. What sits
        under a newly masked cell is dropped."""
        vel = corner_velocity(self.fluid, u_new, which="mean")
        g = self.units
        source = torch.cat([g.rate(self.emitter_density) * emitter, g.rate(self.emitter_heat) * emitter], dim=1)
        fields = torch.cat([self.density_field, self.temperature_field], dim=1) * (1 - mask)
        try:
            carried, k = transport(fields, vel, mask, dt, D=g.diffusivity(self.density_diffusion), source=source)
        except ValueError as exc:
            raise self._diverged(self.frame + 1, str(exc)) from None
        self.density_field = carried[:, 0:1].contiguous()
        self.temperature_field = carried[:, 1:2] * math.exp(-g.rate(self.cooling) * dt)  # exact decay: stays >= 0
        self.injected += (source[:, 0:1] * dt).flatten(1).sum(1)
        return k

    def _check_resolved(self, u_new: torch.Tensor, dt: float, frame: int) -> float:
        """The largest distance (cells) the step carried the flow; refuses (SimulationDiverged naming the
        cause) a step the grid cannot resolve instead of returning garbage: non-finite values or a flow
        that crosses the whole domain in one step."""
        if not bool(torch.isfinite(u_new).all()):
            raise self._diverged(frame, "the fluid solve produced non-finite values")
        vy, vx = curl(u_new[:, 0:1])
        cells = float(torch.maximum(vy.abs().max(), vx.abs().max())) * dt
        domain = max(self.h, self.w)
        if cells > domain:
            raise self._diverged(frame, f"the flow reached {cells:.3g} cells per step, more than the whole "
                                        f"{domain}-cell domain in one step")
        return cells

    def _diverged(self, frame: int, what: str) -> SimulationDiverged:
        d = {k: SMOKE_SCHEMA[k].default for k in ("buoyancy", "emitter_velocity", "wind", "size_m")}
        heat = (f", heat_buoyancy={self.heat_buoyancy:g} (m/s^2 per unit temperature) with emitter_heat="
                f"{self.emitter_heat:g}" if self.emitter_heat else "")
        return SimulationDiverged(
            f"SmokeSim diverged at frame {frame}: {what}; the forces are too strong for the grid -- "
            f"buoyancy={self.buoyancy:g} (m/s^2 per unit density), emitter_velocity={self.emitter_velocity} (m/s), "
            f"wind={self.wind} (m/s^2){heat} in a {self.size_m:g} m domain at {self.fps:g} fps, against the defaults "
            f"{d['buoyancy']:g}, {d['emitter_velocity']} and {d['wind']} in {d['size_m']:g} m: smaller forces or a "
            "coarser grid keep the flow resolved -- or obstacle shapes jump many cells per frame")

    # --- results (SI) ----------------------------------------------------------------------------
    @property
    def density(self) -> np.ndarray:
        """[H, W] (batch 1) or [N, H, W] density on the grid corners, row 0 = top."""
        d = self.density_field[:, 0].cpu().numpy()
        return d[0] if self.n == 1 else d

    field = density  # the protocol's result name (sims/base.py)

    @property
    def temperature(self) -> np.ndarray:
        """[H, W] (or [N, H, W]) temperature above the ambient air, where the density is (0 without emitter_heat)."""
        t = self.temperature_field[:, 0].cpu().numpy()
        return t[0] if self.n == 1 else t

    @property
    def velocity(self) -> np.ndarray:
        """Velocity (vx, vy) in m/s with vy pointing UP, at the density's points: [H, W, 2] (or [N, H, W, 2])."""
        v = corner_velocity(self.fluid, self.u, which="new").cpu().numpy()
        out = np.stack([v[:, 1], -v[:, 0]], axis=-1) * self.units.cell_m / self.units.frame_s
        return out[0] if self.n == 1 else out

    @property
    def pressure(self) -> np.ndarray:
        """Kinematic pressure (pressure / fluid density, m^2/s^2) at the cell centres, up to a constant."""
        p = self.u[:, 1].cpu().numpy() * (self.units.cell_m / self.units.frame_s) ** 2
        return p[0] if self.n == 1 else p

    @property
    def time_s(self) -> float:
        """Simulated time (s): frames done / fps."""
        return self.frame / self.fps

    def total_density(self) -> torch.Tensor:
        return self.density_field.flatten(1).sum(1)

    # --- resumable state: SmokeState (smoke_common.py) -----------------------------------------


# SmokeSim.__new__ (the 3-D dispatch) takes *args/**kwargs: the class's signature is __init__'s
SmokeSim.__signature__ = inspect.signature(SmokeSim.__init__).replace(
    parameters=list(inspect.signature(SmokeSim.__init__).parameters.values())[1:])
