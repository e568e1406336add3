"""Cloth for animation: a regular rows x cols vertex grid in physical units (metres, seconds, kg).

Materials are physical and resolution-free (names follow Blender's cloth panel where they map):
``tension`` and ``shear`` are membrane stiffnesses in N/m (force per unit width per unit strain /
shear angle), ``bending`` is a bending stiffness in N*m, ``mass_per_area`` is in kg/m^2 and
``air_damping`` in 1/s. One material therefore behaves the same at 16^2 ... 128^2 and at any
fps / substeps. Internally the cloth is solved in the units the Metamizer was trained in
(length = the mean rest edge length L0, time = one solver step dt, mass = the mass of an interior
vertex rho*L0^2); the mapping (``physics.cloth.model_material``) is applied only here:

    k_stretch = Y dt^2 / (2 rho L0^2) * (edges per direction) / (H W)
    k_shear   = G dt^2 / (8 rho L0^2)        k_bend = B dt^2 / (2 rho L0^4)
    gravity, wind (m/s^2) -> * dt^2 / L0       air_damping (1/s) -> * dt

Solvers per step (``solver``): "newton" (default): Newton-Krylov to ``tol`` (``metaphys.optim.newton``,
``newton_linear="pcg"``: CG on the analytic sparse Hessian (``ClothProblem.hessian_matrix``, the
compiled ``cloth_hessian`` op), preconditioned by a factorization of an earlier Hessian that frames reuse; ``"direct"`` factors every iteration, the
converged reference of the benchmarks); "auto": the Metamizer runs its ``iterations_per_step`` and
stops early at ``tol``, and Newton finishes the step when it has not; "metamizer": the network's
iterations only. On the CPU the Metamizer's 30 iterations cost more than a whole Newton-Krylov frame
at 32^2-64^2 and Newton does not start from its answer, so the default is "newton" (issue #24).
``tol`` is the scale-free gauge every frame records: the gradient RMS relative to the larger of the
step's starting gradient and the external (gravity + wind) forces; the default 1e-5 keeps each step
within 1.5e-5 edge lengths of a 1e-10 solve on the benchmark scenes without contact (1e-4: 7e-4 at
32², 5.6e-3 on the 64² stiff bend; benchmarks/results/cloth_tolerance.md, cloth_accuracy.md). Newton
also stops earlier where its estimate of the distance left to the step's answer is below ``step_tol``
(rest edge lengths, default ``STEP_TOL`` = 3e-4: each step within 1e-3 edge lengths of a 1e-10 solve,
in fewer iterations; ``step_tol=None``: the residual alone, as the benchmarks' references). ``frame_time_budget`` (seconds, default 30) bounds Newton's
time per frame: a frame at its budget keeps its best iterate and its record says so (``budget_hit``).
Every ``StepRecord`` carries the relative residual, the max edge strain, and which solver finished.
The solver settings build the sim's step solver (``metaphys.optim.step_solvers``: "newton" ->
``NewtonStep``, "metamizer" -> ``MetamizerStep``, "auto" -> ``MetamizerThenNewton``); a built one
may be given instead (``step_solver=``, the solver settings then left at their defaults). Each
substep's solve goes through ``step_solver.solve(problem, start, state, scale=, warm_start=,
progress=)``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
import torch

from metaphys import colliders as collider_kinds
from metaphys.optim.accelerate import DEFAULT_MEMORY
from metaphys.optim.step_solvers import (MetamizerStep, MetamizerThenNewton, NewtonStep, StepResult, initial_state,
                                         load_solver_state)
from metaphys.physics.cloth import ClothProblem, model_material, swept_pairs
from metaphys.sims.mesh_collider import MeshCollider, contact_planes, euler_xyz_degrees, interp_track
from metaphys.sims.base import Sim, check_state_dict, optimizer_state, restore_optimizer_state, with_solver_state
from metaphys.sims.common import (COMMON_ARGUMENTS, SimulationDiverged, StepRecord, check_positive, check_threads,
                                  check_vector, optimizer_for, prepare_thread_control, refuse_solver_settings,
                                  torch_threads)
from metaphys.spec.params import CLOTH_SIM_KEYS, cloth_parameters, cloth_sim_kwargs
from metaphys.spec.schema import CLOTH_SCHEMA
from metaphys.spec.types import Bool, Choice
from metaphys.spec.validate import argument_error, check_arguments, schema_types

F64 = torch.float64
SOLVERS = ("auto", "metamizer", "newton")
# ClothSim's keyword arguments, checked with the bake spec's own types (spec/validate.py): those a
# spec has are the schema's entries, so the API and a spec refuse the same values in the same words
ARGUMENTS = {**COMMON_ARGUMENTS, "line_search": Bool(), "newton_linear": Choice("pcg", "direct"),
             **schema_types(CLOTH_SCHEMA, ("rows", "cols", "rest_positions") + CLOTH_SIM_KEYS,
                            nullable=("iterations_per_step", "colliders"))}
# Newton stops where its estimate of the distance left to the step's answer (from the contraction of its
# last two steps, ``NewtonSolver.step_tol``) is below this many rest edge lengths, or at ``tol``, whichever
# comes first. Measured at 32^2 against a 1e-10 solve, per-step error max (Newton it/frame): curtain
# 1.1e-6 (4.4) at tol 1e-5 alone, 6.1e-4 (3.2) with 3e-4, 9.5e-4 (2.7) with 1e-3; stiff bend 1.8e-4 (5.1),
# 1.8e-4 (4.8), 1.7e-3 (4.4): 3e-4 keeps every step within the 1e-3 edge lengths the eye needs
STEP_TOL = 3e-4
# a frame whose edges reach 11x their rest length is no cloth: refused, never returned as a result
TORN_STRAIN = 10.0


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


class ClothSim(Sim):
    step_unit = "frames"

    def __init__(self, rows: int = 32, cols: int = 32, *, rest_positions=None, size_m: float = 1.0,
                 fps: float = 24.0, substeps: int = 1, gravity: Sequence[float] = (0.0, 0.0, -9.81),
                 mass_per_area: float = 0.2, tension: float = 250.0, shear: float = 10.0, bending: float = 2.5e-5,
                 air_damping: float = 0.1, wind: Sequence[float] = (0.0, 0.0, 0.0), pin_weights=None,
                 pin_targets=None, colliders: Optional[List[dict]] = None, contact_margin: float = 0.25,
                 solver: str = "newton", tol: Optional[float] = 1e-5, step_tol: Optional[float] = STEP_TOL,
                 iterations_per_step: Optional[int] = 30,
                 max_iterations: int = 200, newton_max_iterations: int = 100, strain_limit: float = 0.5,
                 guard: bool = True, device="cpu", optimizer=None, threads: Optional[int] = None,
                 line_search: bool = False, accelerate: int = DEFAULT_MEMORY, weights=None,
                 frame_time_budget: Optional[float] = 30.0, newton_linear: str = "pcg",
                 self_collision: bool = False, self_collision_distance: float = 1.0, step_solver=None):
        check_arguments("ClothSim", ARGUMENTS, locals())  # the arguments as passed: no coercion
        refuse_solver_settings("ClothSim", ClothSim.__init__, locals())
        rows, cols = int(rows), int(cols)
        self.rows, self.cols = rows, cols
        nv = rows * cols
        self.device = torch.device(device)
        if step_solver is None:
            if solver not in SOLVERS:
                raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
            if tol is None and solver != "metamizer":
                raise ValueError(f"solver {solver!r} needs a tolerance tol > 0 (tol=None only with solver='metamizer')")
            if tol is None and iterations_per_step is None:
                raise argument_error("ClothSim", "iterations_per_step", "expected an integer >= 1 with tol=None (the "
                                                                        "Metamizer needs a count or a tolerance), got None")
        self.solver = solver if step_solver is None else getattr(step_solver, "name", type(step_solver).__name__)
        # the gauge's tolerance: the settings' or the built solver's (None: it has none)
        self.tol = (None if tol is None else check_positive("tol", tol)) if step_solver is None else \
            getattr(step_solver, "tol", None)
        self.newton_max_iterations = int(newton_max_iterations)
        # Newton's second stop: its estimate of the distance left to the step's answer, in rest edge lengths
        self.step_tol = None if step_tol is None else check_positive("step_tol", step_tol)
        # along the Metamizer's steps (issue #13); the subspace acceleration (accelerate=m, default
        # on) replaces it: at 32^2, 100 it/frame, relative residual 3e-2 -> 1e-5 (curtain scene)
        self.line_search = bool(line_search)
        self.strain_limit = check_positive("strain_limit", strain_limit)
        self.threads = check_threads(threads, rows, cols, cloth=True)
        self.fps = check_positive("fps", fps)
        self.substeps = int(substeps)
        self.dt = 1.0 / (self.fps * self.substeps)
        rest = flat_cloth(rows, cols, size_m) if rest_positions is None else np.asarray(rest_positions, np.float64)
        if rest.shape != (nv, 3):
            raise argument_error("ClothSim", "rest_positions", f"expected shape [{nv}, 3] (rows*cols = {rows}*{cols}, "
                                                               f"xyz), got shape {list(rest.shape)}")
        grid = rest.reshape(rows, cols, 3)
        edges = np.concatenate([np.linalg.norm(np.diff(grid, axis=0), axis=-1).ravel(),
                                np.linalg.norm(np.diff(grid, axis=1), axis=-1).ravel()])
        if edges.min() <= 0:
            raise argument_error("ClothSim", "rest_positions", "expected distinct neighbouring vertices, got "
                                                               "zero-length edges (coincident neighbours)")
        self.length_unit = float(edges.mean())
        self.rest_positions = rest
        self.gravity = check_vector("gravity", gravity, 3)
        self.wind = check_vector("wind", wind, 3)
        self.material = {"tension": check_positive("tension", tension),
                         "shear": check_positive("shear", shear, allow_zero=True),
                         "bending": check_positive("bending", bending, allow_zero=True),
                         "mass_per_area": check_positive("mass_per_area", mass_per_area),
                         "air_damping": check_positive("air_damping", air_damping, allow_zero=True)}
        self.pin_w = self._pin_weights(pin_weights)
        self.pin_targets = self._pin_targets(pin_targets)
        self.colliders = self._colliders(colliders or [], float(contact_margin) * self.length_unit)
        self.frame_time_budget = frame_time_budget
        if step_solver is None:
            # Newton alone needs no optimizer: none is loaded unless one is given (then checked, unused)
            needs_optimizer = solver != "newton" or optimizer is not None or weights is not None
            opt = optimizer_for(optimizer, weights, self.device) if needs_optimizer else None
            step_solver = self._build_step_solver(opt, iterations_per_step, max_iterations, guard, accelerate,
                                                  newton_linear)
        self.step_solver = step_solver
        self.newton = getattr(step_solver, "newton_solver", None)   # the NewtonSolver inside, if any
        self.on_progress = None   # callable(dict) told of each Newton iteration (bakes: progress inside a frame)
        self.self_collision = bool(self_collision)
        self.self_collision_distance = float(self_collision_distance)   # in rest edge lengths
        if self.self_collision and self.solver != "newton":
            raise ValueError("ClothSim(self_collision=True) needs solver='newton': only its line search keeps "
                             "layers from passing through each other")
        k = model_material(self.material, rows, cols, self.length_unit, self.dt)
        scale = self.dt ** 2 / self.length_unit
        self.problem = ClothProblem(
            self._to_model(rest), pin_w=self._grid1(self.pin_w),
            pin_x=self._to_model(self._targets_at(0.0)),
            gravity=(self.gravity * scale).tolist(), wind=(self.wind * scale).tolist(),
            k_stretch=k["k_stretch"], k_shear=k["k_shear"], k_bend=k["k_bend"], mass=1.0,
            damping=self.material["air_damping"] * self.dt, margin=float(contact_margin),
            k_contact=max(1000.0, k["k_stretch"]), k_pin=max(1000.0, k["k_stretch"]), dt=1.0)
        self._set_colliders(0.0)
        self.u = self.problem.initial_guess()
        self.state = initial_state(self.step_solver, self.u)   # the step solver's carried state (Metamizer's)
        self.a_prev = self.u.clone()   # the last step's acceleration: Newton's warm start
        self.frame = 0
        if self.newton is not None:   # one-time loading here, not in the first frame
            self.newton.prepare(self.problem)
        prepare_thread_control(refresh=self.newton is not None)   # after MKL loaded: its BLAS held too
        self.records: List[StepRecord] = []

    # --- construction helpers ---------------------------------------------------------------
    def _build_step_solver(self, optimizer, iterations_per_step, max_iterations, guard, accelerate, newton_linear):
        """The step solver of the settings: "newton" -> NewtonStep, "metamizer" -> MetamizerStep, "auto" ->
        MetamizerThenNewton. Newton-Krylov by default (issue #24: 2-4x faster frames than a factorization
        per iteration); the frame budget is shared by the substeps and bounds every frame. The
        Metamizer stops early at the gauge's tolerance (relative: ``solve`` gets the step's scale)."""
        budget = None if self.frame_time_budget is None else self.frame_time_budget / self.substeps
        newton = NewtonStep(tol=self.tol or 1e-10, max_iterations=self.newton_max_iterations, linear=newton_linear,
                            time_budget=budget, step_tol=self.step_tol)
        if self.solver == "newton":
            return newton
        metamizer = MetamizerStep(optimizer, iterations=iterations_per_step, tol=self.tol,
                                  max_iterations=max_iterations, guard=guard, guard_growth=0.0,
                                  line_search=self.line_search, accelerate=accelerate)
        return metamizer if self.solver == "metamizer" else MetamizerThenNewton(metamizer, newton)

    @classmethod
    def from_spec(cls, spec: dict, *, optimizer=None, device="cpu", size: int = 32) -> "ClothSim":
        """Build from a bake spec (docs/bake-spec.md)."""
        return cls.from_params(cloth_parameters(spec, size=size), optimizer=optimizer, device=device)

    @classmethod
    def from_params(cls, p: dict, *, optimizer=None, device="cpu", threads: Optional[int] = None) -> "ClothSim":
        """Build from validated spec parameters (metaphys.spec.params.cloth_parameters)."""
        rest = p.get("rest_positions")
        if rest is None:
            rest = flat_cloth(p["rows"], p["cols"], p["size_m"], p["height"])
        kwargs = cloth_sim_kwargs(p)
        if threads is not None:
            kwargs["threads"] = threads
        return cls(p["rows"], p["cols"], rest_positions=rest, device=device, optimizer=optimizer, **kwargs)

    def _pin_weights(self, w):
        """Per-vertex pin weights (values checked by the schema's type; the count against the grid here)."""
        nv = self.rows * self.cols
        if w is None:
            w = np.zeros(nv)
            w[0] = w[self.cols - 1] = 1.0  # the two corners of the first row
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if w.shape != (nv,):
            raise argument_error("ClothSim", "pin_weights", f"expected {nv} numbers (rows*cols = {self.rows}*"
                                                            f"{self.cols}), got {w.shape[0]}")
        return w

    def _pin_targets(self, t):
        """[frames >= 1, rows*cols, 3] pin targets (a static [rows*cols, 3] is one frame)."""
        nv = self.rows * self.cols
        if t is None:
            return self.rest_positions[None]
        t = np.asarray(t, dtype=np.float64)
        if t.shape == (nv, 3):
            t = t[None]
        if t.ndim != 3 or t.shape[1:] != (nv, 3) or len(t) == 0:
            raise argument_error("ClothSim", "pin_targets", f"expected shape [{nv}, 3] or [frames >= 1, {nv}, 3] "
                                                            f"(rows*cols = {self.rows}*{self.cols}, xyz), got shape "
                                                            f"{list(t.shape)}")
        return t

    def _colliders(self, colliders, margin_m: float):
        """Colliders as arrays (their keys and values checked by the schema's collider type). A
        collider's ``thickness`` (metres; the distance the cloth keeps from it) differs from the cloth's
        contact margin ``margin_m`` by ``grow``: the collider is inflated by it (sphere radius, box half
        extents -- edges and corners stay sharp --: every parameter of a table kind; mesh surface along
        its normal), since the contact terms keep one margin for all colliders."""
        out = []
        for k, c in enumerate(colliders):
            center = np.atleast_2d(np.asarray(c["center"], dtype=np.float64))
            friction = float(c.get("friction", 0.0))
            thickness = c.get("thickness")
            grow = 0.0 if thickness is None else float(thickness) - margin_m
            if c["type"] == "mesh":
                load = lambda v: np.load(v, allow_pickle=False) if isinstance(v, str) else v   # .npy paths
                out.append({"type": "mesh", "friction": friction,
                            "mesh": MeshCollider(load(c["vertices"]), load(c["faces"]), center, c.get("rotation"),
                                                 friction, offset=grow)})
                continue
            kind = collider_kinds.BY_NAME[c["type"]]
            given = np.concatenate([np.asarray(c[p.name], dtype=np.float64).reshape(-1) for p in kind.params])
            params = given + grow   # every parameter of a table kind is a length the thickness inflates
            if params.min() <= 0:
                names = " + ".join(p.name for p in kind.params)
                raise argument_error("ClothSim", f"colliders[{k}].thickness",
                                     f"expected a thickness that leaves the {kind.name} positive parameters ({names} "
                                     f"{given.tolist()} m + thickness {thickness:g} m - contact margin {margin_m:g} m "
                                     f"= {params.tolist()} m)")
            rotation = c.get("rotation") if kind.rotation else None
            out.append({"type": kind.name, "center": center, "friction": friction, "params": params,
                        "rotation": None if rotation is None else np.atleast_2d(np.asarray(rotation, np.float64))})
        return out

    # --- unit conversions ---------------------------------------------------------------------
    def _grid1(self, w):
        return torch.as_tensor(w, dtype=F64, device=self.device).view(1, 1, self.rows, self.cols)

    def _to_model(self, pos: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(pos / self.length_unit, dtype=F64, device=self.device)
        return t.view(self.rows, self.cols, 3).permute(2, 0, 1).unsqueeze(0).contiguous()

    def _to_world(self, x: torch.Tensor) -> np.ndarray:
        return (x[0].permute(1, 2, 0).reshape(-1, 3).cpu().numpy() * self.length_unit)

    _interp = staticmethod(interp_track)

    def _targets_at(self, t: float) -> np.ndarray:
        return self._interp(self.pin_targets, t)

    def _collider_table(self, t: float) -> np.ndarray:
        """The colliders at time t (frames) as the problem's collider table [K, 18] (model units), a
        row per collider in the given order (``metaphys.colliders``): spheres and boxes (rotated or
        not) with their parameters; meshes with their code and friction (their distance is the
        per-vertex contact plane, ``_set_contact_planes``)."""
        L = self.length_unit
        rows = []
        for c in self.colliders:
            if c["type"] == "mesh":
                rows.append(collider_kinds.row("mesh", np.zeros(3), friction=c["friction"]))
                continue
            rot = c.get("rotation")
            rows.append(collider_kinds.row(c["type"], self._interp(c["center"], t) / L, np.asarray(c["params"]) / L,
                                           None if rot is None else euler_xyz_degrees(self._interp(rot, t)),
                                           c["friction"]))
        return np.array(rows).reshape(-1, collider_kinds.WIDTH)

    def _set_colliders(self, t: float):
        self.problem.set_colliders(torch.tensor(self._collider_table(t)[None], dtype=F64, device=self.device))
        self._set_contact_planes(t)
        if self.self_collision:
            self._set_self_pairs()
        self.problem.set_friction()   # lagged: the contacts at the start of this step

    def _set_self_pairs(self) -> None:
        """Self-collision candidates for this step: the vertex pairs whose predicted paths (x to
        x + dt v) come within 1.5 collision distances (``physics.cloth.swept_pairs``, the broad phase
        the line search's collision check also runs), grid neighbours excepted."""
        fl = self.problem.fields
        x, v = fl["x_old"][0], fl["v_old"][0]
        x0 = x.reshape(3, -1).T.cpu().numpy()
        x1 = (x + fl["dt"][0] * v).reshape(3, -1).T.cpu().numpy()
        reach = 1.5 * self.self_collision_distance               # model units: edge lengths
        pairs = swept_pairs(x0, x1, reach, self.cols)
        if pairs is None:   # a predicted motion too large for the broad phase: the start alone
            pairs = swept_pairs(x0, x0, reach, self.cols)
        self.problem.set_self_pairs(pairs, self.self_collision_distance)

    def _set_contact_planes(self, t: float) -> None:
        """Mesh colliders: each cloth vertex near a mesh gets its contact plane for this step, found
        at the vertex's predicted position (x + dt v) within a band of the margin plus twice this
        step's predicted travel plus one edge."""
        meshes = [c["mesh"] for c in self.colliders if c["type"] == "mesh"]
        if not meshes:
            return
        fl, L = self.problem.fields, self.length_unit
        x, v = fl["x_old"][0], fl["v_old"][0]                       # model units, [3, H, W]
        pred = (x + fl["dt"][0] * v).reshape(3, -1).T.cpu().numpy() * L
        travel = (fl["dt"][0] * v).norm(dim=0).reshape(-1).cpu().numpy() * L
        band = (float(fl["margin"][0]) + 1.0) * L + 2.0 * travel
        planes = contact_planes(meshes, t, pred, band, L)
        h, w = self.rows, self.cols
        planes = np.zeros((8, h * w)) if planes is None else planes
        self.problem.set_contact_planes(torch.as_tensor(planes, dtype=F64, device=self.device).view(1, 8, h, w))

    # --- stepping -----------------------------------------------------------------------------
    def step(self) -> StepRecord:
        """Advance one frame (``substeps`` solver steps); returns the frame's record."""
        with torch_threads(self.threads):
            return self._step()

    def _solve_substep(self):
        """One backward-Euler step through the step solver. Returns (a, the StepResult, gradient RMS at
        the start, relative residual at the end)."""
        p = self.problem
        _, grad0 = p.loss_and_grad(self.u)
        scale = p.residual_scale(grad0)
        res: StepResult = self.step_solver.solve(p, self.u, self.state, scale=scale, warm_start=self._warm_start,
                                                 progress=self._newton_progress)
        self.state = res.state
        rel = res.relative_end
        if rel is None:   # a solver of the caller's that does not measure the gauge
            rel = self._rms(p.loss_and_grad(res.u)[1]) / scale
        return res.u, res, self._rms(grad0), rel

    @staticmethod
    def _rms(g) -> float:
        return float(g[0].norm()) / math.sqrt(g[0].numel())

    def _warm_start(self):
        """Where Newton starts: the lower-energy of the last step's acceleration and that acceleration
        projected out of the colliders -- the same start whether the Metamizer ran first or not, so
        "auto" lands on the reference's minimum. (Starting from the Metamizer's unconverged answer
        was measured to land in another local minimum of the step's energy with contact: 1.6 edge
        lengths from the reference's step.)"""
        p = self.problem
        prev = p.impose(self.a_prev)
        guesses = [prev, p.project_out_of_colliders(prev)]
        if self.self_collision:
            # with self-collision Newton must start where no layer has passed through another: a
            # guess is kept only if the straight path from "no motion" to it keeps every pair apart
            still = p.impose(-p.fields["v_old"] / p.fields["dt"].view(-1, 1, 1, 1))
            guesses = [g for g in guesses if p.max_step(still, g - still) >= 0.9] or [still]
        energies = [float(p.loss_and_grad(c)[0][0]) for c in guesses]
        return guesses[int(np.argmin(energies))]

    def _newton_progress(self, iteration: int, u, rel: float) -> None:
        if self.on_progress is not None:
            self.on_progress({"frame": self.frame + 1, "newton_iteration": iteration, "relative_residual": rel})

    def _step(self) -> StepRecord:
        iters = rej = newton_iters = 0
        cap = False
        start = rel_worst = 0.0
        finished_by = "metamizer"
        strain = -1.0
        budget_hit = ""
        converged = []
        for s in range(self.substeps):
            t = self.frame + (s + 1) / self.substeps  # targets/colliders at the END of the substep
            self.problem.set_pins(pin_x=self._to_model(self._targets_at(t)))
            self._set_colliders(t)
            a, res, g0, rel = self._solve_substep()
            start = g0 if s == 0 else start
            rel_worst = max(rel_worst, rel)
            iters, rej = iters + res.iterations, rej + res.guard_rejections
            newton_iters, cap = newton_iters + res.newton_iterations, cap or res.hit_cap
            budget_hit = budget_hit or res.budget_hit
            converged.append(res.converged)
            # the frame's finisher: Newton where it finished any substep, else another solver that did
            # ("" -- the start already within tolerance -- leaves the record's "metamizer")
            fin = res.finished_by
            finished_by = fin if fin == "newton" or (fin and finished_by == "metamizer") else finished_by
            self.a_prev = a.detach().clone()
            self.u = self.problem.advance(a)
            strain = max(strain, float(self.problem.max_stretch().max()))
        self.frame += 1
        rec = StepRecord(self.frame, iters, rel_worst, start, rej, cap, relative_residual=rel_worst, max_strain=strain,
                         finished_by=finished_by, newton_iterations=newton_iters,
                         converged=None if None in converged else all(converged), budget_hit=budget_hit)
        self._refuse_torn(rec)
        self.records.append(rec)
        return rec

    def _refuse_torn(self, rec: StepRecord) -> None:
        """A frame stretched past ``TORN_STRAIN`` (or ``strain_limit`` where larger) is garbage, not a
        result: raise SimulationDiverged naming the cause -- forces far beyond what the material holds,
        or else the solver."""
        if rec.max_strain <= max(TORN_STRAIN, self.strain_limit):  # NaN fails this too
            return
        m = self.material
        size = self.length_unit * (max(self.rows, self.cols) - 1)
        accel = float((self.gravity + self.wind).norm())
        load = m["mass_per_area"] * accel * size / m["tension"]  # ~ the static strain the forces cause
        head = (f"ClothSim diverged at frame {rec.frame}: max edge strain {rec.max_strain:.3g} (edges "
                f"{1 + rec.max_strain:.3g}x their rest length; strain_limit {self.strain_limit:g})")
        if load > 1:
            cause = (f"gravity {self.gravity.tolist()} plus wind {self.wind.tolist()} m/s^2 on mass_per_area "
                     f"{m['mass_per_area']:g} kg/m^2 pull {load:.3g}x harder than tension {m['tension']:g} N/m holds "
                     f"across the {size:.3g} m cloth (mass_per_area * |gravity + wind| * size / tension; 0.008 with "
                     "the defaults): use accelerations of at most a few tens of m/s^2, or a larger tension")
        else:
            cause = (f"the forces do not explain it (mass_per_area * |gravity + wind| * size / tension = {load:.2g}): "
                     f"the solver left the frame at relative residual {rec.relative_residual:.2g} (solver "
                     f"{self.solver!r}, finished by {rec.finished_by}); use solver='auto' with a tolerance, or pin "
                     "targets and colliders that move less per frame")
        raise SimulationDiverged(f"{head}: {cause}")

    # --- results ------------------------------------------------------------------------------
    @property
    def positions(self) -> np.ndarray:
        """Current world positions [rows, cols, 3] in metres: the grid view. ``field`` is the same as
        [rows*cols, 3], the shape exporters take (``run(n)`` stacks it: [n, rows*cols, 3] for
        ``metaphys.io.write_pc2``, which also takes a stack of ``positions``, [n, rows, cols, 3])."""
        return self._to_world(self.problem.fields["x_old"]).reshape(self.rows, self.cols, 3)

    @property
    def field(self) -> np.ndarray:
        """The protocol's result (sims/base.py): world positions [rows*cols, 3], grid order."""
        return self.positions.reshape(-1, 3)

    def max_stretch(self) -> float:
        return float(self.problem.max_stretch().max()) * 1.0

    def finite(self) -> bool:
        return bool(torch.isfinite(self.problem.fields["x_old"]).all())

    def state_dict(self) -> dict:
        sd = {"fields": {k: v.clone() for k, v in self.problem.fields.items()}, "u": self.u.clone(),
                "state": optimizer_state(self.optimizer, self.state), "frame": self.frame,
                "a_prev": self.a_prev.clone(), "records": [r.as_dict() for r in self.records]}
        # what the step solver keeps across steps (Newton's lagged factor: "newton"; "auto"'s skip
        # counters: "metamizer_misses", "substep_count"), beside the sim's own keys
        return with_solver_state(sd, self.step_solver)

    def load_state_dict(self, sd: dict) -> None:
        check_state_dict(self, sd, ("fields", "u", "state", "frame", "records"), shapes={"u": self.u.shape})
        self.problem.fields = {k: v.to(self.device) for k, v in sd["fields"].items()}
        self.u = sd["u"].to(self.device)
        self.state = (None if self.optimizer is None else
                      restore_optimizer_state(self.optimizer, sd["state"], self.u.shape, self.device))
        self.a_prev = sd.get("a_prev", torch.zeros_like(self.u)).to(self.device)
        load_solver_state(self.step_solver, self.problem, sd)
        self.frame = int(sd["frame"])
        self.records = [StepRecord(**r) for r in sd["records"]]
