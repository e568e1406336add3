"""What the 2-D and 3-D smoke sims share: the SI -> grid unit mapping (``GridUnits``, the one place it
lives), the frame record, the emitters' push and the arguments of earlier versions they refuse."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metaphys.optim.step_solvers import load_solver_state
from metaphys.sims.base import check_state_dict, optimizer_state, restore_optimizer_state, with_solver_state
from metaphys.sims.common import StepRecord, torch_threads
from metaphys.spec.schema import MAX_SUBSTEPS, SMOKE_REMOVED

# Arguments of earlier (grid-unit) versions: refused with what replaced them, never silently ignored
REMOVED_ARGUMENTS = {
    **SMOKE_REMOVED,
    "dt": "this argument was removed: time steps follow fps, substeps and cfl (physical units)",
    "fluid_density": "this argument was removed: forces are accelerations (m/s^2), so the fluid's density "
                     "does not enter",
    "density_solver": "this argument was removed: the density transport is explicit and monotone (no linear solve)",
    "density_max_iterations": "this argument was removed: the density transport is explicit and monotone (no "
                              "linear solve)",
    "emitter_smoothing": "this argument was removed: the transport is monotone, so hard-edged emitters need no blur",
}


@dataclass(frozen=True)
class GridUnits:
    """SI -> the solver's units: lengths in cells of ``cell_m`` metres, time in frames of ``frame_s`` s."""

    cell_m: float
    frame_s: float

    def speed(self, metres_per_second):
        return metres_per_second * self.frame_s / self.cell_m

    def acceleration(self, metres_per_second2):
        return metres_per_second2 * self.frame_s ** 2 / self.cell_m

    def diffusivity(self, square_metres_per_second):
        return square_metres_per_second * self.frame_s / self.cell_m ** 2

    def rate(self, per_second):
        return per_second * self.frame_s


@dataclass
class SmokeStepRecord(StepRecord):
    """A frame's StepRecord (fluid iterations summed over its steps, the worst step's residual) with
    what the smoke adds: fluid steps taken, the largest distance a step carried the flow (cells), the
    density transport's sub-steps, the density's minimum (>= 0: the transport is monotone) and the
    time at the frame's end."""

    substeps: int = 1
    courant: float = 0.0
    transport_substeps: int = 0
    min_density: float = 0.0
    time_s: float = 0.0


def _push(v: torch.Tensor, target: float) -> torch.Tensor:
    """How much faster ``v`` must go to reach ``target`` along its sign (0 where it already does, or
    where target is 0): the emitters speed the flow up to their velocity and never hold it back."""
    if target == 0:
        return torch.zeros_like(v)
    s = math.copysign(1.0, target)
    return s * torch.relu(s * (target - v))


class SmokeState:
    """What the 2-D and 3-D smoke sims share (mixed into SmokeSim and SmokeSim3D, which hold the
    attributes): the frame's step on the sim's threads, the number of fluid steps a frame needs, and
    the resumable state used by bakes -- the fluid problem's fields, the unknown, the optimizer's
    carried state, density, temperature, the injected mass, the frame and its records, plus what the
    step solver keeps; tensors and plain values only (no pickle), restoring continues bit for bit."""

    def step(self) -> SmokeStepRecord:
        """Advance one frame with ``threads`` torch threads; returns the frame's record."""
        with torch_threads(self.threads):
            return self._step()

    def _fluid_steps(self, speed: float) -> int:
        """Fluid steps for a frame whose flow may reach ``speed`` cells per frame: at most ``cfl`` cells
        per step, at least ``substeps``; a frame that would need more than MAX_SUBSTEPS fails fast
        (it would take hours and show a flow no grid resolves)."""
        need = math.ceil(speed / self.cfl) if math.isfinite(speed) else math.inf
        if need > MAX_SUBSTEPS:
            raise self._diverged(self.frame + 1, f"the flow would need {need:.3g} fluid steps in this frame (more "
                                                 f"than {MAX_SUBSTEPS}) to move at most cfl={self.cfl:g} cells per step")
        return int(max(self.substeps, need))

    def state_dict(self) -> dict:
        sd = {"fields": {k: v.clone() for k, v in self.fluid.fields.items()}, "u": self.u.clone(),
              "fluid_state": optimizer_state(self.optimizer, self.fluid_state),
              "density_field": self.density_field.clone(), "temperature_field": self.temperature_field.clone(),
              "injected": self.injected.clone(), "frame": self.frame,
              "records": [r.as_dict() for r in self.records]}
        return with_solver_state(sd, self.step_solver)

    def load_state_dict(self, sd: dict) -> None:
        check_state_dict(self, sd, ("fields", "u", "fluid_state", "density_field", "temperature_field", "injected",
                                    "frame", "records"),
                         shapes={"u": self.u.shape, "density_field": self.density_field.shape,
                                 "temperature_field": self.density_field.shape})
        self.fluid.fields = {k: v.to(self.device) for k, v in sd["fields"].items()}
        self.u = sd["u"].to(self.device)
        self.fluid_state = (None if self.optimizer is None else
                            restore_optimizer_state(self.optimizer, sd["fluid_state"], self.u.shape, self.device))
        load_solver_state(self.step_solver, self.fluid, sd)
        self.density_field = sd["density_field"].to(self.device)
        self.temperature_field = sd["temperature_field"].to(self.device)
        self.injected = sd["injected"].to(self.device)
        self.frame = int(sd["frame"])
        self.records = [SmokeStepRecord(**r) for r in sd["records"]]

    def finite(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in (self.u, self.density_field, self.temperature_field))
