"""Random Navier-Stokes and cloth problems (notes sections 8.4, 8.6), scaled from the reference's
100x100 to any grid size."""
from __future__ import annotations

import math

import torch

from metaphys.physics.fluid import FluidProblem, add_obstacle, fluid_geometry
from metaphys.physics.cloth import ClothProblem, model_material, rest_grid, rotation_matrix
from metaphys.problems.sampling import F64, log_uniform, uniform


def make_fluid(n, h, w, gen, device=None, max_speed: float = 2.0):
    """Wind tunnel with walls, inflow = outflow U ~ U[-max_speed, max_speed] and one obstacle
    (rotating cylinder, box, or none); rho, mu, dt log-uniform per sample."""
    s = min(h, w) / 100.0
    speed = max_speed * (2 * torch.rand(n, generator=gen, dtype=F64) - 1)
    mask, bc = fluid_geometry(n, h, w, kind="tunnel", inflow=speed, wall_rows=max(2, round(3 * s)),
                              wall_cols=max(2, round(5 * s)), inflow_margin=max(3, round(10 * s)))
    masks, bcs = [], []
    for k in range(n):
        mk, bk = mask[k:k + 1], bc[k:k + 1]
        kind = int(torch.randint(0, 3, (1,), generator=gen))
        cy = h / 2 + float(uniform(gen, 1, -0.1 * h, 0.1 * h))
        cx = w / 2 + float(uniform(gen, 1, -0.1 * w, 0.1 * w))
        if kind == 0:
            r = float(uniform(gen, 1, max(1.5, 5 * s), max(2.0, 19 * s)))
            omega = float(max_speed * (2 * torch.rand(1, generator=gen, dtype=F64) - 1)) / r
            mk, bk = add_obstacle(mk, bk, "circle", center=(cy, cx), radius=r, omega=omega)
        elif kind == 1:
            hh = float(uniform(gen, 1, max(1.0, 5 * s), max(1.5, 19 * s)))
            hw = float(uniform(gen, 1, max(1.0, 5 * s), max(1.5, 19 * s)))
            mk, bk = add_obstacle(mk, bk, "box", center=(cy, cx), half=(hh, hw))
        masks.append(mk)
        bcs.append(bk)
    mask, bc = torch.cat(masks), torch.cat(bcs)
    rho = log_uniform(gen, n, 0.1, 10.0)
    mu = log_uniform(gen, n, 0.01, 10.0)
    dt = log_uniform(gen, n, 0.5, 4.0)
    return FluidProblem(mask.to(device), bc.to(device), rho=rho.to(device), mu=mu.to(device), dt=dt.to(device))



def _random_rotations(n, gen):
    ang = uniform(gen, 3 * n, -2 * math.pi, 2 * math.pi).view(n, 3)
    return torch.stack([rotation_matrix(*map(float, ang[k])) for k in range(n)])


def make_cloth(n, h, w, gen, device=None):
    """Random cloth scenes (notes 8.6, extended): random orientation and gravity direction, two
    corner pins + geometric extra pins, materials over the whole product range (stretch
    [100, 1000], shear [1, 1000], bend [0.01, 1000], log-uniform), optional damping, wind and a
    sphere collider. Pins translate sinusoidally in half of the samples (``on_advance``)."""
    R = _random_rotations(n, gen)
    x = rest_grid(n, h, w, 1.0, rotation=R)
    pin_w = torch.zeros(n, 1, h, w, dtype=F64)
    pin_w[:, 0, 0, 0] = 1
    pin_w[:, 0, h - 1, 0] = 1
    for k in range(n):
        while float(torch.rand(1, generator=gen)) < 0.5:
            i = int(torch.randint(0, h, (1,), generator=gen))
            j = int(torch.randint(0, w, (1,), generator=gen))
            pin_w[k, 0, i, j] = 1
    g = torch.einsum("nab,b->na", _random_rotations(n, gen), torch.tensor([0.0, 0.0, -1.0], dtype=F64))
    wind = torch.where(torch.rand(n, 1, generator=gen, dtype=F64) < 0.3,
                       0.3 * torch.randn(n, 3, generator=gen, dtype=F64), torch.zeros(n, 3, dtype=F64))
    damping = torch.where(torch.rand(n, generator=gen, dtype=F64) < 0.5, log_uniform(gen, n, 0.01, 1.0),
                          torch.zeros(n, dtype=F64))
    spheres = torch.zeros(n, 1, 4, dtype=F64)
    centre = x.mean(dim=(2, 3))
    has = torch.rand(n, generator=gen, dtype=F64) < 0.3
    radius = uniform(gen, n, 0.15 * h, 0.4 * h)
    normal = R[:, :, 2]  # the flat cloth's normal; put the sphere on the side gravity pulls towards
    side = torch.sign((normal * g).sum(1, keepdim=True)).clamp_min(0) * 2 - 1
    offset = side * normal * (radius + uniform(gen, n, 0.5, 0.3 * h)).view(n, 1)
    spheres[:, 0, :3] = centre + offset
    spheres[:, 0, 3] = torch.where(has, radius, torch.zeros_like(radius))
    problem = ClothProblem(x.to(device), pin_w=pin_w.to(device), spheres=spheres.to(device), gravity=g.to(device),
                           wind=wind.to(device), k_stretch=log_uniform(gen, n, 100, 1000).to(device),
                           k_shear=log_uniform(gen, n, 1, 1000).to(device),
                           k_bend=log_uniform(gen, n, 0.01, 1000).to(device), damping=damping.to(device),
                           margin=0.25)
    moving = (torch.rand(n, generator=gen, dtype=F64) < 0.5).to(F64)
    problem.fields["pin_origin"] = problem.fields["pin_x"].clone()
    problem.fields["pin_amp"] = (moving.view(n, 1) * uniform(gen, 3 * n, -0.1 * h, 0.1 * h).view(n, 3)).to(device)
    problem.fields["pin_freq"] = uniform(gen, 3 * n, -0.2, 0.2).view(n, 3).to(device)
    return problem


def _cloth_on_advance(problem, time, gen):
    """Translate the pin targets: origin + amp * sin(T * freq) (per axis)."""
    fl = problem.fields
    t = time.to(F64).view(-1, 1).to(fl["pin_amp"].device)
    shift = fl["pin_amp"] * torch.sin(t * fl["pin_freq"])
    target = fl["pin_origin"] + shift[:, :, None, None]
    hard = (fl["pin_w"] == 1).to(F64)
    fl["pin_x"] = target
    fl["x_old"] = hard * target + (1 - hard) * fl["x_old"]


make_cloth.on_advance = _cloth_on_advance


def make_cloth_product(n, h, w, gen, device=None):
    """Cloth as the product runs it (issue #13): the scenes of ``make_cloth`` with materials drawn in
    physical units (tension 50-2000 N/m, shear 1-100 N/m, bending 1e-6-1e-3 N*m, 0.05-0.5 kg/m^2,
    air damping 0-1 /s) for a 1 m cloth at 24-60 fps, mapped to the model's units exactly as
    ``ClothSim`` maps them (``physics.cloth.model_material``): stiffness grows with resolution."""
    problem = make_cloth(n, h, w, gen, device=device)
    fl = problem.fields
    length = 1.0 / (max(h, w) - 1)
    dt = 1.0 / uniform(gen, n, 24.0, 60.0)
    ks, kh, kb = [], [], []
    for k in range(n):
        mat = {"tension": float(log_uniform(gen, 1, 50.0, 2000.0)), "shear": float(log_uniform(gen, 1, 1.0, 100.0)),
               "bending": float(log_uniform(gen, 1, 1e-6, 1e-3)),
               "mass_per_area": float(log_uniform(gen, 1, 0.05, 0.5)), "air_damping": 0.0}
        m = model_material(mat, h, w, length, float(dt[k]))
        ks.append(m["k_stretch"])
        kh.append(m["k_shear"])
        kb.append(m["k_bend"])
    dev = fl["k_stretch"].device
    fl["k_stretch"] = torch.tensor(ks, dtype=F64, device=dev)
    fl["k_shear"] = torch.tensor(kh, dtype=F64, device=dev)
    fl["k_bend"] = torch.tensor(kb, dtype=F64, device=dev)
    fl["k_contact"] = torch.clamp(fl["k_stretch"], min=1000.0)
    scale = (dt * dt / length).to(dev)                                  # m/s^2 -> model units
    fl["gravity"] = fl["gravity"] * (9.81 * scale).view(n, 1)
    fl["wind"] = fl["wind"] * (10.0 * scale).view(n, 1)                # |wind| ~ 3 m/s^2
    fl["damping"] = uniform(gen, n, 0.0, 1.0).to(dev) * dt.to(dev)
    return problem


make_cloth_product.on_advance = _cloth_on_advance
