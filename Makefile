# The two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
export CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(shell command -v nvcc 2>/dev/null)
NVCC_FLAGS := -std=c++17 -O3 -Xcompiler -Wall,-Werror -Werror all-warnings \
              -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90

.PHONY: demo test build venv test-python test-blender cuda-check cmake-build bench bench-quick clean blender-addon train eval

venv: .venv/.installed
.venv/.installed: requirements.txt
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

# Compiled kernels land in metaphys/_C*.so (in-place build), then the package is installed editable.
build: .venv/.installed
	@mkdir -p build
	flock build/.build.lock $(PY) setup.py -q build_ext --inplace 2>&1 | grep -v "^\(running\|copying\)" || true
	$(PY) -c "import torch, metaphys._C" || (echo "build of metaphys._C failed" && exit 1)
	@$(MAKE) --no-print-directory .venv/.editable

# `import metaphys` from any folder and the `metaphys` command: metaphys installed editable into the venv.
# METAPHYS_PREBUILT_EXT=1 (setup.py): the kernels built in place above are used, pip compiles nothing;
# --no-deps: requirements.txt installed everything, pip pulls no other torch.
.venv/.editable: .venv/.installed setup.py
	@# PYTHONWARNINGS: setuptools warns about every editable install of a flat layout
	PYTHONWARNINGS=ignore METAPHYS_PREBUILT_EXT=1 $(PIP) install -q -e . --no-build-isolation --no-deps
	$(PY) -c "import sys; assert not any('dist-packages' in p for p in sys.path), 'the venv sees system packages'"
	touch $@

demo: build
	$(PY) -m metaphys demo

test: build
	$(PY) -m pytest -q tests --ignore=tests/blender --durations=15
	$(MAKE) test-blender
	$(MAKE) cuda-check
	$(MAKE) cmake-build
	$(MAKE) cpp-example-check

# Compile every CUDA source to an object file (no GPU needed). Skipped with a notice without nvcc.
cuda-check:
	@if [ -z "$(NVCC)" ]; then echo "cuda-check: nvcc not found, skipping the CUDA compile check"; exit 0; fi; \
	srcs=$$(find csrc -name '*.cu' | sort); \
	if [ -z "$$srcs" ]; then echo "cuda-check: no .cu sources"; exit 0; fi; \
	mkdir -p build/cuda-check; \
	for f in $$srcs; do \
	  echo "nvcc $$f"; \
	  $(NVCC) $(NVCC_FLAGS) -Icsrc -c $$f -o build/cuda-check/$$(basename $$f .cu).o || exit 1; \
	done; echo "cuda-check: all CUDA sources compiled"

# The same extension through CMake (find_package(Torch) + pybind11), proving the CMake build.
cmake-build: .venv/.installed
	@prefix=$$($(PY) -c "import torch.utils; print(torch.utils.cmake_prefix_path)"); \
	pyb=$$($(PY) -c "import pybind11; print(pybind11.get_cmake_dir())"); \
	cmake -S . -B build/cmake -G Ninja -DCMAKE_MAKE_PROGRAM=$$(pwd)/.venv/bin/ninja \
	  -DCMAKE_PREFIX_PATH="$$prefix;$$pyb" -DPython_EXECUTABLE=$$(pwd)/$(PY) -DCMAKE_BUILD_TYPE=Release > build/cmake.log 2>&1 \
	  && cmake --build build/cmake -j 2 >> build/cmake.log 2>&1 \
	  && echo "cmake-build: OK ($$(ls build/cmake/_C*.so))" || (tail -40 build/cmake.log; exit 1)

# The C++ example (examples/cpp): the TorchScript solver module (weights/metamizer_solver.pt) driven
# from C++, built with g++ against the libtorch inside the torch wheel; the check runs it and compares
# its results with the Python API (tests/test_cpp_example.py).
.PHONY: cpp-example cpp-example-check
CPP_EXAMPLE := build/cpp-example/solve_poisson
cpp-example: $(CPP_EXAMPLE)
$(CPP_EXAMPLE): examples/cpp/solve_poisson.cpp .venv/.installed
	@mkdir -p $(@D)
	@torch=$$($(PY) -c "import os, torch; print(os.path.dirname(torch.__file__))") || exit 1; \
	abi=$$($(PY) -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))") || exit 1; \
	flock build/.cpp-example.lock $(CXX) -std=c++17 -O2 -Wall -Werror -D_GLIBCXX_USE_CXX11_ABI=$$abi \
	  -isystem $$torch/include -isystem $$torch/include/torch/csrc/api/include $< -o $@ \
	  -Wl,--no-as-needed -L$$torch/lib -Wl,-rpath,$$torch/lib -ltorch -ltorch_cpu -lc10 \
	  && echo "cpp-example: built $@"

cpp-example-check: .venv/.installed
	$(PY) -m pytest -q tests/test_cpp_example.py

bench: build
	$(PY) benchmarks/ops.py

bench-quick: build
	$(PY) benchmarks/ops.py --quick

include blender_addon/Makefile.inc
include benchmarks/Makefile.inc

clean:
	rm -rf build metaphys/_C*.so
