"""Approximate SAR of an interstitial microwave-ablation antenna (915 MHz / 2.45 GHz), without a full-wave solve.

Reads: the grid, the antenna tip (m, grid frame) and its shaft direction (unit vector from the tip back along
the shaft), frequency, antenna type, generator power, per-voxel (or scalar) effective conductivity ``sigma_eff``
(S/m) and relative permittivity ``eps_r`` of the hydrated tissue, optional ``vapor_fraction`` (0..1, from the
bioheat enthalpy) and a tissue ``mask``. Writes: the absorbed power density q (W/m^3; "SAR" here means power
per volume, SAR in W/kg = q / rho), zero outside the mask.

Equations::

    alpha(eps_r, sigma) = omega sqrt(mu0 eps/2) sqrt(sqrt(1 + (sigma/(omega eps))^2) - 1),  eps = eps_r eps0
    desiccation: eps_r -> eps_r (1 - v (1 - f_eps)),  sigma -> sigma (1 - v (1 - f_sigma)),  v = vapor_fraction
    q(x) = C * g(s) * 2 alpha(x) * exp(-2 tau(x)) / (2 pi d_eff),     d_eff = max(d, a_antenna)
    tau(x) = integral of alpha along the radial ray from the antenna surface (d = a) to d        (see below)
    C such that sum(q) dV = P_abs = P_generator (1 - loss_fraction)                     (exact, by construction)

Geometry: u = (x - tip) . direction is the axial coordinate (0 at the tip, > 0 along the shaft). For u >= 0,
d is the distance to the axis (cylindrical wave); beyond the tip (u < 0) d is the distance to the tip point
(the zone closes with a rounded front) and the profile is evaluated at the tip. s = max(u, 0) - feed_offset is
the axial distance from the feed gap / slot (> 0 back along the shaft).

Why 2 alpha exp(-2 tau) / d: the radial power flow through a cylinder of radius d per unit antenna length
decays as exp(-2 tau), and the power absorbed per volume is 2 alpha (local) times the flux; this is the
plane-wave identity 2 alpha S = sigma |E|^2 / 2 applied along each ray. With uniform alpha it is the
textbook cylindrical-wave SAR ~ exp(-2 alpha d) / d. With desiccation, low-alpha voxels near the antenna
absorb less and pass more power outward, as observed (Brace 2010 [R]).

Axial profiles g(s) (power radiated per unit antenna length, relative), hypotheses shaped after the published
zone shapes:

* ``monopole`` / ``dipole`` (unchoked): Gaussian of width ``sigma_ax`` around the feed toward the tip; back
  along the shaft (s > 0) the Gaussian plus an exponential tail ``w exp(-s / L_tail)`` from the currents that
  flow back on the outer conductor: the "comet / tear-drop" zone (Bertram JM et al. 2006 Crit Rev Biomed Eng
  34:187 [R]; Brace CL 2009 Curr Probl Diagn Radiol 38:61 and 2010 Crit Rev Biomed Eng 38:65 [R]).
* ``choked`` / ``dual_slot``: Gaussian only (the choke / floating sleeve / second slot suppresses the backward
  current), giving a shorter, more spherical zone near the slot(s) (Lin JC, Wang YJ 1996 IEEE TBME 43:657;
  Longo I et al. 2003 IEEE TBME 50:82; Yang D et al. 2006 IEEE TBME 53:533; Saito K et al. 2000 IEEE Trans
  MTT 48:1800 [all R]).

Axial lengths are given at 2.45 GHz and scaled by 2.45 GHz / f (antenna sections scale with the wavelength).

Path-averaged alpha: alpha is averaged over rings (bins of axial position u and distance d, all azimuths,
tissue voxels only), integrated along d to tau(u, d), and each voxel reads its ring's tau by linear
interpolation in d. Cost O(N), two passes over the grid: 0.10 s for 4e6 voxels on 2 cores (best of 5,
measured on a shared machine).

Limits (what this is not): no near-field structure, standing waves, reflections at desiccation boundaries
(impedance mismatch) or antenna detuning with tissue properties (Ji & Brace 2011 [R] show the
antenna's resonance shifting as tissue dries); the axial profile does not respond to the tissue; azimuthal
heterogeneity (a vessel on one side) only enters through the local alpha, not the path; power that would
leave the domain is put back into it by the normalisation (make the domain > ~3 attenuation lengths
around the antenna); the temperature dependence of eps_r and sigma below 100 degC (reversible +1.8 %/K in
sigma, parameters.md D1) is ignored - only water loss (``vapor_fraction``) changes them (Ji & Brace 2011 Phys
Med Biol 56:5249 [R]: sigmoidal drop near 100 degC to ~0.1-0.2 of the hydrated values).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from ..tissue import Param, make_param, table_hypotheses

EPS0 = 8.8541878128e-12          # F/m
MU0 = 1.25663706212e-6           # H/m
C0 = 299792458.0                 # m/s
REFERENCE_FREQUENCY_HZ = 2.45e9  # axial lengths of MicrowaveParams are given at this frequency

ANTENNA_TYPES = {"monopole": "tail", "dipole": "tail", "choked": "confined", "dual_slot": "confined"}


_p = make_param


# Dielectric properties of hydrated tissue (37 degC). Gabriel et al. 1996 give normal tissues only.
DIELECTRIC = {
    ("liver", 915e6): (
        _p("eps_r", 46.8, "1", "46.8", "Gabriel S, Lau RW, Gabriel C 1996 Phys Med Biol 41:2271 (liver, 915 MHz) [R]",
           False, (42.0, 52.0)),
        _p("sigma", 0.86, "S/m", "0.86 S/m", "Gabriel et al. 1996 (liver, 915 MHz) [R]", False, (0.75, 1.0))),
    ("liver", 2.45e9): (
        _p("eps_r", 43.0, "1", "43.0", "Gabriel et al. 1996 (liver, 2.45 GHz) [R]", False, (38.0, 48.0)),
        _p("sigma", 1.69, "S/m", "1.69 S/m", "Gabriel et al. 1996 (liver, 2.45 GHz) [R]", False, (1.5, 1.9))),
    ("tumour", 915e6): (
        _p("eps_r", 56.2, "1", "1.2 x liver",
           "hypothesis: liver x 1.2; malignant liver ~10-20 % above normal in eps_r and sigma (O'Rourke AP et al. "
           "2007 Phys Med Biol 52:4707 [R])", True, (46.8, 61.0)),
        _p("sigma", 1.03, "S/m", "1.2 x liver", "hypothesis: as eps_r (O'Rourke 2007 [R])", True, (0.86, 1.12))),
    ("tumour", 2.45e9): (
        _p("eps_r", 51.6, "1", "1.2 x liver", "hypothesis: liver x 1.2 (O'Rourke 2007 [R])", True, (43.0, 56.0)),
        _p("sigma", 2.03, "S/m", "1.2 x liver", "hypothesis: as eps_r (O'Rourke 2007 [R])", True, (1.69, 2.2))),
}


def dielectric_defaults(tissue: str, frequency_hz: float) -> tuple[float, float]:
    """(eps_r, sigma in S/m) of hydrated ``liver`` or ``tumour`` at 915 MHz or 2.45 GHz (see ``DIELECTRIC``)."""
    key = (tissue, float(frequency_hz))
    if key not in DIELECTRIC:
        raise KeyError(f"no dielectric default for {key}; known: {sorted(DIELECTRIC)}")
    eps, sig = DIELECTRIC[key]
    return eps.value, sig.value


_TABLE = {
    "loss_fraction": _p("loss_fraction", 0.2, "1", "20 %",
                        "hypothesis: fraction of generator power lost in cable and reflection (not absorbed in "
                        "tissue)", True, (0.1, 0.3)),
    "antenna_radius_m": _p("antenna_radius_m", 0.75e-3, "m", "0.75 mm",
                           "hypothesis: 17 G antenna (OD 1.47 mm); 13-14 G antennas are ~1.1 mm", True,
                           (0.5e-3, 1.2e-3)),
    "feed_offset_monopole_m": _p("feed_offset_monopole_m", 10e-3, "m", "10 mm at 2.45 GHz",
                                 "hypothesis: feed gap ~ a quarter wavelength (in the catheter/tissue) from the tip",
                                 True, (4e-3, 20e-3)),
    "feed_offset_choked_m": _p("feed_offset_choked_m", 8e-3, "m", "8 mm at 2.45 GHz",
                               "hypothesis: slot / dipole centre distance from the tip", True, (3e-3, 15e-3)),
    "axial_sigma_monopole_m": _p("axial_sigma_monopole_m", 5e-3, "m", "5 mm at 2.45 GHz",
                                 "hypothesis: axial spread of the radiated power around the feed", True,
                                 (2e-3, 12e-3)),
    "axial_sigma_choked_m": _p("axial_sigma_choked_m", 5e-3, "m", "5 mm at 2.45 GHz",
                               "hypothesis: axial spread around the slot(s)", True, (2e-3, 10e-3)),
    "tail_length_m": _p("tail_length_m", 15e-3, "m", "15 mm at 2.45 GHz",
                        "hypothesis: decay length of the backward shaft current of an unchoked antenna "
                        "(tear-drop zones, Brace 2009 [R])", True, (5e-3, 40e-3)),
    "tail_weight": _p("tail_weight", 0.5, "1", "0.5",
                      "hypothesis: tail amplitude relative to the feed peak (unchoked antennas)", True, (0.2, 0.8)),
    "desiccated_eps_factor": _p("desiccated_eps_factor", 0.15, "1", "0.15",
                                "hypothesis: eps_r of fully desiccated / hydrated tissue (Ji & Brace 2011 Phys Med "
                                "Biol 56:5249 [R]: sigmoidal drop near 100 degC)", True, (0.1, 0.3)),
    "desiccated_sigma_factor": _p("desiccated_sigma_factor", 0.15, "1", "0.15",
                                  "hypothesis: sigma of fully desiccated / hydrated tissue (Ji & Brace 2011 [R])",
                                  True, (0.1, 0.3)),
    "ring_bin_factor": _p("ring_bin_factor", 1.0, "1", "1 x min spacing",
                          "numerical: ring width (in d and u) of the path-averaged alpha / smallest voxel spacing",
                          False, (0.5, 2.0)),
}


@dataclass(frozen=True)
class MicrowaveParams:
    """SAR-model parameters (SI). Sources, units and ranges: ``TABLE``. Axial lengths are at 2.45 GHz and are
    multiplied by 2.45 GHz / f when ``scale_axial_with_wavelength`` (default)."""

    TABLE: ClassVar[dict[str, Param]] = _TABLE

    loss_fraction: float = _TABLE["loss_fraction"].value
    antenna_radius_m: float = _TABLE["antenna_radius_m"].value
    feed_offset_monopole_m: float = _TABLE["feed_offset_monopole_m"].value
    feed_offset_choked_m: float = _TABLE["feed_offset_choked_m"].value
    axial_sigma_monopole_m: float = _TABLE["axial_sigma_monopole_m"].value
    axial_sigma_choked_m: float = _TABLE["axial_sigma_choked_m"].value
    tail_length_m: float = _TABLE["tail_length_m"].value
    tail_weight: float = _TABLE["tail_weight"].value
    desiccated_eps_factor: float = _TABLE["desiccated_eps_factor"].value
    desiccated_sigma_factor: float = _TABLE["desiccated_sigma_factor"].value
    ring_bin_factor: float = _TABLE["ring_bin_factor"].value
    scale_axial_with_wavelength: bool = True

    def __post_init__(self):
        if not 0.0 <= self.loss_fraction < 1.0:
            raise ValueError("loss_fraction must be in [0, 1)")
        for k in ("antenna_radius_m", "axial_sigma_monopole_m", "axial_sigma_choked_m", "tail_length_m",
                  "ring_bin_factor"):
            if not getattr(self, k) > 0.0:
                raise ValueError(f"{k} must be > 0")
        for k in ("feed_offset_monopole_m", "feed_offset_choked_m"):
            if not getattr(self, k) >= 0.0:
                raise ValueError(f"{k} must be >= 0")
        for k in ("tail_weight", "desiccated_eps_factor", "desiccated_sigma_factor"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be in [0, 1]")
        if self.desiccated_eps_factor == 0.0:
            raise ValueError("desiccated_eps_factor must be > 0")

    def hypotheses(self) -> list[dict]:
        """Rows for a results file (same format as :func:`tissuefate.parameters.module_hypotheses`)."""
        rows = table_hypotheses(self, self.TABLE)
        return rows

    def axial_profile(self, antenna_type: str, frequency_hz: float) -> tuple[float, float, float, float]:
        """(feed_offset, sigma_ax, tail_length, tail_weight) in m (weight in 1) at ``frequency_hz``."""
        if antenna_type not in ANTENNA_TYPES:
            raise ValueError(f"antenna_type must be one of {sorted(ANTENNA_TYPES)}")
        scale = REFERENCE_FREQUENCY_HZ / frequency_hz if self.scale_axial_with_wavelength else 1.0
        if ANTENNA_TYPES[antenna_type] == "tail":
            return (scale * self.feed_offset_monopole_m, scale * self.axial_sigma_monopole_m,
                    scale * self.tail_length_m, self.tail_weight)
        return scale * self.feed_offset_choked_m, scale * self.axial_sigma_choked_m, scale * self.tail_length_m, 0.0


# ------------------------------------------------------------------------------------------------ functions

def attenuation_constant(frequency_hz, eps_r, sigma):
    """Field attenuation constant alpha (1/m) of a lossy dielectric, mu = mu0.

    alpha = omega sqrt(mu0 eps0 eps_r / 2) sqrt(sqrt(1 + x^2) - 1), x = sigma / (omega eps0 eps_r), written as
    sqrt(x^2 / (sqrt(1 + x^2) + 1)) to avoid cancellation in the low-loss limit (alpha -> sigma/2 sqrt(mu/eps)).
    """
    omega = 2.0 * np.pi * np.asarray(frequency_hz, dtype=float)
    eps = EPS0 * np.asarray(eps_r, dtype=float)
    x = np.asarray(sigma, dtype=float) / (omega * eps)
    return omega * np.sqrt(MU0 * eps / 2.0) * np.sqrt(x * x / (np.sqrt(1.0 + x * x) + 1.0))


@njit(cache=True, fastmath=True, inline="always")
def _alpha(omega, eps_r, sigma):
    eps = EPS0 * eps_r
    x = sigma / (omega * eps)
    return omega * math.sqrt(MU0 * eps * 0.5) * math.sqrt(x * x / (math.sqrt(1.0 + x * x) + 1.0))


@njit(cache=True, fastmath=True, inline="always")
def _geometry(rx, ry, rz, d0, d1, d2, h_s, n_s, h_r, n_r):
    """Axial coordinate u, distance d (to the axis for u >= 0, to the tip beyond it) and the ring bins."""
    u = rx * d0 + ry * d1 + rz * d2
    px = rx - u * d0
    py = ry - u * d1
    pz = rz - u * d2
    rho2 = px * px + py * py + pz * pz
    if u >= 0.0:
        d = math.sqrt(rho2)
        sb = 1 + int(u / h_s)
        if sb > n_s - 1:
            sb = n_s - 1
    else:
        d = math.sqrt(rho2 + u * u)
        sb = 0
    rb = int(d / h_r)
    if rb > n_r - 1:
        rb = n_r - 1
    return u, d, sb, rb


@njit(cache=True, parallel=True, fastmath=True)
def _alpha_pass(nx, ny, nz, ox, oy, oz, dx, dy, dz, tx, ty, tz, d0, d1, d2, omega,
                eps, se, sig, ss, vap, sv, f_eps, f_sig, mask, sm, h_s, n_s, h_r, n_r, alpha_out, sums, counts):
    """alpha per voxel (into alpha_out) and per-thread ring sums / counts of alpha over tissue voxels."""
    for i in prange(nx):
        t = get_thread_id()
        rx = ox + i * dx - tx
        e_last = -1.0
        s_last = -1.0
        a = 0.0
        for j in range(ny):
            ry = oy + j * dy - ty
            for k in range(nz):
                n = (i * ny + j) * nz + k
                v = vap[n * sv]
                e = eps[n * se] * (1.0 - v * (1.0 - f_eps))
                sg = sig[n * ss] * (1.0 - v * (1.0 - f_sig))
                if e != e_last or sg != s_last:     # tissue maps are piecewise constant: reuse the last alpha
                    a = _alpha(omega, e, sg)
                    e_last = e
                    s_last = sg
                alpha_out[n] = a
                if mask[n * sm]:
                    u, d, sb, rb = _geometry(rx, ry, oz + k * dz - tz, d0, d1, d2, h_s, n_s, h_r, n_r)
                    sums[t, sb, rb] += a
                    counts[t, sb, rb] += 1.0


@njit(cache=True)
def _ring_tau(sums, counts):
    """Mean alpha per ring (empty rings take the nearest inner, else outer, value) and its cumulative integral
    in units of the ring width: cum[s, r] = sum_{r' < r} alpha[s, r']."""
    n_s, n_r = sums.shape[1], sums.shape[2]
    mean = np.zeros((n_s, n_r))
    cum = np.zeros((n_s, n_r + 1))
    for s in range(n_s):
        last = -1.0
        for r in range(n_r):
            tot = 0.0
            cnt = 0.0
            for c in range(sums.shape[0]):
                tot += sums[c, s, r]
                cnt += counts[c, s, r]
            if cnt > 0.0:
                last = tot / cnt
                mean[s, r] = last
            else:
                mean[s, r] = last          # -1 marks "no inner value yet"
        first = 0.0
        for r in range(n_r):               # leading empty rings: the first value found outward (0 if none)
            if mean[s, r] >= 0.0:
                first = mean[s, r]
                break
        for r in range(n_r):
            if mean[s, r] < 0.0:
                mean[s, r] = first
            cum[s, r + 1] = cum[s, r] + mean[s, r]
    return mean, cum


@njit(cache=True, fastmath=True, inline="always")
def _tau(mean, cum, sb, d, h_r, n_r):
    """Integral of the ring-mean alpha from 0 to d (piecewise constant per ring)."""
    x = d / h_r
    r = int(x)
    if r > n_r - 1:
        r = n_r - 1
    return h_r * (cum[sb, r] + mean[sb, r] * (x - r))


@njit(cache=True, parallel=True, fastmath=True)
def _sar_pass(nx, ny, nz, ox, oy, oz, dx, dy, dz, tx, ty, tz, d0, d1, d2, mask, sm, h_s, n_s, h_r, n_r,
              mean, cum, tau_a, a_ant, feed, sig_ax, tail_len, tail_w, out):
    """Unnormalised q = g(s) 2 alpha exp(-2 tau) / (2 pi d_eff) in place of alpha (``out`` holds alpha on entry)."""
    inv2s2 = 0.5 / (sig_ax * sig_ax)
    for i in prange(nx):
        rx = ox + i * dx - tx
        for j in range(ny):
            ry = oy + j * dy - ty
            for k in range(nz):
                n = (i * ny + j) * nz + k
                if not mask[n * sm]:
                    out[n] = 0.0
                    continue
                u, d, sb, rb = _geometry(rx, ry, oz + k * dz - tz, d0, d1, d2, h_s, n_s, h_r, n_r)
                s = max(u, 0.0) - feed
                d_eff = max(d, a_ant)
                m2tau = -2.0 * (_tau(mean, cum, sb, d_eff, h_r, n_r) - tau_a[sb])
                if s > 0.0 and tail_w > 0.0:
                    g = ((1.0 - tail_w) * math.exp(m2tau - s * s * inv2s2)
                         + tail_w * math.exp(m2tau - s / tail_len))
                else:
                    g = math.exp(m2tau - s * s * inv2s2)
                out[n] = g * out[n] / (math.pi * d_eff)


def _flat_param(x, n, name):
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64)).reshape(-1)
    if a.size == 1:
        return a, 0
    if a.size != n:
        raise ValueError(f"{name} must be a scalar or one value per voxel")
    return a, 1


def sar_field(grid, tip_m, direction, frequency_hz, antenna_type, power_w, sigma_eff, eps_r,
              vapor_fraction=None, mask=None, params: MicrowaveParams | None = None, out=None) -> np.ndarray:
    """Absorbed power density q (W/m^3) of a microwave antenna; sum(q) dV = power_w (1 - loss_fraction).

    ``tip_m``: antenna tip (m, grid frame); ``direction``: vector from the tip back along the shaft (normalised
    here); ``sigma_eff`` (S/m), ``eps_r`` (-), ``vapor_fraction`` (-): scalars or arrays of ``grid.shape``;
    ``mask``: bool array of tissue voxels (None: all). ``out``: optional float64 C-contiguous result array.
    """
    params = params or MicrowaveParams()
    if not frequency_hz > 0.0:
        raise ValueError("frequency_hz must be > 0")
    if not power_w >= 0.0:
        raise ValueError("power_w must be >= 0")
    feed, sig_ax, tail_len, tail_w = params.axial_profile(antenna_type, frequency_hz)
    dvec = np.asarray(direction, dtype=float).reshape(3)
    norm = float(np.linalg.norm(dvec))
    if not norm > 0.0:
        raise ValueError("direction must be a non-zero vector")
    dvec = dvec / norm
    tip = np.asarray(tip_m, dtype=float).reshape(3)
    shape = tuple(grid.shape)
    n = int(np.prod(shape))
    eps, se = _flat_param(eps_r, n, "eps_r")
    sig, ss = _flat_param(sigma_eff, n, "sigma_eff")
    if np.any(eps <= 0.0) or np.any(sig < 0.0):
        raise ValueError("eps_r must be > 0 and sigma_eff >= 0")
    vap, sv = _flat_param(0.0 if vapor_fraction is None else vapor_fraction, n, "vapor_fraction")
    if np.any(vap < 0.0) or np.any(vap > 1.0):
        raise ValueError("vapor_fraction must be in [0, 1]")
    if mask is None:
        m, sm = np.ones(1, dtype=np.bool_), 0
    else:
        m = np.ascontiguousarray(np.asarray(mask, dtype=np.bool_)).reshape(-1)
        if m.size != n:
            raise ValueError("mask must have the grid shape")
        sm = 1
    if out is None:
        out = np.empty(shape)
    elif not (out.shape == shape and out.dtype == np.float64 and out.flags.c_contiguous):
        raise ValueError("out must be a C-contiguous float64 array of the grid shape")
    flat = out.reshape(-1)

    # ring bins: width h along u and d; u < 0 (beyond the tip) is ring row 0
    h = params.ring_bin_factor * min(grid.spacing)
    lo = np.asarray(grid.origin, dtype=float)
    hi = lo + (np.asarray(shape) - 1) * np.asarray(grid.spacing)
    corners = np.array(list(itertools.product(*zip(lo, hi)))) - tip
    n_s = 2 + int(max(0.0, float((corners @ dvec).max())) / h)
    n_r = 2 + int(float(np.linalg.norm(corners, axis=1).max()) / h)
    sums = np.zeros((numba.get_num_threads(), n_s, n_r))
    counts = np.zeros_like(sums)
    geo = (shape[0], shape[1], shape[2], *grid.origin, *grid.spacing, *tip, *dvec)
    omega = 2.0 * math.pi * float(frequency_hz)
    _alpha_pass(*geo, omega, eps, se, sig, ss, vap, sv, params.desiccated_eps_factor,
                params.desiccated_sigma_factor, m, sm, h, n_s, h, n_r, flat, sums, counts)
    mean, cum = _ring_tau(sums, counts)
    a_ant = params.antenna_radius_m
    r_a = min(int(a_ant / h), n_r - 1)                 # tau at the antenna surface, per ring row
    tau_a = h * (cum[:, r_a] + mean[:, r_a] * (a_ant / h - r_a))
    _sar_pass(*geo, m, sm, h, n_s, h, n_r, mean, cum, tau_a, a_ant, feed, sig_ax, tail_len, tail_w, flat)

    p_abs = float(power_w) * (1.0 - params.loss_fraction)
    total = float(np.sum(flat)) * grid.dV          # pairwise sum: the normalisation holds to round-off
    if p_abs == 0.0:
        flat[:] = 0.0
        return out
    if not total > 0.0:
        raise ValueError("no absorbing tissue (sigma_eff > 0) inside the mask")
    flat *= p_abs / total
    return out


def absorbed_power_w(power_w, params: MicrowaveParams | None = None) -> float:
    """Power absorbed in tissue (W): generator power times (1 - loss_fraction)."""
    params = params or MicrowaveParams()
    return float(power_w) * (1.0 - params.loss_fraction)
