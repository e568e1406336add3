"""The C++ example (examples/cpp/solve_poisson.cpp, `make cpp-example`) reproduces the Python API.

It loads weights/metamizer_solver.pt with libtorch, solves its Poisson problem twice (the module's
built-in 9-point problem, and the ask/tell loop with a 5-point gradient written in C++) and writes
both solutions; each must match ``solve(LaplaceProblem(...), Metamizer())`` iterate count, residual
history and solution to 1e-12. Skipped only where there is no C++ compiler or make."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from metaphys.optim.metamizer import Metamizer
from metaphys.optim.solve import solve
from metaphys.optim.weights_file import sha256_of
from metaphys.physics import LaplaceProblem, frame_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "build", "cpp-example", "solve_poisson")
SOLVER = os.path.join(ROOT, "weights", "metamizer_solver.pt")
SIZE = 64
TOL, MAX_ITERATIONS = 1e-20, 300   # the example's constants

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None or shutil.which("make") is None,
                                reason="no C++ compiler or make")


def example_problem(n: int, stencil: int) -> LaplaceProblem:
    """The geometry of make_problem in solve_poisson.cpp (integer divisions as there)."""
    mask = frame_mask(1, n, n)
    bc = torch.zeros_like(mask)
    f = torch.zeros_like(mask)
    rows, cols = slice(n // 4, n // 4 + n // 16), slice(n // 4, 3 * n // 4)
    mask[..., rows, cols] = 1
    bc[..., rows, cols] = 1
    f[..., n // 2:n // 2 + 4, n // 4:n // 4 + 4] = 0.1
    f[..., n // 2:n // 2 + 4, 3 * n // 4 - 4:3 * n // 4] = -0.1
    return LaplaceProblem(mask, bc, f, stencil=stencil)


@pytest.fixture(scope="module")
def cpp_run(tmp_path_factory):
    with open(os.path.splitext(SOLVER)[0] + ".json") as fh:
        wrapped = json.load(fh)["wraps"]["sha256"]
    assert wrapped == sha256_of(os.path.join(ROOT, "weights", "metamizer.pt")), (
        "weights/metamizer_solver.pt wraps other weights than weights/metamizer.pt: re-export it with "
        "`metaphys export-solver`")
    build = subprocess.run(["make", "-s", "cpp-example"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"make cpp-example failed:\n{build.stdout}\n{build.stderr}"
    prefix = str(tmp_path_factory.mktemp("cpp") / "u")
    run = subprocess.run([BINARY, SOLVER, "--size", str(SIZE), "--threads", "1", "--out", prefix],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{BINARY} failed:\n{run.stdout}\n{run.stderr}"
    histories = {"builtin": [], "asktell": []}
    for line in run.stdout.splitlines():
        label, _, rest = line.partition(" ")
        if label in histories:
            histories[label].append(float(rest.split()[1]))
    solutions = {k: np.fromfile(f"{prefix}.{k}.f64", dtype=np.float64).reshape(SIZE, SIZE) for k in histories}
    return histories, solutions, run.stdout


@pytest.mark.parametrize("label, stencil", [("builtin", 9), ("asktell", 5)])
def test_cpp_example_reproduces_the_python_api(cpp_run, label, stencil):
    histories, solutions, stdout = cpp_run
    torch.set_num_threads(1)
    ref = solve(example_problem(SIZE, stencil), Metamizer(), tol=TOL, max_iterations=MAX_ITERATIONS)
    want = ref.history()[:, 0].numpy()
    got = np.array(histories[label])
    assert len(got) == len(want), f"{label}: C++ took {len(got) - 1} iterations, Python {len(want) - 1}\n{stdout}"
    assert want[-1] <= TOL and not ref.hit_cap
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    u = ref.u[0, 0].numpy()
    assert np.abs(solutions[label] - u).max() <= 1e-12 * np.abs(u).max()
