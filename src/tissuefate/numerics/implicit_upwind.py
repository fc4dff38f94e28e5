r"""Implicit first-order upwind advection with sources and sinks, for steps beyond the explicit limit.

For the liquid concentration c of one species, with face volumetric fluxes F (m^3/s, convention of
docs/contracts.md), per-voxel liquid sources s_in (carrying the solute rate a_in), sinks s_out (s_out > 0 carries c out,
s_out < 0 is solute-free inflow) and capacities theta (liquid volume per voxel volume), backward Euler:

    (theta_new dV/dt + sum_out F + s_out^+) c_i - sum_in F_ji c_j = theta_old dV/dt c_i^n + a_in

where theta_new = theta_old + dt/dV (s_in - s_out - div F). The diagonal equals
theta_old dV/dt + s_in + s_out^- + sum_in F >= sum_in F, so the matrix is an M-matrix: the solution is
non-negative for any dt (unconditionally positive and stable; first order, diffusive).

Solved by Gauss-Seidel with alternating sweep orderings (the fast-sweeping idea: an upwind system is
triangular along the flow, so a sweep whose order follows the flow solves it in one pass; the eight
orderings of (x, y, z) cover every flow direction). Converged to a relative update below ``tol``.
The amounts are then updated in flux form with the converged c, so the step is exactly conservative:

    N_new = N_old + dt/dV ( -sum_out F c_i + sum_in F c_j + a_in - s_out^+ c_i ).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _sweep(c, rhs, diag, Fx, Fy, Fz, sx, sy, sz):
    nx, ny, nz = c.shape
    maxrel = 0.0
    for ii in range(nx):
        i = ii if sx > 0 else nx - 1 - ii
        for jj in range(ny):
            j = jj if sy > 0 else ny - 1 - jj
            for kk in range(nz):
                k = kk if sz > 0 else nz - 1 - kk
                d = diag[i, j, k]
                if d <= 0.0:
                    continue
                acc = rhs[i, j, k]
                # inflow through each face from the upwind neighbour
                f = Fx[i, j, k]
                if f > 0.0 and i > 0:
                    acc += f * c[i - 1, j, k]
                f = Fx[i + 1, j, k]
                if f < 0.0 and i < nx - 1:
                    acc -= f * c[i + 1, j, k]
                f = Fy[i, j, k]
                if f > 0.0 and j > 0:
                    acc += f * c[i, j - 1, k]
                f = Fy[i, j + 1, k]
                if f < 0.0 and j < ny - 1:
                    acc -= f * c[i, j + 1, k]
                f = Fz[i, j, k]
                if f > 0.0 and k > 0:
                    acc += f * c[i, j, k - 1]
                f = Fz[i, j, k + 1]
                if f < 0.0 and k < nz - 1:
                    acc -= f * c[i, j, k + 1]
                new = acc / d
                old = c[i, j, k]
                diff = abs(new - old)
                scale = max(abs(new), 1e-300)
                if diff / scale > maxrel and new != 0.0:
                    maxrel = diff / scale
                c[i, j, k] = new
    return maxrel


@njit(cache=True)
def _flux_update(N, c, Fx, Fy, Fz, src_amount, s_out, dt_dV, sink_amount):
    """Conservative update with the converged c; returns the boundary outflow and fills the per-voxel sink
    amounts (both in units of N, i.e. per voxel volume)."""
    nx, ny, nz = N.shape
    boundary = 0.0
    for i in range(nx + 1):
        for j in range(ny):
            for k in range(nz):
                f = Fx[i, j, k]
                if f == 0.0:
                    continue
                if f > 0.0:
                    up = c[i - 1, j, k] if i > 0 else 0.0
                else:
                    up = c[i, j, k] if i < nx else 0.0
                a = f * up * dt_dV
                if i > 0:
                    N[i - 1, j, k] -= a
                else:
                    boundary -= a
                if i < nx:
                    N[i, j, k] += a
                else:
                    boundary += a
    for i in range(nx):
        for j in range(ny + 1):
            for k in range(nz):
                f = Fy[i, j, k]
                if f == 0.0:
                    continue
                if f > 0.0:
                    up = c[i, j - 1, k] if j > 0 else 0.0
                else:
                    up = c[i, j, k] if j < ny else 0.0
                a = f * up * dt_dV
                if j > 0:
                    N[i, j - 1, k] -= a
                else:
                    boundary -= a
                if j < ny:
                    N[i, j, k] += a
                else:
                    boundary += a
    for i in range(nx):
        for j in range(ny):
            for k in range(nz + 1):
                f = Fz[i, j, k]
                if f == 0.0:
                    continue
                if f > 0.0:
                    up = c[i, j, k - 1] if k > 0 else 0.0
                else:
                    up = c[i, j, k] if k < nz else 0.0
                a = f * up * dt_dV
                if k > 0:
                    N[i, j, k - 1] -= a
                else:
                    boundary -= a
                if k < nz:
                    N[i, j, k] += a
                else:
                    boundary += a
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                N[i, j, k] += src_amount[i, j, k] * dt_dV
                so = s_out[i, j, k]
                if so > 0.0:
                    a = so * c[i, j, k] * dt_dV
                    N[i, j, k] -= a
                    sink_amount[i, j, k] = a
    return boundary


_ORDERS = [(1, 1, 1), (-1, -1, -1), (1, 1, -1), (-1, -1, 1), (1, -1, 1), (-1, 1, -1), (-1, 1, 1), (1, -1, -1)]


def advect_implicit(N, theta_old, Fx, Fy, Fz, s_in, src_amount, s_out, dt, dV, tol=1e-13, max_rounds=200):
    """Implicit upwind step of one species in place on N.

    s_in: liquid volume entering each voxel (m^3/s, >= 0) carrying the solute rate src_amount (amount/s);
    s_out: liquid leaving (m^3/s; > 0 carries the local c, < 0 is solute-free inflow).
    Returns (boundary outflow amount, per-voxel sink amounts array, c), amounts in N x m^3.
    """
    dt_dV = dt / dV
    c = np.divide(N, theta_old, out=np.zeros_like(N), where=theta_old > 0)
    out_flux = (np.maximum(Fx[1:], 0) - np.minimum(Fx[:-1], 0) + np.maximum(Fy[:, 1:], 0) - np.minimum(Fy[:, :-1], 0)
                + np.maximum(Fz[:, :, 1:], 0) - np.minimum(Fz[:, :, :-1], 0))
    div = (Fx[1:] - Fx[:-1]) + (Fy[:, 1:] - Fy[:, :-1]) + (Fz[:, :, 1:] - Fz[:, :, :-1])
    theta_new = theta_old + dt_dV * (s_in - s_out - div)
    diag = theta_new / dt_dV + out_flux + np.maximum(s_out, 0.0)
    rhs = theta_old / dt_dV * c + src_amount
    active = diag > 0
    diag = np.where(active, diag, 0.0)
    for r in range(max_rounds):
        rel = _sweep(c, rhs, diag, Fx, Fy, Fz, *_ORDERS[r % 8])
        if rel < tol:
            break
    sink_amount = np.zeros_like(N)
    boundary = _flux_update(N, c, Fx, Fy, Fz, src_amount, s_out, dt_dV, sink_amount)
    np.maximum(N, 0.0, out=N)   # removes round-off negatives only (~1e-16 of the amounts)
    return boundary * dV, sink_amount * dV, c
