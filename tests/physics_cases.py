"""Shared helpers for the op tests: random problem pieces (masks with a Dirichlet frame plus random
interior Dirichlet cells, boundary values, fields and per-sample parameters), the argument tuples of
every ``torch.ops.metaphys.*_loss_grad`` op (``OPS`` for the four grid ops, ``FULL_ARGS`` for all),
the comparison used for kernel == twin, and a damped Newton solver for physics tests.
"""
from __future__ import annotations

import torch

try:
    import pytest
except ImportError:  # benchmarks/gpu_check.sh may run tests/test_cuda_ops.py as a script without pytest
    pytest = None

from metaphys import _ops
from metaphys.physics.burgers import burgers_twin
from metaphys.physics.cloth import cloth_twin, rest_grid, table_from_lists
from metaphys.physics.diffusion import diffusion_twin
from metaphys.physics.fluid import fluid_twin
from metaphys.physics.fluid3d import fluid3d_twin
from metaphys.physics.laplace import laplace_twin
from metaphys.physics.laplace3d import laplace3d_twin
from metaphys.physics.wave import wave_twin

F64 = torch.float64

# Odd and non-square sizes on purpose; [N, 1, H, W].
SIZES = [(1, 1, 7, 9), (3, 1, 16, 23), (2, 1, 31, 17)]
STENCILS = [9, 5]
GRAD_MODES = [False, True]

requires_kernels = (pytest.mark.skipif(not _ops.kernels_available(), reason="metaphys._C is not built (run `make build`)")
                    if pytest is not None else (lambda f: f))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_mask(g: torch.Generator, n: int, h: int, w: int, frame: int = 1, p_interior: float = 0.15,
                device="cpu") -> torch.Tensor:
    """[n,1,h,w] float64 mask: a ``frame``-cell Dirichlet ring plus random interior Dirichlet cells."""
    m = (torch.rand(n, 1, h, w, generator=g, dtype=F64) < p_interior).to(F64)
    if frame > 0:
        m[..., :frame, :] = 1
        m[..., -frame:, :] = 1
        m[..., :, :frame] = 1
        m[..., :, -frame:] = 1
    return m.to(device)


def field(g: torch.Generator, n: int, c: int, h: int, w: int, scale: float = 1.0, device="cpu") -> torch.Tensor:
    return (scale * torch.randn(n, c, h, w, generator=g, dtype=F64)).to(device)


def param(g: torch.Generator, n: int, lo: float, hi: float, device="cpu") -> torch.Tensor:
    """Per-sample parameter, log-uniform in [lo, hi]."""
    t = torch.rand(n, generator=g, dtype=F64)
    return torch.exp(torch.log(torch.tensor(lo, dtype=F64)) * (1 - t) + torch.log(torch.tensor(hi, dtype=F64)) * t).to(device)


# --- op argument tuples (everything except stencil and true_grad) ------------------------------

def laplace_args(g, size, device="cpu", frame=1):
    n, _, h, w = size
    m = random_mask(g, n, h, w, frame, device=device)
    return (field(g, n, 1, h, w, device=device), m, field(g, n, 1, h, w, device=device),
            field(g, n, 1, h, w, 0.5, device=device))


def diffusion_args(g, size, device="cpu", frame=1):
    n, _, h, w = size
    m = random_mask(g, n, h, w, frame, device=device)
    return (field(g, n, 1, h, w, device=device), field(g, n, 1, h, w, device=device), m,
            field(g, n, 1, h, w, device=device), field(g, n, 2, h, w, 2.0, device=device),
            field(g, n, 1, h, w, 0.3, device=device), param(g, n, 0.1, 10.0, device=device),
            param(g, n, 0.2, 2.0, device=device))


def wave_args(g, size, device="cpu", frame=1):
    n, _, h, w = size
    m = random_mask(g, n, h, w, frame, device=device)
    return (field(g, n, 1, h, w, device=device), field(g, n, 1, h, w, device=device),
            field(g, n, 1, h, w, device=device), m, field(g, n, 1, h, w, device=device),
            param(g, n, 0.1, 10.0, device=device), param(g, n, 0.2, 2.0, device=device))


def burgers_args(g, size, device="cpu", frame=1):
    n, _, h, w = size
    m = random_mask(g, n, h, w, frame, device=device)
    return (field(g, n, 2, h, w, device=device), field(g, n, 2, h, w, device=device), m,
            field(g, n, 2, h, w, device=device), param(g, n, 0.01, 10.0, device=device),
            param(g, n, 0.2, 2.0, device=device))


# op name -> (twin, argument generator)
OPS = {
    "laplace_loss_grad": (laplace_twin, laplace_args),
    "diffusion_loss_grad": (diffusion_twin, diffusion_args),
    "wave_loss_grad": (wave_twin, wave_args),
    "burgers_loss_grad": (burgers_twin, burgers_args),
}


def fluid_args(seed, n, h, w, weights=(1.3, 20.0, 0.1, 0.7)):
    """Random op arguments: frame walls + random obstacle corners, random bc/force/params."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, 1, h, w, generator=g) < 0.2).to(F64)
    mask[..., 0, :] = 1
    mask[..., -1, :] = 1
    mask[..., :, 0] = 1
    mask[..., :, -1] = 1

    def rnd(c, s=1.0):
        return s * torch.randn(n, c, h, w, generator=g, dtype=F64)

    def par(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=F64)

    u, a_old, bc, force = rnd(2), rnd(1), rnd(2), rnd(2, 0.3)
    return (u, a_old, mask, bc, force, par(0.2, 3.0), par(0.01, 1.0), par(0.3, 4.0)) + tuple(weights)


def fluid3d_args(seed, n, h, w, d=None, weights=(1.3, 20.0, 0.1, 0.7), p_mask=0.3):
    """Random 3-D op arguments [n, C, d, h, w] (d defaults to min(h, w) - 1, at least 3): frame walls +
    random obstacle nodes (dense enough that interior faces with all 4 corners masked occur), random
    bc/force/params."""
    d = max(3, min(h, w) - 1) if d is None else d
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, 1, d, h, w, generator=g) < p_mask).to(F64)
    for dim in (2, 3, 4):
        mask.narrow(dim, 0, 1).fill_(1)
        mask.narrow(dim, mask.shape[dim] - 1, 1).fill_(1)

    def rnd(c, s=1.0):
        return s * torch.randn(n, c, d, h, w, generator=g, dtype=F64)

    def par(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=F64)

    u, a_old, bc, force = rnd(4), rnd(3), rnd(3), rnd(3, 0.3)
    return (u, a_old, mask, bc, force, par(0.2, 3.0), par(0.01, 1.0), par(0.3, 4.0)) + tuple(weights)


def laplace3d_args(seed, n, h, w, d=None, stencil=27, true_grad=False, p_mask=0.15):
    """Random 3-D Laplace op arguments [n, 1, d, h, w] (d defaults to min(h, w) - 1, at least 3): a 1-node
    Dirichlet frame + random interior Dirichlet nodes, random u, bc and f; then stencil, true_grad."""
    d = max(3, min(h, w) - 1) if d is None else d
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, 1, d, h, w, generator=g) < p_mask).to(F64)
    for dim in (2, 3, 4):
        mask.narrow(dim, 0, 1).fill_(1)
        mask.narrow(dim, mask.shape[dim] - 1, 1).fill_(1)

    def rnd(s=1.0):
        return s * torch.randn(n, 1, d, h, w, generator=g, dtype=F64)

    return (rnd(), mask, rnd(), rnd(0.5), stencil, true_grad)


def cloth_args(seed, n, h, w):
    """Random op arguments (a first): perturbed grid, velocities, hard/soft/no pins, active and
    padding colliders, random gravity/wind and parameters. Every term of the loss is active."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, s=1.0):
        return s * torch.randn(*shape, generator=g, dtype=F64)

    def par(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=F64)

    rest = par(0.5, 1.5)
    x = rest_grid(n, h, w, rest) + rnd(n, 3, h, w, s=0.2)
    v = rnd(n, 3, h, w, s=0.3)
    pw = torch.rand(n, 1, h, w, generator=g, dtype=F64)
    pw[pw < 0.4] = 0.0
    pw[pw > 0.85] = 1.0
    px = x + rnd(n, 3, h, w, s=0.1)
    # colliders centred on random vertices so that some vertices are in contact
    idx = torch.randint(0, h * w, (n, 3), generator=g)
    centres = x.flatten(2).gather(2, idx[:, None, :].expand(n, 3, 3)).permute(0, 2, 1)
    spheres = torch.cat([centres + rnd(n, 3, 3, s=0.3), 0.3 + torch.rand(n, 3, 1, generator=g, dtype=F64)], 2)
    spheres[:, 2] = 0.0  # a padding entry
    boxes = torch.cat([centres[:, :2] + rnd(n, 2, 3, s=0.3), 0.2 + torch.rand(n, 2, 3, generator=g, dtype=F64)], 2)
    boxes[:, 1, 3:] = 0.0  # a padding entry
    # a rotated box per sample (a random rotation, det +1) on the third centre
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=F64))
    rot = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)
    rot = rot * torch.sign(torch.linalg.det(rot)).view(n, 1, 1)
    obbs = torch.cat([centres[:, 2:] + rnd(n, 1, 3, s=0.3), 0.2 + torch.rand(n, 1, 3, generator=g, dtype=F64),
                      rot.reshape(n, 1, 9)], 2)
    colliders = table_from_lists(n, spheres, boxes, obbs)   # the collider table [n, 6, 18] (metaphys.colliders)
    params = (rest, par(10, 200), par(0, 20), par(0, 2), par(0.5, 2), par(0, 0.5), par(0, 50), par(100, 1000),
              par(0.05, 0.5), par(0.3, 1.5))
    a = rnd(n, 3, h, w, s=0.3)
    return (a, x, v, pw, px, colliders, rnd(n, 3), rnd(n, 3)) + params


def _grid_full_args(name: str):
    """(seed, n, h, w) -> a grid op's complete arguments (9-point stencil, pseudo-gradient)."""
    _, make = OPS[name]
    return lambda seed, n, h, w: make(gen(seed), (n, 1, h, w)) + (9, False)


# op name -> (seed, n, h, w) -> its complete argument tuple (every op in metaphys.registry)
FULL_ARGS = {**{name: _grid_full_args(name) for name in OPS}, "fluid_loss_grad": fluid_args,
             "fluid3d_loss_grad": fluid3d_args, "laplace3d_loss_grad": laplace3d_args, "cloth_loss_grad": cloth_args}
TWINS = {**{name: twin for name, (twin, _) in OPS.items()}, "fluid_loss_grad": fluid_twin,
         "fluid3d_loss_grad": fluid3d_twin, "laplace3d_loss_grad": laplace3d_twin, "cloth_loss_grad": cloth_twin}


def kernel(name: str):
    return getattr(torch.ops.metaphys, name)


def assert_close_rel(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-12, what: str = ""):
    """|got - want| <= rel * (|want| + max|want|): relative per element, with the field's scale as
    the floor for entries that cancel to ~0."""
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype)
    assert bool(torch.isfinite(got).all()), f"{what}: non-finite values in the result"
    scale = float(want.abs().max()) if want.numel() else 0.0
    err = (got - want).abs()
    bound = rel * (want.abs() + scale)
    worst = float((err - bound).max()) if want.numel() else 0.0
    assert worst <= 0.0, f"{what}: max |diff| {float(err.max()):.3e} exceeds {rel:g} relative (scale {scale:.3e})"


def check_kernel_matches_twin(name: str, size, stencil: int, true_grad: bool, seed: int = 0, rel: float = 1e-12,
                              frame: int = 1):
    twin, make = OPS[name]
    args = make(gen(seed), size, frame=frame) + (stencil, true_grad)
    lk, gk = kernel(name)(*args)
    lt, gt = twin(*args)
    assert_close_rel(lk, lt, rel, f"{name} loss")
    assert_close_rel(gk, gt, rel, f"{name} grad")
    # the gradient vanishes on Dirichlet cells in both modes
    mask = args[2] if name in ("diffusion_loss_grad", "burgers_loss_grad") else args[1]
    if name == "wave_loss_grad":
        mask = args[3]
    assert float((gk * mask).abs().max()) == 0.0


def check_opcheck(name: str, size=(2, 1, 6, 7), seed: int = 3):
    """torch.library.opcheck on one grid op with both gradient modes."""
    _, make = OPS[name]
    for true_grad in (False, True):
        opcheck(name, make(gen(seed), size) + (9, true_grad))


def opcheck(name: str, args):
    """torch.library.opcheck: schema, autograd registration, fake kernel and AOT dispatch of one op."""
    u = args[0].clone().requires_grad_(True)
    torch.library.opcheck(kernel(name), (u,) + tuple(args[1:]),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


def bad_input_cases(name: str, size=(2, 1, 6, 7)):
    """(label, args, expected message regex) for the kernel-side TORCH_CHECKs of one op."""
    _, make = OPS[name]
    args = list(make(gen(11), size)) + [9, False]
    # index of mask and of the parameters in each op's argument list
    mask_at = {"laplace_loss_grad": 1, "diffusion_loss_grad": 2, "wave_loss_grad": 3, "burgers_loss_grad": 2}[name]
    dt_at = {"diffusion_loss_grad": 7, "wave_loss_grad": 6, "burgers_loss_grad": 5}.get(name)
    p_at = {"diffusion_loss_grad": (6, "D"), "wave_loss_grad": (5, "c"), "burgers_loss_grad": (4, "mu")}.get(name)
    stencil_at = len(args) - 2
    cases = []

    def with_(k, v):
        a = list(args)
        a[k] = v
        return tuple(a)

    cases.append(("float32 unknown", with_(0, args[0].float()), "must be float64"))
    cases.append(("float32 mask", with_(mask_at, args[mask_at].float()), "mask must be float64"))
    u = args[0]
    cases.append(("3-d unknown", with_(0, u[:, 0]), "must have 4 dimensions"))
    cases.append(("mask shape", with_(mask_at, args[mask_at][:, :, :-1].contiguous()), r"mask must have shape \["))
    wrong_c = torch.zeros(u.shape[0], 3, u.shape[2], u.shape[3], dtype=F64)
    cases.append(("channels", with_(0, wrong_c), "channel"))
    m = args[mask_at].clone()
    m[0, 0, 2, 2] = 0.5
    cases.append(("mask 0.5", with_(mask_at, m), "mask must contain only 0"))
    nc = torch.zeros(u.shape[0], u.shape[1], u.shape[3], u.shape[2], dtype=F64).transpose(2, 3)
    cases.append(("non-contiguous", with_(0, nc), "must be contiguous"))
    cases.append(("stencil 7", with_(stencil_at, 7), "stencil must be 9 .* or 5, got 7"))
    if dt_at is not None:
        dt = args[dt_at].clone()
        dt[0] = -1.0
        cases.append(("negative dt", with_(dt_at, dt), "dt must be > 0"))
        cases.append(("dt shape", with_(dt_at, args[dt_at][:1].expand(3).contiguous()), r"dt must have shape \["))
        k, pname = p_at
        p = args[k].clone()
        p[-1] = float("nan")
        cases.append((f"NaN {pname}", with_(k, p), f"{pname} must be finite"))
    return cases


# --- problems (the public API) for gradcheck ----------------------------------------------------

def make_problem(name: str, seed: int, size=(2, 1, 6, 7), stencil: int = 9, true_grad: bool = True):
    """(problem, unknown) built through the Problem constructors from the op's random arguments."""
    from metaphys.physics import BurgersProblem, DiffusionProblem, LaplaceProblem, WaveProblem
    _, make = OPS[name]
    a = make(gen(seed), size)
    kw = dict(stencil=stencil, true_grad=true_grad)
    if name == "laplace_loss_grad":
        return LaplaceProblem(a[1], a[2], a[3], **kw), a[0]
    if name == "diffusion_loss_grad":
        return DiffusionProblem(a[2], a[3], c_old=a[1], velocity=a[4], source=a[5], D=a[6], dt=a[7], **kw), a[0]
    if name == "wave_loss_grad":
        return WaveProblem(a[3], a[4], x_old=a[1], v_old=a[2], c=a[5], dt=a[6], **kw), a[0]
    return BurgersProblem(a[2], a[3], v_old=a[1], mu=a[4], dt=a[5], **kw), a[0]


def check_gradcheck(name: str, which: str, stencil: int, true_grad: bool = True, seed: int = 1):
    """gradcheck of Problem.loss (autograd through the op's gradient output) under one backend."""
    if which == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    old = _ops.backend()
    _ops.set_backend(which)
    try:
        prob, u = make_problem(name, seed, stencil=stencil, true_grad=true_grad)
        # losses reach ~1e3 (c^2 dt^2 terms), so central differences carry ~1e-16 * 1e3 / eps of noise
        return torch.autograd.gradcheck(prob.loss, (u.requires_grad_(True),), eps=1e-6, atol=1e-6, rtol=1e-5)
    finally:
        _ops.set_backend(old)


def check_row_chunks(name: str, true_grad: bool, size=(3, 1, 301, 150), seed: int = 17):
    """Several threads split the rows mid-sample (chunks recompute their halo rows): the result must
    match the twin and be bitwise identical to the single-thread result (deterministic reduction)."""
    _, make = OPS[name]
    check_thread_counts(name, make(gen(seed), size, frame=0 if name == "burgers_loss_grad" else 1) + (9, true_grad))


def check_thread_counts(name: str, args, threads=(1, 2, 3)):
    """The op gives bitwise the same result at every thread count, and matches its twin."""
    old = torch.get_num_threads()
    results = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            results.append(kernel(name)(*args))
    finally:
        torch.set_num_threads(old)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1]), "depends on the thread count"
    lt, gt = TWINS[name](*args)
    assert_close_rel(results[-1][0], lt, 1e-12, f"{name} loss")
    assert_close_rel(results[-1][1], gt, 1e-12, f"{name} grad")


# --- a reference solver for physics tests ------------------------------------------------------

def hessian(problem, u, h=1e-5):
    """Dense Hessian by central differences of the op's exact gradient (one batched call)."""
    n = u[0].numel()
    sub = problem.select(torch.zeros(2 * n, dtype=torch.long))
    E = h * torch.eye(n, dtype=F64).view(n, *u.shape[1:])
    grads = sub.loss_and_grad(torch.cat([u + E, u - E]))[1].reshape(2 * n, n)
    H = (grads[:n] - grads[n:]) / (2 * h)
    return 0.5 * (H + H.T)


def damped_newton(problem, u, tol, max_iter, h=1e-5, lam_floor=1e-10, free_only=False):
    """Damped Newton (Levenberg-regularized Cholesky, backtracking) on one sample; with ``free_only``
    restricted to the unknowns ``problem.impose`` leaves free (not hard-pinned). It needs only
    gradients near the optimum, so it gets far below the ~1e-8 gradient floor where L-BFGS line
    searches stop resolving float64 losses."""
    free = (problem.impose(torch.ones_like(u)) if free_only else torch.ones_like(u)).reshape(-1).bool()
    l, g = problem.loss_and_grad(u)
    for _ in range(max_iter):
        if float(g.abs().max()) < tol:
            break
        H = hessian(problem, u, h)[free][:, free]
        eye = torch.eye(H.shape[0], dtype=F64)
        lam = 0.0
        while True:
            L, info = torch.linalg.cholesky_ex(H + lam * eye)
            if int(info) == 0:
                break
            lam = max(10 * lam, lam_floor * float(H.diagonal().abs().max()))
        d = torch.zeros(u.numel(), dtype=F64)
        d[free] = torch.cholesky_solve(-g.reshape(-1)[free, None], L)[:, 0]
        d = d.view_as(u)
        t = 1.0
        while True:
            l2, g2 = problem.loss_and_grad(u + t * d)
            if float(l2) < float(l) or float(g2.norm()) < float(g.norm()) or t < 1e-6:
                break
            t *= 0.5
        u, l, g = u + t * d, l2, g2
    return u
