"""Builds the one extension module `metaphys._C` from every source under csrc/.

CPU build (CppExtension) by default. It switches to CUDAExtension automatically when the
installed torch has CUDA *and* a CUDA toolkit is found; then the `*_cuda.cu` kernels and the
`*_cuda_binding.cpp` launch glue are compiled too (METAPHYS_WITH_CUDA is defined).
Set METAPHYS_FORCE_CPU=1 to build the CPU kernels only.

`make build` compiles the extension in place (``setup.py build_ext --inplace``), then installs the
package editable into the venv with METAPHYS_PREBUILT_EXT=1: the editable install then carries no
extension, so pip neither compiles the kernels a second time nor needs a build environment (the
in-place ``metaphys/_C*.so`` is what ``import metaphys._C`` finds).
"""
import glob
import os

from setuptools import find_packages, setup
import torch
from torch.utils import cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))


def _cuda_available_for_build() -> bool:
    if os.environ.get("METAPHYS_FORCE_CPU") == "1":
        return False
    if torch.version.cuda is None:
        return False
    return cpp_extension.CUDA_HOME is not None


def _sources(with_cuda: bool):
    cpp = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    if not with_cuda:
        cpp = [s for s in cpp if not s.endswith("_cuda_binding.cpp")]
        return cpp
    return cpp + sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))


def _extension():
    with_cuda = _cuda_available_for_build()
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    macros = []
    kwargs = dict(
        name="metaphys._C",
        sources=_sources(with_cuda),
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=macros,
        extra_link_args=["-fopenmp"],
    )
    if with_cuda:
        kwargs["define_macros"].append(("METAPHYS_WITH_CUDA", "1"))
        kwargs["extra_compile_args"] = {"cxx": cxx, "nvcc": ["-O3"]}
        return cpp_extension.CUDAExtension(**kwargs)
    kwargs["extra_compile_args"] = {"cxx": cxx}
    return cpp_extension.CppExtension(**kwargs)


def _ext_modules():
    if os.environ.get("METAPHYS_PREBUILT_EXT") == "1":  # already built in place by `make build`
        return []
    return [_extension()]


def _version():
    ns = {}
    with open(os.path.join(HERE, "metaphys", "version.py")) as fh:
        exec(fh.read(), ns)
    return ns["__version__"]


setup(
    name="metaphys",
    version=_version(),
    description="Physics simulation with a learned scale-invariant neural optimizer (Metamizer)",
    packages=find_packages(include=["metaphys", "metaphys.*"]),
    package_data={"metaphys": ["py.typed"]},
    ext_modules=_ext_modules(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch==2.13.0", "numpy>=1.24,<2"],
    entry_points={"console_scripts": ["metaphys=metaphys.cli:main"]},
)
