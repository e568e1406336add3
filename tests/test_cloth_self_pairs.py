"""Self-collision's pair bookkeeping (issue #26): the pairs' Hessian on a pattern that holds while no
new pair becomes active (so PARDISO reuses its analysis), and the merge of the broad phase's pairs."""
import numpy as np
import torch

from metaphys.physics.cloth import ClothProblem, _merge_pairs, rest_grid
from metaphys.physics.cloth_hessian import blocks_to_csr, blocks_to_csr_pattern, cloth_hessian_blocks


def _two_layers(n=8, gap=0.8):
    """An n x n grid whose upper half is folded over its lower half, ``gap`` edge lengths above it:
    many pairs, a few of them within the collision distance."""
    prob = ClothProblem(rest_grid(1, n, n), k_contact=100.0)
    x = prob.fields["x_old"].clone()
    half = n // 2
    for i in range(half, n):
        x[0, :, i, :] = x[0, :, n - 1 - i, :]
        x[0, 2, i, :] += gap
    prob.fields["x_old"] = x
    hw = n * n
    low = np.arange(half * n)
    up = (n - 1 - low // n) * n + low % n                       # the vertex right above
    pairs = np.stack([low, up], 1)
    far = np.stack([low[:-1], up[1:]], 1)                       # diagonal pairs: outside the distance
    prob.set_self_pairs(np.concatenate([pairs, far]), 1.0)
    return prob, hw


def test_pair_hessian_is_the_sum_of_the_grid_and_the_pairs_blocks():
    prob, hw = _two_layers()
    a = torch.zeros(prob.shape, dtype=torch.float64)
    H = prob.hessian_matrix(a)
    grid = blocks_to_csr(cloth_hessian_blocks(prob.local_part(), a), blocks_to_csr_pattern(8, 8))
    far = prob.nonlocal_hessian(a)
    assert far is not None and far.nnz > 0                       # the scene has active pairs
    assert np.abs((H - (grid + far)).toarray()).max() <= 1e-12 * np.abs(H.toarray()).max()
    # an active pair's off-diagonal block (z, z: the layers lie one above the other) is there, negative
    i, j = 2 * hw + 0, 2 * hw + (8 - 1) * 8
    assert H[i, j] < 0 and H[i, j] == far[i, j]


def test_pair_hessian_pattern_holds_while_no_new_pair_becomes_active():
    prob, hw = _two_layers()
    a = torch.zeros(prob.shape, dtype=torch.float64)
    H1 = prob.hessian_matrix(a)
    # a small motion that changes every pair's penetration but activates none: same pattern
    b = a.clone()
    b[0, 2, 4:] += 0.01
    H2 = prob.hessian_matrix(b)
    assert np.array_equal(H1.indices, H2.indices) and np.array_equal(H1.indptr, H2.indptr)
    assert np.abs((H1 - H2).toarray()).max() > 0                 # the values did change
    # pull the layers apart: no pair active, the pattern (explicit zeros) still holds
    c = a.clone()
    c[0, 2, 4:] += 50.0
    H3 = prob.hessian_matrix(c)
    assert prob.nonlocal_hessian(c) is None
    assert np.array_equal(H1.indices, H3.indices)
    # slide the upper layer half an edge along x: the diagonal pairs come into contact, the pattern grows
    d = a.clone()
    d[0, 0, 4:] -= 0.5
    H4 = prob.hessian_matrix(d)
    grid = blocks_to_csr(cloth_hessian_blocks(prob.local_part(), d), blocks_to_csr_pattern(8, 8))
    assert H4.nnz > H1.nnz
    assert np.abs((H4 - (grid + prob.nonlocal_hessian(d))).toarray()).max() <= 1e-12 * np.abs(H4.toarray()).max()


def test_merge_pairs_is_the_sorted_union_of_the_new_pairs_outside_the_distance():
    rng = np.random.default_rng(3)
    hw = 50
    x0 = torch.as_tensor(rng.uniform(0, 3, (3, hw)))
    pairs = torch.as_tensor([[1, 7], [0, 3], [2, 40]])
    found = np.array([[0, 3], [5, 9], [4, 30], [1, 7], [6, 8]])
    merged = _merge_pairs(pairs, found, x0, 1.0, hw)
    p0 = x0[:, found[:, 0]] - x0[:, found[:, 1]]
    outside = torch.as_tensor(found)[(p0 * p0).sum(0) >= 1.0]
    expected = torch.unique(torch.cat([pairs, outside]), dim=0)
    if expected.shape[0] == pairs.shape[0]:
        assert merged is None
    else:
        assert np.array_equal(merged, expected.numpy())
    # nothing new: None (the pairs, and the Hessian's pattern, stay as they are)
    assert _merge_pairs(pairs, np.array([[1, 7], [0, 3]]), x0, 0.0, hw) is None
    assert np.array_equal(_merge_pairs(pairs, np.array([[3, 4]]), x0, 0.0, hw), [[0, 3], [1, 7], [2, 40], [3, 4]])
