"""Sparse symmetric positive definite (SPD) solves for implicit diffusion / Darcy steps.

Solves ``A X = B`` for a sparse SPD (in practice an M-matrix) ``A`` and one or several right-hand
sides (columns of ``B``), to a relative residual ``||b - A x||_2 <= rtol ||b||_2`` per column
(default 1e-10). Reads nothing and writes nothing outside its arguments.

Three methods, chosen per call by ``method="auto"``:

* ``direct``  - sparse LU (``scipy.sparse.linalg.splu``) for small systems (n <= ``direct_max``).
* ``jacobi``  - conjugate gradients preconditioned with the diagonal. Used when the matrix is strongly
  diagonally dominant, i.e. the Jacobi bound ``rho = max_i sum_{j!=i}|a_ij| / a_ii`` is below
  ``jacobi_rho_max``. Implicit steps whose diffusion number ``c dt / dx^2`` is small, or with a strong
  vascular sink, are of this kind; one CG iteration costs about one sparse product, far less than an AMG
  V-cycle, and CG converges in ``O(sqrt((1+rho)/(1-rho)) log(1/rtol))`` iterations.
* ``amg``     - CG accelerated pyamg smoothed-aggregation V-cycles. The hierarchy is built once and
  reused as a preconditioner for later matrices of the same size while the iteration count stays
  below ``rebuild_ratio`` times the count measured right after the build (the matrix values or pattern
  may drift: any SPD preconditioner keeps CG correct, only its speed changes). It is rebuilt when a
  solve gets slow or fails to converge.

``exact_tail=k`` declares the last ``k`` unknowns (e.g. 1-D needle-track nodes with conductances many
orders above the tissue) to be preconditioned by an exact sparse LU of their diagonal block, while the
leading block uses Jacobi or AMG (a block-Jacobi preconditioner; still SPD, so CG applies).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numba import njit

try:  # pyamg is a hard dependency of the project; keep the import local to this module
    import pyamg
except Exception:  # pragma: no cover
    pyamg = None

__all__ = ["SPDSolver", "jacobi_bound"]


@njit(cache=True)
def _csr_rowabs_diag(indptr, indices, data, nrows):
    absrow = np.zeros(nrows)
    diag = np.zeros(nrows)
    for i in range(nrows):
        s = 0.0
        d = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            v = data[k]
            s += abs(v)
            if indices[k] == i:
                d += v
        absrow[i] = s
        diag[i] = d
    return absrow, diag


def jacobi_bound(A: sp.csr_matrix, rows: int | None = None) -> float:
    """max_i sum_{j != i} |a_ij| / a_ii over the first ``rows`` rows (all if None)."""
    A = sp.csr_matrix(A)
    nr = A.shape[0] if rows is None else int(rows)
    if nr == 0:
        return 0.0
    absrow, d = _csr_rowabs_diag(A.indptr, A.indices, A.data, nr)
    off = absrow - np.abs(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d > 0, off / d, np.inf)
    return float(np.max(r))


@njit(cache=True)
def _spmm(indptr, indices, data, X, out):
    """out = A @ X for CSR A and X of shape (n, k), k = 1 or 2 specialised."""
    n, k = X.shape
    if k == 1:
        for i in range(n):
            s0 = 0.0
            for p in range(indptr[i], indptr[i + 1]):
                s0 += data[p] * X[indices[p], 0]
            out[i, 0] = s0
    elif k == 2:
        for i in range(n):
            s0 = 0.0
            s1 = 0.0
            for p in range(indptr[i], indptr[i + 1]):
                j = indices[p]
                v = data[p]
                s0 += v * X[j, 0]
                s1 += v * X[j, 1]
            out[i, 0] = s0
            out[i, 1] = s1
    else:
        for i in range(n):
            for c in range(k):
                s0 = 0.0
                for p in range(indptr[i], indptr[i + 1]):
                    s0 += data[p] * X[indices[p], c]
                out[i, c] = s0


@njit(cache=True)
def _dot_col(A, B, c):
    s = 0.0
    for i in range(A.shape[0]):
        s += A[i, c] * B[i, c]
    return s


@njit(cache=True)
def _cg_update(X, R, Z, P, AP, invd, alpha, c):
    rn = 0.0
    rz = 0.0
    for i in range(X.shape[0]):
        X[i, c] += alpha * P[i, c]
        r = R[i, c] - alpha * AP[i, c]
        R[i, c] = r
        z = r * invd[i]
        Z[i, c] = z
        rn += r * r
        rz += r * z
    return rn, rz


@njit(cache=True)
def _cg_dir(P, Z, beta, c):
    for i in range(P.shape[0]):
        P[i, c] = Z[i, c] + beta * P[i, c]


@njit(cache=True)
def _pcg_jacobi(indptr, indices, data, B, X, invd, rtol, maxit):
    """Jacobi-preconditioned CG, columns independent, one shared sparse product per iteration.

    Returns (iterations, converged). X is updated in place (initial guess on entry)."""
    n, k = B.shape
    R = np.empty((n, k))
    AP = np.empty((n, k))
    Z = np.empty((n, k))
    P = np.empty((n, k))
    _spmm(indptr, indices, data, X, AP)
    tol = np.zeros(k)
    rz = np.zeros(k)
    active = np.zeros(k, dtype=np.bool_)
    for c in range(k):
        bn = 0.0
        rn = 0.0
        s = 0.0
        for i in range(n):
            bn += B[i, c] * B[i, c]
            r = B[i, c] - AP[i, c]
            R[i, c] = r
            rn += r * r
            z = r * invd[i]
            Z[i, c] = z
            P[i, c] = z
            s += r * z
        tol[c] = rtol * np.sqrt(bn)
        active[c] = np.sqrt(rn) > tol[c]
        rz[c] = s
    if not active.any():
        return 0, True
    it = 0
    while it < maxit:
        it += 1
        _spmm(indptr, indices, data, P, AP)
        anyact = False
        for c in range(k):
            if not active[c]:
                continue
            pap = _dot_col(P, AP, c)
            alpha = rz[c] / pap if pap > 0 else 0.0
            rn, rz_new = _cg_update(X, R, Z, P, AP, invd, alpha, c)
            if np.sqrt(rn) <= tol[c]:
                active[c] = False
                continue
            anyact = True
            beta = rz_new / rz[c] if rz[c] != 0 else 0.0
            rz[c] = rz_new
            _cg_dir(P, Z, beta, c)
        if not anyact:
            return it, True
    return it, False


class SPDSolver:
    """Reusable SPD solver (see module docstring).

    Parameters
    ----------
    rtol: relative residual tolerance per right-hand side.
    method: "auto", "direct", "jacobi" or "amg".
    direct_max: largest n solved directly by "auto".
    jacobi_rho_max: "auto" picks Jacobi-PCG when the Jacobi bound is below this, AMG otherwise.
    max_iter: CG iteration cap; a Jacobi solve that hits it falls back to AMG, an AMG solve rebuilds once.
    rebuild_ratio: rebuild the AMG hierarchy when a solve needs more than
        ``max(rebuild_ratio * n0, n0 + 8)`` iterations, n0 = max(iterations of the first solve after the build, 6).
    amg_kwargs: passed to ``pyamg.smoothed_aggregation_solver``.
    """

    def __init__(self, rtol: float = 1e-10, method: str = "auto", direct_max: int = 2000,
                 jacobi_rho_max: float = 0.995, max_iter: int = 1000, rebuild_ratio: float = 2.0,
                 amg_kwargs: dict | None = None):
        if method not in ("auto", "direct", "jacobi", "amg"):
            raise ValueError(f"unknown method {method!r}")
        self.rtol = float(rtol)
        self.method = method
        self.direct_max = int(direct_max)
        self.jacobi_rho_max = float(jacobi_rho_max)
        self.max_iter = int(max_iter)
        self.rebuild_ratio = float(rebuild_ratio)
        self.amg_kwargs = dict(amg_kwargs or {})
        self._ml = None
        self._ml_n = -1
        self._ml_iters0 = None
        self._rebuild = False
        self.stats = {"solves": 0, "iterations": 0, "amg_builds": 0, "direct": 0, "jacobi": 0, "amg": 0}
        self.last_method = None
        self.last_iterations = 0
        self.last_rho = None

    # ------------------------------------------------------------------ public
    def invalidate(self) -> None:
        """Forget the AMG hierarchy (call when the unknown numbering changes)."""
        self._ml = None
        self._ml_n = -1
        self._ml_iters0 = None

    def solve(self, A, B, X0=None, exact_tail: int = 0, method: str | None = None) -> np.ndarray:
        """Solve A X = B (B of shape (n,) or (n, k)); ``method`` overrides the automatic choice."""
        A = sp.csr_matrix(A)
        B = np.asarray(B, dtype=np.float64)
        vec = B.ndim == 1
        B2 = B[:, None] if vec else B
        n = A.shape[0]
        if X0 is not None:
            X0 = np.asarray(X0, dtype=np.float64)
            X0 = X0[:, None] if X0.ndim == 1 else X0
        self.stats["solves"] += B2.shape[1]
        method = method or self._choose(A, n, exact_tail)
        if method == "direct":
            X = self._direct(A, B2)
            self.last_iterations = 0
        else:
            X = self._iterative(A, B2, X0, exact_tail, method)
        self.last_method = method
        self.stats[method] += 1
        return X[:, 0] if vec else X

    # ----------------------------------------------------------------- helpers
    def choose(self, A, exact_tail: int = 0) -> str:
        """The method "auto" would use for A (direct / jacobi / amg)."""
        return self._choose(sp.csr_matrix(A), A.shape[0], exact_tail)

    def _choose(self, A, n, exact_tail):
        if self.method != "auto":
            return self.method
        if n <= self.direct_max:
            return "direct"
        rho = jacobi_bound(A, n - exact_tail)
        self.last_rho = rho
        return "jacobi" if rho < self.jacobi_rho_max else "amg"

    @staticmethod
    def _direct(A, B):
        lu = spla.splu(sp.csc_matrix(A), permc_spec="MMD_AT_PLUS_A")
        return lu.solve(np.ascontiguousarray(B))

    def _build_amg(self, Agg):
        if pyamg is None:  # pragma: no cover
            raise RuntimeError("pyamg is required for method='amg'")
        A0 = Agg.copy()
        A0.eliminate_zeros()
        # Gershgorin-weighted Jacobi prolongation smoothing: no Arnoldi spectral-radius estimate (dense BLAS
        # dots that are slow under thread contention); for M-matrices rho(D^-1 A) <= 2 anyway.
        kw = dict(max_coarse=500, coarse_solver="splu",
                  smooth=("jacobi", {"omega": 4.0 / 3.0, "weighting": "local"}))
        kw.update(self.amg_kwargs)
        self._ml = pyamg.smoothed_aggregation_solver(A0, **kw)
        self._ml_prec = self._ml.aspreconditioner(cycle="V")
        self._ml_n = Agg.shape[0]
        self._ml_iters0 = None
        self._rebuild = False
        self.stats["amg_builds"] += 1

    def _iterative(self, A, B, X0, exact_tail, method):
        n = A.shape[0]
        ng = n - exact_tail
        Agg = A[:ng, :ng] if exact_tail else A
        # tail block: exact LU
        lu_t = None
        if exact_tail:
            Att = sp.csc_matrix(A[ng:, ng:])
            lu_t = spla.splu(Att)
        d = A.diagonal()[:ng].copy()
        d[d == 0] = 1.0
        invd = 1.0 / d

        if method == "amg":
            if self._ml is None or self._ml_n != ng or self._rebuild:
                self._build_amg(Agg)
            M = self._ml_prec

            def prec_grid(r):
                out = np.empty_like(r)
                for c in range(r.shape[1]):
                    out[:, c] = M.matvec(r[:, c])
                return out
        else:
            def prec_grid(r):
                return r * invd[:, None]

        if method == "jacobi" and not exact_tail:
            X = np.ascontiguousarray(np.zeros(B.shape) if X0 is None else X0, dtype=np.float64).copy()
            its, ok = _pcg_jacobi(A.indptr, A.indices, A.data, np.ascontiguousarray(B), X, invd,
                                  self.rtol, self.max_iter)
            if not ok:
                self._build_amg(Agg)
                return self._iterative(A, B, X, exact_tail, "amg")
            self.last_iterations = its
            self.stats["iterations"] += its
            return X

        def prec(R):
            Z = np.empty_like(R)
            Z[:ng] = prec_grid(R[:ng])
            if exact_tail:
                Z[ng:] = lu_t.solve(np.ascontiguousarray(R[ng:]))
            return Z

        X, its, ok = self._pcg(A, B, X0, prec)
        if not ok:
            if method == "jacobi":
                # fall back to AMG
                self._build_amg(Agg)
                return self._iterative(A, B, X, exact_tail, "amg")
            if method == "amg" and not self._just_built:
                self._build_amg(Agg)
                return self._iterative(A, B, X, exact_tail, "amg")
            raise RuntimeError(f"SPDSolver: CG did not converge in {self.max_iter} iterations ({method})")
        if method == "amg":
            if self._ml_iters0 is None:
                self._ml_iters0 = max(its, 6)  # warm starts can make the first count unrepresentatively low
            elif its > max(self.rebuild_ratio * self._ml_iters0, self._ml_iters0 + 8):
                self._rebuild = True
        self.last_iterations = its
        self.stats["iterations"] += its
        return X

    @property
    def _just_built(self):
        return self._ml_iters0 is None

    def _pcg(self, A, B, X0, prec):
        """Column-wise independent preconditioned CG sharing the sparse products."""
        n, k = B.shape
        X = np.zeros((n, k)) if X0 is None else X0.copy()
        bnorm = np.linalg.norm(B, axis=0)
        tol = self.rtol * bnorm
        R = B - A @ X if X0 is not None else B.copy()
        rn = np.linalg.norm(R, axis=0)
        active = rn > tol
        if not active.any():
            return X, 0, True
        Z = prec(R)
        P = Z.copy()
        rz = np.einsum("ij,ij->j", R, Z)
        its = 0
        while its < self.max_iter:
            its += 1
            AP = A @ P
            pAp = np.einsum("ij,ij->j", P, AP)
            with np.errstate(divide="ignore", invalid="ignore"):
                alpha = np.where(active & (pAp > 0), rz / pAp, 0.0)
            X += P * alpha
            R -= AP * alpha
            rn = np.linalg.norm(R, axis=0)
            active = rn > tol
            if not active.any():
                return X, its, True
            Z = prec(R)
            rz_new = np.einsum("ij,ij->j", R, Z)
            with np.errstate(divide="ignore", invalid="ignore"):
                beta = np.where(active & (rz != 0), rz_new / rz, 0.0)
            P = Z + P * beta
            rz = rz_new
        return X, its, False
