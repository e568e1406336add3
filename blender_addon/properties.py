"""Per-object settings: ``Object.metaphys_cloth``, ``Object.metaphys_collider``, ``Object.metaphys_smoke``.

Defaults and ranges follow the bake spec schema (``metaphys bake --limits``, docs/bake-spec.md): cloth
materials in physical units (N/m, N*m, kg/m², 1/s); tests/blender checks the defaults against it.
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
    tension: FloatProperty(name="Tension", description="Membrane stretch stiffness (N/m); cotton about 100 - 1000",
                           default=250.0, min=1e-6, soft_min=1.0, soft_max=5000.0, precision=1)
    shear: FloatProperty(name="Shear", description="In-plane shear stiffness (N/m)", default=10.0, min=0.0,
                         soft_max=1000.0, precision=2)
    bending: FloatProperty(name="Bending", description="Bending stiffness (N*m); silk about 1e-6, denim about 1e-4",
                           default=2.5e-5, min=0.0, soft_max=1e-2, precision=7, step=0.001)
    mass_per_area: FloatProperty(name="Mass", description="Areal density of the cloth (kg/m²)", default=0.2,
                                 min=1e-6, soft_min=0.01, soft_max=2.0, precision=3)
    air_damping: FloatProperty(name="Air Damping", description="Velocity damping (1/s)", default=0.1, min=0.0,
                               soft_max=10.0, precision=3)
    wind: FloatVectorProperty(name="Wind", description="Uniform wind acceleration (m/s²), world space",
                              size=3, default=(0.0, 0.0, 0.0), subtype="ACCELERATION", unit="ACCELERATION")
    substeps: IntProperty(name="Substeps", description="Solver time steps per frame", default=1, min=1, max=64)
    solver: EnumProperty(name="Solver", default="NEWTON", items=[
        ("AUTO", "Auto", "Metamizer iterations, then a Newton finishing stage when the frame is above the tolerance"),
        ("METAMIZER", "Metamizer", "The learned optimizer alone (accuracy not guaranteed)"),
        ("NEWTON", "Newton", "Newton-Krylov to the tolerance: the fastest converged solver (default)"),
    ])
    use_tolerance: BoolProperty(name="Use Tolerance", default=True,
                                description="Iterate each step to the tolerance (off, Metamizer only: a fixed "
                                            "number of iterations per step)")
    tolerance: FloatProperty(name="Tolerance", description="Relative residual per step: |grad| / max(|grad at "
                                                           "frame start|, |gravity force|)",
                             default=1e-5, min=1e-14, max=1.0, precision=8)
    iterations: IntProperty(name="Iterations", description="Metamizer iterations per time step (before the Newton "
                                                           "stage with Auto)", default=30, min=1, max=10000)
    max_iterations: IntProperty(name="Max Iterations", description="Metamizer iteration cap per step", default=200,
                                min=1, max=100000)
    newton_max_iterations: IntProperty(name="Newton Max Iterations", description="Newton iteration cap per step",
                                       default=100, min=1, max=10000)
    use_frame_time_budget: BoolProperty(name="Frame Time Budget", default=True,
                                        description="Bound Newton's time per frame (a frame at its budget keeps "
                                                    "its best iterate and is reported)")
    frame_time_budget: FloatProperty(name="Seconds per Frame", description="Newton's time budget per frame",
                                     default=30.0, min=0.01, soft_max=600.0, unit="TIME_ABSOLUTE")
    self_collision: BoolProperty(name="Self Collision", default=False,
                                 description="Keep the cloth's layers from passing through each other (Newton solver)")
    self_collision_distance: FloatProperty(name="Distance", default=1.0, min=0.75, max=3.0,
                                           description="Distance the layers keep apart, in rest edge lengths")
    strain_limit: FloatProperty(name="Strain Limit", description="Largest edge strain before a frame is flagged "
                                                                 "(0.5 = 50%)", default=0.5, min=1e-6, soft_max=2.0,
                                subtype="FACTOR")
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
    bake_stats: StringProperty(name="Bake Stats", options={"HIDDEN"},
                               description="Per-frame residual and strain of the last bake (JSON, from manifest.json)")


class MetaphysColliderSettings(bpy.types.PropertyGroup):
    enabled: BoolProperty(name="metaphys Collider", description="Cloth collides with this object", default=False)
    shape: EnumProperty(name="Shape", default="AUTO", items=[
        ("AUTO", "Auto", "Sphere for a sphere-like mesh, else box"),
        ("SPHERE", "Sphere", "Sphere: centre of the bounding box, radius half the largest dimension"),
        ("BOX", "Box", "Box: the object's bounding box, rotated with the object"),
        ("MESH", "Mesh", "The mesh's surface (modifiers and deformation included, every frame); open "
                         "meshes are one-sided: their normals point outside"),
    ])
    friction: FloatProperty(name="Friction", description="Coulomb friction coefficient between the cloth and "
                                                         "this object (0 = frictionless; the cloth holds on a "
                                                         "slope steeper than atan(friction) only if it is larger)",
                            default=0.0, min=0.0, soft_max=2.0)


class MetaphysSmokeSettings(bpy.types.PropertyGroup):
    role: EnumProperty(name="Role", default="NONE", items=[
        ("NONE", "None", "Not part of a metaphys smoke simulation"),
        ("DOMAIN", "Domain", "A plane: its local XY rectangle is the 2D smoke domain"),
        ("EMITTER", "Emitter", "Smoke is injected where this object crosses the domain plane"),
        ("OBSTACLE", "Obstacle", "Solid where this object crosses the domain plane"),
    ])
    # domain (physical units; defaults and ranges follow the engine's smoke schema, checked by tests/blender)
    dimensions: EnumProperty(name="Dimensions", default="2D", items=[
        ("2D", "2D", "The domain is a plane: its local XY rectangle"),
        ("3D", "3D", "The domain is a box: its world-space bounding box (cubic cells; emitters and obstacles "
                     "are their meshes, voxelized; velocities and wind act along world X and Z)"),
    ])
    resolution: IntProperty(name="Resolution", description="Cells along the longer side of the domain",
                            default=64, min=16, max=1024)
    emitter_density: FloatProperty(name="Emission", description="Density injected per second inside emitters",
                                   default=1.0, min=0.0, soft_max=100.0)
    emitter_velocity: FloatVectorProperty(name="Emitter Velocity",
                                          description="Emitters speed the flow inside them up to this velocity "
                                                      "(m/s, per axis, +y up; 0 = no push)", size=2,
                                          default=(0.0, 0.0), unit="VELOCITY")
    buoyancy: FloatProperty(name="Buoyancy", description="Upward acceleration of smoke of density 1 (m/s²)",
                            default=4.0, soft_min=-20.0, soft_max=20.0, unit="ACCELERATION")
    viscosity: FloatProperty(name="Viscosity", description="Kinematic viscosity (m²/s; air 1.5e-5, but the grid "
                                                           "resolves a plume's shape from about 1e-3)",
                             default=1e-3, min=0.0, soft_max=0.1, precision=5, step=0.01)
    density_diffusion: FloatProperty(name="Density Diffusion", description="Diffusion of the density (m²/s)",
                                     default=0.0, min=0.0, soft_max=0.1, precision=5, step=0.01)
    wind: FloatVectorProperty(name="Wind", description="Uniform acceleration in the domain plane (m/s², x, y up)",
                              size=2, default=(0.0, 0.0), unit="ACCELERATION")
    emitter_heat: FloatProperty(name="Heat", description="Temperature injected per second inside emitters (above "
                                                         "the ambient air; 0 = no heat). Exported as the "
                                                         "'temperature' field", default=0.0, min=0.0,
                                soft_max=10.0)
    heat_buoyancy: FloatProperty(name="Heat Buoyancy", description="Upward acceleration of hot air per unit "
                                                                   "temperature (m/s²)", default=4.0,
                                 soft_min=-20.0, soft_max=20.0, unit="ACCELERATION")
    cooling: FloatProperty(name="Cooling", description="Temperature decay rate (1/s): it falls as exp(-cooling * t)",
                           default=1.0, min=0.0, soft_max=10.0)
    substeps: IntProperty(name="Substeps", description="Fewest fluid steps per frame (a fast flow takes more: CFL)",
                          default=1, min=1, max=1000)
    cfl: FloatProperty(name="CFL", description="Farthest the flow may move in one fluid step (cells); each frame "
                                               "takes the steps its fastest flow needs", default=4.0, min=0.01,
                       soft_min=0.5, soft_max=16.0)
    solver_mode: EnumProperty(name="Solver", items=_SOLVER_MODES, default="ITERATIONS")
    iterations: IntProperty(name="Iterations", description="Optimizer iterations per fluid step", default=20, min=1,
                            max=10000)
    tolerance: FloatProperty(name="Tolerance", default=1e-6, min=1e-12, max=1.0, precision=8)
    max_iterations: IntProperty(name="Max Iterations", default=200, min=1, max=100000)
    use_scene_range: BoolProperty(name="Scene Frame Range", default=True)
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=48)
    cache_dir: StringProperty(name="Cache Folder", subtype="DIR_PATH",
                              description="Where this domain's bake goes (empty: the add-on preference)")
    density_scale: FloatProperty(name="Render Density", description="Density multiplier of the volume material",
                                 default=10.0, min=0.0, soft_max=200.0)
    # game flipbook (the engine's flipbook_* spec keys; docs/flipbooks.md)
    flipbook: BoolProperty(name="Game Flipbook", default=True,
                           description="Write flipbook sheets for game engines (color, emissive, motion vectors, "
                                       "normals, a JSON sidecar and a motion-blended preview) into the cache folder")
    flipbook_rows: IntProperty(name="Rows", description="Cells per column of the sheet", default=8, min=1, max=64)
    flipbook_cols: IntProperty(name="Columns", description="Cells per row of the sheet", default=8, min=1, max=64)
    flipbook_cell: IntProperty(name="Cell Size", description="Pixels of a cell along the domain's longer side "
                                                             "(0 = the simulation's resolution)",
                               default=0, min=0, max=4096)
    flipbook_step: IntProperty(name="Frame Step", description="Take every n-th frame (0 = the smallest step that "
                                                              "fits the frame range into the sheet)",
                               default=0, min=0)
    flipbook_loop: IntProperty(name="Loop Blend", description="Seamless loop: crossfade the last n frames into the "
                                                              "first (0 = no loop)", default=0, min=0, max=4096)
    flipbook_alpha: EnumProperty(name="Alpha", default="STRAIGHT", items=[
        ("STRAIGHT", "Straight", "Color = smoke colour, alpha = density"),
        ("PREMULTIPLIED", "Premultiplied", "Color multiplied by alpha (One, OneMinusSrcAlpha blending)"),
    ])
    flipbook_engine: EnumProperty(name="Engine", default="UNITY", items=[
        ("UNITY", "Unity", "Motion vectors and normals with +V up (Unity UVs, OpenGL normals)"),
        ("UNREAL", "Unreal", "Motion vectors and normals with +V down (Unreal UVs, DirectX normals)"),
    ])
    # emitter
    strength: FloatProperty(name="Strength", description="Emitter mask value (0 - 1)", default=1.0, min=0.0,
                            max=1.0)
    # state
    baked_dir: StringProperty(name="Baked Cache", options={"HIDDEN"})
    bake_info: StringProperty(name="Bake Info", options={"HIDDEN"})
    bake_stats: StringProperty(name="Bake Stats", options={"HIDDEN"},
                               description="Per-frame residual and strain of the last bake (JSON, from manifest.json)")


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
