"""The checks every grid op (laplace, diffusion, wave, burgers) shares, parametrised over the op
registry: compiled kernel == PyTorch twin on odd sizes, both stencils and both gradient modes; row
chunks and thread counts; torch.library opcheck; the kernel's input checks; gradcheck of the true
gradient and proof that the pseudo-gradient differs. Each op's own physics lives in its own file."""
from __future__ import annotations

import pytest

from metaphys.registry import OPS
from physics_cases import (GRAD_MODES, SIZES, STENCILS, bad_input_cases, check_gradcheck, check_kernel_matches_twin,
                           check_opcheck, check_row_chunks, kernel, requires_kernels)
from physics_cases import OPS as ARGUMENTS

GRID_OPS = [op.kernel for op in OPS if op.kernel in ARGUMENTS]
SEED_OFFSET = {"laplace_loss_grad": 0, "diffusion_loss_grad": 100, "wave_loss_grad": 200, "burgers_loss_grad": 300}
# tiny periodic Burgers grids (no frame, so every cell is free): with 2 rows the up and down
# neighbours are the same cell, with 1 row they are the cell itself
EXTRA_SIZES = {"burgers_loss_grad": [(2, 1, 3, 4), (1, 1, 2, 5), (1, 1, 1, 3)]}
# laplace_loss_grad's gradcheck runs with its own tighter tolerances in test_physics_laplace.py
GRADCHECKED = [name for name in GRID_OPS if name != "laplace_loss_grad"]


def test_every_grid_op_is_covered():
    assert GRID_OPS == ["laplace_loss_grad", "diffusion_loss_grad", "wave_loss_grad", "burgers_loss_grad"]
    assert set(SEED_OFFSET) == set(GRID_OPS)


@requires_kernels
@pytest.mark.parametrize("true_grad", GRAD_MODES)
@pytest.mark.parametrize("stencil", STENCILS)
@pytest.mark.parametrize("name, size", [(name, size) for name in GRID_OPS for size in SIZES + EXTRA_SIZES.get(name, [])])
def test_kernel_matches_twin(name, size, stencil, true_grad):
    frame = 1 if size[2] > 3 else 0
    check_kernel_matches_twin(name, size, stencil, true_grad, seed=sum(size) + stencil + SEED_OFFSET[name],
                              frame=frame)


@requires_kernels
@pytest.mark.parametrize("true_grad", GRAD_MODES)
@pytest.mark.parametrize("name", GRID_OPS)
def test_row_chunks_match_twin_and_thread_count(name, true_grad):
    check_row_chunks(name, true_grad)


@requires_kernels
@pytest.mark.parametrize("name", GRID_OPS)
def test_opcheck(name):
    check_opcheck(name)


@requires_kernels
@pytest.mark.parametrize("name, case", [(name, case) for name in GRID_OPS for case in bad_input_cases(name)],
                         ids=lambda c: c if isinstance(c, str) else c[0])
def test_kernel_rejects_bad_input(name, case):
    _, args, msg = case
    with pytest.raises(RuntimeError, match=msg):
        kernel(name)(*args)


@pytest.mark.parametrize("which", ["kernel", "twin"])
@pytest.mark.parametrize("stencil", STENCILS)
@pytest.mark.parametrize("name", GRADCHECKED)
def test_gradcheck_true_grad(name, which, stencil):
    assert check_gradcheck(name, which, stencil)


@requires_kernels
@pytest.mark.parametrize("name", GRADCHECKED)
def test_pseudo_grad_is_not_the_true_gradient(name):
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        check_gradcheck(name, "kernel", 9, true_grad=False)
