"""Held-out evaluation problems (the paper's test setups, notes sections 8 and 9), built at any size.

Every builder returns a fresh batched Problem (batch 1 unless stated) plus, for time-dependent
cases, a per-step hook (moving boundary values). Seeds are disjoint from training.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from metaphys import problems
from metaphys.physics import BurgersProblem, DiffusionProblem, LaplaceProblem, WaveProblem, frame_mask
from metaphys.physics.laplace import bilinear_laplace
from metaphys.seeds import EVAL as HELD_OUT_SEED

F64 = torch.float64


def laplace_random(size: int, n: int = 2):
    return problems.get("laplace")(n, size, size, torch.Generator().manual_seed(HELD_OUT_SEED + size))


def laplace_bilinear(size: int):
    return bilinear_laplace(size)


def poisson_charges(size: int):
    """Notes 8.1 Poisson variant (Appendix A): two opposite charges in a zero-BC box (unseen)."""
    s = size / 100.0
    f = torch.zeros(1, 1, size, size, dtype=F64)
    r0, r1 = size // 2 - max(1, round(2 * s)), size // 2 + max(1, round(2 * s))
    w = max(2, round(4 * s))
    c0, c1 = size // 2 - round(12 * s), size // 2 + round(8 * s)
    f[..., r0:r1, c0:c0 + w] = -0.1
    f[..., r0:r1, c1:c1 + w] = 0.1
    return LaplaceProblem(frame_mask(1, size, size), 0.0, f)


def diffusion_rotating(size: int, D: float):
    """Notes 8.2 test setup: rigid rotation v = 1.5*(-b_j, a_i), Gaussian source, zero BCs."""
    a = 2 * (torch.arange(size, dtype=F64) / size - 0.5)
    ai = a.view(size, 1).expand(size, size)
    bj = a.view(1, size).expand(size, size)
    vel = torch.stack([-1.5 * bj, 1.5 * ai]).unsqueeze(0)
    src = torch.exp(-(ai ** 2 + (bj + 0.5) ** 2) / 0.002 * (100.0 / size) ** 0).view(1, 1, size, size)
    return DiffusionProblem(frame_mask(1, size, size), 0.0, velocity=vel, source=src, D=D, dt=1.0)


def wave_emitters(size: int, c: float):
    """Notes 8.3: zero frame, three 4x4 emitters following sin(0.5 T)."""
    m = frame_mask(1, size, size)
    emit = torch.zeros_like(m)
    d = round(20 * size / 100)
    for delta in (-d, 0, d):
        r, col = size // 2, size // 2 + delta
        emit[..., r - 2:r + 2, col - 2:col + 2] = 1
    m = torch.maximum(m, emit)
    problem = WaveProblem(m, 0.0, c=c, dt=1.0)

    def hook(p, t):
        p.set_boundary_values(emit * math.sin(0.5 * t))

    return problem, hook


def burgers_random(size: int, mu: float, seed: int = 0):
    """Notes 8.5 initial condition (81 Fourier modes), periodic stencils, zero 2-cell frame."""
    rng = np.random.default_rng(HELD_OUT_SEED + seed)
    x = np.arange(size) / size
    X, Y = np.meshgrid(x, x)
    field = np.zeros((2, size, size))
    for c in range(2):
        f = np.zeros((size, size))
        for k in range(-4, 5):
            for l in range(-4, 5):
                ph = 2 * np.pi * (k * X + l * Y)
                f += rng.standard_normal() * np.cos(ph) + rng.standard_normal() * np.sin(ph)
        field[c] = 2 * f / np.abs(f).max() + rng.uniform(-1, 1)
    m = frame_mask(1, size, size)
    v0 = torch.as_tensor(field, dtype=F64).unsqueeze(0) * (1 - m)
    return BurgersProblem(m, 0.0, v_old=v0, mu=mu, dt=1.0)


def fluid_cylinder(size: int, rho: float, mu: float, speed: float = 0.5):
    """Notes 9.3-like benchmark: wind tunnel, inflow 0.5, a cylinder of diameter size/10."""
    from metaphys.physics.fluid import FluidProblem, add_obstacle, fluid_geometry
    s = size / 100.0
    mask, bc = fluid_geometry(1, size, size, kind="tunnel", inflow=speed, wall_rows=max(2, round(3 * s)),
                              wall_cols=max(2, round(5 * s)), inflow_margin=max(3, round(10 * s)))
    mask, bc = add_obstacle(mask, bc, "circle", center=(size / 2, size / 4), radius=size / 20)
    return FluidProblem(mask, bc, rho=rho, mu=mu, dt=1.0)


def fluid3d_cavity(size: int, rho: float, mu: float, speed: float = 0.5):
    """A 3-D lid-driven cavity (physics.fluid3d, issue #28): a closed no-slip box whose top wall moves
    along x at ``speed``; starts at rest, so the first step's loss is the lid's mismatch."""
    from metaphys.physics.fluid3d import Fluid3DProblem, box_geometry
    mask, bc = box_geometry(1, size, size, size, wall=3, lid=(0.0, 0.0, speed))
    return Fluid3DProblem(mask, bc, rho=rho, mu=mu, dt=1.0)


def laplace3d_random(size: int, n: int = 2):
    """3-D Laplace with random obstacle boxes (the training generator at held-out seeds)."""
    return problems.get("laplace3d")(n, size, size, torch.Generator().manual_seed(HELD_OUT_SEED + 3000 + size))


def laplace3d_trilinear(size: int):
    """The 3-D bilinear case: 2-node frame, b = (k/D)(i/H)(j/W); the exact solution is b itself."""
    from metaphys.physics.laplace3d import trilinear_laplace3d
    return trilinear_laplace3d(size)


def poisson3d_charges(size: int):
    """3-D Poisson, unseen in training: two opposite charge blocks in a zero-BC box with a box obstacle."""
    from metaphys.physics.laplace3d import Laplace3DProblem, frame_mask3d
    f = torch.zeros(1, 1, size, size, size, dtype=F64)
    c, q = size // 2, max(1, size // 10)
    f[..., c - q:c + q, c - q:c + q, c - 3 * q - q:c - 3 * q + q] = -0.1
    f[..., c - q:c + q, c - q:c + q, c + 3 * q - q:c + 3 * q + q] = 0.1
    mask = frame_mask3d(1, size, size, size)
    mask[..., c + 2 * q:c + 4 * q, c - 2 * q:c + 2 * q, c - q:c + q] = 1
    return Laplace3DProblem(mask, 0.0, f)


CLOTH_MATERIALS = {"a_1000_10_0.01": (1000.0, 10.0, 0.01), "b_1000_1000_10": (1000.0, 1000.0, 10.0),
                   "c_1000_10_1000": (1000.0, 10.0, 1000.0)}


def cloth_hanging(size: int, material: str):
    """Notes 8.6 test: identity orientation, pins at the two ends of the first column, g = -z."""
    from metaphys.physics.cloth import ClothProblem, rest_grid
    ks, kh, kb = CLOTH_MATERIALS[material]
    pin = torch.zeros(1, 1, size, size, dtype=F64)
    pin[..., 0, 0] = 1
    pin[..., size - 1, 0] = 1
    return ClothProblem(rest_grid(1, size, size), pin_w=pin, k_stretch=ks, k_shear=kh, k_bend=kb)
