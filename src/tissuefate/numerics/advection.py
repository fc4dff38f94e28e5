"""Conservative, flux-limited (TVD MUSCL) advection of solute amounts by face volume fluxes.

Equation: for a solute carried as amount per tissue volume ``N`` (c = N / theta in the mobile liquid) and
volumetric face fluxes ``F`` (m^3/s, the contract's ``Fx, Fy, Fz`` layout)::

    dN/dt = -div(F c) / dV          (finite volume:  N_i^+ = N_i - dt/dV * sum_faces(F_f c_f) )

Scheme (dimensionally unsplit, second order in space and time):

* Face value ``c_f``: MUSCL reconstruction from the upwind voxel U (chosen by the sign of F_f),
  ``c_f = c_U +/- s_U / 2`` with the limited slope ``s_U = lim(c_U - c_{U-1}, c_{U+1} - c_U)`` along the face
  normal (van Leer ``2ab/(a+b)`` if ab > 0, or minmod). The slope is zero when a neighbour of U lies outside
  the domain or holds no liquid (theta == 0), i.e. first-order upwind there. ``c_f`` lies between ``c_U`` and
  the neighbour values, so ``0 <= c_f <= 2 c_U``.
* Time: Heun / SSP-RK2 (a convex combination of two forward-Euler stages, so positivity and TVD carry over)::

      N1     = N  - dt/dV div(F c0),     c0 = N  / theta_old
      theta* = theta_old - dt/dV div F                        (capacity transported by the same fluxes;
                                                                set to 0 where theta_old == 0)
      N2     = N1 - dt/dV div(F c1),     c1 = N1 / theta*
      N_new  = (N + N2) / 2

  ``scheme="euler"`` uses stage 1 only (first order in time). The reconstruction of the first stage uses
  ``theta_old`` (c = N/theta_old, 0 where theta_old == 0); the second stage uses theta*, the capacity the
  fluxes alone produce. A voxel with theta_old == 0 receives what flows in but gives nothing during the step
  (this keeps positivity for a voxel that fills and drains in the same step; its content moves on next step).
  ``theta_new`` (the caller's capacity including liquid sources) is not needed by the scheme: the caller's
  concentration after the step is ``N_new / theta_new``; a uniform ``c`` stays uniform when
  ``theta_new = theta_old - dt/dV div F`` (liquid sources add volume at c = 0; book their solute separately).
* Domain boundary: an outflow face carries the (first-order) upwind value of the boundary voxel; an inflow
  face carries ``c = 0`` (clean liquid enters). The amount that leaves (sum over boundary faces of the
  time-averaged ``dt F c_f``) is returned; with it ``sum(N) dV`` is conserved to round-off.
* Positivity: each stage is positive when ``dt * sum(outgoing F) <= theta * dV / 2`` for its capacity;
  :func:`max_stable_dt` returns a dt that satisfies that for both stages.

Fields read: ``theta_old``, ``Fx``, ``Fy``, ``Fz``. Field written: ``N`` (in place).
Work arrays (face values, stage state) are preallocated once per grid shape; nothing is allocated per step.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .arrays import cached_workspace

__all__ = ["advect", "max_stable_dt", "AdvectionWorkspace"]

_VANLEER = 0
_MINMOD = 1


@njit(fastmath=True, error_model="numpy")
def _limit(a, b, kind):
    if kind == _VANLEER:
        p = a * b
        return 2.0 * p / (a + b) if p > 0.0 else 0.0
    else:
        if a * b <= 0.0:
            return 0.0
        return a if abs(a) < abs(b) else b


@njit(fastmath=True, error_model="numpy")
def _face_value(F, cm2, cm1, cp0, cp1, hm2, hm1, hp0, hp1, kind):
    """Upwind MUSCL value on the face between voxels m1 (low) and p0 (high).

    c*: concentrations of voxels m2, m1, p0, p1 along the axis; h*: 1.0 where the voxel exists and holds
    liquid, else 0.0 (slope switched off).
    """
    if F > 0.0:
        if hm1 == 0.0:
            return 0.0
        s = _limit(cm1 - cm2, cp0 - cm1, kind) if (hm2 * hp0) > 0.0 else 0.0
        return cm1 + 0.5 * s
    elif F < 0.0:
        if hp0 == 0.0:
            return 0.0
        s = _limit(cp0 - cm1, cp1 - cp0, kind) if (hm1 * hp1) > 0.0 else 0.0
        return cp0 - 0.5 * s
    return 0.0


@njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _conc(N, cap, c, h):
    nx, ny, nz = N.shape
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                t = cap[i, j, k]
                ok = t > 0.0
                c[i, j, k] = N[i, j, k] / t if ok else 0.0
                h[i, j, k] = 1.0 if ok else 0.0


@njit(cache=True, fastmath=True, error_model="numpy")
def _faces_x(c, h, Fx, dt, Gx, kind, accumulate, i):
    """x faces i (between voxels i-1 and i) for all (j, k)."""
    nx, ny, nz = c.shape
    im2 = max(i - 2, 0)
    im1 = max(i - 1, 0)
    ip0 = min(i, nx - 1)
    ip1 = min(i + 1, nx - 1)
    vm2 = 1.0 if i >= 2 else 0.0
    vm1 = 1.0 if i >= 1 else 0.0
    vp0 = 1.0 if i <= nx - 1 else 0.0
    vp1 = 1.0 if i <= nx - 2 else 0.0
    for j in range(ny):
        for k in range(nz):
            F = Fx[i, j, k]
            v = dt * F * _face_value(F, c[im2, j, k], c[im1, j, k], c[ip0, j, k], c[ip1, j, k],
                                     vm2 * h[im2, j, k], vm1 * h[im1, j, k], vp0 * h[ip0, j, k],
                                     vp1 * h[ip1, j, k], kind)
            Gx[i, j, k] = Gx[i, j, k] + v if accumulate else v


@njit(cache=True, fastmath=True, error_model="numpy")
def _faces_yz(c, h, Fy, Fz, dt, Gy, Gz, kind, accumulate, i):
    """y and z faces of the x-slab i."""
    nx, ny, nz = c.shape
    for j in range(ny + 1):
        jm2 = max(j - 2, 0)
        jm1 = max(j - 1, 0)
        jp0 = min(j, ny - 1)
        jp1 = min(j + 1, ny - 1)
        vm2 = 1.0 if j >= 2 else 0.0
        vm1 = 1.0 if j >= 1 else 0.0
        vp0 = 1.0 if j <= ny - 1 else 0.0
        vp1 = 1.0 if j <= ny - 2 else 0.0
        for k in range(nz):
            F = Fy[i, j, k]
            v = dt * F * _face_value(F, c[i, jm2, k], c[i, jm1, k], c[i, jp0, k], c[i, jp1, k],
                                     vm2 * h[i, jm2, k], vm1 * h[i, jm1, k], vp0 * h[i, jp0, k],
                                     vp1 * h[i, jp1, k], kind)
            Gy[i, j, k] = Gy[i, j, k] + v if accumulate else v
    for j in range(ny):
        cr = c[i, j]
        hr = h[i, j]
        for k in range(nz + 1):
            km2 = max(k - 2, 0)
            km1 = max(k - 1, 0)
            kp0 = min(k, nz - 1)
            kp1 = min(k + 1, nz - 1)
            vm2 = 1.0 if k >= 2 else 0.0
            vm1 = 1.0 if k >= 1 else 0.0
            vp0 = 1.0 if k <= nz - 1 else 0.0
            vp1 = 1.0 if k <= nz - 2 else 0.0
            F = Fz[i, j, k]
            v = dt * F * _face_value(F, cr[km2], cr[km1], cr[kp0], cr[kp1],
                                     vm2 * hr[km2], vm1 * hr[km1], vp0 * hr[kp0], vp1 * hr[kp1], kind)
            Gz[i, j, k] = Gz[i, j, k] + v if accumulate else v


@njit(parallel=True, cache=True)
def _face_amounts(c, h, Fx, Fy, Fz, dt, Gx, Gy, Gz, kind, accumulate):
    """G = dt * F * c_f on every face (added to G when accumulate). One parallel region."""
    nx = c.shape[0]
    for i in prange(nx + 1):
        ii = np.int64(i)
        _faces_x(c, h, Fx, dt, Gx, kind, accumulate, ii)
        if ii < nx:
            _faces_yz(c, h, Fy, Fz, dt, Gy, Gz, kind, accumulate, ii)


@njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _apply_div(Nin, Nout, Gx, Gy, Gz, scale):
    """Nout = Nin - scale * div(G)  (Nout may alias Nin)."""
    nx, ny, nz = Nin.shape
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                d = (Gx[i + 1, j, k] - Gx[i, j, k]) + (Gy[i, j + 1, k] - Gy[i, j, k]) \
                    + (Gz[i, j, k + 1] - Gz[i, j, k])
                Nout[i, j, k] = Nin[i, j, k] - scale * d


@njit(parallel=True, cache=True, fastmath=True, error_model="numpy")
def _stage1_update(N, Gx, Gy, Gz, theta, Fx, Fy, Fz, inv_dV, dt, N1, c, h):
    """N1 = N - div(G)/dV;  theta* = theta - dt/dV div F (0 where theta == 0);  c1 = N1/theta*, h = theta* > 0."""
    nx, ny, nz = N.shape
    s = dt * inv_dV
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                d = (Gx[i + 1, j, k] - Gx[i, j, k]) + (Gy[i, j + 1, k] - Gy[i, j, k]) \
                    + (Gz[i, j, k + 1] - Gz[i, j, k])
                n1 = N[i, j, k] - inv_dV * d
                N1[i, j, k] = n1
                dF = (Fx[i + 1, j, k] - Fx[i, j, k]) + (Fy[i, j + 1, k] - Fy[i, j, k]) \
                    + (Fz[i, j, k + 1] - Fz[i, j, k])
                t = theta[i, j, k]
                # a voxel empty at the start of the step gives nothing during the whole step (it may fill)
                cap = t - s * dF if t > 0.0 else 0.0
                ok = cap > 0.0
                c[i, j, k] = n1 / cap if ok else 0.0
                h[i, j, k] = 1.0 if ok else 0.0


@njit(cache=True)
def _boundary_out(Gx, Gy, Gz, sides, w):
    """Add w * (amount leaving through each of the 6 sides) to sides; return the total."""
    a = -Gx[0].sum()
    b = Gx[-1].sum()
    cc = -Gy[:, 0, :].sum()
    d = Gy[:, -1, :].sum()
    e = -Gz[:, :, 0].sum()
    f = Gz[:, :, -1].sum()
    sides[0] += w * a
    sides[1] += w * b
    sides[2] += w * cc
    sides[3] += w * d
    sides[4] += w * e
    sides[5] += w * f
    return w * (a + b + cc + d + e + f)


@njit(parallel=True, cache=True)
def _outflow_sums(Fx, Fy, Fz, out_s, net_s):
    nx, ny, nz = out_s.shape
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                fo = 0.0
                fi = 0.0
                # low faces: outgoing if F < 0
                for F, sgn in ((Fx[i, j, k], -1.0), (Fx[i + 1, j, k], 1.0), (Fy[i, j, k], -1.0),
                               (Fy[i, j + 1, k], 1.0), (Fz[i, j, k], -1.0), (Fz[i, j, k + 1], 1.0)):
                    v = sgn * F
                    if v > 0.0:
                        fo += v
                    else:
                        fi -= v
                out_s[i, j, k] = fo
                net_s[i, j, k] = fo - fi


class AdvectionWorkspace:
    """Preallocated work arrays of :func:`advect` for one grid shape."""

    def __init__(self, shape):
        self.shape = tuple(int(n) for n in shape)
        nx, ny, nz = self.shape
        self.c = np.empty(self.shape)
        self.h = np.empty(self.shape)
        self.N1 = np.empty(self.shape)
        self.Gx = np.empty((nx + 1, ny, nz))
        self.Gy = np.empty((nx, ny + 1, nz))
        self.Gz = np.empty((nx, ny, nz + 1))
        self.sides = np.zeros(6)



def _workspace(shape) -> AdvectionWorkspace:
    return cached_workspace(AdvectionWorkspace, shape)


def _check_fluxes(shape, Fx, Fy, Fz):
    nx, ny, nz = shape
    Fx = np.ascontiguousarray(Fx, dtype=np.float64)
    Fy = np.ascontiguousarray(Fy, dtype=np.float64)
    Fz = np.ascontiguousarray(Fz, dtype=np.float64)
    if Fx.shape != (nx + 1, ny, nz) or Fy.shape != (nx, ny + 1, nz) or Fz.shape != (nx, ny, nz + 1):
        raise ValueError("face flux shapes must be (nx+1,ny,nz), (nx,ny+1,nz), (nx,ny,nz+1)")
    return Fx, Fy, Fz


def advect(N, theta_old, theta_new, Fx, Fy, Fz, dt, dV, out_boundary=None, *, limiter="vanleer",
           scheme="heun", work: AdvectionWorkspace | None = None) -> float:
    """Advance the amounts ``N`` (per tissue volume, in place) by one conservative MUSCL step.

    N:            float64 C-contiguous (nx, ny, nz), amount per tissue volume; c = N / theta_old
    theta_old:    capacity at the start of the step (voxels with theta_old == 0 hold nothing: c = 0)
    theta_new:    capacity at the end of the step (caller's; accepted for the contract, not used - see module doc)
    Fx, Fy, Fz:   face volume fluxes, m^3/s (contract layout); held constant over the step
    dt, dV:       time step (s) and voxel volume (m^3)
    out_boundary: optional float64 array of length 6; the amounts leaving through the x-, x+, y-, y+, z-, z+
                  sides are added to it
    limiter:      "vanleer" (default) or "minmod"
    scheme:       "heun" (SSP-RK2, default) or "euler" (single forward-Euler stage)

    Returns the total amount that left the domain through boundary faces during the step (units of N * m^3).
    Positivity is guaranteed for ``dt <= max_stable_dt(theta_old, Fx, Fy, Fz, dV)``.
    """
    if not (isinstance(N, np.ndarray) and N.dtype == np.float64 and N.flags.c_contiguous and N.ndim == 3):
        raise TypeError("N must be a C-contiguous float64 array (nx, ny, nz) (it is updated in place)")
    shape = N.shape
    th = np.ascontiguousarray(theta_old, dtype=np.float64)
    if th.shape != shape:
        raise ValueError("theta_old shape mismatch")
    if theta_new is not None and np.shape(theta_new) != shape:
        raise ValueError("theta_new shape mismatch")
    Fx, Fy, Fz = _check_fluxes(shape, Fx, Fy, Fz)
    kind = {"vanleer": _VANLEER, "minmod": _MINMOD}[limiter]
    ws = work if work is not None else _workspace(shape)
    dt = float(dt)
    inv_dV = 1.0 / float(dV)
    sides = ws.sides
    sides[:] = 0.0
    # stage 1
    _conc(N, th, ws.c, ws.h)
    _face_amounts(ws.c, ws.h, Fx, Fy, Fz, dt, ws.Gx, ws.Gy, ws.Gz, kind, False)
    if scheme == "euler":
        out = _boundary_out(ws.Gx, ws.Gy, ws.Gz, sides, 1.0)
        _apply_div(N, N, ws.Gx, ws.Gy, ws.Gz, inv_dV)
    elif scheme == "heun":
        _stage1_update(N, ws.Gx, ws.Gy, ws.Gz, th, Fx, Fy, Fz, inv_dV, dt, ws.N1, ws.c, ws.h)
        # stage 2 (face amounts accumulated on top of stage 1's)
        _face_amounts(ws.c, ws.h, Fx, Fy, Fz, dt, ws.Gx, ws.Gy, ws.Gz, kind, True)
        out = _boundary_out(ws.Gx, ws.Gy, ws.Gz, sides, 0.5)
        _apply_div(N, N, ws.Gx, ws.Gy, ws.Gz, 0.5 * inv_dV)
    else:
        raise ValueError("scheme must be 'heun' or 'euler'")
    if out_boundary is not None:
        out_boundary += sides
    return float(out)


def max_stable_dt(theta, Fx, Fy, Fz, dV, cfl=0.5) -> float:
    """Largest dt for which :func:`advect` keeps N >= 0.

    Per voxel with liquid (theta > 0): ``dt * sum(outgoing F) <= cfl * theta * dV`` for the first stage and
    ``dt * sum(outgoing F) <= cfl * theta* dV`` with ``theta* = theta - dt/dV (out - in)`` for the second, i.e.
    ``dt <= cfl theta dV / (out + cfl max(out - in, 0))`` (reduces to ``cfl theta dV / out`` for div F = 0).
    cfl = 0.5 is the positivity bound of the limited reconstruction (c_f <= 2 c_U). Returns inf if nothing
    flows out of any voxel.
    """
    th = np.ascontiguousarray(theta, dtype=np.float64)
    Fx, Fy, Fz = _check_fluxes(th.shape, Fx, Fy, Fz)
    out_s = np.empty(th.shape)
    net_s = np.empty(th.shape)
    _outflow_sums(Fx, Fy, Fz, out_s, net_s)
    den = out_s + cfl * np.maximum(net_s, 0.0)
    m = (th > 0.0) & (den > 0.0)
    if not np.any(m):
        return float("inf")
    return float(np.min(cfl * th[m] * dV / den[m]))
