"""Pennes bioheat in enthalpy form, with freezing and water vaporisation.

Equation (per unit tissue volume, temperature ``T`` in kelvin, volumetric enthalpy ``H`` in J/m^3)::

    dH/dt = div(k(T) grad T) + Q_ext + Q_met - sum_s beta_s (T - T_s)

    H(T)   piecewise linear (below); its slope is the apparent heat capacity C(T) = dH/dT (J/(m^3 K))
    k(T)   k_u (1 + k_slope (T - T_body)) unfrozen; k_f frozen; linear in the liquid fraction in the mushy range
    Q_ext  the applicator's deposition: RF Joule heating sigma |grad phi|^2 or the microwave SAR (W/m^3)
    sinks  beta_s (W/(m^3 K)) towards a reference temperature T_s:
           perfusion     w_b(t) rho_b c_b, towards the arterial temperature (Pennes 1948, parameters.md D5)
           probe         strong coupling of the applicator's voxels to its surface temperature (cooled RF tip,
                         cryoprobe history): a Dirichlet condition written as a stiff sink
           vessel        large-vessel lumen voxels held at blood temperature (heat sink; flowing blood)
           surface       convective loss of skin voxels to the room through their air faces, beta = h n_air / dx
           boundary      the tissue beyond the simulated box: a far temperature half a voxel outside each
                         boundary face, beta = 2 k n_faces / dx^2 (otherwise the box walls are insulated)

Enthalpy (one branch per phase, reference H = 0 at the solidus ``T_s``)::

    T <= T_s              H = C_f (T - T_s)                                   frozen
    T_s < T <= T_l        H = (C_m + L_f / (T_l - T_s)) (T - T_s)             mushy, C_m = (C_f + C_u)/2
    T_l < T <= T_v0       H = H_l + C_u (T - T_l)                             unfrozen
    T_v0 < T <= T_v1      H = H_v0 + (C_u + L_v / (T_v1 - T_v0)) (T - T_v0)    water vaporising
    T > T_v1              H = H_v1 + C_d (T - T_v1)                           desiccated

L_f = rho w 333.55 kJ/kg and L_v = rho w 2257 kJ/kg, with w the tissue's water mass fraction [D]. The latent
parts give the liquid fraction (freezing) and the vapour fraction (desiccation) that RF and MW read.

Time discretisation of one step ``dt`` (Strang splitting: half a conduction step with the sweeps in x, y, z
order, then sources and sinks over dt, then half a conduction step with the sweeps in z, y, x order; second
order in time, and the steady state does not depend on dt to first order):

1. sources: ``H += dt (Q_ext + Q_met)``;
2. conduction: the LOD sweeps of :func:`tissuefate.numerics.lod.lod_diffuse` on ``C(T^n) dT/dt = div(k grad T)``
   with ``C`` and ``k`` frozen at the start of the step; then ``H += C (T* - T^n)``, ``T = T(H)``. The sweeps
   conserve ``sum(C T)``, so this linearised-enthalpy update conserves ``sum(H)`` exactly; the front position
   error is first order in ``dt`` (verified against the Neumann solution, V3). Voxels held by a stiff sink
   (probe, vessel lumen) conduct with capacity ``C + beta dt`` (their implicit sink), which keeps them at their
   set temperature through the sweeps;
3. sinks: per voxel ``dH/dt = -beta (T(H) - T*)``, ``beta = sum beta_s``, ``T* = sum beta_s T_s / beta``,
   integrated *exactly* through the piecewise-linear H(T): exponential relaxation within a branch, crossing
   branch ends as often as needed. Each channel's energy is ``beta_s * int (T - T_s) dt`` with
   ``int (T - T*) dt = (H_0 - H_1)/beta``, so the channels add up to the change of H exactly.

The linearised update is exact only while a voxel stays within one branch of H(T) during a conduction
sweep. ``linearization_error`` (K) is the largest distance of the updated T(H) from the interval between the
voxel's old temperature and the linear solve's T_lin: zero within a branch and when a voxel only moves into
the latent plateau it was heading for, large when a high-capacity voxel swung through its branch; callers
reject and halve steps where it exceeds a few kelvin (a boiling voxel beside cold tissue could otherwise
swing through the whole plateau in one long step: energy stays conserved, the temperature does not).

The box walls are insulated (zero flux) unless the caller adds the ``boundary`` channel (tissue continues
beyond the box at a far temperature). The energy ledger reads ``delivered + metabolic = change of stored
enthalpy (sensible + latent) + perfusion + probe + vessel + surface + boundary``.

Fields read: temperature-independent property arrays (C_f, C_u, C_d, L_f, L_v, k_u, k_f), source and sink
arrays. Fields written: ``H`` and ``T`` (in place).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ..numerics.lod import lod_diffuse

LATENT_FUSION_WATER = 333.55e3        # J/kg at 0 degC (standard value)
LATENT_VAPORISATION_WATER = 2257e3    # J/kg at 100 degC (standard value)
T0C = 273.15


@dataclass(frozen=True)
class PhaseParams:
    """Phase-change temperatures and the thermal-conductivity slope (SI, kelvin)."""
    t_solidus: float = T0C - 8.0          # parameters.md D3 (phase change -8 to -1 degC, Micromachines 2025 [V])
    t_liquidus: float = T0C - 1.0         # parameters.md D3
    t_vapor_start: float = T0C + 99.0     # hypothesis: vaporisation spread over 99-100 degC (common RFA choice [R])
    t_vapor_end: float = T0C + 100.0
    k_slope: float = 1.5e-3               # 1/K, hypothesis: k rises with T up to 99 degC (parameters.md D1, qualitative [V])
    dry_capacity_factor: float = 0.4      # hypothesis: C of desiccated tissue / C of hydrated tissue
    t_body: float = T0C + 37.0
    # numerical: the conduction sweeps use min(C(T), cap * C_u) as capacity. Within a narrow phase-change
    # branch C(T) is huge and the linearised update could move far more enthalpy than the branch holds
    # (a voxel boiling beside a cooled probe swung through the whole plateau); the cap keeps each sweep's
    # exchange at the physical conductive flux, and H (hence T) stays exact and conserved.
    conduction_capacity_cap: float = 20.0

    def __post_init__(self):
        if not (self.t_solidus < self.t_liquidus < self.t_vapor_start < self.t_vapor_end):
            raise ValueError("phase temperatures must satisfy solidus < liquidus < vapour start < vapour end")


@dataclass
class HeatProperties:
    """Thermal materials: a per-voxel material index into small property tables.

    ``material`` (uint8, grid shape) indexes the tables; material 0 is outside the heat domain (air, probe
    lumen); its ``C_u`` must be 0. A tissue in another state (coagulated, scar, ...) is another material.
    Tables (1-D float64, one entry per material): ``C_f``, ``C_u`` (J/(m^3 K)), ``L_f``, ``L_v`` (J/m^3),
    ``k_u``, ``k_f`` (W/(m K)).
    """
    material: np.ndarray
    C_f: np.ndarray
    C_u: np.ndarray
    L_f: np.ndarray
    L_v: np.ndarray
    k_u: np.ndarray
    k_f: np.ndarray
    phase: PhaseParams

    def __post_init__(self):
        self.material = np.ascontiguousarray(self.material, dtype=np.uint8)
        for name in ("C_f", "C_u", "L_f", "L_v", "k_u", "k_f"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float64))
        if self.C_u[0] != 0.0:
            raise ValueError("material 0 is outside the heat domain: its C_u must be 0")
        if int(self.material.max()) >= len(self.C_u):
            raise ValueError("a material index has no table entry")

    @property
    def domain(self) -> np.ndarray:
        return self.C_u[self.material] > 0

    def table(self) -> np.ndarray:
        """(n_materials, 9) table for the kernels: C_f, C_u, C_d, L_f, L_v, k_u, k_f, domain flag, conduction
        capacity cap."""
        ph = self.phase
        return np.ascontiguousarray(np.stack([self.C_f, self.C_u, ph.dry_capacity_factor * self.C_u, self.L_f, self.L_v,
                                              self.k_u, self.k_f, (self.C_u > 0).astype(float),
                                              ph.conduction_capacity_cap * self.C_u], axis=1))


# --------------------------------------------------------------------------------------------- H(T) and T(H)

@njit(cache=True, inline="always")
def _branch_ends(Cf, Cu, Lf, Lv, Ts, Tl, Tv0, Tv1):
    """Enthalpies at the branch ends and the branch slopes for one voxel."""
    Cm = 0.5 * (Cf + Cu)
    s_mushy = Cm + Lf / (Tl - Ts)
    Hl = s_mushy * (Tl - Ts)
    Hv0 = Hl + Cu * (Tv0 - Tl)
    s_vap = Cu + Lv / (Tv1 - Tv0)
    Hv1 = Hv0 + s_vap * (Tv1 - Tv0)
    return s_mushy, Hl, Hv0, s_vap, Hv1


@njit(cache=True)
def _h_of_t(T, Cf, Cu, Cd, Lf, Lv, Ts, Tl, Tv0, Tv1):
    s_mushy, Hl, Hv0, s_vap, Hv1 = _branch_ends(Cf, Cu, Lf, Lv, Ts, Tl, Tv0, Tv1)
    if T <= Ts:
        return Cf * (T - Ts)
    if T <= Tl:
        return s_mushy * (T - Ts)
    if T <= Tv0:
        return Hl + Cu * (T - Tl)
    if T <= Tv1:
        return Hv0 + s_vap * (T - Tv0)
    return Hv1 + Cd * (T - Tv1)


@njit(cache=True)
def _t_of_h(H, Cf, Cu, Cd, Lf, Lv, Ts, Tl, Tv0, Tv1):
    """Temperature, branch slope (apparent capacity) and branch index (0 frozen .. 4 desiccated) of enthalpy H."""
    s_mushy, Hl, Hv0, s_vap, Hv1 = _branch_ends(Cf, Cu, Lf, Lv, Ts, Tl, Tv0, Tv1)
    if H <= 0.0:
        return Ts + H / Cf, Cf, 0
    if H <= Hl:
        return Ts + H / s_mushy, s_mushy, 1
    if H <= Hv0:
        return Tl + (H - Hl) / Cu, Cu, 2
    if H <= Hv1:
        return Tv0 + (H - Hv0) / s_vap, s_vap, 3
    return Tv1 + (H - Hv1) / Cd, Cd, 4


@njit(cache=True, inline="always")
def _k_of_t(t, ku, kf, Ts, Tl, Tv0, Tbody, slope):
    if t <= Ts:
        return kf
    if t < Tl:
        x = (t - Ts) / (Tl - Ts)
        return (1.0 - x) * kf + x * ku * (1.0 + slope * (Tl - Tbody))
    return ku * (1.0 + slope * (min(t, Tv0) - Tbody))


# Kernels work on flat (1-D) views passed from Python: numba parfors mishandle writes through in-kernel reshapes.

@njit(cache=True, parallel=True)
def _enthalpy_flat(T, H, mat, tab, Ts, Tl, Tv0, Tv1):
    for i in prange(T.size):
        m = mat[i]
        if tab[m, 7] > 0.0:
            H[i] = _h_of_t(T[i], tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4], Ts, Tl, Tv0, Tv1)
        else:
            H[i] = 0.0


@njit(cache=True, parallel=True)
def _state_flat(H, dH, T, C, k, mat, tab, Ts, Tl, Tv0, Tv1, Tbody, slope):
    """H += dH (if dH has the full size), then T, C = dT/dH^-1 and k from H, in one pass."""
    add = dH.size == H.size
    for i in prange(T.size):
        m = mat[i]
        if tab[m, 7] > 0.0:
            h = H[i] + dH[i] if add else H[i]
            H[i] = h
            t, c, _ = _t_of_h(h, tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4], Ts, Tl, Tv0, Tv1)
            T[i] = t
            C[i] = min(c, tab[m, 8])
            k[i] = _k_of_t(t, tab[m, 5], tab[m, 6], Ts, Tl, Tv0, Tbody, slope)
        else:
            C[i] = 0.0
            k[i] = 0.0


@njit(cache=True, parallel=True)
def _conduct_update_flat(H, Tlin, T, theta, C, k, mat, tab, Ts, Tl, Tv0, Tv1, Tbody, slope, viol):
    """After the LOD sweeps: H += theta (T_lin - T), then T, C, k from H.

    ``viol[b]`` (per block of voxels) gets the largest distance of the new T(H) from the interval between the
    old temperature and T_lin: zero when a voxel stays in its branch or only moves into the latent plateau it
    was heading for, large when a high-capacity voxel swung through its branch."""
    n = T.size
    nb = viol.size
    for blk in prange(nb):
        worst = 0.0
        for i in range(blk * n // nb, (blk + 1) * n // nb):
            m = mat[i]
            if tab[m, 7] > 0.0:
                t_old = T[i]
                tl = Tlin[i]
                h = H[i] + theta[i] * (tl - t_old)
                H[i] = h
                t, c, _ = _t_of_h(h, tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4], Ts, Tl, Tv0, Tv1)
                T[i] = t
                C[i] = min(c, tab[m, 8])
                k[i] = _k_of_t(t, tab[m, 5], tab[m, 6], Ts, Tl, Tv0, Tbody, slope)
                lo = min(t_old, tl)
                hi = max(t_old, tl)
                d = lo - t if t < lo else (t - hi if t > hi else 0.0)
                if d > worst:
                    worst = d
        viol[blk] = worst


@njit(cache=True, parallel=True)
def _fractions_flat(H, lq, vp, mat, tab, Ts, Tl, Tv0, Tv1):
    for i in prange(H.size):
        m = mat[i]
        if tab[m, 7] <= 0.0:
            lq[i] = 0.0
            vp[i] = 0.0
            continue
        s_mushy, Hl, Hv0, s_vap, Hv1 = _branch_ends(tab[m, 0], tab[m, 1], tab[m, 3], tab[m, 4], Ts, Tl, Tv0, Tv1)
        h = H[i]
        lq[i] = min(max(h / Hl, 0.0), 1.0)
        vp[i] = min(max((h - Hv0) / (Hv1 - Hv0), 0.0), 1.0)


# --------------------------------------------------------------------------------------------- sinks, exactly

@njit(cache=True)
def _relax_exact(H, beta, Tstar, dt, Cf, Cu, Cd, Lf, Lv, Ts, Tl, Tv0, Tv1):
    """Exact solution of dH/dt = -beta (T(H) - T*) over dt through the piecewise-linear H(T); returns H(dt)."""
    rem = dt
    T, C, b = _t_of_h(H, Cf, Cu, Cd, Lf, Lv, Ts, Tl, Tv0, Tv1)
    for _ in range(8):  # at most 4 branch crossings are possible
        if rem <= 0.0 or T == Tstar:
            break
        if Tstar > T:   # branch end in the direction of T*
            Tb = Ts if b == 0 else (Tl if b == 1 else (Tv0 if b == 2 else (Tv1 if b == 3 else np.inf)))
            reach = Tstar < Tb
        else:
            Tb = Tv1 if b == 4 else (Tv0 if b == 3 else (Tl if b == 2 else (Ts if b == 1 else -np.inf)))
            reach = Tstar > Tb
        rate = beta / C
        if rate * rem < 1e-12:   # negligible sink (e.g. perfusion all but shut off): first order is exact here
            T = T - (T - Tstar) * rate * rem
            break
        if not reach:
            tb = np.log((T - Tstar) / (Tb - Tstar)) / rate
            if tb < rem:
                T = Tb
                rem -= tb
                b = b + 1 if Tstar > T else b - 1
                if b == 0:
                    C = Cf
                elif b == 1:
                    C = 0.5 * (Cf + Cu) + Lf / (Tl - Ts)
                elif b == 2:
                    C = Cu
                elif b == 3:
                    C = Cu + Lv / (Tv1 - Tv0)
                else:
                    C = Cd
                continue
        T = Tstar + (T - Tstar) * np.exp(-rate * rem)
        rem = 0.0
    return _h_of_t(T, Cf, Cu, Cd, Lf, Lv, Ts, Tl, Tv0, Tv1)


@njit(cache=True, parallel=True)
def _perfusion_flat(H, T, C, k, mat, tab, bperf, Tart, skip, dt, out, Ts, Tl, Tv0, Tv1, Tbody, slope):
    """Perfusion sink in every domain voxel not in the sparse list; ``out[i]`` per-thread-block energy (J/m^3)."""
    n = H.size
    nb = out.size
    for blk in prange(nb):
        acc = 0.0
        for i in range(blk * n // nb, (blk + 1) * n // nb):
            m = mat[i]
            b = bperf[i]
            # a sink that cannot move H by 1e-12 of C*1K is skipped (tiny beta would also amplify round-off)
            if tab[m, 7] <= 0.0 or b * dt <= 1e-12 * tab[m, 1] or skip[i]:
                continue
            h0 = H[i]
            t0 = T[i]
            if Tl < t0 < Tv0 and Tl < Tart < Tv0:
                # fast path: both in the unfrozen branch, a plain exponential (same result as _relax_exact)
                cu = tab[m, 1]
                t = Tart + (t0 - Tart) * np.exp(-b * dt / cu)
                h1 = h0 + cu * (t - t0)
                H[i] = h1
                T[i] = t
                k[i] = _k_of_t(t, tab[m, 5], tab[m, 6], Ts, Tl, Tv0, Tbody, slope)
                acc += h0 - h1
                continue
            h1 = _relax_exact(h0, b, Tart, dt, tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4], Ts, Tl, Tv0, Tv1)
            H[i] = h1
            acc += h0 - h1
            t, c, _ = _t_of_h(h1, tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4], Ts, Tl, Tv0, Tv1)
            T[i] = t
            C[i] = min(c, tab[m, 8])
            k[i] = _k_of_t(t, tab[m, 5], tab[m, 6], Ts, Tl, Tv0, Tbody, slope)
        out[blk] = acc


@njit(cache=True)
def _sparse_flat(H, T, C, k, mat, tab, bperf, Tart, idx, sb, st, dt, out, Ts, Tl, Tv0, Tv1, Tbody, slope):
    """Voxels with extra sinks (probe, vessel, surface): perfusion and their channels together.

    ``out[c]`` accumulates channel c's energy (J/m^3); channel 0 is perfusion. Each channel's share is
    ``beta_c int (T - T_c) dt`` with ``int (T - T*) dt = (H_0 - H_1) / beta`` (exact)."""
    nch = sb.shape[1]
    for v in range(idx.size):
        i = idx[v]
        m = mat[i]
        if tab[m, 7] <= 0.0:
            continue
        beta = bperf[i]
        bt = bperf[i] * Tart
        for c in range(nch):
            beta += sb[v, c]
            bt += sb[v, c] * st[v, c]
        if beta * dt <= 1e-12 * tab[m, 1]:
            continue
        tstar = bt / beta
        h0 = H[i]
        h1 = _relax_exact(h0, beta, tstar, dt, tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4], Ts, Tl, Tv0, Tv1)
        H[i] = h1
        intT = tstar * dt + (h0 - h1) / beta
        out[0] += bperf[i] * (intT - Tart * dt)
        for c in range(nch):
            if sb[v, c] > 0.0:
                out[c + 1] += sb[v, c] * (intT - st[v, c] * dt)
        t, cc, _ = _t_of_h(h1, tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4], Ts, Tl, Tv0, Tv1)
        T[i] = t
        C[i] = min(cc, tab[m, 8])
        k[i] = _k_of_t(t, tab[m, 5], tab[m, 6], Ts, Tl, Tv0, Tbody, slope)


# --------------------------------------------------------------------------------------------- solver

SPARSE_CHANNELS = ("probe", "vessel", "surface", "boundary")
STIFF_CHANNELS = ("probe", "vessel")


class SparseSinks:
    """Sinks on a few voxels: flat voxel indices ``idx`` (unique) and per-channel ``beta`` (W/(m^3 K)) and
    reference temperature ``t_ref`` (K), arrays of shape (n_voxels, 4) for the channels probe, vessel, surface,
    boundary.
    Update ``beta``/``t_ref`` in place between steps (e.g. a cryoprobe's surface-temperature history)."""

    def __init__(self, idx: np.ndarray):
        self.idx = np.ascontiguousarray(np.unique(np.asarray(idx, dtype=np.int64)))
        self.beta = np.zeros((self.idx.size, len(SPARSE_CHANNELS)))
        self.t_ref = np.zeros((self.idx.size, len(SPARSE_CHANNELS)))

    @classmethod
    def from_masks(cls, shape, channels: dict):
        """``channels = {name: (mask, beta, t_ref)}``; beta and t_ref scalars or arrays of the grid shape."""
        flat = [np.flatnonzero(m) for m, _, _ in channels.values()]
        obj = cls(np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64))
        for name, (mask, beta, tref) in channels.items():
            obj.set(name, mask, beta, tref)
        return obj

    def rows(self, mask) -> np.ndarray:
        where = np.flatnonzero(mask)
        pos = np.searchsorted(self.idx, where)
        if np.any(pos >= self.idx.size) or np.any(self.idx[np.minimum(pos, self.idx.size - 1)] != where):
            raise ValueError("mask has voxels outside the sparse sink set")
        return pos

    def set(self, name, mask, beta, t_ref) -> None:
        c = SPARSE_CHANNELS.index(name)
        pos = self.rows(mask)
        sel = np.flatnonzero(mask)
        self.beta[pos, c] = np.asarray(beta, dtype=float).reshape(-1)[sel] if np.ndim(beta) else beta
        self.t_ref[pos, c] = np.asarray(t_ref, dtype=float).reshape(-1)[sel] if np.ndim(t_ref) else t_ref


class HeatSolver:
    """Advances ``H`` and ``T`` of a :class:`HeatProperties` domain and keeps the energy ledger (J).

    ``step(dt, q_ext=None, q_met=None, perfusion=None, t_arterial=..., sparse=None)``: ``q_ext`` and ``q_met``
    W/m^3 arrays (or None), ``perfusion`` the Pennes coefficient w_b rho_b c_b per voxel (W/(m^3 K)) relaxing
    towards ``t_arterial`` (K), ``sparse`` a :class:`SparseSinks`. Ledger keys: ``delivered`` (Q_ext),
    ``metabolic``, and the energy removed by ``perfusion``, ``probe``, ``vessel``, ``surface`` (negative when
    the sink heats, e.g. perfusion of frozen tissue).
    """

    def __init__(self, props: HeatProperties, spacing, T0):
        self.p = props
        self.spacing = tuple(float(h) for h in spacing)
        self.dV = float(np.prod(self.spacing))
        self.shape = props.material.shape
        ph = props.phase
        self._temps = (ph.t_solidus, ph.t_liquidus, ph.t_vapor_start, ph.t_vapor_end)
        self._kt = (ph.t_body, ph.k_slope)
        self._tab = props.table()
        self._mat = props.material.reshape(-1)
        self.domain = props.domain
        self.T = np.ascontiguousarray(np.broadcast_to(np.asarray(T0, dtype=float), self.shape)).copy()
        self.H = np.zeros(self.shape)
        self.C = np.zeros(self.shape)
        self.k = np.zeros(self.shape)
        self._Tlin = np.zeros(self.shape)
        self._none = np.zeros(1)
        self._skip = np.zeros(self.T.size, dtype=np.bool_)
        self._blk = np.zeros(64)
        self._viol = np.zeros(64)
        _enthalpy_flat(self.T.reshape(-1), self.H.reshape(-1), self._mat, self._tab, *self._temps)
        self._refresh(self._none)
        self.H0_total = self.stored()
        self.ledger = {"delivered": 0.0, "metabolic": 0.0, "perfusion": 0.0, **{c: 0.0 for c in SPARSE_CHANNELS}}
        self.linearization_error = 0.0

    def _refresh(self, dH):
        _state_flat(self.H.reshape(-1), dH.reshape(-1), self.T.reshape(-1), self.C.reshape(-1), self.k.reshape(-1),
                    self._mat, self._tab, *self._temps, *self._kt)

    # ------------------------------------------------------------------ state
    def stored(self) -> float:
        return float(self.H.sum(dtype=np.float64)) * self.dV

    def fractions(self) -> tuple[np.ndarray, np.ndarray]:
        """(liquid fraction of the water: 0 frozen .. 1 thawed; vapour fraction: 0 .. 1 desiccated)."""
        liq, vap = np.empty(self.shape), np.empty(self.shape)
        _fractions_flat(self.H.reshape(-1), liq.reshape(-1), vap.reshape(-1), self._mat, self._tab, *self._temps)
        return liq, vap

    def latent_stored(self) -> float:
        liq, vap = self.fractions()
        m = self.p.material
        return float(np.sum(self.p.L_f[m] * liq + self.p.L_v[m] * vap)) * self.dV

    def set_temperature(self, T) -> None:
        """Reset the state to temperature T (K) and restart the ledger (e.g. after equilibrating)."""
        self.T[...] = T
        _enthalpy_flat(self.T.reshape(-1), self.H.reshape(-1), self._mat, self._tab, *self._temps)
        self._refresh(self._none)
        self.H0_total = self.stored()
        self.ledger = {k: 0.0 for k in self.ledger}

    # ------------------------------------------------------------------ step
    def step(self, dt: float, q_ext=None, q_met=None, perfusion=None, t_arterial: float = T0C + 37.0,
             sparse: SparseSinks | None = None) -> None:
        dV, dom = self.dV, self.domain
        dt = float(dt)
        self.linearization_error = 0.0
        # Strang splitting: half a conduction step, the sources and sinks over dt, half a conduction step.
        # (Lie splitting leaves an O(dt) error even at steady state, several kelvin beside a cooled tip.)
        self._conduct(0.5 * dt, sparse, reverse=False)
        if q_ext is not None or q_met is not None:
            q = np.zeros(self.shape)
            if q_ext is not None:
                q += q_ext
                self.ledger["delivered"] += dt * float(np.sum(q_ext, where=dom)) * dV
            if q_met is not None:
                qm = np.broadcast_to(q_met, self.shape)
                q += qm
                self.ledger["metabolic"] += dt * float(np.sum(qm, where=dom)) * dV
            q *= dt * dom
            self._refresh(q)
        self._sinks(dt, perfusion, t_arterial, sparse)
        self._conduct(0.5 * dt, sparse, reverse=True)

    def _conduct(self, dt, sparse, reverse):
        """Linearised-enthalpy LOD conduction.

        Voxels held by a stiff sink (probe, vessel lumen) conduct with capacity ``C + beta dt``: the extra
        capacity is their sink acting implicitly during the sweeps (it keeps them at their set temperature), so
        the heat it takes up is booked to that sink's channel, and only ``C dT`` goes into the voxel's enthalpy.
        """
        theta = self.C
        extra = None
        if sparse is not None and sparse.idx.size:
            cols = [SPARSE_CHANNELS.index(c) for c in STIFF_CHANNELS]
            stiff = sparse.beta[:, cols] * self.domain.reshape(-1)[sparse.idx, None]     # (n, 2)
            extra = dt * stiff
            theta = self.C.copy()
            theta.reshape(-1)[sparse.idx] += extra.sum(axis=1)
        self._Tlin[...] = self.T
        lod_diffuse(self._Tlin, theta, self.k, dt, self.spacing, reverse=reverse)
        if extra is not None:
            dT = (self._Tlin.reshape(-1) - self.T.reshape(-1))[sparse.idx]
            for j, name in enumerate(STIFF_CHANNELS):
                self.ledger[name] += float(np.sum(extra[:, j] * dT)) * self.dV   # heat taken up = removed
        _conduct_update_flat(self.H.reshape(-1), self._Tlin.reshape(-1), self.T.reshape(-1), self.C.reshape(-1),
                             self.C.reshape(-1), self.k.reshape(-1), self._mat, self._tab, *self._temps, *self._kt,
                             self._viol)
        self.linearization_error = max(self.linearization_error, float(self._viol.max()))

    def _sinks(self, dt, perfusion, t_arterial, sparse):
        """Perfusion everywhere and the sparse channels, integrated exactly per voxel."""
        dV = self.dV
        if perfusion is None:
            perfusion = np.zeros(self.shape)
        bperf = np.ascontiguousarray(np.broadcast_to(perfusion, self.shape), dtype=float).reshape(-1)
        has_sparse = sparse is not None and sparse.idx.size > 0
        if has_sparse:
            self._skip[sparse.idx] = True
        _perfusion_flat(self.H.reshape(-1), self.T.reshape(-1), self.C.reshape(-1), self.k.reshape(-1), self._mat,
                        self._tab, bperf, float(t_arterial), self._skip, dt, self._blk, *self._temps, *self._kt)
        self.ledger["perfusion"] += float(self._blk.sum()) * dV
        if has_sparse:
            out = np.zeros(1 + len(SPARSE_CHANNELS))
            _sparse_flat(self.H.reshape(-1), self.T.reshape(-1), self.C.reshape(-1), self.k.reshape(-1), self._mat,
                         self._tab, bperf, float(t_arterial), sparse.idx, sparse.beta, sparse.t_ref, dt, out,
                         *self._temps, *self._kt)
            self.ledger["perfusion"] += out[0] * dV
            for c, name in enumerate(SPARSE_CHANNELS):
                self.ledger[name] += out[c + 1] * dV
            self._skip[sparse.idx] = False

    def save(self) -> tuple:
        """A copy of the state and ledger, for rejecting a step (see ``linearization_error``)."""
        return self.H.copy(), self.T.copy(), self.C.copy(), self.k.copy(), dict(self.ledger)

    def restore(self, saved: tuple) -> None:
        H, T, C, k, ledger = saved
        self.H[...], self.T[...], self.C[...], self.k[...] = H, T, C, k
        self.ledger = dict(ledger)

    def energy_balance(self) -> dict:
        """Ledger (J) with the stored change (sensible + latent) and the relative balance error."""
        d_stored = self.stored() - self.H0_total
        inflow = self.ledger["delivered"] + self.ledger["metabolic"]
        removed = self.ledger["perfusion"] + sum(self.ledger[c] for c in SPARSE_CHANNELS)
        residual = inflow - removed - d_stored
        scale = max(abs(self.ledger["delivered"]), abs(removed), abs(d_stored), 1e-30)
        return {**self.ledger, "stored_change": d_stored, "residual": residual, "rel_error": abs(residual) / scale}


# --------------------------------------------------------------------------------------------- helpers

def air_face_count(domain: np.ndarray) -> np.ndarray:
    """Number of faces of each domain voxel shared with a non-domain voxel inside the grid (skin-air faces)."""
    d = domain
    n = np.zeros(d.shape, dtype=np.float64)
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        n[lo] += d[lo] & ~d[hi]
        n[hi] += d[hi] & ~d[lo]
    return n * d


def latent_heats(density, water_fraction):
    """Volumetric latent heats of fusion and vaporisation from the water content [D]."""
    rho_w = np.asarray(density) * np.asarray(water_fraction)
    return rho_w * LATENT_FUSION_WATER, rho_w * LATENT_VAPORISATION_WATER
