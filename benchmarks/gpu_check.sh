#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU and a CUDA build of torch (no internet needed):
#   1. a venv with --system-site-packages at build/gpu-venv (nothing is installed; it reuses the
#      system torch/pytest), or the system python when METAPHYS_GPU_VENV=0;
#   2. builds metaphys._C in place with the CUDA kernels (CUDA_HOME, arch of the local GPU);
#   3. runs the CUDA-vs-CPU-vs-twin tests: pytest -m cuda tests/test_cuda*.py (only those files are
#      collected, so other tests' optional dependencies do not matter; without pytest, each
#      tests/test_cuda_*.py runs as a script through tests/cuda_runner.py);
#   4. times CUDA kernel vs PyTorch twin on the GPU vs C++ kernel on the CPU and writes
#      benchmarks/results/gpu_check.md (GPU_CHECK_QUICK=1: tiny sizes, printed only).
# Logs and results are also copied to $OUT when it is set (the device runner's output folder).
# Usage: bash benchmarks/gpu_check.sh          Exit status: non-zero if the build or a test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
mkdir -p build benchmarks/results
LOG=build/gpu_check.log
: > "$LOG"
say() { echo "== $*" | tee -a "$LOG"; }
finish() {
  if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    cp -f "$LOG" "$OUT/" 2>/dev/null || true
    cp -f build/gpu_check_build.log build/gpu_check_tests.log "$OUT/" 2>/dev/null || true
    cp -f benchmarks/results/gpu_check.md "$OUT/" 2>/dev/null || true
  fi
}
trap finish EXIT

export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1

# --- 1. interpreter --------------------------------------------------------------------------
SYS_PY=${PYTHON:-python3}
PY=$SYS_PY
if [ "${METAPHYS_GPU_VENV:-1}" = 1 ]; then
  if [ ! -x build/gpu-venv/bin/python ]; then
    "$SYS_PY" -m venv --system-site-packages --without-pip build/gpu-venv >> "$LOG" 2>&1 \
      || say "venv creation failed; using $SYS_PY"
  fi
  [ -x build/gpu-venv/bin/python ] && PY=build/gpu-venv/bin/python
  # a venv made from another venv does not see that venv's packages: fall back to the interpreter
  if ! $PY -c "import torch" 2>/dev/null && "$SYS_PY" -c "import torch" 2>/dev/null; then PY=$SYS_PY; fi
fi
say "python: $PY ($($PY -c 'import sys; print(sys.version.split()[0])'))"
$PY - <<'EOF' 2>&1 | tee -a "$LOG"
import torch
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("GPU:", p.name, f"{p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
EOF
(command -v nvcc >/dev/null && nvcc --version | tail -2; command -v nvidia-smi >/dev/null && nvidia-smi -L) 2>&1 | tee -a "$LOG"
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() and torch.version.cuda else 1)"; then
  say "FAIL: this torch has no usable CUDA device; nothing to check"
  exit 2
fi

# --- 2. build ----------------------------------------------------------------------------------
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  export TORCH_CUDA_ARCH_LIST
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
say "building metaphys._C with CUDA (arch $TORCH_CUDA_ARCH_LIST, $MAX_JOBS jobs)"
t0=$(date +%s)
if ! $PY setup.py build_ext --inplace > build/gpu_check_build.log 2>&1; then
  tail -60 build/gpu_check_build.log | tee -a "$LOG"
  say "FAIL: build"
  exit 1
fi
say "build took $(( $(date +%s) - t0 )) s"
if ! $PY -c "import torch, metaphys._C as C, sys; print('with_cuda:', C.with_cuda()); sys.exit(0 if C.with_cuda() else 1)" 2>&1 | tee -a "$LOG"; then
  say "FAIL: metaphys._C was built without the CUDA kernels (is CUDA_HOME=$CUDA_HOME right?)"
  exit 1
fi

# --- 3. CUDA-vs-CPU tests ----------------------------------------------------------------------
status=0
say "tests (CUDA kernels vs C++ CPU kernels vs PyTorch twins)"
if $PY -c "import pytest" 2>/dev/null; then
  $PY -m pytest -q -m cuda tests/test_cuda*.py -rs -p no:cacheprovider 2>&1 | tee build/gpu_check_tests.log | tail -25 | tee -a "$LOG"
  status=${PIPESTATUS[0]}
else
  say "pytest not installed: running tests/test_cuda_*.py directly"
  : > build/gpu_check_tests.log
  for t in tests/test_cuda_*.py; do
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" $PY "$t" 2>&1 | tee -a build/gpu_check_tests.log | grep -v '^PASS' | tail -40 | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
  done
fi
[ "$status" = 0 ] && say "tests: OK" || say "FAIL: tests (exit $status)"

# --- 4. timing table ---------------------------------------------------------------------------
say "timing: CUDA kernel vs twin on GPU vs C++ on CPU"
if [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then
  $PY benchmarks/ops.py --device cuda --quick 2>&1 | tee -a "$LOG"
else
  $PY benchmarks/ops.py --device cuda --min-reps 5 --min-time 0.2 --out benchmarks/results/gpu_check.md 2>&1 | tee -a "$LOG"
fi
[ "${PIPESTATUS[0]}" = 0 ] || { say "FAIL: timing run"; status=1; }
say "done (exit $status); log: $ROOT/$LOG"
exit "$status"
