"""Implicit LOD (locally one-dimensional) diffusion with first-order decay.

Equation (per voxel, liquid concentration ``c``, capacity ``theta`` = mobile-liquid volume fraction)::

    d(theta c)/dt = div(theta D grad c) - lam theta c          zero flux on the domain boundary

Time discretisation (Lie splitting, one call = one step ``dt``): three backward-Euler 1-D diffusion sweeps,
x then y then z, followed by exact first-order decay ``c <- c exp(-lam dt)`` (fused into the z sweep).
For each sweep along an axis of spacing ``h`` the 1-D system is written in flux (finite-volume) form::

    theta_i c_i^+  -  w_{i-1/2} (c_{i-1}^+ - c_i^+)  -  w_{i+1/2} (c_{i+1}^+ - c_i^+)  =  theta_i c_i

    w_{i+1/2} = dt/h^2 * 2 a_i a_{i+1} / (a_i + a_{i+1}),   a_i = thetaD_i if theta_i > 0 else 0

(harmonic face mean; boundary faces have w = 0). The matrix has zero column sums apart from ``theta``, so
``sum(theta c dV)`` is conserved by every sweep to round-off, whatever the coefficients. A voxel with
``theta == 0`` (no tissue) or whose two faces along the sweep axis are both zero is left bit-for-bit unchanged
by that sweep; decay is applied only where ``theta > 0``. Each sweep is unconditionally stable and keeps
``c >= 0`` (M-matrix). Spatial accuracy is second order; the time error is first order (backward Euler +
Lie splitting), so ``dt ~ h^2`` gives an overall O(h^2) error.

Fields read: ``theta``, ``thetaD`` (= theta * D, m^2/s), ``lam`` (1/s, per voxel or scalar). Field written:
``c`` (in place). :func:`lod_diffuse` returns the amount removed by decay in this step, in units of
``theta * c * dV`` (e.g. mol when c is mol/m^3), for the caller's ledger sink.

Two entry points:

* :func:`lod_diffuse` - variable coefficients (per-voxel theta, thetaD, lam). Work arrays live in an
  :class:`LODWorkspace` (pass one, or a per-shape cached one is used): nothing is allocated per step.
* :class:`DiffusionDecayLOD` - constant ``D`` and ``lam`` on the whole grid (theta = 1), BioFVM style:
  the Thomas factors of each axis are precomputed once; ``step(c)`` is two Numba kernels (an x sweep blocked
  per y-row, and a fused y+z sweep + decay per x-slab), each of which streams the field through DRAM once.

Implementation notes (performance): the sweeps along the strided axes (x, y) run the Thomas recursion for a
whole contiguous row of lines at once (loop over the sweep index outside, contiguous k inside, SIMD); the
x sweep is parallel over j and re-reads its (nx, nz) slice from cache, not DRAM, in the back substitution
(L2 or, when the row stride ny*nz*8 is a multiple of 64 KiB and the rows collide in L2 sets, L3); the y
sweep works on one contiguous (ny, nz) slab (L2 resident) per thread. The z sweep (contiguous axis) of the constant path
interleaves 8 independent lines with register-carried recursions, which hides the recursion latency; the
variable path sweeps z line by line and is bound by its divisions (two per voxel and sweep, one on the z
recursion chain): about 6x slower per voxel than the constant path (see BENCHMARKS.md).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .arrays import cached_workspace

__all__ = ["lod_diffuse", "lod_decay_amount", "LODWorkspace", "DiffusionDecayLOD", "thomas_factors"]

_TINY = 1e-300


# ----------------------------------------------------------------------------------------------------------
# variable coefficients
# ----------------------------------------------------------------------------------------------------------
@njit(fastmath=True, error_model="numpy")
def _fwd_row(C, T, Dd, G, Cp, Gp, Tn, Dn, W, w, last):
    """Thomas elimination of one row (sweep index i) for all lines of the row (vector index k).

    C: rhs theta_i c_i -> modified rhs d'_i (in place); G: g_i = w_{i+1/2} / den_i; ``*p``: row i-1 (already
    eliminated), ``*n``: row i+1. W holds w_{i-1/2} on entry and w_{i+1/2} on exit (carried to the next row).
    """
    m = C.shape[0]
    for k in range(m):
        tk = T[k]
        pos = tk > 0.0
        a = Dd[k] if pos else 0.0
        tt = tk if pos else 1.0
        wl = W[k]
        wr = 0.0
        if not last:
            tn = Tn[k]
            an = Dn[k] if tn > 0.0 else 0.0
            wr = w * (2.0 * a * an) / max(a + an, _TINY)
        inv = 1.0 / (tt + wr + wl * (1.0 - Gp[k]))
        ck = C[k]
        new = (tt * ck + wl * Cp[k]) * inv
        C[k] = ck if (wl + wr) == 0.0 else new  # isolated along this axis: bit-for-bit unchanged
        G[k] = wr * inv
        W[k] = wr


@njit(fastmath=True, error_model="numpy")
def _bwd_row(C, G, Cn):
    m = C.shape[0]
    for k in range(m):
        C[k] += G[k] * Cn[k]


@njit(cache=True, fastmath=True, error_model="numpy")
def _var_x_plane(c, th, td, g, w, j, W):
    """x sweep of all lines (:, j, k) of the y-row j: recursion over i, vectorised over k."""
    nx = c.shape[0]
    W[:] = 0.0
    for i in range(nx):
        ip = max(i - 1, 0)
        inn = min(i + 1, nx - 1)
        if i == 0:  # no row i-1: W (= 0) stands in for it
            _fwd_row(c[i, j], th[i, j], td[i, j], g[i, j], W, W, th[inn, j], td[inn, j], W, w, i == nx - 1)
        else:
            _fwd_row(c[i, j], th[i, j], td[i, j], g[i, j], c[ip, j], g[ip, j], th[inn, j], td[inn, j], W, w,
                     i == nx - 1)
    for i in range(nx - 2, -1, -1):
        _bwd_row(c[i, j], g[i, j], c[i + 1, j])


@njit(parallel=True, cache=True)
def _var_sweep_x(c, th, td, g, w, rows):
    for j in prange(c.shape[1]):
        _var_x_plane(c, th, td, g, w, j, rows[numba.get_thread_id()])


@njit(fastmath=True, error_model="numpy")
def _var_z_line(C, T, Dd, G, w, lam, lam_mode, f1, dt):
    """z sweep of one contiguous line (serial recursion) with decay fused into the back substitution.
    Returns the decayed amount / dV of the line."""
    nz = C.shape[0]
    wl = 0.0
    gp = 0.0
    cp = 0.0
    for k in range(nz):
        tk = T[k]
        pos = tk > 0.0
        a = Dd[k] if pos else 0.0
        tt = tk if pos else 1.0
        wr = 0.0
        if k < nz - 1:
            tn = T[k + 1]
            an = Dd[k + 1] if tn > 0.0 else 0.0
            wr = w * (2.0 * a * an) / max(a + an, _TINY)
        inv = 1.0 / (tt + wr + wl * (1.0 - gp))
        ck = C[k]
        new = (tt * ck + wl * cp) * inv
        cp = ck if (wl + wr) == 0.0 else new
        C[k] = cp
        gp = wr * inv
        G[k] = gp
        wl = wr
    acc = 0.0
    x = C[nz - 1]
    for k in range(nz - 1, -1, -1):
        if k < nz - 1:
            x = C[k] + G[k] * x
        if lam_mode == 0:
            C[k] = x
        else:
            t = T[k]
            if t > 0.0:
                f = f1 if lam_mode == 1 else math.exp(-lam[k] * dt)
                acc += t * x * (1.0 - f)
                C[k] = x * f
            else:
                C[k] = x
    return acc


@njit(fastmath=True, error_model="numpy")
def _var_y_slab(s, st, sd, sg, wy, W):
    """y sweep of one x-slab (recursion over j, vectorised over k)."""
    ny = s.shape[0]
    W[:] = 0.0
    for j in range(ny):
        jn = min(j + 1, ny - 1)
        if j == 0:
            _fwd_row(s[j], st[j], sd[j], sg[j], W, W, st[jn], sd[jn], W, wy, j == ny - 1)
        else:
            _fwd_row(s[j], st[j], sd[j], sg[j], s[j - 1], sg[j - 1], st[jn], sd[jn], W, wy, j == ny - 1)
    for j in range(ny - 2, -1, -1):
        _bwd_row(s[j], sg[j], s[j + 1])


@njit(cache=True, fastmath=True, error_model="numpy")
def _var_yz_slab(c, th, td, g, lam, lam_mode, wy, wz, dt, W, i):
    """y sweep (vectorised over k) then z sweep (line by line) and decay of the x-slab i.
    Returns the decayed amount / dV of the slab."""
    nx, ny, nz = c.shape
    s = c[i]
    st = th[i]
    sd = td[i]
    sg = g[i]
    # ---- y sweep
    _var_y_slab(s, st, sd, sg, wy, W)
    # ---- z sweep + decay
    f1 = math.exp(-lam[0, 0, 0] * dt) if lam_mode == 1 else 1.0
    acc = 0.0
    for j in range(ny):
        lam_line = lam[i, j] if lam_mode == 2 else lam[0, 0]
        acc += _var_z_line(s[j], st[j], sd[j], sg[j], wz, lam_line, lam_mode, f1, dt)
    return acc


@njit(cache=True, fastmath=True, error_model="numpy")
def _var_zy_slab(c, th, td, g, wy, wz, W, i):
    """Reverse order of :func:`_var_yz_slab` without decay: z sweep (line by line), then y sweep."""
    nx, ny, nz = c.shape
    s = c[i]
    st = th[i]
    sd = td[i]
    sg = g[i]
    dummy = np.zeros((1, 1))
    for j in range(ny):
        _var_z_line(s[j], st[j], sd[j], sg[j], wz, dummy[0], 0, 1.0, 0.0)
    _var_y_slab(s, st, sd, sg, wy, W)


@njit(parallel=True, cache=True)
def _var_sweep_zy(c, th, td, g, wy, wz, rows):
    for i in prange(c.shape[0]):
        _var_zy_slab(c, th, td, g, wy, wz, rows[numba.get_thread_id()], i)


@njit(parallel=True, cache=True)
def _var_sweep_yz(c, th, td, g, lam, lam_mode, wy, wz, dt, rows, dec):
    for i in prange(c.shape[0]):
        dec[i] = _var_yz_slab(c, th, td, g, lam, lam_mode, wy, wz, dt, rows[numba.get_thread_id()], i)


class LODWorkspace:
    """Preallocated work arrays of :func:`lod_diffuse` for one grid shape (elimination factors, face-weight rows,
    per-slab decay sums)."""

    def __init__(self, shape):
        self.shape = tuple(int(n) for n in shape)
        nx, ny, nz = self.shape
        self.g = np.empty(self.shape)
        self.rows = np.zeros((numba.config.NUMBA_NUM_THREADS, nz))  # per-thread face-weight carry
        self.dec = np.zeros(nx)
        self.lam_scalar = np.zeros((1, 1, 1))



def _workspace(shape) -> LODWorkspace:
    return cached_workspace(LODWorkspace, shape)


def _field(a, shape, name):
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    return a


def lod_diffuse(c, theta, thetaD, dt, spacing, lam=None, work: LODWorkspace | None = None,
                reverse: bool = False) -> float:
    """Advance ``c`` (in place) by one LOD step of ``d(theta c)/dt = div(theta D grad c) - lam theta c``.

    c:       liquid concentration, float64 C-contiguous array (nx, ny, nz); updated in place
    theta:   capacity per voxel (>= 0); voxels with theta == 0 are left unchanged
    thetaD:  theta * D per voxel, m^2/s (face value = harmonic mean of the two voxels)
    dt:      time step, s
    spacing: (dx, dy, dz), m
    lam:     first-order decay rate, 1/s: None, a scalar, or an array of the grid shape
    work:    optional :class:`LODWorkspace` for this shape (default: a cached one per shape)
    reverse: sweep z, y, x instead of x, y, z (no decay allowed): a forward half step followed by a reverse
             half step is the symmetric (Strang) composition, second order in time

    Returns the amount removed by decay during the step, ``sum(theta * c_before_decay * (1 - exp(-lam dt))) * dV``
    (units of theta * c * m^3; 0.0 when lam is None). With lam = None, ``sum(theta * c) * dV`` is unchanged to
    round-off.
    """
    if not (isinstance(c, np.ndarray) and c.dtype == np.float64 and c.flags.c_contiguous and c.ndim == 3):
        raise TypeError("c must be a C-contiguous float64 array of shape (nx, ny, nz) (it is updated in place)")
    shape = c.shape
    th = _field(theta, shape, "theta")
    td = _field(thetaD, shape, "thetaD")
    if np.any(td < 0.0) or np.any(th < 0.0):
        raise ValueError("theta and thetaD must be >= 0")
    dx, dy, dz = (float(h) for h in spacing)
    ws = work if work is not None else _workspace(shape)
    if ws.shape != tuple(shape):
        raise ValueError("workspace shape does not match c")
    if lam is None:
        lam_arr, mode = ws.lam_scalar, 0
    elif np.ndim(lam) == 0:
        ws.lam_scalar[0, 0, 0] = float(lam)
        lam_arr, mode = ws.lam_scalar, (1 if float(lam) != 0.0 else 0)
    else:
        lam_arr, mode = _field(lam, shape, "lam"), 2
    dt = float(dt)
    if reverse:
        if mode != 0:
            raise ValueError("reverse sweeps do not apply decay; pass lam=None")
        _var_sweep_zy(c, th, td, ws.g, dt / dy**2, dt / dz**2, ws.rows)
        _var_sweep_x(c, th, td, ws.g, dt / dx**2, ws.rows)
        return 0.0
    _var_sweep_x(c, th, td, ws.g, dt / dx**2, ws.rows)
    _var_sweep_yz(c, th, td, ws.g, lam_arr, mode, dt / dy**2, dt / dz**2, dt, ws.rows, ws.dec)
    if mode == 0:
        return 0.0
    return float(ws.dec.sum()) * dx * dy * dz


def lod_decay_amount(c, theta, lam, dt, spacing) -> float:
    """Amount that exact decay over ``dt`` removes from the state ``c`` (same formula :func:`lod_diffuse` returns)."""
    lam = np.broadcast_to(np.asarray(lam, dtype=float), c.shape)
    m = theta > 0
    return float(np.sum((theta * c * (-np.expm1(-lam * dt)))[m])) * float(np.prod(spacing))


# ----------------------------------------------------------------------------------------------------------
# constant coefficients (fast path)
# ----------------------------------------------------------------------------------------------------------
def thomas_factors(n: int, r: float):
    """LU factors of the 1-D zero-flux backward-Euler matrix tridiag(-r, 1+2r, -r) (ends 1+r) of size n.

    Returns (f, q, g): forward elimination x_i = d_i f_i + q_i x_{i-1}; back substitution x_i += g_i x_{i+1}.
    """
    b = np.full(n, 1.0 + 2.0 * r)
    if n == 1:
        b[0] = 1.0
    else:
        b[0] = b[-1] = 1.0 + r
    f = np.empty(n)
    q = np.empty(n)
    g = np.zeros(n)
    gprev = 0.0
    for i in range(n):
        den = b[i] - (r * gprev if i > 0 else 0.0)
        f[i] = 1.0 / den
        q[i] = r / den if i > 0 else 0.0
        gprev = r / den if i < n - 1 else 0.0
        g[i] = gprev
    return f, q, g


@njit(cache=True, fastmath=True, error_model="numpy")
def _const_x_plane(c, f, q, g, j):
    nx, ny, nz = c.shape
    row = c[0, j]
    f0 = f[0]
    for k in range(nz):
        row[k] *= f0
    for i in range(1, nx):
        prev = c[i - 1, j]
        row = c[i, j]
        fi = f[i]
        qi = q[i]
        for k in range(nz):
            row[k] = row[k] * fi + qi * prev[k]
    for i in range(nx - 2, -1, -1):
        nxt = c[i + 1, j]
        row = c[i, j]
        gi = g[i]
        for k in range(nz):
            row[k] += gi * nxt[k]


@njit(parallel=True, cache=True)
def _const_sweep_x(c, f, q, g):
    for j in prange(c.shape[1]):
        _const_x_plane(c, f, q, g, j)


@njit(fastmath=True, error_model="numpy")
def _z_line(a0, nz, f, q, g, decay):
    x0 = a0[0] * f[0]
    a0[0] = x0
    for k in range(1, nz):
        x0 = a0[k] * f[k] + q[k] * x0
        a0[k] = x0
    a0[nz - 1] = x0 * decay
    for k in range(nz - 2, -1, -1):
        x0 = a0[k] + g[k] * x0
        a0[k] = x0 * decay


@njit(fastmath=True, error_model="numpy")
def _z_8lines(s, j, nz, f, q, g, decay):
    """z sweep of rows j..j+7 of slab s: 8 independent recursions carried in registers (latency hiding)."""
    a0 = s[j]
    a1 = s[j + 1]
    a2 = s[j + 2]
    a3 = s[j + 3]
    a4 = s[j + 4]
    a5 = s[j + 5]
    a6 = s[j + 6]
    a7 = s[j + 7]
    fk = f[0]
    x0 = a0[0] * fk
    x1 = a1[0] * fk
    x2 = a2[0] * fk
    x3 = a3[0] * fk
    x4 = a4[0] * fk
    x5 = a5[0] * fk
    x6 = a6[0] * fk
    x7 = a7[0] * fk
    a0[0] = x0
    a1[0] = x1
    a2[0] = x2
    a3[0] = x3
    a4[0] = x4
    a5[0] = x5
    a6[0] = x6
    a7[0] = x7
    for k in range(1, nz):
        fk = f[k]
        qk = q[k]
        x0 = a0[k] * fk + qk * x0
        x1 = a1[k] * fk + qk * x1
        x2 = a2[k] * fk + qk * x2
        x3 = a3[k] * fk + qk * x3
        x4 = a4[k] * fk + qk * x4
        x5 = a5[k] * fk + qk * x5
        x6 = a6[k] * fk + qk * x6
        x7 = a7[k] * fk + qk * x7
        a0[k] = x0
        a1[k] = x1
        a2[k] = x2
        a3[k] = x3
        a4[k] = x4
        a5[k] = x5
        a6[k] = x6
        a7[k] = x7
    a0[nz - 1] = x0 * decay
    a1[nz - 1] = x1 * decay
    a2[nz - 1] = x2 * decay
    a3[nz - 1] = x3 * decay
    a4[nz - 1] = x4 * decay
    a5[nz - 1] = x5 * decay
    a6[nz - 1] = x6 * decay
    a7[nz - 1] = x7 * decay
    for k in range(nz - 2, -1, -1):
        gk = g[k]
        x0 = a0[k] + gk * x0
        x1 = a1[k] + gk * x1
        x2 = a2[k] + gk * x2
        x3 = a3[k] + gk * x3
        x4 = a4[k] + gk * x4
        x5 = a5[k] + gk * x5
        x6 = a6[k] + gk * x6
        x7 = a7[k] + gk * x7
        a0[k] = x0 * decay
        a1[k] = x1 * decay
        a2[k] = x2 * decay
        a3[k] = x3 * decay
        a4[k] = x4 * decay
        a5[k] = x5 * decay
        a6[k] = x6 * decay
        a7[k] = x7 * decay


@njit(cache=True, fastmath=True, error_model="numpy")
def _const_yz_slab(c, fy, qy, gy, fz, qz, gz, decay, i):
    """x-slab i: y forward elimination, then y back substitution fused with the z sweep (+ decay) in
    8-row blocks, so the slab is read from and written to memory once."""
    nx, ny, nz = c.shape
    nb8 = ny // 8
    s = c[i]
    f0 = fy[0]
    r0 = s[0]
    for k in range(nz):
        r0[k] *= f0
    for j in range(1, ny):
        prev = s[j - 1]
        row = s[j]
        fj = fy[j]
        qj = qy[j]
        for k in range(nz):
            row[k] = row[k] * fj + qj * prev[k]
    # rows above the last full 8-block
    for j in range(ny - 2, 8 * nb8 - 1, -1):
        nxt = s[j + 1]
        row = s[j]
        gj = gy[j]
        for k in range(nz):
            row[k] += gj * nxt[k]
    for b in range(nb8 - 1, -1, -1):
        j0 = 8 * b
        for j in range(min(j0 + 7, ny - 2), j0 - 1, -1):
            nxt = s[j + 1]
            row = s[j]
            gj = gy[j]
            for k in range(nz):
                row[k] += gj * nxt[k]
        # rows >= j0 + 8 are final for y and no longer needed by it: z-sweep them now (L1-hot)
        if b == nb8 - 1:
            for j in range(8 * nb8, ny):
                _z_line(s[j], nz, fz, qz, gz, decay)
        else:
            _z_8lines(s, j0 + 8, nz, fz, qz, gz, decay)
    if nb8 > 0:
        _z_8lines(s, 0, nz, fz, qz, gz, decay)
    else:
        for j in range(ny):
            _z_line(s[j], nz, fz, qz, gz, decay)


@njit(parallel=True, cache=True)
def _const_sweep_yz(c, fy, qy, gy, fz, qz, gz, decay):
    for i in prange(c.shape[0]):
        _const_yz_slab(c, fy, qy, gy, fz, qz, gz, decay, i)


class DiffusionDecayLOD:
    """Constant-coefficient LOD step for ``dc/dt = D lap c - lam c`` (theta = 1), zero-flux boundaries.

    Same discretisation as :func:`lod_diffuse` with uniform coefficients (x, y, z backward-Euler sweeps, then
    ``c *= exp(-lam dt)``); the Thomas factors of each axis are computed once here. ``step(c)`` updates a
    C-contiguous float64 array of ``shape`` in place and allocates nothing.
    """

    def __init__(self, shape, spacing, D, lam, dt):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(h) for h in spacing)
        self.D, self.lam, self.dt = float(D), float(lam), float(dt)
        self.factors = [thomas_factors(n, self.D * self.dt / h**2) for n, h in zip(self.shape, self.spacing)]
        self.decay = math.exp(-self.lam * self.dt)

    def step(self, c: np.ndarray) -> None:
        if c.shape != self.shape or c.dtype != np.float64 or not c.flags.c_contiguous:
            raise ValueError("c must be a C-contiguous float64 array of the solver's shape")
        (fx, qx, gx), (fy, qy, gy), (fz, qz, gz) = self.factors
        _const_sweep_x(c, fx, qx, gx)
        _const_sweep_yz(c, fy, qy, gy, fz, qz, gz, self.decay)
