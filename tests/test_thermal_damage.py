"""Thermal damage: Arrhenius (V1), CEM43, quadrature order on a ramp, cryo rules, perfusion factor."""
import math

import numpy as np
import pytest
from scipy.integrate import quad

from tissuefate.physics.thermal_damage import (R_GAS, ThermalDamage, ThermalDamageParams, arrhenius_rate,
                                               arrhenius_time_to_omega, cem43_equivalent_time)

T0C = 273.15
A_LIVER, EA_LIVER = 7.39e39, 2.577e5
SHAPE = (2, 1, 3)


def full(value):
    return np.full(SHAPE, float(value))


def run_history(td, times, temps_c):
    """Step ``td`` through a piecewise-linear history given at ``times`` (s), temperatures in degC."""
    for k in range(len(times) - 1):
        td.update(full(temps_c[k] + T0C), full(temps_c[k + 1] + T0C), times[k + 1] - times[k])


def stepped_time_to_omega(td, T_k, dt, omega=1.0, field="omega_cell"):
    """Step at constant T until Omega >= omega; the crossing time is interpolated (the rate is constant)."""
    T = full(T_k)
    t = 0.0
    while True:
        before = getattr(td, field).copy()
        td.update(T, T, dt)
        after = getattr(td, field)
        if after.min() >= omega:
            # every voxel crosses within this step in the constant-rate tests below
            return t + dt * (omega - before) / (after - before)
        t += dt


# ------------------------------------------------------------------------------------------------ V1

@pytest.mark.parametrize("T_c, expected_s", [(50.0, 61.4), (60.0, 3.45), (70.0, 0.229)])
def test_v1_isothermal_arrhenius(T_c, expected_s):
    t_analytic = float(arrhenius_time_to_omega(A_LIVER, EA_LIVER, T_c + T0C))
    # published-derived numbers (parameters.md V1) to 3 significant figures
    assert float(f"{t_analytic:.3g}") == pytest.approx(expected_s, rel=1e-12)
    # stepping the class at constant T; the second voxel has half the A (per-voxel parameters are honoured)
    A = np.full(SHAPE, A_LIVER)
    A[1, 0, 2] = 0.5 * A_LIVER
    td = ThermalDamage(SHAPE, A, np.full(SHAPE, EA_LIVER))
    t_step = stepped_time_to_omega(td, T_c + T0C, dt=t_analytic / 37.3)
    expect = np.full(SHAPE, t_analytic)
    expect[1, 0, 2] = 2.0 * t_analytic
    np.testing.assert_allclose(t_step, expect, rtol=1e-6)


def test_v1_cem43_240min_is_112p5s_at_50c():
    assert float(cem43_equivalent_time(240.0, 50.0)) == pytest.approx(112.5, rel=1e-6)
    td = ThermalDamage(SHAPE)
    T = full(50.0 + T0C)
    for _ in range(9):
        td.update(T, T, 112.5 / 9)
    np.testing.assert_allclose(td.cem43_min, 240.0, rtol=1e-6)
    td.update(T, T, 0.5)
    assert td.cem43_lesion().all()
    # below 43 degC the base is 0.25: 10 min at 41 degC = 10 * 0.25^2 min
    td = ThermalDamage(SHAPE)
    T = full(41.0 + T0C)
    td.update(T, T, 600.0)
    np.testing.assert_allclose(td.cem43_min, 10 * 0.25 ** 2, rtol=1e-12)


def test_cem43_exact_on_ramp_through_43c():
    """The CEM43 step integral is exact for linear T, also across 43 degC: one step equals the quadrature."""
    p = ThermalDamageParams(cem43_floor_k=0.0)
    ta, tb, dt = 35.0, 58.0, 40.0

    def rate(t):
        T = ta + (tb - ta) * t / dt
        return (0.5 if T >= 43.0 else 0.25) ** (43.0 - T) / 60.0

    t43 = dt * (43.0 - ta) / (tb - ta)
    ref = quad(rate, 0, t43, epsabs=0, epsrel=1e-13)[0] + quad(rate, t43, dt, epsabs=0, epsrel=1e-13)[0]
    for n in (1, 3):
        td = ThermalDamage(SHAPE, params=p)
        times = np.linspace(0.0, dt, n + 1)
        run_history(td, times, ta + (tb - ta) * times / dt)
        np.testing.assert_allclose(td.cem43_min, ref, rtol=1e-12)
    # the floor only drops steps entirely below it
    td = ThermalDamage(SHAPE)
    run_history(td, [0.0, 3600.0], [37.0, 37.0])
    assert np.all(td.cem43_min == 0.0)


# ------------------------------------------------------------------------------------- ramp convergence

def ramp_reference(A, Ea, ta_c, tb_c, duration, T_on=0.0):
    def rate(t):
        T = ta_c + T0C + (tb_c - ta_c) * t / duration
        return A * math.exp(-Ea / (R_GAS * T)) if T > T_on else 0.0
    t_on = duration * (T_on - ta_c - T0C) / (tb_c - ta_c)
    pts = [t_on] if 0.0 < t_on < duration else None
    return quad(rate, 0.0, duration, points=pts, epsabs=0.0, epsrel=1e-13, limit=200)[0]


def ramp_errors(ta_c, tb_c, duration, steps, field, A, Ea, params):
    ref = ramp_reference(A, Ea, ta_c, tb_c, duration, params.T_onset_k)
    errs = []
    for n in steps:
        td = ThermalDamage(SHAPE, params=params)
        times = np.linspace(0.0, duration, n + 1)
        run_history(td, times, ta_c + (tb_c - ta_c) * times / duration)
        errs.append(abs(getattr(td, field)[0, 0, 0] / ref - 1.0))
    return ref, np.array(errs)


@pytest.mark.parametrize("ta_c, tb_c", [(45.0, 75.0), (37.0, 70.0)])   # the second crosses T_onset = 43 degC
def test_ramp_converges_with_order_6(ta_c, tb_c):
    """Composite 3-point Gauss-Legendre (no sub-division) on a linear ramp: global order 6 in dt."""
    p = ThermalDamageParams(max_dT_sub_k=1e9)
    steps = [4, 8, 16, 32]
    for field, A, Ea in (("omega_cell", p.A_cell, p.Ea_cell), ("omega_vessel", p.A_vessel, p.Ea_vessel)):
        ref, err = ramp_errors(ta_c, tb_c, 30.0, steps, field, A, Ea, p)
        orders = np.log2(err[:-1] / err[1:])
        print(field, ta_c, tb_c, "ref", ref, "rel. errors", err, "orders", orders)
        assert err[-1] < 1e-7
        assert np.all(orders > 5.0) and 5.8 < orders[-1] < 6.2


def test_default_subdivision_makes_one_large_step_accurate():
    """A single 40 s step from 37 to 95 degC is split into 2 K sub-intervals: relative error < 1e-6."""
    p = ThermalDamageParams()
    for field, A, Ea in (("omega_cell", p.A_cell, p.Ea_cell), ("omega_vessel", p.A_vessel, p.Ea_vessel)):
        ref, err = ramp_errors(37.0, 95.0, 40.0, [1], field, A, Ea, p)
        assert err[0] < 1e-6, (field, err)


def test_onset_cutoff_and_vessel_isothermal():
    td = ThermalDamage(SHAPE)
    run_history(td, [0.0, 7200.0], [42.9, 42.9])
    assert np.all(td.omega_cell == 0.0) and np.all(td.omega_vessel == 0.0)
    # without the cut-off the Chang & Nguyen set kills at body temperature within an hour (the artefact)
    assert float(arrhenius_time_to_omega(A_LIVER, EA_LIVER, 37.0 + T0C)) < 3600.0
    # vessel process (artery set): isothermal time to Omega_vessel = 1 at 75 degC
    p = ThermalDamageParams()
    t_v = float(arrhenius_time_to_omega(p.A_vessel, p.Ea_vessel, 75.0 + T0C))
    td = ThermalDamage(SHAPE)
    np.testing.assert_allclose(stepped_time_to_omega(td, 75.0 + T0C, t_v / 11.7, field="omega_vessel"), t_v,
                               rtol=1e-6)
    assert td.microvessels_coagulated().all() and td.matrix_fixed().all() and td.coagulated().all()
    # the vessel process is slower than cell death at 60 degC (vessels outlast cells)
    assert arrhenius_rate(p.A_vessel, p.Ea_vessel, 333.15) < 1e-2 * arrhenius_rate(p.A_cell, p.Ea_cell, 333.15)


# ---------------------------------------------------------------------------------------------- cryo

def test_cryo_min_time_below_and_cycles_exact():
    td = ThermalDamage(SHAPE)
    # 37 -> -50 in 87 s, hold 100 s, thaw to 10 in 60 s; T < -40 from t = 77 s to 197 s: 120 s
    run_history(td, [0.0, 87.0, 187.0, 247.0], [37.0, -50.0, -50.0, 10.0])
    np.testing.assert_allclose(td.t_min_k, -50.0 + T0C, rtol=1e-14)
    np.testing.assert_allclose(td.time_below_lethal_s, 120.0, rtol=1e-12)
    assert np.all(td.freeze_thaw_cycles == 1) and not td.frozen.any()
    assert td.frozen_dead().all()                      # single freeze, >= 60 s below -40 degC


def test_freeze_thaw_hysteresis():
    td = ThermalDamage(SHAPE)
    # oscillating between -5 and -2 degC (between solidus -8 and liquidus -1): never frozen
    run_history(td, [0, 10, 20, 30, 40], [5.0, -5.0, -2.0, -5.0, -2.0])
    assert not td.frozen.any() and np.all(td.freeze_thaw_cycles == 0)
    run_history(td, [0, 10], [-2.0, -9.0])
    assert td.frozen.all()
    run_history(td, [0, 10, 20], [-9.0, -1.5, -30.0])  # partial thaw above the solidus: still the same freeze
    assert td.frozen.all() and np.all(td.freeze_thaw_cycles == 0)
    run_history(td, [0, 10], [-30.0, -1.0])            # reaches the liquidus: one completed cycle
    assert not td.frozen.any() and np.all(td.freeze_thaw_cycles == 1)
    assert np.all(td.perfusion_factor() == 1.0)


@pytest.mark.parametrize("history, dead", [
    (([0, 60, 90, 150], [37, -45, -45, 10]), False),                       # below -40 for 39.1 s < 60 s
    (([0, 60, 150, 210], [37, -45, -45, 10]), True),                        # 99.1 s below -40
    (([0, 60, 120, 180, 240], [37, -25, 10, -25, 10]), True),               # double freeze-thaw to -25
    (([0, 60, 120, 180], [37, -25, 10, -25]), False),                       # second freeze not yet thawed
    (([0, 60, 120, 180, 240], [37, -15, 10, -15, 10]), False),              # double, but only -15 degC
])
def test_cryo_lethality_rules(history, dead):
    td = ThermalDamage(SHAPE)
    times, temps = history
    run_history(td, times, temps)
    assert np.all(td.frozen_dead() == dead)
    # t_hold = 0: reaching -40 degC at all kills
    td = ThermalDamage(SHAPE, params=ThermalDamageParams(t_hold_s=0.0))
    run_history(td, [0, 60], [37.0, -40.5])
    assert td.frozen_dead().all()


# ------------------------------------------------------------------------------------------ perfusion

def test_perfusion_factor_models():
    td = ThermalDamage(SHAPE)
    td.omega_vessel[...] = np.array([0.0, 0.5, 0.99, 1.0, 2.0, 7.0]).reshape(SHAPE)
    td.frozen[0, 0, 0] = True
    pf = td.perfusion_factor()
    expect = np.exp(-td.omega_vessel)
    expect[0, 0, 0] = 0.0
    np.testing.assert_allclose(pf, expect, rtol=1e-12)
    assert pf.min() >= 0.0 and pf.max() <= 1.0
    td.params = ThermalDamageParams(perfusion_model="step")
    out = np.empty(SHAPE)
    assert td.perfusion_factor(out=out) is out
    np.testing.assert_array_equal(out.reshape(-1), [0.0, 1.0, 1.0, 0.0, 0.0, 0.0])


def test_params_table_and_validation():
    p = ThermalDamageParams()
    names = {r["name"] for r in p.hypotheses()}
    assert {"ThermalDamageParams.t_hold_s", "ThermalDamageParams.A_vessel",
            "ThermalDamageParams.T_onset_k"} <= names
    assert "ThermalDamageParams.A_cell" not in names
    assert p.T_lethal_k == pytest.approx(-40.0 + T0C) and p.T_solidus_k == pytest.approx(-8.0 + T0C)
    for bad in ({"perfusion_model": "linear"}, {"t_hold_s": -1.0}, {"T_solidus_k": 280.0}, {"A_cell": 0.0}):
        with pytest.raises(ValueError):
            ThermalDamageParams(**bad)
    with pytest.raises(ValueError):
        ThermalDamage(SHAPE, A_cell=np.ones((3, 3, 3)))
    td = ThermalDamage(SHAPE)
    with pytest.raises(ValueError):
        td.update(full(300.0).astype(np.float32), full(300.0), 1.0)
    # lesion definition switch
    td = ThermalDamage(SHAPE, params=ThermalDamageParams(lesion_definition="cem43"))
    run_history(td, [0.0, 100.0], [50.0, 50.0])          # Omega = 1.63 but CEM43 = 213 min < 240
    assert td.omega_cell.min() > 1.0 and not td.coagulated().any()
