"""Triangle-mesh colliders for cloth (issue #26): static, rigid (a translation and rotation per
frame) or deforming (vertex positions per frame, e.g. a walking character).

Each step, every cloth vertex near a mesh gets a *contact plane*: the closest point on the mesh and
the normal there (libigl's signed distance, AABB tree, sign by pseudo-normals, so an open mesh is
one-sided: its normals point outside). The step then sees a smooth penalty against that plane
(``physics.cloth.plane_distance``): the lagged linearization of the mesh's distance, exact for
flat faces and refreshed every step, which keeps each Newton solve smooth where the distance to
a mesh has kinks (edges, vertices)."""
from __future__ import annotations

from typing import List, Optional

import numpy as np


def euler_xyz_degrees(angles) -> np.ndarray:
    """Rotation matrix of XYZ Euler angles in degrees, Blender's convention: R = Rz @ Ry @ Rx."""
    rx, ry, rz = np.radians(np.asarray(angles, dtype=np.float64))
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def interp_track(track: np.ndarray, t: float) -> np.ndarray:
    """A per-frame track at fractional frame index t (clamped at its ends), the sims' convention."""
    if len(track) == 1:
        return track[0]
    t = min(max(t, 0.0), len(track) - 1.0)
    k = int(np.floor(t))
    f = t - k
    return track[k] if f == 0 or k + 1 >= len(track) else (1 - f) * track[k] + f * track[k + 1]


class MeshCollider:
    """World vertices at any (fractional) frame: ``R(t) @ v(t) + center(t)``, with ``v`` [V,3] or
    per frame [F,V,3], ``center`` [3] or [F,3], ``rotation`` Euler XYZ degrees [3] or [F,3]."""

    def __init__(self, vertices, faces, center, rotation=None, friction: float = 0.0, offset: float = 0.0):
        v = np.asarray(vertices, dtype=np.float64)
        self.vertices = v[None] if v.ndim == 2 else v
        self.faces = np.ascontiguousarray(np.asarray(faces, dtype=np.int64))
        if self.vertices.ndim != 3 or self.vertices.shape[2] != 3 or self.vertices.shape[1] < 3:
            raise ValueError(f"mesh collider vertices must be [V, 3] or [frames, V, 3] with V >= 3, "
                             f"got shape {list(v.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or len(self.faces) == 0:
            raise ValueError(f"mesh collider faces must be [T, 3] vertex indices, got shape {list(self.faces.shape)}")
        nv = self.vertices.shape[1]
        if self.faces.min() < 0 or self.faces.max() >= nv:
            raise ValueError(f"mesh collider faces index vertices 0..{nv - 1}, got {self.faces.min()}..{self.faces.max()}")
        self.center = np.atleast_2d(np.asarray(center, dtype=np.float64))
        self.rotation = None if rotation is None else np.atleast_2d(np.asarray(rotation, dtype=np.float64))
        self.friction = float(friction)
        self.offset = float(offset)   # metres the surface is pushed out along its normal (collider thickness)

    def world_vertices(self, t: float) -> np.ndarray:
        v = interp_track(self.vertices, t)
        if self.rotation is not None:
            v = v @ euler_xyz_degrees(interp_track(self.rotation, t)).T
        return np.ascontiguousarray(v + interp_track(self.center, t))


def contact_planes(meshes: List[MeshCollider], t: float, points: np.ndarray, band: np.ndarray,
                   length_unit: float) -> Optional[np.ndarray]:
    """Per point [P,3] (world metres) the contact plane with the nearest mesh within ``band`` [P]
    metres: [8, P] rows (point 3, normal 3, active, friction), the point in model units (/ length_unit).
    None when no point is near any mesh."""
    import igl

    best = np.full(len(points), np.inf)
    out = np.zeros((8, len(points)))
    for mesh in meshes:
        V = mesh.world_vertices(t)
        S, I, C, _ = igl.signed_distance(points, V, mesh.faces, sign_type=igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL,
                                         upper_bound=float(band.max()))
        near = (np.abs(S) <= band) & (np.abs(S) < best)
        if not near.any():
            continue
        d = points - C
        length = np.linalg.norm(d, axis=1)
        # the normal: from the closest point towards the point, flipped inside; on the surface
        # itself (length ~ 0) the face normal
        tri = V[mesh.faces[I]]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-300)
        n = np.where((length > 1e-9)[:, None], np.sign(S)[:, None] * d / np.maximum(length, 1e-300)[:, None], fn)
        out[0:3, near] = ((C[near] + mesh.offset * n[near]) / length_unit).T
        out[3:6, near] = n[near].T
        out[6, near] = 1.0
        out[7, near] = mesh.friction
        best = np.where(near, np.abs(S), best)
    return out if np.isfinite(best).any() else None


def grid_self_intersections(positions: np.ndarray, rows: int, cols: int, eps: float = 1e-12) -> int:
    """How many (edge, triangle) pairs of a rows x cols grid mesh cross each other (edges that share
    no vertex with the triangle): 0 means no layer of the cloth passes through another. The grid's
    quads are split along one diagonal; positions [rows*cols, 3]. A segment-triangle test
    (Moller-Trumbore) per pair, with an axis-aligned box prefilter."""
    P = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    edges = np.concatenate([np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
                            np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], 1), np.stack([a, d], 1)])
    T, E = P[tris], P[edges]                                        # [nt,3,3], [ne,2,3]
    tlo, thi = T.min(1), T.max(1)
    elo, ehi = E.min(1), E.max(1)
    count = 0
    for k in range(len(edges)):                                     # one edge against all triangles
        near = np.all((tlo <= ehi[k]) & (thi >= elo[k]), axis=1)
        near &= ~np.any(tris == edges[k, 0], axis=1) & ~np.any(tris == edges[k, 1], axis=1)
        if not near.any():
            continue
        t = T[near]
        o, dvec = E[k, 0], E[k, 1] - E[k, 0]
        e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
        pv = np.cross(dvec, e2)
        det = (e1 * pv).sum(1)
        ok = np.abs(det) > eps
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tv = o - t[:, 0]
        u = (tv * pv).sum(1) * inv
        qv = np.cross(tv, e1)
        v = (dvec * qv).sum(1) * inv
        s = (e2 * qv).sum(1) * inv
        count += int((ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (s >= 0) & (s <= 1)).sum())
    return count
