"""ClO2 chemistry kernel: V16 (NADH kinetics), V4 (reaction front), conservation, positivity, step independence."""
import numpy as np
import pytest
from scipy.linalg import solve_banded
from scipy.optimize import brentq
from scipy.special import erf

from tissuefate.physics.oxidant import PER_MOLAR, OxidantParams, react_oxidant


def fields(shape, nox=0.0, ncl=0.0, nh=0.0, rf=0.0, rs=0.0):
    return [np.full(shape, float(v)) for v in (nox, ncl, nh, rf, rs)]


# ---------------------------------------------------------------------------------------------
# V16: ClO2 + NADH, [NADH]0 >> [ClO2]0, k_obs = 3.9e6 M^-1 s^-1 * [NADH], 2 ClO2 per NADH
# Pool in equivalents R_s = 2 [NADH]; per-equivalent k = 3.9e6 / 2 so that k_s R_s = 3.9e6 [NADH].
# ---------------------------------------------------------------------------------------------
K_NADH = 3.9e6 * PER_MOLAR          # m^3/(mol s)
NADH_PARAMS = OxidantParams(k_clo2_fast=0.0, k_clo2_slow=K_NADH / 2.0, k_clo2_decay=0.0,
                            yield_chlorite_slow=1.0, yield_hocl_slow=0.0,
                            k_chlorite_fast=0.0, k_chlorite_slow=0.0)


def ab_exact(t, n0, r0, k):
    """ClO2 amount for dN/dt = dR/dt = -k N R (theta = 1, one equivalent per ClO2)."""
    d = r0 - n0
    return d * n0 / (r0 * np.exp(d * k * t) - n0)


def test_v16_step_much_longer_than_lifetime_gives_exact_consumption():
    nadh = 1.0                      # 1 mM
    n0 = 0.01                       # 10 uM ClO2
    k_obs = K_NADH * nadh           # 3.9e3 1/s, lifetime 0.26 ms
    N, C, H, Rf, Rs = fields((1, 1, 1), nox=n0, rs=2 * nadh)
    E = np.zeros((1, 1, 1))
    dt = 1.0                        # 3900 lifetimes
    b = react_oxidant(N, C, H, Rf, Rs, 1.0, 0.0, dt, NADH_PARAMS, exposure=E)
    assert N.item() < 1e-300 or N.item() / n0 < 1e-15
    assert b["clo2_consumed_slow"] == pytest.approx(n0, rel=1e-14)
    assert 2 * nadh - Rs.item() == pytest.approx(n0, rel=1e-12)       # 2 ClO2 per NADH: n0/2 NADH used
    assert C.item() == pytest.approx(n0, rel=1e-14)                    # one chlorite per ClO2
    # exposure: R = R0 exp(-k E) exactly
    assert E.item() == pytest.approx(np.log(2 * nadh / (2 * nadh - n0)) / (K_NADH / 2), rel=1e-12)
    # a single non-adaptive sub-step (backward-Euler limit of the closure) leaves only a tiny residue,
    # O(depletion nonlinearity / (k_obs dt)), which the next step consumes
    N, C, H, Rf, Rs = fields((1, 1, 1), nox=n0, rs=2 * nadh)
    react_oxidant(N, C, H, Rf, Rs, 1.0, 0.0, dt, OxidantParams(**{**NADH_PARAMS.as_dict(), "adaptive": False}))
    assert 2 * nadh - Rs.item() == pytest.approx(n0, rel=1e-5)
    assert N.item() + C.item() == pytest.approx(n0, rel=1e-14)
    assert k_obs * dt > 1000


def test_v16_resolved_decay_matches_kobs_and_order():
    nadh = 1.0
    k_obs = K_NADH * nadh
    T = 3.0 / k_obs
    # (a) pseudo-first-order: [ClO2]0 = 1 uM << 2 mM equivalents; resolved steps follow exp(-k_obs t)
    n0 = 1e-3
    p1 = OxidantParams(**{**NADH_PARAMS.as_dict(), "adaptive": False})
    N, C, H, Rf, Rs = fields((1, 1, 1), nox=n0, rs=2 * nadh)
    nstep = 30
    ts, ys = [], []
    for i in range(nstep):
        react_oxidant(N, C, H, Rf, Rs, 1.0, 0.0, T / nstep, p1)
        ts.append((i + 1) * T / nstep)
        ys.append(N.item())
    rel = np.abs(np.array(ys) / (n0 * np.exp(-k_obs * np.array(ts))) - 1.0)
    assert rel.max() < 2e-3           # depletion of NADH (n0/R0 = 5e-4) is the only deviation
    ab = ab_exact(np.array(ts), n0, 2 * nadh, K_NADH / 2)
    assert np.abs(np.array(ys) / ab - 1).max() < 1e-6
    # (b) order of the integrator against the exact A + B solution (5 % depletion, so it is nonlinear)
    n0 = 0.05
    errs = []
    for nstep in (4, 8, 16, 32):
        N, C, H, Rf, Rs = fields((1, 1, 1), nox=n0, rs=2 * nadh)
        for _ in range(nstep):
            react_oxidant(N, C, H, Rf, Rs, 1.0, 0.0, T / nstep, p1)
        errs.append(abs(N.item() / ab_exact(T, n0, 2 * nadh, K_NADH / 2) - 1.0))
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    print("V16 errors", errs, "orders", orders)
    assert errs[-1] < 2e-5
    assert orders[-1] > 1.9 and orders[-2] > 1.8
    # (c) adaptive mode with one call reaches the tolerance whatever the caller's step
    N, C, H, Rf, Rs = fields((1, 1, 1), nox=n0, rs=2 * nadh)
    react_oxidant(N, C, H, Rf, Rs, 1.0, 0.0, T, OxidantParams(**{**NADH_PARAMS.as_dict(), "rtol": 1e-8}))
    assert N.item() / ab_exact(T, n0, 2 * nadh, K_NADH / 2) - 1 == pytest.approx(0.0, abs=1e-6)


def test_linear_decay_and_washout_exact_in_one_step():
    # no pools: dN/dt = -(w/theta + k_d) N is linear, so one sub-step of any length is exact
    theta, w, kd = 0.3, 2e-3, 1e-3
    p = OxidantParams(k_clo2_decay=kd, adaptive=False)
    for dt in (0.1, 10.0, 1e4):
        N, C, H, Rf, Rs = fields((1, 1, 1), nox=2.0)
        b = react_oxidant(N, C, H, Rf, Rs, theta, w, dt, p)
        kap = w / theta + kd
        assert N.item() == pytest.approx(2.0 * np.exp(-kap * dt), rel=1e-12, abs=1e-15)
        assert b["clo2_washout"] == pytest.approx(-2.0 * np.expm1(-kap * dt) * (w / theta) / kap, rel=1e-12)
        assert b["clo2_decayed"] == pytest.approx(-2.0 * np.expm1(-kap * dt) * kd / kap, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# V4: 1-D ClO2 front into an immobile consumable
# ---------------------------------------------------------------------------------------------
V4_PARAMS = OxidantParams(k_clo2_fast=5e6 * PER_MOLAR, k_clo2_slow=0.0, k_clo2_decay=0.0,
                          yield_chlorite_fast=1.0, yield_hocl_fast=0.0,
                          k_chlorite_fast=0.0, k_chlorite_slow=0.0)


def front_1d(nx, D, C0, cap, t_out, L, r=10.0):
    """Backward-Euler conservative diffusion (surface held at C0 half a cell outside voxel 0, no flux at L),
    Lie-split with react_oxidant on an (nx, 1, 1) row.  Front = consumed capacity / capacity."""
    dx = L / nx
    t_end = max(t_out)
    nt = int(np.ceil(t_end / (r * dx * dx / D)))
    dt = t_end / nt
    a = D * dt / dx**2
    ab = np.zeros((3, nx))
    ab[0, 1:] = -a
    ab[2, :-1] = -a
    ab[1, :] = 1 + 2 * a
    ab[1, 0] = 1 + 3 * a       # Dirichlet face at distance dx/2: conductance 2a
    ab[1, -1] = 1 + a
    N, C, H, Rf, Rs = fields((nx, 1, 1), rf=cap)
    influx = 0.0
    booked = 0.0
    out = {}
    marks = {int(round(t / dt)): t for t in t_out}
    for it in range(1, nt + 1):
        rhs = N[:, 0, 0].copy()
        rhs[0] += 2 * a * C0
        new = solve_banded((1, 1), ab, rhs)
        influx += 2 * a * (C0 - new[0]) * dx      # mol per m^2
        N[:, 0, 0] = new
        b = react_oxidant(N, C, H, Rf, Rs, 1.0, 0.0, dt, V4_PARAMS)
        booked += b["clo2_consumed_fast"] * dx
        if it in marks:
            out[marks[it]] = float(np.sum(cap - Rf) * dx / cap)
    # ledger: ClO2 in = stock + consumed
    assert influx == pytest.approx(N.sum() * dx + booked, rel=1e-10)
    return out


def stefan_front(D, C0, cap, t):
    beta = C0 / cap
    lam = brentq(lambda x: x * np.exp(x * x) * erf(x) - beta / np.sqrt(np.pi), 1e-9, 3.0)
    return 2 * lam * np.sqrt(D * t)


def test_v4_front_position_convergence_and_noszticzius():
    D, C0, cap, T = 1.5e-9, 4.45, 240.0, 180.0       # 300 ppm, 0.24 M capacity, 3 min
    L = 0.3e-3
    times = (45.0, 90.0, 180.0)
    grids = (40, 80, 160)
    res = {nx: front_1d(nx, D, C0, cap, times, L) for nx in grids}
    x_exact = stefan_front(D, C0, cap, T)
    errs = [abs(res[nx][T] / x_exact - 1) for nx in grids]
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    print("V4 x_f(180 s) [mm]:", {nx: res[nx][T] * 1e3 for nx in res}, "exact", x_exact * 1e3,
          "errors", errs, "orders", orders)
    assert orders.min() > 1.8                          # measured 1.98, 2.02
    assert errs[-1] < 2e-3
    for t in times:                                   # sqrt law on the finest grid
        x_formula = np.sqrt(2 * D * C0 * t / cap)
        assert res[grids[-1]][t] == pytest.approx(x_formula, rel=0.02)
    # Noszticzius 2013: 300 ppm, a few minutes -> penetration below 0.1 mm with ~0.24 M capacity
    assert res[grids[-1]][T] < 1.0e-4


# ---------------------------------------------------------------------------------------------
# conservation, non-negativity, step independence
# ---------------------------------------------------------------------------------------------
def random_params(rng):
    yc = rng.uniform(0, 1)
    yh = rng.uniform(0, 1 - yc)
    return OxidantParams(
        k_clo2_fast=10 ** rng.uniform(1, 5), k_clo2_slow=10 ** rng.uniform(0, 3),
        k_clo2_decay=10 ** rng.uniform(-7, -2), yield_chlorite_fast=yc, yield_hocl_fast=yh,
        yield_chlorite_slow=rng.uniform(0, 0.6), yield_hocl_slow=rng.uniform(0, 0.4),
        yield_chlorite_decay=rng.uniform(0, 1), k_hocl_fast=10 ** rng.uniform(2, 5),
        k_hocl_slow=10 ** rng.uniform(-2, 2), nu_hocl=rng.uniform(0.5, 2),
        k_chlorite_fast=10 ** rng.uniform(-4, 0), k_chlorite_slow=10 ** rng.uniform(-5, -2),
        nu_chlorite=rng.uniform(1, 4))


@pytest.mark.parametrize("seed", range(6))
def test_conservation_and_nonnegativity_random(seed):
    rng = np.random.default_rng(seed)
    shape = (7, 5, 3)
    params = OxidantParams() if seed == 0 else random_params(rng)
    # spans pool-rich, balanced and exhausted voxels, zero pools and zero oxidant
    N = rng.uniform(0, 50, shape) * (rng.random(shape) < 0.8)
    C = rng.uniform(0, 10, shape) * (rng.random(shape) < 0.5)
    H = rng.uniform(0, 5, shape) * (rng.random(shape) < 0.5)
    Rf = rng.uniform(0, 20, shape) * (rng.random(shape) < 0.9)
    Rs = rng.uniform(0, 300, shape) * (rng.random(shape) < 0.9)
    theta = rng.uniform(0.05, 1.0, shape)
    w = rng.uniform(0, 1e-2, shape)
    E = np.zeros(shape)
    for dt in (1e-4, 0.1, 5.0, 600.0):
        before = [a.copy() for a in (N, C, H, Rf, Rs)]
        E0 = E.sum()
        b = react_oxidant(N, C, H, Rf, Rs, theta, w, dt, params, exposure=E)
        for a in (N, C, H, Rf, Rs, E):
            assert np.all(a >= 0.0) and np.all(np.isfinite(a))
        scale = sum(x.sum() for x in before)
        d = [a.sum() - a0.sum() for a, a0 in zip((N, C, H, Rf, Rs), before)]
        assert d[0] == pytest.approx(-(b["clo2_consumed_fast"] + b["clo2_consumed_slow"] + b["clo2_decayed"]
                                       + b["clo2_washout"]), abs=1e-12 * scale)
        assert d[1] == pytest.approx(b["chlorite_produced"] - b["chlorite_consumed_fast"]
                                     - b["chlorite_consumed_slow"] - b["chlorite_washout"], abs=1e-12 * scale)
        assert d[2] == pytest.approx(b["hocl_produced"] - b["hocl_consumed_fast"] - b["hocl_consumed_slow"]
                                     - b["hocl_washout"], abs=1e-12 * scale)
        assert d[3] == pytest.approx(-b["fast_pool_consumed"], abs=1e-12 * scale)
        assert d[4] == pytest.approx(-b["slow_pool_consumed"], abs=1e-12 * scale)
        # pool equivalents = sum over oxidants of nu * consumed
        assert b["fast_pool_consumed"] == pytest.approx(
            params.nu_clo2 * b["clo2_consumed_fast"] + params.nu_hocl * b["hocl_consumed_fast"]
            + params.nu_chlorite * b["chlorite_consumed_fast"], abs=1e-12 * scale)
        # chlorine atoms: ClO2 lost = chlorite + HOCl made + other (chloride/chlorate)
        lost = b["clo2_consumed_fast"] + b["clo2_consumed_slow"] + b["clo2_decayed"]
        assert lost == pytest.approx(b["chlorite_produced"] + b["hocl_produced"] + b["clo2_to_other"],
                                     abs=1e-12 * scale)
        assert b["substep_cap_hits"] == 0
        assert E.sum() - E0 == pytest.approx(b["clo2_exposure_sum"], rel=1e-12, abs=1e-300)


def test_extreme_inputs_stay_nonnegative():
    p = OxidantParams()
    N = np.array([1e3, 1e-30, 5.0, 0.0, 1e2]).reshape(5, 1, 1)
    C = np.array([0.0, 0.0, 1e3, 1e-3, 0.0]).reshape(5, 1, 1)
    H = np.array([0.0, 1e3, 0.0, 0.0, 1e2]).reshape(5, 1, 1)
    Rf = np.array([1e-12, 5.0, 0.0, 10.0, 1e6]).reshape(5, 1, 1)
    Rs = np.array([0.0, 200.0, 0.0, 1e-300, 1e6]).reshape(5, 1, 1)
    theta = np.array([1e-6, 0.2, 1.0, 0.5, 0.01]).reshape(5, 1, 1)
    for dt in (1e-9, 1.0, 1e6):
        react_oxidant(N, C, H, Rf, Rs, theta, 1e-2, dt, p)
        for a in (N, C, H, Rf, Rs):
            assert np.all(a >= 0) and np.all(np.isfinite(a))


def reference_ode(y0, theta, w, T, p):
    """Independent reference: the original ODE system with LSODA at tight tolerances."""
    from scipy.integrate import solve_ivp

    def f(t, y):
        nox, ncl, nh, rf, rs, _ = y
        cox, ccl, ch = nox / theta, ncl / theta, nh / theta
        rof, ros = p.k_clo2_fast * cox * rf, p.k_clo2_slow * cox * rs
        dec = p.k_clo2_decay * nox
        rhf, rhs = p.k_hocl_fast * ch * rf, p.k_hocl_slow * ch * rs
        rcf, rcs = p.k_chlorite_fast * ccl * rf, p.k_chlorite_slow * ccl * rs
        return [-rof - ros - dec - w * cox,
                p.yield_chlorite_fast * rof + p.yield_chlorite_slow * ros + p.yield_chlorite_decay * dec
                - rcf - rcs - w * ccl,
                p.yield_hocl_fast * rof + p.yield_hocl_slow * ros - rhf - rhs - w * ch,
                -(p.nu_clo2 * rof + p.nu_hocl * rhf + p.nu_chlorite * rcf),
                -(p.nu_clo2 * ros + p.nu_hocl * rhs + p.nu_chlorite * rcs),
                cox]

    sol = solve_ivp(f, (0.0, T), list(y0) + [0.0], method="LSODA", rtol=1e-11, atol=1e-14)
    return sol.y[:, -1]


def test_exhaustion_with_competition_matches_reference_whatever_the_step():
    """ClO2 (30 mM) exhausts both pools (8 + 20 eq) while its HOCl competes for them; washout for 60 s.
    One call of 60 s and 600 calls of 0.1 s both match an independent stiff ODE solution."""
    p = OxidantParams()
    theta, w, T = 0.4, 5e-3, 60.0
    y0 = (30.0, 1.0, 0.0, 8.0, 20.0)
    ref = reference_ode(y0, theta, w, T, p)

    def run(nsteps):
        N, C, H, Rf, Rs = fields((1, 1, 1), *y0)
        E = np.zeros((1, 1, 1))
        sub = 0.0
        for _ in range(nsteps):
            sub += react_oxidant(N, C, H, Rf, Rs, theta, w, T / nsteps, p, exposure=E)["substeps"]
        return np.array([N.item(), C.item(), H.item(), E.item()]), sub

    for n in (1, 600):
        y, sub = run(n)
        err = np.abs(y / ref[[0, 1, 2, 5]] - 1).max()
        print("exhaustion case", n, "calls: max rel error", err, "sub-steps", sub)
        assert err < 1e-4
    # without resolving the exhaustion transient the stage order would decide the partition
    N, C, H, Rf, Rs = fields((1, 1, 1), *y0)
    react_oxidant(N, C, H, Rf, Rs, theta, w, T, OxidantParams(max_pool_change=1e9))
    assert abs(N.item() / ref[0] - 1) > 0.1


def test_parallel_and_serial_paths_agree():
    """Arrays >= 4096 voxels go through the prange driver; the same voxels in small pieces run serially."""
    rng = np.random.default_rng(11)
    shape = (20, 16, 16)                                   # 5120 voxels
    y = [rng.uniform(0, 40, shape) * (rng.random(shape) < 0.7), rng.uniform(0, 5, shape),
         rng.uniform(0, 5, shape), rng.uniform(0, 20, shape), rng.uniform(0, 250, shape)]
    theta = rng.uniform(0.1, 1, shape)
    w = rng.uniform(0, 1e-2, shape)
    big = [a.copy() for a in y]
    Eb = np.zeros(shape)
    bb = react_oxidant(*big, theta, w, 2.0, exposure=Eb)
    small = [a.copy() for a in y]
    Es = np.zeros(shape)
    tot = {}
    for i in range(shape[0]):
        sl = [np.ascontiguousarray(a[i:i + 1]) for a in small]
        e = np.zeros_like(sl[0])
        b = react_oxidant(*sl, theta[i:i + 1], w[i:i + 1], 2.0, exposure=e)
        for a, s_ in zip(small, sl):
            a[i:i + 1] = s_
        Es[i:i + 1] = e
        for k, v in b.items():
            tot[k] = tot.get(k, 0.0) + v
    for a, b_ in zip(big, small):
        assert np.array_equal(a, b_)
    assert np.array_equal(Eb, Es)
    for k in ("clo2_consumed_fast", "clo2_consumed_slow", "hocl_consumed_fast", "fast_pool_consumed",
              "slow_pool_consumed", "chlorite_washout"):
        assert bb[k] == pytest.approx(tot[k], rel=1e-12)
