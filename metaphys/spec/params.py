"""A spec's validated parameters and the sim keyword arguments they become (one mapping, used by
``ClothSim.from_spec``/``SmokeSim.from_spec`` and by the bakes)."""
from __future__ import annotations

from metaphys.spec import schema

# Spec keys that are ClothSim / SmokeSim keyword arguments of the same name and meaning.
CLOTH_SIM_KEYS = ("size_m", "fps", "substeps", "gravity", "mass_per_area", "tension", "shear", "bending",
                  "air_damping", "wind", "pin_weights", "pin_targets", "colliders", "contact_margin", "solver",
                  "tol", "step_tol", "iterations_per_step", "max_iterations", "newton_max_iterations", "strain_limit", "guard",
                  "threads", "frame_time_budget", "self_collision", "self_collision_distance")
SMOKE_SIM_KEYS = ("size_m", "fps", "substeps", "cfl", "emitters", "obstacles", "obstacle_shapes", "emitter_density",
                  "emitter_velocity", "buoyancy", "viscosity", "density_diffusion", "wind", "emitter_heat",
                  "heat_buoyancy", "cooling", "max_iterations")
# SmokeSim3D's (a smoke spec whose resolution has 3 entries)
SMOKE3D_SIM_KEYS = ("size_m", "origin", "fps", "substeps", "cfl", "emitters", "obstacles", "emitter_density",
                    "emitter_velocity", "buoyancy", "viscosity", "density_diffusion", "wind", "emitter_heat",
                    "heat_buoyancy", "cooling", "max_iterations")


def default_colliders(size_m: float, height: float):
    """The default scene: a sphere under the cloth's free half, so the cloth swings onto it."""
    return [{"type": "sphere", "center": [0.0, 0.15 * size_m, height - 0.45 * size_m], "radius": 0.25 * size_m}]


def cloth_parameters(spec: dict, size: int = 32) -> dict:
    """Validated parameters with every default filled in (raises schema.SpecError, a ValueError)."""
    p = schema.validate("cloth", spec, size=size)
    if p["colliders"] is None and p["rest_positions"] is None:
        p["colliders"] = default_colliders(p["size_m"], p["height"])
    return p


def smoke_parameters(spec: dict, size: int = 128) -> dict:
    """Validated parameters with every default filled in (raises schema.SpecError, a ValueError); a spec
    whose ``resolution`` has 3 entries is a 3-D one (``schema.SMOKE3D_SCHEMA``)."""
    return schema.validate("smoke", spec, size=size)


def cloth_sim_kwargs(p: dict) -> dict:
    """ClothSim keyword arguments of validated cloth parameters (rest mesh and grid are the caller's:
    ``rest_positions`` may be None, meaning a flat cloth ``size_m`` wide at ``height``)."""
    return {k: p[k] for k in CLOTH_SIM_KEYS if k in p}


def smoke_sim_kwargs(p: dict) -> dict:
    """SmokeSim keyword arguments of validated smoke parameters (``resolution`` is the caller's):
    a tolerance replaces the fixed iteration count."""
    keys = SMOKE3D_SIM_KEYS if len(p["resolution"]) == 3 else SMOKE_SIM_KEYS
    kwargs = {k: p[k] for k in keys if p.get(k) is not None}
    if p.get("tol") is not None:
        kwargs.update(tol=p["tol"], iterations_per_step=None)
    else:
        kwargs["iterations_per_step"] = int(p["iterations_per_step"])
    return kwargs
