"""Per-object settings: ``Object.metaphys_cloth``, ``Object.metaphys_collider``, ``Object.metaphys_smoke``.

Defaults and ranges follow docs/bake-spec.md (stiffness in the units of the trained model).
"""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, FloatVectorProperty, IntProperty,
                       PointerProperty, StringProperty)

_SOLVER_MODES = [
    ("ITERATIONS", "Iterations", "A fixed number of optimizer iterations per time step (predictable time)"),
    ("TOLERANCE", "Tolerance", "Iterate until the residual is below a tolerance (predictable accuracy)"),
]


class MetaphysClothSettings(bpy.types.PropertyGroup):
    enabled: BoolProperty(name="metaphys Cloth", description="Simulate this grid mesh as metaphys cloth",
                          default=False)
    pin_group: StringProperty(name="Pin Group",
                              description="Vertex group of pinned vertices (weight 1 = hard pin, between 0 and 1 "
                                          "= soft). Pinned vertices follow the mesh's animation")
    stretch: FloatProperty(name="Stretch", description="Stretch stiffness (100 - 1000)", default=1000.0,
                           min=100.0, max=1000.0)
    shear: FloatProperty(name="Shear", description="Shear stiffness (1 - 1000)", default=10.0, min=1.0, max=1000.0)
    bend: FloatProperty(name="Bend", description="Bending stiffness (0.01 - 1000)", default=0.1, min=0.01,
                        max=1000.0, precision=3)
    mass_per_area: FloatProperty(name="Mass", description="Mass per area (kg/m²)", default=0.2, min=0.001,
                                 soft_max=10.0, precision=3)
    damping: FloatProperty(name="Damping", description="Velocity damping per second", default=0.1, min=0.0,
                           max=10.0)
    wind: FloatVectorProperty(name="Wind", description="Uniform wind acceleration (m/s²), world space",
                              size=3, default=(0.0, 0.0, 0.0), subtype="ACCELERATION", unit="ACCELERATION")
    substeps: IntProperty(name="Substeps", description="Solver time steps per frame", default=1, min=1, max=64)
    solver_mode: EnumProperty(name="Solver", items=_SOLVER_MODES, default="ITERATIONS")
    iterations: IntProperty(name="Iterations", description="Optimizer iterations per time step", default=30,
                            min=1, max=10000)
    tolerance: FloatProperty(name="Tolerance", description="Residual tolerance", default=1e-6, min=1e-12, max=1.0,
                             precision=8)
    max_iterations: IntProperty(name="Max Iterations", default=200, min=1, max=100000)
    use_scene_range: BoolProperty(name="Scene Frame Range", default=True,
                                  description="Bake the scene's frame range")
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=48)
    cache_dir: StringProperty(name="Cache Folder", subtype="DIR_PATH",
                              description="Where this object's bake goes (empty: the add-on preference, "
                                          "//metaphys_cache/<object name>/ by default)")
    # state (written by the bake)
    baked_dir: StringProperty(name="Baked Cache", options={"HIDDEN"})
    bake_info: StringProperty(name="Bake Info", options={"HIDDEN"})


class MetaphysColliderSettings(bpy.types.PropertyGroup):
    enabled: BoolProperty(name="metaphys Collider", description="Cloth collides with this object", default=False)
    shape: EnumProperty(name="Shape", default="AUTO", items=[
        ("AUTO", "Auto", "Sphere for a sphere-like mesh, else box"),
        ("SPHERE", "Sphere", "Sphere: centre of the bounding box, radius half the largest dimension"),
        ("BOX", "Box", "Axis-aligned box: the world-space bounding box"),
    ])


class MetaphysSmokeSettings(bpy.types.PropertyGroup):
    role: EnumProperty(name="Role", default="NONE", items=[
        ("NONE", "None", "Not part of a metaphys smoke simulation"),
        ("DOMAIN", "Domain", "A plane: its local XY rectangle is the 2D smoke domain"),
        ("EMITTER", "Emitter", "Smoke is injected where this object crosses the domain plane"),
        ("OBSTACLE", "Obstacle", "Solid where this object crosses the domain plane"),
    ])
    # domain
    resolution: IntProperty(name="Resolution", description="Cells along the longer side of the domain",
                            default=64, min=16, max=1024)
    emitter_density: FloatProperty(name="Emission", description="Density added per second inside emitters",
                                   default=1.0, min=0.0, soft_max=100.0)
    emitter_velocity: FloatVectorProperty(name="Emitter Velocity",
                                          description="Velocity imposed inside emitters (cells/s, +y up)", size=2,
                                          default=(0.0, 0.0))
    buoyancy: FloatProperty(name="Buoyancy", description="Upward acceleration per unit density", default=1.0,
                            soft_min=-10.0, soft_max=10.0)
    viscosity: FloatProperty(name="Viscosity", default=0.01, min=0.0, soft_max=1.0, precision=4)
    density_diffusion: FloatProperty(name="Density Diffusion", default=0.0, min=0.0, soft_max=1.0, precision=4)
    wind: FloatVectorProperty(name="Wind", description="Uniform acceleration in the domain plane (x, y up)",
                              size=2, default=(0.0, 0.0))
    solver_mode: EnumProperty(name="Solver", items=_SOLVER_MODES, default="ITERATIONS")
    iterations: IntProperty(name="Iterations", default=20, min=1, max=10000)
    tolerance: FloatProperty(name="Tolerance", default=1e-6, min=1e-12, max=1.0, precision=8)
    max_iterations: IntProperty(name="Max Iterations", default=200, min=1, max=100000)
    use_scene_range: BoolProperty(name="Scene Frame Range", default=True)
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=48)
    cache_dir: StringProperty(name="Cache Folder", subtype="DIR_PATH",
                              description="Where this domain's bake goes (empty: the add-on preference)")
    density_scale: FloatProperty(name="Render Density", description="Density multiplier of the volume material",
                                 default=10.0, min=0.0, soft_max=200.0)
    # emitter
    strength: FloatProperty(name="Strength", description="Emitter mask value (0 - 1)", default=1.0, min=0.0,
                            max=1.0)
    # state
    baked_dir: StringProperty(name="Baked Cache", options={"HIDDEN"})
    bake_info: StringProperty(name="Bake Info", options={"HIDDEN"})


classes = (MetaphysClothSettings, MetaphysColliderSettings, MetaphysSmokeSettings)


def register():
    for c in classes:
        bpy.utils.register_class(c)
    bpy.types.Object.metaphys_cloth = PointerProperty(type=MetaphysClothSettings)
    bpy.types.Object.metaphys_collider = PointerProperty(type=MetaphysColliderSettings)
    bpy.types.Object.metaphys_smoke = PointerProperty(type=MetaphysSmokeSettings)


def unregister():
    for attr in ("metaphys_smoke", "metaphys_collider", "metaphys_cloth"):
        if hasattr(bpy.types.Object, attr):
            delattr(bpy.types.Object, attr)
    for c in reversed(classes):
        bpy.utils.unregister_class(c)
