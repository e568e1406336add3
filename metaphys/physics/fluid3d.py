"""Incompressible Navier-Stokes on a 3-D MAC grid; unknown u = (vector potential a, pressure p).

The 3-D twin of ``metaphys.physics.fluid`` (issue #28 item 1): the same unknowns, time scheme, loss
terms, weights and normalisation, one dimension up. Index (k, i, j) runs along the tensor dims
(D, H, W) = (z, y, x); grid spacing 1. **Channel c of every vector field is the axis of tensor
dim 2 + c**: (z, y, x), the 2-D rule (channel 0 = rows = y, channel 1 = columns = x) one dim up.

Layout (positions in (z, y, x) = (k, i, j) cell units):

=======================  ==========================  ============================================
quantity                 sits at                     array
=======================  ==========================  ============================================
mask, bc, density        node (k, i, j)              mask [N,1,D,H,W], bc [N,3,D,H,W] (z, y, x)
a_z                      z-edge (k+1/2, i, j)        u[:, 0]
a_y                      y-edge (k, i+1/2, j)        u[:, 1]
a_x                      x-edge (k, i, j+1/2)        u[:, 2]
v_z, f_z                 z-face (k, i+1/2, j+1/2)    velocity / force channel 0
v_y, f_y                 y-face (k+1/2, i, j+1/2)    channel 1
v_x, f_x                 x-face (k+1/2, i+1/2, j)    channel 2
p                        cell centre (k+1/2, i+1/2, j+1/2)   u[:, 3]
=======================  ==========================  ============================================

The 2-D corner grid is the z-edges through the nodes (the 2-D potential is a_z), so a z-invariant
state with a_y = a_x = 0 is the 2-D state in every layer. Velocity = discrete curl (D^+_d = forward
difference along axis d, zero padding; channel indices mod 3):

    v_c = D^+_{c-1} a_{c+1} - D^+_{c+1} a_{c-1}:
    v_x = D^+_y a_z - D^+_z a_y,   v_y = D^+_z a_x - D^+_x a_z,   v_z = D^+_x a_y - D^+_y a_x

(with a_y = a_x = 0: v_x = D^+_y a, v_y = -D^+_x a, the 2-D curl). The discrete divergence
sum_c D^+_c v_c at the cell centres is exactly 0 for any a (forward differences commute).

Dirichlet faces: a face is Dirichlet (c_c = 1) iff its 4 corner nodes are masked; its value b_c is
the mean of the 4 nodes' bc_c (2-D: the 2 end corners of a face segment).

Momentum residual on the c-faces (v_bar = (v_new + v_old)/2, the 2-D "imex"/trapezoidal scheme):

    R_c = rho*[(v_c^new - v_c^old)/dt + v_bar_c*D^0_c(v_bar_c)
               + sum_{d != c} (lo_cd * D^-_d(v_bar_c) + hi_cd * D^+_d(v_bar_c)) / 2]
          + D^-_c(p) - mu*L27(v_bar_c) - f_c

lo_cd = (v_bar_d[-e_c] + v_bar_d)/2 and hi_cd = (v_bar_d[e_d - e_c] + v_bar_d[e_d])/2 are v_bar_d
interpolated to the two d-edges of the c-face (2-D: Itop/Ibot, Ileft/Iright), d in axis order.
L27 = 4*(B_z B_y B_x - 1) with B the [1, 2, 1]/4 smoothing: the 27-point Laplacian (faces 1/4,
edges 1/8, corners 1/16, centre -7/2) whose z-collapse is the 2-D L9 = 4*(B_y B_x - 1) =
1/4*[[1,2,1],[2,-12,2],[1,2,1]]; the same along every axis. ``force`` is a force density on the faces
(buoyancy: ``buoyancy_force``).

Per-sample loss, crop = the interior 1..D-2 x 1..H-2 x 1..W-2, N_crop = (D-2)(H-2)(W-2):

    L_nav   = sum_c sum_crop (1-c_c) R_c^2 / N_crop
    L_bound = sum_c sum_crop c_c (v_c^new - b_c)^2 / (3 N_crop)      (mean over 3 channels x crop)
    L_a     = sum_c mean(a_c)^2,  L_p = mean(p)^2
    loss    = w_nav*L_nav + w_bound*L_bound + w_a*L_a + w_p*L_p      (defaults 1, 20, 0.1, 0.1)

For a z-invariant state this is the 2-D loss with L_bound scaled by 2/3 (3 channels instead of 2;
tests/test_physics_fluid3d.py). The gradient is the true gradient. The gauge of a in 3-D is larger
than the constants L_a fixes: a + grad(phi) has the same velocity for any node field phi; the loss
leaves that null space free (as the 2-D loss does not need to).

Smoke in 3-D: ``node_velocity`` (the velocity on the nodes, divergence-free in the central sense),
``buoyancy_force`` (lift of density/temperature onto the faces) and ``transport`` (the 2-D monotone
finite-volume transport of ``fluid.transport`` along three axes).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as TF

from metaphys.physics import checks
from metaphys.physics.base import Problem
from metaphys.physics import fluid
from metaphys.physics.fluid import _axis_flux

DEFAULT_WEIGHTS = {"w_nav": 1.0, "w_bound": 20.0, "w_a": 0.1, "w_p": 0.1}
AXES = ("z", "y", "x")
E = ((1, 0, 0), (0, 1, 0), (0, 0, 1))  # unit offsets along (z, y, x)
# offsets of the 27-point Laplacian's neighbours by kind (faces, edges, corners), fixed order
# (the kernel's nested loop order: csrc/fluid3d/fluid3d_math.h lap27)
_NEIGHBOURS = tuple((a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1))
_FACES, _EDGES, _CORNERS = (tuple(o for o in _NEIGHBOURS if sum(x != 0 for x in o) == k) for k in (1, 2, 3))


def _add(*offs) -> Tuple[int, int, int]:
    return tuple(sum(o[q] for o in offs) for q in range(3))


def _neg(o) -> Tuple[int, int, int]:
    return tuple(-x for x in o)


def _padded(x: torch.Tensor) -> torch.Tensor:
    return TF.pad(x, (1, 1, 1, 1, 1, 1))


def _sl(xp: torch.Tensor, off) -> torch.Tensor:
    """x[k+off0, i+off1, j+off2] read from a one-cell padded ``xp`` (|off| <= 1)."""
    d, h, w = (s - 2 for s in xp.shape[-3:])
    return xp[..., 1 + off[0]:1 + off[0] + d, 1 + off[1]:1 + off[1] + h, 1 + off[2]:1 + off[2] + w]


def shift(x: torch.Tensor, off) -> torch.Tensor:
    """x[k+off0, i+off1, j+off2] with zero padding (|off| <= 1 per axis)."""
    return _sl(_padded(x), off)


def lap27(x: torch.Tensor) -> torch.Tensor:
    """27-point Laplacian 4*(B^3 - 1), B = [1,2,1]/4 per axis: faces 1/4, edges 1/8, corners 1/16,
    centre -7/2 (zero padding); on z-invariant fields it is the 2-D 9-point L9 of every layer."""
    xp = _padded(x)
    faces = sum(_sl(xp, o) for o in _FACES)
    edges = sum(_sl(xp, o) for o in _EDGES)
    corners = sum(_sl(xp, o) for o in _CORNERS)
    return 0.25 * faces + 0.125 * edges + 0.0625 * corners - 3.5 * x


def curl(a: torch.Tensor) -> torch.Tensor:
    """Face velocity [N,3,D,H,W] (channels v_z, v_y, v_x) of the edge potential a [N,3,D,H,W]:
    v_c = D^+_{c-1} a_{c+1} - D^+_{c+1} a_{c-1} (channels mod 3)."""
    out = []
    for c in range(3):
        up, dn = (c + 1) % 3, (c - 1) % 3
        a_up, a_dn = a[:, up:up + 1], a[:, dn:dn + 1]
        out.append((shift(a_up, E[dn]) - a_up) - (shift(a_dn, E[up]) - a_dn))
    return torch.cat(out, dim=1)


def divergence(u: torch.Tensor) -> torch.Tensor:
    """Discrete MAC divergence sum_c D^+_c v_c of v = curl(a) at the cell centres ([N,1,D,H,W])."""
    v = curl(u[:, 0:3])
    return sum(shift(v[:, c:c + 1], E[c]) - v[:, c:c + 1] for c in range(3))


def _face_corners(c: int):
    """The offsets of a c-face's 4 corner nodes from its base node (fixed order)."""
    d1, d2 = (d for d in range(3) if d != c)
    return ((0, 0, 0), E[d1], E[d2], _add(E[d1], E[d2]))


def face_conditions(mask: torch.Tensor, bc: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cf [N,3,D,H,W], bf [N,3,D,H,W]): Dirichlet flags (all 4 corner nodes masked) and values (mean of
    the 4 corners' bc) of the z-, y- and x-faces."""
    cf, bf = [], []
    mp = _padded(mask)
    for c in range(3):
        corners = _face_corners(c)
        flag = _sl(mp, corners[0]) * _sl(mp, corners[1]) * _sl(mp, corners[2]) * _sl(mp, corners[3])
        bp = _padded(bc[:, c:c + 1])
        val = 0.25 * (((_sl(bp, corners[0]) + _sl(bp, corners[1])) + _sl(bp, corners[2])) + _sl(bp, corners[3]))
        cf.append(flag)
        bf.append(val)
    return torch.cat(cf, dim=1), torch.cat(bf, dim=1)


def momentum_residuals(v_new: torch.Tensor, v_old: torch.Tensor, p: torch.Tensor, force: torch.Tensor, rho, mu,
                       dt) -> torch.Tensor:
    """R [N,3,D,H,W] on the (z, y, x) faces (full arrays; only the crop enters the loss)."""
    rho, mu, dt = (t.view(-1, 1, 1, 1, 1) for t in (rho, mu, dt))
    vb = 0.5 * (v_new + v_old)
    pp = _padded(p)
    out = []
    for c in range(3):
        ec = E[c]
        vc = vb[:, c:c + 1]
        vcp = _padded(vc)
        adv = vc * (0.5 * (_sl(vcp, ec) - _sl(vcp, _neg(ec))))
        for d in range(3):
            if d == c:
                continue
            ed = E[d]
            vdp = _padded(vb[:, d:d + 1])
            lo = 0.5 * (_sl(vdp, _neg(ec)) + _sl(vdp, (0, 0, 0)))
            hi = 0.5 * (_sl(vdp, _add(ed, _neg(ec))) + _sl(vdp, ed))
            adv = adv + 0.5 * (lo * (vc - _sl(vcp, _neg(ed))) + hi * (_sl(vcp, ed) - vc))
        r = rho * ((v_new[:, c:c + 1] - v_old[:, c:c + 1]) / dt + adv)
        r = r + (p - _sl(pp, _neg(ec))) - mu * lap27(vc) - force[:, c:c + 1]
        out.append(r)
    return torch.cat(out, dim=1)


def _crop_sum(t: torch.Tensor) -> torch.Tensor:
    return t[..., 1:-1, 1:-1, 1:-1].flatten(1).sum(1)


def fluid3d_terms(u, a_old, mask, bc, force, rho, mu, dt):
    """The four per-sample loss terms [N] (differentiable): nav, bound, gauge_a, gauge_p."""
    d, h, w = u.shape[-3:]
    ncrop = float((d - 2) * (h - 2) * (w - 2))
    a, p = u[:, 0:3], u[:, 3:4]
    v = curl(a)
    vo = curl(a_old)
    r = momentum_residuals(v, vo, p, force, rho, mu, dt)
    cf, bf = face_conditions(mask, bc)
    nav = _crop_sum((1 - cf) * r * r) / ncrop
    bound = _crop_sum(cf * (v - bf) ** 2) / (3 * ncrop)
    gauge_a = (a.flatten(2).mean(2) ** 2).sum(1)
    gauge_p = p.flatten(1).mean(1) ** 2
    return {"nav": nav, "bound": bound, "gauge_a": gauge_a, "gauge_p": gauge_p}


def fluid3d_twin(u, a_old, mask, bc, force, rho, mu, dt, w_nav: float = 1.0, w_bound: float = 20.0,
                 w_a: float = 0.1, w_p: float = 0.1):
    """PyTorch twin of the ``fluid3d_loss_grad`` kernel: (loss [N], true grad [N,4,D,H,W])."""
    return fluid.weighted_loss_and_grad(fluid3d_terms, u, a_old, mask, bc, force, rho, mu, dt,
                                        w_nav=w_nav, w_bound=w_bound, w_a=w_a, w_p=w_p)


# --------------------------------------------------------------------------------------------
# Validation and the problem class
# --------------------------------------------------------------------------------------------

def check_volume(name: str, t, *, shape=None, device=None) -> torch.Tensor:
    """A float64 [N, C, D, H, W] tensor (``shape``: None = any size in that dim)."""
    checks.check_field(name, t, shape=shape, ndim=5, device=device)
    return t


def check_grid3(name: str, t: torch.Tensor, min_size: int = 3) -> None:
    d, h, w = t.shape[-3:]
    if min(d, h, w) < min_size:
        raise ValueError(f"{name} grid must be at least {min_size}x{min_size}x{min_size}, got {d}x{h}x{w}")


def as_volume(name: str, value, like: torch.Tensor, channels: int) -> torch.Tensor:
    """Broadcast a number or a [N|1, channels|1, D, H, W] tensor to a contiguous [N, channels, D, H, W] field."""
    n, _, d, h, w = like.shape
    if value is None:
        return torch.zeros(n, channels, d, h, w, dtype=torch.float64, device=like.device)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return torch.full((n, channels, d, h, w), float(value), dtype=torch.float64, device=like.device)
    check_volume(name, value, device=like.device)
    vn, vc = value.shape[:2]
    if tuple(value.shape[2:]) != (d, h, w) or vn not in (1, n) or vc not in (1, channels):
        raise ValueError(f"{name} must broadcast to shape ({n}, {channels}, {d}, {h}, {w}), got {tuple(value.shape)}")
    return value.expand(n, channels, d, h, w).contiguous()


def validate_fluid3d_inputs(u, a_old, mask, bc, force, rho, mu, dt, weights: dict) -> None:
    """Shapes, dtypes, devices, mask values, finiteness and signs (ValueError/TypeError)."""
    check_volume("u", u)
    n, c, d, h, w = u.shape
    if c != 4:
        raise ValueError(f"u must have 4 channels (a_z, a_y, a_x, p), got shape {tuple(u.shape)}")
    check_grid3("u", u)
    dev = u.device
    check_volume("a_old", a_old, shape=(n, 3, d, h, w), device=dev)
    check_volume("mask", mask, shape=(n, 1, d, h, w), device=dev)
    checks.check_mask("mask", mask)
    check_volume("bc", bc, shape=(n, 3, d, h, w), device=dev)
    check_volume("force", force, shape=(n, 3, d, h, w), device=dev)
    fluid.check_values_and_parameters(u, a_old, bc, force, rho, mu, dt, weights, n, dev)


class Fluid3DProblem(Problem):
    """One trapezoidal time step of 3-D incompressible Navier-Stokes for N samples (unknown (a, p)).

    Fields: ``a_old`` [N,3,D,H,W] (edge potential of the previous step, channels a_z, a_y, a_x),
    ``mask`` [N,1,D,H,W] and ``bc`` [N,3,D,H,W] (node Dirichlet mask and velocity values, channels
    (v_z, v_y, v_x)), ``force`` [N,3,D,H,W] (force density on the (z, y, x) faces), ``rho``, ``mu``,
    ``dt`` [N]. Loss weights are plain numbers (``w_nav``, ``w_bound``, ``w_a``, ``w_p``).
    """

    op_name = "fluid3d_loss_grad"
    channels = 4
    time_dependent = True
    divergence_threshold = 2e4
    twin = staticmethod(fluid3d_twin)

    def __init__(self, mask, bc=None, *, a_old=None, force=None, rho=1.0, mu=0.1, dt=1.0,
                 w_nav: float = 1.0, w_bound: float = 20.0, w_a: float = 0.1, w_p: float = 0.1):
        check_volume("mask", mask)
        check_grid3("mask", mask)
        n, dev = mask.shape[0], mask.device
        m = mask.contiguous()
        bc = as_volume("bc", bc, m, 3)
        force = as_volume("force", force, m, 3)
        a_old = as_volume("a_old", a_old, m, 3)
        rho = checks.batch_param("rho", rho, n, device=dev, positive=True)
        mu = checks.batch_param("mu", mu, n, device=dev, nonnegative=True)
        dt = checks.batch_param("dt", dt, n, device=dev, positive=True)
        self.weights = {"w_nav": float(w_nav), "w_bound": float(w_bound), "w_a": float(w_a), "w_p": float(w_p)}
        u0 = torch.zeros(n, 4, *m.shape[-3:], dtype=torch.float64, device=dev)
        validate_fluid3d_inputs(u0, a_old, m, bc, force, rho, mu, dt, self.weights)
        super().__init__({"a_old": a_old, "mask": m, "bc": bc, "force": force, "rho": rho, "mu": mu, "dt": dt})

    @property
    def shape(self):
        """Shape of the unknown [N, 4, D, H, W]."""
        ref = self.fields["mask"]
        return (ref.shape[0], self.channels, *ref.shape[-3:])

    def check_unknown(self, u: torch.Tensor) -> torch.Tensor:
        return check_volume("u", u, shape=self.shape, device=self.device)

    def op_args(self):
        fl, wt = self.fields, self.weights
        return (fl["a_old"], fl["mask"], fl["bc"], fl["force"], fl["rho"], fl["mu"], fl["dt"],
                wt["w_nav"], wt["w_bound"], wt["w_a"], wt["w_p"])

    def impose(self, u):
        return u  # BCs are soft (L_bound); nothing to impose on (a, p)

    def initial_guess(self):
        """(a_old, 0): the previous potential is the natural start of a step."""
        a = self.fields["a_old"]
        return torch.cat([a, torch.zeros_like(a[:, :1])], dim=1)

    def advance(self, u):
        """a_old <- a_new; (a, p) are kept as the warm start of the next step."""
        u = u.detach()
        self.fields["a_old"] = u[:, 0:3].clone()
        return u.clone()

    def set_boundary(self, mask=None, bc=None, force=None) -> None:
        """New geometry / wall velocities / forces for the coming step."""
        fl = self.fields
        if mask is not None:
            check_volume("mask", mask, shape=fl["mask"].shape, device=self.device)
            checks.check_mask("mask", mask)
            fl["mask"] = mask.contiguous()
        if bc is not None:
            fl["bc"] = as_volume("bc", bc, fl["mask"], 3)
            checks.check_finite("bc", fl["bc"])
        if force is not None:
            fl["force"] = as_volume("force", force, fl["mask"], 3)
            checks.check_finite("force", fl["force"])

    def velocity(self, u) -> torch.Tensor:
        """Face velocity [N,3,D,H,W] (channels v_z, v_y, v_x) of the unknown."""
        return curl(u[:, 0:3])

    def terms(self, u) -> dict:
        """The unweighted per-sample loss terms (nav, bound, gauge_a, gauge_p), twin-evaluated."""
        fl = self.fields
        with torch.no_grad():
            return fluid3d_terms(u, fl["a_old"], fl["mask"], fl["bc"], fl["force"], fl["rho"], fl["mu"], fl["dt"])


def box_geometry(n: int, d: int, h: int, w: int, *, wall: int = 3, lid=None, device=None):
    """(mask [n,1,d,h,w], bc [n,3,d,h,w]): a closed no-slip box with walls ``wall`` nodes thick, built
    from zeros; ``lid`` = (v_z, v_y, v_x) on the nodes of the top wall (rows 0..wall-1): a lid-driven
    cavity. A tangential wall velocity reaches the loss only on faces inside the crop whose 4 corners
    are masked, so walls are 3 nodes thick by default (the 2-D ``fluid_geometry``'s 3 rows)."""
    if min(d, h, w) < 2 * wall + 3:
        raise ValueError(f"grid {d}x{h}x{w} too small for walls {wall} nodes thick")
    f64 = torch.float64
    mask = torch.ones(n, 1, d, h, w, dtype=f64, device=device)
    mask[..., wall:d - wall, wall:h - wall, wall:w - wall] = 0
    bc = torch.zeros(n, 3, d, h, w, dtype=f64, device=device)
    if lid is not None:
        for c in range(3):
            bc[:, c, :, :wall, :] = float(lid[c])
    return mask, bc


# --------------------------------------------------------------------------------------------
# Smoke in 3-D: node velocity, buoyancy, monotone transport (the 2-D scheme of fluid.transport)
# --------------------------------------------------------------------------------------------

def node_velocity(problem: Fluid3DProblem, u: torch.Tensor, *, which: str = "mean",
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MAC velocity averaged to the nodes, channels (v_z, v_y, v_x), [N,3,D,H,W]; 0 on masked nodes.

    V_c at node q is the mean of the 4 c-faces around the node's c-edge (the 2-D staggered -> normal
    mean over 2): with v = curl(a) its central divergence sum_c D^0_c V_c is exactly 0 wherever no mask
    or grid end interferes (D^0 = D^+ of the backward mean, and the means commute with D^+).
    ``which``: "mean" = (v_old + v_new)/2 (the step's velocity), "new", "old".
    """
    if which not in ("mean", "new", "old"):
        raise ValueError(f"which must be 'mean', 'new' or 'old', got {which!r}")
    a_new, a_old = u.detach()[:, 0:3], problem.fields["a_old"]
    a = {"new": a_new, "old": a_old, "mean": 0.5 * (a_new + a_old)}[which]
    v = curl(a)
    out = []
    for c in range(3):
        d1, d2 = (d for d in range(3) if d != c)
        vc = v[:, c:c + 1]
        vp = _padded(vc)
        m1, m2 = _neg(E[d1]), _neg(E[d2])
        out.append(0.25 * (((_sl(vp, _add(m1, m2)) + _sl(vp, m1)) + _sl(vp, m2)) + vc))
    m = problem.fields["mask"] if mask is None else mask
    return ((1 - m) * torch.cat(out, dim=1)).contiguous()


def buoyancy_force(lift: torch.Tensor, up: Sequence[float] = (0.0, -1.0, 0.0)) -> torch.Tensor:
    """Force density [N,3,D,H,W] on the (z, y, x) faces of a node field ``lift`` [N,1,D,H,W] (e.g.
    b*density + b_heat*temperature) pushing along the unit vector ``up`` (z, y, x components; the
    default up = -rows is the 2-D smoke's convention): f_c = up_c * (mean of lift over the face's 4
    corner nodes). For a z-invariant lift this is the 2-D smoke's force in every layer."""
    out = []
    lp = _padded(lift)
    for c in range(3):
        corners = _face_corners(c)
        mean = 0.25 * (((_sl(lp, corners[0]) + _sl(lp, corners[1])) + _sl(lp, corners[2])) + _sl(lp, corners[3]))
        out.append(float(up[c]) * mean)
    return torch.cat(out, dim=1).contiguous()


def face_velocities(vel: torch.Tensor, mask: torch.Tensor):
    """Normal velocities and open flags of the faces between node cells, one pair per axis c:
    [(u_c, open_c)], u_c of size d-1 along axis c: the mean of the two nodes' V_c, 0 where either
    node is masked (the 3-D ``fluid.face_velocities``)."""
    free = 1 - mask
    out = []
    for c in range(3):
        dim = 2 + c
        n_c = free.shape[dim]
        lo, hi = free.narrow(dim, 0, n_c - 1), free.narrow(dim, 1, n_c - 1)
        open_ = lo * hi
        vc = vel[:, c:c + 1]
        u = 0.5 * (vc.narrow(dim, 1, n_c - 1) + vc.narrow(dim, 0, n_c - 1)) * open_
        out.append((u, open_))
    return out


def transport_rate(c: torch.Tensor, faces, D=0.0, source=None) -> torch.Tensor:
    """dc/dt [N,C,D,H,W] of scalars ``c`` carried by ``faces`` (``face_velocities``) with diffusion ``D``
    and ``source``: the MUSCL upwind fluxes of ``fluid._axis_flux`` along each axis."""
    rate = torch.zeros_like(c)
    for ax, (u, open_) in enumerate(faces):
        dim = 2 + ax
        flux = _axis_flux(c.movedim(dim, -1), u.movedim(dim, -1), open_.movedim(dim, -1), D)
        out = TF.pad(flux, (0, 1)) - TF.pad(flux, (1, 0))  # net outflow per cell; no flux through the ends
        rate = rate - out.movedim(-1, dim)
    return rate if source is None else rate + source


def transport_rate_bound(faces, D=0.0) -> float:
    """max over cells of 2 * (outflow through its faces) + D * (open faces): a forward Euler step of
    length h keeps the scalars >= 0 when h times this is <= 1."""
    out = n_open = 0.0
    for ax, (u, open_) in enumerate(faces):
        dim = 2 + ax
        u, open_ = u.movedim(dim, -1), open_.movedim(dim, -1)
        o = TF.pad(torch.relu(u), (0, 1)) + TF.pad(torch.relu(-u), (1, 0))
        k = TF.pad(open_, (0, 1)) + TF.pad(open_, (1, 0))
        out = out + o.movedim(-1, dim)
        n_open = n_open + k.movedim(-1, dim)
    d_max = float(torch.as_tensor(D, dtype=torch.float64).max())
    return float((2 * out + d_max * n_open).max())


def transport(c: torch.Tensor, vel: torch.Tensor, mask: torch.Tensor, dt: float, *, D=0.0, source=None,
              max_substeps: int = 100000):
    """Carry scalars ``c`` [N,C,D,H,W] (>= 0, 0 on masked nodes) for ``dt`` by the node velocity ``vel``
    [N,3,D,H,W] with diffusion ``D`` and ``source``; (c_new, sub-steps). The 2-D ``fluid.transport`` one
    dimension up: Heun sub-steps short enough for positivity, mass kept (no flux through masked faces)."""
    return fluid.heun_substeps(c, face_velocities(vel, mask), D, source, dt, max_substeps, transport_rate,
                               transport_rate_bound)
