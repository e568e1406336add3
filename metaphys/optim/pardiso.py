"""Sparse symmetric factorizations by MKL PARDISO (the `mkl` wheel's libmkl_rt), called through ctypes.

Newton-Krylov's lagged preconditioner is a factorization of a symmetric (projected) Hessian. SciPy's
SuperLU treats it as a general matrix; PARDISO factors it as symmetric indefinite (LDL^T with
Bunch-Kaufman pivoting), or with ``definite=True`` as symmetric positive definite (Cholesky: refused with
PardisoError where a pivot is not positive, so the caller can fall back), both in MKL's minimum-degree
ordering (iparm[1] = 0). AMD beat METIS nested dissection on the cloth's Krylov matrix at every size
(2026-12-07, float32, 1 thread, ms per numeric factorization / analysis / solve, factor nonzeros):
32^2 METIS LDL^T 5.9 / 12.1 / 0.40 (416k) -> AMD Cholesky 4.9 / 7.0 / 0.35 (350k); 64^2 38.4 / 51 / 2.8
(2.33M) -> 23.5 / 31 / 2.1 (2.11M); 128^2 249 / 287 / 17 (12.1M) -> 158 / 151 / 12 (11.5M); on 2 threads
64^2 52.6 -> 24.5, 128^2 245 -> 167 (measured beside another job: the second thread gained nothing;
on an idle machine, 2026-12-07, a 128^2 numeric factorization takes 156 ms on 1 thread and 93-108 ms wall
on 2, while its solves stay at 14-15 ms: the sims' thread count, 2 from 64^2, reaches PARDISO).
Against SuperLU (earlier, double, METIS, analysis included, 1 thread): 32^2 19.5 vs 23 ms per
factorization, 64^2 82 vs 265 ms, 128^2 494 ms (SuperLU: seconds); the triangular solves cost the same
(0.5 ms at 32^2, 5 ms at 64^2). ``available()`` says whether the
library loads; ``metaphys.optim.newton`` falls back to SuperLU where it does not.

Only the upper triangle of the matrix is passed (PARDISO's storage for symmetric types), zero-based
(iparm[34] = 1). A factor keeps PARDISO's handle ``pt`` alive until ``release()`` or garbage collection.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
from typing import Optional

import numpy as np

MTYPE_SYMMETRIC_INDEFINITE = -2
MTYPE_SYMMETRIC_DEFINITE = 2
ORDERING_MINIMUM_DEGREE = 0   # iparm[1]: MKL's AMD (2 = METIS nested dissection), measured above
_PHASE_ANALYSE_FACTOR, _PHASE_FACTOR, _PHASE_SOLVE, _PHASE_RELEASE = 12, 22, 33, -1
_MKL_DOMAIN_PARDISO = 4
_MKL_THREADING_GNU = 3
_lib = None
_load_error: Optional[str] = None


def _load():
    global _lib, _load_error
    if _lib is not None or _load_error is not None:
        return _lib
    candidates = []
    for root in {sys.prefix, sys.base_prefix}:
        candidates += sorted(glob.glob(os.path.join(root, "lib", "libmkl_rt.so*")))
    candidates += ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            fn = lib.pardiso
        except (OSError, AttributeError):
            continue
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_int32)] * 5 + [ctypes.c_void_p] * 2 + \
                      [ctypes.c_void_p] * 2 + [ctypes.POINTER(ctypes.c_int32), ctypes.c_void_p,
                                               ctypes.POINTER(ctypes.c_int32), ctypes.c_void_p, ctypes.c_void_p,
                                               ctypes.POINTER(ctypes.c_int32)]
        # MKL's OpenMP threads from GNU libgomp, the runtime torch uses: one thread pool per process
        # instead of Intel's libiomp5 beside it (set before any other MKL call)
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Threading_Layer(_MKL_THREADING_GNU)
        lib.MKL_Domain_Set_Num_Threads.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.MKL_Domain_Get_Max_Threads.argtypes = [ctypes.c_int]
        _lib = lib
        return _lib
    _load_error = "libmkl_rt (pip package `mkl`) was not found next to this Python"
    return None


def available() -> bool:
    """Whether MKL PARDISO can be used here (the `mkl` wheel is installed)."""
    return _load() is not None




class PardisoError(RuntimeError):
    """PARDISO refused the matrix (the message gives its error code and what it means)."""


class PardisoRefused(PardisoError):
    """A Cholesky factorization met a non-positive pivot (the matrix is not definite). ``analysis``: the
    refused factor, which still owns its symbolic analysis -- a later Cholesky of a matrix with the same
    pattern can take it over (``reuse=``) instead of analysing again; it cannot solve. Measured: a
    handle whose numeric factorization was refused (phase 12 or 22) factors the next matrix exactly."""

    def __init__(self, message: str, analysis: "PardisoFactor"):
        super().__init__(message)
        self.analysis = analysis


_ERRORS = {-1: "input inconsistent", -2: "not enough memory", -3: "reordering problem",
           -4: "zero pivot, numerical factorization or iterative refinement problem",
           -5: "unclassified (internal) error", -6: "reordering failed", -7: "diagonal matrix is singular",
           -8: "32-bit integer overflow", -9: "not enough memory for OOC", -10: "problems with opening OOC files",
           -11: "read/write problems with the OOC data file", -12: "pardiso_64 called from 32-bit library"}


_UPPER: list = []   # (indptr, indices, take, ia, ja) of the CSR patterns seen last (most recent first)


def _upper_pattern(A):
    """(take, ia, ja) with A's upper triangle in PARDISO's CSR = (A.data[take], ia, ja), cached per
    sparsity pattern (Newton's Hessians share one pattern per grid: the triangle and its index arrays
    are found once instead of per factorization, ~1.3 ms of a 32^2 cloth's refactorization; the cache
    compares the index arrays' contents: scipy copies them into every new matrix); None where A is not
    CSR with sorted indices and a stored diagonal entry in every row."""
    if A.format != "csr" or not A.has_sorted_indices:
        return None
    for k, (indptr, indices, take, ia, ja) in enumerate(_UPPER):
        if indices.shape == A.indices.shape and np.array_equal(indptr, A.indptr) and \
                np.array_equal(indices, A.indices):
            _UPPER.insert(0, _UPPER.pop(k))
            return take, ia, ja
    n = A.shape[0]
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    upper = A.indices >= rows
    if np.count_nonzero(A.indices[upper] == rows[upper]) != n:   # a row without its diagonal entry
        return None
    take = np.flatnonzero(upper)
    ia = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows[upper], minlength=n), out=ia[1:])
    ja = np.ascontiguousarray(A.indices[upper], dtype=np.int32)
    _UPPER.insert(0, (A.indptr.copy(), A.indices.copy(), take, ia, ja))
    del _UPPER[4:]
    return take, ia, ja


class PardisoFactor:
    """LDL^T factorization of a symmetric scipy sparse matrix ``A`` [n, n] (full or upper storage; only
    its upper triangle is read), with ``solve(b)`` like SuperLU's. ``threads``: MKL threads for the
    factorization and solves (default: torch's current thread count, so a sim's ``threads`` holds).

    ``reuse``: an earlier factor that is no longer needed; where its matrix had the same sparsity
    pattern (and precision), its symbolic analysis (METIS ordering, the factor's structure) is taken
    over and only the numbers are factored again: the analysis is about half of a factorization
    (cloth Krylov matrix, 1 thread: 32^2 12.7 of 22 ms, 64^2 55 of 109 ms, 128^2 227 of 595 ms). The
    earlier factor is released either way. ``single``: factor and solve in float32 (PARDISO's
    iparm[27] = 1; b and the solution stay float64 for the caller): a preconditioner's precision,
    30 % faster factorizations and 25 % faster solves, relative residual ~1e-3 instead of ~1e-12.
    ``definite``: Cholesky for a matrix known to be positive definite (a projected Hessian): 10-20 %
    cheaper than LDL^T; one that is not raises PardisoError ("zero pivot") instead of factoring."""

    def __init__(self, A, threads: Optional[int] = None, reuse: Optional["PardisoFactor"] = None,
                 single: bool = False, definite: bool = False):
        import scipy.sparse as sp

        lib = _load()
        if lib is None:
            raise PardisoError(_load_error or "MKL PARDISO is not available")
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"PARDISO factors square matrices, got shape {A.shape}")
        if threads is None:
            import torch
            threads = torch.get_num_threads()
        self.threads = max(1, int(threads))
        n = A.shape[0]
        self.n = n
        self.single = bool(single)
        self.mtype = MTYPE_SYMMETRIC_DEFINITE if definite else MTYPE_SYMMETRIC_INDEFINITE
        self.dtype = np.float32 if self.single else np.float64
        cached = _upper_pattern(A)
        if cached is not None:   # a CSR matrix on a pattern seen before: one gather
            take, self.ia, self.ja = cached
            self.data = A.data[take].astype(self.dtype)
        else:
            # the upper triangle plus an explicit diagonal entry in every row (PARDISO's rule for symmetric
            # storage; coo -> csr sums duplicates and keeps the explicit zeros)
            tri = sp.triu(A, format="coo")
            diag = np.arange(n)
            upper = sp.coo_matrix((np.concatenate([tri.data, np.zeros(n)]),
                                   (np.concatenate([tri.row, diag]), np.concatenate([tri.col, diag]))),
                                  shape=(n, n)).tocsr()
            upper.sort_indices()
            self.data = np.ascontiguousarray(upper.data, dtype=self.dtype)
            self.ia = np.ascontiguousarray(upper.indptr, dtype=np.int32)
            self.ja = np.ascontiguousarray(upper.indices, dtype=np.int32)
        self._released = False
        self.reused_analysis = reuse is not None and reuse._same_pattern(self)
        if self.reused_analysis:
            # take over the earlier factor's handle (its analysis): it no longer owns it
            self.pt, self.iparm = reuse.pt, reuse.iparm.copy()
            reuse.pt, reuse._released = np.zeros(64, dtype=np.int64), True
            self._factor_or_release(_PHASE_FACTOR)
            return
        if reuse is not None:
            reuse.release()
        self.pt = np.zeros(64, dtype=np.int64)
        self.iparm = np.zeros(64, dtype=np.int32)
        self.iparm[0] = 1      # the values below, not PARDISO's defaults
        self.iparm[1] = ORDERING_MINIMUM_DEGREE
        self.iparm[9] = 8      # pivot perturbation 1e-8 (a nearly singular projected Hessian still factors)
        self.iparm[10] = 0     # no scaling (symmetric indefinite default)
        self.iparm[12] = 0     # no weighted matching
        self.iparm[17] = -1    # report the factor's nonzeros
        self.iparm[27] = int(self.single)   # float32 factor, matrix and vectors
        self.iparm[34] = 1     # zero-based indices (scipy's)
        self._factor_or_release(_PHASE_ANALYSE_FACTOR)

    def _factor_or_release(self, phase: int) -> None:
        # a refused Cholesky (a zero or negative pivot: not definite) keeps its analysis for the caller
        # (PardisoRefused.analysis); any other failure frees the handle at once
        self.factored = False
        try:
            self._call(phase, np.zeros(self.n))
        except PardisoError as e:
            if self.mtype == MTYPE_SYMMETRIC_DEFINITE and "error -4" in str(e):
                raise PardisoRefused(str(e), self) from None
            self.release()
            raise
        self.factored = True

    def _same_pattern(self, other: "PardisoFactor") -> bool:
        """Whether ``other`` (a new factor's matrix) has this factor's sparsity pattern and precision,
        and this factor still owns its analysis."""
        return (not self._released and self.n == other.n and self.single == other.single
                and self.mtype == other.mtype
                and ((self.ia is other.ia and self.ja is other.ja)   # one cached pattern
                     or (np.array_equal(self.ia, other.ia) and np.array_equal(self.ja, other.ja))))

    @property
    def inertia(self):
        """(positive, negative) eigenvalue counts of the factored matrix (after pivot perturbation)."""
        return int(self.iparm[21]), int(self.iparm[22])

    @property
    def factor_nonzeros(self) -> int:
        return int(self.iparm[17])

    def _call(self, phase: int, b: np.ndarray) -> np.ndarray:
        lib = _load()
        b = np.ascontiguousarray(b, dtype=self.dtype)
        x = np.zeros_like(b)
        err = ctypes.c_int32(0)
        i32 = lambda v: ctypes.byref(ctypes.c_int32(v))
        previous = lib.MKL_Domain_Get_Max_Threads(_MKL_DOMAIN_PARDISO)
        lib.MKL_Domain_Set_Num_Threads(self.threads, _MKL_DOMAIN_PARDISO)
        try:
            lib.pardiso(self.pt.ctypes.data, i32(1), i32(1), i32(self.mtype), i32(phase),
                        i32(self.n), self.data.ctypes.data, self.ia.ctypes.data, self.ja.ctypes.data,
                        None, i32(1), self.iparm.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), i32(0),
                        b.ctypes.data, x.ctypes.data, ctypes.byref(err))
        finally:
            lib.MKL_Domain_Set_Num_Threads(previous, _MKL_DOMAIN_PARDISO)
        if err.value != 0:
            raise PardisoError(f"PARDISO phase {phase} failed with error {err.value}: "
                               f"{_ERRORS.get(err.value, 'unknown error')} (matrix {self.n} x {self.n})")
        return x

    def solve(self, b: np.ndarray) -> np.ndarray:
        """x with A x = b (b: [n])."""
        if self._released:
            raise PardisoError("this factorization was released")
        if not self.factored:
            raise PardisoError("this factorization was refused (not definite): it holds only its analysis")
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (self.n,):
            raise ValueError(f"b must have shape ({self.n},), got {b.shape}")
        return self._call(_PHASE_SOLVE, b).astype(np.float64, copy=False)

    def release(self) -> None:
        """Free PARDISO's memory for this factor (also done when it is garbage-collected)."""
        if not self._released and _lib is not None:
            self._released = True
            try:
                self._call(_PHASE_RELEASE, np.zeros(self.n))
            except PardisoError:
                pass

    def __deepcopy__(self, memo):
        # a copy must own its own PARDISO handle (two owners of one ``pt`` would free it twice)
        import scipy.sparse as sp
        A = sp.csr_matrix((self.data.astype(np.float64), self.ja.copy(), self.ia.copy()), shape=(self.n, self.n))
        return PardisoFactor(A, threads=self.threads, single=self.single,
                             definite=self.mtype == MTYPE_SYMMETRIC_DEFINITE)

    def __reduce__(self):
        raise TypeError("a PARDISO factorization cannot be pickled: save the matrix and factor it again")

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass
