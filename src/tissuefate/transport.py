"""Solute transport on the injection flow (operator-split pieces used by a session).

For each mobile species with amount N per tissue volume and liquid concentration c = N/theta:

    d(theta c)/dt + div(F c) = div(theta D grad c) + s_in c_in - s_out+ c + (reactions)

* advection (conservative, flux-limited MUSCL, sub-cycled up to MAX_SUBCYCLES times to its positivity
  limit; beyond that an implicit, unconditionally positive first-order upwind step with the sources and
  sinks inside the solve, see numerics/implicit_upwind.py) with the face fluxes F of the injection mechanics,
* sources s_in (volume entering a voxel from the needle / cavity / track, carrying the injectate
  concentration c_in) and sinks s_out (volume leaving to vessels, lymph and open sinks, carrying c;
  plasma entering (s_out < 0) carries no solute),
* implicit LOD diffusion with theta D = D_water (h phi0 + (theta - phi0)): interstitial liquid is
  hindered by the factor h, injected liquid stored by dilation or in the cavity is free liquid.

Every amount that leaves the mobile pool is returned so the session can book it in the ledger.
"""
from __future__ import annotations

import numpy as np

from .numerics.advection import advect, max_stable_dt
from .numerics.implicit_upwind import advect_implicit
from .numerics.lod import lod_diffuse

MAX_SUBCYCLES = 4   # beyond this many explicit sub-steps the implicit upwind step is used


def advect_with_flow(N: np.ndarray, theta_old: np.ndarray, flow, dV: float, src_amount: np.ndarray,
                     s_in: np.ndarray, s_out: np.ndarray) -> dict:
    """Move one species with the fluxes of a FlowStep, in place on N.

    src_amount: solute entering each voxel with the liquid sources s_in (amount per second);
    s_out: liquid leaving each voxel (m^3/s; > 0 carries the local concentration, < 0 is solute-free).
    Returns the amount that left through the domain boundary and the per-voxel sink amounts (x m^3).
    """
    dt = flow.dt
    c_old = np.divide(N, theta_old, out=np.zeros_like(N), where=theta_old > 0)
    # positivity: sub-cycle the advection if the step is beyond the stable limit
    dt_lim = max_stable_dt(theta_old, flow.Fx, flow.Fy, flow.Fz, dV, cfl=0.9)
    n_sub = max(1, int(np.ceil(dt / dt_lim))) if np.isfinite(dt_lim) and dt_lim > 0 else 1
    if n_sub > MAX_SUBCYCLES:
        # far beyond the explicit limit (e.g. track leakage through highly permeable fat): implicit upwind
        b, sink_amount, _ = advect_implicit(N, theta_old, flow.Fx, flow.Fy, flow.Fz, s_in, src_amount, s_out, dt, dV)
        return {"sink_amount": sink_amount, "boundary": b, "implicit": True}
    boundary = 0.0
    if n_sub == 1:
        boundary += advect(N, theta_old, theta_old, flow.Fx, flow.Fy, flow.Fz, dt, dV)
    else:
        h = dt / n_sub
        dtheta_adv = -(h / dV) * _div(flow.Fx, flow.Fy, flow.Fz)
        th = theta_old.copy()
        for _ in range(n_sub):
            th_next = th + dtheta_adv
            boundary += advect(N, th, th_next, flow.Fx, flow.Fy, flow.Fz, h, dV)
            th = th_next
    N += (dt / dV) * src_amount
    # outflow to sinks carries the local concentration, limited to what the voxel holds (positivity)
    out_amount = np.minimum((dt / dV) * np.where(s_out > 0, s_out, 0.0) * c_old, np.maximum(N, 0.0))
    N -= out_amount
    return {"sink_amount": out_amount * dV, "boundary": float(boundary), "implicit": False}


def _div(Fx, Fy, Fz):
    return (Fx[1:] - Fx[:-1]) + (Fy[:, 1:] - Fy[:, :-1]) + (Fz[:, :, 1:] - Fz[:, :, :-1])


def diffuse(N: np.ndarray, theta: np.ndarray, phi0: np.ndarray, hindrance: np.ndarray, D_water: float,
            dt: float, spacing) -> None:
    """Implicit LOD diffusion of one species (conservative, in place on N)."""
    c = np.divide(N, theta, out=np.zeros_like(N), where=theta > 0)
    thetaD = D_water * (hindrance * phi0 + np.maximum(theta - phi0, 0.0))
    thetaD[theta <= 0] = 0.0
    lod_diffuse(c, theta, thetaD, dt, spacing)
    np.multiply(c, theta, out=N)
