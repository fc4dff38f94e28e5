"""ClO2 chemistry per voxel: the reaction half of the operator split (transport is done elsewhere).

Reads / writes (float64 arrays of ``grid.shape``, C-contiguous, updated **in place**):

* ``N_ox``   ClO2 amount per tissue volume                           [mol/m^3 tissue]
* ``N_cl``   chlorite ClO2^- amount per tissue volume                [mol/m^3 tissue]
* ``N_hocl`` HOCl/OCl^- (free available chlorine) per tissue volume  [mol/m^3 tissue]
* ``R_f``    fast reductive pool (GSH, protein thiols), immobile      [mol ClO2-equivalents/m^3 tissue]
* ``R_s``    slow reductive pool (Tyr, Trp, NADH, Fe-S, lipids)       [mol ClO2-equivalents/m^3 tissue]
* ``exposure`` (optional) ClO2 exposure  E = integral of c_ox dt       [mol s/m^3 liquid]

Reads only: ``theta`` (mobile-liquid fraction, -), ``washout`` w (perfusion, 1/s); scalars or per-voxel arrays.

Equations (liquid concentration c_X = N_X / theta; all rates per tissue volume)::

    dN_ox/dt = -(k_of R_f + k_os R_s) c_ox - k_d N_ox - w c_ox
    dN_cl/dt = +(y_cf k_of R_f + y_cs k_os R_s) c_ox + y_d k_d N_ox - (k_cf R_f + k_cs R_s) c_cl - w c_cl
    dN_h/dt  = +(y_hf k_of R_f + y_hs k_os R_s) c_ox                - (k_hf R_f + k_hs R_s) c_h  - w c_h
    dR_f/dt  = -(nu_ox k_of c_ox + nu_cl k_cf c_cl + nu_h k_hf c_h) R_f
    dR_s/dt  = -(nu_ox k_os c_ox + nu_cl k_cs c_cl + nu_h k_hs c_h) R_s

Pool units: one *ClO2-equivalent* is the amount of pool that consumes one ClO2 molecule in the primary
reaction (``nu_ox = 1``).  With the default product yields (1/2 chlorite, 1 e-; 1/2 HOCl, 3 e-) one ClO2
takes 2 electrons on average, so one equivalent = 2 electrons; HOCl -> Cl^- (2 e-) is then ``nu_h = 1``
equivalent and chlorite -> Cl^- (4 e-) ``nu_cl = 2`` equivalents.  Rate constants are per equivalent:
a reductant that consumes nu ClO2 per molecule with observed ClO2 decay constant k_obs = k_mol [Red]
enters with R = nu [Red] and k = k_mol / nu.

Washout convention (Kety, flow-limited, venous blood in equilibrium with the mobile liquid): the loss
is ``w * c`` per tissue volume (not ``w * N``), i.e. the first-order rate constant of N is ``w / theta``.
This is the ``- k_wash c`` term of injection.md section 6.2(D).  ClO2 self-decay is first order in the
amount, ``k_d N_ox = k_d theta c_ox``.

Integrator (per voxel, never by shrinking the caller's step); four ingredients make it exact where it
matters and conservative by construction:

1. For one oxidant X acting alone over a sub-step, each pool depends only on the exposure
   e_X = integral of c_X dt:  R_P(e) = R_P0 exp(-nu_X k_XP e), so the pool consumption
   D_P = R_P0 (1 - exp(-nu_X k_XP e)) and the oxidant consumed D_P / nu_X are exact functions of e,
   whatever the shape of c_X(t).  Linear losses (washout, decay) are exactly lambda * e.
2. The exposure is closed by the exponentially fitted quadrature
   ``theta e = h [(1 - a) N1 + a N0]`` with ``a = 1/z - 1/(exp(z) - 1)``, ``z = kappa0 h`` and
   ``kappa0 = (k_XP R_P0 + lambda) / theta`` the largest (start-of-step) decay rate.  It is exact for
   a linear problem with constant rate and constant source (pseudo-first-order kinetics: any step
   size gives the exact answer), reduces to the trapezoidal rule (2nd order) for z -> 0 and to backward
   Euler for z -> oo (L-stable: a step far longer than the ClO2 lifetime consumes what stoichiometry
   allows; the consumption, not a rate, sets how far the front moves).  The scalar equation F(e) = 0 is concave and increasing, so Newton from
   e = 0 converges monotonically from below; with kappa0 as the rate one can show N1 >= 0.
3. The oxidants are coupled by Strang splitting inside a sub-step h: ClO2(h/2), HOCl(h/2), chlorite(h),
   HOCl(h/2), ClO2(h/2); products of a ClO2 stage are added to HOCl / chlorite at once.
4. Sub-steps are chosen per voxel: (a) while the oxidant present could remove more than a fraction
   ``max_pool_change`` of a pool and at least two oxidants compete for it (HOCl / chlorite counted with
   what the ClO2 present will make), a sub-step may remove at most that fraction (h <= eta / sum nu k c);
   this resolves the us-scale exhaustion transient in which ClO2 and the HOCl it makes compete for the
   same pool (without it the stage order, not the kinetics, would decide the partition: 35 % error in
   the test case); (b) step doubling (one step h vs two steps h/2, the two-half result is kept, error
   relative to ``rtol``).  Pseudo-first-order voxels (oxidant << pool, the bulk of the tissue) finish in
   one sub-step and are exact; a voxel whose pools are being exhausted takes ~100-300 sub-steps, once.
   Pools below rtol x (voxel total) no longer restrict the step.

Every change of every N and R is the sum of booked amounts (consumed by each pool, decayed, washed out,
produced), so the booked totals equal the change of the fields to round-off, and N, R >= 0 always.

Numba: the per-voxel loop is ``@njit(cache=True)``; arrays of >= 4096 voxels go through a
``@njit(parallel=True)`` prange driver over 256 fixed chunks (deterministic sums, thread-count independent),
smaller arrays run serially (bit-identical).  No allocation in the voxel loop.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit, prange

from tissuefate.numerics.arrays import scalar_or_field

PER_MOLAR = 1.0e-3
"""Multiply a rate constant in M^-1 s^-1 by this to get m^3/(mol s) (1 M = 1000 mol/m^3)."""

BOOK_KEYS = (
    "clo2_consumed_fast",      # mol ClO2 /m^3 (summed over voxels) reduced by the fast pool
    "clo2_consumed_slow",      # ... by the slow pool
    "clo2_decayed",            # self-decay
    "clo2_washout",            # carried away by perfusion
    "hocl_consumed_fast",
    "hocl_consumed_slow",
    "hocl_washout",
    "chlorite_consumed_fast",
    "chlorite_consumed_slow",
    "chlorite_washout",
    "chlorite_produced",       # from ClO2 + pools and from ClO2 decay
    "hocl_produced",           # from ClO2 + pools
    "fast_pool_consumed",      # ClO2-equivalents
    "slow_pool_consumed",
    "clo2_exposure_sum",       # sum over voxels of the exposure increment (mol s/m^3)
    "substeps",                # diagnostics: accepted sub-steps, summed over voxels
    "substep_cap_hits",        # voxels that reached max_substeps (accuracy not guaranteed there)
    "max_substeps_voxel",      # largest number of sub-steps in one voxel (max, not a sum)
)
_NB = len(BOOK_KEYS)
_NCHUNK = 256
_SERIAL_BELOW = 4096


@dataclass(frozen=True)
class OxidantParams:
    """Rate constants (SI: m^3/(mol s) = M^-1 s^-1 / 1000), yields and integrator settings.

    Tags as in /work/shared/science/parameters.md: [V] read in source, [R] attributed, [D] derived,
    [H] hypothesis of this model (range given).  ``eq`` = ClO2-equivalent of reductive pool.

    ======================  ========  ================  ==========================================================
    field                   default   unit              source / hypothesis (range)
    ======================  ========  ================  ==========================================================
    k_clo2_fast             5.0e3     m^3/(mol s)       5e6 M^-1 s^-1 per eq; [D] A1: apparent GSH ~2-5e6, Cys ~1e7
                                                        at pH 7.4 from thiolate k ~1e8 [R] (range 1e3-1e5 SI)
    k_clo2_slow             3.0e2     m^3/(mol s)       3e5 M^-1 s^-1 per eq; [H] mix of Tyr apparent 3.6e5 [D],
                                                        NADH 3.9e6 [V] (1.95e6 per eq), Trp 3.4e4 [R]
                                                        (range 30-4e3 SI)
    k_clo2_decay            1.0e-6    1/s               [H] self-decay negligible at pH 7.4 (Odeh 2002 [V] qualitative,
                                                        rate constants [NF]) (range 0-1e-4)
    yield_chlorite_fast     0.5       mol/mol ClO2      [H] complement of the HOCl yield (range 0.3-1)
    yield_hocl_fast         0.5       mol/mol ClO2      [V] ~50 % FAC from ClO2 + GSH, Juette 2024 (range 0-0.5)
    yield_chlorite_slow     0.5       mol/mol ClO2      [V] Tyr: 2 ClO2/Tyr, 1st step ClO2^-, 2nd HOCl (Napolitano
                                                        2005); NADH gives 1.0 (range 0.5-1)
    yield_hocl_slow         0.5       mol/mol ClO2      [V] as above (range 0-0.5)
    yield_chlorite_decay    0.5       mol/mol ClO2      [V] qualitative: ClO2^-:ClO3^- 1:1 (mM path) or only ClO2^-
                                                        (uM path), Odeh 2002 (range 0.5-1)
    nu_clo2                 1.0       eq/mol            definition of the pool unit (brief); keep 1
    k_hocl_fast             1.0e4     m^3/(mol s)       1e7 M^-1 s^-1 [H] (range 1e3-1e5 SI)
    k_hocl_slow             0.0       m^3/(mol s)       [H] HOCl's other targets (Met, amines) are outside the ClO2
                                                        pools (range 0-1e2 SI)
    nu_hocl                 1.0       eq/mol            [D] 2-electron oxidant, 1 eq = 2 e- with default yields
                                                        (range 1-2)
    k_chlorite_fast         1.0e-2    m^3/(mol s)       10 M^-1 s^-1 [H]: "much slower than ClO2, acid-assisted"
                                                        [R] Ison 2006, k [NF] (range 1e-4-1 SI)
    k_chlorite_slow         1.0e-4    m^3/(mol s)       0.1 M^-1 s^-1 [H] (range 0-1e-2 SI)
    nu_chlorite             2.0       eq/mol            [D] 4-electron oxidant to Cl^- (range 2-4)
    rtol                    1e-4      -                 sub-step control (step doubling), numerical
    atol_frac               1e-3      -                 error floor as a fraction of the voxel's total amounts
    adaptive                True      -                 False: exactly one sub-step per call (order studies
                                                        only: stiff competition is then not resolved)
    max_substeps            100000    -                 attempts per voxel per call; hits are reported
    max_pool_change         0.3       -                 largest fraction of a pool one sub-step may remove
                                                        while the oxidant present could remove more
    ======================  ========  ================  ==========================================================
    """

    k_clo2_fast: float = 5.0e6 * PER_MOLAR
    k_clo2_slow: float = 3.0e5 * PER_MOLAR
    k_clo2_decay: float = 1.0e-6
    yield_chlorite_fast: float = 0.5
    yield_hocl_fast: float = 0.5
    yield_chlorite_slow: float = 0.5
    yield_hocl_slow: float = 0.5
    yield_chlorite_decay: float = 0.5
    nu_clo2: float = 1.0
    k_hocl_fast: float = 1.0e7 * PER_MOLAR
    k_hocl_slow: float = 0.0
    nu_hocl: float = 1.0
    k_chlorite_fast: float = 10.0 * PER_MOLAR
    k_chlorite_slow: float = 0.1 * PER_MOLAR
    nu_chlorite: float = 2.0
    rtol: float = 1e-4
    atol_frac: float = 1e-3
    adaptive: bool = True
    max_substeps: int = 100000
    max_pool_change: float = 0.3

    def __post_init__(self):
        for name in ("k_clo2_fast", "k_clo2_slow", "k_clo2_decay", "k_hocl_fast", "k_hocl_slow",
                     "k_chlorite_fast", "k_chlorite_slow"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("nu_clo2", "nu_hocl", "nu_chlorite"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be > 0")
        for p in ("fast", "slow"):
            yc, yh = getattr(self, f"yield_chlorite_{p}"), getattr(self, f"yield_hocl_{p}")
            if yc < 0 or yh < 0 or yc + yh > 1.0 + 1e-12:
                raise ValueError(f"yields of the {p} pathway must be >= 0 with sum <= 1")
        if not 0.0 <= self.yield_chlorite_decay <= 1.0:
            raise ValueError("yield_chlorite_decay must be in [0, 1]")
        if not (self.rtol > 0 and self.atol_frac > 0 and self.max_substeps >= 1 and self.max_pool_change > 0):
            raise ValueError("bad integrator settings")

    def max_equivalents_per_clo2(self) -> float:
        """Most pool equivalents one ClO2 molecule can remove, counting its products (HOCl, chlorite).

        = max over pathways of nu_ox + y_cl nu_cl + y_h nu_h (default 1 + 0.5*2 + 0.5*1 = 2.5,
        i.e. 5 electrons at 2 e-/eq: ClO2 -> Cl^-).  Used for the stoichiometric bound.
        """
        per_pool = [self.nu_clo2 + getattr(self, f"yield_chlorite_{p}") * self.nu_chlorite
                    + getattr(self, f"yield_hocl_{p}") * self.nu_hocl for p in ("fast", "slow")]
        return float(max(max(per_pool), self.yield_chlorite_decay * self.nu_chlorite))

    def as_dict(self) -> dict:
        return asdict(self)

    def _vector(self) -> np.ndarray:
        return np.array([
            self.k_clo2_fast, self.k_clo2_slow, self.k_clo2_decay,                      # 0 1 2
            self.yield_chlorite_fast, self.yield_hocl_fast,                             # 3 4
            self.yield_chlorite_slow, self.yield_hocl_slow, self.yield_chlorite_decay,  # 5 6 7
            self.nu_clo2,                                                               # 8
            self.k_hocl_fast, self.k_hocl_slow, self.nu_hocl,                           # 9 10 11
            self.k_chlorite_fast, self.k_chlorite_slow, self.nu_chlorite,               # 12 13 14
            self.rtol, self.atol_frac, 1.0 if self.adaptive else 0.0, float(self.max_substeps),  # 15-18
            self.max_pool_change, self.max_equivalents_per_clo2(),                     # 19 20
        ], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# scalar building blocks
# ----------------------------------------------------------------------------------------------
@njit(cache=True)
def _alpha(z):
    """a(z) = 1/z - 1/(e^z - 1): weight of N0 in the exact exposure of dN/dt = P - kappa N over z = kappa h."""
    if z < 0.1:
        z2 = z * z
        return 0.5 - z / 12.0 + z * z2 / 720.0 - z * z2 * z2 / 30240.0 + z * z2 * z2 * z2 / 1209600.0
    if z > 40.0:
        return 1.0 / z
    return 1.0 / z - 1.0 / math.expm1(z)


@njit(cache=True)
def _stage(N0, S, Rf, Rs, kf, ks, nu, lam, theta, h):
    """One oxidant acting alone on both pools for a time h (source S spread uniformly over h).

    Returns (e, Df, Ds, L, N1): exposure, pool equivalents consumed (fast, slow), linear loss lam*e,
    new amount.  Conservation: N1 = N0 + S - Df/nu - Ds/nu - L exactly (up to round-off), N1 >= 0.
    """
    tot = N0 + S
    if tot <= 0.0 or h <= 0.0:
        return 0.0, 0.0, 0.0, 0.0, max(tot, 0.0)
    kap = (kf * Rf + ks * Rs + lam) / theta
    a = _alpha(kap * h)
    b = 1.0 - a
    rhs0 = h * (b * tot + a * N0)
    # Newton on F(e) = theta e - h [(1-a)(tot - cons(e) - lam e) + a N0]; F concave increasing, F(0) < 0.
    e = 0.0
    for _ in range(200):
        xf = nu * kf * e
        xs = nu * ks * e
        cons = (Rf * (-math.expm1(-xf)) + Rs * (-math.expm1(-xs))) / nu
        F = theta * e - rhs0 + h * b * (cons + lam * e)
        if F >= 0.0:
            break
        dF = theta + h * b * (kf * Rf * math.exp(-xf) + ks * Rs * math.exp(-xs) + lam)
        de = -F / dF
        e_new = e + de
        if de <= 1e-15 * e_new:
            e = e_new
            break
        e = e_new
    Df = Rf * (-math.expm1(-nu * kf * e))
    Ds = Rs * (-math.expm1(-nu * ks * e))
    L = lam * e
    qf = Df / nu
    qs = Ds / nu
    N1 = tot - qf - qs - L
    if N1 < 0.0:  # round-off only: scale the losses so that they sum to what was there
        s = tot / (qf + qs + L)
        Df *= s
        Ds *= s
        L *= s
        N1 = 0.0
    return e, Df, Ds, L, N1


@njit(cache=True)
def _clo2_stage(nox, rf, rs, theta, w, h, p):
    """ClO2 alone for h: returns (nox1, rf1, rs1, qof, qos, dec, wox, prod_h, prod_cl, e)."""
    kd_lin = p[2] * theta
    lam = w + kd_lin
    e, Dof, Dos, L, nox1 = _stage(nox, 0.0, rf, rs, p[0], p[1], p[8], lam, theta, h)
    qof = Dof / p[8]
    qos = Dos / p[8]
    if lam > 0.0:
        dec = L * (kd_lin / lam)
        wox = L - dec
    else:
        dec = 0.0
        wox = 0.0
    prod_h = p[4] * qof + p[6] * qos
    prod_cl = p[3] * qof + p[5] * qos + p[7] * dec
    return nox1, max(rf - Dof, 0.0), max(rs - Dos, 0.0), qof, qos, dec, wox, prod_h, prod_cl, e


@njit(cache=True)
def _substep(nox, ncl, nh, rf, rs, theta, w, h, p):
    """Strang splitting ClO2(h/2) HOCl(h/2) chlorite(h) HOCl(h/2) ClO2(h/2); each stage exact in its exposure.

    Products of a ClO2 stage are added to HOCl / chlorite at once.  Returns the new state (5) and the
    bookings (11): qof, qos, dec, wox, qhf, qhs, wh, qcf, qcs, wcl, e_ox.
    """
    hh = 0.5 * h
    # A(h/2)
    a = _clo2_stage(nox, rf, rs, theta, w, hh, p)
    nox1 = a[0]
    rf1 = a[1]
    rs1 = a[2]
    nh1 = nh + a[7]
    ncl1 = ncl + a[8]
    # B(h/2)
    e1, Dhf1, Dhs1, wh1, nh1 = _stage(nh1, 0.0, rf1, rs1, p[9], p[10], p[11], w, theta, hh)
    rf1 = max(rf1 - Dhf1, 0.0)
    rs1 = max(rs1 - Dhs1, 0.0)
    # C(h)
    e2, Dcf, Dcs, wcl, ncl1 = _stage(ncl1, 0.0, rf1, rs1, p[12], p[13], p[14], w, theta, h)
    rf1 = max(rf1 - Dcf, 0.0)
    rs1 = max(rs1 - Dcs, 0.0)
    # B(h/2)
    e3, Dhf2, Dhs2, wh2, nh1 = _stage(nh1, 0.0, rf1, rs1, p[9], p[10], p[11], w, theta, hh)
    rf1 = max(rf1 - Dhf2, 0.0)
    rs1 = max(rs1 - Dhs2, 0.0)
    # A(h/2)
    b = _clo2_stage(nox1, rf1, rs1, theta, w, hh, p)
    nox1 = b[0]
    rf1 = b[1]
    rs1 = b[2]
    nh1 = nh1 + b[7]
    ncl1 = ncl1 + b[8]
    return (nox1, ncl1, nh1, rf1, rs1,
            a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6],
            (Dhf1 + Dhf2) / p[11], (Dhs1 + Dhs2) / p[11], wh1 + wh2,
            Dcf / p[14], Dcs / p[14], wcl,
            a[9] + b[9])


@njit(cache=True)
def _book(out, c, s, nu_ox, nu_h, nu_cl):
    # s = substep tuple; see _substep
    out[c, 0] += s[5]
    out[c, 1] += s[6]
    out[c, 2] += s[7]
    out[c, 3] += s[8]
    out[c, 4] += s[9]
    out[c, 5] += s[10]
    out[c, 6] += s[11]
    out[c, 7] += s[12]
    out[c, 8] += s[13]
    out[c, 9] += s[14]
    out[c, 12] += s[5] * nu_ox + s[9] * nu_h + s[12] * nu_cl
    out[c, 13] += s[6] * nu_ox + s[10] * nu_h + s[13] * nu_cl
    out[c, 14] += s[15]


@njit(cache=True)
def _err(y0, s1, s2, rtol, atol):
    err = 0.0
    for i in range(5):
        sc = rtol * (max(abs(y0[i]), abs(s2[i])) + atol)
        d = abs(s2[i] - s1[i]) / sc
        if d > err:
            err = d
    return err


@njit(cache=True)
def _react_range(i0, i1, c, nox, ncl, nh, rf, rs, theta, th_stride, w, w_stride, expo, has_expo, dt, p, out):
    """Serial per-voxel integration of voxels [i0, i1); bookings into row c of out."""
    nu_ox = p[8]
    nu_h = p[11]
    nu_cl = p[14]
    rtol = p[15]
    atol_frac = p[16]
    adaptive = p[17] > 0.5
    max_sub = int(p[18])
    eta = p[19]
    eqmax = p[20]
    yh_max = max(p[4], p[6])
    ycl_max = max(max(p[3], p[5]), p[7])
    for i in range(i0, i1):
        a0 = nox[i]
        a1 = ncl[i]
        a2 = nh[i]
        if a0 + a1 + a2 <= 0.0:
            continue
        th = theta[i * th_stride]
        if th < 1e-12:
            th = 1e-12
        wi = w[i * w_stride]
        a3 = rf[i]
        a4 = rs[i]
        atol = atol_frac * (a0 + a1 + a2 + a3 + a4)
        t = 0.0
        h = dt
        nsub = 0
        nattempt = 0
        de_sum = 0.0
        capped = False
        floor = rtol * (a0 + a1 + a2 + a3 + a4)
        while t < dt:
            if adaptive:
                # resolve pool exhaustion: no pool may lose more than a fraction eta in one sub-step
                # when the oxidant present could change it by more than that (competition between
                # oxidants is then resolved in time, not decided by the stage order)
                pot = eqmax * a0 + nu_h * a2 + nu_cl * a1
                for q in range(2):
                    rp = a3 if q == 0 else a4
                    if rp > floor and pot > eta * rp:
                        # relative pool consumption rates; HOCl / chlorite counted with what ClO2 makes
                        r_ox = nu_ox * p[q] * a0
                        r_h = nu_h * p[9 + q] * (a2 + yh_max * a0)
                        r_cl = nu_cl * p[12 + q] * (a1 + ycl_max * a0)
                        rsum = r_ox + r_h + r_cl
                        rmax = max(r_ox, max(r_h, r_cl))
                        # one oxidant alone is exact in its exposure; restrict only real competition
                        if rsum - rmax > rtol * rmax:
                            rate = rsum / th
                            if rate * h > eta:
                                h = eta / rate
            rem = dt - t
            if h >= rem or (rem - h) < 1e-12 * dt:
                h = rem
            y = (a0, a1, a2, a3, a4)
            s1 = _substep(a0, a1, a2, a3, a4, th, wi, h, p)
            nattempt += 1
            if adaptive and nattempt < max_sub:
                hm = 0.5 * h
                sa = _substep(a0, a1, a2, a3, a4, th, wi, hm, p)
                sb = _substep(sa[0], sa[1], sa[2], sa[3], sa[4], th, wi, hm, p)
                err = _err(y, s1, sb, rtol, atol)
                if err > 1.0:
                    fac = 0.9 / math.sqrt(err)
                    if fac < 0.1:
                        fac = 0.1
                    h = h * fac
                    continue
                _book(out, c, sa, nu_ox, nu_h, nu_cl)
                _book(out, c, sb, nu_ox, nu_h, nu_cl)
                de_sum += sa[15] + sb[15]
                a0, a1, a2, a3, a4 = sb[0], sb[1], sb[2], sb[3], sb[4]
                nsub += 2
                t += h
                if err > 0.0:
                    fac = 0.9 / math.sqrt(err)
                    if fac > 5.0:
                        fac = 5.0
                else:
                    fac = 5.0
                h = h * fac
            else:
                if adaptive and not capped:
                    out[c, 16] += 1.0
                    capped = True
                _book(out, c, s1, nu_ox, nu_h, nu_cl)
                de_sum += s1[15]
                a0, a1, a2, a3, a4 = s1[0], s1[1], s1[2], s1[3], s1[4]
                nsub += 1
                t += h
                if adaptive:  # cap reached: finish the rest in one step
                    h = dt - t
        nox[i] = a0
        ncl[i] = a1
        nh[i] = a2
        rf[i] = a3
        rs[i] = a4
        if has_expo:
            expo[i] += de_sum
        out[c, 15] += nsub
        if nsub > out[c, 17]:
            out[c, 17] = nsub


@njit(parallel=True, cache=True)
def _react_parallel(nox, ncl, nh, rf, rs, theta, th_stride, w, w_stride, expo, has_expo, dt, p, out):
    n = nox.size
    nchunk = out.shape[0]
    for c in prange(nchunk):
        i0 = (c * n) // nchunk
        i1 = ((c + 1) * n) // nchunk
        _react_range(i0, i1, c, nox, ncl, nh, rf, rs, theta, th_stride, w, w_stride, expo, has_expo, dt, p, out)


def _flat_inplace(a, name):
    if not isinstance(a, np.ndarray) or a.dtype != np.float64 or not a.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous float64 ndarray (updated in place)")
    return a.reshape(-1)




def react_oxidant(N_ox, N_cl, N_hocl, R_f, R_s, theta, washout, dt: float,
                  params: OxidantParams | None = None, exposure=None) -> dict:
    """Advance the ClO2 / chlorite / HOCl / pool chemistry of every voxel by ``dt`` seconds, in place.

    Arguments: see the module docstring for units.  ``theta`` and ``washout`` are scalars or per-voxel
    arrays.  ``exposure`` (optional, same shape) is incremented by the ClO2 exposure integral of c_ox dt.

    Returns a dict with the booked totals of :data:`BOOK_KEYS` summed over voxels (multiply by dV for
    moles; ``*_consumed_*`` in mol of that oxidant, ``*_pool_consumed`` in ClO2-equivalents) and
    ``clo2_to_other`` = ClO2 whose chlorine left as chloride/chlorate (not chlorite/HOCl).
    Identities (round-off): dN_ox = -(consumed_fast + consumed_slow + decayed + washout), dN_cl =
    chlorite_produced - chlorite_consumed_* - chlorite_washout, dN_hocl likewise, dR_f =
    -fast_pool_consumed, dR_s = -slow_pool_consumed.
    """
    params = params or OxidantParams()
    arrs = [_flat_inplace(a, nm) for a, nm in ((N_ox, "N_ox"), (N_cl, "N_cl"), (N_hocl, "N_hocl"),
                                                (R_f, "R_f"), (R_s, "R_s"))]
    n = arrs[0].size
    if any(a.size != n for a in arrs):
        raise ValueError("species arrays must have the same shape")
    th, ths = scalar_or_field(theta, n, "theta")
    w, ws = scalar_or_field(washout, n, "washout")
    if exposure is not None:
        ex = _flat_inplace(exposure, "exposure")
        if ex.size != n:
            raise ValueError("exposure must have the species shape")
        has = True
    else:
        ex = np.zeros(1)
        has = False
    dt = float(dt)
    if not dt >= 0.0:
        raise ValueError("dt must be >= 0")
    nchunk = max(1, min(_NCHUNK, n)) if n >= _SERIAL_BELOW else 1
    out = np.zeros((nchunk, _NB))
    if dt > 0.0 and n > 0:
        p = params._vector()
        if nchunk == 1:  # small arrays: no thread launch (same arithmetic, same sums)
            _react_range(0, n, 0, arrs[0], arrs[1], arrs[2], arrs[3], arrs[4], th, ths, w, ws, ex, has, dt, p, out)
        else:
            _react_parallel(arrs[0], arrs[1], arrs[2], arrs[3], arrs[4], th, ths, w, ws, ex, has, dt, p, out)
    tot = out.sum(axis=0)
    # products follow linearly from the ClO2 bookings (scalar yields), exactly as the kernel added them
    tot[10] = (params.yield_chlorite_fast * tot[0] + params.yield_chlorite_slow * tot[1]
               + params.yield_chlorite_decay * tot[2])
    tot[11] = params.yield_hocl_fast * tot[0] + params.yield_hocl_slow * tot[1]
    res = {k: float(v) for k, v in zip(BOOK_KEYS, tot)}
    res["max_substeps_voxel"] = float(out[:, 17].max()) if out.size else 0.0
    pr = params
    res["clo2_to_other"] = (res["clo2_consumed_fast"] * (1.0 - pr.yield_chlorite_fast - pr.yield_hocl_fast)
                            + res["clo2_consumed_slow"] * (1.0 - pr.yield_chlorite_slow - pr.yield_hocl_slow)
                            + res["clo2_decayed"] * (1.0 - pr.yield_chlorite_decay))
    return res


__all__ = ["OxidantParams", "react_oxidant", "BOOK_KEYS", "PER_MOLAR"]
