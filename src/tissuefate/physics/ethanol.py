"""Ethanol per voxel: perfusion washout and the chemical kill dose (reaction half of the operator split).

Reads / writes (float64 arrays of ``grid.shape``, C-contiguous, updated **in place**):

* ``N_eth``  ethanol volume per tissue volume                        [m^3 ethanol / m^3 tissue]
* ``omega``  ethanol kill dose (Omega = 1: median kill time reached)  [-]

Reads only: ``theta`` (mobile-liquid fraction), ``washout`` w (perfusion, 1/s); scalars or per-voxel arrays.

Equations (liquid volume fraction c = N_eth / theta)::

    dN_eth/dt = - w c                                   (Kety washout, as in oxidant.py / injection.md 6.2(D))
    dOmega/dt = (c / c_ref)^n / t_ref     for c > c_min,  0 otherwise       (injection.md 5 and 6.2(E))

Over one call both are integrated exactly for constant theta and w: c(t) = c0 exp(-w t / theta), and the
dose integral is (c0/c_ref)^n (1 - exp(-n a t_e)) / (n a t_ref) with a = w / theta and t_e the time spent
above c_min within the step (t_e = dt when w = 0, giving Omega += dt/t_ref (c/c_ref)^n).  Kill constants
(n = 4.4, c_ref = 0.35, t_ref = 15 s, c_min = 0.05) are [D] from a fit to Acta Radiol 1996 (35 % for
15 s kills all cells; 17.5 % -> 15 s * 2^4.4 = 5.28 min).

Also the injectate formulation (pure ethanol, ethyl-cellulose ethanol gels) as plain data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from tissuefate.numerics.arrays import scalar_or_field

D_TISSUE = 5.0e-10
"""Ethanol diffusivity in tissue, m^2/s ([V-code] Duke model D_t; range 3-8e-10)."""


@dataclass(frozen=True)
class EthanolKillParams:
    """Kill-dose law Omega = integral (c/c_ref)^n dt / t_ref for c > c_min.

    ======  =======  =====  =====================================================================
    field   default  unit   source
    ======  =======  =====  =====================================================================
    n       4.4      -      [D] fit to Acta Radiol 1996 (30-40 % 15 s; 15-20 % 5-10 min); range 4-5
    c_ref   0.35     v/v    [D] same
    t_ref   15.0     s      [D] same
    c_min   0.05     v/v    [H] no acute kill below ~5 % (HepG2 0.47 % 24 h: 68 % viable [V])
    ======  =======  =====  =====================================================================
    """

    n: float = 4.4
    c_ref: float = 0.35
    t_ref: float = 15.0
    c_min: float = 0.05

    def kill_time(self, c: float) -> float:
        """Constant-concentration time to Omega = 1 (s); inf at or below c_min."""
        return math.inf if c <= self.c_min else self.t_ref * (c / self.c_ref) ** (-self.n)


@dataclass(frozen=True)
class EthanolFormulation:
    """An ethanol injectate.  EC = ethyl cellulose (gels/precipitates where water enters).

    name             preset key
    ethanol_fraction ethanol volume fraction of the injectate (v/v)
    ec_fraction      ethyl-cellulose content (w/v, 0.06 = 6 %)
    viscosity        injectate viscosity before gelation, Pa s
    D_liquid         ethanol diffusivity in the ungelled depot/cavity, m^2/s
    D_gel            ethanol diffusivity in the gelled depot, m^2/s
    gel_threshold    local water volume fraction of the liquid above which the EC precipitates (gel); inf = never
    viscosity_gel    viscosity of the gelled phase, Pa s
    notes            source tags
    """

    name: str
    ethanol_fraction: float
    ec_fraction: float
    viscosity: float
    D_liquid: float
    D_gel: float
    gel_threshold: float
    viscosity_gel: float
    notes: str = ""

    def is_gel(self, water_fraction):
        """Boolean (array) mask: where the EC depot has gelled."""
        return np.asarray(water_fraction) >= self.gel_threshold

    def diffusivity(self, water_fraction):
        """Ethanol diffusivity in the depot: D_gel where gelled, D_liquid otherwise."""
        return np.where(self.is_gel(water_fraction), self.D_gel, self.D_liquid)

    def viscosity_at(self, water_fraction):
        return np.where(self.is_gel(water_fraction), self.viscosity_gel, self.viscosity)


FORMULATIONS = {
    "ethanol": EthanolFormulation(
        name="ethanol", ethanol_fraction=0.99, ec_fraction=0.0, viscosity=1.10e-3, D_liquid=1.0e-9,
        D_gel=1.0e-9, gel_threshold=math.inf, viscosity_gel=1.10e-3,
        notes="fraction [H] (dehydrated alcohol 95-99.5 %); viscosity 1.10 mPa s [V-code] Duke; "
              "D_cav 1e-9 [V-code]; no gel"),
    "ec6": EthanolFormulation(
        name="ec6", ethanol_fraction=0.95, ec_fraction=0.06, viscosity=0.1, D_liquid=1.0e-9,
        D_gel=2.2e-10, gel_threshold=0.3, viscosity_gel=100.0,
        notes="6 % EC (Morhard 2017); ethanol fraction [D] 1 - 0.06/1.14 (EC density [R]); viscosity [H] "
              "(range 0.05-5 Pa s, injection.md 5); D_liquid [H] (polymer barely slows ethanol); D_gel [H] "
              "geometric mean of 1e-9 and 5e-11; gel_threshold [H] 0.3 (range 0.1-0.5); viscosity_gel [H] "
              "(10-1e4 Pa s)"),
    "ec12": EthanolFormulation(
        name="ec12", ethanol_fraction=0.90, ec_fraction=0.12, viscosity=1.0, D_liquid=1.0e-9,
        D_gel=5.0e-11, gel_threshold=0.3, viscosity_gel=1000.0,
        notes="12 % EC (Chelales 2021/2024); ethanol fraction [D] 1 - 0.12/1.14; viscosity [H] (0.05-5 Pa s); "
              "D_gel 5e-11 [V-code] Duke cavity value for 12 % EC; gel_threshold [H] 0.3 (0.1-0.5); "
              "viscosity_gel [H] (10-1e4 Pa s)"),
}


def formulation(name: str) -> EthanolFormulation:
    """Preset by name: 'ethanol', 'ec6', 'ec12'."""
    try:
        return FORMULATIONS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown ethanol formulation {name!r}; known: {sorted(FORMULATIONS)}") from None


_NCHUNK = 256
_SERIAL_BELOW = 4096


@njit(cache=True)
def _phi1(x):
    """(1 - exp(-x)) / x, stable at 0."""
    if x < 1e-8:
        return 1.0 - 0.5 * x
    return -math.expm1(-x) / x


@njit(cache=True)
def _ethanol_range(i0, i1, c, N, theta, ths, w, ws, omega, dt, n_exp, c_ref, t_ref, c_min, out):
    for i in range(i0, i1):
        Ni = N[i]
        if Ni <= 0.0:
            continue
        th = theta[i * ths]
        if th < 1e-12:
            th = 1e-12
        a = w[i * ws] / th
        c0 = Ni / th
        if c0 > c_min:
            # time above c_min within the step
            te = dt
            if a > 0.0:
                tc = math.log(c0 / c_min) / a
                if tc < te:
                    te = tc
            omega[i] += (c0 / c_ref) ** n_exp * te * _phi1(n_exp * a * te) / t_ref
        if a > 0.0:
            lost = Ni * (-math.expm1(-a * dt))
            N[i] = Ni - lost
            out[c, 0] += lost


@njit(parallel=True, cache=True)
def _ethanol_parallel(N, theta, ths, w, ws, omega, dt, n_exp, c_ref, t_ref, c_min, out):
    n = N.size
    nchunk = out.shape[0]
    for c in prange(nchunk):
        i0 = (c * n) // nchunk
        i1 = ((c + 1) * n) // nchunk
        _ethanol_range(i0, i1, c, N, theta, ths, w, ws, omega, dt, n_exp, c_ref, t_ref, c_min, out)


def react_ethanol(N_eth, theta, washout, omega, dt: float, kill: EthanolKillParams | None = None) -> dict:
    """Washout and kill dose over ``dt`` (in place on ``N_eth`` and ``omega``).

    Returns ``{"ethanol_washout": total}`` (m^3 ethanol per m^3, summed over voxels; multiply by dV).
    The dose uses the exact c(t) under washout within the step.
    """
    kill = kill or EthanolKillParams()
    for a, nm in ((N_eth, "N_eth"), (omega, "omega")):
        if not isinstance(a, np.ndarray) or a.dtype != np.float64 or not a.flags.c_contiguous:
            raise TypeError(f"{nm} must be a C-contiguous float64 ndarray")
    if omega.shape != N_eth.shape:
        raise ValueError("omega must have the shape of N_eth")
    n = N_eth.size
    N = N_eth.reshape(-1)
    om = omega.reshape(-1)
    th, ths = scalar_or_field(theta, n, "theta")
    w, ws = scalar_or_field(washout, n, "washout")
    nchunk = max(1, min(_NCHUNK, n)) if n >= _SERIAL_BELOW else 1
    out = np.zeros((nchunk, 1))
    if dt > 0 and n > 0:
        args = (N, th, ths, w, ws, om, float(dt), kill.n, kill.c_ref, kill.t_ref, kill.c_min, out)
        if nchunk == 1:
            _ethanol_range(0, n, 0, *args)
        else:
            _ethanol_parallel(*args)
    return {"ethanol_washout": float(out.sum())}




__all__ = ["EthanolKillParams", "EthanolFormulation", "FORMULATIONS", "formulation", "react_ethanol", "D_TISSUE"]
