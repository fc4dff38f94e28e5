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

Time discretisation of one step ``dt`` (symmetric splitting: half the sources, half a conduction step with the
sweeps in x, y, z order, then the other half of the sources and the sinks over dt, then half a conduction step
with the sweeps in z, y, x order). The conduction half steps are backward Euler, so the scheme is first order
in time; each half step is preceded by its half of the sources, which makes a source balanced by conduction
(a heated voxel beside a cooled tip) reach the exact discrete steady state whatever dt (lumping the whole
source between the half steps left it 20 % too hot at 2 s steps with 0.5 mm voxels):

1. sources: ``H += dt/2 (Q_ext + Q_met)`` before each conduction half step;
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
the latent plateau it was heading for, large when a high-capacity voxel swung through its branch (a boiling
voxel beside cold tissue could swing through the whole plateau in one long step: energy stays conserved, the
temperature does not).

Local nonlinear correction (``step(..., nonlinear_correction=True)``, used by the thermal sessions): after each
linearised half step, the voxels whose update left their branch (by more than ``correction_threshold``; or
every branch change, ``correct_crossings``) and their neighbours within ``correction_halo`` face steps form a
small active set S (hundreds to a few thousand voxels beside an RF electrode or a cryoprobe). On S the half
step is re-solved as backward Euler with the true H(T)::

    H_p(T_p) = H0_p + e_p (u_p - T_p) + sum_{q in S} g_pq [(T_q - T_p) - (u_q - u_p)]

(u = T_lin, H0 = the linearised H, g_pq = dt k_pq / h^2 with the step's k, e_p = beta dt of a stiff voxel):
the fluxes between members of S are re-evaluated, every flux across the border of S stays the LOD's, and
voxels that kept their branch satisfy it with T = u. Nonlinear Gauss-Seidel solves it (each voxel's equation
exactly through its branches); the new H is then written in flux form from the last iterate, so sum(H) (plus
the stiff sinks' share, booked to their channels) is conserved to round-off even if the iteration is cut
short. ``linearization_error`` then reports what is left (normally < 1e-6 K), and callers reject steps only
when the correction did not converge. It replaces the step rejections that cost the 0.5 mm RFA benchmark 957
halved sub-steps (BENCHMARKS.md).

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
    # numerical, local nonlinear correction of the conduction half steps (HeatSolver.step(nonlinear_correction=
    # True), module docstring): voxels whose linearised update left their branch by more than
    # ``correction_threshold`` (K; above round-off, which would flag every voxel), and with ``correct_crossings``
    # every voxel that changed its branch, plus their neighbours within ``correction_halo`` face steps, are
    # re-solved with the true H(T) (Gauss-Seidel to ``correction_tolerance`` K, at most
    # ``correction_max_sweeps`` sweeps); fluxes across the border of that set stay the LOD's.
    correction_threshold: float = 0.01
    correct_crossings: bool = False
    correction_halo: int = 2
    correction_tolerance: float = 1e-7
    correction_max_sweeps: int = 400

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
        """(n_materials, 19) table for the kernels: C_f, C_u, C_d, L_f, L_v, k_u, k_f, domain flag, conduction
        capacity cap (columns 0-8), then the branch constants of H(T) precomputed (no divisions per voxel):
        mushy slope, H_l, H_v0, vaporising slope, H_v1 (9-13) and the inverse slopes of the five branches
        (14-18; 0 for material 0)."""
        ph = self.phase
        Ts, Tl, Tv0, Tv1 = ph.t_solidus, ph.t_liquidus, ph.t_vapor_start, ph.t_vapor_end
        Cf, Cu, Cd = self.C_f, self.C_u, ph.dry_capacity_factor * self.C_u
        s_mushy = 0.5 * (Cf + Cu) + self.L_f / (Tl - Ts)      # same expressions as _branch_ends
        Hl = s_mushy * (Tl - Ts)
        Hv0 = Hl + Cu * (Tv0 - Tl)
        s_vap = Cu + self.L_v / (Tv1 - Tv0)
        Hv1 = Hv0 + s_vap * (Tv1 - Tv0)

        def inv(a):
            return np.divide(1.0, a, out=np.zeros_like(a), where=a > 0)

        return np.ascontiguousarray(np.stack([Cf, Cu, Cd, self.L_f, self.L_v, self.k_u, self.k_f,
                                              (self.C_u > 0).astype(float), ph.conduction_capacity_cap * self.C_u,
                                              s_mushy, Hl, Hv0, s_vap, Hv1,
                                              inv(Cf), inv(s_mushy), inv(Cu), inv(s_vap), inv(Cd)], axis=1))


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
def _t_of_h_tab(h, tab, m, Ts, Tl, Tv0, Tv1):
    """:func:`_t_of_h` from the precomputed table row ``m`` (multiplications instead of divisions)."""
    if h <= 0.0:
        return Ts + h * tab[m, 14], tab[m, 0], 0
    if h <= tab[m, 10]:
        return Ts + h * tab[m, 15], tab[m, 9], 1
    if h <= tab[m, 11]:
        return Tl + (h - tab[m, 10]) * tab[m, 16], tab[m, 1], 2
    if h <= tab[m, 13]:
        return Tv0 + (h - tab[m, 11]) * tab[m, 17], tab[m, 12], 3
    return Tv1 + (h - tab[m, 13]) * tab[m, 18], tab[m, 2], 4


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
            t, c, _ = _t_of_h_tab(h, tab, m, Ts, Tl, Tv0, Tv1)
            T[i] = t
            C[i] = min(c, tab[m, 8])
            k[i] = _k_of_t(t, tab[m, 5], tab[m, 6], Ts, Tl, Tv0, Tbody, slope)
        else:
            C[i] = 0.0
            k[i] = 0.0


@njit(cache=True, inline="always")
def _branch_of_t(t, Ts, Tl, Tv0, Tv1):
    if t <= Ts:
        return 0
    if t <= Tl:
        return 1
    if t <= Tv0:
        return 2
    if t <= Tv1:
        return 3
    return 4


@njit(cache=True, parallel=True)
def _conduct_update_flat(H, Tlin, T, theta, C, k_new, mat, tab, Ts, Tl, Tv0, Tv1, Tbody, slope, viol,
                         flag, nflag, sel_tol, crossings):
    """After the LOD sweeps: H += theta (T_lin - T), then T, C from H and k (into ``k_new``) from T.

    ``viol[b]`` (per block of voxels) gets the largest distance of the new T(H) from the interval between the
    old temperature and T_lin: zero when a voxel stays in its branch or only moves into the latent plateau it
    was heading for, large when a high-capacity voxel swung through its branch.
    With ``sel_tol >= 0`` a voxel whose distance exceeds ``sel_tol`` (or, with ``crossings``, that changed its
    phase branch) is flagged (``flag[i] = 1``, counted in ``nflag[b]``) for the local correction and left out
    of ``viol``; with ``sel_tol < 0`` nothing is flagged."""
    n = T.size
    nb = viol.size
    for blk in prange(nb):
        worst = 0.0
        cnt = 0
        for i in range(blk * n // nb, (blk + 1) * n // nb):
            m = mat[i]
            if tab[m, 7] > 0.0:
                t_old = T[i]
                tl = Tlin[i]
                h = H[i] + theta[i] * (tl - t_old)
                H[i] = h
                t, c, b = _t_of_h_tab(h, tab, m, Ts, Tl, Tv0, Tv1)
                T[i] = t
                C[i] = min(c, tab[m, 8])
                k_new[i] = _k_of_t(t, tab[m, 5], tab[m, 6], Ts, Tl, Tv0, Tbody, slope)
                lo = min(t_old, tl)
                hi = max(t_old, tl)
                d = lo - t if t < lo else (t - hi if t > hi else 0.0)
                if sel_tol >= 0.0:
                    f = d > sel_tol
                    if crossings and not f:
                        f = b != _branch_of_t(t_old, Ts, Tl, Tv0, Tv1)
                    if f:
                        flag[i] = 1
                        cnt += 1
                        continue
                if d > worst:
                    worst = d
        viol[blk] = worst
        nflag[blk] = cnt


# --------------------------------------------------------------------------------------------- local correction

@njit(cache=True)
def _active_set(flag, nflag, nx, ny, nz, halo, mat, tab, loc):
    """Flat indices (sorted) of the domain voxels within ``halo`` face steps (Manhattan distance) of a flagged
    voxel; clears ``flag``. ``nflag`` are the per-block flag counts of :func:`_conduct_update_flat` (only blocks
    with flags are scanned). ``loc`` (int32, grid size, all -1 on entry) gets each member's position in the set."""
    n = flag.size
    nb = nflag.size
    seeds = np.empty(max(64, int(nflag.sum())), np.int64)
    ns = 0
    for blk in range(nb):
        if nflag[blk] == 0:
            continue
        for i in range(blk * n // nb, (blk + 1) * n // nb):
            if flag[i]:
                flag[i] = 0
                seeds[ns] = i
                ns += 1
    cap = max(64, ns * 8)
    out = np.empty(cap, np.int64)
    cnt = 0
    for v in range(ns):
        i = seeds[v]
        ix = i // (ny * nz)
        iy = (i // nz) % ny
        iz = i % nz
        for dx in range(-halo, halo + 1):
            x = ix + dx
            if x < 0 or x >= nx:
                continue
            rx = halo - abs(dx)
            for dy in range(-rx, rx + 1):
                y = iy + dy
                if y < 0 or y >= ny:
                    continue
                ry = rx - abs(dy)
                for dz in range(-ry, ry + 1):
                    z = iz + dz
                    if z < 0 or z >= nz:
                        continue
                    j = (x * ny + y) * nz + z
                    if loc[j] >= 0 or tab[mat[j], 7] <= 0.0:
                        continue
                    loc[j] = 0
                    if cnt == out.size:
                        out = np.concatenate((out, np.empty(out.size, np.int64)))
                    out[cnt] = j
                    cnt += 1
    act = np.sort(out[:cnt])
    for p in range(cnt):
        loc[act[p]] = p
    return act


@njit(cache=True, inline="always")
def _solve_h_plus_linear(r, a, u, Cf, Cu, Cd, Lf, Lv, Ts, Tl, Tv0, Tv1):
    """T with H(T) + a (T - u) = r (H piecewise linear and increasing, a >= 0): exact, branch by branch."""
    s_mushy, Hl, Hv0, s_vap, Hv1 = _branch_ends(Cf, Cu, Lf, Lv, Ts, Tl, Tv0, Tv1)
    if r <= a * (Ts - u):
        return Ts + (r - a * (Ts - u)) / (Cf + a)
    if r <= Hl + a * (Tl - u):
        return Ts + (r - a * (Ts - u)) / (s_mushy + a)
    if r <= Hv0 + a * (Tv0 - u):
        return Tl + (r - Hl - a * (Tl - u)) / (Cu + a)
    if r <= Hv1 + a * (Tv1 - u):
        return Tv0 + (r - Hv0 - a * (Tv0 - u)) / (s_vap + a)
    return Tv1 + (r - Hv1 - a * (Tv1 - u)) / (Cd + a)


@njit(cache=True)
def _local_correct(act, loc, H, T, Tlin, C, k_old, k_new, mat, tab, e, dt, hx, hy, hz, nx, ny, nz,
                   Ts, Tl, Tv0, Tv1, Tbody, slope, tol, max_sweeps, Tit):
    """Nonlinear implicit conduction on the active set S, on top of the linear LOD result.

    For p in S (u = T_lin, H0 = H after the linearised update, g_pq = dt k_pq / h^2 the face conductance with
    the step's k, e_p = the stiff-sink capacity beta dt)::

        H_p(T_p) = H0_p + e_p (u_p - T_p) + sum_{q in S} g_pq [(T_q - T_p) - (u_q - u_p)]

    i.e. the fluxes between members of S are re-evaluated with the true H(T) (backward Euler), while every
    flux across the border of S stays the LOD's. Voxels that kept their branch already satisfy this with
    T = u (up to the splitting defect, kept as a fixed source). Solved by symmetric nonlinear Gauss-Seidel
    (each voxel's equation exactly through its branches). The new H is then written in flux form from the
    final iterate, so sum(H) over S (plus the stiff sinks' e (u - T), booked by the caller) is unchanged to
    round-off whether or not the iteration converged. ``Tit`` gets the final iterate; returns (largest
    |T(H) - iterate| in K, sweeps)."""
    ns = act.size
    nbr = np.full((ns, 6), -1, np.int64)
    g = np.zeros((ns, 6))
    wax = (dt / (hx * hx), dt / (hy * hy), dt / (hz * hz))
    for p in range(ns):
        i = act[p]
        ix = i // (ny * nz)
        iy = (i // nz) % ny
        iz = i % nz
        ki = k_old[i]
        for d in range(6):
            ax = d >> 1
            sgn = 1 if d & 1 else -1
            if ax == 0:
                x = ix + sgn
                if x < 0 or x >= nx:
                    continue
                j = i + sgn * ny * nz
            elif ax == 1:
                y = iy + sgn
                if y < 0 or y >= ny:
                    continue
                j = i + sgn * nz
            else:
                z = iz + sgn
                if z < 0 or z >= nz:
                    continue
                j = i + sgn
            q = loc[j]
            if q < 0:
                continue
            kj = k_old[j]
            nbr[p, d] = q
            g[p, d] = wax[ax] * 2.0 * ki * kj / max(ki + kj, 1e-300)
        Tit[p] = Tlin[i]
    sweeps = 0
    for it in range(max_sweeps):
        sweeps += 1
        worst = 0.0
        for s in range(ns):
            p = s if it % 2 == 0 else ns - 1 - s
            i = act[p]
            m = mat[i]
            a = e[p]
            r = H[i]
            for d in range(6):
                q = nbr[p, d]
                if q >= 0:
                    a += g[p, d]
                    r += g[p, d] * (Tit[q] - Tlin[act[q]])
            u = Tlin[i]
            t = _solve_h_plus_linear(r, a, u, tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4], Ts, Tl, Tv0, Tv1)
            dd = abs(t - Tit[p])
            if dd > worst:
                worst = dd
            Tit[p] = t
        if worst < tol:
            break
    # flux form from the final iterate: exactly antisymmetric between members, so sum(H) over S is kept
    Hn = np.empty(ns)
    for p in range(ns):
        i = act[p]
        u = Tlin[i]
        tp = Tit[p]
        acc = e[p] * (u - tp)
        for d in range(6):
            q = nbr[p, d]
            if q >= 0:
                acc += g[p, d] * ((Tit[q] - tp) - (Tlin[act[q]] - u))
        Hn[p] = H[i] + acc
    res = 0.0
    for p in range(ns):
        i = act[p]
        m = mat[i]
        h = Hn[p]
        H[i] = h
        t, c, _ = _t_of_h_tab(h, tab, m, Ts, Tl, Tv0, Tv1)
        T[i] = t
        C[i] = min(c, tab[m, 8])
        k_new[i] = _k_of_t(t, tab[m, 5], tab[m, 6], Ts, Tl, Tv0, Tbody, slope)
        res = max(res, abs(t - Tit[p]))
        loc[i] = -1
    return res, sweeps


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
def _source_perfusion_flat(H, T, C, k, mat, tab, qext, qmet, bperf, Tart, skip, dts, dt, out, Ts, Tl, Tv0, Tv1,
                           Tbody, slope):
    """Sources and the perfusion sink in one pass over the domain: ``H += dts (q_ext + q_met)``, then the exact
    perfusion relaxation over ``dt`` for every voxel not in the sparse list, then T, C, k from H (only where H
    changed).

    ``qext``/``qmet``/``bperf`` have the grid size or size 1 (a scalar for all voxels; ``qext`` of size 0 =
    none). ``out[blk, 0:3]`` per-block sums: q_ext, q_met (W/m^3) and perfusion energy (J/m^3)."""
    n = H.size
    nb = out.shape[0]
    has_e = qext.size > 0
    full_e = qext.size == n
    full_m = qmet.size == n
    full_b = bperf.size == n
    for blk in prange(nb):
        se = 0.0
        sm = 0.0
        acc = 0.0
        last_x = -1.0       # exp(-x) of the previous fast-path voxel: neighbours mostly share beta and C_u
        last_f = 1.0
        for i in range(blk * n // nb, (blk + 1) * n // nb):
            m = mat[i]
            if tab[m, 7] <= 0.0:
                continue
            qe = (qext[i] if full_e else qext[0]) if has_e else 0.0
            qm = qmet[i] if full_m else qmet[0]
            se += qe
            sm += qm
            dq = dts * (qe + qm)
            b = bperf[i] if full_b else bperf[0]
            # a sink that cannot move H by 1e-12 of C*1K is skipped (tiny beta would also amplify round-off)
            sink = not (b * dt <= 1e-12 * tab[m, 1] or skip[i])
            if dq == 0.0 and not sink:
                continue
            h0 = H[i] + dq
            t0, c0, br = _t_of_h_tab(h0, tab, m, Ts, Tl, Tv0, Tv1)
            if not sink:
                h1 = h0
                t = t0
                c = c0
            elif br == 2 and Tl < t0 < Tv0 and Tl < Tart < Tv0:
                # fast path: both in the unfrozen branch, a plain exponential (same result as _relax_exact)
                cu = tab[m, 1]
                x = b * dt / cu
                if x != last_x:
                    last_x = x
                    last_f = np.exp(-x)
                t = Tart + (t0 - Tart) * last_f
                h1 = h0 + cu * (t - t0)
                c = cu
            else:
                h1 = _relax_exact(h0, b, Tart, dt, tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4],
                                  Ts, Tl, Tv0, Tv1)
                t, c, _ = _t_of_h_tab(h1, tab, m, Ts, Tl, Tv0, Tv1)
            acc += h0 - h1
            H[i] = h1
            T[i] = t
            C[i] = min(c, tab[m, 8])
            k[i] = _k_of_t(t, tab[m, 5], tab[m, 6], Ts, Tl, Tv0, Tbody, slope)
        out[blk, 0] = se
        out[blk, 1] = sm
        out[blk, 2] = acc


@njit(cache=True, parallel=True)
def _sparse_flat(H, T, C, k, mat, tab, bperf, Tart, idx, sb, st, dt, out, Ts, Tl, Tv0, Tv1, Tbody, slope):
    """Voxels with extra sinks (probe, vessel, surface, boundary): perfusion and their channels together.

    ``out[blk, c]`` (per block of the voxel list) gets channel c's energy (J/m^3); channel 0 is perfusion. Each
    channel's share is ``beta_c int (T - T_c) dt`` with ``int (T - T*) dt = (H_0 - H_1) / beta`` (exact)."""
    nch = sb.shape[1]
    nv = idx.size
    nb = out.shape[0]
    for blk in prange(nb):
        for c in range(nch + 1):
            out[blk, c] = 0.0
        for v in range(blk * nv // nb, (blk + 1) * nv // nb):
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
            h1 = _relax_exact(h0, beta, tstar, dt, tab[m, 0], tab[m, 1], tab[m, 2], tab[m, 3], tab[m, 4],
                              Ts, Tl, Tv0, Tv1)
            H[i] = h1
            intT = tstar * dt + (h0 - h1) / beta
            out[blk, 0] += bperf[i] * (intT - Tart * dt)
            for c in range(nch):
                if sb[v, c] > 0.0:
                    out[blk, c + 1] += sb[v, c] * (intT - st[v, c] * dt)
            t, cc, _ = _t_of_h_tab(h1, tab, m, Ts, Tl, Tv0, Tv1)
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
        self._k_next = np.zeros(self.shape)    # k after a conduction update (swapped with k): the LOD's k is kept
        self._none = np.zeros(1)
        self._empty = np.zeros(0)
        self._noflag = np.zeros(0, dtype=np.uint8)
        self._skip = np.zeros(self.T.size, dtype=np.bool_)
        self._blk = np.zeros((64, 3))
        self._viol = np.zeros(64)
        self._nflag = np.zeros(64, dtype=np.int64)
        self._flag = None                   # per-voxel flags and set positions of the local correction (lazy)
        self._loc = None
        _enthalpy_flat(self.T.reshape(-1), self.H.reshape(-1), self._mat, self._tab, *self._temps)
        self._refresh(self._none)
        self.H0_total = self.stored()
        self.ledger = {"delivered": 0.0, "metabolic": 0.0, "perfusion": 0.0, **{c: 0.0 for c in SPARSE_CHANNELS}}
        self.linearization_error = 0.0
        self.correction_stats = {"half_steps": 0, "voxels": 0, "max_voxels": 0, "sweeps": 0, "max_sweeps": 0}

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
             sparse: SparseSinks | None = None, nonlinear_correction: bool = False) -> None:
        """One Strang step. With ``nonlinear_correction`` each conduction half step is followed by the local
        correction (:meth:`_correct`) on the voxels whose linearised update left their phase branch (by more
        than ``PhaseParams.correction_threshold``, or every branch change with ``correct_crossings``), and
        ``linearization_error`` then reports what is left after it (normally < 1e-6 K)."""
        dt = float(dt)
        half = 0.5 * dt
        self.linearization_error = 0.0
        # Symmetric splitting: half the sources, half a conduction step, the other half of the sources and the
        # sinks over dt, half a conduction step. Each backward-Euler half step is preceded by its share of the
        # sources, so a source balanced by conduction has the exact discrete steady state (with the whole
        # source lumped between the half steps, a heated voxel beside a cooled tip was 20 % too hot at 2 s).
        has_q = q_ext is not None or q_met is not None
        if has_q:
            self._sources_sinks(half, q_ext, q_met, None, t_arterial, None, source_dt=half)
        self._conduct(half, sparse, reverse=False, correct=nonlinear_correction)
        self._sources_sinks(dt, q_ext, q_met, perfusion, t_arterial, sparse, source_dt=half)
        self._conduct(half, sparse, reverse=True, correct=nonlinear_correction)

    def _conduct(self, dt, sparse, reverse, correct=False):
        """Linearised-enthalpy LOD conduction (then, with ``correct``, the local nonlinear correction).

        Voxels held by a stiff sink (probe, vessel lumen) conduct with capacity ``C + beta dt``: the extra
        capacity is their sink acting implicitly during the sweeps (it keeps them at their set temperature), so
        the heat it takes up is booked to that sink's channel, and only ``C dT`` goes into the voxel's enthalpy.
        """
        Cf, Tf = self.C.reshape(-1), self.T.reshape(-1)
        extra = sidx = None
        if sparse is not None and sparse.idx.size:
            cols = [SPARSE_CHANNELS.index(c) for c in STIFF_CHANNELS]
            rows = np.flatnonzero(sparse.beta[:, cols].any(axis=1))     # the stiff voxels only
            sidx = sparse.idx[rows]
            keep = self.domain.reshape(-1)[sidx]
            rows, sidx = rows[keep], sidx[keep]
            if sidx.size:
                extra = dt * sparse.beta[np.ix_(rows, cols)]                   # (n_stiff, 2)
                c_saved = Cf[sidx]
                Cf[sidx] = c_saved + extra.sum(axis=1)     # theta of the sweeps; restored right after
        np.copyto(self._Tlin, self.T)
        try:
            lod_diffuse(self._Tlin, self.C, self.k, dt, self.spacing, reverse=reverse)
        finally:
            if extra is not None:
                Cf[sidx] = c_saved
        if extra is not None:
            dT = self._Tlin.reshape(-1)[sidx] - Tf[sidx]
            for j, name in enumerate(STIFF_CHANNELS):
                self.ledger[name] += float(np.sum(extra[:, j] * dT)) * self.dV   # heat taken up = removed
        ph = self.p.phase
        sel = -1.0
        if correct:
            sel = max(float(ph.correction_threshold), 0.0)
            if self._flag is None:
                self._flag = np.zeros(self.T.size, dtype=np.uint8)
                self._loc = np.full(self.T.size, -1, dtype=np.int32)
        flag = self._flag if correct else self._noflag
        _conduct_update_flat(self.H.reshape(-1), self._Tlin.reshape(-1), Tf, Cf, Cf, self._k_next.reshape(-1),
                             self._mat, self._tab, *self._temps, *self._kt, self._viol, flag, self._nflag, sel,
                             bool(ph.correct_crossings))
        err = float(self._viol.max())
        if correct and int(self._nflag.sum()) > 0:
            err = max(err, self._correct(dt, sidx, extra))
        self.k, self._k_next = self._k_next, self.k
        self.linearization_error = max(self.linearization_error, err)

    def _correct(self, dt, sidx, extra) -> float:
        """Local nonlinear correction of a conduction half step (see :func:`_local_correct`) on the flagged
        voxels and their neighbours within ``PhaseParams.correction_halo`` face steps. Returns the remaining
        linearisation error (K)."""
        ph = self.p.phase
        nx, ny, nz = self.shape
        act = _active_set(self._flag, self._nflag, nx, ny, nz, int(ph.correction_halo), self._mat, self._tab, self._loc)
        e = np.zeros(act.size)
        rows = match = None
        if extra is not None:     # sidx: the stiff voxels (sorted, as sparse.idx is), extra their beta dt
            rows = np.minimum(np.searchsorted(sidx, act), sidx.size - 1)
            match = sidx[rows] == act
            rows = rows[match]
            e[match] = extra.sum(axis=1)[rows]
        Tit = np.empty(act.size)
        res, sweeps = _local_correct(act, self._loc, self.H.reshape(-1), self.T.reshape(-1), self._Tlin.reshape(-1),
                                     self.C.reshape(-1), self.k.reshape(-1), self._k_next.reshape(-1), self._mat,
                                     self._tab, e, dt, *self.spacing, nx, ny, nz, *self._temps, *self._kt,
                                     float(ph.correction_tolerance), int(ph.correction_max_sweeps), Tit)
        if extra is not None and rows.size:
            dT = Tit[match] - self._Tlin.reshape(-1)[act[match]]
            for j, name in enumerate(STIFF_CHANNELS):
                self.ledger[name] += float(np.sum(extra[rows, j] * dT)) * self.dV
        st = self.correction_stats
        st["half_steps"] += 1
        st["voxels"] += int(act.size)
        st["max_voxels"] = max(st["max_voxels"], int(act.size))
        st["sweeps"] += int(sweeps)
        st["max_sweeps"] = max(st["max_sweeps"], int(sweeps))
        return float(res)

    def _sources_sinks(self, dt, q_ext, q_met, perfusion, t_arterial, sparse, source_dt=None):
        """Sources over ``source_dt`` (default dt), then perfusion everywhere and the sparse channels over dt,
        integrated exactly per voxel."""
        dts = dt if source_dt is None else float(source_dt)
        dV = self.dV
        n = self.T.size

        def flat(a):
            if a is None:
                return None
            a = np.asarray(a, dtype=np.float64)
            if a.size == 1:
                return a.reshape(1)
            if a.shape != self.shape:
                a = np.broadcast_to(a, self.shape)
            return np.ascontiguousarray(a).reshape(-1)

        qe = flat(q_ext)
        qm = flat(q_met)
        bp = flat(perfusion)
        has_sparse = sparse is not None and sparse.idx.size > 0
        if has_sparse:
            self._skip[sparse.idx] = True
        _source_perfusion_flat(self.H.reshape(-1), self.T.reshape(-1), self.C.reshape(-1), self.k.reshape(-1),
                               self._mat, self._tab, self._empty if qe is None else qe,
                               np.zeros(1) if qm is None else qm, np.zeros(1) if bp is None else bp,
                               float(t_arterial), self._skip, dts, dt, self._blk, *self._temps, *self._kt)
        sums = self._blk.sum(axis=0)
        if qe is not None:
            self.ledger["delivered"] += dts * float(sums[0]) * dV
        if qm is not None:
            self.ledger["metabolic"] += dts * float(sums[1]) * dV
        self.ledger["perfusion"] += float(sums[2]) * dV
        if has_sparse:
            out = np.zeros((16, 1 + len(SPARSE_CHANNELS)))
            bperf = bp if (bp is not None and bp.size == n) else np.full(n, 0.0 if bp is None else float(bp[0]))
            _sparse_flat(self.H.reshape(-1), self.T.reshape(-1), self.C.reshape(-1), self.k.reshape(-1), self._mat,
                         self._tab, bperf, float(t_arterial), sparse.idx, sparse.beta, sparse.t_ref, dt, out,
                         *self._temps, *self._kt)
            out = out.sum(axis=0)
            self.ledger["perfusion"] += out[0] * dV
            for c, name in enumerate(SPARSE_CHANNELS):
                self.ledger[name] += out[c + 1] * dV
            self._skip[sparse.idx] = False

    def save(self, into: tuple | None = None) -> tuple:
        """A copy of the state (H, T) and ledger, for rejecting a step (see ``linearization_error``); C and k are
        functions of H and are recomputed by :meth:`restore`. ``into``: a tuple returned by an earlier call whose
        arrays are reused (no allocation, no page faults on 4e6-voxel grids)."""
        if into is None:
            return self.H.copy(), self.T.copy(), dict(self.ledger)
        np.copyto(into[0], self.H)
        np.copyto(into[1], self.T)
        return into[0], into[1], dict(self.ledger)

    def restore(self, saved: tuple) -> None:
        H, T, ledger = saved
        self.H[...] = H
        self._refresh(self._none)
        self.T[...] = T
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
