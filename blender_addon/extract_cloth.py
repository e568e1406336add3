"""Scene -> cloth spec (docs/bake-spec.md, "Cloth spec"). No physics here.

``detect_grid`` is pure numpy: it finds the rows x cols structure of a quad-grid mesh from its
topology alone (vertex positions are never looked at), so any grid works: Add > Mesh > Grid, a
subdivided plane, a grid bent into a tube shape, with any vertex order.

``cloth_spec(context, obj)`` evaluates the scene frame by frame (object transform and the
modifiers *before* the metaphys Mesh Cache modifier) for the rest shape, the animated pin
targets and the colliders, and returns ``(spec, info)``; it raises ``ExtractError`` with a
message meant for the user.
"""
from __future__ import annotations

import os

import numpy as np

from .common import CACHE_MODIFIER, ExtractError, cache_modifier_index, frame_range, np_matrix, scene_fps

__all__ = ["ExtractError", "detect_grid", "mesh_topology", "cloth_spec", "collider_shape", "CACHE_MODIFIER",
           "cache_modifier_index"]

FLAT_HALF = 0.005  # m: half thickness given to flat box colliders (the engine needs positive extents)


# -- grid detection (pure) ---------------------------------------------------------------------
def detect_grid(num_verts: int, edges, face_sizes, face_verts, name: str = "mesh"):
    """Find the regular grid of a quad mesh.

    ``edges`` [E, 2], ``face_sizes`` [F], ``face_verts`` (concatenated face vertex indices).
    Returns ``(rows, cols, vertex_index)`` where ``vertex_index[i*cols + j]`` is the mesh vertex at
    grid row i, column j (row-major). Raises ExtractError saying why the mesh is not a grid.
    """
    hint = " Use a regular grid (Add > Mesh > Grid, or a subdivided plane) for metaphys cloth."
    pre = f"Mesh '{name}' is not a regular grid:"
    V = int(num_verts)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    face_sizes = np.asarray(face_sizes, dtype=np.int64).reshape(-1)
    face_verts = np.asarray(face_verts, dtype=np.int64).reshape(-1)
    if V < 4 or face_sizes.size == 0:
        raise ExtractError(f"{pre} it has {V} vertices and {face_sizes.size} faces.{hint}")
    bad = int((face_sizes != 4).sum())
    if bad:
        tri = int((face_sizes == 3).sum())
        raise ExtractError(f"{pre} {bad} of its {face_sizes.size} faces are not quads "
                           f"({tri} triangles, {bad - tri} n-gons).{hint}")
    quads = face_verts.reshape(-1, 4)
    # neighbours from edges
    nbrs = [[] for _ in range(V)]
    for a, b in edges.tolist():
        if a == b:
            raise ExtractError(f"{pre} edge ({a}, {b}) is degenerate.{hint}")
        nbrs[a].append(b)
        nbrs[b].append(a)
    deg = np.array([len(n) for n in nbrs])
    if (deg == 0).any():
        raise ExtractError(f"{pre} {int((deg == 0).sum())} loose vertices (vertex {int(np.argmax(deg == 0))}).{hint}")
    if (deg > 4).any():
        v = int(np.argmax(deg > 4))
        raise ExtractError(f"{pre} vertex {v} has {int(deg[v])} edges; every grid vertex has 2 (corner), "
                           f"3 (border) or 4 (inside).{hint}")
    corners = np.flatnonzero(deg == 2)
    if corners.size != 4:
        raise ExtractError(f"{pre} a grid has exactly 4 corner vertices (2 edges each), this mesh has "
                           f"{corners.size}.{hint}")
    if (deg == 1).any():
        raise ExtractError(f"{pre} it has dangling edges (vertex {int(np.argmax(deg == 1))}).{hint}")

    # boundary edges belong to exactly one face; the border walk follows them
    fe = np.sort(np.stack([quads, np.roll(quads, -1, axis=1)], axis=-1).reshape(-1, 2), axis=1)
    keys, counts = np.unique(fe[:, 0] * V + fe[:, 1], return_counts=True)
    if (counts > 2).any():
        raise ExtractError(f"{pre} some edges are shared by more than two faces.{hint}")
    boundary = set(keys[counts == 1].tolist())

    def on_border(u, w):
        return (min(u, w) * V + max(u, w)) in boundary

    c0 = int(corners.min())
    start = sorted(n for n in nbrs[c0] if on_border(c0, n))
    if len(start) != 2:
        raise ExtractError(f"{pre} corner vertex {c0} is not on the border.{hint}")
    # first row: walk from c0 along the border to the next corner
    row = [c0, start[0]]
    prev, cur = c0, start[0]
    while deg[cur] != 2:
        nxt = [n for n in nbrs[cur] if n != prev and on_border(cur, n)]
        if len(nxt) != 1:
            raise ExtractError(f"{pre} its border is not a simple loop of 4 sides (at vertex {cur}).{hint}")
        prev, cur = cur, nxt[0]
        row.append(cur)
        if len(row) > V:
            raise ExtractError(f"{pre} its border does not close.{hint}")
    cols = len(row)
    if V % cols:
        raise ExtractError(f"{pre} {V} vertices is not a multiple of the border length {cols}.{hint}")
    rows = V // cols
    grid = np.full((rows, cols), -1, dtype=np.int64)
    grid[0] = row
    used = np.zeros(V, dtype=bool)
    used[row] = True
    for i in range(1, rows):
        for j in range(cols):
            v = int(grid[i - 1, j])
            excl = {int(grid[i - 1, jj]) for jj in (j - 1, j + 1) if 0 <= jj < cols}
            if i >= 2:
                excl.add(int(grid[i - 2, j]))
            cand = [n for n in nbrs[v] if n not in excl]
            if len(cand) != 1 or used[cand[0]]:
                raise ExtractError(f"{pre} the vertex below grid position ({i - 1}, {j}) (vertex {v}) is "
                                   f"ambiguous.{hint}")
            grid[i, j] = cand[0]
            used[cand[0]] = True
    if not used.all():
        raise ExtractError(f"{pre} {int((~used).sum())} vertices are not part of the grid "
                           f"(several pieces?).{hint}")
    # verify: every edge joins grid neighbours and every face is a grid cell
    pos = np.empty((V, 2), dtype=np.int64)
    pos[grid.reshape(-1), 0] = np.repeat(np.arange(rows), cols)
    pos[grid.reshape(-1), 1] = np.tile(np.arange(cols), rows)
    n_edges = rows * (cols - 1) + cols * (rows - 1)
    d = np.abs(pos[edges[:, 0]] - pos[edges[:, 1]]).sum(axis=1)
    if edges.shape[0] != n_edges or (d != 1).any():
        raise ExtractError(f"{pre} its edges do not form a {rows} x {cols} grid.{hint}")
    if quads.shape[0] != (rows - 1) * (cols - 1):
        raise ExtractError(f"{pre} a {rows} x {cols} grid has {(rows - 1) * (cols - 1)} faces, this mesh has "
                           f"{quads.shape[0]}.{hint}")
    qp = pos[quads]  # [F, 4, 2]
    span = qp.max(axis=1) - qp.min(axis=1)
    if (span != 1).any():
        raise ExtractError(f"{pre} some faces are not grid cells.{hint}")
    cell = qp.min(axis=1)
    key = cell[:, 0] * cols + cell[:, 1]
    if np.unique(key).size != key.size:
        raise ExtractError(f"{pre} it has overlapping faces.{hint}")
    return rows, cols, grid.reshape(-1)


def mesh_topology(mesh):
    """(num_verts, edges [E,2], face_sizes [F], face_verts) of a bpy Mesh."""
    V = len(mesh.vertices)
    E = len(mesh.edges)
    F = len(mesh.polygons)
    edges = np.empty(E * 2, dtype=np.int32)
    mesh.edges.foreach_get("vertices", edges)
    sizes = np.empty(F, dtype=np.int32)
    mesh.polygons.foreach_get("loop_total", sizes)
    lv = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", lv)
    starts = np.empty(F, dtype=np.int32)
    mesh.polygons.foreach_get("loop_start", starts)
    if F and not (np.diff(starts) == sizes[:-1]).all():  # loops are contiguous per polygon in practice
        order = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, sizes)])
        lv = lv[order]
    return V, edges.reshape(-1, 2), sizes, lv


# -- bpy side ----------------------------------------------------------------------------------
class _PreCacheEval:
    """Context manager: hide the cache modifier and everything after it in the viewport."""

    def __init__(self, obj):
        self.obj = obj
        self.saved = []

    def __enter__(self):
        k = cache_modifier_index(self.obj)
        for md in list(self.obj.modifiers)[k:]:
            self.saved.append((md, md.show_viewport))
            md.show_viewport = False
        return self

    def __exit__(self, *exc):
        for md, flag in self.saved:
            md.show_viewport = flag


def _world_positions(obj_eval, V: int, name: str, frame: int) -> np.ndarray:
    me = obj_eval.data
    if len(me.vertices) != V:
        raise ExtractError(f"'{name}': the modifiers before the metaphys cache change the vertex count at frame "
                           f"{frame} ({V} -> {len(me.vertices)}); only deforming modifiers may come before it")
    co = np.empty(V * 3, dtype=np.float32)
    me.vertices.foreach_get("co", co)
    co = co.reshape(V, 3).astype(np.float64)
    m = np_matrix(obj_eval.matrix_world)
    return co @ m[:3, :3].T + m[:3, 3]


def collider_shape(obj) -> str:
    """'SPHERE', 'BOX' or 'MESH' for a metaphys collider object (AUTO: a mesh whose vertices are
    equidistant is a sphere, anything else its bounding box)."""
    shape = obj.metaphys_collider.shape
    if shape != "AUTO":
        return shape
    return "SPHERE" if _sphere_like(obj) else "BOX"


def _sphere_like(obj) -> bool:
    """A mesh whose vertices lie on a sphere (a UV or ico sphere, scaled uniformly)."""
    if obj.type == "MESH" and len(obj.data.vertices) >= 8:
        co = np.empty(len(obj.data.vertices) * 3, dtype=np.float32)
        obj.data.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)
        c = 0.5 * (co.min(axis=0) + co.max(axis=0))
        dims = co.max(axis=0) - co.min(axis=0)
        r = np.linalg.norm(co - c, axis=1)
        if dims.min() > 0 and dims.max() / dims.min() < 1.02 and r.std() < 0.02 * r.mean():
            return True
    return False


def _collider_state(obj_eval) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The evaluated object's bounding box as an oriented box: world centre, half extents along the
    object's own axes (scale applied) and the rotation as XYZ Euler degrees (Blender's convention)."""
    m = np_matrix(obj_eval.matrix_world)
    bb = np.array([list(c) for c in obj_eval.bound_box], dtype=np.float64)
    lo, hi = bb.min(axis=0), bb.max(axis=0)
    scale = np.linalg.norm(m[:3, :3], axis=0)
    R = m[:3, :3] / np.where(scale > 0, scale, 1.0)
    center = m[:3, :3] @ (0.5 * (lo + hi)) + m[:3, 3]
    return center, 0.5 * (hi - lo) * scale, _euler_xyz_degrees(R)


def _euler_xyz_degrees(R: np.ndarray) -> np.ndarray:
    """XYZ Euler angles (degrees) of a rotation matrix, R = Rz Ry Rx (Blender's order)."""
    sy = -R[2, 0]
    ry = np.arcsin(np.clip(sy, -1.0, 1.0))
    if abs(sy) < 1 - 1e-9:
        rx, rz = np.arctan2(R[2, 1], R[2, 2]), np.arctan2(R[1, 0], R[0, 0])
    else:  # gimbal lock: rx and rz turn about the same axis; put it all in rz
        rx, rz = 0.0, np.arctan2(-R[0, 1], R[1, 1])
    return np.degrees([rx, ry, rz])


def _euler_matrix(deg) -> np.ndarray:
    rx, ry, rz = np.radians(deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


def _world_triangles(obj_eval, with_faces: bool):
    """(world vertices [V,3], triangles [T,3] or None) of an evaluated mesh object (modifiers applied)."""
    mesh = obj_eval.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", co)
        m = np_matrix(obj_eval.matrix_world)
        V = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
        F = None
        if with_faces:
            mesh.calc_loop_triangles()
            tri = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
            mesh.loop_triangles.foreach_get("vertices", tri)
            F = tri.reshape(-1, 3)
    finally:
        obj_eval.to_mesh_clear()
    return V, F


def _mesh_collider(obj, samples, friction: float, input_dir, info) -> dict:
    """The spec entry of a MESH collider: its world vertices per frame (one frame when they do not
    move) and triangles; large arrays go to .npy files in ``input_dir``."""
    faces = samples[0][1]
    if faces is None or len(faces) == 0:
        raise ExtractError(f"collider '{obj.name}' has no faces: a mesh collider needs triangles")
    verts = np.stack([v for v, _ in samples])
    if any(v.shape != verts[0].shape for v, _ in samples):
        raise ExtractError(f"collider '{obj.name}' changes its vertex count over the frames")
    if float(np.abs(verts - verts[0]).max()) <= 1e-7:
        verts = verts[:1]
    entry = {"type": "mesh", "center": [0.0, 0.0, 0.0], "friction": friction}
    vertices = verts[0] if len(verts) == 1 else verts
    if input_dir is not None:
        base = os.path.join(input_dir, "collider_" + "".join(ch if ch.isalnum() else "_" for ch in obj.name))
        np.save(base + "_vertices.npy", vertices)
        np.save(base + "_faces.npy", faces)
        entry.update(vertices=base + "_vertices.npy", faces=base + "_faces.npy")
    else:
        entry.update(vertices=vertices.tolist(), faces=faces.tolist())
    info["warnings"].append(f"collider '{obj.name}': its surface ({len(faces)} triangles"
                            f"{', deforming' if len(verts) > 1 else ''}) is the collider")
    return entry


def solver_keys(s) -> dict:
    """The solver part of the cloth spec (docs/bake-spec.md): solver, tol (null = a fixed Metamizer budget,
    allowed with the Metamizer alone), iteration budgets and the strain limit."""
    solver = s.solver.lower()
    fixed = solver == "metamizer" and not s.use_tolerance
    return {"solver": solver, "tol": None if fixed else float(s.tolerance),
            "iterations_per_step": int(s.iterations), "max_iterations": int(s.max_iterations),
            "newton_max_iterations": int(s.newton_max_iterations), "strain_limit": float(s.strain_limit),
            "frame_time_budget": float(s.frame_time_budget) if s.use_frame_time_budget else None,
            "self_collision": bool(s.self_collision), "self_collision_distance": float(s.self_collision_distance)}


# Blender's cloth collision scales a Collision modifier's Friction (0..80) by 0.01 into the Coulomb
# ratio of tangential to normal impulse (collision.cc: pdef_cfrict * 0.01)
BLENDER_FRICTION_SCALE = 0.01


def blender_collision(ob):
    """The object's own Blender Collision settings when it has an enabled Collision modifier, else None."""
    if not any(m.type == "COLLISION" and m.show_viewport for m in getattr(ob, "modifiers", ())):
        return None
    settings = getattr(ob, "collision", None)
    return settings if settings is not None and settings.use else None


def collider_settings(ob) -> dict:
    """How ``ob`` collides with metaphys cloth: {"shape", "friction", "thickness" (metres or None),
    "source"}. The metaphys Collider panel decides shape and friction where it is enabled; an object
    with Blender's own Collision modifier collides as well, with the modifier's Friction (scaled as
    Blender's cloth does) and Thickness Outer, as its mesh surface (a sphere-like mesh: a sphere). The
    modifier's thickness applies in both cases."""
    col = blender_collision(ob)
    thickness = float(col.thickness_outer) if col is not None else None
    if ob.metaphys_collider.enabled:
        return {"shape": collider_shape(ob), "friction": float(ob.metaphys_collider.friction),
                "thickness": thickness, "source": "metaphys"}
    shape = "SPHERE" if _sphere_like(ob) else ("MESH" if ob.type == "MESH" else "BOX")
    return {"shape": shape, "friction": BLENDER_FRICTION_SCALE * float(col.cloth_friction),
            "thickness": thickness, "source": "Collision modifier"}


def colliders_in(context, exclude=None) -> list:
    """The objects metaphys cloth collides with: metaphys Collider enabled, or Blender's Collision
    modifier on (sorted by name)."""
    out = []
    for ob in context.view_layer.objects:
        if ob is exclude or not getattr(ob, "metaphys_collider", None):
            continue
        if not ob.metaphys_collider.enabled and blender_collision(ob) is None:
            continue
        if not ob.visible_get(view_layer=context.view_layer) and ob.hide_viewport:
            continue
        out.append(ob)
    return sorted(out, key=lambda o: o.name)


def cloth_spec(context, obj, frames_override: int | None = None, input_dir: str | None = None):
    """Build the cloth spec for ``obj``. Returns (spec dict, info dict). Raises ExtractError.
    ``input_dir``: where large arrays (mesh colliders' vertices) are written as .npy files; without
    it they are inlined in the spec."""
    if obj is None or obj.type != "MESH":
        raise ExtractError("metaphys cloth needs a mesh object (Add > Mesh > Grid)")
    s = obj.metaphys_cloth
    scene = context.scene
    name = obj.name
    mesh = obj.data
    V, edges, sizes, fverts = mesh_topology(mesh)
    rows, cols, vidx = detect_grid(V, edges, sizes, fverts, name)

    f0, f1 = frame_range(scene, s)
    frames = f1 - f0 + 1 if frames_override is None else int(frames_override)
    if frames < 1:
        raise ExtractError(f"'{name}': the frame range {f0}-{f1} is empty")

    weights = np.zeros(V, dtype=np.float64)
    if s.pin_group:
        vg = obj.vertex_groups.get(s.pin_group)
        if vg is None:
            raise ExtractError(f"'{name}': the pin vertex group '{s.pin_group}' does not exist")
        gi = vg.index
        for v in mesh.vertices:
            for g in v.groups:
                if g.group == gi:
                    weights[v.index] = min(max(g.weight, 0.0), 1.0)
                    break
    pinned = weights > 0

    colliders = colliders_in(context, exclude=obj)
    settings = [collider_settings(c) for c in colliders]
    shapes = [cs["shape"] for cs in settings]

    frame_cur, subframe_cur = scene.frame_current, scene.frame_subframe
    positions, matrices = [], []
    col_c = [[] for _ in colliders]
    col_h = [[] for _ in colliders]
    col_r = [[] for _ in colliders]
    col_m = [[] for _ in colliders]   # MESH colliders: (world vertices, triangles of frame 0) per frame
    try:
        with _PreCacheEval(obj):
            for k in range(frames):
                scene.frame_set(f0 + k)
                dg = context.evaluated_depsgraph_get()
                oe = obj.evaluated_get(dg)
                positions.append(_world_positions(oe, V, name, f0 + k))
                matrices.append(np_matrix(oe.matrix_world))
                for ci, c in enumerate(colliders):
                    ce = c.evaluated_get(dg)
                    cen, half, rot = _collider_state(ce)
                    col_c[ci].append(cen)
                    col_h[ci].append(half)
                    col_r[ci].append(rot)
                    if shapes[ci] == "MESH":
                        col_m[ci].append(_world_triangles(ce, with_faces=not col_m[ci]))
                if k == 0 and frames > 1 and not _maybe_animated(obj, colliders):
                    break  # nothing moves: the first frame says everything
    finally:
        scene.frame_set(frame_cur, subframe=subframe_cur)

    P = np.stack(positions)  # [n, V, 3] (n = 1 when nothing is animated)
    rest = P[0]
    spec = {
        "rows": int(rows), "cols": int(cols),
        "rest_positions": rest[vidx].tolist(),
        "vertex_index": vidx.tolist(),
        "frames": int(frames), "fps": scene_fps(scene), "start_frame": int(f0),
        "substeps": int(s.substeps),
        "gravity": list(map(float, scene.gravity)) if scene.use_gravity else [0.0, 0.0, 0.0],
        "mass_per_area": float(s.mass_per_area),
        "tension": float(s.tension), "shear": float(s.shear), "bending": float(s.bending),
        "air_damping": float(s.air_damping),
        "wind": list(map(float, s.wind)),
        "pin_weights": weights[vidx].tolist(),
    }
    spec.update(solver_keys(s))

    moving = len(P) > 1 and float(np.abs(P[:, pinned] - rest[pinned]).max(initial=0.0)) > 1e-7
    if moving:
        # The engine solves output frame k (shown at scene frame f0 + k) towards entry k + 1, entry 0
        # being the initial (rest) state: frames + 1 entries, the scene at f0, f0, f0 + 1, ..., f1.
        spec["pin_targets"] = _track(P[:, vidx]).tolist()

    mats = np.stack(matrices)
    animated_matrix = len(mats) > 1 and float(np.abs(mats - mats[0]).max()) > 1e-7
    info = {"rows": rows, "cols": cols, "vertex_index": vidx, "frames": frames, "start_frame": f0,
            "animated_matrix": animated_matrix, "warnings": []}
    # the cache in object-local space: world -> local at each output frame's scene frame (the engine
    # applies entry k to output frame k), or one matrix when the object does not move
    spec["output_matrix"] = ([np.linalg.inv(m).tolist() for m in mats] if animated_matrix
                             else np.linalg.inv(mats[0]).tolist())

    cl = []
    for ci, (c, shape, cs, hs, rs) in enumerate(zip(colliders, shapes, col_c, col_h, col_r)):
        C, H, Rot = np.stack(cs), np.stack(hs), np.stack(rs)
        center = C[0].tolist() if float(np.abs(C - C[0]).max()) <= 1e-7 else _track(C).tolist()
        if float(np.abs(H - H[0]).max()) > 1e-6:
            info["warnings"].append(f"collider '{c.name}' changes size; the bake uses its size at "
                                    f"frame {f0} (the spec has no per-frame size)")
        friction = settings[ci]["friction"]
        thickness = {} if settings[ci]["thickness"] is None else {"thickness": settings[ci]["thickness"]}
        if settings[ci]["source"] != "metaphys":
            info["warnings"].append(f"collider '{c.name}': from its Collision modifier (friction {friction:g}, "
                                    f"thickness {settings[ci]['thickness']:g} m)")
        if shape == "MESH":
            cl.append({**_mesh_collider(c, col_m[ci], friction, input_dir, info), **thickness})
            continue
        if shape == "SPHERE":
            radius = 0.5 * float(max(c.dimensions))
            cl.append({"type": "sphere", "center": center, "radius": radius, "friction": friction, **thickness})
        else:
            half = H[0].copy()
            cen = np.array(center, dtype=np.float64)
            rotated = float(np.abs(Rot).max()) > 1e-6
            axis_z = _euler_matrix(Rot[0])[:, 2]   # the box's own z axis (a track follows frame 0's)
            flat = half < FLAT_HALF
            if flat[2] and not flat[:2].any():
                # a plane is a ground: solid below its surface (along its own z), as deep as it is wide
                depth = max(float(half[:2].max()), 0.05)
                half[2] = 0.5 * depth
                cen = cen - 0.5 * depth * axis_z
                info["warnings"].append(f"collider '{c.name}' is flat: used as a ground {depth:.2f} m deep")
            elif flat.any():
                half = np.maximum(half, FLAT_HALF)
                info["warnings"].append(f"collider '{c.name}' is flat: used as a {2 * FLAT_HALF * 100:.0f} cm "
                                        "thick box")
            box = {"type": "box", "center": cen.tolist(), "half_extents": half.tolist(), "friction": friction,
                   **thickness}
            if rotated:   # an axis-aligned box stays on the kernel's faster path
                box["rotation"] = (Rot[0].tolist() if float(np.abs(Rot - Rot[0]).max()) <= 1e-6
                                   else _track(Rot).tolist())
            cl.append(box)
    if cl:
        spec["colliders"] = cl
    return spec, info


def _track(per_frame: np.ndarray) -> np.ndarray:
    """Per-scene-frame samples f0..f1 -> the engine's per-step track (initial state first)."""
    return np.concatenate([per_frame[:1], per_frame], axis=0)


def _maybe_animated(obj, colliders) -> bool:
    """Cheap conservative test: could anything the cloth bake samples per frame change over time?"""
    import bpy  # noqa: F401  (only called inside Blender)

    def anim(ob, depth=0):
        if ob is None or depth > 16:
            return False
        if ob.animation_data is not None or ob.parent is not None and anim(ob.parent, depth + 1):
            return True
        if ob.type == "MESH" and ob.data.shape_keys is not None:
            return True
        if getattr(ob.data, "animation_data", None) is not None:
            return True
        if ob.constraints or getattr(ob, "rigid_body", None) is not None:
            return True
        for md in ob.modifiers:
            if md.type == "MESH_CACHE" and md.name == CACHE_MODIFIER:
                break
            return True  # any modifier before the cache may depend on other objects or time
        return False
    return anim(obj) or any(anim(c) for c in colliders)
