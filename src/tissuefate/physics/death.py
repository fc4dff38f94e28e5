"""Cell death per voxel: oxidative (pool exhaustion), chemical (ethanol dose) and ischemic (perfusion loss).

Reads: fast/slow reductive pools R_f, R_s and their initial values R_f0, R_s0 (ClO2-eq/m^3, from
:mod:`tissuefate.physics.oxidant`), the ethanol kill dose Omega (-, :mod:`tissuefate.physics.ethanol`),
perfusion and baseline perfusion (1/s, :mod:`tissuefate.physics.vessels`).
Writes: the tissue-state map (int8 :class:`~tissuefate.tissue_state.TissueState` codes, in place) and the
death bookkeeping fields of :class:`DeathFields` (in place).

Model (per voxel; per-tissue thresholds may be per-voxel arrays)::

    commitment (irreversible, checked at the end of each step, time t + dt):
      oxidative : F_f = 1 - R_f/R_f0 >= fast_pool_threshold   or   F_s = 1 - R_s/R_s0 >= slow_pool_threshold
      chemical  : Omega >= omega_kill
      ischemic  : D_isch >= ischemia_tolerance,   dD_isch/dt = max(0, 1 - perfusion/perfusion0)  (cumulative)
    completion (first order, competing causes; exact for steps):
      d phi/dt = (1 - phi) * sum_{committed c} 1/tau_c ,   d phi_c/dt = (1 - phi)/tau_c
      (tau_c = 0: phi -> 1 at commitment)
    state:  when phi >= death_fraction the voxel's state becomes the cause c with the largest phi_c
            (OXIDATIVE_NECROSIS / CHEMICAL_NECROSIS / ISCHEMIC_NECROSIS) and is never overwritten.

phi is the fraction of the voxel's cells whose necrosis has completed; with one cause committed at t_c,
phi(t) = 1 - exp(-(t - t_c)/tau) and the state flips at t_c + tau ln(1/(1 - death_fraction)).
Only living voxels (VIABLE, REGENERATING, SCAR) commit or change state; in a voxel already labelled dead,
phi keeps completing under its committed causes (for the healing model).

Stoichiometric bound: the oxidant needed to commit a voxel oxidatively is at least
min(thr_f R_f0, thr_s R_s0) / eq_max per m^3, with eq_max = the most pool equivalents one ClO2 (with its
HOCl and chlorite) can remove; hence oxidative necrosis volume <= n_ClO2 / min over tissues of that amount
(:func:`stoichiometric_bound_volume`).  Ischemic death (via vessels) is not bounded by it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from tissuefate.numerics.arrays import scalar_or_field

from tissuefate.tissue_state import TissueState

BIT_OXIDATIVE = 1
BIT_CHEMICAL = 2
BIT_ISCHEMIC = 4
CAUSE_CODES = (int(TissueState.OXIDATIVE_NECROSIS), int(TissueState.CHEMICAL_NECROSIS),
               int(TissueState.ISCHEMIC_NECROSIS))
"""State codes of the causes, in the order of ``DeathFields.fraction_by_cause`` and of the bits."""
_ALIVE = (int(TissueState.VIABLE), int(TissueState.REGENERATING), int(TissueState.SCAR))


@dataclass(frozen=True)
class DeathParams:
    """Death thresholds and delays.  Scalars or per-voxel arrays for the per-tissue ones (marked *).

    ====================  =======  =====  =================================================================
    field                 default  unit   hypothesis [H] and range
    ====================  =======  =====  =================================================================
    fast_pool_threshold*  0.8      -      [H] fraction of the fast (thiol) pool consumed that commits the
                                          cell to regulated necrosis; range 0.5-0.95
    slow_pool_threshold*  0.5      -      [H] same for the slow pool (bulk protein/NADH); range 0.2-1
                                          (> 1 disables)
    tau_oxidative         3600     s      [H] regulated-necrosis completion time constant; 600-21600 s
    tau_chemical          60       s      [H] delay after Omega >= 1 (the dose already includes the 15 s
                                          exposure); 0-600 s
    tau_ischemic          0        s      [H] delay after the tolerance is exceeded (tolerance carries it);
                                          0-3600 s
    ischemia_tolerance*   7200     s      [H] integral of relative perfusion loss before commitment;
                                          1800-28800 s (0.5-8 h; tumors hypoxia-tolerant, liver ~1 h)
    omega_kill            1.0      -      [D] Omega = 1 is the kill time of the ethanol dose law
    death_fraction        0.5      -      convention: voxel labelled dead when half its cells are dead
    ====================  =======  =====  =================================================================
    """

    fast_pool_threshold: object = 0.8
    slow_pool_threshold: object = 0.5
    tau_oxidative: float = 3600.0
    tau_chemical: float = 60.0
    tau_ischemic: float = 0.0
    ischemia_tolerance: object = 7200.0
    omega_kill: float = 1.0
    death_fraction: float = 0.5

    def __post_init__(self):
        for k in ("fast_pool_threshold", "slow_pool_threshold", "ischemia_tolerance"):
            if not np.all(np.asarray(getattr(self, k), dtype=float) > 0.0):
                raise ValueError(f"{k} must be > 0")
        for k in ("tau_oxidative", "tau_chemical", "tau_ischemic"):
            if not getattr(self, k) >= 0.0:
                raise ValueError(f"{k} must be >= 0")
        if not 0.0 < self.death_fraction <= 1.0:
            raise ValueError("death_fraction must be in (0, 1]")
        if not self.omega_kill > 0.0:
            raise ValueError("omega_kill must be > 0")


@dataclass
class DeathFields:
    """Per-voxel death bookkeeping (all arrays of ``grid.shape`` except ``fraction_by_cause``: (3, *shape)).

    committed        int8 bit mask of committed causes (1 oxidative, 2 chemical, 4 ischemic)
    commit_time      float64, time of the first commitment (NaN if none), s
    dead_fraction    float64 phi, fraction of the voxel's cells dead
    fraction_by_cause float64 (3, ...) phi per cause (order of CAUSE_CODES)
    ischemic_dose    float64, integral of relative perfusion loss, s
    death_time       float64, time the state code flipped to a death code (NaN if alive), s
    """

    committed: np.ndarray
    commit_time: np.ndarray
    dead_fraction: np.ndarray
    fraction_by_cause: np.ndarray
    ischemic_dose: np.ndarray
    death_time: np.ndarray

    @classmethod
    def zeros(cls, shape) -> "DeathFields":
        shape = tuple(int(s) for s in shape)
        return cls(
            committed=np.zeros(shape, dtype=np.int8),
            commit_time=np.full(shape, np.nan),
            dead_fraction=np.zeros(shape),
            fraction_by_cause=np.zeros((3,) + shape),
            ischemic_dose=np.zeros(shape),
            death_time=np.full(shape, np.nan),
        )


@njit(cache=True)
def _alive(s):
    return s == _ALIVE[0] or s == _ALIVE[1] or s == _ALIVE[2]


@njit(cache=True)
def _death_range(i0, i1, c, state, committed, commit_time, phi, phic, dose, death_time,
                 has_pools, rf, rf0, rs, rs0, thr_f, sf, thr_s, ss,
                 has_omega, omega, omega_kill,
                 has_perf, perf, pst, perf0, p0st, tol, stol,
                 tau0, tau1, tau2, death_fraction, codes, t, dt, out):
    """Serial update of voxels [i0, i1); counts into row c of out."""
    tend = t + dt
    for i in range(i0, i1):
        alive = _alive(state[i])
        if not alive and committed[i] == 0:
            continue
        # 1. ischemic dose over [t, t + dt]
        if alive and has_perf:
            p0 = perf0[i * p0st]
            if p0 > 0.0:
                loss = 1.0 - perf[i * pst] / p0
                if loss > 1.0:
                    loss = 1.0
                if loss > 0.0:
                    dose[i] += loss * dt
        # 2. completion under the hazards committed before t
        cm = committed[i]
        f = phi[i]
        if cm != 0 and f < 1.0:
            r0 = 0.0
            r1 = 0.0
            r2 = 0.0
            if (cm & 1) and tau0 > 0.0:
                r0 = 1.0 / tau0
            if (cm & 2) and tau1 > 0.0:
                r1 = 1.0 / tau1
            if (cm & 4) and tau2 > 0.0:
                r2 = 1.0 / tau2
            H = r0 + r1 + r2
            if H > 0.0:
                dphi = (1.0 - f) * (-math.expm1(-H * dt))
                phic[0, i] += dphi * (r0 / H)
                phic[1, i] += dphi * (r1 / H)
                phic[2, i] += dphi * (r2 / H)
                f = f + dphi
        if not alive:  # already dead: only the dead fraction keeps completing
            phi[i] = f
            continue
        # 3. new commitments at t + dt
        new = 0
        if has_pools and not (cm & 1):
            a = rf0[i]
            b = rs0[i]
            ff = 1.0 - rf[i] / a if a > 0.0 else 0.0
            fs = 1.0 - rs[i] / b if b > 0.0 else 0.0
            if ff >= thr_f[i * sf] or fs >= thr_s[i * ss]:
                new |= 1
        if has_omega and not (cm & 2):
            if omega[i] >= omega_kill:
                new |= 2
        if has_perf and not (cm & 4):
            if dose[i] >= tol[i * stol]:
                new |= 4
        if new != 0:
            if cm == 0:
                commit_time[i] = tend
            committed[i] = cm | new
            for k in range(3):
                if new & (1 << k):
                    out[c, k] += 1.0
                    tk = tau0 if k == 0 else (tau1 if k == 1 else tau2)
                    if tk <= 0.0 and f < 1.0:
                        phic[k, i] += 1.0 - f
                        f = 1.0
        phi[i] = f
        # 4. state flip
        if f >= death_fraction and f > 0.0:
            best = 0
            for k in range(1, 3):
                if phic[k, i] > phic[best, i]:
                    best = k
            state[i] = codes[best]
            death_time[i] = tend
            out[c, 3 + best] += 1.0




def _flat(a, name, dtype=np.float64):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous {np.dtype(dtype).name} ndarray")
    return a.reshape(-1)


def update_death(state, fields: DeathFields, t: float, dt: float, params: DeathParams | None = None, *,
                 R_f=None, R_f0=None, R_s=None, R_s0=None, omega=None, perfusion=None, perfusion0=None) -> dict:
    """Advance death over [t, t + dt] (in place on ``state`` and ``fields``).

    Call it after the chemistry of the step, with the pools / dose at t + dt and the perfusion that held
    during the step.  Inputs left as None switch their cause off.  Returns counts of voxels newly
    committed / newly dead per cause: ``committed_oxidative``, ..., ``died_ischemic``.
    """
    params = params or DeathParams()
    st = _flat(state, "state", np.int8)
    n = st.size
    cm = _flat(fields.committed, "committed", np.int8)
    ct = _flat(fields.commit_time, "commit_time")
    ph = _flat(fields.dead_fraction, "dead_fraction")
    if fields.fraction_by_cause.shape != (3,) + state.shape or not fields.fraction_by_cause.flags.c_contiguous:
        raise ValueError("fraction_by_cause must be a C-contiguous (3, *shape) array")
    phc = fields.fraction_by_cause.reshape(3, n)
    dose = _flat(fields.ischemic_dose, "ischemic_dose")
    dtm = _flat(fields.death_time, "death_time")
    dummy = np.zeros(1)
    has_pools = R_f is not None
    if has_pools:
        rf = np.ascontiguousarray(R_f, dtype=np.float64).reshape(-1)
        rf0 = np.ascontiguousarray(R_f0, dtype=np.float64).reshape(-1)
        rs = np.ascontiguousarray(R_s if R_s is not None else np.zeros(n), dtype=np.float64).reshape(-1)
        rs0 = np.ascontiguousarray(R_s0 if R_s0 is not None else np.zeros(n), dtype=np.float64).reshape(-1)
        if not (rf.size == rf0.size == rs.size == rs0.size == n):
            raise ValueError("pool arrays must have the state shape")
    else:
        rf = rf0 = rs = rs0 = dummy
    thr_f, sf = scalar_or_field(params.fast_pool_threshold, n, "fast_pool_threshold")
    thr_s, ss = scalar_or_field(params.slow_pool_threshold, n, "slow_pool_threshold")
    has_omega = omega is not None
    om = np.ascontiguousarray(omega, dtype=np.float64).reshape(-1) if has_omega else dummy
    if has_omega and om.size != n:
        raise ValueError("omega must have the state shape")
    has_perf = perfusion is not None
    if has_perf:
        pf, pst = scalar_or_field(perfusion, n, "perfusion")
        pf0, p0st = scalar_or_field(perfusion0, n, "perfusion0")
    else:
        pf = pf0 = dummy
        pst = p0st = 0
    tol, stol = scalar_or_field(params.ischemia_tolerance, n, "ischemia_tolerance")
    # serial on purpose: ~10 ns per voxel, and the parfor version of this many-argument kernel takes
    # about a minute to compile
    out = np.zeros((1, 6))
    if n > 0:
        _death_range(0, n, 0, st, cm, ct, ph, phc, dose, dtm,
                     has_pools, rf, rf0, rs, rs0, thr_f, sf, thr_s, ss,
                     has_omega, om, float(params.omega_kill),
                     has_perf, pf, pst, pf0, p0st, tol, stol,
                     float(params.tau_oxidative), float(params.tau_chemical), float(params.tau_ischemic),
                     float(params.death_fraction), np.array(CAUSE_CODES, dtype=np.int8),
                     float(t), float(dt), out)
    tot = out.sum(axis=0)
    names = ("oxidative", "chemical", "ischemic")
    res = {f"committed_{nm}": int(tot[k]) for k, nm in enumerate(names)}
    res.update({f"died_{nm}": int(tot[3 + k]) for k, nm in enumerate(names)})
    return res


def lethal_clo2_per_m3(R_f0, R_s0=None, params: DeathParams | None = None, oxidant_params=None):
    """Least ClO2 (mol/m^3 tissue) whose complete use could commit a voxel oxidatively.

    = min(thr_f R_f0, thr_s R_s0) / eq_max, eq_max = OxidantParams.max_equivalents_per_clo2();
    inf where no criterion can be met (empty pool or threshold > 1).
    """
    from tissuefate.physics.oxidant import OxidantParams

    params = params or DeathParams()
    oxp = oxidant_params or OxidantParams()
    eq = oxp.max_equivalents_per_clo2()
    R_f0 = np.asarray(R_f0, dtype=float)
    R_s0 = np.zeros_like(R_f0) if R_s0 is None else np.asarray(R_s0, dtype=float)
    tf = np.asarray(params.fast_pool_threshold, dtype=float)
    ts = np.asarray(params.slow_pool_threshold, dtype=float)
    with np.errstate(invalid="ignore"):
        lf = np.where((R_f0 > 0) & (tf <= 1.0), tf * R_f0, np.inf)
        ls = np.where((R_s0 > 0) & (ts <= 1.0), ts * R_s0, np.inf)
    return np.minimum(lf, ls) / eq


def stoichiometric_bound_volume(n_oxidant_mol: float, lethal_consumption_per_m3) -> float:
    """Most tissue volume (m^3) ``n_oxidant_mol`` of ClO2 could ever kill oxidatively.

    ``lethal_consumption_per_m3``: per tissue (or per voxel) the least ClO2 per m^3 that can commit it
    (e.g. :func:`lethal_clo2_per_m3`); the bound is n / min over the tissues present.
    """
    lc = np.asarray(lethal_consumption_per_m3, dtype=float).ravel()
    lc = lc[np.isfinite(lc)]
    if n_oxidant_mol <= 0.0:
        return 0.0
    if lc.size == 0:
        return 0.0
    m = float(lc.min())
    if m <= 0.0:
        return math.inf
    return float(n_oxidant_mol) / m


__all__ = ["DeathParams", "DeathFields", "update_death", "lethal_clo2_per_m3", "stoichiometric_bound_volume",
           "CAUSE_CODES", "BIT_OXIDATIVE", "BIT_CHEMICAL", "BIT_ISCHEMIC"]
