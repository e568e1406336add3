"""The Hessian of the cloth loss w.r.t. the acceleration, per element (issue #24 item 2).

The compiled op ``torch.ops.metaphys.cloth_hessian`` (csrc/cloth/cloth_hessian_math.h) takes the
arguments of ``cloth_loss_grad`` plus ``project`` and returns ``blocks [N, 13, 3, 3, H, W]``:

    blocks[n, k, r, c, i, j] = d^2 loss_n / d a[n, r, i, j] d a[n, c, i + di_k, j + dj_k]

with the offsets ``OFFSETS`` = (0, 0) then ``ClothProblem.hessian_offsets``; zero where the neighbour
is outside the grid and in the rows and columns of hard-pinned vertices (pin_w == 1: the caller puts
identity there). Only the kernel's terms (inertia, damping, soft pins, the collider table's kernel
kinds -- spheres, boxes --, stretch, shear, bend), not ``physics.cloth.extra_terms`` (mesh planes,
friction, self pairs).

``project``: ``EXACT`` (0, False), ``PROJECT_ELEMENTS`` (1, True): every element's Hessian made PSD on
its own (projected Newton): each spring, each of the 4 shear terms of a quad, each bend hinge, each
(vertex, collider) contact: negative eigenvalues clamped to 0 (the kernel: closed form for springs and
contacts, Jacobi for the 6x6 of a shear or bend term); ``PROJECT_SPRINGS_CONTACTS`` (2): only the
springs and contacts projected, shear and bend exact -- the exact Hessian plus
``ClothProblem.psd_correction_blocks``, Newton-Krylov's projected matrix, in one kernel call (the
Python correction cost a third of the kernel's time: 1.1 of 3.5 ms at 32^2). Inertia, damping and
soft pins are PSD already.

``cloth_hessian_twin`` is the PyTorch twin (element Hessians by torch.func, eigh for the projection,
vectorized over elements), ``cloth_hessian_blocks(problem, a)`` dispatches kernel / twin like every
op (``metaphys._ops.call``), and ``blocks_to_csr_pattern`` / ``blocks_to_csr`` turn sample 0's blocks
into a scipy CSR matrix in the unknowns' flat (c, i, j) order with a fixed pattern per grid.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from metaphys import _ops
from metaphys import colliders as kinds

if TYPE_CHECKING:
    from metaphys.physics.cloth import ClothProblem

# This module sits below physics/cloth.py (which builds its Newton Hessian from it), so it imports
# nothing from there: the offsets, x_new and the lumped weights are restated here, as in the kernel;
# tests/test_cloth_hessian.py checks them against ClothProblem.hessian_offsets, cloth_state and
# lumped_weights.
OP_NAME = "cloth_hessian"
EXACT, PROJECT_ELEMENTS, PROJECT_SPRINGS_CONTACTS = 0, 1, 2   # the op's `project`


def projection_mode(project) -> int:
    """``project`` (bool or 0/1/2) as the op's int; anything else is a ValueError."""
    if isinstance(project, bool):
        return int(project)
    if project in (EXACT, PROJECT_ELEMENTS, PROJECT_SPRINGS_CONTACTS):
        return int(project)
    raise ValueError(f"project must be a bool or 0 (exact), 1 (every element) or 2 (springs and contacts), "
                     f"got {project!r}")
OFFSETS = ((0, 0), (0, 1), (0, -1), (0, 2), (0, -2), (1, 0), (-1, 0), (2, 0), (-2, 0),
           (1, 1), (1, -1), (-1, 1), (-1, -1))   # (0, 0), then ClothProblem.hessian_offsets
_INDEX = {o: k for k, o in enumerate(OFFSETS)}


def x_new_of(a, x_old, v_old, pin_w, pin_x, dt):
    """x_new = x_old + dt v_old + dt^2 a; hard pins (w == 1) at their targets (physics.cloth.cloth_state)."""
    hard = (pin_w == 1).to(a.dtype)
    dtn = dt.view(-1, 1, 1, 1)
    return hard * pin_x + (1 - hard) * (x_old + dtn * ((1 - hard) * (v_old + dtn * a)))


def lumped(h: int, w: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """[h, w] lumped area weights (physics.cloth.lumped_weights): 1, 1/2 on the border, 1/4 at corners."""
    wy = torch.ones(h, dtype=dtype, device=device)
    wx = torch.ones(w, dtype=dtype, device=device)
    wy[0] = wy[-1] = 0.5
    wx[0] = wx[-1] = 0.5
    if h == 1:
        wy[0] = 0.25
    if w == 1:
        wx[0] = 0.25
    return wy.view(h, 1) * wx.view(1, w)


# --------------------------------------------------------------------------------------------
# element energies of single 3-vectors (vmapped, differentiated twice by torch.func)
# --------------------------------------------------------------------------------------------

def _cross3(u, v):
    return torch.stack([u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]])


def _stretch(e, L0):
    return (torch.sqrt((e * e).sum()) - L0) ** 2


def _shear(z):
    u, v = z[:3], z[3:]
    cr = _cross3(u, v)
    return torch.atan2((u * v).sum(), torch.sqrt((cr * cr).sum())) ** 2


def _atan_ratio(x):
    """atan(sqrt x) / sqrt x, smooth in x >= 0 (the kernel's series below 1e-3)."""
    small = x < 1e-3
    xs = torch.where(small, torch.ones_like(x), x)
    t = torch.sqrt(xs)
    series = 1 + x * (-1 / 3 + x * (1 / 5 + x * (-1 / 7 + x * (1 / 9 + x * (-1 / 11 + x / 13)))))
    return torch.where(small, series, torch.atan(t) / t)


def _bend(z):
    """phi^2, phi = atan2(|e1 x e2|, e1 . e2), through |e1 x e2|^2 where e1 . e2 > 0 (smooth at phi = 0)."""
    e1, e2 = z[:3], z[3:]
    c = (e1 * e2).sum()
    cr = _cross3(e1, e2)
    s2 = (cr * cr).sum()
    pos = c > 0
    cp = torch.where(pos, c, torch.ones_like(c))
    straightish = s2 * (_atan_ratio(s2 / (cp * cp)) / cp) ** 2
    sn = torch.sqrt(torch.where(pos, torch.ones_like(s2), s2))
    bent = torch.atan2(sn, torch.where(pos, -torch.ones_like(c), c)) ** 2
    return torch.where(pos, straightish, bent)


def _contact_energy(x, row, margin):
    """max(0, margin - d)^3 of one point x [3] and one collider-table row [18] (``metaphys.colliders``:
    the distance of the row's kind, in its frame); rows of other kinds are masked by the caller."""
    R = row[kinds.ROTATION].reshape(3, 3)
    p = R.transpose(0, 1) @ (x - row[kinds.CENTER])
    d = torch.zeros_like(p[0])
    for kind in kinds.KERNEL_KINDS:
        d = torch.where(row[kinds.KIND] == kind.code, kind.distance(p, row[kinds.PARAMS]), d)
    return (margin - d).clamp_min(0.0) ** 3


def _project(Hm):
    """Negative eigenvalues of the symmetric matrices Hm [..., m, m] clamped to 0."""
    lam, vec = torch.linalg.eigh(Hm)
    return (vec * lam.clamp_min(0.0).unsqueeze(-2)) @ vec.transpose(-1, -2)


def _hessians(fn, z, *params):
    """fn's Hessian w.r.t. z at each row of z [M, m] (params: [M, ...] each): [M, m, m]."""
    if z.shape[0] == 0:
        return z.new_zeros(0, z.shape[1], z.shape[1])
    return torch.func.vmap(torch.func.hessian(fn, argnums=0))(z, *params)


# --------------------------------------------------------------------------------------------
# assembly
# --------------------------------------------------------------------------------------------

def _scatter(X, He, edges, oi0=0, oj0=0):
    """Add the edge-space Hessians He [N, R, C, 3E, 3E] of a family of elements (owner (oi0 + r,
    oj0 + c), edges (p, q) as vertex positions relative to the owner) to the position-space blocks
    X [N, 13, 3, 3, H, W]."""
    R, C = He.shape[1], He.shape[2]
    verts = sorted({p for e in edges for p in e})
    for a in verts:
        for b in verts:
            blk = None
            for al, (pa, qa) in enumerate(edges):
                sa = (a == qa) - (a == pa)
                for be, (pb, qb) in enumerate(edges):
                    sb = (b == qb) - (b == pb)
                    if sa == 0 or sb == 0:
                        continue
                    part = (sa * sb) * He[..., 3 * al:3 * al + 3, 3 * be:3 * be + 3]
                    blk = part if blk is None else blk + part
            if blk is None:
                continue
            k = _INDEX[(b[0] - a[0], b[1] - a[1])]
            i0, j0 = oi0 + a[0], oj0 + a[1]
            X[:, k, :, :, i0:i0 + R, j0:j0 + C] += blk.permute(0, 3, 4, 1, 2)


def _rows(t):
    """[N, 3, R, C] -> [N * R * C, 3]"""
    return t.permute(0, 2, 3, 1).reshape(-1, 3)


def _family(X, fn, scale, vectors, edges, project, oi0=0, oj0=0, params=()):
    """One element family: vectors [N, 3, R, C] each (its edge vectors), scale [N]."""
    n, _, R, C = vectors[0].shape
    if R <= 0 or C <= 0:
        return
    z = torch.cat([_rows(v) for v in vectors], 1)
    Hm = _hessians(fn, z, *params) * scale.repeat_interleave(R * C).view(-1, 1, 1)
    Hm = 0.5 * (Hm + Hm.transpose(-1, -2))
    if project:
        Hm = _project(Hm)
    m = Hm.shape[-1]
    _scatter(X, Hm.view(n, R, C, m, m), edges, oi0, oj0)


def cloth_hessian_twin(a, x_old, v_old, pin_w, pin_x, colliders, gravity, wind, rest, k_stretch, k_shear,
                       k_bend, mass, damping, k_pin, k_contact, margin, dt, project=EXACT):
    """PyTorch twin of the ``cloth_hessian`` kernel: blocks [N, 13, 3, 3, H, W] (see the module)."""
    mode = projection_mode(project)
    project, pairs_psd = mode != EXACT, mode == PROJECT_ELEMENTS   # springs and contacts; shear and bend
    with torch.no_grad():
        n, _, h, w = a.shape
        hw = float(h * w)
        x = x_new_of(a, x_old, v_old, pin_w, pin_x, dt)
        X = a.new_zeros(n, len(OFFSETS), 3, 3, h, w)         # position space
        # springs
        ev = x[:, :, 1:, :] - x[:, :, :-1, :]
        eh = x[:, :, :, 1:] - x[:, :, :, :-1]
        for e, count, edge in ((ev, (h - 1) * w, ((0, 0), (1, 0))), (eh, h * (w - 1), ((0, 0), (0, 1)))):
            if e.shape[2] and e.shape[3]:
                L0 = rest.repeat_interleave(e.shape[2] * e.shape[3])
                _family(X, _stretch, k_stretch / count, [e], [edge], project, params=(L0,))
        # shear: quads (i, j), vertices (0,0), (0,1), (1,0), (1,1)
        if h > 1 and w > 1:
            left, right = ev[..., :, :-1], ev[..., :, 1:]
            top, bottom = eh[..., :-1, :], eh[..., 1:, :]
            L, T, Rt, B = ((0, 0), (1, 0)), ((0, 0), (0, 1)), ((0, 1), (1, 1)), ((1, 0), (1, 1))
            for (u, eu), (v, evv) in (((left, L), (top, T)), ((left, L), (bottom, B)),
                                      ((right, Rt), (top, T)), ((right, Rt), (bottom, B))):
                _family(X, _shear, k_shear / hw, [u, v], [eu, evv], pairs_psd)
        # bend hinges along columns and rows, owner = the first vertex
        if h > 2:
            _family(X, _bend, k_bend / hw, [ev[:, :, :-1], ev[:, :, 1:]],
                    [((0, 0), (1, 0)), ((1, 0), (2, 0))], pairs_psd)
        if w > 2:
            _family(X, _bend, k_bend / hw, [eh[..., :-1], eh[..., 1:]],
                    [((0, 0), (0, 1)), ((0, 1), (0, 2))], pairs_psd)
        # per-vertex terms (position space): soft pins and contacts, one element per (vertex, collider)
        eye = torch.eye(3, dtype=a.dtype, device=a.device)
        soft = (pin_w[:, 0] * (pin_w[:, 0] != 1)) * (k_pin / hw).view(-1, 1, 1)        # [N, H, W]
        X[:, 0] += 2 * soft[:, None, None] * eye[None, :, :, None, None]
        xr = _rows(x)                                                                  # [N*H*W, 3]
        kc = (k_contact / hw).repeat_interleave(h * w)
        m = margin.repeat_interleave(h * w)
        code = colliders[..., kinds.KIND]
        active = torch.zeros_like(code, dtype=torch.bool)
        for kind in kinds.KERNEL_KINDS:
            active = active | (code == kind.code)
        for q in range(colliders.shape[1]):
            if not bool(active[:, q].any()):
                continue
            col = colliders[:, q].repeat_interleave(h * w, 0)
            Hc = _hessians(_contact_energy, xr, col, m) * (kc * active[:, q].to(a.dtype).repeat_interleave(h * w)).view(-1, 1, 1)
            if project:
                Hc = _project(0.5 * (Hc + Hc.transpose(-1, -2)))
            X[:, 0] += Hc.view(n, h, w, 3, 3).permute(0, 3, 4, 1, 2)
        # a-space: dt^4 X, inertia and damping on the diagonal; hard pins' rows and columns zero
        dt2 = (dt * dt).view(-1, 1, 1, 1, 1, 1)
        blocks = dt2 * dt2 * X
        M = mass.view(-1, 1, 1) * lumped(h, w, device=a.device)
        diag = dt2.view(-1, 1, 1) * M / hw * (1 + damping * dt).view(-1, 1, 1)          # [N, H, W]
        blocks[:, 0] += diag[:, None, None] * eye[None, :, :, None, None]
        free = (pin_w[:, 0] != 1).to(a.dtype)
        live = torch.zeros(n, len(OFFSETS), h, w, dtype=a.dtype, device=a.device)
        for k, (di, dj) in enumerate(OFFSETS):
            i0, i1 = max(0, -di), min(h, h - di)
            j0, j1 = max(0, -dj), min(w, w - dj)
            if i0 < i1 and j0 < j1:
                live[:, k, i0:i1, j0:j1] = free[:, i0:i1, j0:j1] * free[:, i0 + di:i1 + di, j0 + dj:j1 + dj]
        return (blocks * live[:, :, None, None]).contiguous()


def cloth_hessian_blocks(problem: "ClothProblem", a: torch.Tensor, project=EXACT) -> torch.Tensor:
    """blocks [N, 13, 3, 3, H, W] of ``problem``'s kernel terms at ``a`` (compiled op when it runs
    on a's device, else the twin; ``metaphys._ops.call``), ``project`` as in the module. Not the
    Python-side ``extra_terms``."""
    return _ops.call(OP_NAME, cloth_hessian_twin, a.contiguous(), *problem.op_args(), projection_mode(project))


# --------------------------------------------------------------------------------------------
# sparse matrix of one sample
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CsrPattern:
    """The fixed sparsity of one sample's Hessian on an H x W grid: ``csr`` (data all zero) and
    ``gather`` (csr.data = blocks[n].flatten()[gather])."""
    H: int
    W: int
    csr: object
    gather: np.ndarray


@functools.lru_cache(maxsize=8)   # built once per grid size: every Newton iteration reuses it
def blocks_to_csr_pattern(H: int, W: int) -> CsrPattern:
    """Every 3x3 block of the 13 offsets that lies inside the grid (explicit zeros kept: the pattern
    does not depend on the state), rows and columns in the flat (c, i, j) order c*H*W + i*W + j."""
    import scipy.sparse as sp

    hw = H * W
    ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    rows, cols, src = [], [], []
    for k, (di, dj) in enumerate(OFFSETS):
        ok = (ii + di >= 0) & (ii + di < H) & (jj + dj >= 0) & (jj + dj < W)
        pi, pj = ii[ok], jj[ok]
        for r in range(3):
            for c in range(3):
                rows.append(r * hw + pi * W + pj)
                cols.append(c * hw + (pi + di) * W + (pj + dj))
                src.append(((k * 3 + r) * 3 + c) * hw + pi * W + pj)
    rows, cols, src = (np.concatenate(v).astype(np.int64) for v in (rows, cols, src))
    order = np.lexsort((cols, rows))
    n = 3 * hw
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    csr = sp.csr_matrix((np.zeros(len(order)), cols[order], indptr), shape=(n, n))
    return CsrPattern(H, W, csr, src[order])


def blocks_to_csr(blocks: torch.Tensor, pattern: CsrPattern, sample: int = 0):
    """Sample ``sample`` of blocks [N, 13, 3, 3, H, W] as a scipy CSR matrix [3HW, 3HW] on
    ``pattern`` (O(nnz): one gather, no Python loop over entries)."""
    import scipy.sparse as sp

    if tuple(blocks.shape[1:]) != (len(OFFSETS), 3, 3, pattern.H, pattern.W):
        raise ValueError(f"blocks of shape {tuple(blocks.shape)} do not fit a {pattern.H}x{pattern.W} pattern")
    flat = blocks[sample].detach().reshape(-1).cpu().numpy()
    out = sp.csr_matrix((flat[pattern.gather], pattern.csr.indices, pattern.csr.indptr),
                        shape=pattern.csr.shape, copy=False)
    return out
