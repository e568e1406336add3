"""Panels in Properties > Physics: metaphys Cloth, metaphys Collider, metaphys Smoke."""
from __future__ import annotations

import bpy

from . import operators, results
from .extract_cloth import collider_settings, colliders_in


class _PhysicsPanel:
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "physics"


def _bake_box(layout, obj, group, kind):
    job = operators.JOBS.get(obj.name)
    col = layout.column()
    if job is not None:
        col.label(text=job.progress_text(), icon="TIME")
        col.label(text="Press Esc in the 3D viewport to cancel", icon="CANCEL")
        return
    row = col.row(align=True)
    row.scale_y = 1.3
    row.operator(f"metaphys.bake_{kind}", icon="PHYSICS").object_name = obj.name
    sub = row.row(align=True)
    sub.enabled = bool(group.baked_dir)
    sub.operator(f"metaphys.free_{kind}", icon="TRASH").object_name = obj.name
    if group.baked_dir:
        col.label(text=f"Baked: {group.bake_info}", icon="CHECKMARK")
        col.label(text=group.baked_dir, icon="FILE_FOLDER")
        _stats_box(col, group)
        if kind == "cloth":
            col.operator("metaphys.export_alembic", icon="EXPORT").object_name = obj.name


def _stats_box(layout, group):
    """The last bake's per-frame residual (log scale) and strain as sparklines (from its manifest.json)."""
    if not group.bake_stats:
        return
    import json
    try:
        lines = results.stats_lines(json.loads(group.bake_stats))
    except ValueError:
        return
    if lines:
        box = layout.box()
        box.label(text="Last bake, per frame:", icon="GRAPH")
        for line in lines:
            box.label(text=line)


def _solver(layout, group):
    col = layout.column(align=True)
    col.prop(group, "solver_mode", expand=True)
    if group.solver_mode == "TOLERANCE":
        col.prop(group, "tolerance")
        col.prop(group, "max_iterations")
    else:
        col.prop(group, "iterations")


def _cloth_solver(layout, s):
    col = layout.column(align=True)
    col.prop(s, "solver")
    if s.solver == "METAMIZER":
        col.prop(s, "use_tolerance")
    if s.solver != "METAMIZER" or s.use_tolerance:
        col.prop(s, "tolerance")
    if s.solver != "NEWTON":
        col.prop(s, "iterations")
        if s.use_tolerance or s.solver == "AUTO":
            col.prop(s, "max_iterations")
    if s.solver != "METAMIZER":
        col.prop(s, "newton_max_iterations")
        col.prop(s, "use_frame_time_budget")
        if s.use_frame_time_budget:
            col.prop(s, "frame_time_budget")
    col = layout.column(align=True)
    col.prop(s, "self_collision")
    if s.self_collision:
        col.prop(s, "self_collision_distance")
    layout.prop(s, "strain_limit")


def _range(layout, group):
    col = layout.column(align=True)
    col.prop(group, "use_scene_range")
    if not group.use_scene_range:
        col.prop(group, "frame_start")
        col.prop(group, "frame_end")
    layout.prop(group, "cache_dir")


class METAPHYS_PT_cloth(_PhysicsPanel, bpy.types.Panel):
    bl_label = "metaphys Cloth"

    @classmethod
    def poll(cls, context):
        ob = context.object
        return ob is not None and ob.type == "MESH" and ob.metaphys_smoke.role == "NONE"

    def draw_header(self, context):
        self.layout.prop(context.object.metaphys_cloth, "enabled", text="")

    def draw(self, context):
        ob = context.object
        s = ob.metaphys_cloth
        layout = self.layout
        layout.use_property_split = True
        layout.active = s.enabled
        if not s.enabled:
            layout.label(text="Enable to simulate this grid mesh (Add > Mesh > Grid)", icon="INFO")
            return
        layout.prop_search(s, "pin_group", ob, "vertex_groups", text="Pin Group")
        col = layout.column(align=True)
        col.prop(s, "tension")
        col.prop(s, "shear")
        col.prop(s, "bending")
        col = layout.column(align=True)
        col.prop(s, "mass_per_area")
        col.prop(s, "air_damping")
        layout.prop(s, "wind")
        layout.prop(s, "substeps")
        _cloth_solver(layout, s)
        _range(layout, s)
        scene = context.scene
        g = scene.gravity if scene.use_gravity else (0.0, 0.0, 0.0)
        layout.label(text="Gravity (Scene): ({:.2f}, {:.2f}, {:.2f})".format(*g), icon="FORCE_FORCE")
        _collider_list(layout, context, ob)
        _bake_box(layout, ob, s, "cloth")


def _collider_list(layout, context, ob):
    """Which objects the cloth collides with, and how (shape, friction, thickness, where from)."""
    box = layout.box()
    colliders = colliders_in(context, exclude=ob)
    if not colliders:
        box.label(text="No colliders (metaphys Collider panel or a Collision modifier)", icon="INFO")
        return
    box.label(text=f"Colliders ({len(colliders)})", icon="MOD_PHYSICS")
    for c in colliders:
        cs = collider_settings(c)
        thick = "margin" if cs["thickness"] is None else f"{cs['thickness'] * 100:.1f} cm"
        box.label(text=f"{c.name}: {cs['shape'].lower()}, friction {cs['friction']:.2f}, thickness {thick}"
                       f"{' (Collision modifier)' if cs['source'] != 'metaphys' else ''}")


class METAPHYS_PT_collider(_PhysicsPanel, bpy.types.Panel):
    bl_label = "metaphys Collider"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context):
        ob = context.object
        return ob is not None and ob.type in {"MESH", "EMPTY", "CURVE", "SURFACE", "META", "FONT"} \
            and not ob.metaphys_cloth.enabled

    def draw_header(self, context):
        self.layout.prop(context.object.metaphys_collider, "enabled", text="")

    def draw(self, context):
        c = context.object.metaphys_collider
        layout = self.layout
        layout.use_property_split = True
        layout.active = c.enabled
        layout.prop(c, "shape")
        layout.prop(c, "friction")
        layout.label(text="Sphere/Box: the object's bounding box; Mesh: its evaluated surface", icon="INFO")
        if c.enabled and any(m.type == "COLLISION" for m in context.object.modifiers):
            layout.label(text="Thickness: the Collision modifier's Thickness Outer", icon="MOD_PHYSICS")


def _flipbook(layout, s):
    """The game flipbook's settings (sheets written beside the bake's cache)."""
    box = layout.box()
    box.prop(s, "flipbook")
    if not s.flipbook:
        return
    row = box.row(align=True)
    row.prop(s, "flipbook_rows")
    row.prop(s, "flipbook_cols")
    col = box.column(align=True)
    col.prop(s, "flipbook_cell")
    col.prop(s, "flipbook_step")
    col.prop(s, "flipbook_loop")
    box.prop(s, "flipbook_alpha")
    box.prop(s, "flipbook_engine")


class METAPHYS_PT_smoke(_PhysicsPanel, bpy.types.Panel):
    bl_label = "metaphys Smoke"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context):
        ob = context.object
        return ob is not None and ob.type in {"MESH", "CURVE", "SURFACE", "META", "FONT"} \
            and not ob.metaphys_cloth.enabled

    def draw(self, context):
        ob = context.object
        s = ob.metaphys_smoke
        layout = self.layout
        layout.use_property_split = True
        layout.prop(s, "role")
        if s.role == "DOMAIN":
            layout.prop(s, "dimensions")
            layout.prop(s, "resolution")
            col = layout.column(align=True)
            col.prop(s, "emitter_density")
            col.prop(s, "emitter_velocity")
            col = layout.column(align=True)
            col.prop(s, "buoyancy")
            col.prop(s, "viscosity")
            col.prop(s, "density_diffusion")
            col = layout.column(align=True)
            col.prop(s, "emitter_heat")
            col.prop(s, "heat_buoyancy")
            col.prop(s, "cooling")
            layout.prop(s, "wind")
            col = layout.column(align=True)
            col.prop(s, "substeps")
            col.prop(s, "cfl")
            _solver(layout, s)
            _range(layout, s)
            layout.prop(s, "density_scale")
            if s.dimensions == "2D":
                _flipbook(layout, s)
            _bake_box(layout, ob, s, "smoke")
        elif s.role == "EMITTER":
            layout.prop(s, "strength")
            layout.label(text="Emits where it crosses the domain (2D: its plane)", icon="INFO")
        elif s.role == "OBSTACLE":
            layout.label(text="Solid where it crosses the domain (2D: its plane)", icon="INFO")


classes = (METAPHYS_PT_cloth, METAPHYS_PT_collider, METAPHYS_PT_smoke)


def register():
    for c in classes:
        bpy.utils.register_class(c)


def unregister():
    for c in reversed(classes):
        bpy.utils.unregister_class(c)
