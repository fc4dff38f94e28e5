"""Microvessel integrity, perfusion and vascular leak per voxel; needle-track hemostasis.

Reads: ClO2 exposure E (mol s/m^3, from :func:`tissuefate.physics.oxidant.react_oxidant`), ethanol kill dose
Omega (-, from :func:`tissuefate.physics.ethanol.react_ethanol`), a boolean tumor mask, baseline perfusion
``perfusion0`` (1/s) and baseline ``LpSV0`` (1/(Pa s)), a needle-track mask with its insertion time.
Writes: vessel integrity v in [0, 1] (in place or returned), perfusion (1/s), LpSV (1/(Pa s)).

Equations::

    dv/dt = -(k_ox c_ox + k_eth dOmega/dt) v          =>   v = v0 exp(-k_ox dE - k_eth dOmega)   (exact)
    k_ox  = k_clo2_tumor  on tumor voxels, k_clo2_normal  elsewhere
    k_eth = k_ethanol_tumor on tumor voxels, k_ethanol_normal elsewhere
    perfusion = perfusion0 * v * g_track(t),     LpSV = LpSV0 * v
    g_track(t) = 1 off the track; on the track 0 while t - t_insert < t_hemo,
                 then 1 - exp(-(t - t_insert - t_hemo) / tau_recovery)      (temporary, not sealing, hemostasis)

Tumor and normal vessel sensitivities are separate named parameters with *equal* defaults: the model has
no built-in tumor preference; any selectivity must be set explicitly (and is a hypothesis).
Damage is irreversible here (regrowth belongs to the healing model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VesselParams:
    """Vessel damage and track-hemostasis parameters (all hypotheses [H]; no source gives them).

    =================  =======  ===========  ==================================================================
    field              default  unit         hypothesis and range
    =================  =======  ===========  ==================================================================
    k_clo2_tumor       1.0      m^3/(mol s)  [H] 1 mM*s ClO2 exposure leaves e^-1 of vessels; range 0.1-30
                                             (G6PD lost in 15 s at 10 uM [V] Ogata 2007 -> ~7 if enzyme-like)
    k_clo2_normal      1.0      m^3/(mol s)  [H] same default and range as tumor (no built-in preference)
    k_ethanol_tumor    3.0      1/Omega      [H] Omega = 1 (cell kill) leaves e^-3 = 5 % vessels
                                             (PEI thrombosis [V] qualitative); range 0.5-10
    k_ethanol_normal   3.0      1/Omega      [H] same default and range
    hemostasis_time    300      s            [H] track perfusion/bleeding stopped; range 60-900 s
    tau_recovery       120      s            [H] recovery time constant after hemostasis; range 0-600 s
    =================  =======  ===========  ==================================================================
    """

    k_clo2_tumor: float = 1.0
    k_clo2_normal: float = 1.0
    k_ethanol_tumor: float = 3.0
    k_ethanol_normal: float = 3.0
    hemostasis_time: float = 300.0
    tau_recovery: float = 120.0

    def __post_init__(self):
        for k in ("k_clo2_tumor", "k_clo2_normal", "k_ethanol_tumor", "k_ethanol_normal",
                  "hemostasis_time", "tau_recovery"):
            if not getattr(self, k) >= 0.0:
                raise ValueError(f"{k} must be >= 0")


def _rates(tumor_mask, params: VesselParams):
    tm = np.asarray(tumor_mask, dtype=bool)
    k_ox = np.where(tm, params.k_clo2_tumor, params.k_clo2_normal)
    k_eth = np.where(tm, params.k_ethanol_tumor, params.k_ethanol_normal)
    return k_ox, k_eth


def vessel_integrity(exposure, omega, tumor_mask, params: VesselParams | None = None, v0=1.0):
    """Closed form v = v0 exp(-k_ox E - k_eth Omega) from the cumulative ClO2 exposure and ethanol dose."""
    params = params or VesselParams()
    k_ox, k_eth = _rates(tumor_mask, params)
    return np.asarray(v0, dtype=float) * np.exp(-k_ox * np.asarray(exposure, dtype=float)
                                               - k_eth * np.asarray(omega, dtype=float))


def update_vessels(v, d_exposure, d_omega, tumor_mask, params: VesselParams | None = None):
    """In-place v *= exp(-k_ox dE - k_eth dOmega) for the increments of one step (exact for the ODE)."""
    params = params or VesselParams()
    k_ox, k_eth = _rates(tumor_mask, params)
    v *= np.exp(-k_ox * np.asarray(d_exposure, dtype=float) - k_eth * np.asarray(d_omega, dtype=float))
    np.clip(v, 0.0, 1.0, out=v)
    return v


def track_factor(t: float, t_insert: float, params: VesselParams | None = None) -> float:
    """Perfusion/bleeding factor on needle-track voxels at time t (0 during hemostasis, then recovering)."""
    params = params or VesselParams()
    s = t - t_insert
    if s < 0.0:
        return 1.0  # needle not yet inserted
    if s < params.hemostasis_time:
        return 0.0
    if params.tau_recovery <= 0.0:
        return 1.0
    return -math.expm1(-(s - params.hemostasis_time) / params.tau_recovery)


def perfusion_field(perfusion0, v, track_mask=None, t: float = 0.0, t_insert: float = 0.0,
                    params: VesselParams | None = None, out=None):
    """perfusion = perfusion0 * v, times track_factor(t) on the track voxels (1/s)."""
    p = np.multiply(perfusion0, v, out=out)
    if track_mask is not None:
        g = track_factor(t, t_insert, params)
        if g != 1.0:
            p[np.asarray(track_mask, dtype=bool)] *= g
    return p


def lpsv_field(lpsv0, v, out=None):
    """Vascular leak coefficient Lp S/V scaled by vessel integrity (lost where vessels are destroyed)."""
    return np.multiply(lpsv0, v, out=out)


__all__ = ["VesselParams", "vessel_integrity", "update_vessels", "track_factor", "perfusion_field", "lpsv_field"]
