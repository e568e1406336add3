"""Incompressible Navier-Stokes on a MAC grid; unknown u = (vector potential a, pressure p).

Layout (row i grows downwards = "y", column j = "x"; grid spacing 1; notes section 8.4):

====================  ================================  =========================================
quantity              sits at                           array
====================  ================================  =========================================
a, mask, bc           corner (i, j)                     u[:, 0], mask [N,1,H,W], bc [N,2,H,W]
v_x                   face (i+1/2, j)                   v_x[i,j] = a[i+1,j] - a[i,j]   (Dy_p a)
v_y                   face (i, j+1/2)                   v_y[i,j] = -(a[i,j+1] - a[i,j]) (-Dx_p a)
p                     cell centre (i+1/2, j+1/2)        u[:, 1]
force                 on the velocity faces             force[:, 0] = f_y at (i, j+1/2),
                                                        force[:, 1] = f_x at (i+1/2, j)
====================  ================================  =========================================

Channel order of every velocity-like field (``bc``, ``force``): **channel 0 = y (rows), channel
1 = x (columns)**, as in the reference (and as ``DiffusionProblem.velocity``). Out-of-range
values are 0 (zero padding), so the last row of v_x and the last column of v_y read a = 0.
The discrete divergence Dx_p(v_x) + Dy_p(v_y) of ``curl(a)`` is exactly 0 for any a.

Dirichlet faces: a v_x face is Dirichlet (c_x = 1) iff both of its end corners (i,j), (i+1,j)
are masked, with value b_x = (bc_x[i,j] + bc_x[i+1,j]) / 2; likewise v_y with (i,j), (i,j+1).
Obstacles of any shape are just masked corners; a moving/rotating obstacle is its wall velocity
written into ``bc`` on its corners (``add_obstacle``).

Time scheme (the reference's "imex", really trapezoidal): v_bar = (v_new + v_old) / 2,

  R_x = rho*[(v_x^new - v_x^old)/dt + v_bar_x*Dx_c(v_bar_x)
             + (Itop(v_bar_y)*Dy_m(v_bar_x) + Ibot(v_bar_y)*Dy_p(v_bar_x))/2]
        + Dx_m(p) - mu*L9(v_bar_x) - f_x                     (on the v_x grid)
  R_y = rho*[(v_y^new - v_y^old)/dt + v_bar_y*Dy_c(v_bar_y)
             + (Ileft(v_bar_x)*Dx_m(v_bar_y) + Iright(v_bar_x)*Dx_p(v_bar_y))/2]
        + Dy_m(p) - mu*L9(v_bar_y) - f_y                     (on the v_y grid)

``force`` is a force density (per unit volume): gravity is rho*g, Boussinesq buoyancy
beta*c*g, wind any field. ``dt`` is a real per-sample parameter (the reference hard-codes 4).

Per-sample loss, "crop" = rows 1..H-2 x columns 1..W-2, N_crop = (H-2)(W-2):

  L_nav   = [sum_crop (1-c_x) R_x^2 + sum_crop (1-c_y) R_y^2] / N_crop
  L_bound = [sum_crop c_x (v_x^new - b_x)^2 + sum_crop c_y (v_y^new - b_y)^2] / (2 N_crop)
  loss    = w_nav*L_nav + w_bound*L_bound + w_a*mean(a)^2 + w_p*mean(p)^2

(defaults 1, 20, 0.1, 0.1). The gradient is the TRUE gradient d loss / d(a, p) (the reference
uses full gradients for the fluid). Deliberate differences from the reference: no gradient
normalizer and no +-20000 clamp inside the op; dt is a parameter; external force added; the
reference's "double step" (its tell evaluates the loss at u + 2*du) does not exist here: the
Problem protocol evaluates the loss at ``apply(u, step) = u + step``; the geometry helpers build
``bc`` from zeros every time, so no stale wall velocities survive a reset (the reference's
stale-BC bug). Metrics: ``fluid_metrics`` gives L_d (divergence incl. the BC mismatch) and L_p
(momentum residual measured before the time step advances; ``steady=True`` reproduces the
reference's post-advance measurement with v_old = v_new).

Smoke: ``density_problem`` couples a passive density (advection-diffusion, the existing
``DiffusionProblem``) to the solved MAC velocity; see its docstring.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch

from metaphys.physics import checks, stencils
from metaphys.physics.base import Problem

DEFAULT_WEIGHTS = {"w_nav": 1.0, "w_bound": 20.0, "w_a": 0.1, "w_p": 0.1}


def _at(x: torch.Tensor, di: int, dj: int) -> torch.Tensor:
    """x[i+di, j+dj] with zero padding (|di|, |dj| <= 1)."""
    return stencils.neighbour(stencils.padded(x), di, dj)


def curl(a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """MAC velocity of the vector potential a [N,1,H,W]: (v_y, v_x) = (-Dx_p a, Dy_p a)."""
    return -stencils.dx_p(a), stencils.dy_p(a)


def face_conditions(mask: torch.Tensor, bc: torch.Tensor):
    """(c_y, c_x, b_y, b_x): Dirichlet flags and values of the v_y and v_x faces from corner data."""
    cy = mask * _at(mask, 0, 1)
    cx = mask * _at(mask, 1, 0)
    by = 0.5 * (bc[:, 0:1] + _at(bc[:, 0:1], 0, 1))
    bx = 0.5 * (bc[:, 1:2] + _at(bc[:, 1:2], 1, 0))
    return cy, cx, by, bx


def momentum_residuals(vy_new, vx_new, vy_old, vx_old, p, force, rho, mu, dt):
    """(R_y, R_x) on the v_y and v_x grids (full arrays; only the crop is meaningful)."""
    rho, mu, dt = (t.view(-1, 1, 1, 1) for t in (rho, mu, dt))
    vyb = 0.5 * (vy_new + vy_old)
    vxb = 0.5 * (vx_new + vx_old)
    itop = 0.5 * (_at(vyb, 0, -1) + vyb)
    ibot = 0.5 * (_at(vyb, 1, -1) + _at(vyb, 1, 0))
    ileft = 0.5 * (_at(vxb, -1, 0) + vxb)
    iright = 0.5 * (_at(vxb, -1, 1) + _at(vxb, 0, 1))
    rx = (rho * ((vx_new - vx_old) / dt + vxb * stencils.dx_c(vxb)
                 + 0.5 * (itop * stencils.dy_m(vxb) + ibot * stencils.dy_p(vxb)))
          + stencils.dx_m(p) - mu * stencils.laplacian(vxb, 9) - force[:, 1:2])
    ry = (rho * ((vy_new - vy_old) / dt + vyb * stencils.dy_c(vyb)
                 + 0.5 * (ileft * stencils.dx_m(vyb) + iright * stencils.dx_p(vyb)))
          + stencils.dy_m(p) - mu * stencils.laplacian(vyb, 9) - force[:, 0:1])
    return ry, rx


def _crop_sum(t: torch.Tensor) -> torch.Tensor:
    return t[..., 1:-1, 1:-1].flatten(1).sum(1)


def fluid_terms(u, a_old, mask, bc, force, rho, mu, dt):
    """The four per-sample loss terms [N] (differentiable): nav, bound, gauge_a, gauge_p."""
    h, w = u.shape[-2:]
    ncrop = float((h - 2) * (w - 2))
    a, p = u[:, 0:1], u[:, 1:2]
    vy, vx = curl(a)
    vyo, vxo = curl(a_old)
    ry, rx = momentum_residuals(vy, vx, vyo, vxo, p, force, rho, mu, dt)
    cy, cx, by, bx = face_conditions(mask, bc)
    nav = (_crop_sum((1 - cx) * rx * rx) + _crop_sum((1 - cy) * ry * ry)) / ncrop
    bound = (_crop_sum(cx * (vx - bx) ** 2) + _crop_sum(cy * (vy - by) ** 2)) / (2 * ncrop)
    gauge_a = a.flatten(1).mean(1) ** 2
    gauge_p = p.flatten(1).mean(1) ** 2
    return {"nav": nav, "bound": bound, "gauge_a": gauge_a, "gauge_p": gauge_p}


def weighted_loss_and_grad(terms, u, *args, w_nav: float, w_bound: float, w_a: float, w_p: float):
    """(loss [N], true grad) of the fluid loss w_nav L_nav + w_bound L_bound + w_a L_a + w_p L_p from a
    ``terms(u, *args)`` function (2-D ``fluid_terms``, 3-D ``fluid3d.fluid3d_terms``)."""
    with torch.enable_grad():
        uu = u.detach().requires_grad_(True)
        t = terms(uu, *args)
        loss = w_nav * t["nav"] + w_bound * t["bound"] + w_a * t["gauge_a"] + w_p * t["gauge_p"]
        (grad,) = torch.autograd.grad(loss.sum(), uu)
    return loss.detach(), grad


def fluid_twin(u, a_old, mask, bc, force, rho, mu, dt, w_nav: float = 1.0, w_bound: float = 20.0,
               w_a: float = 0.1, w_p: float = 0.1):
    """PyTorch twin of the ``fluid_loss_grad`` kernel: (loss [N], true grad [N,2,H,W])."""
    return weighted_loss_and_grad(fluid_terms, u, a_old, mask, bc, force, rho, mu, dt,
                                  w_nav=w_nav, w_bound=w_bound, w_a=w_a, w_p=w_p)


def validate_fluid_inputs(u, a_old, mask, bc, force, rho, mu, dt, weights: dict) -> None:
    """Shapes, dtypes, devices, mask values, finiteness and signs (ValueError/TypeError)."""
    checks.check_field("u", u)
    n, c, h, w = u.shape
    if c != 2:
        raise ValueError(f"u must have 2 channels (vector potential a, pressure p), got shape {tuple(u.shape)}")
    checks.check_grid("u", u)
    dev = u.device
    checks.check_field("a_old", a_old, shape=(n, 1, h, w), device=dev)
    checks.check_field("mask", mask, shape=(n, 1, h, w), device=dev)
    checks.check_mask("mask", mask)
    checks.check_field("bc", bc, shape=(n, 2, h, w), device=dev)
    checks.check_field("force", force, shape=(n, 2, h, w), device=dev)
    check_values_and_parameters(u, a_old, bc, force, rho, mu, dt, weights, n, dev)


def check_values_and_parameters(u, a_old, bc, force, rho, mu, dt, weights: dict, n: int, dev) -> None:
    """The checks the 2-D and 3-D fluid inputs share: finite fields, rho > 0, mu >= 0, dt > 0 per
    sample, loss weights finite and >= 0."""
    for name, t in (("u", u), ("a_old", a_old), ("bc", bc), ("force", force)):
        checks.check_finite(name, t)
    checks.batch_param("rho", rho, n, device=dev, positive=True)
    checks.batch_param("mu", mu, n, device=dev, nonnegative=True)
    checks.batch_param("dt", dt, n, device=dev, positive=True)
    for k, v in weights.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")


class FluidProblem(Problem):
    """One trapezoidal time step of incompressible Navier-Stokes for N samples (unknown (a, p)).

    Fields: ``a_old`` [N,1,H,W] (vector potential of the previous step), ``mask`` [N,1,H,W] and
    ``bc`` [N,2,H,W] (corner Dirichlet mask and velocity values, channels (v_y, v_x)),
    ``force`` [N,2,H,W] (force density on the (v_y, v_x) faces), ``rho``, ``mu``, ``dt`` [N].
    Loss weights are plain numbers (``w_nav``, ``w_bound``, ``w_a``, ``w_p``).
    """

    op_name = "fluid_loss_grad"
    channels = 2
    time_dependent = True
    divergence_threshold = 2e4
    twin = staticmethod(fluid_twin)

    def __init__(self, mask, bc=None, *, a_old=None, force=None, rho=1.0, mu=0.1, dt=1.0,
                 w_nav: float = 1.0, w_bound: float = 20.0, w_a: float = 0.1, w_p: float = 0.1):
        checks.check_field("mask", mask)
        checks.check_grid("mask", mask)
        n, dev = mask.shape[0], mask.device
        m = mask.contiguous()
        bc = checks.as_field("bc", bc, m, 2)
        force = checks.as_field("force", force, m, 2)
        a_old = checks.as_field("a_old", a_old, m, 1)
        rho = checks.batch_param("rho", rho, n, device=dev, positive=True)
        mu = checks.batch_param("mu", mu, n, device=dev, nonnegative=True)
        dt = checks.batch_param("dt", dt, n, device=dev, positive=True)
        self.weights = {"w_nav": float(w_nav), "w_bound": float(w_bound), "w_a": float(w_a), "w_p": float(w_p)}
        u0 = torch.zeros(n, 2, *m.shape[-2:], dtype=torch.float64, device=dev)
        validate_fluid_inputs(u0, a_old, m, bc, force, rho, mu, dt, self.weights)
        super().__init__({"a_old": a_old, "mask": m, "bc": bc, "force": force, "rho": rho, "mu": mu, "dt": dt})

    def op_args(self):
        fl, wt = self.fields, self.weights
        return (fl["a_old"], fl["mask"], fl["bc"], fl["force"], fl["rho"], fl["mu"], fl["dt"],
                wt["w_nav"], wt["w_bound"], wt["w_a"], wt["w_p"])

    def impose(self, u):
        return u  # BCs are soft (L_bound); nothing to impose on (a, p)

    def initial_guess(self):
        """(a_old, 0): the previous potential is the natural start of a step."""
        p = torch.zeros_like(self.fields["a_old"])
        return torch.cat([self.fields["a_old"], p], dim=1)

    def advance(self, u):
        """a_old <- a_new; (a, p) are kept as the warm start of the next step."""
        u = u.detach()
        self.fields["a_old"] = u[:, 0:1].clone()
        return u.clone()

    def set_boundary(self, mask=None, bc=None, force=None) -> None:
        """New geometry / wall velocities / forces for the coming step (moving obstacles)."""
        fl = self.fields
        if mask is not None:
            checks.check_field("mask", mask, shape=fl["mask"].shape, device=self.device)
            checks.check_mask("mask", mask)
            fl["mask"] = mask.contiguous()
        if bc is not None:
            fl["bc"] = checks.as_field("bc", bc, fl["mask"], 2)
            checks.check_finite("bc", fl["bc"])
        if force is not None:
            fl["force"] = checks.as_field("force", force, fl["mask"], 2)
            checks.check_finite("force", fl["force"])

    def velocity(self, u) -> Tuple[torch.Tensor, torch.Tensor]:
        """(v_x, v_y) of the unknown on their MAC faces, each [N,1,H,W] (note: x first here)."""
        vy, vx = curl(u[:, 0:1])
        return vx, vy

    def terms(self, u) -> dict:
        """The unweighted per-sample loss terms (nav, bound, gauge_a, gauge_p), twin-evaluated."""
        fl = self.fields
        with torch.no_grad():
            return fluid_terms(u, fl["a_old"], fl["mask"], fl["bc"], fl["force"], fl["rho"], fl["mu"], fl["dt"])


def fluid_metrics(problem: FluidProblem, u: torch.Tensor, *, steady: bool = False) -> dict:
    """Evaluation metrics per sample: ``L_d`` and ``L_p`` (notes section 9.3).

    L_p = mean_crop((1-c_x) R_x^2) + mean_crop((1-c_y) R_y^2), the momentum residual of this
    step, measured BEFORE ``advance`` (with the true v_old). ``steady=True`` sets v_old = v_new,
    which is what the reference measures (after its advance): the steady-state residual.
    L_d = mean over rows/cols 2..H-3 of (Dx_p v~_x + Dy_p v~_y)^2, with v~ = v_new whose
    Dirichlet faces are replaced by their BC values (so it captures the BC mismatch).
    """
    fl = problem.fields
    u = u.detach()
    a, p = u[:, 0:1], u[:, 1:2]
    a_old = a if steady else fl["a_old"]
    h, w = u.shape[-2:]
    with torch.no_grad():
        vy, vx = curl(a)
        vyo, vxo = curl(a_old)
        ry, rx = momentum_residuals(vy, vx, vyo, vxo, p, fl["force"], fl["rho"], fl["mu"], fl["dt"])
        cy, cx, by, bx = face_conditions(fl["mask"], fl["bc"])
        ncrop = float((h - 2) * (w - 2))
        lp = (_crop_sum((1 - cx) * rx * rx) + _crop_sum((1 - cy) * ry * ry)) / ncrop
        vxt = cx * bx + (1 - cx) * vx
        vyt = cy * by + (1 - cy) * vy
        div = stencils.dx_p(vxt) + stencils.dy_p(vyt)
        inner = div[..., 2:h - 2, 2:w - 2]
        ld = (inner * inner).flatten(1).mean(1) if inner.numel() else torch.zeros_like(lp)
    return {"L_p": lp, "L_d": ld}


def divergence(u: torch.Tensor) -> torch.Tensor:
    """Discrete MAC divergence Dx_p(v_x) + Dy_p(v_y) at the cell centres of curl(a) ([N,1,H,W])."""
    vy, vx = curl(u[:, 0:1])
    return stencils.dx_p(vx) + stencils.dy_p(vy)


# --------------------------------------------------------------------------------------------
# Geometry helpers (masks and wall velocities on the corner grid)
# --------------------------------------------------------------------------------------------

def fluid_geometry(n: int, h: int, w: int, *, kind: str = "tunnel", inflow=0.0, profile: str = "uniform",
                   wall_rows: int = 3, wall_cols: int = 5, inflow_margin: int = 10,
                   device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mask [n,1,h,w], bc [n,2,h,w]) of a closed box or a wind tunnel, built from zeros.

    kind="box": walls on rows 0..wall_rows-1, h-wall_rows..h-1 and columns 0..wall_cols-1,
    w-wall_cols..w-1, all no-slip (velocity 0).
    kind="tunnel": the same walls; the side strips carry v_x = ``inflow`` (number or [n]) on
    rows inflow_margin..h-inflow_margin-1 of both strips (inflow = outflow, the reference's
    setup). ``profile="parabolic"`` instead sets corner values such that the Dirichlet v_x
    FACES of both strips carry exactly the Poiseuille profile U*4(y-y0)(y1-y)/(y1-y0)^2 with
    y0, y1 the positions of the innermost no-slip faces of the top/bottom walls (face i sits at
    y = i+1/2; y0 = wall_rows-3/2, y1 = h-wall_rows+1/2), U = ``inflow`` the centre speed; the
    profile spans the whole channel. (The alternating corner values are what makes the face
    averages exact.)
    """
    if kind not in ("box", "tunnel"):
        raise ValueError(f"kind must be 'box' or 'tunnel', got {kind!r}")
    if profile not in ("uniform", "parabolic"):
        raise ValueError(f"profile must be 'uniform' or 'parabolic', got {profile!r}")
    if h < 2 * wall_rows + 3 or w < 2 * wall_cols + 3:
        raise ValueError(f"grid {h}x{w} too small for walls of {wall_rows} rows / {wall_cols} columns")
    f64 = torch.float64
    mask = torch.zeros(n, 1, h, w, dtype=f64, device=device)
    bc = torch.zeros(n, 2, h, w, dtype=f64, device=device)
    mask[..., :wall_rows, :] = 1
    mask[..., h - wall_rows:, :] = 1
    mask[..., :, :wall_cols] = 1
    mask[..., :, w - wall_cols:] = 1
    if kind == "tunnel":
        speed = checks.batch_param("inflow", inflow, n, device=device).view(n, 1)
        if profile == "uniform":
            lo, hi = inflow_margin, h - inflow_margin
            if not 0 <= lo < hi <= h:
                raise ValueError(f"inflow_margin={inflow_margin} leaves no inflow rows on a grid of height {h}")
            col = torch.zeros(n, h, dtype=f64, device=device)
            col[:, lo:hi] = speed
        else:
            # face i sits at y = i + 1/2; faces wall_rows-2 and h-wall_rows are the innermost no-slip ones
            y0, y1 = wall_rows - 1.5, h - wall_rows + 0.5
            y = torch.arange(h - 1, dtype=f64, device=device) + 0.5
            face = (4 * (y - y0) * (y1 - y) / (y1 - y0) ** 2).clamp_min(0.0)
            face = speed * face.view(1, -1)
            # corner values b with (b[i] + b[i+1]) / 2 = face[i], b[0] = 0
            col = torch.zeros(n, h, dtype=f64, device=device)
            for i in range(h - 1):
                col[:, i + 1] = 2 * face[:, i] - col[:, i]
        strip = col.view(n, h, 1)
        bc[:, 1, :, :wall_cols] = strip
        bc[:, 1, :, w - wall_cols:] = strip
    return mask, bc


def add_obstacle(mask: torch.Tensor, bc: torch.Tensor, shape: str = "circle", *, center: Sequence[float],
                 radius: Optional[float] = None, half: Optional[Sequence[float]] = None,
                 velocity: Sequence[float] = (0.0, 0.0), omega: float = 0.0):
    """(mask, bc) with a circle or axis-aligned box obstacle added (new tensors; all samples).

    center = (row, col) in corner coordinates; circle: corners with dy^2 + dx^2 < radius^2;
    box: |dy| <= half[0] and |dx| <= half[1]. Wall velocity on the obstacle corners (replacing
    any previous value there) = translation ``velocity`` (v_y, v_x) plus a rigid rotation
    ``omega``: v_y = omega*dx, v_x = -omega*dy (the reference's magnus cylinder).
    """
    if shape not in ("circle", "box"):
        raise ValueError(f"shape must be 'circle' or 'box', got {shape!r}")
    h, w = mask.shape[-2:]
    dev = mask.device
    ii = torch.arange(h, dtype=torch.float64, device=dev).view(h, 1)
    jj = torch.arange(w, dtype=torch.float64, device=dev).view(1, w)
    dy, dx = ii - float(center[0]), jj - float(center[1])
    if shape == "circle":
        if radius is None or not radius > 0:
            raise ValueError(f"radius must be > 0 for a circle, got {radius!r}")
        inside = dy * dy + dx * dx < float(radius) ** 2
    else:
        if half is None or len(half) != 2 or min(half) < 0:
            raise ValueError(f"half must be two half-sizes >= 0 (rows, cols) for a box, got {half!r}")
        inside = (dy.abs() <= float(half[0])) & (dx.abs() <= float(half[1]))
    inside = inside.to(torch.float64).expand(h, w)
    vy = float(velocity[0]) + float(omega) * dx
    vx = float(velocity[1]) - float(omega) * dy
    mask = torch.maximum(mask, inside.expand_as(mask)).contiguous()
    bc = bc.clone()
    bc[:, 0] = inside * vy.expand(h, w) + (1 - inside) * bc[:, 0]
    bc[:, 1] = inside * vx.expand(h, w) + (1 - inside) * bc[:, 1]
    return mask, bc


# --------------------------------------------------------------------------------------------
# Smoke: passive density transported by the solved velocity
# --------------------------------------------------------------------------------------------

def corner_velocity(problem: FluidProblem, u: torch.Tensor, *, which: str = "mean",
                    mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MAC velocity interpolated to the corner grid, channels (v_y, v_x), [N,2,H,W].

    v_x(i,j) = (v_x[i-1,j] + v_x[i,j]) / 2 and v_y(i,j) = (v_y[i,j-1] + v_y[i,j]) / 2 (the
    notes' staggered -> normal interpolation). With v = curl(a), the central-difference
    divergence Dx_c(v_x) + Dy_c(v_y) of this field is exactly 0 wherever no masking interferes
    (it telescopes to a mixed second difference of a that cancels). ``which``: "mean" = the
    trapezoidal v_bar = (v_old + v_new)/2 used by the momentum equation, "new" = v_new, "old".
    Velocities are set to 0 on masked corners (``mask``, default the fluid mask), so no
    advective flux crosses into Dirichlet density cells.
    """
    if which not in ("mean", "new", "old"):
        raise ValueError(f"which must be 'mean', 'new' or 'old', got {which!r}")
    a_new, a_old = u.detach()[:, 0:1], problem.fields["a_old"]
    a = {"new": a_new, "old": a_old, "mean": 0.5 * (a_new + a_old)}[which]
    vy, vx = curl(a)
    vxc = 0.5 * (_at(vx, -1, 0) + vx)
    vyc = 0.5 * (_at(vy, 0, -1) + vy)
    m = problem.fields["mask"] if mask is None else mask
    return ((1 - m) * torch.cat([vyc, vxc], dim=1)).contiguous()


def density_problem(problem: FluidProblem, u: torch.Tensor, c_old: torch.Tensor, *, D=0.0, source=None,
                    mask: Optional[torch.Tensor] = None, bc=None, which: str = "mean", stencil: int = 9,
                    true_grad: bool = False):
    """A ``DiffusionProblem`` advecting a passive density c with the fluid velocity of ``u``.

    The density lives on the CORNER grid (where a and the fluid mask live), so the fluid's mask
    is its default Dirichlet mask (bc 0 on walls/obstacles). The velocity is
    ``corner_velocity(problem, u, which=which)``: divergence-free in the central-difference
    sense the diffusion residual uses, and 0 on Dirichlet corners. The diffusion residual's
    split v.grad(c) + (div v) c with central differences is itself a conservative flux form
    (interface flux (v_j c_{j+1} + v_{j+1} c_j)/2), so with D = 0, zero velocity on Dirichlet
    cells and c = 0 there, the total density is conserved exactly by a converged step. dt is the
    fluid's dt. Build it from the solved ``u`` BEFORE ``problem.advance(u)`` (which="mean" and
    "old" read ``a_old``), then solve it for c_new and advance both problems.
    """
    from metaphys.physics.diffusion import DiffusionProblem

    m = problem.fields["mask"] if mask is None else mask
    vel = corner_velocity(problem, u, which=which, mask=m)
    return DiffusionProblem(m, bc, c_old=c_old, velocity=vel, source=source, D=D, dt=problem.fields["dt"],
                            stencil=stencil, true_grad=true_grad)


# --------------------------------------------------------------------------------------------
# Smoke: monotone transport of scalars on the corner grid (explicit finite volumes)
# --------------------------------------------------------------------------------------------
# Each corner is the centre of a unit cell; neighbouring cells exchange fluxes through the face
# between them. Fluxes are upwind with MUSCL face values (monotonized-central limiter) plus
# diffusion, stepped by Heun's method (SSP-RK2, a convex combination of two forward Euler
# steps). The face values never exceed twice the upwind cell's value, so a forward Euler step
# keeps every cell >= 0 while h * (2 * outflow + D * open faces) <= 1 (``transport_rate_bound``);
# ``transport`` splits a step into that many sub-steps. Faces touching a masked corner pass
# nothing: mass changes only by the sources (and where a moving obstacle covers a cell).

def face_velocities(vel: torch.Tensor, mask: torch.Tensor):
    """Normal velocities and open flags of the faces between corner cells.

    ``vel`` [N,2,H,W] is ``corner_velocity`` (channels v_y, v_x). Returns (u_row [N,1,H-1,W] at
    (i+1/2, j), u_col [N,1,H,W-1] at (i, j+1/2), open_row, open_col): a face velocity is the mean of
    its two corners' normal components and 0 where either corner is masked. The divergence of these
    faces is the central divergence of ``vel``, 0 wherever no mask interferes (``corner_velocity``).
    """
    free = 1 - mask
    open_row = free[..., 1:, :] * free[..., :-1, :]
    open_col = free[..., :, 1:] * free[..., :, :-1]
    u_row = 0.5 * (vel[:, 0:1, 1:, :] + vel[:, 0:1, :-1, :]) * open_row
    u_col = 0.5 * (vel[:, 1:2, :, 1:] + vel[:, 1:2, :, :-1]) * open_col
    return u_row, u_col, open_row, open_col


def _mc_slopes(delta: torch.Tensor) -> torch.Tensor:
    """Monotonized-central limited slopes [.., W] from the face differences ``delta`` [.., W-1]
    (0 beyond the ends): minmod(2 d-, 2 d+, (d- + d+) / 2)."""
    left = torch.nn.functional.pad(delta, (1, 0))
    right = torch.nn.functional.pad(delta, (0, 1))
    same = (left * right) > 0
    size = torch.minimum(torch.minimum(2 * left.abs(), 2 * right.abs()), 0.5 * (left + right).abs())
    return torch.where(same, torch.sign(left) * size, torch.zeros_like(size))


def _axis_flux(c: torch.Tensor, u: torch.Tensor, open_: torch.Tensor, D) -> torch.Tensor:
    """Flux through the faces along the last axis: upwind MUSCL advection minus D * gradient."""
    delta = (c[..., 1:] - c[..., :-1]) * open_  # no slope across walls: first order next to them
    slope = _mc_slopes(delta)
    from_left = c[..., :-1] + 0.5 * slope[..., :-1]
    from_right = c[..., 1:] - 0.5 * slope[..., 1:]
    return torch.relu(u) * from_left - torch.relu(-u) * from_right - D * delta


def _flux_divergence(flux: torch.Tensor, dim: int) -> torch.Tensor:
    """Net outflow per cell of face fluxes along ``dim`` (-1 or -2); no flux through the grid's ends."""
    pad_hi, pad_lo = ((0, 1), (1, 0)) if dim == -1 else ((0, 0, 0, 1), (0, 0, 1, 0))
    return torch.nn.functional.pad(flux, pad_hi) - torch.nn.functional.pad(flux, pad_lo)


def transport_rate(c: torch.Tensor, faces, D=0.0, source=None) -> torch.Tensor:
    """dc/dt [N,C,H,W] of scalars ``c`` carried by ``faces`` (``face_velocities``), with diffusion
    ``D`` (cells^2 per time unit; a number or a tensor broadcasting to [N,C,1,1]) and ``source``."""
    u_row, u_col, open_row, open_col = faces
    f_col = _axis_flux(c, u_col, open_col, D)
    f_row = _axis_flux(c.transpose(-1, -2), u_row.transpose(-1, -2), open_row.transpose(-1, -2), D).transpose(-1, -2)
    rate = -_flux_divergence(f_col, -1) - _flux_divergence(f_row, -2)
    return rate if source is None else rate + source


def transport_rate_bound(faces, D=0.0) -> float:
    """max over cells of 2 * (outflow through its faces) + D * (open faces): a forward Euler step
    of length h keeps the scalars >= 0 when h times this is <= 1."""
    u_row, u_col, open_row, open_col = faces
    pad = torch.nn.functional.pad
    out = (pad(torch.relu(u_col), (0, 1)) + pad(torch.relu(-u_col), (1, 0))
           + pad(torch.relu(u_row), (0, 0, 0, 1)) + pad(torch.relu(-u_row), (0, 0, 1, 0)))
    n_open = pad(open_col, (0, 1)) + pad(open_col, (1, 0)) + pad(open_row, (0, 0, 0, 1)) + pad(open_row, (0, 0, 1, 0))
    d_max = float(torch.as_tensor(D, dtype=torch.float64).max())
    return float((2 * out + d_max * n_open).max())


def transport(c: torch.Tensor, vel: torch.Tensor, mask: torch.Tensor, dt: float, *, D=0.0, source=None,
              max_substeps: int = 100000):
    """Carry scalars ``c`` [N,C,H,W] (>= 0, 0 on masked corners) for ``dt`` time units by the corner
    velocity ``vel`` [N,2,H,W] (cells per time unit) with diffusion ``D`` and ``source`` (per time unit,
    >= 0, 0 on masked corners); (c_new, sub-steps). Non-negative and mass-conserving for any dt: the
    step is cut into Heun sub-steps short enough for positivity (see above). Raises ValueError when
    that needs more than ``max_substeps`` (a velocity or diffusion the grid cannot carry)."""
    return heun_substeps(c, face_velocities(vel, mask), D, source, dt, max_substeps, transport_rate,
                         transport_rate_bound)


def heun_substeps(c, faces, D, source, dt: float, max_substeps: int, rate, rate_bound):
    """Heun sub-steps of ``rate(c, faces, D, source)`` over ``dt``, as many as ``rate_bound(faces, D)``
    says positivity needs (the 2-D transport here, the 3-D one in ``fluid3d``); (c_new, sub-steps)."""
    bound = rate_bound(faces, D) * float(dt)
    if not math.isfinite(bound) or bound > max_substeps:
        raise ValueError(f"the transport would need {bound:.3g} sub-steps (more than {max_substeps}): the flow "
                         "or the diffusion is too fast for the grid")
    k = max(1, math.ceil(bound * (1 + 1e-12)))
    h = float(dt) / k
    for _ in range(k):
        c1 = c + h * rate(c, faces, D, source)
        c2 = c1 + h * rate(c1, faces, D, source)
        c = 0.5 * (c + c2)
    return c, k
