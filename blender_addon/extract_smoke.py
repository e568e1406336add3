"""Scene -> smoke spec (docs/bake-spec.md, "Smoke spec" and "3D smoke spec"). No physics here.

3D (``dimensions`` "3D", ``smoke_spec_3d``): the domain is a box, its world bounding box the grid
(``domain_box``: cubic cells, ``resolution`` along the longest side); emitters and obstacles go to the
engine as triangle meshes in world space (.npy files beside the spec), which it voxelizes; static.

The domain is a plane-like mesh object: its local X extent maps to columns (left to right), its
local Y extent to rows (row 0 at +Y, the top: the spec's image convention). Cells are square:
``cell_size = longer side / resolution``; the spec is in physical units (Blender units are metres):
``size_m`` is the domain's longer side, forces, viscosity and the emitters' rate are SI.

Emitter and obstacle objects (``metaphys_smoke.role``) are rasterised per frame: every cell
centre (on the domain plane, in world space) is tested against the evaluated object with a BVH
(nearest surface point + its normal: inside when behind it; a point within a quarter cell of the
surface also counts, so flat emitters lying in the plane work). Cells outside the object's bounding
box are skipped, so 128 x 128 domains stay fast. Masks that do not change over the frame range
are written once ([rows, cols]), animated ones as [frames, rows, cols].
"""
from __future__ import annotations

import numpy as np

from .common import ExtractError, frame_range, np_matrix, scene_fps

__all__ = ["domain_geometry", "smoke_spec", "cell_centers_world", "rasterize"]


def domain_geometry(obj, resolution: int, scale_xy=(1.0, 1.0)) -> dict:
    """Rows/cols, cell size and the local rectangle of the domain plane ``obj``.

    ``scale_xy``: the world length of the domain's local X and Y unit vectors (its scale), so that
    cells are square in world space even for a non-uniformly scaled plane. ``cell`` is in world
    units, ``cell_x``/``cell_y`` in local units.
    """
    if obj.type != "MESH" or len(obj.data.vertices) == 0:
        raise ExtractError(f"smoke domain '{obj.name}' must be a mesh plane (Add > Mesh > Plane)")
    co = np.empty(len(obj.data.vertices) * 3, dtype=np.float32)
    obj.data.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3).astype(np.float64)
    lo, hi = co.min(axis=0), co.max(axis=0)
    ext = hi - lo
    sx, sy = float(scale_xy[0]), float(scale_xy[1])
    wx, wy = ext[0] * sx, ext[1] * sy
    if wx <= 0 or wy <= 0:
        raise ExtractError(f"smoke domain '{obj.name}' has no area in its local XY plane "
                           f"(extent {ext[0]:.3g} x {ext[1]:.3g}); use a plane lying in local XY")
    res = int(resolution)
    if wx >= wy:
        cols = res
        cell = wx / cols
        rows = max(16, int(round(wy / cell)))
    else:
        rows = res
        cell = wy / rows
        cols = max(16, int(round(wx / cell)))
    cx_, cy_ = cell / sx, cell / sy
    cx, cy = 0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1])
    z = 0.5 * (lo[2] + hi[2])
    W, H = cols * cx_, rows * cy_
    return {"rows": rows, "cols": cols, "cell": float(cell), "cell_x": float(cx_), "cell_y": float(cy_),
            "x0": cx - W / 2, "y0": cy - H / 2, "x1": cx + W / 2, "y1": cy + H / 2, "z": z}


def cell_centers_local(g: dict) -> np.ndarray:
    """[rows, cols, 3] cell centres in the domain's local space (row 0 at +Y)."""
    j = np.arange(g["cols"])
    i = np.arange(g["rows"])
    x = g["x0"] + (j + 0.5) * g["cell_x"]
    y = g["y1"] - (i + 0.5) * g["cell_y"]
    X, Y = np.meshgrid(x, y)
    return np.stack([X, Y, np.full_like(X, g["z"])], axis=-1)


def cell_centers_world(g: dict, matrix_world) -> np.ndarray:
    m = np_matrix(matrix_world)
    p = cell_centers_local(g)
    return p @ m[:3, :3].T + m[:3, 3]


def rasterize(obj_eval, depsgraph, points_world: np.ndarray, tol_world: float) -> np.ndarray:
    """Boolean mask: which ``points_world`` [..., 3] lie inside (or within ``tol_world`` of) the object."""
    from mathutils import Vector
    from mathutils.bvhtree import BVHTree

    shape = points_world.shape[:-1]
    pts = points_world.reshape(-1, 3)
    m = np_matrix(obj_eval.matrix_world)
    try:
        minv = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        return np.zeros(shape, dtype=bool)
    loc = pts @ minv[:3, :3].T + minv[:3, 3]
    # tolerance in local units (conservative for non-uniform scale)
    sc = np.linalg.norm(m[:3, :3], axis=0)
    tol = tol_world / max(float(sc.max()), 1e-12)
    bb = np.array([list(c) for c in obj_eval.bound_box], dtype=np.float64)
    lo, hi = bb.min(axis=0) - tol, bb.max(axis=0) + tol
    cand = np.flatnonzero(((loc >= lo) & (loc <= hi)).all(axis=1))
    out = np.zeros(pts.shape[0], dtype=bool)
    if cand.size == 0:
        return out.reshape(shape)
    tree = BVHTree.FromObject(obj_eval, depsgraph)
    for idx in cand.tolist():
        p = Vector(loc[idx])
        hit, normal, _face, dist = tree.find_nearest(p)
        if hit is None:
            continue
        if dist <= tol or (p - hit).dot(normal) < 0.0:
            out[idx] = True
    return out.reshape(shape)


def smoke_objects(context, role: str, exclude=None) -> list:
    out = []
    for ob in context.view_layer.objects:
        st = getattr(ob, "metaphys_smoke", None)
        if ob is exclude or st is None or st.role != role:
            continue
        if ob.type not in {"MESH", "CURVE", "SURFACE", "META", "FONT"}:
            continue
        out.append(ob)
    return sorted(out, key=lambda o: o.name)


def smoke_spec(context, domain, input_dir: str, frames_override: int | None = None):
    """Build the smoke spec for ``domain``; masks are written as .npy files into ``input_dir``.

    Returns (spec, info). Raises ExtractError.
    """
    import os

    if domain is None or domain.type != "MESH":
        raise ExtractError("metaphys smoke needs a mesh plane (2D) or box (3D) as its domain (Add > Mesh)")
    s = domain.metaphys_smoke
    if s.role != "DOMAIN":
        raise ExtractError(f"'{domain.name}' is not a metaphys smoke domain (Physics > metaphys Smoke > Role)")
    if s.dimensions == "3D":
        return smoke_spec_3d(context, domain, input_dir, frames_override)
    scene = context.scene
    m0 = np_matrix(domain.matrix_world)
    g = domain_geometry(domain, s.resolution, np.linalg.norm(m0[:3, :2], axis=0))
    f0, f1 = frame_range(scene, s)
    frames = f1 - f0 + 1 if frames_override is None else int(frames_override)
    if frames < 1:
        raise ExtractError(f"'{domain.name}': the frame range {f0}-{f1} is empty")
    emitters = smoke_objects(context, "EMITTER", exclude=domain)
    obstacles = smoke_objects(context, "OBSTACLE", exclude=domain)
    rows, cols = g["rows"], g["cols"]

    frame_cur, subframe_cur = scene.frame_current, scene.frame_subframe
    em = np.zeros((frames, rows, cols), dtype=np.float32)
    ob = np.zeros((frames, rows, cols), dtype=np.float32)
    dm = []
    anim = _any_animated([domain] + emitters + obstacles)
    n_eval = frames if anim else 1
    try:
        for k in range(n_eval):
            scene.frame_set(f0 + k)
            dg = context.evaluated_depsgraph_get()
            de = domain.evaluated_get(dg)
            dm.append(np_matrix(de.matrix_world))
            pts = cell_centers_world(g, de.matrix_world)
            tol = 0.25 * g["cell"]
            for e in emitters:
                mask = rasterize(e.evaluated_get(dg), dg, pts, tol)
                em[k] = np.maximum(em[k], mask * float(e.metaphys_smoke.strength))
            for o in obstacles:
                ob[k] = np.maximum(ob[k], rasterize(o.evaluated_get(dg), dg, pts, tol))
    finally:
        scene.frame_set(frame_cur, subframe=subframe_cur)
    if n_eval < frames:
        em[n_eval:] = em[0]
        ob[n_eval:] = ob[0]
    if len(dm) > 1 and float(np.abs(np.stack(dm) - dm[0]).max()) > 1e-7:
        raise ExtractError(f"smoke domain '{domain.name}' moves during the frame range; the 2D domain must stay "
                           "put (animate the emitters and obstacles instead)")

    spec = {
        "resolution": [int(rows), int(cols)],
        # physical units: the world size of the domain (its longer side) and of a cell (the VDB voxel)
        "size_m": float(g["cell"]) * max(rows, cols),
        "cell_size": float(g["cell"]),
        "frames": int(frames), "fps": scene_fps(scene), "start_frame": int(f0),
        **_physics_keys(s),
        "emitter_velocity": [float(v) for v in s.emitter_velocity],
        "wind": [float(v) for v in s.wind],
        "flipbook": bool(s.flipbook),
    }
    if s.flipbook:
        spec.update(flipbook_layout=[int(s.flipbook_rows), int(s.flipbook_cols)], flipbook_loop=int(s.flipbook_loop),
                    flipbook_alpha=s.flipbook_alpha.lower(), flipbook_engine=s.flipbook_engine.lower())
        if s.flipbook_cell:
            spec["flipbook_cell"] = int(s.flipbook_cell)
        if s.flipbook_step:
            spec["flipbook_step"] = int(s.flipbook_step)
    spec.update(_solver_keys(s))
    info = {"geometry": g, "frames": frames, "start_frame": f0, "emitters": [e.name for e in emitters],
            "obstacles": [o.name for o in obstacles], "warnings": [], "domain_matrix": dm[0]}
    os.makedirs(input_dir, exist_ok=True)
    for key, arr, objs in (("emitters", em, emitters), ("obstacles", ob, obstacles)):
        if not objs:
            continue
        if not arr.any():
            info["warnings"].append(f"no {key[:-1]} object ({', '.join(o.name for o in objs)}) touches the domain "
                                    f"plane '{domain.name}'")
        data = arr[0] if (arr == arr[0]).all() else arr
        path = os.path.join(input_dir, f"{key}.npy")
        np.save(path, np.ascontiguousarray(data, dtype=np.float32))
        spec[key] = os.path.abspath(path)
    if not emitters:
        info["warnings"].append("no emitter objects: the engine's default emitter (a disc at the bottom) is used")
    return spec, info


def _physics_keys(s) -> dict:
    """The domain's physical settings that 2-D and 3-D specs share."""
    return {"substeps": int(s.substeps), "cfl": float(s.cfl), "emitter_density": float(s.emitter_density),
            "buoyancy": float(s.buoyancy), "viscosity": float(s.viscosity),
            "density_diffusion": float(s.density_diffusion), "emitter_heat": float(s.emitter_heat),
            "heat_buoyancy": float(s.heat_buoyancy), "cooling": float(s.cooling)}


def _solver_keys(s, three_d: bool = False) -> dict:
    if s.solver_mode == "TOLERANCE":
        return {"tol": float(s.tolerance), "max_iterations": int(s.max_iterations)}
    budget = {"iterations_per_step": int(s.iterations)}
    return {"tol": None, **budget} if three_d else budget   # a 3-D spec defaults to a tolerance


def domain_box(domain, resolution: int) -> dict:
    """A 3-D domain's grid: the world-space bounding box of the evaluated mesh, ``resolution`` cubic cells
    along its longest side (at least 16 along each), centred on the box. ``shape`` = (depth = world y,
    rows = world z, cols = world x), as the engine's 3-D spec has it."""
    co = np.empty(len(domain.data.vertices) * 3, dtype=np.float32)
    domain.data.vertices.foreach_get("co", co)
    m = np_matrix(domain.matrix_world)
    w = co.reshape(-1, 3).astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    lo, hi = w.min(axis=0), w.max(axis=0)
    ext = hi - lo
    if (ext <= 0).any():
        raise ExtractError(f"smoke domain '{domain.name}' has no volume (world extent {ext[0]:.3g} x {ext[1]:.3g} x "
                           f"{ext[2]:.3g}); a 3D domain is a box (Add > Mesh > Cube)")
    cell = float(ext.max()) / int(resolution)
    nx, ny, nz = (max(16, int(round(e / cell))) for e in ext)
    centre = 0.5 * (lo + hi)
    origin = centre - 0.5 * cell * np.array([nx, ny, nz])
    return {"shape": (ny, nz, nx), "cell": cell, "origin": [float(v) for v in origin]}


def _mesh_shape(obj_eval, input_dir: str, name: str) -> dict:
    """The evaluated object as a triangle mesh in world space (metres), saved as .npy files for the spec."""
    import os
    mesh = obj_eval.to_mesh()
    try:
        mesh.calc_loop_triangles()
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", co)
        tri = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", tri)
    finally:
        obj_eval.to_mesh_clear()
    m = np_matrix(obj_eval.matrix_world)
    v = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
    paths = {}
    for key, arr in (("vertices", v), ("faces", tri.reshape(-1, 3))):
        paths[key] = os.path.abspath(os.path.join(input_dir, f"{name}_{key}.npy"))
        np.save(paths[key], np.ascontiguousarray(arr))
    return {"type": "mesh", "center": [0.0, 0.0, 0.0], **paths}


def smoke_spec_3d(context, domain, input_dir: str, frames_override: int | None = None):
    """The 3-D smoke spec of a box ``domain``: its world bounding box, emitters and obstacles as meshes
    (evaluated at the first frame: 3-D shapes are static), the panel's 2-D vectors (x, up) along world X, Z."""
    import os
    s = domain.metaphys_smoke
    scene = context.scene
    f0, f1 = frame_range(scene, s)
    frames = f1 - f0 + 1 if frames_override is None else int(frames_override)
    if frames < 1:
        raise ExtractError(f"'{domain.name}': the frame range {f0}-{f1} is empty")
    emitters = smoke_objects(context, "EMITTER", exclude=domain)
    obstacles = smoke_objects(context, "OBSTACLE", exclude=domain)
    info = {"frames": frames, "start_frame": f0, "emitters": [e.name for e in emitters],
            "obstacles": [o.name for o in obstacles], "warnings": []}
    os.makedirs(input_dir, exist_ok=True)
    frame_cur, subframe_cur = scene.frame_current, scene.frame_subframe
    try:
        scene.frame_set(f0)
        dg = context.evaluated_depsgraph_get()
        g = domain_box(domain.evaluated_get(dg), s.resolution)
        shapes = {key: [_mesh_shape(o.evaluated_get(dg), input_dir, f"{key}_{k}") for k, o in enumerate(objs)]
                  for key, objs in (("emitters", emitters), ("obstacles", obstacles))}
    finally:
        scene.frame_set(frame_cur, subframe=subframe_cur)
    if _any_animated([domain] + emitters + obstacles):
        info["warnings"].append("3D smoke takes the domain, emitters and obstacles as they are at the first frame "
                                "(animated ones are not followed yet)")
    if any(abs(e.metaphys_smoke.strength - 1.0) > 1e-9 for e in emitters):
        info["warnings"].append("3D smoke ignores the emitters' Strength (every emitter injects the domain's "
                                "Emission rate)")
    info["geometry"] = g
    vx, vup = (float(v) for v in s.emitter_velocity)
    wx, wup = (float(v) for v in s.wind)
    spec = {"resolution": [int(n) for n in g["shape"]], "size_m": g["cell"] * max(g["shape"]),
            "cell_size": g["cell"], "origin": g["origin"], "frames": int(frames), "fps": scene_fps(scene),
            "start_frame": int(f0), **_physics_keys(s), "emitter_velocity": [vx, 0.0, vup], "wind": [wx, 0.0, wup],
            **_solver_keys(s, three_d=True)}
    if emitters:
        spec["emitters"] = shapes["emitters"]
    else:
        info["warnings"].append("no emitter objects: the engine's default emitter (a sphere at the bottom) is used")
    if obstacles:
        spec["obstacles"] = shapes["obstacles"]
    return spec, info


def _any_animated(objs) -> bool:
    for ob in objs:
        o = ob
        depth = 0
        while o is not None and depth < 16:
            if o.animation_data is not None or o.constraints or getattr(o, "rigid_body", None) is not None:
                return True
            if getattr(o.data, "animation_data", None) is not None or o.modifiers:
                return True
            if o.type == "MESH" and o.data.shape_keys is not None:
                return True
            o = o.parent
            depth += 1
    return False
