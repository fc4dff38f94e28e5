"""Radiofrequency ablation electrics: quasi-static potential, Joule heating, sigma(T, damage, vapour), generators.

Equations
---------
Quasi-static (RF ~ 500 kHz, tissue size << wavelength, displacement current neglected)::

    div(sigma grad phi) = 0        in conducting tissue
    phi = V                        on electrode (active) voxels
    phi = 0                        on ground voxels (dispersive pad, far field) and on the listed ground faces
    sigma d phi/dn = 0             on insulated shaft, air (sigma = 0 / outside ``conducting_mask``), other faces
    q = sigma |grad phi|^2         Joule heating, W/m^3

Discretisation: cell-centred finite volumes on the voxel grid. Face conductance between voxels a, b is
``g = A_f / h * 2 sigma_a sigma_b / (sigma_a + sigma_b)`` (harmonic mean; A_f face area, h centre distance).
Electrode and ground voxels are perfect conductors (sigma -> inf in the harmonic mean): a tissue voxel next
to one has ``g = sigma A_f / (theta h)`` with theta = 1/2 by default (staircase: the metal surface is the
shared face; first order for curved surfaces). If the caller gives the conductor's signed distance d
(< 0 inside), theta = d_t / (d_t - d_c) is the fraction of the centre-to-centre segment outside the
conductor (linear interpolation of d; ghost-fluid / Shortley-Weller Dirichlet, Gibou et al. 2002 [R]),
clipped to [min_surface_fraction, 1]; the matrix stays symmetric and an M-matrix. A ground face on the
domain boundary has theta = 1/2. Dirichlet voxels are eliminated (moved to the right-hand side); the
unknowns are the conducting voxels. Tissue islands with no path to any conductor carry no current and are
left at phi = 0 (they would make the matrix singular).

Solver: CG preconditioned by a smoothed-aggregation AMG V-cycle (pyamg kernels, hierarchy built here in CSR,
see :class:`_AMGPCG`), warm-started from the last solution, rtol ~1e-8. The hierarchy is reused while the CG
count stays below ~2x the count of the first solve after its build (sigma changes slowly while heating);
only the matrix values are recomputed when sigma changes (the sparsity pattern and its CSR permutation are
kept; the pattern is rebuilt only if the set of conducting voxels changes).

Heating is computed conservatively from face dissipations: each face dissipates ``g (phi_a - phi_b)^2``;
half goes to each of its two voxels, all of it to the tissue voxel when the other side is an electrode/ground
voxel or a ground face. By Tellegen's theorem ``sum(q) dV = G V^2`` where G = electrode current per volt,
exactly for the exact discrete solution and to the solver tolerance otherwise.

Conductivity model (per voxel; ``sigma_ref`` is the tissue's conductivity at ``t_ref_k``)::

    sigma = sigma_ref * (1 + alpha (T_c - T_ref)) * (1 + gain (1 - exp(-Omega_sigma))) * desiccation(v)
    T_c   = clip(T, t_min_k, t_max_k)          (the linear law is not extrapolated)
    dOmega_sigma/dt = A exp(-Ea / (R T))       (caller integrates; :func:`omega_sigma_rate`)
    desiccation(v) = floor**v        (log-linear, default)   or   (1 - v) + v floor   (linear)

v is the vaporised fraction of the voxel's water (0..1, from the caller's bioheat model). Log-linear is the
default because a voxel is a random mixture of wet and dry tissue, whose effective conductivity lies between
the series and parallel bounds (Lichtenecker's geometric mean); the linear (parallel) rule keeps sigma within
a factor 2 until v > 0.5 and so delays the impedance rise; it is kept as an option.

Generators (pure controllers; the caller does the physics): the circuit is the generator, a series
resistance R_s (body outside the domain, pads, cables) and the tissue resistance 1/G. Impedance seen by the
generator Z = 1/G + R_s; current I = V_gen / Z; tissue power I^2 / G; generator power I^2 Z.
``gen.voltage(t, dt, meas)`` is called once per step, at time t with the state at t, and returns the voltage
across the simulated tissue (electrode to ground in the domain) to hold over [t, t + dt]:
``q = q_per_v2 * V**2``.

Reads: sigma (S/m, per voxel), temperature (K), Omega_sigma (-), vapour fraction (-), masks.
Writes: ElectricSolution (phi per volt, G, q per V^2), sigma arrays, generator logs. Nothing in place.

Limits: without a signed distance the electrode surface is a staircase (first order in h, with an
h-dependent effective radius for needles a few voxels across). Measured for a 17 G needle with a 30 mm tip
in a grounded 50 mm box (tests/test_rf.py, sigma = 0.35 S/m), R at h = 1.0 / 0.69 / 0.5 / 0.35 / 0.25 mm:
staircase 36.6 / 43.0 / 47.6 / 42.0 / 41.7 ohm, signed distance 40.6 / 43.9 / 43.1 / 43.0 / 42.8 ohm; so pass
``electrode_distance`` (``CylinderProbe.active_signed_distance``) for needles. No capacitive currents; the
electrode metal is equipotential; R_s is a lumped hypothesis. Cost at 160^3 voxels (0.5 mm, one needle,
2 loaded cores): pattern ~8 s once, AMG build ~8 s, ~0.7 s per CG iteration, 13-14 iterations from cold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from numba import njit, prange
from scipy.sparse.csgraph import connected_components


__all__ = ["ElectricSolver", "ElectricSolution", "RFConductivityParams", "sigma_of_state", "omega_sigma_rate",
           "RFMeasurement", "ConstantPower", "TargetTemperature", "ImpedanceControl", "param_rows",
           "GAS_CONSTANT", "BODY_TEMPERATURE_K"]

GAS_CONSTANT = 8.314462618      # J/(mol K), CODATA
BODY_TEMPERATURE_K = 310.15     # 37 degC
_KCAL = 4184.0                  # J/kcal (thermochemical)

_FACE_NAMES = ("x-", "x+", "y-", "y+", "z-", "z+")


def param_rows(obj, only_hypotheses: bool = True) -> list[dict]:
    """Rows {name, value, unit, range, source[, hypothesis]} of an object's class-level ``PARAMS`` table.

    Same row format as :func:`tissuefate.parameters.module_hypotheses`; values are read from the object,
    so overrides show up in a results file.
    """
    rows = []
    for fname, (_, unit, source, hyp, rng) in type(obj).PARAMS.items():
        if only_hypotheses and not hyp:
            continue
        v = getattr(obj, fname)
        row = {"name": f"{type(obj).__name__}.{fname}", "value": float(v), "unit": unit,
               "range": list(rng) if rng else None, "source": source}
        if not only_hypotheses:
            row["hypothesis"] = bool(hyp)
        rows.append(row)
    return rows


# ============================================================================ conductivity model
@dataclass(frozen=True)
class RFConductivityParams:
    """Temperature / damage / vapour dependence of the RF electrical conductivity (see module docstring).

    ``PARAMS`` lists (default, unit, source, hypothesis, range) per numeric field.
    """

    PARAMS: ClassVar[dict] = {
        "temp_coeff": (0.0182, "1/K",
                       "parameters.md D1: +1.82 +- 0.28 %/degC reversible, bovine liver at 915 MHz [V]; "
                       "~1.5-2 %/degC at RF ~500 kHz [R] Rossmann & Haemmerich 2014", False, (0.015, 0.021)),
        "t_ref_k": (BODY_TEMPERATURE_K, "K", "convention: sigma_ref is given at body temperature 37 degC",
                    False, None),
        "irreversible_gain": (1.0, "1",
                              "parameters.md D1: irreversible changes above 60 degC up to +100 % in sigma [V]",
                              False, (0.0, 1.0)),
        "irreversible_a": (1.95e36, "1/s", "parameters.md D1: conductivity Arrhenius A = 1.95e36 1/s [V] "
                                           "(Chin & Sherar 2001 [R], 915 MHz)", False, None),
        "irreversible_ea": (60.1 * _KCAL, "J/mol", "parameters.md D1: Ea = 60.1 kcal/mol [V] (Chin & Sherar 2001 [R])",
                            False, None),
        "desiccation_floor": (1.0e-4, "1",
                              "hypothesis: sigma of fully desiccated tissue / wet sigma; the common RFA modelling "
                              "choice (Haemmerich; Abraham & Sparrow [R])", True, (1.0e-5, 1.0e-2)),
        "t_min_k": (273.15, "K", "hypothesis: the linear temperature law is not extrapolated below 0 degC",
                    True, (253.15, 283.15)),
        "t_max_k": (373.15, "K", "hypothesis: not extrapolated above 100 degC; vaporisation acts through v",
                    True, (363.15, 378.15)),
    }

    temp_coeff: float = 0.0182
    t_ref_k: float = BODY_TEMPERATURE_K
    irreversible_gain: float = 1.0
    irreversible_a: float = 1.95e36
    irreversible_ea: float = 60.1 * _KCAL
    desiccation_floor: float = 1.0e-4
    t_min_k: float = 273.15
    t_max_k: float = 373.15
    desiccation_law: str = "log-linear"

    def __post_init__(self):
        if self.desiccation_law not in ("log-linear", "linear"):
            raise ValueError("desiccation_law must be 'log-linear' or 'linear'")
        if not (0.0 < self.desiccation_floor <= 1.0):
            raise ValueError("desiccation_floor must be in (0, 1]")
        if self.t_min_k >= self.t_max_k:
            raise ValueError("t_min_k must be < t_max_k")

    def hypotheses(self) -> list[dict]:
        return param_rows(self)


@njit(cache=True, parallel=True, fastmath=True)
def _sigma_kernel(out, sref, s_sref, temp, s_t, om, s_om, vap, s_v, alpha, t_ref, t_min, t_max, gain,
                  ln_floor, floor, log_linear):
    for n in prange(out.size):
        t = min(max(temp[n * s_t], t_min), t_max)
        rev = 1.0 + alpha * (t - t_ref)
        irr = 1.0 + gain * (1.0 - math.exp(-om[n * s_om]))
        v = min(max(vap[n * s_v], 0.0), 1.0)
        if log_linear:
            des = math.exp(v * ln_floor)
        else:
            des = (1.0 - v) + v * floor
        out[n] = sref[n * s_sref] * rev * irr * des


def _flat(x):
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    return a.reshape(-1), (0 if a.size == 1 else 1), a.shape


def sigma_of_state(sigma_ref, T_kelvin, omega_sigma, vapor_fraction,
                   params: RFConductivityParams = RFConductivityParams(), out: np.ndarray | None = None) -> np.ndarray:
    """Electrical conductivity (S/m) from the reference conductivity, temperature (K), irreversible-change
    damage Omega_sigma (-) and vaporised water fraction (0..1). Scalars or arrays (broadcast to the largest)."""
    parts = [_flat(x) for x in (sigma_ref, T_kelvin, omega_sigma, vapor_fraction)]
    shape = np.broadcast_shapes(*(p[2] for p in parts))
    size = int(np.prod(shape))
    for p in parts:
        if p[1] and p[0].size != size:
            raise ValueError("sigma_of_state: array arguments must all have the same shape (or be scalars)")
    if out is None:
        out = np.empty(shape, dtype=np.float64)
    _sigma_kernel(out.reshape(-1), parts[0][0], parts[0][1], parts[1][0], parts[1][1], parts[2][0], parts[2][1],
                  parts[3][0], parts[3][1], params.temp_coeff, params.t_ref_k, params.t_min_k, params.t_max_k,
                  params.irreversible_gain, math.log(params.desiccation_floor), params.desiccation_floor,
                  params.desiccation_law == "log-linear")
    return out


def omega_sigma_rate(T_kelvin, params: RFConductivityParams = RFConductivityParams()):
    """dOmega_sigma/dt = A exp(-Ea / (R T)) in 1/s (Arrhenius of the irreversible conductivity change)."""
    T = np.asarray(T_kelvin, dtype=np.float64)
    return params.irreversible_a * np.exp(-params.irreversible_ea / (GAS_CONSTANT * T))


# ============================================================================ electric solver
@dataclass
class ElectricSolution:
    """Solution for a 1 V electrode voltage.

    phi:            potential per volt, (nx, ny, nz); 1 on electrodes, 0 on ground and non-conducting voxels
    conductance_s:  electrode current per volt, S (tissue resistance = 1 / conductance_s)
    q_per_v2:       Joule heating per V^2, W/(m^3 V^2), per voxel (conservative face split)
    power_per_v2:   sum(q_per_v2) dV, W/V^2 (= conductance_s to the solver tolerance: Tellegen)
    ground_current_s: current into ground per volt, S (= conductance_s to the solver tolerance)
    iterations:     CG iterations of this solve
    rebuilt:        the AMG hierarchy was (re)built in this solve
    """

    phi: np.ndarray
    conductance_s: float
    q_per_v2: np.ndarray
    power_per_v2: float
    ground_current_s: float
    iterations: int
    rebuilt: bool

    @property
    def resistance_ohm(self) -> float:
        return 1.0 / self.conductance_s if self.conductance_s > 0 else math.inf


class _AMGPCG:
    """CG preconditioned by a smoothed-aggregation V-cycle whose hierarchy is reused across solves.

    Hierarchy (all CSR, pyamg kernels): symmetric strength (theta = 0), standard aggregation, tentative
    prolongator for the constant vector, one Jacobi smoothing step P = (I - omega D_g^-1 A) T with the
    row-wise Gershgorin weight D_g = sum_j |a_ij| (omega = 4/3; no spectral-radius estimate), Galerkin
    A_c = P^T A P, symmetric Gauss-Seidel pre/post smoothing, sparse LU on the coarsest level (<= 500).
    Building it here instead of calling ``pyamg.smoothed_aggregation_solver`` avoids BSR coarse levels,
    whose |A| and Gauss-Seidel kernels were the bulk of the setup and cycle time (measured ~4x / ~2x).

    Reuse: the finest level always holds the current matrix (same object, values updated in place), the
    coarse levels may be stale; the V-cycle stays SPD, so CG stays correct and only slows down. The
    hierarchy is rebuilt for the next solve when a solve needs more than ``rebuild_ratio`` x the
    iteration count of the first solve after the build (at least 5), and at once when CG fails.
    """

    def __init__(self, rtol: float, rebuild_ratio: float = 2.0, max_iter: int = 500, max_coarse: int = 500):
        self.rtol = float(rtol)
        self.rebuild_ratio = float(rebuild_ratio)
        self.max_iter = int(max_iter)
        self.max_coarse = int(max_coarse)
        self._ml = None
        self._iters0 = None
        self._stale = False
        self.stats = {"solves": 0, "iterations": 0, "amg_builds": 0}

    def invalidate(self) -> None:
        self._ml = None

    def _build(self, A: sp.csr_matrix) -> None:
        from pyamg.aggregation.aggregate import standard_aggregation
        from pyamg.multilevel import MultilevelSolver
        from pyamg.relaxation.smoothing import change_smoothers
        from pyamg.strength import symmetric_strength_of_connection

        omega = 4.0 / 3.0
        lev = MultilevelSolver.Level()
        lev.A = A
        levels = [lev]
        Ak = A
        while Ak.shape[0] > self.max_coarse and len(levels) < 25:
            C = symmetric_strength_of_connection(Ak, 0.0)
            agg = standard_aggregation(C)[0].tocsr()
            nc = agg.shape[1]
            if nc == 0 or nc >= Ak.shape[0]:
                break
            counts = np.bincount(agg.indices, minlength=nc)
            T = sp.csr_matrix((1.0 / np.sqrt(counts[agg.indices]), agg.indices, agg.indptr), shape=agg.shape)
            rowabs = np.bincount(np.repeat(np.arange(Ak.shape[0]), np.diff(Ak.indptr)), weights=np.abs(Ak.data),
                                 minlength=Ak.shape[0])
            w = np.divide(omega, rowabs, out=np.zeros_like(rowabs), where=rowabs > 0)
            P = (T - sp.diags(w) @ (Ak @ T)).tocsr()
            R = P.T.tocsr()
            Ac = sp.csr_matrix(R @ (Ak @ P))
            Ac.sort_indices()
            levels[-1].P, levels[-1].R = P, R
            lev = MultilevelSolver.Level()
            lev.A = Ac
            levels.append(lev)
            Ak = Ac
        ml = MultilevelSolver(levels, coarse_solver="splu")
        gs = ("gauss_seidel", {"sweep": "symmetric"})
        change_smoothers(ml, gs, gs)
        self._ml = ml
        self._iters0 = None
        self._stale = False
        self.stats["amg_builds"] += 1

    def solve(self, A: sp.csr_matrix, b: np.ndarray, x0: np.ndarray | None) -> tuple[np.ndarray, int, bool]:
        """x, CG iterations, whether the hierarchy was built in this call."""
        built = False
        if self._ml is None or self._stale or self._ml.levels[0].A.shape != A.shape:
            self._build(A)
            built = True
        self._ml.levels[0].A = A          # the finest level always uses the current values
        x, its, ok = self._pcg(A, b, x0)
        if not ok and not built:
            self._build(A)
            built = True
            x, its2, ok = self._pcg(A, b, x)
            its += its2
        if not ok:
            raise RuntimeError(f"RF potential: CG did not converge in {self.max_iter} iterations")
        if self._iters0 is None:
            self._iters0 = max(its, 5)     # a warm start can make the first count unrepresentatively low
        elif its > self.rebuild_ratio * self._iters0:
            self._stale = True
        self.stats["solves"] += 1
        self.stats["iterations"] += its
        return x, its, built

    def _vcycle(self, lvl: int, b: np.ndarray) -> np.ndarray:
        """One V-cycle from x = 0 (pyamg's own wrapper adds two residual norms per call)."""
        levels = self._ml.levels
        A = levels[lvl].A
        if lvl == len(levels) - 1:
            return np.asarray(self._ml.coarse_solver(A, b)).reshape(b.shape)
        x = np.zeros_like(b)
        levels[lvl].presmoother(A, x, b)
        xc = self._vcycle(lvl + 1, levels[lvl].R @ (b - A @ x))
        x += levels[lvl].P @ xc
        levels[lvl].postsmoother(A, x, b)
        return x

    def _pcg(self, A, b, x0):
        x = np.zeros_like(b) if x0 is None else x0.copy()
        tol = self.rtol * np.linalg.norm(b)
        r = b - A @ x
        if np.linalg.norm(r) <= tol:
            return x, 0, True
        z = self._vcycle(0, r)
        p = z.copy()
        rz = r @ z
        for it in range(1, self.max_iter + 1):
            Ap = A @ p
            alpha = rz / (p @ Ap)
            x += alpha * p
            r -= alpha * Ap
            if np.linalg.norm(r) <= tol:
                return x, it, True
            z = self._vcycle(0, r)
            rz_new = r @ z
            p *= rz_new / rz
            p += z
            rz = rz_new
        return x, self.max_iter, False


@dataclass
class _Pattern:
    """Index arrays of one unknown set (fixed while the set of conducting voxels does not change)."""

    key: np.ndarray          # flat bool mask of the unknowns
    vox: np.ndarray          # voxel flat index of each unknown (int64)
    uu_a: np.ndarray         # faces between two unknowns: unknown indices (int32), grouped by axis
    uu_b: np.ndarray
    uu_off: np.ndarray       # int64[4]: faces of axis d are uu_off[d]:uu_off[d+1]
    uu_coef: np.ndarray      # float64[3]: A_f / h per axis
    ud_u: np.ndarray         # unknown-conductor faces: unknown index (int32)
    ud_k: np.ndarray         # g / sigma_u (m), includes the surface fraction
    ud_e: np.ndarray         # the conductor is an electrode (else ground)
    bnd_u: np.ndarray        # grounded domain faces: unknown index (int32)
    bnd_k: np.ndarray        # g / sigma_u (m)
    pos: np.ndarray          # CSR data position of the values [diag (n), (a,b) (m), (b,a) (m)]
    A: sp.csr_matrix
    x: np.ndarray | None = None        # last solution (warm start)

    @property
    def n(self) -> int:
        return int(self.vox.size)


@njit(cache=True)
def _assemble(sig_u, uu_a, uu_b, uu_off, uu_coef, ud_u, ud_k, ud_e, bnd_u, bnd_k, pos, data, rhs):
    """Matrix values (in CSR order, via pos) and right-hand side (1 V on electrodes) from sigma of the unknowns."""
    n = sig_u.size
    m = uu_a.size
    diag = np.zeros(n)
    for ax in range(3):
        c2 = 2.0 * uu_coef[ax]
        for f in range(uu_off[ax], uu_off[ax + 1]):
            a = uu_a[f]
            b = uu_b[f]
            sa = sig_u[a]
            sb = sig_u[b]
            g = c2 * sa * sb / (sa + sb)
            diag[a] += g
            diag[b] += g
            data[pos[n + f]] = -g
            data[pos[n + m + f]] = -g
    for i in range(rhs.size):
        rhs[i] = 0.0
    for f in range(ud_u.size):
        u = ud_u[f]
        g = ud_k[f] * sig_u[u]
        diag[u] += g
        if ud_e[f]:
            rhs[u] += g
    for f in range(bnd_u.size):
        u = bnd_u[f]
        diag[u] += bnd_k[f] * sig_u[u]
    for i in range(n):
        data[pos[i]] = diag[i]


@njit(cache=True)
def _dissipate(x, sig_u, uu_a, uu_b, uu_off, uu_coef, ud_u, ud_k, ud_e, bnd_u, bnd_k, heat):
    """Face dissipation g dphi^2 split onto voxels (half each; all to the tissue voxel at a conductor);
    returns (electrode current, ground current) per volt."""
    for i in range(heat.size):
        heat[i] = 0.0
    for ax in range(3):
        c2 = 2.0 * uu_coef[ax]
        for f in range(uu_off[ax], uu_off[ax + 1]):
            a = uu_a[f]
            b = uu_b[f]
            sa = sig_u[a]
            sb = sig_u[b]
            d = x[a] - x[b]
            w = 0.5 * c2 * sa * sb / (sa + sb) * d * d
            heat[a] += w
            heat[b] += w
    i_e = 0.0
    i_g = 0.0
    for f in range(ud_u.size):
        u = ud_u[f]
        g = ud_k[f] * sig_u[u]
        drop = (1.0 if ud_e[f] else 0.0) - x[u]        # conductor minus tissue potential
        heat[u] += g * drop * drop
        if ud_e[f]:
            i_e += g * drop
        else:
            i_g -= g * drop
    for f in range(bnd_u.size):
        u = bnd_u[f]
        g = bnd_k[f] * sig_u[u]
        heat[u] += g * x[u] * x[u]
        i_g += g * x[u]
    return i_e, i_g


class ElectricSolver:
    """Quasi-static potential solver on a fixed electrode / ground geometry (see module docstring).

    grid:               :class:`tissuefate.geometry.Grid`
    electrode_mask:     bool (grid.shape), voxels held at the electrode voltage (active parts)
    ground_mask:        bool (grid.shape) or None, voxels held at 0 V
    conducting_mask:    bool or None; voxels outside it (air, insulated shafts) carry no current. Voxels with
                        sigma == 0 are excluded too.
    ground_faces:       domain faces held at 0 V, any of "x-", "x+", "y-", "y+", "z-", "z+"
    electrode_distance, ground_distance: optional signed distance (m, < 0 inside the conductor, grid.shape) of
                        the true conductor surface; when given, a tissue-conductor face uses the distance to the
                        surface crossing (ghost-fluid / Shortley-Weller Dirichlet, see module docstring) instead
                        of the staircase half cell
    min_surface_fraction: lower clip of that crossing distance, in units of h (conditioning)
    rtol:               CG relative residual tolerance (||r|| <= rtol ||b||)
    rebuild_ratio:      AMG hierarchy reuse criterion (see :class:`_AMGPCG`)
    """

    def __init__(self, grid, electrode_mask, ground_mask=None, conducting_mask=None, ground_faces=(),
                 electrode_distance=None, ground_distance=None, min_surface_fraction: float = 0.1,
                 rtol: float = 1e-8, rebuild_ratio: float = 2.0):
        self.grid = grid
        shape = tuple(grid.shape)
        self.electrode = np.ascontiguousarray(np.asarray(electrode_mask, dtype=bool)).reshape(-1)
        self.ground = (np.zeros(self.electrode.size, dtype=bool) if ground_mask is None
                       else np.ascontiguousarray(np.asarray(ground_mask, dtype=bool)).reshape(-1))
        if self.electrode.size != grid.n_voxels or self.ground.size != grid.n_voxels:
            raise ValueError("masks must have grid.shape")
        if not self.electrode.any():
            raise ValueError("electrode_mask is empty")
        if (self.electrode & self.ground).any():
            raise ValueError("electrode and ground masks overlap")
        self.conducting = (None if conducting_mask is None
                           else np.ascontiguousarray(np.asarray(conducting_mask, dtype=bool)).reshape(-1))
        bad = [f for f in ground_faces if f not in _FACE_NAMES]
        if bad:
            raise ValueError(f"unknown ground faces {bad}; use {_FACE_NAMES}")
        self.ground_faces = tuple(ground_faces)
        if not (self.ground.any() or self.ground_faces):
            raise ValueError("no ground: give a ground_mask or ground_faces")
        self._shape = shape
        self._dist_e = None if electrode_distance is None else np.asarray(electrode_distance, np.float64).reshape(-1)
        self._dist_g = None if ground_distance is None else np.asarray(ground_distance, np.float64).reshape(-1)
        for d in (self._dist_e, self._dist_g):
            if d is not None and d.size != grid.n_voxels:
                raise ValueError("signed distances must have grid.shape")
        if not (0.0 < min_surface_fraction <= 0.5):
            raise ValueError("min_surface_fraction must be in (0, 0.5]")
        self.min_surface_fraction = float(min_surface_fraction)
        self._check_short_circuit()
        self._amg = _AMGPCG(rtol=rtol, rebuild_ratio=rebuild_ratio)
        self._pat: _Pattern | None = None

    # ------------------------------------------------------------------ geometry checks
    def _check_short_circuit(self):
        E = self.electrode.reshape(self._shape)
        G = self.ground.reshape(self._shape)
        for a in range(3):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[a] = slice(0, -1)
            hi[a] = slice(1, None)
            if ((E[tuple(lo)] & G[tuple(hi)]) | (G[tuple(lo)] & E[tuple(hi)])).any():
                raise ValueError("an electrode voxel shares a face with a ground voxel (short circuit)")
        for f in self.ground_faces:
            a = "xyz".index(f[0])
            sl = [slice(None)] * 3
            sl[a] = 0 if f[1] == "-" else -1
            if E[tuple(sl)].any():
                raise ValueError(f"an electrode voxel touches the grounded face {f} (short circuit)")

    # ------------------------------------------------------------------ pattern
    def _face_coeff(self, a: int) -> float:
        h = self.grid.spacing
        area = h[(a + 1) % 3] * h[(a + 2) % 3]
        return area / h[a]

    def _inv_surface_fraction(self, tissue_vox: np.ndarray, cond_vox: np.ndarray, is_e: np.ndarray) -> np.ndarray:
        """1/theta per unknown-conductor face; theta h = distance from the tissue centre to the surface."""
        inv = np.full(tissue_vox.size, 2.0)          # staircase: the surface is the shared face
        for dist, sel in ((self._dist_e, is_e), (self._dist_g, ~is_e)):
            if dist is None or not sel.any():
                continue
            dt = dist[tissue_vox[sel]]
            dc = dist[cond_vox[sel]]
            ok = np.isfinite(dt) & np.isfinite(dc) & (dc <= 0.0) & (dt > dc)
            theta = np.where(ok, dt / np.where(ok, dt - dc, 1.0), 0.5)
            theta = np.clip(theta, self.min_surface_fraction, 1.0)
            inv[sel] = 1.0 / theta
        return inv

    def _build_pattern(self, unknown: np.ndarray) -> _Pattern:
        shape = self._shape
        N = unknown.size
        E, G = self.electrode, self.ground
        D = E | G
        idx3 = np.arange(N, dtype=np.int64).reshape(shape)
        while True:
            n = int(unknown.sum())
            unk = np.full(N, -1, dtype=np.int32)
            unk[unknown] = np.arange(n, dtype=np.int32)
            uu, ud, bnd = [], [], []
            anchored = np.zeros(n, dtype=bool)
            for a in range(3):
                c = self._face_coeff(a)
                lo = [slice(None)] * 3
                hi = [slice(None)] * 3
                lo[a] = slice(0, -1)
                hi[a] = slice(1, None)
                il = idx3[tuple(lo)].reshape(-1)
                ih = idx3[tuple(hi)].reshape(-1)
                Ul, Uh = unknown[il], unknown[ih]
                m = Ul & Uh
                uu.append((unk[il[m]], unk[ih[m]], c))
                m1 = Ul & D[ih]
                m2 = Uh & D[il]
                tv = np.concatenate([il[m1], ih[m2]])
                cv = np.concatenate([ih[m1], il[m2]])
                is_e = E[cv]
                u = unk[tv]
                ud.append((u, is_e, c * self._inv_surface_fraction(tv, cv, is_e)))
                anchored[u] = True
            for f in self.ground_faces:
                a = "xyz".index(f[0])
                sl = [slice(None)] * 3
                sl[a] = 0 if f[1] == "-" else shape[a] - 1
                iv = idx3[tuple(sl)].reshape(-1)
                u = unk[iv[unknown[iv]]]
                bnd.append((u, 2.0 * self._face_coeff(a)))
                anchored[u] = True
            # drop islands with no path to a conductor (singular blocks that carry no current)
            if n:
                ra = np.concatenate([t[0] for t in uu])
                rb = np.concatenate([t[1] for t in uu])
                graph = sp.csr_matrix((np.ones(ra.size, dtype=np.int8), (ra, rb)), shape=(n, n))
                ncomp, lab = connected_components(graph, directed=False)
                good = np.zeros(ncomp, dtype=bool)
                good[lab[anchored]] = True
                keep = good[lab]
                if not keep.all():
                    unknown = unknown.copy()
                    unknown[np.flatnonzero(unknown)[~keep]] = False
                    continue
            break
        vox = np.flatnonzero(unknown)
        uu_a = np.concatenate([t[0] for t in uu])
        uu_b = np.concatenate([t[1] for t in uu])
        uu_off = np.zeros(4, dtype=np.int64)
        np.cumsum([t[0].size for t in uu], out=uu_off[1:])
        uu_coef = np.array([t[2] for t in uu])
        ud_u = np.concatenate([t[0] for t in ud])
        ud_e = np.concatenate([t[1] for t in ud])
        ud_k = np.concatenate([t[2] for t in ud])
        bnd_u = np.concatenate([t[0] for t in bnd]) if bnd else np.zeros(0, np.int32)
        bnd_k = (np.concatenate([np.full(t[0].size, t[1]) for t in bnd]) if bnd else np.zeros(0))
        # CSR pattern: rows sorted, columns sorted within rows; pos maps each value to its data slot
        diag = np.arange(n, dtype=np.int64)
        rows = np.concatenate([diag, uu_a, uu_b])
        cols = np.concatenate([diag, uu_b, uu_a])
        order = np.lexsort((cols, rows))
        itype = np.int32 if rows.size < 2**31 - 1 else np.int64
        pos = np.empty(rows.size, dtype=itype)
        pos[order] = np.arange(rows.size, dtype=itype)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        A = sp.csr_matrix((np.zeros(rows.size), cols[order].astype(itype), indptr.astype(itype)), shape=(n, n))
        A.has_sorted_indices = True
        self._amg.invalidate()
        return _Pattern(unknown, vox, uu_a, uu_b, uu_off, uu_coef, ud_u, ud_k, np.ascontiguousarray(ud_e),
                        bnd_u, bnd_k, pos, A)

    def _unknown_mask(self, sigma_flat: np.ndarray) -> np.ndarray:
        m = (sigma_flat > 0.0) & ~self.electrode & ~self.ground
        if self.conducting is not None:
            m &= self.conducting
        return m

    # ------------------------------------------------------------------ solve
    def solve(self, sigma) -> ElectricSolution:
        """Potential, conductance and heating for sigma (S/m, scalar or per voxel) at 1 V on the electrode."""
        N = self.electrode.size
        sig = np.asarray(sigma, dtype=np.float64)
        if sig.size == 1:
            sigma_flat = np.full(N, float(sig.reshape(-1)[0]))
        else:
            sigma_flat = sig.reshape(-1)
        if sigma_flat.size != N:
            raise ValueError("sigma must be a scalar or have grid.shape")
        if not np.isfinite(sigma_flat).all() or (sigma_flat < 0).any():
            raise ValueError("sigma must be finite and >= 0")
        unknown = self._unknown_mask(sigma_flat)
        pat = self._pat
        if pat is None or not np.array_equal(pat.key, unknown):
            pat = self._pat = self._build_pattern(unknown)
        n = pat.n
        sig_u = sigma_flat[pat.vox]
        faces = (pat.uu_a, pat.uu_b, pat.uu_off, pat.uu_coef, pat.ud_u, pat.ud_k, pat.ud_e, pat.bnd_u, pat.bnd_k)
        iterations, rebuilt = 0, False
        if n:
            rhs = np.empty(n)
            _assemble(sig_u, *faces, pat.pos, pat.A.data, rhs)
            x, iterations, rebuilt = self._amg.solve(pat.A, rhs, pat.x)
            pat.x = x
        else:
            x = np.zeros(0)
        heat = np.empty(n)
        i_electrode, i_ground = _dissipate(x, sig_u, *faces, heat)
        phi = np.zeros(N)
        phi[self.electrode] = 1.0
        phi[pat.vox] = x
        q = np.zeros(N)
        q[pat.vox] = heat / self.grid.dV
        return ElectricSolution(phi=phi.reshape(self._shape), conductance_s=float(i_electrode),
                                q_per_v2=q.reshape(self._shape), power_per_v2=float(heat.sum()),
                                ground_current_s=float(i_ground), iterations=int(iterations), rebuilt=bool(rebuilt))

    @property
    def stats(self) -> dict:
        """Solver statistics (solves, CG iterations, AMG builds)."""
        return dict(self._amg.stats)


# ============================================================================ generators
@dataclass(frozen=True)
class RFMeasurement:
    """What the generator measures at the start of a step.

    conductance_s:      tissue-circuit conductance at 1 V from the last solve (ElectricSolution.conductance_s), S
    tip_temperature_k:  hottest temperature at the electrode thermocouple(s), K
    """

    conductance_s: float
    tip_temperature_k: float


_LOG_KEYS = ("time_s", "generator_power_w", "tissue_power_w", "impedance_ohm", "tip_temperature_k",
             "tissue_voltage_v", "generator_voltage_v", "current_a", "on")


class _Generator:
    """Common circuit and log: the subclasses choose the generator output power each step."""

    PARAMS: ClassVar[dict] = {
        "series_resistance_ohm": (20.0, "ohm",
                                  "hypothesis: body outside the domain, dispersive pads and cables in series",
                                  True, (0.0, 60.0)),
    }

    def __init__(self, series_resistance_ohm: float = 20.0, max_voltage_v: float = math.inf):
        if series_resistance_ohm < 0 or max_voltage_v <= 0:
            raise ValueError("series_resistance_ohm >= 0 and max_voltage_v > 0 required")
        self.series_resistance_ohm = float(series_resistance_ohm)
        self.max_voltage_v = float(max_voltage_v)
        self._log = {k: [] for k in _LOG_KEYS}

    def hypotheses(self) -> list[dict]:
        return param_rows(self)

    def impedance_ohm(self, meas: RFMeasurement) -> float:
        """Impedance seen by the generator: 1/G + R_series (inf for an open circuit)."""
        return (1.0 / meas.conductance_s + self.series_resistance_ohm) if meas.conductance_s > 0 else math.inf

    def _deliver(self, t: float, meas: RFMeasurement, generator_power_w: float, on: bool) -> float:
        """Convert a generator power command to the tissue voltage, log the step and return the voltage."""
        z = self.impedance_ohm(meas)
        p_cmd = max(float(generator_power_w), 0.0) if on else 0.0
        if math.isfinite(z) and p_cmd > 0.0:
            v_gen = min(math.sqrt(p_cmd * z), self.max_voltage_v)
            current = v_gen / z
        else:
            v_gen = current = 0.0
        r_tissue = 1.0 / meas.conductance_s if meas.conductance_s > 0 else math.inf
        v_tissue = current * r_tissue if current > 0 else 0.0
        row = (t, current**2 * z if current > 0 else 0.0, current * v_tissue, z, meas.tip_temperature_k,
               v_tissue, v_gen, current, bool(on))
        for k, v in zip(_LOG_KEYS, row):
            self._log[k].append(v)
        return v_tissue

    def log(self) -> dict[str, np.ndarray]:
        """The per-call log as arrays: time_s, generator/tissue power (W), impedance (ohm), tip temperature (K),
        tissue and generator voltage (V), current (A), on (bool)."""
        return {k: np.asarray(v, dtype=bool if k == "on" else np.float64) for k, v in self._log.items()}

    def voltage(self, t: float, dt: float, meas: RFMeasurement) -> float:  # pragma: no cover - interface
        raise NotImplementedError


class ConstantPower(_Generator):
    """Constant generator output power (W), limited by the generator's maximum output voltage (V)."""

    def __init__(self, power_w: float, max_voltage_v: float = math.inf, series_resistance_ohm: float = 20.0):
        super().__init__(series_resistance_ohm, max_voltage_v)
        if power_w < 0:
            raise ValueError("power_w must be >= 0")
        self.power_w = float(power_w)

    def voltage(self, t: float, dt: float, meas: RFMeasurement) -> float:
        return self._deliver(t, meas, self.power_w, True)


class TargetTemperature(_Generator):
    """PID on the tip temperature (RITA / Boston-style temperature control), output power clipped to
    [0, power_max_w]. Derivative on the measurement (no kick on set-point changes); the integrator is frozen
    while the output saturates in the direction of the error (anti-windup).

    target_k: set temperature, K; kp W/K, ki W/(K s), kd W s/K (controller tuning: hypotheses).
    """

    PARAMS: ClassVar[dict] = {
        **_Generator.PARAMS,
        "kp": (5.0, "W/K", "hypothesis: controller tuning (not published for commercial generators)",
               True, (0.5, 50.0)),
        "ki": (0.5, "W/(K s)", "hypothesis: controller tuning", True, (0.0, 5.0)),
        "kd": (0.0, "W s/K", "hypothesis: controller tuning", True, (0.0, 20.0)),
    }

    def __init__(self, target_k: float, power_max_w: float, kp: float = 5.0, ki: float = 0.5, kd: float = 0.0,
                 max_voltage_v: float = math.inf, series_resistance_ohm: float = 20.0):
        super().__init__(series_resistance_ohm, max_voltage_v)
        if power_max_w <= 0 or kp < 0 or ki < 0 or kd < 0:
            raise ValueError("power_max_w > 0 and non-negative gains required")
        self.target_k = float(target_k)
        self.power_max_w = float(power_max_w)
        self.kp, self.ki, self.kd = float(kp), float(ki), float(kd)
        self._integral = 0.0            # K s
        self._last_t_k: float | None = None

    def voltage(self, t: float, dt: float, meas: RFMeasurement) -> float:
        temp = float(meas.tip_temperature_k)
        err = self.target_k - temp
        deriv = 0.0 if (self._last_t_k is None or dt <= 0) else -(temp - self._last_t_k) / dt
        self._last_t_k = temp
        integral = self._integral + err * dt
        p = self.kp * err + self.ki * integral + self.kd * deriv
        saturated = (p > self.power_max_w and err > 0) or (p < 0.0 and err < 0)
        if not saturated:
            self._integral = integral
        p = min(max(p, 0.0), self.power_max_w)
        return self._deliver(t, meas, p, True)


class ImpedanceControl(_Generator):
    """Power ramp with impedance roll-off pulsing (internally cooled single / cluster electrode generators).

    Power: starts at ``start_power_w`` and ramps at ``ramp_w_per_min`` toward ``power_max_w``. When the
    impedance exceeds the baseline (the lowest impedance seen so far) by more than ``rolloff_rise_ohm``
    (10 ohm: the commonly described Cool-tip threshold [R]) the output is cut to 0 for ``off_time_s``
    (15 s [R]); it then resumes at ``resume_fraction`` x the power at roll-off and ramps again (the
    resume rule is a hypothesis: generators describe "reduced" power, the exact rule is not published).
    The impedance is still measured while the output is off. Deterministic. (The Cool-tip generator
    regulates current rather than power [R]; a power ramp is the simpler equivalent used here.)
    """

    PARAMS: ClassVar[dict] = {
        **_Generator.PARAMS,
        "power_max_w": (200.0, "W", "Cool-tip generator maximum output 200 W [R]", False, None),
        "ramp_w_per_min": (10.0, "W/min", "hypothesis: ramp as in commonly described LeVeen protocols "
                                          "(+10 W/min [R]); the Cool-tip ramp is not published", True, (5.0, 60.0)),
        "start_power_w": (50.0, "W", "hypothesis: start power (LeVeen protocols start at 40-50 W [R])",
                          True, (20.0, 100.0)),
        "rolloff_rise_ohm": (10.0, "ohm", "Cool-tip impedance control: roll-off at +10 ohm over baseline [R]",
                             False, (5.0, 30.0)),
        "off_time_s": (15.0, "s", "Cool-tip impedance control: output off for 15 s after a roll-off [R]",
                       False, (10.0, 30.0)),
        "resume_fraction": (0.75, "1", "hypothesis: restart at ~70-75 % of the roll-off power, as commonly "
                                       "described for LeVeen protocols [R]", True, (0.5, 1.0)),
    }

    def __init__(self, power_max_w: float = 200.0, ramp_w_per_min: float = 10.0, rolloff_rise_ohm: float = 10.0,
                 off_time_s: float = 15.0, start_power_w: float = 50.0, resume_fraction: float = 0.75,
                 max_voltage_v: float = math.inf, series_resistance_ohm: float = 20.0):
        super().__init__(series_resistance_ohm, max_voltage_v)
        if not (power_max_w > 0 and ramp_w_per_min >= 0 and rolloff_rise_ohm > 0 and off_time_s >= 0
                and 0 <= start_power_w and 0 < resume_fraction <= 1):
            raise ValueError("invalid ImpedanceControl settings")
        self.power_max_w = float(power_max_w)
        self.ramp_w_per_min = float(ramp_w_per_min)
        self.rolloff_rise_ohm = float(rolloff_rise_ohm)
        self.off_time_s = float(off_time_s)
        self.start_power_w = float(start_power_w)
        self.resume_fraction = float(resume_fraction)
        self._baseline = math.inf
        self._power = min(self.start_power_w, self.power_max_w)   # current set power, W
        self._off_until = -math.inf
        self._last_t: float | None = None
        self.rolloff_times_s: list[float] = []

    def voltage(self, t: float, dt: float, meas: RFMeasurement) -> float:
        z = self.impedance_ohm(meas)
        self._baseline = min(self._baseline, z)
        eps = 1e-9 * max(dt, 1e-12)
        if t + eps < self._off_until:                       # still in the off period
            self._last_t = t
            return self._deliver(t, meas, 0.0, False)
        resuming = self._last_t is not None and self._last_t + eps < self._off_until
        if self._last_t is not None and not resuming:       # ramp (not on the step that ends an off period)
            self._power = min(self._power + self.ramp_w_per_min / 60.0 * (t - self._last_t), self.power_max_w)
        self._last_t = t
        if z - self._baseline > self.rolloff_rise_ohm:      # roll-off: cut the output
            self.rolloff_times_s.append(t)
            self._off_until = t + self.off_time_s
            self._power = self.resume_fraction * self._power
            return self._deliver(t, meas, 0.0, False)
        return self._deliver(t, meas, self._power, True)
