"""Verification of the enthalpy Pennes solver: V2 (Pennes sphere), V3 (Neumann freezing), exact sinks, energy."""
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import erf, erfc

from tissuefate.physics.bioheat import (T0C, HeatProperties, HeatSolver, PhaseParams, SparseSinks, _h_of_t,
                                        _relax_exact, _t_of_h)


def _one_material(shape, C_f, C_u, L_f, L_v, k_u, k_f, phase):
    t = lambda v: np.array([0.0, v])  # noqa: E731
    return HeatProperties(material=np.ones(shape, np.uint8), C_f=t(C_f), C_u=t(C_u), L_f=t(L_f), L_v=t(L_v),
                          k_u=t(k_u), k_f=t(k_f), phase=phase)


def _order(errors, hs):
    return np.polyfit(np.log(hs), np.log(np.abs(errors)), 1)[0]


# ---------------------------------------------------------------------------------------------- V2
K_LIVER, WCB = 0.512, 6.4e-3 * 1000 * 4180      # parameters.md V2
C_LIVER = 1060 * 3600.0
A_SPHERE, T_SPHERE, T_ART = 1e-3, 90.0, 37.0
L_PENNES = np.sqrt(K_LIVER / WCB)


def _pennes_exact(r):
    return T_ART + (T_SPHERE - T_ART) * (A_SPHERE / r) * np.exp(-(r - A_SPHERE) / L_PENNES)


def _v2_run(h, half_width=12e-3):
    """Octant of the sphere problem (symmetry planes are the solver's zero-flux walls); voxels with centres
    inside r <= a are held at the analytic temperature (stiff probe sink), perfusion everywhere else."""
    n = int(round(half_width / h))
    shape = (n, n, n)
    x = (np.arange(n) + 0.5) * h
    r = np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2)
    props = _one_material(shape, C_LIVER, C_LIVER, 1e3, 1e9, K_LIVER, K_LIVER, PhaseParams(k_slope=0.0))
    T_init = _pennes_exact(np.maximum(r, 0.5 * h)) + T0C
    s = HeatSolver(props, (h, h, h), T_init)
    held = r <= A_SPHERE
    sp = SparseSinks.from_masks(shape, {"probe": (held, 1e10, T_init)})
    perf = np.where(held, 0.0, WCB)
    dt = 2.0 * (h / 0.5e-3) ** 2
    for _ in range(int(round(900.0 / dt))):   # > 6 perfusion time constants C/(w rho c) = 143 s
        s.step(dt, perfusion=perf, t_arterial=T0C + T_ART, sparse=sp)
    T = s.T - T0C
    line, rl = T[:, 0, 0], r[:, 0, 0]
    i = int(np.argmax(line < 50.0))
    r50 = rl[i - 1] + (50.0 - line[i - 1]) / (line[i] - line[i - 1]) * (rl[i] - rl[i - 1])
    sel = (r > A_SPHERE + h) & (r < 8e-3)
    return r50, float(np.abs(T[sel] - _pennes_exact(r[sel])).max()), s.energy_balance()["rel_error"]


def test_v2_pennes_sphere_isotherm_converges():
    r50_exact = brentq(lambda r: _pennes_exact(r) - 50.0, A_SPHERE, 10 * A_SPHERE)
    assert r50_exact == pytest.approx(2.74e-3, abs=0.005e-3)          # parameters.md V2: 2.74 mm
    hs = [0.5e-3, 0.35e-3, 0.25e-3]
    res = [_v2_run(h) for h in hs]
    iso_err = [(r - r50_exact) / r50_exact for r, _, _ in res]
    max_err = [m for _, m, _ in res]
    print("V2 h, r50 rel err, max |T err| K:", list(zip(hs, iso_err, max_err)))
    assert abs(iso_err[-1]) < 0.02                      # issue 4: within 2 % at 0.25 mm
    order = _order(max_err, hs)
    print("V2 order of max temperature error:", order)
    assert order > 1.5
    assert all(b < 1e-6 for _, _, b in res)


# ---------------------------------------------------------------------------------------------- V3
KS, KL = 2.0, 0.5                        # parameters.md D3 (frozen / unfrozen)
CS, CL = 998 * 1800.0, 1000 * 3600.0
LF = 250e6
TM, TWALL, TINIT = T0C - 0.5, T0C - 40.0, T0C + 37.0


def _neumann_lambda():
    a_s, a_l = KS / CS, KL / CL

    def f(lam):
        mu = lam * np.sqrt(a_s / a_l)
        return (KS * (TM - TWALL) * np.exp(-lam ** 2) / (erf(lam) * np.sqrt(np.pi * a_s))
                - KL * (TINIT - TM) * np.exp(-mu ** 2) / (erfc(mu) * np.sqrt(np.pi * a_l)) - LF * lam * np.sqrt(a_s))
    return brentq(f, 1e-6, 5.0), a_s


def _v3_front(h, t_end=600.0):
    n = int(round(30e-3 / h))
    shape = (n, 1, 1)
    ph = PhaseParams(t_solidus=TM - 0.05, t_liquidus=TM + 0.05, k_slope=0.0)
    s = HeatSolver(_one_material(shape, CS, CL, LF, 1e9, KL, KS, ph), (h, h, h), TINIT)
    wall = np.zeros(shape, bool)
    wall[0] = True                                          # x = 0 is the centre of the held voxel
    sp = SparseSinks.from_masks(shape, {"probe": (wall, 1e12, TWALL)})
    dt = 2.0 * (h / 1e-3) ** 2
    for _ in range(int(round(t_end / dt))):
        s.step(dt, sparse=sp)
    liq, _ = s.fractions()
    lq = liq[:, 0, 0]
    i = int(np.argmax(lq >= 0.5))
    return (i - 1 + (0.5 - lq[i - 1]) / (lq[i] - lq[i - 1])) * h, s.energy_balance()["rel_error"]


def test_v3_neumann_freezing_front_converges():
    lam, a_s = _neumann_lambda()
    s_exact = 2 * lam * np.sqrt(a_s * 600.0)
    hs = [1e-3, 0.5e-3, 0.25e-3]
    res = [_v3_front(h) for h in hs]
    errs = [(x - s_exact) / s_exact for x, _ in res]
    print("V3 exact front", s_exact * 1e3, "mm; h, rel err:", list(zip(hs, errs)))
    assert abs(errs[-1]) < 0.02
    order = _order(errs, hs)
    print("V3 order:", order)
    assert order > 0.9
    assert all(b < 1e-6 for _, b in res)


# ---------------------------------------------------------------------------------------------- exact sinks
def test_relaxation_through_phase_changes_is_exact():
    """A cryo-like sink pulling a warm voxel through the mushy zone to -100 degC: the piecewise-exact
    relaxation equals a very fine explicit integration of dH/dt = -beta (T(H) - T*)."""
    Cf, Cu, Lf, Lv = 1.8e6, 3.6e6, 250e6, 1.7e9
    Cd = 0.4 * Cu
    ph = PhaseParams()
    temps = (ph.t_solidus, ph.t_liquidus, ph.t_vapor_start, ph.t_vapor_end)
    for T_start, T_star in [(T0C + 37, T0C - 100), (T0C - 60, T0C + 37), (T0C + 90, T0C + 130), (T0C + 120, T0C + 20)]:
        H0 = _h_of_t(T_start, Cf, Cu, Cd, Lf, Lv, *temps)
        beta, dt = 2e5, 120.0
        H1 = _relax_exact(H0, beta, T_star, dt, Cf, Cu, Cd, Lf, Lv, *temps)
        H = H0
        n = 400000
        for _ in range(n):
            T = _t_of_h(H, Cf, Cu, Cd, Lf, Lv, *temps)[0]
            H -= beta * (T - T_star) * dt / n
        assert H1 == pytest.approx(H, rel=1e-4, abs=1e3)


def test_enthalpy_inverse_roundtrip():
    Cf, Cu, Lf, Lv = 1.8e6, 3.6e6, 250e6, 1.7e9
    ph = PhaseParams()
    temps = (ph.t_solidus, ph.t_liquidus, ph.t_vapor_start, ph.t_vapor_end)
    for T in np.linspace(T0C - 150, T0C + 150, 601):
        H = _h_of_t(T, Cf, Cu, 0.4 * Cu, Lf, Lv, *temps)
        assert _t_of_h(H, Cf, Cu, 0.4 * Cu, Lf, Lv, *temps)[0] == pytest.approx(T, abs=1e-9)


def test_energy_balance_with_sources_sinks_and_phase_change():
    rng = np.random.default_rng(3)
    shape = (24, 20, 18)
    mat = rng.integers(1, 3, size=shape).astype(np.uint8)
    mat[:, :, -2:] = 0                                      # air on top
    props = HeatProperties(material=mat, C_f=np.array([0, 1.8e6, 1.5e6]), C_u=np.array([0, 3.8e6, 2.1e6]),
                           L_f=np.array([0, 250e6, 60e6]), L_v=np.array([0, 1.6e9, 4e8]),
                           k_u=np.array([0, 0.5, 0.2]), k_f=np.array([0, 2.0, 0.3]), phase=PhaseParams())
    s = HeatSolver(props, (1e-3,) * 3, T0C + 37.0)
    q = np.zeros(shape)
    q[5:9, 5:9, 5:9] = 2e8                                  # boils
    cold = np.zeros(shape, bool)
    cold[15:18, 12:15, 4:12] = True                         # freezes
    vessel = np.zeros(shape, bool)
    vessel[:, 2, 2] = True
    top = np.zeros(shape, bool)
    top[:, :, -3] = True
    sp = SparseSinks.from_masks(shape, {"probe": (cold, 1e9, T0C - 150), "vessel": (vessel, 1e9, T0C + 37),
                                        "surface": (top, 1e4, T0C + 22)})
    perf = rng.uniform(0, 3e4, size=shape)
    t_hi, t_lo = -np.inf, np.inf
    for n in range(60):
        s.step(2.0, q_ext=q if n < 40 else None, q_met=np.full(shape, 400.0), perfusion=perf, sparse=sp)
        t_hi, t_lo = max(t_hi, s.T.max()), min(t_lo, s.T.min())
    bal = s.energy_balance()
    assert t_hi > T0C + 100 and t_lo < T0C - 40
    assert bal["rel_error"] < 1e-9
    for key in ("delivered", "metabolic", "perfusion", "probe", "vessel", "surface"):
        assert bal[key] != 0.0


def _advance_checked(s, dt, tol=3.0, **kw):
    """Sub-stepping as the thermal sessions do it: reject and halve when the enthalpy update left its branch."""
    remaining, h, rejected = dt, dt, 0
    while remaining > 1e-12:
        h = min(h, remaining)
        saved = s.save()
        s.step(h, **kw)
        if s.linearization_error > tol:
            s.restore(saved)
            h *= 0.5
            rejected += 1
            continue
        remaining -= h
        h = min(2 * h, dt)
    return rejected


def test_boiling_voxel_beside_cool_tissue_stays_bounded():
    """A voxel just inside the vaporisation plateau next to 40 degC tissue, one 60 s step. Without sources the
    temperature must stay within the initial range (maximum principle). The plain linearised update swings
    the voxel out of its plateau (flagged by linearization_error); the checked sub-stepping does not."""
    shape = (5, 5, 5)
    ph = PhaseParams()
    props = _one_material(shape, 1.8e6, 3.8e6, 250e6, 1.6e9, 0.5, 2.0, ph)
    T0 = np.full(shape, T0C + 40.0)
    T0[2, 2, 2] = T0C + 99.02
    plain = HeatSolver(props, (1e-3,) * 3, T0)
    plain.step(60.0)
    assert plain.linearization_error > 3.0
    checked = HeatSolver(props, (1e-3,) * 3, T0)
    rejected = _advance_checked(checked, 60.0)
    assert rejected >= 1
    assert checked.T.min() >= T0C + 40.0 - 1e-6 and checked.T.max() <= T0C + 99.02 + 1e-6
    assert abs(checked.energy_balance()["residual"]) < 1e-9 * abs(checked.H0_total)   # no sources: H conserved


# ---------------------------------------------------------------------------------------------- local correction
def test_local_correction_keeps_boiling_voxel_bounded_in_one_step():
    """The boiling-voxel case in one 60 s step with the local nonlinear correction: no rejection needed, the
    temperatures stay within 0.5 K of the initial range (the LOD splitting of such a long step is not exactly
    monotone) and within 1 K of a 0.02 s-step reference, and H is conserved to round-off (the plain
    linearised step swings the voxel to about -6 degC)."""
    shape = (5, 5, 5)
    props = _one_material(shape, 1.8e6, 3.8e6, 250e6, 1.6e9, 0.5, 2.0, PhaseParams())
    T0 = np.full(shape, T0C + 40.0)
    T0[2, 2, 2] = T0C + 99.02
    ref = HeatSolver(props, (1e-3,) * 3, T0)
    for _ in range(3000):
        ref.step(0.02, nonlinear_correction=True)
    s = HeatSolver(props, (1e-3,) * 3, T0)
    assert _advance_checked(s, 60.0, nonlinear_correction=True) == 0
    assert s.linearization_error < 1e-4
    assert s.correction_stats["half_steps"] >= 1
    assert s.T.min() >= T0C + 40.0 - 0.5 and s.T.max() <= T0C + 99.02
    assert abs(s.energy_balance()["residual"]) < 1e-12 * abs(s.H0_total)
    assert np.abs(s.T - ref.T).max() < 1.0


def _cooled_probe_case(dt, t_end=60.0, correct=True, tol=10.0, **phase):
    """A cooled probe (held at 10 degC by the stiff sink) inside a ring heated at 2e8 W/m^3 for 40 s, which boils
    beside it (an RFA electrode in miniature), then 20 s of cooling; perfused, 0.5 mm voxels."""
    shape = (10, 10, 8)
    h = 0.5e-3
    probe = np.zeros(shape, bool)
    probe[4:6, 4:6, 2:6] = True
    ring = np.zeros(shape, bool)
    ring[3:7, 3:7, 2:6] = True
    ring &= ~probe
    q = np.where(ring, 2e8, 0.0)
    props = _one_material(shape, 1.8e6, 3.8e6, 250e6, 1.6e9, 0.5, 2.0, PhaseParams(**phase))
    s = HeatSolver(props, (h,) * 3, T0C + 37.0)
    sp = SparseSinks.from_masks(shape, {"probe": (probe, 1e9, T0C + 10.0)})
    rejected, substeps, worst = 0, 0, 0.0
    for n in range(int(round(t_end / dt))):
        kw = dict(q_ext=q if n * dt < 40.0 else None, perfusion=np.full(shape, 2e4), sparse=sp,
                  nonlinear_correction=correct)
        remaining, hh = dt, dt
        while remaining > 1e-12:
            hh = min(hh, remaining)
            saved = s.save()
            s.step(hh, **kw)
            if s.linearization_error > tol:
                s.restore(saved)
                hh *= 0.5
                rejected += 1
                continue
            worst = max(worst, s.linearization_error)
            remaining -= hh
            substeps += 1
            hh = min(2 * hh, dt)
    return s, rejected, substeps, worst


def test_local_correction_replaces_rejections_beside_a_cooled_probe():
    """2 s steps of the boiling ring beside a cooled probe. The rejection scheme needs ~170 rejections and
    ~160 sub-steps; with the local correction every 2 s step is accepted as it is (30 sub-steps), the
    linearisation error left is < 1e-3 K (> 10 K without the correction), and the ledger (delivered = stored +
    perfusion + probe) closes to 1e-9. Against a 0.05 s-step reference the corrected 2 s steps are at least as
    accurate as the uncorrected ones (mean |dT| 2.3 K vs 2.9 K); the time error is first order (0.5 s steps:
    0.7 K). The rejection scheme's 1.9 K comes from its smaller sub-steps, at ~11x the cost."""
    ref, _, _, _ = _cooled_probe_case(0.05)
    old, rej_old, n_old, _ = _cooled_probe_case(2.0, correct=False)
    new, rej_new, n_new, worst = _cooled_probe_case(2.0)
    free, _, _, worst_free = _cooled_probe_case(2.0, correct=False, tol=np.inf)
    fine, rej_fine, _, _ = _cooled_probe_case(0.5)
    print("rejections", rej_old, "->", rej_new, "sub-steps", n_old, "->", n_new)
    assert rej_old > 50 and n_old > 100
    assert rej_new == 0 and n_new == 30 and rej_fine == 0
    assert worst < 1e-3 and worst_free > 10.0            # the uncorrected 2 s step swings by > 10 K
    for s in (old, new, fine):
        assert s.energy_balance()["rel_error"] < 1e-9
        assert s.ledger["probe"] > 0 and s.ledger["delivered"] > 0
    err = {k: np.abs(s.T - ref.T) for k, s in (("new", new), ("free", free), ("fine", fine), ("old", old))}
    print({k: (float(e.mean()), float(e.max())) for k, e in err.items()})
    assert err["new"].mean() < 2.8 and err["new"].max() < 5.0
    assert err["new"].mean() <= err["free"].mean() and err["new"].max() <= err["free"].max()
    assert err["fine"].mean() < 0.9 and err["fine"].max() < 1.3


def test_local_correction_conserves_energy_even_unconverged():
    """The corrected enthalpies are written in flux form from the last iterate, so the ledger closes to
    round-off even when the Gauss-Seidel iteration is cut after one sweep (its residual is then reported as
    linearisation error, and a caller would reject the step)."""
    one, _, _, worst1 = _cooled_probe_case(2.0, t_end=20.0, tol=np.inf, correction_max_sweeps=1)
    assert worst1 > 1e-3
    assert one.energy_balance()["rel_error"] < 1e-12
    full, _, _, worst = _cooled_probe_case(2.0, t_end=20.0, tol=np.inf, correct_crossings=True,
                                           correction_halo=1)
    assert worst < 1e-3 and full.energy_balance()["rel_error"] < 1e-12


def test_local_correction_on_the_neumann_front_with_long_steps():
    """V3 (Neumann freezing) at 0.5 mm with 10x the verification step: the correction (with every branch
    crossing corrected) keeps the front error of the plain scheme or improves it, and conserves energy."""
    lam, a_s = _neumann_lambda()
    s_exact = 2 * lam * np.sqrt(a_s * 600.0)

    def front(correct):
        h = 0.5e-3
        n = int(round(30e-3 / h))
        shape = (n, 1, 1)
        ph = PhaseParams(t_solidus=TM - 0.05, t_liquidus=TM + 0.05, k_slope=0.0, correct_crossings=True)
        s = HeatSolver(_one_material(shape, CS, CL, LF, 1e9, KL, KS, ph), (h, h, h), TINIT)
        wall = np.zeros(shape, bool)
        wall[0] = True
        sp = SparseSinks.from_masks(shape, {"probe": (wall, 1e12, TWALL)})
        worst = 0.0
        for _ in range(120):
            s.step(5.0, sparse=sp, nonlinear_correction=correct)
            worst = max(worst, s.linearization_error)
        lq = s.fractions()[0][:, 0, 0]
        i = int(np.argmax(lq >= 0.5))
        x = (i - 1 + (0.5 - lq[i - 1]) / (lq[i] - lq[i - 1])) * h
        return (x - s_exact) / s_exact, worst, s.energy_balance()["rel_error"]

    e_plain, w_plain, _ = front(False)
    e_corr, w_corr, bal = front(True)
    print("V3 5 s steps: front error plain", e_plain, "corrected", e_corr)
    assert w_plain > 10.0 and w_corr < 1e-4
    assert abs(e_corr) <= abs(e_plain) + 1e-3 and abs(e_corr) < 0.04
    assert bal < 1e-8


def test_source_beside_a_stiff_sink_has_the_exact_steady_state():
    """A voxel heated at q beside a voxel held at 10 degC (stiff probe sink), nothing else: the steady rise is
    q / G (G the face conductance per volume) for any step, because each backward-Euler conduction half step
    is preceded by its half of the source. (With the whole source between the half steps the rise was
    (1 + a) / (1 + a/2) q / G, a = G dt / (2 C): +21 % at 2 s.)"""
    shape, h = (2, 1, 1), 0.5e-3
    ph = PhaseParams(k_slope=0.0, t_vapor_start=T0C + 500.0, t_vapor_end=T0C + 501.0)
    props = _one_material(shape, 3.8e6, 3.8e6, 0.0, 1e3, 0.5, 0.5, ph)
    probe = np.zeros(shape, bool)
    probe[0] = True
    q = np.zeros(shape)
    q[1] = 2e7
    for dt in (4.0, 2.0, 0.5):
        s = HeatSolver(props, (h,) * 3, T0C + 10.0)
        sp = SparseSinks.from_masks(shape, {"probe": (probe, 1e9, T0C + 10.0)})
        for _ in range(int(2000.0 / dt)):
            s.step(dt, q_ext=q, sparse=sp)
        rise = (s.T[1, 0, 0] - s.T[0, 0, 0]) / (2e7 * h ** 2 / 0.5)
        assert rise == pytest.approx(1.0, abs=3e-3), dt
        assert s.energy_balance()["rel_error"] < 1e-9
