"""Laplace / Poisson in 3-D: -Laplace(u) = f on a [D, H, W] grid with hard Dirichlet nodes (issue #28).

The 2-D ``physics.laplace`` one dimension up, same conventions: u~ = m*b + (1-m)*u, residual
r = L(u~) + f, per-sample loss = mean of r^2 over the free nodes, and the gradient is the Appendix-D
pseudo-gradient (neighbours detached: 2/N_free * w_c * (1-m) * r, i.e. proportional to -r on free
nodes, 0 on Dirichlet nodes) or, with ``true_grad``, the exact one (2/N_free * (1-m) * L(q), q =
(1-m)*r, L symmetric). Grid spacing 1, zero padding outside the grid (always masked in practice:
``frame_mask3d``). Unknown [N, 1, D, H, W].

Stencils: ``27`` (default) is the isotropic 27-point Laplacian L27 = 4*(B_z B_y B_x - 1), B =
[1, 2, 1]/4 per axis: faces 1/4, edges 1/8, corners 1/16, centre -7/2. It is chosen because (a) its
truncation error is isotropic to leading order, as the 2-D default's (the isotropic 9-point stencil
the 2-D network trained on); (b) on fields constant along any one axis it is exactly the 2-D L9 of
each layer, so a z-invariant 3-D Laplace problem is the 2-D problem in every layer (the same
relation ``fluid3d``'s viscosity has, which uses the same L27); (c) it is what the 3-D fluid's
operator looks like, so one 3-D network sees one kind of operator. ``7`` is the 7-point stencil
(faces 1, centre -6), the classic one and the cheaper to apply.

Kernel: csrc/laplace3d (``laplace3d_loss_grad``; CPU, CUDA); this module's ``laplace3d_twin`` is its
PyTorch twin.
"""
from __future__ import annotations

import torch
import torch.nn.functional as TF

from metaphys.physics import checks
from metaphys.physics.base import Problem, masked_mse_and_grad

CENTRE_WEIGHT = {27: -3.5, 7: -6.0}
_OFFSETS = tuple((a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1))
# neighbours by kind in the kernel's loop order (csrc/laplace3d/laplace3d_math.h)
_FACES, _EDGES, _CORNERS = (tuple(o for o in _OFFSETS if sum(x != 0 for x in o) == k) for k in (1, 2, 3))


def check_stencil3(stencil) -> None:
    if stencil not in CENTRE_WEIGHT:
        raise ValueError(f"stencil must be 27 (isotropic) or 7, got {stencil!r}")


def _sl(xp: torch.Tensor, off) -> torch.Tensor:
    d, h, w = (s - 2 for s in xp.shape[-3:])
    return xp[..., 1 + off[0]:1 + off[0] + d, 1 + off[1]:1 + off[1] + h, 1 + off[2]:1 + off[2] + w]


def laplacian3d(x: torch.Tensor, stencil: int = 27, detach_neighbours: bool = False) -> torch.Tensor:
    """L27 (default) or L7 of [N, C, D, H, W] with zero padding; ``detach_neighbours``: the
    neighbour part is a constant (Appendix D), so d/dx of the result is the centre weight."""
    check_stencil3(stencil)
    src = x.detach() if detach_neighbours else x
    xp = TF.pad(src, (1, 1, 1, 1, 1, 1))
    faces = _sl(xp, _FACES[0])
    for o in _FACES[1:]:
        faces = faces + _sl(xp, o)
    if stencil == 7:
        return faces + CENTRE_WEIGHT[7] * x
    edges = _sl(xp, _EDGES[0])
    for o in _EDGES[1:]:
        edges = edges + _sl(xp, o)
    corners = _sl(xp, _CORNERS[0])
    for o in _CORNERS[1:]:
        corners = corners + _sl(xp, o)
    return ((0.25 * faces + 0.125 * edges) + 0.0625 * corners) + CENTRE_WEIGHT[27] * x


def laplace3d_twin(u, mask, bc, f, stencil: int, true_grad: bool):
    """PyTorch twin of the ``laplace3d_loss_grad`` kernel: (loss [N], grad [N,1,D,H,W])."""
    free = 1 - mask

    def residual(uu):
        ut = mask * bc + free * uu
        return laplacian3d(ut, stencil, detach_neighbours=not true_grad) + f

    return masked_mse_and_grad(residual, u, free)


def _check_volume(name, t, shape=None, device=None):
    checks.check_field(name, t, shape=shape, ndim=5, device=device)
    return t


def _as_volume(name, value, like):
    n, _, d, h, w = like.shape
    if value is None:
        return torch.zeros(n, 1, d, h, w, dtype=torch.float64, device=like.device)
    if isinstance(value, (int, float)):
        out = torch.full((n, 1, d, h, w), float(value), dtype=torch.float64, device=like.device)
        checks.check_finite(name, out)
        return out
    _check_volume(name, value, device=like.device)
    if tuple(value.shape[1:]) != (1, d, h, w) or value.shape[0] not in (1, n):
        raise ValueError(f"{name} must broadcast to shape ({n}, 1, {d}, {h}, {w}), got {tuple(value.shape)}")
    return value.expand(n, 1, d, h, w).contiguous()


class Laplace3DProblem(Problem):
    """Stationary 3-D Poisson problem, one channel: ``mask`` [N,1,D,H,W] (1 = Dirichlet node),
    ``bc`` its values, ``f`` the source (0 gives Laplace); ``stencil`` 27 or 7."""

    op_name = "laplace3d_loss_grad"
    channels = 1
    divergence_threshold = 2e5
    twin = staticmethod(laplace3d_twin)

    def __init__(self, mask, bc, f=None, *, stencil: int = 27, true_grad: bool = False):
        _check_volume("mask", mask)
        d, h, w = mask.shape[-3:]
        if mask.shape[1] != 1:
            raise ValueError(f"mask must have shape [N, 1, D, H, W], got {tuple(mask.shape)}")
        if min(d, h, w) < 3:
            raise ValueError(f"mask grid must be at least 3x3x3, got {d}x{h}x{w}")
        checks.check_mask("mask", mask)
        m = mask.contiguous()
        bc = _as_volume("bc", bc, m)
        f = _as_volume("f", f, m)
        checks.check_finite("bc", bc)
        checks.check_finite("f", f)
        check_stencil3(stencil)
        super().__init__({"mask": m, "bc": bc, "f": f})
        self.stencil = int(stencil)
        self.true_grad = bool(true_grad)

    @property
    def shape(self):
        """Shape of the unknown [N, 1, D, H, W]."""
        ref = self.fields["mask"]
        return (ref.shape[0], 1, *ref.shape[-3:])

    def check_unknown(self, u: torch.Tensor) -> torch.Tensor:
        return _check_volume("u", u, shape=self.shape, device=self.device)

    def op_args(self):
        fl = self.fields
        return (fl["mask"], fl["bc"], fl["f"], self.stencil, self.true_grad)


def frame_mask3d(n: int, d: int, h: int, w: int, width: int = 2, device=None) -> torch.Tensor:
    """[n,1,d,h,w] Dirichlet mask with a ``width``-node frame on all six faces."""
    m = torch.zeros(n, 1, d, h, w, dtype=torch.float64, device=device)
    for dim in (2, 3, 4):
        m.narrow(dim, 0, width).fill_(1)
        m.narrow(dim, m.shape[dim] - width, width).fill_(1)
    return m


def trilinear_laplace3d(size: int, device=None, stencil: int = 27) -> Laplace3DProblem:
    """The 3-D bilinear_laplace: 2-node frame, b = (k/D)(i/H)(j/W), f = 0. A trilinear field is
    harmonic for L27 and L7, so the exact discrete solution is b itself."""
    r = torch.arange(size, dtype=torch.float64, device=device) / size
    b = r.view(1, 1, size, 1, 1) * r.view(1, 1, 1, size, 1) * r.view(1, 1, 1, 1, size)
    return Laplace3DProblem(frame_mask3d(1, size, size, size, device=device), b, stencil=stencil)
