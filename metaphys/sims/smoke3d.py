"""3D smoke in physical units (issue #28): ``SmokeSim`` one dimension up.

The same scene description and units as the 2-D ``SmokeSim`` (its ``GridUnits`` map SI to cells and
frames: one implementation of the units): a domain whose longest side is ``size_m`` metres, ``fps``,
``buoyancy`` (m/s^2 per unit density), ``viscosity`` / ``density_diffusion`` (m^2/s), emitters that
inject ``emitter_density`` per second and push the flow up to ``emitter_velocity`` (m/s), heat with
``heat_buoyancy`` and ``cooling``. What is new is the grid and the scene's shapes:

* Grid [D, H, W] of cubes (``resolution`` = (depth, rows, cols)), in world axes (Blender's, z up):
  column j -> +x, depth k -> +y, row i -> z with row 0 at the TOP, node (k, i, j) the cube centred at
  ``origin + cell * (j + 1/2, k + 1/2, H - 1 - i + 1/2)`` -- the voxel layout ``metaphys.io.vdb`` writes,
  so a bake's VDB grids sit where the scene's shapes were.
* Emitters and obstacles are shapes in metres (spheres, boxes, closed triangle meshes voxelized by
  trimesh; ``sims/voxelize.py``: the fraction of each cell they cover) or coverage arrays [D, H, W] in
  [0, 1]; static. An obstacle is the cells it covers at least half.
* Velocities and forces are world vectors (x, y, z), m/s and m/s^2.

Per fluid step (a frame takes as many as ``cfl`` asks, as in 2-D): buoyancy of the density and the
heat, wind and the emitters' push as forces on the faces (``physics.fluid3d.buoyancy_force``), the
trapezoidal Navier-Stokes step of ``physics.fluid3d`` (edge vector potential + pressure: the MAC
velocity curl(a) is divergence-free by construction) solved by the 3-D Metamizer with the subspace
acceleration to ``tol`` (mean squared residual, grid units; capped at ``max_iterations``), then the
density and temperature carried by the step's mean node velocity with the monotone 3-D transport
(``fluid3d.transport``: sub-stepped so no cell can go negative; nothing clamped).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import torch

from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.step_solvers import MetamizerStep, initial_state
from metaphys.physics import fluid3d as F3
from metaphys.sims.base import Sim, step_residuals
from metaphys.sims.common import (COMMON_ARGUMENTS, SimulationDiverged, SolverSettings, check_threads,
                                  fastest_forward, optimizer_for, refuse_solver_settings)
from metaphys.sims.smoke_common import REMOVED_ARGUMENTS, GridUnits, SmokeState, SmokeStepRecord, _push
from metaphys.sims.voxelize import coverage
from metaphys.spec.params import SMOKE3D_SIM_KEYS, smoke_parameters, smoke_sim_kwargs
from metaphys.spec.schema import SHAPE3D, SMOKE3D_REMOVED, SMOKE3D_SCHEMA, mesh_shape_problem
from metaphys.spec.types import Int, ListOf
from metaphys.spec.validate import argument_error, check_arguments, check_value, schema_types

F64 = torch.float64
_SHAPES = ("emitters", "obstacles")  # shapes or coverage arrays: checked by _scene_array
ARGUMENTS = {**COMMON_ARGUMENTS,
             **schema_types(SMOKE3D_SCHEMA, ("resolution", "iterations_per_step", "tol")
                            + tuple(k for k in SMOKE3D_SIM_KEYS if k not in _SHAPES),
                            nullable=("iterations_per_step",)),
             "wall": Int(1, unit="cells"),
             "batch": Int(1)}
REMOVED_ARGUMENTS_3D = {**REMOVED_ARGUMENTS, **{k: v for k, v in SMOKE3D_REMOVED.items() if k == "obstacle_shapes"}}


def to_world(v: torch.Tensor) -> torch.Tensor:
    """Grid vector channels (along depth, rows, cols) -> world (x, y, z): rows point down."""
    return torch.stack([v[:, 2], v[:, 0], -v[:, 1]], dim=-1)


def from_world(x: Sequence[float]) -> List[float]:
    """World (x, y, z) -> grid channels (depth, rows, cols)."""
    return [float(x[1]), -float(x[2]), float(x[0])]


class SmokeSim3D(SmokeState, Sim):
    """Batched 3-D smoke (``batch`` independent sims of one scene); ``step()`` is one frame."""

    step_unit = "frames"

    def __init__(self, resolution: Sequence[int] = (32, 32, 32), *, size_m: float = 1.0,
                 origin: Sequence[float] = (0.0, 0.0, 0.0), fps: float = 24.0, substeps: int = 1, cfl: float = 4.0,
                 emitters=None, obstacles=None, emitter_density: float = 1.0,
                 emitter_velocity: Sequence[float] = (0.0, 0.0, 0.0), buoyancy: float = 4.0, viscosity: float = 1e-3,
                 density_diffusion: float = 0.0, wind: Sequence[float] = (0.0, 0.0, 0.0), emitter_heat: float = 0.0,
                 heat_buoyancy: float = 4.0, cooling: float = 1.0, wall: int = 2,
                 iterations_per_step: Optional[int] = None, tol: Optional[float] = 1e-10, max_iterations: int = 60,
                 guard: bool = True, batch: int = 1, device="cpu", optimizer=None, weights=None,
                 accelerate: int = DEFAULT_MEMORY, threads: Optional[int] = None, step_solver=None, **removed):
        for name in removed:
            if name in REMOVED_ARGUMENTS_3D:
                raise argument_error("SmokeSim3D", name, REMOVED_ARGUMENTS_3D[name])
            raise TypeError(f"SmokeSim3D() got an unexpected keyword argument {name!r}")
        a = check_arguments("SmokeSim3D", ARGUMENTS, locals())  # the arguments as passed: no coercion
        refuse_solver_settings("SmokeSim3D", SmokeSim3D.__init__, locals())
        self.d, self.h, self.w = (int(x) for x in a["resolution"])
        self.threads = check_threads(threads, self.d * self.h, self.w)
        self.n = int(batch)
        self.device = torch.device(device)
        self.settings = SolverSettings(iterations_per_step, tol, max_iterations, guard, accelerate)
        self.size_m, self.origin, self.fps = a["size_m"], list(a["origin"]), a["fps"]
        self.substeps, self.cfl = a["substeps"], a["cfl"]
        self.units = GridUnits(self.size_m / max(self.d, self.h, self.w), 1.0 / self.fps)
        self.buoyancy, self.viscosity = a["buoyancy"], a["viscosity"]
        self.density_diffusion, self.emitter_density = a["density_diffusion"], a["emitter_density"]
        self.emitter_velocity, self.wind = list(a["emitter_velocity"]), list(a["wind"])
        self.emitter_heat, self.heat_buoyancy, self.cooling = a["emitter_heat"], a["heat_buoyancy"], a["cooling"]
        if 2 * wall + 3 > min(self.d, self.h, self.w):
            raise argument_error("SmokeSim3D", "wall", f"expected walls that leave room for fluid (2 * wall + 3 <= "
                                                       f"{min(self.d, self.h, self.w)} cells), got {wall!r}")
        self.wall = int(wall)
        self.emitters = self._scene_array("emitters", emitters)
        if self.emitters is None:
            self.emitters = coverage([self.default_emitter_shape()], self.shape, self.units.cell_m, self.origin)
        self.obstacles = self._scene_array("obstacles", obstacles)
        if step_solver is None:
            # no optimizer given: the 3-D network's fast module on CPU (optim/fast.py), as SmokeSim
            step_solver = MetamizerStep(optimizer_for(optimizer, weights, self.device, fastest=True, dims=3),
                                        **self.settings.step_solver_kwargs())
        self.step_solver = step_solver
        self.frame = 0
        self.mask, bc = self._geometry()
        self.fluid = F3.Fluid3DProblem(self.mask, bc, rho=1.0, mu=self.units.diffusivity(self.viscosity), dt=1.0)
        self.u = self.fluid.initial_guess()
        self.fluid_state = initial_state(self.step_solver, self.u)
        self.emitter_grid = (torch.as_tensor(self.emitters, dtype=F64, device=self.device)
                             .expand(self.n, 1, *self.shape) * (1 - self.mask)).contiguous()
        self.density_field = torch.zeros(self.n, 1, *self.shape, dtype=F64, device=self.device)
        self.temperature_field = torch.zeros_like(self.density_field)
        self.records: List[SmokeStepRecord] = []
        self.injected = torch.zeros(self.n, dtype=F64, device=self.device)

    @property
    def shape(self):
        return (self.d, self.h, self.w)

    @classmethod
    def from_spec(cls, spec: dict, *, optimizer=None, device="cpu") -> "SmokeSim3D":
        """Build from a 3-D bake spec (docs/bake-spec.md: a smoke spec whose resolution has 3 entries)."""
        return cls.from_params(smoke_parameters(spec), optimizer=optimizer, device=device)

    @classmethod
    def from_params(cls, p: dict, *, optimizer=None, device="cpu", threads: Optional[int] = None) -> "SmokeSim3D":
        """Build from validated 3-D spec parameters (metaphys.spec.params.smoke_parameters), with the
        fastest measured forward pass of the given (or shipped) plain 3-D Metamizer, as SmokeSim."""
        optimizer = (optimizer_for(None, None, device, fastest=True, dims=3) if optimizer is None
                     else fastest_forward(optimizer_for(optimizer, None, device, dims=3), device))
        return cls(tuple(p["resolution"]), optimizer=optimizer, device=device, threads=threads,
                   **smoke_sim_kwargs(p))

    def default_emitter_shape(self) -> dict:
        """The 2-D default disc as a sphere: radius 0.1 of the shortest side, centre 0.15 of the height above
        the bottom, centred horizontally."""
        c = self.units.cell_m
        ext = [self.w * c, self.d * c, self.h * c]  # world x, y, z extents
        centre = [self.origin[0] + 0.5 * ext[0], self.origin[1] + 0.5 * ext[1], self.origin[2] + 0.15 * ext[2]]
        return {"type": "sphere", "center": centre, "radius": 0.1 * min(ext)}

    def _scene_array(self, name: str, value) -> Optional[np.ndarray]:
        """Emitters/obstacles: None, a list of shapes (the spec's, metres) or a coverage array [D, H, W] in
        [0, 1] -> float64 [D, H, W]."""
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            shapes = check_value("SmokeSim3D", name, ListOf(SHAPE3D, "shapes"), value)
            for i, s in enumerate(shapes):
                problem = mesh_shape_problem(s) if s["type"] == "mesh" else None
                if problem is not None:
                    raise argument_error("SmokeSim3D", name, f"{name}[{i}].{problem[0]}: {problem[1]}")
            return coverage(shapes, self.shape, self.units.cell_m, self.origin)
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != self.shape:
            raise argument_error("SmokeSim3D", name, f"expected a list of shapes or an array of shape "
                                                     f"{list(self.shape)} (the resolution), got shape {list(arr.shape)}")
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise argument_error("SmokeSim3D", name, f"expected values in [0, 1], got range "
                                                     f"[{np.nanmin(arr):g}, {np.nanmax(arr):g}]")
        return arr

    def _geometry(self):
        mask, bc = F3.box_geometry(self.n, self.d, self.h, self.w, wall=self.wall, device=self.device)
        if self.obstacles is not None:
            solid = torch.as_tensor(self.obstacles >= 0.5, dtype=F64, device=self.device)
            mask = torch.maximum(mask, solid.expand_as(mask)).contiguous()
        return mask, bc

    # --- forces and step sizes (grid units: cells, frames) -------------------------------------
    def _forces(self, dt: float) -> torch.Tensor:
        """Force per unit mass on the (depth, row, col) faces: buoyancy of the density and the heat (up =
        -rows), wind, and the emitters' push up to ``emitter_velocity`` within a step."""
        g = self.units
        lift = g.acceleration(self.buoyancy) * self.density_field + g.acceleration(self.heat_buoyancy) * \
            self.temperature_field
        f = F3.buoyancy_force(lift)
        wind = from_world([g.acceleration(x) for x in self.wind])
        if any(wind):
            f = f + torch.tensor(wind, dtype=F64, device=self.device).view(1, 3, 1, 1, 1)
        target = from_world([g.speed(x) for x in self.emitter_velocity])
        if any(target):
            v = F3.curl(self.fluid.fields["a_old"])
            e = F3.buoyancy_force(self.emitter_grid, up=(1.0, 1.0, 1.0))   # the emitter on each face
            f = f + torch.cat([e[:, c:c + 1] * _push(v[:, c:c + 1], target[c]) for c in range(3)], dim=1) / dt
        return f.contiguous()

    def _peak_speed(self) -> float:
        return float(F3.curl(self.fluid.fields["a_old"]).abs().max())

    def _steps_for_frame(self) -> int:
        """Fluid steps this frame: the flow (plus what the forces can add within the frame) moves at most
        ``cfl`` cells per step; more than MAX_SUBSTEPS is refused."""
        g = self.units
        gain = (abs(g.acceleration(self.buoyancy)) * float(self.density_field.max())
                + abs(g.acceleration(self.heat_buoyancy)) * float(self.temperature_field.max())
                + math.hypot(*(g.acceleration(x) for x in self.wind)))
        speed = max(self._peak_speed() + gain, g.speed(math.hypot(*self.emitter_velocity)))
        return self._fluid_steps(speed)

    # --- stepping -----------------------------------------------------------------------------
    def _step(self) -> SmokeStepRecord:
        n = self._steps_for_frame()
        dt = 1.0 / n
        iterations = rejections = carried = 0
        hit_cap, residual, residual_start, courant = False, 0.0, None, 0.0
        for _ in range(n):
            self.fluid.set_boundary(force=self._forces(dt))
            self.fluid.fields["dt"].fill_(dt)
            res = self.step_solver.solve(self.fluid, self.u, self.fluid_state)
            r0, r1 = step_residuals(self.fluid, self.u, res)
            self.fluid_state = res.state
            courant = max(courant, self._check_resolved(res.u, dt))
            carried += self._carry(res.u, dt)
            self.u = self.fluid.advance(res.u)
            iterations += res.iterations
            rejections += res.guard_rejections
            hit_cap = hit_cap or res.hit_cap
            residual = max(residual, float(r1.max()))
            residual_start = float(r0.max()) if residual_start is None else residual_start
        self.frame += 1
        rec = SmokeStepRecord(self.frame, iterations, residual, residual_start, rejections, hit_cap, substeps=n,
                              courant=courant, transport_substeps=carried,
                              min_density=float(self.density_field.min()), time_s=self.frame / self.fps)
        if self.settings.tol is not None:
            rec.converged = not hit_cap
        self.records.append(rec)
        return rec

    def _carry(self, u_new: torch.Tensor, dt: float) -> int:
        """Density and temperature through one fluid step (the step's mean node velocity) with the emitters'
        sources, then the cooling (an exact factor); returns the transport's sub-steps."""
        vel = F3.node_velocity(self.fluid, u_new, which="mean", mask=self.mask)
        g = self.units
        source = torch.cat([g.rate(self.emitter_density) * self.emitter_grid,
                            g.rate(self.emitter_heat) * self.emitter_grid], dim=1)
        fields = torch.cat([self.density_field, self.temperature_field], dim=1)
        try:
            out, k = F3.transport(fields, vel, self.mask, dt, D=g.diffusivity(self.density_diffusion), source=source)
        except ValueError as exc:
            raise self._diverged(self.frame + 1, str(exc)) from None
        self.density_field = out[:, 0:1].contiguous()
        self.temperature_field = (out[:, 1:2] * math.exp(-g.rate(self.cooling) * dt)).contiguous()
        self.injected += (source[:, 0:1] * dt).flatten(1).sum(1)
        return k

    def _check_resolved(self, u_new: torch.Tensor, dt: float) -> float:
        if not bool(torch.isfinite(u_new).all()):
            raise self._diverged(self.frame + 1, "the fluid solve produced non-finite values")
        cells = float(F3.curl(u_new[:, 0:3]).abs().max()) * dt
        if cells > max(self.shape):
            raise self._diverged(self.frame + 1, f"the flow reached {cells:.3g} cells per step, more than the whole "
                                                 f"{max(self.shape)}-cell domain in one step")
        return cells

    def _diverged(self, frame: int, what: str) -> SimulationDiverged:
        return SimulationDiverged(
            f"SmokeSim3D diverged at frame {frame}: {what}; the forces are too strong for the grid -- buoyancy="
            f"{self.buoyancy:g} (m/s^2 per unit density), heat_buoyancy={self.heat_buoyancy:g} with emitter_heat="
            f"{self.emitter_heat:g}, emitter_velocity={self.emitter_velocity} (m/s), wind={self.wind} (m/s^2) in a "
            f"{self.size_m:g} m domain at {self.fps:g} fps: smaller forces or a coarser grid keep the flow resolved")

    # --- results (SI, world axes) ---------------------------------------------------------------
    def _one(self, a: np.ndarray) -> np.ndarray:
        return a[0] if self.n == 1 else a

    @property
    def density(self) -> np.ndarray:
        """[D, H, W] (batch 1) or [N, D, H, W] density on the nodes (row 0 = top)."""
        return self._one(self.density_field[:, 0].cpu().numpy())

    field = density

    @property
    def temperature(self) -> np.ndarray:
        """[D, H, W] (or [N, ...]) temperature above the ambient air (0 without emitter_heat)."""
        return self._one(self.temperature_field[:, 0].cpu().numpy())

    @property
    def velocity(self) -> np.ndarray:
        """World velocity (vx, vy, vz) in m/s, z up, at the density's nodes: [D, H, W, 3] (or [N, ...])."""
        v = to_world(F3.node_velocity(self.fluid, self.u, which="new", mask=self.mask))
        return self._one((v * (self.units.cell_m / self.units.frame_s)).cpu().numpy())

    @property
    def pressure(self) -> np.ndarray:
        """Kinematic pressure (m^2/s^2) at the cell centres, up to a constant."""
        return self._one((self.u[:, 3] * (self.units.cell_m / self.units.frame_s) ** 2).cpu().numpy())

    @property
    def time_s(self) -> float:
        return self.frame / self.fps

    def total_density(self) -> torch.Tensor:
        return self.density_field.flatten(1).sum(1)

    def divergence(self) -> dict:
        """How divergence-free the last step's flow is, relative to its fastest velocity (worst sample):
        ``mac`` = the MAC velocity curl(a) on the faces (0 up to round-off by construction);
        ``transport`` = the face field the density moves with (node velocities averaged to the faces between
        nodes, closed at solids), at the ``interior`` nodes (all 6 neighbours fluid: 0 up to round-off) and
        at the ``wall`` nodes beside a solid, where the closed face cuts off the half-cell of flow between
        the node and the solid's no-slip faces (an O(cell) boundary effect of the 2-D scheme too; mass is
        still kept exactly and stays >= 0)."""
        v = F3.curl(self.u[:, 0:3])
        vmax = v.abs().flatten(1).max(1).values.clamp_min(1e-300)
        mac = F3.divergence(self.u).abs().flatten(1).max(1).values / vmax
        vel = F3.node_velocity(self.fluid, self.u, which="new", mask=self.mask)
        net = torch.zeros_like(self.density_field)   # net outflow of each node cell
        closed = torch.zeros_like(self.density_field)   # closed faces around each fluid node
        for ax, (u, open_) in enumerate(F3.face_velocities(vel, self.mask)):
            um, om = u.movedim(2 + ax, -1), (1 - open_).movedim(2 + ax, -1)
            pad = torch.nn.functional.pad
            net = net + (pad(um, (0, 1)) - pad(um, (1, 0))).movedim(-1, 2 + ax)
            closed = closed + (pad(om, (0, 1), value=1.0) + pad(om, (1, 0), value=1.0)).movedim(-1, 2 + ax)
        vnode = vel.abs().flatten(1).max(1).values.clamp_min(1e-300)
        fluid = 1 - self.mask
        interior = (net.abs() * fluid * (closed == 0)).flatten(1).max(1).values / vnode
        wall = (net.abs() * fluid * (closed > 0)).flatten(1).max(1).values / vnode
        return {"mac": float(mac.max()), "transport_interior": float(interior.max()),
                "transport_wall": float(wall.max())}

    # --- resumable state: SmokeState (smoke_common.py) -----------------------------------------

