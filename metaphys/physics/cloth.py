"""Spring-mass cloth on an H x W vertex grid, backward Euler; unknown = acceleration a [N,3,H,W].

State update within a step (notes section 8.6): v_new = v_old + dt*a, x_new = x_old + dt*v_new;
hard-pinned vertices (pin weight w == 1) have x_new = pin target and v_new = 0, and their a is
unused (masked: zero gradient, zero contribution). Channels of every 3-vector field: (x, y, z).

The loss is the backward-Euler incremental potential of x_new, divided by the vertex count and
written in terms of a (constants dropped). **Normalization = the reference's** (notes section
8.6: means, no 1/2 on the internal energies), extended by the new terms:

  E_stretch = k_stretch * [ mean_{vertical edges} (|e| - L0)^2 + mean_{horizontal edges} (|e| - L0)^2 ]
  E_shear   = k_shear / (H W) * sum_{quads} sum_{4 pairs} psi^2,   psi = pi/2 - theta
  E_bend    = k_bend  / (H W) * sum_{consecutive edge pairs, both directions} phi^2
  L_inert   = dt^2 / 2 / (H W) * sum_v M_v |a_v|^2
  L_ext     = -dt^2 / (H W) * sum_v (M_v g + A_v wind) . a_v
  L_damp    = damping * dt / 2 / (H W) * sum_v M_v |v_new,v|^2
  L_pin     = k_pin / (H W) * sum_{0 < w_v < 1} w_v |x_new,v - target_v|^2
  L_contact = k_contact / (H W) * sum_v sum_{colliders} max(0, margin - sdf(x_new,v))^3
  loss      = E_stretch + E_shear + E_bend + L_inert + L_ext + L_damp + L_pin + L_contact

(the sums over v in L_* skip hard-pinned vertices). The loss can be negative. Its gradient is the
TRUE gradient d loss / d a = dt^2 * dE/dx_new + the direct terms.

* Mass: lumped area weights A_v = 1 (interior), 1/2 (border), 1/4 (corner); M_v = mass * A_v
  (``mass`` a per-sample scale). Gravity g [N,3] is an acceleration (force M_v g); wind [N,3] is
  a uniform force per unit area (force A_v * wind, independent of the mass).
* Damping: a linear velocity damping force -damping * M_v * v_new (damping in 1/time), whose
  backward-Euler dissipation potential is the L_damp term above.
* Angles: shear psi = atan2(e_v . e_h, |e_v x e_h|) = pi/2 - (angle between the directions of
  a vertical edge (i -> i+1) and a horizontal edge (j -> j+1) of the same quad), over the 4 pairs
  (left, top), (left, bottom), (right, top), (right, bottom); bend phi = atan2(|e1 x e2|, e1 . e2)
  between consecutive edges of a row or column (0 when straight). atan2 keeps full precision at
  small angles, where arccos(1 - eps) does not. The kernel writes the bend gradient with the
  ratio r = phi / s (s = |e1 x e2|, c = e1 . e2; r -> 1/c as phi -> 0):
  d(phi^2)/d e1 = 2 [c r (e2 x (e1 x e2)) - phi s e2] / (s^2 + c^2) (e2 likewise), which is smooth
  and exactly 0 at phi = 0: no clamp and no dead zone (the reference clamps arccos at 1 - 1e-7,
  which zeroes the gradient for phi < 4.5e-4 rad). The twin gets the same values from autograd.
* Pins: weight w [N,1,H,W] in [0, 1] and targets [N,3,H,W] (may change every frame): w == 1 is
  a hard constraint (x_new = target, a masked), 0 < w < 1 a soft spring k_pin * w * |x - t|^2.
* Colliders: one table [N,K,18] (``metaphys.colliders``: a row per collider = kind code, rotation
  3x3, centre, 4 parameters, friction; kind 0 = a padding row). Penalty k_contact *
  max(0, margin - sdf)^3 (C^2: Newton converges through contact) on every (non-hard-pinned)
  vertex, with each kind's exact signed distance in the collider's frame (spheres, boxes rotated
  or not). Mesh colliders' rows are not table distances: their lagged contact planes are the
  Python-side ``planes`` term. Colliders may move between frames (a new table each step).
* Effective physical spring constant of E_stretch for the force balance with the per-vertex
  terms: 2*k_stretch*H*W/((H-1)*W) (vertical), 2*k_stretch*H*W/(H*(W-1)) (horizontal).
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch

from metaphys import colliders as kinds
from metaphys.physics import checks
from metaphys.physics.base import Problem

PARAM_NAMES = ("rest", "k_stretch", "k_shear", "k_bend", "mass", "damping", "k_pin", "k_contact", "margin", "dt")


def lumped_weights(h: int, w: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """[1,1,h,w] lumped area weights: 1 interior, 1/2 on the border, 1/4 at the corners."""
    wy = torch.ones(h, dtype=dtype, device=device)
    wx = torch.ones(w, dtype=dtype, device=device)
    wy[0] = wy[-1] = 0.5
    wx[0] = wx[-1] = 0.5
    if h == 1:
        wy[0] = 0.25
    if w == 1:
        wx[0] = 0.25
    return (wy.view(h, 1) * wx.view(1, w)).view(1, 1, h, w)


def cloth_state(a, x_old, v_old, pin_w, pin_x, dt):
    """(x_new, v_new) after one step with acceleration a; hard pins (w == 1): x = target, v = 0."""
    hard = (pin_w == 1).to(a.dtype)
    dtn = dt.view(-1, 1, 1, 1)
    v_new = (1 - hard) * (v_old + dtn * a)
    x_new = hard * pin_x + (1 - hard) * (x_old + dtn * v_new)
    return x_new, v_new


def _dot(u, v):
    return (u * v).sum(1)


def _cross(u, v):
    return torch.linalg.cross(u, v, dim=1)


def _norm(u):
    return torch.linalg.vector_norm(u, dim=1)


def _norm_fast(u):
    """|u| over dim 1 as sqrt(u.u): 5x faster than vector_norm's reduction (and its double
    backward) on [N,3,H,W]; for the Hessian path, where |u| > 0 (edges, non-degenerate quads)."""
    return torch.sqrt((u * u).sum(1).clamp_min(1e-300))


def _atan_ratio(t2):
    """atan(t) / t as a smooth function of t^2 (series near 0: no 0/0 in any derivative)."""
    small = t2 < 1e-6
    ts = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(ts)
    series = 1 - t2 / 3 + t2 * t2 / 5
    return torch.where(small, series, torch.atan(t) / t)


def bend_angle_sq_smooth(e1, e2):
    """phi^2 with phi = atan2(|e1 x e2|, e1 . e2), written through |e1 x e2|^2 so that every
    derivative (Newton's Hessian-vector products) is finite at phi = 0, where |e1 x e2| has a
    kink; equal to the atan2 form up to round-off."""
    c = _dot(e1, e2)
    s2 = _dot(_cross(e1, e2), _cross(e1, e2))
    pos = c > 0
    c_pos = torch.where(pos, c, torch.ones_like(c))
    phi_sq_pos = s2 * (_atan_ratio(s2 / (c_pos * c_pos)) / c_pos) ** 2
    s_neg = torch.sqrt(torch.where(pos, torch.ones_like(s2), s2).clamp_min(1e-300))
    phi_sq_neg = torch.atan2(s_neg, torch.where(pos, -torch.ones_like(c), c)) ** 2
    return torch.where(pos, phi_sq_pos, phi_sq_neg)


def internal_energies(x, rest, k_stretch, k_shear, k_bend, smooth: bool = False):
    """(E_stretch, E_shear, E_bend), each [N], of positions x [N,3,H,W] (reference normalization).
    ``smooth``: bend angles through ``bend_angle_sq_smooth`` (for second derivatives)."""
    n, _, h, w = x.shape
    hw = float(h * w)
    norm = _norm_fast if smooth else _norm
    ev = x[:, :, 1:, :] - x[:, :, :-1, :]
    eh = x[:, :, :, 1:] - x[:, :, :, :-1]
    L0 = rest.view(-1, 1, 1)
    zero = x.new_zeros(n)
    stretch = zero
    if h > 1:
        stretch = stretch + ((norm(ev) - L0) ** 2).flatten(1).mean(1)
    if w > 1:
        stretch = stretch + ((norm(eh) - L0) ** 2).flatten(1).mean(1)
    stretch = k_stretch * stretch
    shear = zero
    if h > 1 and w > 1:
        left, right = ev[..., :, :-1], ev[..., :, 1:]
        top, bottom = eh[..., :-1, :], eh[..., 1:, :]
        for u, v in ((left, top), (left, bottom), (right, top), (right, bottom)):
            psi = torch.atan2(_dot(u, v), norm(_cross(u, v)))
            shear = shear + (psi ** 2).flatten(1).sum(1)
    shear = k_shear * shear / hw
    bend = zero
    for e in ((ev, 2) if h > 2 else None, (eh, 3) if w > 2 else None):
        if e is None:
            continue
        edges, dim = e
        e1 = edges.narrow(dim, 0, edges.shape[dim] - 1)
        e2 = edges.narrow(dim, 1, edges.shape[dim] - 1)
        if smooth:
            phi_sq = bend_angle_sq_smooth(e1, e2)
        else:
            phi_sq = torch.atan2(_norm(_cross(e1, e2)), _dot(e1, e2)) ** 2
        bend = bend + phi_sq.flatten(1).sum(1)
    bend = k_bend * bend / hw
    return stretch, shear, bend


def collider_frame(x, table):
    """Positions x [N,3,H,W] seen in every collider's frame, R^T (x - centre): [N,K,H,W,3]."""
    n, k = table.shape[:2]
    R = table[..., kinds.ROTATION].reshape(n, k, 3, 3)
    d = x[:, None] - table[..., kinds.CENTER][:, :, :, None, None]
    return torch.einsum("nkji,nkjhw->nkhwi", R, d)


def kernel_rows(table):
    """[N,K] bool: the rows whose distance is a table distance (a kind of the kernels)."""
    code = table[..., kinds.KIND]
    out = torch.zeros_like(code, dtype=torch.bool)
    for kind in kinds.KERNEL_KINDS:
        out = out | (code == kind.code)
    return out


def collider_sdf(x, table):
    """Signed distance [N,K,H,W] of positions x [N,3,H,W] to every row of the collider table
    [N,K,18]; +inf for padding rows and kinds without a table distance (mesh colliders)."""
    p = collider_frame(x, table)
    prm = table[..., kinds.PARAMS][:, :, None, None, :]
    code = table[..., kinds.KIND][:, :, None, None]
    d = torch.full_like(p[..., 0], float("inf"))
    for kind in kinds.KERNEL_KINDS:
        d = torch.where(code == kind.code, kind.distance(p, prm), d)
    return d


def row_distance(xv, row):
    """The signed distance of one point xv [3] to one table row [18] (any kernel kind; 0 for other
    rows): for torch.func (vmapped gradients and Hessians of the twin and the PSD correction)."""
    R = row[kinds.ROTATION].reshape(3, 3)
    p = R.transpose(0, 1) @ (xv - row[kinds.CENTER])
    prm = row[kinds.PARAMS]
    d = torch.zeros_like(p[0])
    for kind in kinds.KERNEL_KINDS:
        d = torch.where(row[kinds.KIND] == kind.code, kind.distance(p, prm), d)
    return d


def table_from_lists(n, spheres=None, boxes=None, obbs=None, device=None):
    """The collider table [n,K,18] of the old per-kind lists (``metaphys.colliders.from_lists``)."""
    parts = kinds.from_lists(spheres, boxes, obbs, xp=torch)
    if not parts:
        return torch.zeros(n, 0, kinds.WIDTH, dtype=torch.float64, device=device)
    return torch.cat(parts, 1).contiguous()


def sphere_sdf(x, spheres):
    """Signed distance [N,S,H,W] of positions x [N,3,H,W] to spheres [N,S,4] (table kind "sphere")."""
    return collider_sdf(x, table_from_lists(x.shape[0], spheres=spheres))


def box_sdf(x, boxes):
    """Signed distance [N,B,H,W] of positions x [N,3,H,W] to axis-aligned boxes [N,B,6] (kind "box")."""
    return collider_sdf(x, table_from_lists(x.shape[0], boxes=boxes))


def oriented_box_sdf(x, obbs):
    """Signed distance [N,K,H,W] of positions x [N,3,H,W] to oriented boxes [N,K,15] = (center 3,
    half extents 3, rotation 9: the row-major local-to-world matrix R): kind "box" with a rotation."""
    return collider_sdf(x, table_from_lists(x.shape[0], obbs=obbs))


def contact_energy(x, table, margin):
    """Per-vertex penalty sum_colliders max(0, margin - sdf)^3, [N,H,W] (padding rows and mesh rows
    skipped). Cubic, not quadratic: its second derivative is continuous where contact starts, so
    Newton's method does not chatter between contact sets."""
    total = x.new_zeros(x.shape[0], x.shape[2], x.shape[3])
    if table.shape[1] == 0:
        return total
    pen = (margin.view(-1, 1, 1, 1) - collider_sdf(x, table)).clamp_min(0.0)
    return total + (pen ** 3).sum(1)


# Friction (lagged, as in IPC-style solvers): in each step a vertex that touched a collider at the
# start of the step feels mu * lambda * f(|T dx|), lambda its normal contact force then, T the
# tangent projection of that contact's normal, dx its displacement over the step. f is |s| beyond
# FRICTION_SLIP and a C^1 cubic below it (static friction within FRICTION_SLIP edge lengths/step).
FRICTION_SLIP = 1e-3


def tangential_slip(x_new, x_old, nrm):
    """(t [N,3,H,W], |t|^2 [N,H,W]): each vertex's displacement over the step without its part along
    its lagged contact normal ``nrm`` [N,3,H,W] -- what friction resists."""
    dx = x_new - x_old
    t = dx - (dx * nrm).sum(1, keepdim=True) * nrm
    return t, (t * t).sum(1)


def friction_energy(x_new, x_old, friction):
    """Per-vertex lagged friction potential [N,H,W]; ``friction`` [N,4,H,W] = (mu * lambda, normal)."""
    w = friction[:, 0]
    _, s2 = tangential_slip(x_new, x_old, friction[:, 1:4])
    eps = FRICTION_SLIP
    slow = s2 < eps * eps
    s_fast = torch.sqrt(torch.where(slow, torch.full_like(s2, eps * eps), s2))   # no sqrt(0) in any gradient
    s3 = s2.clamp_min(0.0).pow(1.5)
    f = torch.where(slow, -s3 / (3 * eps * eps) + s2 / eps + eps / 3, s_fast)
    return w * f


def plane_distance(x, planes):
    """Signed distance [N,1,H,W] of each vertex to its own contact plane; ``planes`` [N,8,H,W] =
    (point 3, unit normal 3, active 1, friction 1): the lagged linearization of a mesh collider
    (sims.cloth finds each vertex's closest point on the mesh once per step)."""
    return ((x - planes[:, 0:3]) * planes[:, 3:6]).sum(1, keepdim=True)


def extra_terms(a, fields) -> torch.Tensor:
    """The terms the compiled kernel does not have, per sample [N]: penalty contact with mesh
    colliders' contact planes, lagged friction and self-collision pairs (plain PyTorch: the same
    code on every device)."""
    n, _, h, w = a.shape
    hw = float(h * w)
    total = a.new_zeros(n)
    if not has_extra_terms(fields):
        return total
    friction, planes = fields.get("friction"), fields.get("planes")
    x_new, _ = cloth_state(a, fields["x_old"], fields["v_old"], fields["pin_w"], fields["pin_x"], fields["dt"])
    free = (fields["pin_w"] != 1).to(a.dtype)[:, 0]
    m = fields["margin"].view(-1, 1, 1, 1)
    kc = fields["k_contact"]
    if planes is not None and bool((planes[:, 6] != 0).any()):
        pen = (m - plane_distance(x_new, planes)).clamp_min(0.0)[:, 0]
        total = total + kc * (free * planes[:, 6] * pen ** 3).flatten(1).sum(1) / hw
    if friction is not None:
        total = total + (free * friction_energy(x_new, fields["x_old"], friction)).flatten(1).sum(1)
    pairs = fields.get("self_pairs")
    if pairs is not None and pairs.shape[1] > 0:
        pen, _, _ = _pair_penetration(x_new, pairs, fields["self_distance"])
        total = total + kc * (pen ** 3).sum(1) / hw
    return total


# at most this many broad-phase candidates per check: beyond it the step is checked in halves
MAX_BROAD_PAIRS = 400_000


def swept_pairs(x0, x1, reach: float, cols: int):
    """Vertex pairs [K,2] (i < j, not grid neighbours) whose straight paths x0 -> x1
    ([P,3] numpy) come within ``reach`` of each other at some common time in [0, 1]; None when the
    broad phase (a k-d tree on the paths' midpoints, radius = half the longest path + reach) finds
    more than MAX_BROAD_PAIRS candidates."""
    import numpy as np
    from scipy.spatial import cKDTree

    mid, half = 0.5 * (x0 + x1), 0.5 * np.linalg.norm(x1 - x0, axis=1)
    tree = cKDTree(mid)
    cand = tree.query_pairs(reach + 2.0 * float(half.max()), output_type="ndarray")
    if len(cand) > MAX_BROAD_PAIRS:
        return None
    if len(cand) == 0:
        return cand.reshape(0, 2)
    i, j = cand[:, 0], cand[:, 1]
    far = (np.abs(i // cols - j // cols) > 1) | (np.abs(i % cols - j % cols) > 1)
    i, j = i[far], j[far]
    p0 = x0[i] - x0[j]
    dp = (x1[i] - x1[j]) - p0
    t = np.clip(-(p0 * dp).sum(1) / np.maximum((dp * dp).sum(1), 1e-300), 0.0, 1.0)
    closest = np.linalg.norm(p0 + t[:, None] * dp, axis=1)
    keep = closest <= reach
    return np.stack([i[keep], j[keep]], 1)


def _merge_pairs(pairs, found, x0, distance: float, hw: int):
    """The sorted union [K,2] of the current pairs (tensor [P,2]) and the broad phase's ``found``
    ([F,2] numpy) that start outside ``distance`` at x0 ([3, hw]), or None when none is new. Pairs are
    compared as 1-D keys i * hw + j (torch.unique over rows sorted them lexicographically: 94 ms a
    call at 48^2, a sixth of the fold's frame; the keys give the same sorted order)."""
    import numpy as np

    found = np.asarray(found)
    p0 = x0[:, found[:, 0]] - x0[:, found[:, 1]]
    outside = ((p0 * p0).sum(0) >= distance * distance).cpu().numpy()
    old = pairs.cpu().numpy()
    key_old = old[:, 0].astype(np.int64) * hw + old[:, 1]
    key_new = found[outside, 0].astype(np.int64) * hw + found[outside, 1]
    if np.isin(key_new, key_old).all():
        return None
    keys = np.union1d(key_old, key_new)
    return np.stack([keys // hw, keys % hw], 1)


def _pair_penetration(x, pairs, distance):
    """Self-collision pairs [N,P,2] (flat vertex indices, -1 = padding): (penetration [N,P] =
    max(0, distance - |x_i - x_j|), unit direction i <- j [N,3,P], |x_i - x_j| [N,P])."""
    n = x.shape[0]
    flat = x.reshape(n, 3, -1)
    valid = pairs[..., 0] >= 0
    i, j = pairs[..., 0].clamp_min(0), pairs[..., 1].clamp_min(0)
    d = torch.gather(flat, 2, i.unsqueeze(1).expand(n, 3, -1)) - torch.gather(flat, 2, j.unsqueeze(1).expand(n, 3, -1))
    r = torch.sqrt((d * d).sum(1) + 1e-300)
    pen = torch.where(valid, (distance.view(-1, 1) - r).clamp_min(0.0), torch.zeros_like(r))
    return pen, d / r.unsqueeze(1), r


def extra_terms_and_grad(a, fields):
    """(loss [N], d loss / d a [N,3,H,W]) of ``extra_terms``: closed forms for the contact planes
    and friction (the hot path of mesh colliders: 2x cheaper than autograd) and the self pairs. The
    gradient is w.r.t. a on free vertices (x_new = x_old + dt v_old + dt^2 a there)."""
    n, _, h, w = a.shape
    hw = float(h * w)
    friction, planes = fields.get("friction"), fields.get("planes")
    loss, grad_x = a.new_zeros(n), torch.zeros_like(a)
    x_new, _ = cloth_state(a, fields["x_old"], fields["v_old"], fields["pin_w"], fields["pin_x"], fields["dt"])
    free = (fields["pin_w"] != 1).to(a.dtype)            # [N,1,H,W]
    m = fields["margin"].view(-1, 1, 1, 1)
    kc = fields["k_contact"].view(-1, 1, 1, 1)
    if planes is not None and bool((planes[:, 6] != 0).any()):
        act = planes[:, 6:7] * free
        pen = (m - plane_distance(x_new, planes)).clamp_min(0.0)
        loss = loss + (kc * act * pen ** 3).flatten(1).sum(1) / hw
        grad_x = grad_x - (3.0 / hw) * kc * act * pen ** 2 * planes[:, 3:6]
    if friction is not None and bool((friction[:, 0] != 0).any()):
        wgt = friction[:, 0:1] * free
        t, s2 = tangential_slip(x_new, fields["x_old"], friction[:, 1:4])
        s2 = s2.unsqueeze(1)
        eps = FRICTION_SLIP
        slow = s2 < eps * eps
        s = torch.sqrt(torch.where(slow, torch.full_like(s2, eps * eps), s2))
        s_lo = torch.sqrt(s2.clamp_min(0.0))
        f = torch.where(slow, -s2 * s_lo / (3 * eps * eps) + s2 / eps + eps / 3, s)
        df_over_s = torch.where(slow, -s_lo / (eps * eps) + 2.0 / eps, 1.0 / s)   # f'(s) / s, smooth at 0
        loss = loss + (wgt * f).flatten(1).sum(1)
        grad_x = grad_x + wgt * df_over_s * t
    pairs = fields.get("self_pairs")
    if pairs is not None and pairs.shape[1] > 0:   # self-collision: a cubic repulsion per close pair
        pen, u, _ = _pair_penetration(x_new, pairs, fields["self_distance"])
        loss = loss + kc.view(-1) * (pen ** 3).sum(1) / hw
        force = (-3.0 / hw) * kc.view(-1, 1, 1) * pen.unsqueeze(1) ** 2 * u      # d E / d x_i, [N,3,P]
        flat = grad_x.reshape(n, 3, -1)
        flat.scatter_add_(2, pairs[..., 0].clamp_min(0).unsqueeze(1).expand(n, 3, -1), force)
        flat.scatter_add_(2, pairs[..., 1].clamp_min(0).unsqueeze(1).expand(n, 3, -1), -force)
        grad_x = flat.view_as(grad_x)
    dt2 = (fields["dt"] ** 2).view(-1, 1, 1, 1)
    return loss, dt2 * free * grad_x


def _project_psd_3x3(blocks):
    """Blocks [..., 3, 3] (symmetric) with their negative eigenvalues set to 0."""
    vals, vecs = torch.linalg.eigh(blocks)
    return (vecs * vals.clamp_min(0.0).unsqueeze(-2)) @ vecs.transpose(-1, -2)


def _friction_curvature(x_new, x_old, friction):
    """Position-space Hessian blocks [N,3,3,H,W] of the lagged friction potential w f(|t|), t the
    tangential displacement: (exact, majorizer). Exact: f'/s P + (f'' - f'/s) t^ t^T (P = I - n n^T);
    along a sliding vertex's slip direction it is ~0 (f is |s| there), so a Newton step from a sliding
    vertex that should stick overshoots through the cone's tip and the line search halves it again
    and again. Majorizer: f'/s P, the Hessian of the quadratic that touches w f at the current slip
    and lies above it everywhere (f'/s >= f'' for this f: iteratively reweighted least squares), so
    each step lowers the friction energy; PSD either way."""
    wgt, nrm = friction[:, 0], friction[:, 1:4]
    t, s2 = tangential_slip(x_new, x_old, nrm)
    eps = FRICTION_SLIP
    slow = s2 < eps * eps
    s = torch.sqrt(s2.clamp_min(0.0))
    s_safe = torch.where(s > 0, s, torch.ones_like(s))
    d1s = torch.where(slow, -s / (eps * eps) + 2.0 / eps, 1.0 / s_safe)              # f'(s)/s
    d2 = torch.where(slow, -2.0 * s / (eps * eps) + 2.0 / eps, torch.zeros_like(s))  # f''(s)
    th = t / s_safe.unsqueeze(1)
    eye = torch.eye(3, dtype=x_new.dtype, device=x_new.device).view(1, 3, 3, 1, 1)
    P = eye - nrm[:, :, None] * nrm[:, None, :]
    majorizer = (wgt * d1s)[:, None, None] * P
    exact = majorizer + (wgt * (d2 - d1s))[:, None, None] * th[:, :, None] * th[:, None, :]
    return exact, majorizer


def friction_majorizer_blocks(a, fields):
    """a-space blocks [N,3,3,H,W] that turn the friction's exact Hessian into its majorizer (PSD:
    (f'/s - f'') t^ t^T dt^4 on free vertices in friction contact), or None without friction. Added
    to Newton's Hessian (both Hessian paths): the gradient, and so the converged answer, is unchanged."""
    friction = fields.get("friction")
    if friction is None or not bool((friction[:, 0] != 0).any()):
        return None
    x_new, _ = cloth_state(a, fields["x_old"], fields["v_old"], fields["pin_w"], fields["pin_x"], fields["dt"])
    exact, majorizer = _friction_curvature(x_new, fields["x_old"], friction)
    free = (fields["pin_w"] != 1).to(a.dtype)[:, 0]
    return (fields["dt"] ** 4).view(-1, 1, 1, 1, 1) * free[:, None, None] * (majorizer - exact)


def extra_hessian_blocks(a, fields, project: bool = False):
    """Per-vertex Hessian blocks [N,3,3,H,W] w.r.t. a of the local ``extra_terms`` (mesh contact planes,
    lagged friction; not the self-collision pairs, which couple far vertices): each of these terms
    depends on one vertex only. Closed forms for the planes (6 k pen n n^T) and friction (both PSD).
    ``project``: every block made PSD."""
    n, _, h, w = a.shape
    hw = float(h * w)
    out = a.new_zeros(n, 3, 3, h, w)
    friction, planes = fields.get("friction"), fields.get("planes")
    x_new, _ = cloth_state(a, fields["x_old"], fields["v_old"], fields["pin_w"], fields["pin_x"], fields["dt"])
    free = (fields["pin_w"] != 1).to(a.dtype)[:, 0]                     # [N,H,W]
    m = fields["margin"].view(-1, 1, 1, 1)
    kc = fields["k_contact"].view(-1, 1, 1)
    hx = a.new_zeros(n, 3, 3, h, w)                                     # x-space
    if planes is not None and bool((planes[:, 6] != 0).any()):
        pen = (m - plane_distance(x_new, planes)).clamp_min(0.0)[:, 0]
        c = 6.0 / hw * kc * planes[:, 6] * pen
        nrm = planes[:, 3:6]
        hx = hx + c[:, None, None] * nrm[:, :, None] * nrm[:, None, :]
    if friction is not None and bool((friction[:, 0] != 0).any()):
        hx = hx + _friction_curvature(x_new, fields["x_old"], friction)[0]
    dt4 = (fields["dt"] ** 4).view(-1, 1, 1, 1, 1)
    out = dt4 * free[:, None, None] * hx
    if project:
        out = _project_psd_3x3(out.permute(0, 3, 4, 1, 2)).permute(0, 3, 4, 1, 2)
    return out


_EXTRA_TERMS_SEEN: list = [None]   # (friction, planes, their versions, answer) of the last fields asked about


def has_extra_terms(fields) -> bool:
    """Whether the fields switch on a term the compiled kernel lacks (friction, mesh planes, self pairs).
    Asked several times per Newton iteration with the same tensors: the answer is kept for them (the
    same objects, not changed in place since) instead of reduced again (0.17 ms a call at 32^2)."""
    friction, planes = fields.get("friction"), fields.get("planes")
    pairs = fields.get("self_pairs")
    if pairs is not None and pairs.shape[1] > 0:
        return True
    versions = (None if friction is None else friction._version, None if planes is None else planes._version)
    seen = _EXTRA_TERMS_SEEN[0]
    if seen is not None and seen[0] is friction and seen[1] is planes and seen[2] == versions:
        return seen[3]
    answer = ((friction is not None and bool((friction[:, 0] != 0).any()))
              or (planes is not None and bool((planes[:, 6] != 0).any())))
    _EXTRA_TERMS_SEEN[0] = (friction, planes, versions, answer)
    return answer


def cloth_terms(a, x_old, v_old, pin_w, pin_x, colliders, gravity, wind, rest, k_stretch, k_shear,
                k_bend, mass, damping, k_pin, k_contact, margin, dt, smooth: bool = False):
    """All loss terms per sample [N] (differentiable w.r.t. a), see the module docstring."""
    n, _, h, w = a.shape
    hw = float(h * w)
    x_new, v_new = cloth_state(a, x_old, v_old, pin_w, pin_x, dt)
    stretch, shear, bend = internal_energies(x_new, rest, k_stretch, k_shear, k_bend, smooth=smooth)
    free = (pin_w != 1).to(a.dtype)[:, 0]  # [N,H,W]
    A = lumped_weights(h, w, device=a.device)[:, 0]
    M = mass.view(-1, 1, 1) * A
    dt2 = (dt * dt).view(-1, 1, 1)
    inert = (0.5 * dt2 * free * M * _dot(a, a)).flatten(1).sum(1) / hw
    force = M[:, None] * gravity[:, :, None, None] + A[:, None] * wind[:, :, None, None]
    ext = (-dt2 * free * _dot(force, a)).flatten(1).sum(1) / hw
    damp = (0.5 * (damping * dt).view(-1, 1, 1) * free * M * _dot(v_new, v_new)).flatten(1).sum(1) / hw
    soft = free * pin_w[:, 0]
    pin = k_pin * (soft * _dot(x_new - pin_x, x_new - pin_x)).flatten(1).sum(1) / hw
    contact = k_contact * (free * contact_energy(x_new, colliders, margin)).flatten(1).sum(1) / hw
    return {"stretch": stretch, "shear": shear, "bend": bend, "inertia": inert, "external": ext,
            "damping": damp, "pin": pin, "contact": contact}


def cloth_twin(a, x_old, v_old, pin_w, pin_x, colliders, gravity, wind, rest, k_stretch, k_shear, k_bend,
               mass, damping, k_pin, k_contact, margin, dt):
    """PyTorch twin of the ``cloth_loss_grad`` kernel: (loss [N], true grad [N,3,H,W])."""
    with torch.enable_grad():
        aa = a.detach().requires_grad_(True)
        t = cloth_terms(aa, x_old, v_old, pin_w, pin_x, colliders, gravity, wind, rest, k_stretch, k_shear,
                        k_bend, mass, damping, k_pin, k_contact, margin, dt)
        loss = sum(t.values())
        (grad,) = torch.autograd.grad(loss.sum(), aa)
    return loss.detach(), grad


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def _check_vec3(name, t, n, device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float64:
        raise TypeError(f"{name} must be torch.float64 (physics runs in float64), got {t.dtype}")
    if tuple(t.shape) != (n, 3):
        raise ValueError(f"{name} must have shape ({n}, 3) (one 3-vector per sample), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the unknown is on {device}; put all inputs on one device")
    checks.check_finite(name, t)


def _check_colliders(name, t, n, width, device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float64:
        raise TypeError(f"{name} must be torch.float64, got {t.dtype}")
    if t.dim() != 3 or t.shape[0] != n or t.shape[2] != width:
        raise ValueError(f"{name} must have shape ({n}, K, {width}), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the unknown is on {device}; put all inputs on one device")
    checks.check_finite(name, t)
    if bool((t[:, :, 3:min(width, 6)] < 0).any()):
        what = "radius" if width == 4 else "half extents"
        raise ValueError(f"{name}: {what} must be >= 0 (0 marks an unused padding entry)")
    if width == 15 and t.shape[1] > 0:   # oriented boxes: the rotation must be one
        R = t[:, :, 6:15].reshape(-1, 3, 3)
        eye = torch.eye(3, dtype=t.dtype, device=t.device)
        if bool(((R @ R.transpose(1, 2) - eye).abs() > 1e-6).any()) or bool((torch.linalg.det(R) < 0).any()):
            raise ValueError(f"{name}: entries 6..14 must be a rotation matrix (orthonormal, det +1)")


def check_collider_table(name, t, n, device):
    """The collider table [n,K,18]: float64, finite, known kind codes, a rotation on every row that
    is one, each kind's parameters > 0 (``metaphys.colliders``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float64:
        raise TypeError(f"{name} must be torch.float64, got {t.dtype}")
    if t.dim() != 3 or t.shape[0] != n or t.shape[2] != kinds.WIDTH:
        raise ValueError(f"{name} must have shape ({n}, K, {kinds.WIDTH}) (metaphys.colliders: kind, rotation 9, "
                         f"centre 3, parameters 4, friction), got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the unknown is on {device}; put all inputs on one device")
    checks.check_finite(name, t)
    if t.shape[1] == 0:
        return
    code = t[..., kinds.KIND]
    known = code == kinds.NONE
    for kind in kinds.KINDS:
        sel = code == kind.code
        known = known | sel
        used = sum(p.size for p in kind.params)
        if used and bool((sel & (t[..., kinds.PARAMS][..., :used] <= 0).any(-1)).any()):
            raise ValueError(f"{name}: the parameters of a {kind.name} row ({', '.join(p.name for p in kind.params)}) "
                             f"must be > 0")
    if not bool(known.all()):
        raise ValueError(f"{name}: unknown kind code(s) {sorted(set(code[~known].tolist()))}; the kinds are "
                         + ", ".join(f"{k.code} = {k.name}" for k in kinds.KINDS) + f", {kinds.NONE} = unused")
    R = t[..., kinds.ROTATION].reshape(-1, 3, 3)[(code != kinds.NONE).reshape(-1)]
    eye = torch.eye(3, dtype=t.dtype, device=t.device)
    if R.shape[0] and (bool(((R @ R.transpose(1, 2) - eye).abs() > 1e-6).any()) or bool((torch.linalg.det(R) < 0).any())):
        raise ValueError(f"{name}: columns 1..9 must be a rotation matrix (orthonormal, det +1)")


def validate_cloth_inputs(a, x_old, v_old, pin_w, pin_x, colliders, gravity, wind, params: dict) -> None:
    """Shapes, dtypes, devices, finiteness, pin weights in [0, 1], parameter signs."""
    checks.check_field("a", a)
    n, c, h, w = a.shape
    if c != 3:
        raise ValueError(f"a must have 3 channels (x, y, z), got shape {tuple(a.shape)}")
    if h < 2 or w < 2:
        raise ValueError(f"cloth grid must be at least 2x2 vertices, got {h}x{w}")
    dev = a.device
    for name, t, ch in (("x_old", x_old, 3), ("v_old", v_old, 3), ("pin_w", pin_w, 1), ("pin_x", pin_x, 3)):
        checks.check_field(name, t, shape=(n, ch, h, w), device=dev)
        checks.check_finite(name, t)
    if bool(((pin_w < 0) | (pin_w > 1)).any()):
        raise ValueError(f"pin_w must lie in [0, 1] (1 = hard pin, 0 = free), got range "
                         f"[{float(pin_w.min())}, {float(pin_w.max())}]")
    check_collider_table("colliders", colliders, n, dev)
    _check_vec3("gravity", gravity, n, dev)
    _check_vec3("wind", wind, n, dev)
    for name in PARAM_NAMES:
        t = params[name]
        checks.batch_param(name, t, n, device=dev, positive=name in ("rest", "mass", "dt"),
                           nonnegative=name not in ("rest", "mass", "dt"))


def _vec3(name, value, n, device):
    t = torch.as_tensor(value, dtype=torch.float64, device=device)
    if t.dim() == 1 and t.shape[0] == 3:
        t = t.expand(n, 3)
    if tuple(t.shape) != (n, 3):
        raise ValueError(f"{name} must be a 3-vector or have shape ({n}, 3), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return t.contiguous()


def _colliders(name, value, n, width, device):
    if value is None:
        return torch.zeros(n, 0, width, dtype=torch.float64, device=device)
    t = torch.as_tensor(value, dtype=torch.float64, device=device)
    if t.dim() == 2 and t.shape[1] == width:
        t = t.unsqueeze(0).expand(n, -1, -1)
    _check_colliders(name, t, n, width, device)
    return t.contiguous()


def _collider_table(table, spheres, boxes, obbs, n, device):
    """The problem's collider table [n,K,18]: ``table`` ([K,18] for all samples, or [n,K,18]) then
    the rows of the old per-kind lists (each checked as before: shapes, radius / half extents >= 0)."""
    parts = []
    if table is not None:
        t = torch.as_tensor(table, dtype=torch.float64, device=device)
        if t.dim() == 2 and t.shape[1] == kinds.WIDTH:
            t = t.unsqueeze(0).expand(n, -1, -1)
        check_collider_table("colliders", t, n, device)
        parts.append(t)
    lists = {name: None if value is None else _colliders(name, value, n, width, device)
             for name, value, width in (("spheres", spheres, 4), ("boxes", boxes, 6), ("obbs", obbs, 15))}
    if any(v is not None and v.shape[1] for v in lists.values()):
        parts.append(table_from_lists(n, lists["spheres"], lists["boxes"], lists["obbs"], device=device))
    if not parts:
        return torch.zeros(n, 0, kinds.WIDTH, dtype=torch.float64, device=device)
    out = torch.cat(parts, 1).contiguous()
    check_collider_table("colliders", out, n, device)
    return out


def contact_curvature(x, table, margin, pin_w):
    """The curvature of every contact of sample 0: (flat vertex indices [M] (numpy), pen^2 Hess(d)
    [M,3,3] (numpy, world frame)) over the (free vertex, table row) pairs within the margin, the
    distance's Hessian by autograd on the registry's distance; None without
    contact. x [1,3,H,W] positions, table [1,K,18], margin [1], pin_w [1,1,H,W]."""
    if table.shape[1] == 0:
        return None
    import numpy as np
    with torch.no_grad():
        d = collider_sdf(x, table)[0]                                       # [K,H,W]
        pen = (float(margin[0]) - d).clamp_min(0.0)
        free = (pin_w[0, 0] != 1)
        hit = (pen > 0) & free[None]
        if not bool(hit.any()):
            return None
        q, i, j = torch.nonzero(hit, as_tuple=True)
        rows = table[0][q]                                                  # [M,18]
        R = rows[:, kinds.ROTATION].reshape(-1, 3, 3)
    present = [kind for kind in kinds.KERNEL_KINDS if bool((rows[:, kinds.KIND] == kind.code).any())]
    if all(kind.distance_hessian is not None for kind in present):   # closed forms: no autograd
        with torch.no_grad():
            p = torch.einsum("mji,mj->mi", R, x[0][:, i, j].T - rows[:, kinds.CENTER])
            Hl = torch.zeros(p.shape[0], 3, 3, dtype=p.dtype, device=p.device)
            for kind in present:
                sel = (rows[:, kinds.KIND] == kind.code)[:, None, None]
                Hl = torch.where(sel, kind.distance_hessian(p, rows[:, kinds.PARAMS]), Hl)
            Hd = R @ Hl @ R.transpose(1, 2)                                  # the collider's frame -> world
            blocks = pen[q, i, j].pow(2)[:, None, None] * Hd
        return (i * x.shape[3] + j).cpu().numpy().astype(np.int64), blocks.cpu().numpy()
    with torch.enable_grad():   # batched reverse mode over the M contacts (4 passes; torch.func's vmap: 20x slower)
        points = x[0][:, i, j].T.detach().clone().requires_grad_(True)     # [M,3]
        p = torch.einsum("mji,mj->mi", R, points - rows[:, kinds.CENTER])
        d = torch.zeros_like(p[:, 0])
        for kind in kinds.KERNEL_KINDS:
            d = torch.where(rows[:, kinds.KIND] == kind.code, kind.distance(p, rows[:, kinds.PARAMS]), d)
        (g,) = torch.autograd.grad(d.sum(), points, create_graph=True)
        Hd = torch.stack([torch.autograd.grad(g[:, r].sum(), points, retain_graph=r < 2, allow_unused=True)[0]
                          if g.requires_grad else torch.zeros_like(points) for r in range(3)], 1)
    with torch.no_grad():
        Hd = torch.nan_to_num(0.5 * (Hd + Hd.transpose(1, 2)))
        blocks = pen[q, i, j].pow(2)[:, None, None] * Hd
    w = x.shape[3]
    return (i * w + j).cpu().numpy().astype(np.int64), blocks.cpu().numpy()


# --------------------------------------------------------------------------------------------
# problem
# --------------------------------------------------------------------------------------------

class ClothProblem(Problem):
    """One backward-Euler step of a spring-mass cloth for N samples; unknown = acceleration [N,3,H,W].

    Fields: x_old, v_old [N,3,H,W]; pin_w [N,1,H,W]; pin_x [N,3,H,W]; colliders [N,K,18] (the
    collider table, ``metaphys.colliders``); gravity, wind [N,3]; and the per-sample [N] parameters
    rest, k_stretch, k_shear, k_bend, mass, damping, k_pin, k_contact, margin, dt. Scalars broadcast
    to [N]; 3-vectors to [N,3]; a single table [K,18] to all samples. ``spheres`` [S,4] / [N,S,4]
    (cx, cy, cz, r) and axis-aligned ``boxes`` [B,6] / [N,B,6] (cx, cy, cz, hx, hy, hz) are still
    taken: they become table rows after ``colliders``' (r == 0 / zero half extents: unused). Defaults
    for the pins: no pins (w = 0) with targets = x_old.
    """

    op_name = "cloth_loss_grad"
    channels = 3
    time_dependent = True
    divergence_threshold = 2e4
    twin = staticmethod(cloth_twin)

    def __init__(self, x_old, *, v_old=None, pin_w=None, pin_x=None, colliders=None, spheres=None, boxes=None,
                 gravity=(0.0, 0.0, -1.0), wind=(0.0, 0.0, 0.0), rest=1.0, k_stretch=1000.0, k_shear=10.0,
                 k_bend=0.01, mass=1.0, damping=0.0, k_pin=1000.0, k_contact=1000.0, margin=0.05, dt=1.0):
        checks.check_field("x_old", x_old)
        n, c, h, w = x_old.shape
        if c != 3:
            raise ValueError(f"x_old must have 3 channels (x, y, z), got shape {tuple(x_old.shape)}")
        dev = x_old.device
        like1 = x_old[:, :1]
        v_old = checks.as_field("v_old", v_old, like1, 3)
        pin_w = checks.as_field("pin_w", pin_w, like1, 1)
        pin_x = x_old.clone() if pin_x is None else checks.as_field("pin_x", pin_x, like1, 3)
        values = dict(rest=rest, k_stretch=k_stretch, k_shear=k_shear, k_bend=k_bend, mass=mass, damping=damping,
                      k_pin=k_pin, k_contact=k_contact, margin=margin, dt=dt)
        params = {}
        for name in PARAM_NAMES:
            params[name] = checks.batch_param(name, values[name], n, device=dev,
                                              positive=name in ("rest", "mass", "dt"),
                                              nonnegative=name not in ("rest", "mass", "dt"))
        fields = {"x_old": x_old.contiguous(), "v_old": v_old, "pin_w": pin_w, "pin_x": pin_x,
                  "colliders": _collider_table(colliders, spheres, boxes, None, n, dev),
                  "gravity": _vec3("gravity", gravity, n, dev), "wind": _vec3("wind", wind, n, dev)}
        fields.update(params)
        fields["friction"] = torch.zeros(n, 4, h, w, dtype=torch.float64, device=dev)
        fields["planes"] = torch.zeros(n, 8, h, w, dtype=torch.float64, device=dev)
        fields["self_pairs"] = torch.zeros(n, 0, 2, dtype=torch.long, device=dev)
        fields["self_distance"] = torch.zeros(n, dtype=torch.float64, device=dev)
        validate_cloth_inputs(torch.zeros_like(fields["x_old"]), fields["x_old"], v_old, pin_w, pin_x,
                              fields["colliders"], fields["gravity"], fields["wind"], params)
        hard = (pin_w == 1).to(torch.float64)
        fields["x_old"] = hard * pin_x + (1 - hard) * fields["x_old"]
        fields["v_old"] = (1 - hard) * v_old
        super().__init__(fields)

    @property
    def shape(self):
        return tuple(self.fields["x_old"].shape)

    # the kernel's terms plus the ones it does not have (mesh planes, friction, self pairs: extra_terms)
    def loss_and_grad(self, u):
        loss, grad = super().loss_and_grad(u)
        if not has_extra_terms(self.fields):
            return loss, grad
        extra, g = extra_terms_and_grad(u, self.fields)
        return loss + extra, grad + g

    def loss(self, u):
        out = super().loss(u)
        return out + extra_terms(u, self.fields) if has_extra_terms(self.fields) else out

    def op_args(self):
        fl = self.fields
        return (fl["x_old"], fl["v_old"], fl["pin_w"], fl["pin_x"], fl["colliders"], fl["gravity"],
                fl["wind"]) + tuple(fl[k] for k in PARAM_NAMES)

    def impose(self, u):
        return (self.fields["pin_w"] != 1).to(u.dtype) * u  # a of hard-pinned vertices is unused: keep 0

    def displacement(self, step) -> float:
        """Sample 0's largest vertex move caused by the change ``step`` of the unknown (an
        acceleration), in model lengths: mean rest edge lengths (x_new = x_old + dt v_old + dt^2 a).
        Newton's step-size stop (``NewtonSolver(step_tol=...)``) measures its error estimate with it."""
        dt2 = float(self.fields["dt"][0]) ** 2
        return dt2 * float(step[0].norm(dim=0).max())

    def initial_guess(self):
        return torch.zeros(self.shape, dtype=torch.float64, device=self.device)

    def residual_from(self, loss, grad):
        """The loss (an energy) can be negative; the residual is the gradient's RMS per sample."""
        return grad.flatten(1).norm(dim=1) / math.sqrt(grad[0].numel())

    def state(self, a):
        """(x_new, v_new) for acceleration a."""
        fl = self.fields
        return cloth_state(a, fl["x_old"], fl["v_old"], fl["pin_w"], fl["pin_x"], fl["dt"])

    def advance(self, a):
        """x_old, v_old <- x_new, v_new (hard pins: x = target, v = 0); warm start a = 0."""
        x_new, v_new = self.state(a.detach())
        self.fields["x_old"], self.fields["v_old"] = x_new.contiguous(), v_new.contiguous()
        return self.initial_guess()

    def set_pins(self, pin_w=None, pin_x=None) -> None:
        """New pin weights and/or targets for the coming step (targets may move every frame)."""
        fl = self.fields
        like1 = fl["x_old"][:, :1]
        if pin_w is not None:
            pin_w = checks.as_field("pin_w", pin_w, like1, 1)
            checks.check_finite("pin_w", pin_w)
            if bool(((pin_w < 0) | (pin_w > 1)).any()):
                raise ValueError("pin_w must lie in [0, 1] (1 = hard pin, 0 = free)")
            fl["pin_w"] = pin_w
        if pin_x is not None:
            pin_x = checks.as_field("pin_x", pin_x, like1, 3)
            checks.check_finite("pin_x", pin_x)
            fl["pin_x"] = pin_x

    def set_colliders(self, colliders=None, *, spheres=None, boxes=None, obbs=None) -> None:
        """Replace the collider table (moving colliders: a new table each step): ``colliders`` [K,18]
        or [N,K,18] (``metaphys.colliders``), and/or the old per-kind lists -- ``spheres`` [S,4],
        axis-aligned ``boxes`` [B,6], ``obbs`` [O,15] (centre, half extents, row-major rotation) --
        whose rows follow the table's. Everything not given is gone: the table is the whole list."""
        self.fields["colliders"] = _collider_table(colliders, spheres, boxes, obbs, self.batch, self.device)

    def collider_distances(self, x):
        """(signed distance [N,K,H,W], friction [N,K]) of positions x to every row of the collider
        table; +inf for rows without a table distance (padding; mesh rows: their planes)."""
        table = self.fields["colliders"]
        return collider_sdf(x, table), table[..., kinds.FRICTION]

    def set_self_pairs(self, pairs, distance: float) -> None:
        """The vertex pairs [P,2] (flat indices) that may touch in the coming step and the distance
        (model units) they are kept apart: the cloth's self-collision, a cubic repulsion per pair."""
        n = self.batch
        pairs = torch.as_tensor(pairs, dtype=torch.long, device=self.device).reshape(-1, 2)
        hw = self.shape[2] * self.shape[3]
        if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= hw):
            raise ValueError(f"self-collision pairs must index vertices 0..{hw - 1}")
        self.fields["self_pairs"] = pairs.unsqueeze(0).expand(n, -1, -1).contiguous()
        self.fields["self_distance"] = torch.full((n,), float(distance), dtype=torch.float64, device=self.device)

    # self-collision's hard limit: no pair closer than this fraction of the collision distance, so a
    # vertex cannot pass through a quad of the other layer (its centre is 0.707 edges from the corners)
    SELF_HARD_FRACTION = 0.75

    def max_step(self, a, step) -> float:
        """The largest alpha in [0, 1] such that moving from a to a + alpha * step keeps every pair
        of cloth vertices at least SELF_HARD_FRACTION * distance apart along the whole straight path
        (continuous collision detection), times 0.9; 1 without self-collision. Every pair is checked
        (a broad phase over the step's swept segments): pairs the step brings within 1.5 distances
        join the self-collision pairs (they are added only while still outside the distance, where
        their energy is 0, so the loss at ``a`` does not change)."""
        fl = self.fields
        dist = fl.get("self_distance")
        if dist is None or float(dist[0]) <= 0:
            return 1.0
        d = float(dist[0])
        h, w = self.shape[2], self.shape[3]
        x0 = self.state(a[:1])[0][0].reshape(3, -1)
        x1 = self.state((a + step)[:1])[0][0].reshape(3, -1)
        found = swept_pairs(x0.T.cpu().numpy(), x1.T.cpu().numpy(), 1.5 * d, w)
        if found is None:   # a step so large the broad phase explodes: check half of it
            return 0.5 * self.max_step(a, 0.5 * step)
        pairs = fl["self_pairs"][0]
        if len(found):
            merged = _merge_pairs(pairs, found, x0, d, h * w)
            if merged is not None:
                self.set_self_pairs(merged, d)
                pairs = fl["self_pairs"][0]
        if pairs.shape[0] == 0:
            return 1.0
        i, j = pairs[:, 0], pairs[:, 1]
        p0 = x0[:, i] - x0[:, j]
        dp = (x1[:, i] - x1[:, j]) - p0
        dmin = self.SELF_HARD_FRACTION * d
        A = (dp * dp).sum(0)
        B = 2.0 * (p0 * dp).sum(0)
        Cc = (p0 * p0).sum(0) - dmin * dmin
        disc = B * B - 4 * A * Cc
        # first time |p0 + t dp| = dmin for pairs that start outside and approach (B < 0)
        hits = (Cc > 0) & (B < 0) & (disc >= 0) & (A > 0)
        if not bool(hits.any()):
            return 1.0
        t = (-B[hits] - torch.sqrt(disc[hits])) / (2 * A[hits])
        return float(min(1.0, 0.9 * float(t.min()))) if bool((t < 1.0).any()) else 1.0

    def local_part(self):
        """This problem without the terms that couple vertices beyond the Hessian stencil (self-collision
        pairs), for the colored probes of ``optim.newton.sparse_hessian``."""
        pairs = self.fields.get("self_pairs")
        if pairs is None or pairs.shape[1] == 0:
            return self
        sub = copy.copy(self)
        sub.fields = dict(self.fields)
        sub.fields["self_pairs"] = pairs[:, :0]
        return sub

    # a rebuilt pattern holds the pairs within this many collision distances (not only the active
    # ones): the pairs about to touch, so a layer landing over a few Newton iterations does not
    # change the pattern (and redo PARDISO's analysis) at each of them
    PAIR_PATTERN_REACH = 1.25

    def _pair_curvature(self, a):
        """Sample 0's self-collision pairs [P,2] (numpy), their Hessian blocks [3,3,P] in a-space,
        6 k pen u u^T dt^4 / HW (0 for a pair outside its distance; the block of (i,i) and (j,j), minus it
        for (i,j) and (j,i)), and which pairs are within PAIR_PATTERN_REACH distances [P]; None without
        pairs."""
        pairs = self.fields.get("self_pairs")
        if pairs is None or pairs.shape[1] == 0:
            return None
        fl = self.fields
        hw = self.shape[2] * self.shape[3]
        x = self.state(a[:1])[0]
        pen, u, r = _pair_penetration(x, pairs[:1], fl["self_distance"][:1])
        c = 6.0 * float(fl["k_contact"][0]) / hw * pen[0] * float(fl["dt"][0]) ** 4
        near = (r[0] < self.PAIR_PATTERN_REACH * fl["self_distance"][0]).cpu().numpy()
        return pairs[0].cpu().numpy(), (c * u[0].unsqueeze(1) * u[0].unsqueeze(0)).cpu().numpy(), near

    @staticmethod
    def _pair_entries(pairs, hw: int):
        """Row and column indices [4,3,3,P] (a-space, (c, i, j) order) of the blocks (i,i), (j,j),
        (i,j), (j,i) of each pair [P,2]."""
        import numpy as np
        i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
        comp, shape = np.arange(3) * hw, (3, 3, len(i))
        blocks = ((i, i), (j, j), (i, j), (j, i))
        rows = np.stack([np.broadcast_to(comp[:, None, None] + p_, shape) for p_, _ in blocks])
        cols = np.stack([np.broadcast_to(comp[None, :, None] + q_, shape) for _, q_ in blocks])
        return rows, cols

    def nonlocal_hessian(self, a):
        """Sample 0's self-collision Hessian in a-space (scipy CSR, (c, i, j) order), PSD-projected:
        6 k pen u u^T per pair (the negative tangential part of the repulsion is left out); None
        when no pair is within its distance."""
        import numpy as np
        import scipy.sparse as sp
        found = self._pair_curvature(a)
        if found is None:
            return None
        pairs, blk, _ = found
        act = np.abs(blk).sum((0, 1)) > 0
        if not act.any():
            return None
        rows, cols = self._pair_entries(pairs[act], self.shape[2] * self.shape[3])
        b = blk[:, :, act]
        vals = np.stack([b, b, -b, -b])
        n3 = 3 * self.shape[2] * self.shape[3]
        return sp.csr_matrix((vals.ravel(), (rows.ravel(), cols.ravel())), shape=(n3, n3))

    def _with_pairs(self, H, a):
        """H (CSR on the grid's fixed pattern) plus the self-collision Hessian, on a pattern that
        changes rarely: the grid's plus the blocks of a set S of pairs (explicit zeros kept). S holds
        every pair that has been within its distance, and is rebuilt -- the current pairs among it
        plus those within PAIR_PATTERN_REACH distances -- only when a pair outside it becomes active. (scipy's sum dropped
        zeros and held the active pairs only, so the pattern changed at nearly every Newton iteration
        and each refactorization redid its symbolic analysis.)"""
        found = self._pair_curvature(a)
        if found is None:
            return H
        import numpy as np
        import scipy.sparse as sp
        pairs, blk, near = found
        n, hw = H.shape[0], self.shape[2] * self.shape[3]
        act = np.abs(blk).sum((0, 1)) > 0
        keys = pairs[:, 0].astype(np.int64) * hw + pairs[:, 1]
        hit = getattr(self, "_pair_pattern", None)
        if hit is not None and not (hit["base"] is H.indices or np.array_equal(hit["base"], H.indices)):
            hit = None
        where = None if hit is None else np.searchsorted(hit["S"], keys[act])
        if hit is None or (len(where) and (where.max() >= len(hit["S"])
                                          or not np.array_equal(hit["S"][where], keys[act]))):
            S = keys[act | near] if hit is None else np.union1d(hit["S"][np.isin(hit["S"], keys)], keys[act | near])
            S = np.unique(S)
            base = np.repeat(np.arange(n, dtype=np.int64), np.diff(H.indptr)) * n + H.indices
            rows, cols = self._pair_entries(np.stack([S // hw, S % hw], 1), hw)
            extra = (rows.astype(np.int64) * n + cols).reshape(4, 9, -1)
            allkeys = np.union1d(base, extra.ravel())
            indptr = np.zeros(n + 1, dtype=H.indptr.dtype)
            np.cumsum(np.bincount(allkeys // n, minlength=n), out=indptr[1:])
            hit = {"base": H.indices, "S": S, "indices": (allkeys % n).astype(H.indices.dtype), "indptr": indptr,
                   "pos_base": np.searchsorted(allkeys, base), "pos_S": np.searchsorted(allkeys, extra)}
            self._pair_pattern = hit
            where = np.searchsorted(S, keys[act])
        b = blk[:, :, act].reshape(9, -1)
        vals = np.stack([b, b, -b, -b])                                      # [4, 9, active]
        data = np.bincount(hit["pos_S"][:, :, where].ravel(), weights=vals.ravel(),
                           minlength=len(hit["indices"])).astype(np.float64, copy=False)
        data[hit["pos_base"]] += H.data
        return sp.csr_matrix((data, hit["indices"], hit["indptr"]), shape=H.shape, copy=False)   # one pattern

    def hessian_matrix(self, a, project: bool = False, identity_at_pins: bool = False,
                       psd_correction: bool = False):
        """Sample 0's Hessian of the step's energy w.r.t. a: scipy CSR [n, n], n = 3HW in (c, i, j) order,
        on a sparsity pattern fixed per grid size. The kernel's terms come from their analytic element
        Hessians (``physics.cloth_hessian``, C++/CUDA with a PyTorch twin), the Python-side terms from
        ``extra_hessian_blocks`` and ``nonlocal_hessian``. Rows and columns of hard-pinned unknowns are
        0 (the energy does not depend on them); ``identity_at_pins`` puts 1 on their diagonal instead,
        for Newton on the full vector (their gradient is 0, so the step leaves them where they are).
        ``project``: every element's Hessian made PSD on its own (projected Newton: a descent
        direction from any state). ``psd_correction``: plus ``psd_correction_blocks`` (compressed
        springs' and contacts' negative curvature removed: Newton-Krylov's projected matrix)."""
        from metaphys.physics.cloth_hessian import (PROJECT_SPRINGS_CONTACTS, blocks_to_csr, blocks_to_csr_pattern,
                                                    cloth_hessian_blocks)

        one = self if self.batch == 1 else self.select(torch.zeros(1, dtype=torch.long, device=self.device))
        a0 = a[:1].contiguous()
        # the PSD correction in the kernel: its springs and contacts projected (= exact + psd_correction_blocks)
        mode = bool(project) if project or not psd_correction else PROJECT_SPRINGS_CONTACTS
        blocks = cloth_hessian_blocks(one.local_part(), a0, project=mode)           # [1,13,3,3,H,W]
        if has_extra_terms(one.local_part().fields):
            blocks[:, 0] += extra_hessian_blocks(a0, one.local_part().fields, project=project)
        if psd_correction and project:
            blocks[0] += one.psd_correction_blocks(a0)
        if identity_at_pins:
            hard = (one.fields["pin_w"][0, 0] == 1).to(blocks.dtype)
            for c in range(3):
                blocks[0, 0, c, c] += hard
        _, _, h, w = self.shape
        H = blocks_to_csr(blocks, blocks_to_csr_pattern(h, w))
        return one._with_pairs(H, a0)

    def curvature_majorizer(self, a):
        """Sample 0's PSD correction (scipy CSR, a-space, (c, i, j) order) that Newton-Krylov adds to the
        Hessian of its linear model far from the answer and to its preconditioner (the gradient is
        untouched): the friction's exact curvature replaced by its majorizer (``friction_majorizer_blocks``);
        None without friction. Measured on the README's collider scene (24^2, mesh + rotated box, friction
        0.3/0.7): frame 2 took 100 Newton iterations (412 line-search halvings) without it and did not
        converge, 32 with it. Near the answer the exact curvature is kept: the majorizer there slows the
        vertices at the stick/slip boundary to a crawl (48^2 cloth on a 30 degree slope, mu 0.7: one frame
        at the 100-iteration cap with it, 64 iterations without)."""
        blocks = friction_majorizer_blocks(a[:1], self.fields if self.batch == 1 else
                                           self.select(torch.zeros(1, dtype=torch.long, device=self.device)).fields)
        if blocks is None:
            return None
        import numpy as np
        import scipy.sparse as sp
        _, _, h, w = self.shape
        hw = h * w
        b = blocks[0].reshape(3, 3, hw).cpu().numpy()
        v = np.arange(hw)
        rows = np.concatenate([np.full(hw, r) * hw + v for r in range(3) for _ in range(3)])
        cols = np.concatenate([np.full(hw, c) * hw + v for _ in range(3) for c in range(3)])
        return sp.csr_matrix((b.reshape(-1), (rows, cols)), shape=(3 * hw, 3 * hw))

    def set_contact_planes(self, planes) -> None:
        """Each vertex's lagged contact plane with the mesh colliders, [N,8,H,W] (``plane_distance``)."""
        planes = torch.as_tensor(planes, dtype=torch.float64, device=self.device)
        n, _, h, w = self.shape
        if tuple(planes.shape) != (n, 8, h, w):
            raise ValueError(f"planes must have shape ({n}, 8, {h}, {w}), got {tuple(planes.shape)}")
        checks.check_finite("planes", planes)
        self.fields["planes"] = planes.contiguous()

    def set_friction(self, mu=None) -> None:
        """Lag the friction of the coming step, with the friction column of the collider table
        (``mu`` [K]: other coefficients per table row, written into it). Each free vertex within the
        margin of a collider with mu > 0 at the start of the step gets mu * (its normal contact force)
        and that contact's normal; the deepest contact wins where a vertex touches several. Mesh
        colliders: each vertex's own contact plane and its friction."""
        fl = self.fields
        x = fl["x_old"].detach()
        n, _, h, w = x.shape
        out = torch.zeros(n, 4, h, w, dtype=torch.float64, device=x.device)
        table = fl["colliders"]
        if mu is not None:
            mu = torch.as_tensor(mu, dtype=torch.float64, device=x.device).reshape(-1)
            if mu.numel() != table.shape[1]:
                raise ValueError(f"set_friction: {mu.numel()} friction coefficients for {table.shape[1]} colliders")
            table = table.clone()
            table[..., kinds.FRICTION] = mu
            fl["colliders"] = table
        mu_rows = torch.where(kernel_rows(table), table[..., kinds.FRICTION], torch.zeros_like(table[..., 0]))
        planes = fl.get("planes")
        with_planes = planes is not None and bool(((planes[:, 6] != 0) & (planes[:, 7] > 0)).any())
        if not bool((mu_rows > 0).any()) and not with_planes:
            fl["friction"] = out
            return
        with torch.enable_grad():
            xx = x.clone().requires_grad_(True)
            parts, mus = [], []
            if table.shape[1]:
                parts.append(collider_sdf(xx, table))
                mus.append(mu_rows[:, :, None, None].expand(n, -1, h, w))
            if planes is not None:   # mesh colliders: each vertex's own plane and friction
                dp = plane_distance(xx, planes)
                parts.append(torch.where(planes[:, 6:7] != 0, dp, torch.full_like(dp, float("inf"))))
                mus.append(planes[:, 7:8])
            d = torch.cat(parts, 1)
            dmin, which = d.min(dim=1)
            (normal,) = torch.autograd.grad(torch.where(torch.isfinite(dmin), dmin, 0.0).sum(), xx)
        mu_v = torch.gather(torch.cat(mus, 1), 1, which.unsqueeze(1))[:, 0]
        pen = (fl["margin"].view(-1, 1, 1) - dmin.detach()).clamp_min(0.0)
        lam = 3.0 * fl["k_contact"].view(-1, 1, 1) / float(h * w) * pen ** 2    # |d contact / dx|
        free = (fl["pin_w"][:, 0] != 1).to(x.dtype)
        out[:, 0] = free * mu_v * lam
        out[:, 1:4] = normal / normal.norm(dim=1, keepdim=True).clamp_min(1e-300)
        fl["friction"] = out

    def project_out_of_colliders(self, a) -> torch.Tensor:
        """A warm start: ``a`` changed so that vertices it would put inside a collider's margin land
        on the margin surface instead (one projection along the signed distance's gradient per
        collider). A fast cloth hitting a collider otherwise starts Newton deep inside the
        penalty, where the energy is far from its quadratic model."""
        fl = self.fields
        x = self.state(a)[0].detach()
        m = fl["margin"].view(-1, 1, 1, 1)
        table = fl["colliders"]
        for kind in kinds.KERNEL_KINDS:                                # one kind after the other
            rows = table[..., kinds.KIND] == kind.code
            if not bool(rows.any()):
                continue
            with torch.enable_grad():
                xx = x.clone().requires_grad_(True)
                d = collider_sdf(xx, table)                            # [N,K,H,W]
                d = torch.where(rows[:, :, None, None], d, torch.full_like(d, float("inf")))
                dmin, _ = d.min(dim=1)                                 # nearest collider of the kind
                (grad,) = torch.autograd.grad(torch.where(torch.isfinite(dmin), dmin, 0.0).sum(), xx)
            inside = (torch.isfinite(dmin) & (dmin < fl["margin"].view(-1, 1, 1))).unsqueeze(1)
            x = torch.where(inside, x + (m - dmin.detach().unsqueeze(1)) * grad, x)
        planes = fl.get("planes")
        if planes is not None and bool((planes[:, 6] != 0).any()):   # mesh colliders' contact planes
            d = plane_distance(x, planes)
            inside = (planes[:, 6:7] != 0) & (d < m)
            x = torch.where(inside, x + (m - d) * planes[:, 3:6], x)
        free = (fl["pin_w"] != 1).to(a.dtype)
        dtn = fl["dt"].view(-1, 1, 1, 1)
        a_new = (x - fl["x_old"] - dtn * fl["v_old"]) / (dtn * dtn)
        return (free * a_new).detach()

    # --- what Newton's method (metaphys.optim.newton) needs -----------------------------------
    # grid offsets a vertex's Hessian row couples to: edges and bend hinges along rows and
    # columns (distance 1 and 2), shear across quad diagonals
    hessian_offsets = ((0, 1), (0, -1), (0, 2), (0, -2), (1, 0), (-1, 0), (2, 0), (-2, 0),
                       (1, 1), (1, -1), (-1, 1), (-1, -1))

    def pure_loss(self, a) -> torch.Tensor:
        """The loss [N] as plain differentiable PyTorch (twice: for Hessian-vector products)."""
        return sum(cloth_terms(a, *self.op_args(), smooth=True).values()) + extra_terms(a, self.fields)

    def prepare_hessian(self) -> None:
        """Build (and cache) the Hessian's sparsity pattern for this grid before the first solve."""
        from metaphys.physics.cloth_hessian import blocks_to_csr_pattern

        _, _, h, w = self.shape
        blocks_to_csr_pattern(h, w)

    def hessian_psd_correction(self, a):
        """Sparse matrix (scipy CSR, sample 0, a-space, (c, i, j) order, on the Hessian's fixed pattern)
        that removes the negative transverse curvature of compressed stretch springs and the negative
        curvature of every collider contact from the Hessian (projected Newton): the blocks of
        ``psd_correction_blocks``."""
        from metaphys.physics.cloth_hessian import blocks_to_csr, blocks_to_csr_pattern

        _, _, h, w = self.shape
        return blocks_to_csr(self.psd_correction_blocks(a).unsqueeze(0), blocks_to_csr_pattern(h, w))

    def psd_correction_blocks(self, a) -> torch.Tensor:
        """Sample 0's PSD correction of the Hessian as its 13 3x3 blocks per vertex [13, 3, 3, H, W]
        (the layout of ``cloth_hessian``): Newton-Krylov adds them to the Hessian's blocks before the
        sparse matrix is made, so no sparse sum per iteration. Zero in the rows and columns of
        hard-pinned vertices (the energy does not depend on them).

        A spring E = k (|e| - L0)^2 has Hessian 2k [e^ e^T + (|e| - L0)/|e| (I - e^ e^T)]: the
        second part is negative when the edge is compressed, which makes the step's Hessian
        indefinite in folds. Adding its negation keeps Newton's direction downhill; the gradient
        (and so the converged answer) is untouched, and stretched cloth gets the exact Hessian.
        Contact: k (m - d)^3 has the Hessian 6k pen grad(d) grad(d)^T - 3k pen^2 Hess(d); the second
        part (the distance's curvature: PSD for the convex kinds, so this term is negative) is
        removed, for every kind of the collider table (what the kernel's projection drops).
        """
        from metaphys.physics.cloth_hessian import OFFSETS

        fl = self.fields
        _, _, h, w = fl["x_old"].shape
        x = self.state(a[:1])[0][0].detach()                          # [3, H, W]
        L0 = float(fl["rest"][0])
        dt4 = float(fl["dt"][0]) ** 4
        out = torch.zeros(len(OFFSETS), 3, 3, h, w, dtype=torch.float64, device=x.device)
        free = (fl["pin_w"][0, 0] != 1).to(torch.float64)             # [H, W]
        eye = torch.eye(3, dtype=torch.float64, device=x.device).view(3, 3, 1, 1)
        index = {o: k for k, o in enumerate(OFFSETS)}
        # (axis, edge vectors, count): vertical edges (i,j)->(i+1,j), horizontal (i,j)->(i,j+1)
        for axis, count in ((0, (h - 1) * w), (1, h * (w - 1))):
            if (h if axis == 0 else w) < 2:
                continue
            e = x[:, 1:, :] - x[:, :-1, :] if axis == 0 else x[:, :, 1:] - x[:, :, :-1]
            length = e.norm(dim=0)
            coef = 2.0 * float(fl["k_stretch"][0]) / count * (length - L0) / length.clamp_min(1e-300)
            c = (-coef).clamp_min(0.0) * dt4                          # > 0 where compressed
            if not bool((c > 0).any()):
                continue
            eh = e / length.clamp_min(1e-300)
            block = c * (eye - eh.unsqueeze(0) * eh.unsqueeze(1))     # [3, 3, ...] per edge
            if axis == 0:
                fp, fq = free[:-1, :], free[1:, :]                     # the edge's two endpoints
                out[index[(0, 0)], :, :, :-1, :] += block * fp
                out[index[(0, 0)], :, :, 1:, :] += block * fq
                out[index[(1, 0)], :, :, :-1, :] -= block * fp * fq
                out[index[(-1, 0)], :, :, 1:, :] -= block * fp * fq
            else:
                fp, fq = free[:, :-1], free[:, 1:]
                out[index[(0, 0)], :, :, :, :-1] += block * fp
                out[index[(0, 0)], :, :, :, 1:] += block * fq
                out[index[(0, 1)], :, :, :, :-1] -= block * fp * fq
                out[index[(0, -1)], :, :, :, 1:] -= block * fp * fq
        curv = contact_curvature(self.state(a[:1])[0][:1], fl["colliders"][:1], fl["margin"][:1], fl["pin_w"][:1])
        if curv is not None:   # (free vertices only)
            vert, blocks = curv
            c = 3.0 * float(fl["k_contact"][0]) / (h * w) * dt4
            diag = out[index[(0, 0)]].view(3, 3, h * w)
            diag.index_add_(2, torch.as_tensor(vert, device=x.device),
                            c * torch.as_tensor(blocks, dtype=torch.float64, device=x.device).permute(1, 2, 0))
        return out

    def external_gradient(self) -> torch.Tensor:
        """Gradient of the external-force term alone [N,3,H,W] (gravity and wind; constant in a)."""
        fl = self.fields
        n, _, h, w = fl["x_old"].shape
        A = lumped_weights(h, w, device=self.device)
        free = (fl["pin_w"] != 1).to(torch.float64)
        force = fl["mass"].view(-1, 1, 1, 1) * A * fl["gravity"][:, :, None, None] + A * fl["wind"][:, :, None, None]
        return -(fl["dt"] ** 2).view(-1, 1, 1, 1) * free * force / float(h * w)

    def residual_scale(self, grad_start: torch.Tensor) -> float:
        """Scale of the gauge ``relative residual``: the larger of the gradient RMS at the start of
        the step and the RMS of the external forces (sample 0). A frame at rest under gravity then
        reads |grad| / |weight|; a frame with no external force reads |grad| / |grad at start|."""
        rms = lambda t: float(t[0].norm()) / math.sqrt(t[0].numel())
        return max(rms(grad_start), rms(self.external_gradient()), 1e-300)

    def terms(self, a) -> dict:
        """All loss terms per sample (twin-evaluated, no graph)."""
        with torch.no_grad():
            return cloth_terms(a, *self.op_args())

    def internal_energy(self, a=None) -> torch.Tensor:
        """E_stretch + E_shear + E_bend [N] of x_new(a) (of x_old when a is None)."""
        fl = self.fields
        x = fl["x_old"] if a is None else self.state(a)[0]
        with torch.no_grad():
            return sum(internal_energies(x, fl["rest"], fl["k_stretch"], fl["k_shear"], fl["k_bend"]))

    def max_stretch(self, x=None) -> torch.Tensor:
        """Per-sample max over edges of |e| / L0 - 1 (of x_old by default)."""
        return max_stretch(self.fields["x_old"] if x is None else x, self.fields["rest"])


def max_stretch(x: torch.Tensor, rest) -> torch.Tensor:
    """Edge stretch metric [N]: max over all edges of |e| / L0 - 1 (negative: all compressed)."""
    rest = checks.batch_param("rest", rest, x.shape[0], device=x.device, positive=True)
    ev = _norm(x[:, :, 1:, :] - x[:, :, :-1, :]).flatten(1)
    eh = _norm(x[:, :, :, 1:] - x[:, :, :, :-1]).flatten(1)
    return torch.cat([ev, eh], 1).max(1).values / rest - 1


def rest_grid(n: int, h: int, w: int, rest=1.0, *, rotation: Optional[torch.Tensor] = None,
              origin=None, device=None) -> torch.Tensor:
    """Flat rest positions [n,3,h,w]: X = j*L0, Y = (i - (h-1)/2)*L0, Z = 0 (notes section 8.6),
    then rotated by ``rotation`` ([3,3] or [n,3,3], about the origin) and shifted by ``origin``."""
    L0 = checks.batch_param("rest", rest, n, device=device, positive=True).view(n, 1, 1)
    ii = torch.arange(h, dtype=torch.float64, device=device).view(1, h, 1)
    jj = torch.arange(w, dtype=torch.float64, device=device).view(1, 1, w)
    X = (jj * L0).expand(n, h, w)
    Y = ((ii - (h - 1) / 2) * L0).expand(n, h, w)
    x = torch.stack([X, Y, torch.zeros_like(X)], dim=1)
    if rotation is not None:
        R = torch.as_tensor(rotation, dtype=torch.float64, device=device)
        R = R.expand(n, 3, 3) if R.dim() == 2 else R
        x = torch.einsum("nab,nbhw->nahw", R, x)
    if origin is not None:
        x = x + _vec3("origin", origin, n, device)[:, :, None, None]
    return x.contiguous()


def rotation_matrix(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> torch.Tensor:
    """R = R_yaw (about Y) @ R_pitch (about X) @ R_roll (about Z), as in the reference's resets."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], dtype=torch.float64)
    rz = torch.tensor([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]], dtype=torch.float64)
    return ry @ rx @ rz


def model_material(material: dict, rows: int, cols: int, length: float, dt: float) -> dict:
    """Physical material (N/m, N*m, kg/m^2) -> the dimensionless coefficients of ClothProblem
    (metaphys.sims.cloth's docstring). Unit mass = an interior vertex, rho * L0^2."""
    rho = material["mass_per_area"]
    hw = rows * cols
    edge_share = 0.5 * ((rows - 1) * cols + rows * (cols - 1)) / hw   # the loss's edge means -> sums
    base = dt * dt / (rho * length * length)
    return {"k_stretch": 0.5 * material["tension"] * base * edge_share,
            "k_shear": material["shear"] * base / 8.0,
            "k_bend": 0.5 * material["bending"] * base / (length * length)}
