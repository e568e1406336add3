"""Shared fixtures: the shipped weights (a clear failure, never a skip, when they are missing)."""
import os

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
