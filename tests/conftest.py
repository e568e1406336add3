"""Shared fixtures: the shipped weights (a clear failure, never a skip, when they are missing), the
physics backend (one set by the test, or each of kernel and twin in turn) and one torch thread."""
import os

import metaphys  # noqa: F401  (before torch: bounds OpenMP's spinning in this process, as the CLI does)
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "weights", "metamizer.pt")


@pytest.fixture(scope="session")
def shipped_optimizer():
    from metaphys.optim.metamizer import Metamizer
    from metaphys.optim.weights import load_torchscript
    torch.set_num_threads(1)
    return Metamizer(load_torchscript(WEIGHTS))


@pytest.fixture(scope="session")
def weights_path():
    assert os.path.exists(WEIGHTS), f"shipped weights missing: {WEIGHTS}"
    return WEIGHTS


@pytest.fixture
def backend():
    """Set the physics backend inside a test (``backend("twin")``); the previous one comes back after."""
    from metaphys import _ops
    old = _ops.backend()
    yield _ops.set_backend
    _ops.set_backend(old)


@pytest.fixture(params=["kernel", "twin"])
def each_backend(request):
    """Run the test once with the compiled kernels and once with the PyTorch twins."""
    from metaphys import _ops
    if request.param == "kernel" and not _ops.kernels_available():
        pytest.skip("metaphys._C is not built")
    old = _ops.backend()
    _ops.set_backend(request.param)
    yield request.param
    _ops.set_backend(old)


@pytest.fixture
def one_thread():
    """Many small calls (Newton loops): one intra-op thread is several times faster than two on a
    loaded 2-core machine (no oversubscription of the parallel regions)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def frames():
    """A vertex cache: 4 frames of 15 random float32 positions (PC2, MDD)."""
    import numpy as np
    rng = np.random.default_rng(0)
    return (rng.standard_normal((4, 15, 3)) * 10).astype(np.float32)
