"""Microwave SAR model: attenuation constant, energy, zone shapes, path-averaged alpha, grid convergence."""
import math

import numpy as np
import pytest

from tissuefate.geometry import Grid
from tissuefate.physics.microwave import (EPS0, MU0, MicrowaveParams, absorbed_power_w, attenuation_constant,
                                          dielectric_defaults, sar_field)

F_HI, F_LO = 2.45e9, 915e6
TIP = (0.0, 0.0, -0.012)          # the shaft runs along +z from the tip
SHAFT = (0.0, 0.0, 1.0)


def cube_grid(length, h):
    """Cube of edge ``length`` centred on the origin, an even number of voxels: the z axis runs along voxel faces."""
    n = int(round(length / h))
    assert n % 2 == 0
    o = -(n / 2 - 0.5) * h
    return Grid((n, n, n), (h, h, h), (o, o, o))


def axis_distance(grid):
    x, y, z = grid.coords()
    return np.broadcast_to(np.sqrt(x * x + y * y), grid.shape), np.broadcast_to(z, grid.shape)


def moments(grid, q):
    d, z = axis_distance(grid)
    w = q * grid.dV
    P = w.sum()
    return (w * d).sum() / P, (w * z).sum() / P


# ------------------------------------------------------------------------------------------ attenuation

def test_attenuation_constant_hand_value_and_limits():
    # liver, 2.45 GHz: omega = 1.53938e10, omega eps = 5.86088 S/m, x = 0.288352, sqrt(1 + x^2) - 1 = 0.040743,
    # omega sqrt(mu0 eps / 2) = 238.09 1/m  ->  alpha = 238.09 * 0.201849 = 48.06 1/m (hand computation)
    a = float(attenuation_constant(2.45e9, 43.0, 1.69))
    assert a == pytest.approx(48.06, rel=2e-4)
    # same formula written naively
    w = 2 * math.pi * 2.45e9
    eps = 43.0 * EPS0
    naive = w * math.sqrt(MU0 * eps / 2) * math.sqrt(math.sqrt(1 + (1.69 / (w * eps)) ** 2) - 1)
    assert a == pytest.approx(naive, rel=1e-12)
    # 915 MHz penetrates further (Gabriel liver values)
    assert float(attenuation_constant(F_LO, *dielectric_defaults("liver", F_LO))) == pytest.approx(23.31, rel=1e-3)
    # lossless, low-loss (sigma/2 sqrt(mu/eps)) and good-conductor (sqrt(omega mu sigma / 2)) limits
    assert float(attenuation_constant(F_HI, 43.0, 0.0)) == 0.0
    low = float(attenuation_constant(F_HI, 43.0, 1e-6))
    assert low == pytest.approx(0.5e-6 * math.sqrt(MU0 / (43.0 * EPS0)), rel=1e-9)
    high = float(attenuation_constant(F_HI, 43.0, 1e8))          # relative correction ~ omega eps / (2 sigma)
    assert high == pytest.approx(math.sqrt(w * MU0 * 1e8 / 2), rel=1e-7)
    # vectorised
    np.testing.assert_allclose(attenuation_constant(F_HI, np.array([43.0, 43.0]), np.array([1.69, 0.0])), [a, 0.0])


# ------------------------------------------------------------------------------------------------ energy

@pytest.mark.parametrize("antenna", ["monopole", "dipole", "choked", "dual_slot"])
def test_energy_normalisation_and_mask(antenna):
    g = cube_grid(0.04, 1e-3)
    d, z = axis_distance(g)
    mask = (d < 0.016) & (z < 0.015)                           # tissue cylinder; the rest is "air"
    rng = np.random.default_rng(1)
    eps = 43.0 * (1 + 0.1 * rng.random(g.shape))
    sig = 1.69 * (1 + 0.1 * rng.random(g.shape))
    vap = np.clip(1.0 - d / 4e-3, 0.0, 1.0)
    q = sar_field(g, TIP, (0.0, 0.0, 3.0), F_HI, antenna, 60.0, sig, eps, vapor_fraction=vap, mask=mask)
    p_abs = absorbed_power_w(60.0)
    assert p_abs == pytest.approx(60.0 * (1 - MicrowaveParams().loss_fraction))
    assert abs(q.sum() * g.dV / p_abs - 1.0) < 1e-12
    assert np.all(q[~mask] == 0.0) and np.all(q[mask] > 0.0)
    # the loss fraction enters linearly
    q2 = sar_field(g, TIP, SHAFT, F_HI, antenna, 60.0, 1.69, 43.0, mask=mask,
                   params=MicrowaveParams(loss_fraction=0.0))
    assert abs(q2.sum() * g.dV / 60.0 - 1.0) < 1e-12


def test_bad_input():
    g = cube_grid(0.01, 1e-3)
    with pytest.raises(ValueError):
        sar_field(g, TIP, SHAFT, F_HI, "helix", 10.0, 1.69, 43.0)
    with pytest.raises(ValueError):
        sar_field(g, TIP, (0, 0, 0), F_HI, "choked", 10.0, 1.69, 43.0)
    with pytest.raises(ValueError):
        sar_field(g, TIP, SHAFT, F_HI, "choked", 10.0, 1.69, 43.0, vapor_fraction=2.0)
    with pytest.raises(ValueError):
        sar_field(g, TIP, SHAFT, F_HI, "choked", 10.0, 0.0, 43.0)          # nothing absorbs
    with pytest.raises(ValueError):
        MicrowaveParams(loss_fraction=1.0)
    assert np.all(sar_field(g, TIP, SHAFT, F_HI, "choked", 0.0, 1.69, 43.0) == 0.0)
    names = {r["name"] for r in MicrowaveParams().hypotheses()}
    assert {"MicrowaveParams.loss_fraction", "MicrowaveParams.tail_length_m"} <= names


# ------------------------------------------------------------------------------------- analytic shape

def test_uniform_medium_radial_profile_is_exact_cylindrical_wave():
    """Uniform alpha: q(d2)/q(d1) = exp(-2 alpha (d2 - d1)) d1/d2 on the same axial plane (ring tau is exact)."""
    g = cube_grid(0.04, 1e-3)
    alpha = float(attenuation_constant(F_HI, 43.0, 1.69))
    q = sar_field(g, TIP, SHAFT, F_HI, "choked", 60.0, 1.69, 43.0)
    d, z = axis_distance(g)
    k = g.index_of((0, 0, -0.004))[2]
    i1, i2 = g.index_of((0.0025, 0.0005, 0))[0], g.index_of((0.0135, 0.0005, 0))[0]
    j = g.index_of((0, 0.0005, 0))[1]
    d1, d2 = d[i1, j, k], d[i2, j, k]
    assert q[i2, j, k] / q[i1, j, k] == pytest.approx(math.exp(-2 * alpha * (d2 - d1)) * d1 / d2, rel=1e-10)
    # choked profile: Gaussian in s around the slot, at fixed d
    feed, sig_ax, _, _ = MicrowaveParams().axial_profile("choked", F_HI)
    k2 = g.index_of((0, 0, 0.0))[2]
    s1, s2 = z[0, 0, k] - TIP[2] - feed, z[0, 0, k2] - TIP[2] - feed
    assert q[i1, j, k2] / q[i1, j, k] == pytest.approx(math.exp(-(s2 ** 2 - s1 ** 2) / (2 * sig_ax ** 2)), rel=1e-10)


def test_path_averaged_alpha_across_a_desiccated_core():
    """Desiccated core d < 4 mm: outside it the decay is that of hydrated tissue, and the jump across it follows
    alpha_out / alpha_in * exp(-2 (tau(d2) - tau(d1))) with tau through the core at alpha_in."""
    g = cube_grid(0.04, 1e-3)
    p = MicrowaveParams()
    d, _ = axis_distance(g)
    vap = (d < 4e-3).astype(float)
    q = sar_field(g, TIP, SHAFT, F_HI, "choked", 60.0, 1.69, 43.0, vapor_fraction=vap, params=p)
    a_wet = float(attenuation_constant(F_HI, 43.0, 1.69))
    a_dry = float(attenuation_constant(F_HI, 43.0 * p.desiccated_eps_factor, 1.69 * p.desiccated_sigma_factor))
    k = g.index_of((0, 0, -0.004))[2]
    j = g.index_of((0, 0.0005, 0))[1]
    i_in, i_a, i_b = (g.index_of((x, 0, 0))[0] for x in (0.0025, 0.0075, 0.0135))
    da, db, din = d[i_a, j, k], d[i_b, j, k], d[i_in, j, k]
    # both outside the core: pure hydrated decay
    assert q[i_b, j, k] / q[i_a, j, k] == pytest.approx(math.exp(-2 * a_wet * (db - da)) * da / db, rel=1e-10)
    # across the core boundary (4 mm): alpha_dry up to 4 mm, alpha_wet beyond; the ring holding the staircase
    # boundary mixes both, so allow the error of one ring width: exp(2 h (a_wet - a_dry)) - 1 = 5 %
    expect = a_wet / a_dry * math.exp(-2 * (a_dry * (4e-3 - din) + a_wet * (da - 4e-3))) * din / da
    assert q[i_a, j, k] / q[i_in, j, k] == pytest.approx(expect, rel=0.05)


# ----------------------------------------------------------------------------------------- zone shape

def test_monopole_heats_further_back_along_the_shaft_than_choked():
    g = cube_grid(0.06, 1e-3)
    p = MicrowaveParams(feed_offset_monopole_m=8e-3, feed_offset_choked_m=8e-3,
                        axial_sigma_monopole_m=5e-3, axial_sigma_choked_m=5e-3)
    _, zc_mono = moments(g, sar_field(g, TIP, SHAFT, F_HI, "monopole", 60.0, 1.69, 43.0, params=p))
    _, zc_chok = moments(g, sar_field(g, TIP, SHAFT, F_HI, "choked", 60.0, 1.69, 43.0, params=p))
    q_m = sar_field(g, TIP, SHAFT, F_HI, "monopole", 60.0, 1.69, 43.0, params=p)
    q_c = sar_field(g, TIP, SHAFT, F_HI, "choked", 60.0, 1.69, 43.0, params=p)
    _, z = axis_distance(g)
    behind = z > TIP[2] + 8e-3 + 10e-3                          # more than 2 sigma behind the feed
    f_m, f_c = q_m[behind].sum() * g.dV / 48.0, q_c[behind].sum() * g.dV / 48.0
    print("axial centroid (mm from tip): monopole", 1e3 * (zc_mono - TIP[2]), "choked", 1e3 * (zc_chok - TIP[2]),
          "power fraction > 2 sigma behind the feed:", f_m, f_c)
    assert zc_mono - zc_chok > 3e-3
    assert f_m > 5 * f_c


def test_915mhz_decays_slower_radially_than_2450mhz():
    g = cube_grid(0.06, 1e-3)
    p = MicrowaveParams(scale_axial_with_wavelength=False)      # same axial profile: compare the radial decay
    r_lo, _ = moments(g, sar_field(g, TIP, SHAFT, F_LO, "choked", 60.0, *dielectric_defaults("liver", F_LO)[::-1],
                                   params=p))
    r_hi, _ = moments(g, sar_field(g, TIP, SHAFT, F_HI, "choked", 60.0, *dielectric_defaults("liver", F_HI)[::-1],
                                   params=p))
    print("SAR-weighted mean distance from the axis (mm): 915 MHz", 1e3 * r_lo, "2.45 GHz", 1e3 * r_hi)
    assert r_lo > 1.2 * r_hi


def test_desiccation_pushes_sar_outward():
    g = cube_grid(0.04, 1e-3)
    d, _ = axis_distance(g)
    q0 = sar_field(g, TIP, SHAFT, F_HI, "choked", 60.0, 1.69, 43.0)
    vap = (d < 3e-3).astype(float)
    q1 = sar_field(g, TIP, SHAFT, F_HI, "choked", 60.0, 1.69, 43.0, vapor_fraction=vap)
    r0, _ = moments(g, q0)
    r1, _ = moments(g, q1)
    inner, outer = d < 3e-3, (d > 4e-3) & (d < 10e-3)
    print("mean distance (mm) hydrated", 1e3 * r0, "desiccated core", 1e3 * r1)
    assert r1 > r0 + 1e-3
    assert q1[inner].sum() < 0.5 * q0[inner].sum() and q1[outer].sum() > 1.2 * q0[outer].sum()


# ----------------------------------------------------------------------------------- grid convergence

@pytest.mark.parametrize("desiccated", [False, True])
def test_grid_convergence_of_mean_radius(desiccated):
    """SAR-weighted mean distance from the axis on 1, 0.5, 0.25 mm grids: converges, order >= ~2."""
    r = []
    for h in (1e-3, 0.5e-3, 0.25e-3):
        g = cube_grid(0.032, h)
        d, _ = axis_distance(g)
        vap = np.exp(-(d / 3e-3) ** 2) if desiccated else None     # smooth desiccated core
        q = sar_field(g, TIP, SHAFT, F_HI, "monopole", 60.0, 1.69, 43.0, vapor_fraction=vap)
        r.append(moments(g, q)[0])
    r = np.array(r)
    order = math.log2((r[0] - r[1]) / (r[1] - r[2]))
    print("mean radius (mm)", 1e3 * r, "observed order", order)
    assert abs(r[2] - r[1]) < 2e-3 * r[2]
    assert order > 1.8
