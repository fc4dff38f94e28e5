"""Ethanol kill dose, death commitment / completion timing, vessels, and the stoichiometric kill bound."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tissuefate.physics.death import (DeathFields, DeathParams, lethal_clo2_per_m3, stoichiometric_bound_volume,
                                      update_death)
from tissuefate.physics.ethanol import (FORMULATIONS, EthanolKillParams, formulation, react_ethanol)
from tissuefate.physics.oxidant import OxidantParams, react_oxidant
from tissuefate.physics.vessels import (VesselParams, lpsv_field, perfusion_field, track_factor, update_vessels,
                                        vessel_integrity)
from tissuefate.tissue_state import TissueState

S = (1, 1, 1)


# ---------------------------------------------------------------------------------------------
# ethanol
# ---------------------------------------------------------------------------------------------
def test_ethanol_35_percent_for_15_s_gives_omega_one():
    theta = 0.4
    N = np.full(S, 0.35 * theta)
    om = np.zeros(S)
    react_ethanol(N, theta, 0.0, om, 15.0)
    assert om.item() == pytest.approx(1.0, abs=1e-14)
    om[:] = 0.0
    for _ in range(150):
        react_ethanol(N, theta, 0.0, om, 0.1)
    assert om.item() == pytest.approx(1.0, abs=1e-12)
    assert N.item() == 0.35 * theta                       # no washout: unchanged


def test_ethanol_17_5_percent_kills_in_5_28_min():
    kill = EthanolKillParams()
    t_kill = kill.kill_time(0.175)
    assert t_kill == pytest.approx(15.0 * 2.0**4.4, rel=1e-14)
    assert t_kill / 60 == pytest.approx(5.278, abs=1e-3)     # "~5.2 min" in injection.md 5
    N = np.full(S, 0.175)
    om = np.zeros(S)
    t = 0.0
    while om.item() < 1.0:
        react_ethanol(N, 1.0, 0.0, om, 1.0)
        t += 1.0
    assert t == math.ceil(t_kill)                           # 317 s
    assert kill.kill_time(0.05) == math.inf
    om[:] = 0.0
    N[:] = 0.049
    react_ethanol(N, 1.0, 0.0, om, 1e4)
    assert om.item() == 0.0                                 # below c_min: no dose


def test_ethanol_washout_and_dose_are_exact_within_a_step():
    theta, w, dt = 0.3, 3e-3, 400.0
    c0 = 0.6
    N = np.full((2, 1, 1), c0 * theta)
    om = np.zeros((2, 1, 1))
    b = react_ethanol(N, theta, np.array([w, 0.0]), om, dt)
    a = w / theta
    assert N[0].item() == pytest.approx(c0 * theta * math.exp(-a * dt), rel=1e-14)
    assert b["ethanol_washout"] == pytest.approx(c0 * theta * -math.expm1(-a * dt), rel=1e-14)
    # dose: c(t) = c0 exp(-a t) drops below c_min = 0.05 at t = ln(12)/a = 248.5 s < dt
    tt = np.linspace(0.0, dt, 400001)
    c = c0 * np.exp(-a * tt)
    f = np.where(c > 0.05, (c / 0.35) ** 4.4, 0.0) / 15.0
    ref = np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(tt))
    assert om[0].item() == pytest.approx(ref, rel=1e-5)
    assert om[1].item() == pytest.approx(dt / 15.0 * (c0 / 0.35) ** 4.4, rel=1e-14)


def test_formulation_presets():
    assert set(FORMULATIONS) == {"ethanol", "ec6", "ec12"}
    eth, ec6, ec12 = formulation("ethanol"), formulation("EC6"), formulation("ec12")
    assert eth.viscosity == 1.10e-3 and eth.D_liquid == 1e-9 and eth.gel_threshold == math.inf
    assert ec12.D_gel == 5e-11 and ec12.ec_fraction == 0.12 and ec6.ec_fraction == 0.06
    assert ec12.D_gel < ec6.D_gel < eth.D_gel
    wf = np.array([0.0, 0.29, 0.31, 0.9])
    assert list(ec6.is_gel(wf)) == [False, False, True, True]
    assert list(eth.is_gel(wf)) == [False] * 4
    assert np.allclose(ec12.diffusivity(wf), [1e-9, 1e-9, 5e-11, 5e-11])
    with pytest.raises(KeyError):
        formulation("vodka")


# ---------------------------------------------------------------------------------------------
# death timing
# ---------------------------------------------------------------------------------------------
def test_oxidative_commitment_and_first_order_completion():
    tau = 1800.0
    prm = DeathParams(fast_pool_threshold=0.8, tau_oxidative=tau)
    state = np.zeros((3, 1, 1), dtype=np.int8)
    fld = DeathFields.zeros(state.shape)
    Rf0 = np.full((3, 1, 1), 10.0)
    Rf = np.array([1.9, 2.1, 10.0]).reshape(3, 1, 1)      # F = 0.81 (commits), 0.79 (no), 0 (no)
    Rs0 = np.full((3, 1, 1), 100.0)
    Rs = Rs0.copy()
    dt = 60.0
    t = 0.0
    r = update_death(state, fld, t, dt, prm, R_f=Rf, R_f0=Rf0, R_s=Rs, R_s0=Rs0)
    t += dt
    assert r["committed_oxidative"] == 1
    assert fld.commit_time[0].item() == 60.0 and np.isnan(fld.commit_time[1].item())
    flip = None
    for _ in range(200):
        update_death(state, fld, t, dt, prm, R_f=Rf, R_f0=Rf0, R_s=Rs, R_s0=Rs0)
        t += dt
        # phi(t) = 1 - exp(-(t - t_c)/tau), exact at step ends
        assert fld.dead_fraction[0].item() == pytest.approx(-math.expm1(-(t - 60.0) / tau), rel=1e-12)
        if flip is None and state[0].item() != TissueState.VIABLE:
            flip = t
    assert state[0].item() == TissueState.OXIDATIVE_NECROSIS
    assert state[1].item() == TissueState.VIABLE and state[2].item() == TissueState.VIABLE
    t_half = 60.0 + tau * math.log(2.0)                        # 1307.7 s
    assert t_half <= flip < t_half + dt
    assert fld.death_time[0].item() == flip
    # slow-pool criterion alone
    state2 = np.zeros(S, dtype=np.int8)
    f2 = DeathFields.zeros(S)
    update_death(state2, f2, 0.0, 1.0, DeathParams(slow_pool_threshold=0.5, tau_oxidative=0.0),
                 R_f=np.full(S, 10.0), R_f0=np.full(S, 10.0), R_s=np.full(S, 49.0), R_s0=np.full(S, 100.0))
    assert state2.item() == TissueState.OXIDATIVE_NECROSIS


def test_ischemic_death_after_tolerance_time():
    tol = 7200.0
    prm = DeathParams(ischemia_tolerance=tol, tau_ischemic=0.0)
    p0 = np.full((3, 1, 1), 1e-2)
    perf = np.array([0.0, 0.5e-2, 1e-2]).reshape(3, 1, 1)   # full loss, half loss, none
    state = np.zeros((3, 1, 1), dtype=np.int8)
    fld = DeathFields.zeros(state.shape)
    dt = 300.0
    t = 0.0
    while t < 20000.0:
        update_death(state, fld, t, dt, prm, perfusion=perf, perfusion0=p0)
        t += dt
    assert state[0].item() == TissueState.ISCHEMIC_NECROSIS and fld.death_time[0].item() == tol
    assert state[1].item() == TissueState.ISCHEMIC_NECROSIS and fld.death_time[1].item() == 2 * tol
    assert state[2].item() == TissueState.VIABLE and fld.ischemic_dose[2].item() == 0.0
    # temporary track hemostasis (300 s without perfusion, then recovery) does not kill
    vp = VesselParams(hemostasis_time=300.0, tau_recovery=120.0)
    state = np.zeros(S, dtype=np.int8)
    fld = DeathFields.zeros(S)
    v = np.ones(S)
    for k in range(2000):
        t = 10.0 * k
        pf = perfusion_field(np.full(S, 1e-2), v, np.ones(S, bool), t=t, t_insert=0.0, params=vp)
        update_death(state, fld, t, 10.0, prm, perfusion=pf, perfusion0=np.full(S, 1e-2))
    assert state.item() == TissueState.VIABLE
    assert fld.ischemic_dose.item() == pytest.approx(300.0 + 120.0, abs=10.0)   # left-point rule, dt = 10 s


def test_chemical_death_with_delay_and_first_cause_kept():
    prm = DeathParams(tau_oxidative=3600.0, tau_chemical=60.0)
    state = np.zeros((2, 1, 1), dtype=np.int8)
    fld = DeathFields.zeros(state.shape)
    Rf0 = np.full((2, 1, 1), 10.0)
    Rf = np.full((2, 1, 1), 1.0)                          # both committed oxidatively at t = 10
    om = np.zeros((2, 1, 1))
    dt = 10.0
    t = 0.0
    for k in range(100):
        if t >= 100.0:
            om[0] = 1.2                                    # ethanol reaches voxel 0 at t = 100
        update_death(state, fld, t, dt, prm, R_f=Rf, R_f0=Rf0, omega=om)
        t += dt
    # voxel 0: chemical completes first (60 s vs 3600 s time constant) -> CHEMICAL_NECROSIS
    assert state[0].item() == TissueState.CHEMICAL_NECROSIS
    assert fld.commit_time[0].item() == 10.0               # first commitment (oxidative) time kept
    assert 110.0 + 60.0 * math.log(2) * 0.9 < fld.death_time[0].item() < 110.0 + 60.0 * math.log(2) + dt
    assert state[1].item() == TissueState.VIABLE
    # once dead, a later cause never overwrites the state
    om[1] = 5.0
    dead_code = state[0].item()
    for k in range(400):
        update_death(state, fld, t, dt, prm, R_f=Rf, R_f0=Rf0, omega=om)
        t += dt
    assert state[0].item() == dead_code
    assert state[1].item() == TissueState.CHEMICAL_NECROSIS
    # a voxel that is not living (e.g. NO_TISSUE) is never touched
    st2 = np.full(S, TissueState.NO_TISSUE, dtype=np.int8)
    f2 = DeathFields.zeros(S)
    update_death(st2, f2, 0.0, 10.0, prm, omega=np.full(S, 9.0))
    assert st2.item() == TissueState.NO_TISSUE and f2.committed.item() == 0


# ---------------------------------------------------------------------------------------------
# vessels
# ---------------------------------------------------------------------------------------------
def test_vessels_tumor_and_normal_parameters_are_symmetric():
    rng = np.random.default_rng(3)
    shape = (6, 5, 4)
    E = rng.uniform(0, 3, shape)
    om = rng.uniform(0, 2, shape)
    tumor = rng.random(shape) < 0.5
    eq = VesselParams(k_clo2_tumor=2.0, k_clo2_normal=2.0, k_ethanol_tumor=1.5, k_ethanol_normal=1.5)
    v1 = vessel_integrity(E, om, tumor, eq)
    v2 = vessel_integrity(E, om, ~tumor, eq)
    v3 = vessel_integrity(E, om, np.zeros(shape, bool), eq)
    assert np.array_equal(v1, v2) and np.array_equal(v1, v3)
    assert np.allclose(v1, np.exp(-2.0 * E - 1.5 * om), rtol=1e-15)
    # defaults carry no built-in preference
    d = VesselParams()
    assert d.k_clo2_tumor == d.k_clo2_normal and d.k_ethanol_tumor == d.k_ethanol_normal
    # a named difference acts only through its parameter
    sel = VesselParams(k_clo2_tumor=4.0, k_clo2_normal=1.0)
    vs = vessel_integrity(E, 0 * om, tumor, sel)
    assert np.allclose(vs[tumor], np.exp(-4.0 * E[tumor])) and np.allclose(vs[~tumor], np.exp(-E[~tumor]))
    # incremental updates in several steps equal the closed form
    v = np.ones(shape)
    for frac in (0.2, 0.3, 0.5):
        update_vessels(v, frac * E, frac * om, tumor, sel)
    assert np.allclose(v, vessel_integrity(E, om, tumor, sel), rtol=1e-13)
    # perfusion and LpSV scale with v
    p0 = rng.uniform(1e-3, 1e-2, shape)
    assert np.allclose(perfusion_field(p0, v), p0 * v)
    assert np.allclose(lpsv_field(4.2e-7, v), 4.2e-7 * v)


def test_track_hemostasis_is_temporary():
    vp = VesselParams(hemostasis_time=300.0, tau_recovery=120.0)
    assert track_factor(-1.0, 0.0, vp) == 1.0
    assert track_factor(0.0, 0.0, vp) == 0.0 and track_factor(299.9, 0.0, vp) == 0.0
    assert track_factor(420.0, 0.0, vp) == pytest.approx(1 - math.exp(-1.0), rel=1e-14)
    assert track_factor(5000.0, 0.0, vp) == pytest.approx(1.0, abs=1e-14)
    assert track_factor(400.0, 0.0, VesselParams(hemostasis_time=300.0, tau_recovery=0.0)) == 1.0
    p0 = np.full((4, 1, 1), 1e-2)
    v = np.ones((4, 1, 1))
    track = np.array([True, True, False, False]).reshape(4, 1, 1)
    pf = perfusion_field(p0, v, track, t=100.0, t_insert=0.0, params=vp)
    assert np.array_equal(pf[:, 0, 0], [0.0, 0.0, 1e-2, 1e-2])
    pf = perfusion_field(p0, v, track, t=1e4, t_insert=0.0, params=vp)
    assert np.allclose(pf, p0)


# ---------------------------------------------------------------------------------------------
# stoichiometric bound
# ---------------------------------------------------------------------------------------------
def test_bound_helpers():
    oxp = OxidantParams()
    assert oxp.max_equivalents_per_clo2() == pytest.approx(2.5)       # 1 + 0.5*2 + 0.5*1
    lc = lethal_clo2_per_m3(np.array([10.0, 0.0, 5.0]), np.array([100.0, 0.0, 1.0]),
                            DeathParams(fast_pool_threshold=0.8, slow_pool_threshold=2.0), oxp)
    assert lc[0] == pytest.approx(8.0 / 2.5) and lc[1] == math.inf and lc[2] == pytest.approx(4.0 / 2.5)
    assert stoichiometric_bound_volume(1e-6, lc) == pytest.approx(1e-6 / 1.6)
    assert stoichiometric_bound_volume(0.0, lc) == 0.0


fl = lambda lo, hi: st.floats(lo, hi, allow_nan=False, allow_infinity=False)  # noqa: E731


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_oxidative_necrosis_never_exceeds_stoichiometric_bound(data):
    n = data.draw(st.integers(1, 10), label="voxels")
    vec = lambda lo, hi, lab: np.array(data.draw(st.lists(fl(lo, hi), min_size=n, max_size=n), label=lab))  # noqa
    Rf0 = vec(0.0, 30.0, "R_f0")
    Rs0 = vec(0.0, 300.0, "R_s0")
    thr_f = vec(0.05, 1.0, "thr_f")
    thr_s = vec(0.05, 1.5, "thr_s")
    theta = vec(0.05, 1.0, "theta")
    w = vec(0.0, 1e-2, "washout")
    ndose = data.draw(st.integers(1, 3), label="doses")
    doses = [vec(0.0, 60.0, f"dose{k}") for k in range(ndose)]
    dts = [data.draw(fl(1e-3, 1e4), label=f"dt{k}") for k in range(ndose)]
    yc = data.draw(fl(0.0, 1.0), label="y_cl")
    yh = data.draw(fl(0.0, 1.0 - yc), label="y_h")
    oxp = OxidantParams(yield_chlorite_fast=yc, yield_hocl_fast=yh, k_chlorite_fast=1e-1, k_chlorite_slow=1e-2,
                        k_hocl_slow=10.0)
    dprm = DeathParams(fast_pool_threshold=thr_f, slow_pool_threshold=thr_s, tau_oxidative=0.0)

    shape = (n, 1, 1)
    dV = 1e-9
    Rf = Rf0.reshape(shape).copy()
    Rs = Rs0.reshape(shape).copy()
    N, C, H = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    state = np.zeros(shape, dtype=np.int8)
    fld = DeathFields.zeros(shape)
    t = 0.0
    for dose, dt in zip(doses + [np.zeros(n)], dts + [1e5]):      # last: long wait, chlorite acts
        N += dose.reshape(shape)
        react_oxidant(N, C, H, Rf, Rs, theta.reshape(shape), w.reshape(shape), dt, oxp)
        update_death(state, fld, t, dt, dprm, R_f=Rf, R_f0=Rf0.reshape(shape), R_s=Rs, R_s0=Rs0.reshape(shape))
        t += dt
    killed = np.count_nonzero(state == TissueState.OXIDATIVE_NECROSIS) * dV
    n_mol = sum(d.sum() for d in doses) * dV
    bound = stoichiometric_bound_volume(n_mol, lethal_clo2_per_m3(Rf0, Rs0, dprm, oxp))
    assert killed <= bound * (1 + 1e-9) + 1e-30


def test_stoichiometric_bound_is_reached_when_all_products_react():
    """Uniform tissue, fast pool only, no washout, long wait: every ClO2 removes 2.5 eq (ClO2 + HOCl + chlorite),
    so a dose 1 % above the lethal amount kills every voxel and the necrosis volume is 99 % of the bound."""
    n, dV = 5, 1e-9
    shape = (n, 1, 1)
    oxp = OxidantParams()
    dprm = DeathParams(fast_pool_threshold=0.5, tau_oxidative=0.0)
    Rf0 = np.full(shape, 10.0)
    lethal = lethal_clo2_per_m3(Rf0, None, dprm, oxp)                 # 0.5*10/2.5 = 2 mol/m^3
    assert np.allclose(lethal, 2.0)
    N = np.full(shape, 2.0 * 1.01)
    C, H, Rs = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    Rf = Rf0.copy()
    b = react_oxidant(N, C, H, Rf, Rs, 1.0, 0.0, 1e5, oxp)
    assert b["fast_pool_consumed"] == pytest.approx(2.5 * 2.02 * n, rel=1e-6)
    state = np.zeros(shape, dtype=np.int8)
    update_death(state, DeathFields.zeros(shape), 0.0, 1e5, dprm, R_f=Rf, R_f0=Rf0)
    killed = np.count_nonzero(state == TissueState.OXIDATIVE_NECROSIS) * dV
    bound = stoichiometric_bound_volume(2.02 * n * dV, lethal)
    assert killed == n * dV and killed / bound == pytest.approx(1 / 1.01, rel=1e-12)


def test_parallel_and_serial_paths_agree():
    rng = np.random.default_rng(5)
    shape = (20, 16, 16)                                   # >= 4096 voxels: prange driver
    theta = rng.uniform(0.1, 1, shape)
    w = rng.uniform(0, 1e-2, shape)
    Nb = rng.uniform(0, 0.8, shape) * theta
    omb = np.zeros(shape)
    wb = react_ethanol(Nb, theta, w, omb, 30.0)["ethanol_washout"]
    rng = np.random.default_rng(5)
    theta2 = rng.uniform(0.1, 1, shape)
    w2 = rng.uniform(0, 1e-2, shape)
    Ns = rng.uniform(0, 0.8, shape) * theta2
    oms = np.zeros(shape)
    ws = 0.0
    for i in range(shape[0]):
        n_i = np.ascontiguousarray(Ns[i:i + 1])
        o_i = np.zeros_like(n_i)
        ws += react_ethanol(n_i, theta2[i:i + 1], w2[i:i + 1], o_i, 30.0)["ethanol_washout"]
        Ns[i:i + 1] = n_i
        oms[i:i + 1] = o_i
    assert np.array_equal(Nb, Ns) and np.array_equal(omb, oms)
    assert wb == pytest.approx(ws, rel=1e-12)
    # death (serial kernel): whole array vs slabs
    Rf0 = rng.uniform(1, 10, shape)
    Rf = Rf0 * rng.uniform(0, 1, shape)
    p0 = np.full(shape, 1e-2)
    pf = p0 * rng.uniform(0, 1, shape)
    prm = DeathParams(tau_oxidative=600.0, ischemia_tolerance=1000.0)
    sb = np.zeros(shape, np.int8)
    fb = DeathFields.zeros(shape)
    ss = np.zeros(shape, np.int8)
    fs = DeathFields.zeros(shape)
    for k in range(5):
        update_death(sb, fb, 300.0 * k, 300.0, prm, R_f=Rf, R_f0=Rf0, omega=omb, perfusion=pf, perfusion0=p0)
        for i in range(shape[0]):
            sub = DeathFields(fs.committed[i:i + 1].copy(), fs.commit_time[i:i + 1].copy(),
                              fs.dead_fraction[i:i + 1].copy(), fs.fraction_by_cause[:, i:i + 1].copy(),
                              fs.ischemic_dose[i:i + 1].copy(), fs.death_time[i:i + 1].copy())
            st_i = ss[i:i + 1].copy()
            update_death(st_i, sub, 300.0 * k, 300.0, prm, R_f=Rf[i:i + 1], R_f0=Rf0[i:i + 1],
                         omega=omb[i:i + 1], perfusion=pf[i:i + 1], perfusion0=p0[i:i + 1])
            ss[i:i + 1] = st_i
            fs.committed[i:i + 1] = sub.committed
            fs.commit_time[i:i + 1] = sub.commit_time
            fs.dead_fraction[i:i + 1] = sub.dead_fraction
            fs.fraction_by_cause[:, i:i + 1] = sub.fraction_by_cause
            fs.ischemic_dose[i:i + 1] = sub.ischemic_dose
            fs.death_time[i:i + 1] = sub.death_time
    assert np.array_equal(sb, ss)
    assert len(set(np.unique(sb)) - {0}) >= 2                # several causes present
    for name in ("committed", "dead_fraction", "ischemic_dose"):
        assert np.array_equal(getattr(fb, name), getattr(fs, name))
    assert np.array_equal(fb.fraction_by_cause, fs.fraction_by_cause)
