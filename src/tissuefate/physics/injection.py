r"""Volume-exact injection mechanics on the voxel grid: tissue dilation, lumped cavity/crack, needle-track backflow.

Pure arrays: reads the per-voxel tissue properties of :class:`MechanicsTissue` and the needle geometry of
:class:`NeedleTrack`; writes the state fields ``e`` (dilation), ``p`` (excess pressure), ``f`` (cavity
fraction) and the per-needle cavity volume / pressure and track openings, and returns per step the
face fluxes of :class:`FlowStep` for the solute transport. Model: ``shared/science/injection.md`` §6.2-6.3.
SI units throughout; ``p`` is the excess over the baseline interstitial fluid pressure (IFP), so the
baseline is an equilibrium and every sink below is linear in ``p``.

(A) Tissue voxels (not occupied by a cavity)::

    de/dt = div(K(e) grad p) - LpSV p - lymph p + (track leak, needle in no-cavity mode)/dV
    p = H_A e,        K(e) = min(K0 exp(M e), K_max),      interstitial fraction (phi0 + e)/(1 + e)

Finite volumes, backward Euler, Picard on ``K(e)``. Face transmissibility ``T = A K_f / h`` with
``K_f = min(Kh(K0_i, K0_j) * EM(M_f e_i, M_f e_j), K_max)``: harmonic mean ``Kh`` of the material
conductivities and the Kirchhoff mean ``EM(a, b) = (e^b - e^a)/(b - a)`` of the strain factor
(``M_f`` the face mean of ``M``), i.e. the exact flux of ``K0 exp(M e)`` through a face in 1-D.
``face_k="harmonic"`` gives the plain harmonic mean of the cell values ``K(e_i)`` instead. Voxels outside
``tissue_mask`` are impermeable. Domain faces: ``boundary`` = "drained" (p = 0 at the face),
"sealed", or a prescribed pressure (Pa), per face via a dict with keys "x-", "x+", "y-", "y+", "z-", "z+".

(B) One lumped cavity node per needle tip, volume ``V_c`` and uniform pressure ``p_c``::

    dV_c/dt = Q_in - sum_wall T (p_c - p_j) - sum_sinks G_s p_c - q_track(tip) - (boundary faces)
    p_c = P(V_c) = min(p_cav, p_crack),  p_cav = E(5/6 - 2/(3 lam) - 1/(6 lam^4)),  lam = (V_c/V0)^(1/3) (< 5E/6)
    p_crack = (sqrt(pi) K_Ic / 2) R^(-1/2),  R = (3 E' V_c / (8 sqrt(pi) K_Ic))^(2/5),  E' = E/(1-nu^2), K_Ic = sqrt(E' G_c)

``V0 = 4/3 pi r_n^3`` is the unresolved starting cavity; ``E, nu, G_c`` are those of the tip voxel.
The liquid ``V_c - V0`` occupies voxels in fractions ``f_i`` with ``sum f_i dV = V_c - V0`` exactly: voxels
are filled one at a time in the order of a priority flood from the tip through the cavity frontier with
the (static) cost ``s_i = w_i (5 E_i / 6) d_i`` (``w_i`` = ``weak``, ``d_i`` = distance to the tip), the
last one partially. In uniform tissue the cavity is a voxelised sphere; weak planes (``w`` < 1) make it
finger along them. Shrinking empties voxels in the reverse order. Full cavity voxels are part of the
node: their tissue dilation is frozen and their faces to tissue voxels are the cavity wall, with
``T = A / (h/(2 K_max) + h/(2 K_half))``, ``K_half`` the Kirchhoff mean between the wall strain
``p_c/H_A`` and the cell strain. While no voxel is full, the cavity is a sub-voxel sphere of radius
``r_c`` in the tip voxel, joined to that voxel's tissue by ``4 pi K / max(1/r_c - 1/r_e, 1/r_e)`` with
``r_e = 0.315 dV^(1/3)`` (the equivalent radius of the 7-point Green's function). Every face between a
cavity voxel (``f > 0``) and a ``sink_mask`` voxel opens ``G_s`` (option ``G_sink``; partial voxels ``f G_s``)
to p = 0.

(C) Backflow along the needle track, 1-D lubrication on the shaft voxels (tip to skin entry)::

    d(2 pi r_n h)/dt + dq/dz = -Lambda (p - p_host),   q = -(2 pi r_n h^3 / 12 mu) dp/dz,   h = (p - sigma_s)+ r_n / (2 G)
    Lambda = 2 pi K_host / max(ln(0.2 dV^(1/3) / r_n), 0.5)     (Peaceman well index; or NeedleTrack.Lambda)

One node per shaft voxel (storage length = half the adjacent segments), the tip end at ``p_c``, the skin
end at ``p = 0`` (outflow = backflow loss).
Segment flux in Kirchhoff form ``q = c (Phi(p_a) - Phi(p_b))``, ``Phi(p) = ((p - sigma_s)+)^4 / 4``,
``c = (2 pi r_n / 12 mu dz) (r_n / 2G)^3`` (exact for steady flow without leak); storage
``V = pi r_n^2 l (p - sigma_s)+ / G``. Track nodes whose host voxel has become cavity are frozen at ``p_c``
and their liquid is released into the cavity. Tracks need ``cavity=True``.

Per step (§6.3), with the cavity set frozen:

1. outer Picard on ``K(e)`` (Anderson-accelerated, depth ``anderson``; wall-adjacent voxels pre-updated by
   a local nonlinear Jacobi sweep): assemble the SPD M-matrix of the tissue voxels of the active box
   (the track leak enters host rows with the track pressure of the current iterate) and solve it with
   one right-hand side for ``p_c = 0`` and one per cavity for unit ``p_c``
   (:class:`tissuefate.numerics.elliptic.SPDSolver`: direct / Jacobi-PCG / pyamg SA-PCG with hierarchy
   reuse, relative 1e-10), so that the cavity outflow to tissue, sinks and domain faces is ``a0 + A1 p_c``;
2. inner: per cavity the monotone scalar ``V - V^n - dt (Q - a0 - A1 P(V) - q_track(P(V))) = 0`` is solved
   by brentq in a bracket ``[V_s, V_s + |g(V_s)|]`` (valid since g' >= 1 in cavity mode), where each
   evaluation solves the 1-D track chain for that ``p_c`` by a banded Newton with line search (Picard on
   the cubic gap conductance oscillates between an open and a closed track and was abandoned);
   nonlinear Gauss-Seidel over cavities;
3. stop when ``max |dp| <= picard_tol * max p`` (default 1e-6), tissue, cavity and track pressures alike.

Then every flux is recomputed from the final pressures with the frozen conductances, and every stored volume
(``e``, ``V_c``, track volumes) is updated from those fluxes, not from ``p/H_A``. Hence, per voxel and to
round-off::

    theta_change = d(e + f) = dt/dV (source - sink - div F)

where ``F`` includes the Darcy faces, the cavity wall faces and the faces that carry the liquid inside the
cavity from the tip to the voxels being filled or emptied (a spanning tree of the flood, parent = filled
neighbour closest to the tip), and the cumulative ledger
``injected = stored_dilation + cavity + track + backflow_out + vascular + lymph + sinks + boundary`` holds to
round-off. The solve is restricted to a box that contains every disturbed voxel; it grows (never shrinks)
when the pressure on its sealed faces exceeds ``box_eps`` (1e-8) times the maximum, and the step is
repeated with the larger box when it exceeds ``box_redo`` (1e-5). Outside the box ``p = e = 0``.

Public API::

    MechanicsTissue(K0, M, K_max, H_A, E_d, nu, G_c, LpSV, lymph, weak, phi0, tissue_mask, sink_mask)
        per-voxel arrays of grid.shape (scalars broadcast); MechanicsTissue.uniform(shape, **values)
    NeedleTrack(tip_index, track, r_n, sigma_s, shear_modulus, Lambda=None, V0=None)
        track = shaft voxels from the tip to the skin entry
    sim = InjectionMechanics(grid, tissue, needles, mu_inj, **options)
        sim.step(dt, q_in) -> FlowStep          q_in: m^3/s per needle (None = no flow)
        state: sim.e, sim.p, sim.f (= cavity_fraction), sim.theta_extra (= e + f), sim.theta
               (= phi0 + e + f), sim.V_c, sim.p_c, sim.track_h, sim.track_volume, sim.track_pressure, sim.time
        sim.volume_budget() -> dict of cumulative m^3 (injected, stored_dilation, cavity, track, backflow_out,
               vascular, lymph, sinks, boundary, residual, rel_error)
        sim.pressure_bound(), sim.cavity_shape(m)
    FlowStep(Fx, Fy, Fz, source, sink, backflow, dt, theta_change, p_c, V_c, q_in, track, picard_iterations)
    options: cavity=True, crack=True, boundary="drained", face_k="kirchhoff", G_sink=None (K_max h),
             picard_tol=1e-6, picard_max=12, anderson=3, wall_predictor=True, rtol=1e-10, solver="auto",
             active_box=True, box_eps=1e-8, box_redo=1e-5, box_margin=4, track_exit_length=None,
             well_lnmin=0.5

Also here: :func:`baseline_ifp` (Baxter-Jain steady IFP with vascular exchange and a Dirichlet tissue
surface placed by a level set), and the cavity laws :class:`CavityLaw`, :func:`solve_cavity_volume`.
"""
from __future__ import annotations

import heapq
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numba import njit
from scipy.linalg import solve_banded
from scipy.optimize import brentq

from ..numerics.elliptic import SPDSolver

__all__ = [
    "MechanicsTissue", "NeedleTrack", "FlowStep", "InjectionMechanics", "CavityLaw",
    "solve_cavity_volume", "baseline_ifp", "expmean",
]

_FIELDS = ("K0", "M", "K_max", "H_A", "E_d", "nu", "G_c", "LpSV", "lymph", "weak", "phi0")
_SIDES = ("x-", "x+", "y-", "y+", "z-", "z+")
_R_EQ_7PT = 1.0 / (4.0 * math.pi * 0.252731)  # equivalent radius of the 7-point Green's function (Watson's integral)


# ============================================================================ data classes
@dataclass
class MechanicsTissue:
    """Per-voxel mechanics properties (arrays of ``grid.shape``, SI).

    K0 [m^2/(Pa s)], M [-], K_max [m^2/(Pa s)], H_A [Pa] (aggregate modulus), E_d [Pa] (drained Young),
    nu [-], G_c [J/m^2], LpSV [1/(Pa s)] (vascular Lp S/V), lymph [1/(Pa s)] (lymphatic drainage coefficient,
    hypothesis), weak [-] (weak-plane factor w in (0, 1]), phi0 [-] (baseline interstitial fraction).
    tissue_mask: voxels holding tissue. sink_mask: vessel lumen / free-surface voxels that open a leak
    when a cavity touches them.
    """

    K0: np.ndarray
    M: np.ndarray
    K_max: np.ndarray
    H_A: np.ndarray
    E_d: np.ndarray
    nu: np.ndarray
    G_c: np.ndarray
    LpSV: np.ndarray
    lymph: np.ndarray
    weak: np.ndarray
    phi0: np.ndarray
    tissue_mask: np.ndarray
    sink_mask: np.ndarray

    @classmethod
    def uniform(cls, shape, *, K0=1e-14, M=5.0, K_max=1e-9, H_A=26e3, E_d=20e3, nu=0.35, G_c=164.0,
                LpSV=4.2e-7, lymph=0.0, weak=1.0, phi0=0.3, tissue_mask=None, sink_mask=None):
        """Uniform tissue (defaults: tumour of injection.md §6.4)."""
        shape = tuple(int(s) for s in shape)
        vals = dict(K0=K0, M=M, K_max=K_max, H_A=H_A, E_d=E_d, nu=nu, G_c=G_c, LpSV=LpSV, lymph=lymph,
                    weak=weak, phi0=phi0)
        arrs = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), shape).copy() for k, v in vals.items()}
        tm = np.ones(shape, bool) if tissue_mask is None else np.asarray(tissue_mask, bool)
        sm = np.zeros(shape, bool) if sink_mask is None else np.asarray(sink_mask, bool)
        return cls(**arrs, tissue_mask=tm, sink_mask=sm)

    def validated(self, shape) -> "MechanicsTissue":
        out = {}
        for k in _FIELDS:
            a = np.broadcast_to(np.asarray(getattr(self, k), dtype=np.float64), shape).copy()
            if not np.all(np.isfinite(a)):
                raise ValueError(f"MechanicsTissue.{k} has non-finite values")
            out[k] = a
        tm = np.broadcast_to(np.asarray(self.tissue_mask, bool), shape).copy()
        sm = np.broadcast_to(np.asarray(self.sink_mask, bool), shape).copy()
        for k in ("K0", "K_max", "LpSV", "lymph", "G_c"):
            if np.any(out[k] < 0):
                raise ValueError(f"MechanicsTissue.{k} must be >= 0")
        if np.any(out["H_A"][tm] <= 0) or np.any(out["E_d"][tm] <= 0):
            raise ValueError("H_A and E_d must be > 0 in tissue")
        if np.any((out["weak"][tm] <= 0) | (out["weak"][tm] > 1)):
            raise ValueError("weak must be in (0, 1]")
        if np.any((out["nu"][tm] < 0) | (out["nu"][tm] >= 0.5)):
            raise ValueError("nu must be in [0, 0.5)")
        return MechanicsTissue(**out, tissue_mask=tm, sink_mask=sm)


@dataclass
class NeedleTrack:
    """Needle: tip voxel and shaft voxels ordered from the tip to the skin entry.

    r_n: outer radius (m); sigma_s: track seal stress (Pa); shear_modulus: G of the track wall (Pa).
    Lambda: optional leak coefficient per unit length [m^2/(Pa s)] replacing the Peaceman well index.
    V0: optional starting (unresolved) cavity volume, default 4/3 pi r_n^3.
    """

    tip_index: tuple
    track: list
    r_n: float
    sigma_s: float
    shear_modulus: float
    Lambda: float | None = None
    V0: float | None = None


@dataclass
class FlowStep:
    """Fluxes of one step (see contracts.md for the face convention).

    Fx, Fy, Fz: volumetric face fluxes over the step, m^3/s (Darcy faces, cavity-wall faces and the
        faces carrying liquid inside a cavity).
    source: m^3/s entering each voxel from the needle (tip voxel) and the track leak (host voxels; negative
        only where tissue drains back into an open track).
    sink: m^3/s leaving each voxel to vessels (LpSV p), lymph, open sinks (G_s p_c) and into the needle
        track at the cavity end (negative = inflow).
    backflow: m^3/s leaving through the skin along all tracks.
    theta_change: change of liquid volume fraction per voxel, == dt/dV (source - sink - div F) to round-off.
    p_c, V_c, q_in: per needle after the step. track: per needle dict with node ``host`` (flat voxel
        index), ``q`` (segment flows, tip -> skin, last = exit), ``leak`` (into host), ``volume``, ``h``.
    """

    Fx: np.ndarray
    Fy: np.ndarray
    Fz: np.ndarray
    source: np.ndarray
    sink: np.ndarray
    backflow: float
    dt: float
    theta_change: np.ndarray
    p_c: np.ndarray = None
    V_c: np.ndarray = None
    q_in: np.ndarray = None
    track: list = field(default_factory=list)
    picard_iterations: int = 0

    def divergence(self) -> np.ndarray:
        """Net outflow per voxel, m^3/s."""
        return (np.diff(self.Fx, axis=0) + np.diff(self.Fy, axis=1) + np.diff(self.Fz, axis=2))


# ============================================================================ cavity laws
def expmean(a, b):
    """Kirchhoff mean (e^b - e^a)/(b - a) of exp over [a, b] (= e^a when a == b), vectorised."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = b - a
    small = np.abs(d) < 1e-4
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r = (np.exp(b) - np.exp(a)) / np.where(small, 1.0, d)
        s = np.exp(0.5 * (a + b)) * (1.0 + d * d / 24.0)
    return np.where(small, s, r)


@dataclass
class CavityLaw:
    """p_c(V) = min(neo-Hookean cavity, penny crack) (injection.md §1.4)."""

    V0: float
    E: float
    nu: float = 0.35
    G_c: float = 164.0
    crack: bool = True

    def p_cav(self, V):
        lam = np.cbrt(np.maximum(V, 1e-300) / self.V0)
        return self.E * (5.0 / 6.0 - 2.0 / (3.0 * lam) - 1.0 / (6.0 * lam ** 4))

    def crack_radius(self, V):
        Ep = self.E / (1.0 - self.nu ** 2)
        KIc = math.sqrt(Ep * self.G_c)
        return (3.0 * Ep * np.maximum(V, 1e-300) / (8.0 * math.sqrt(math.pi) * KIc)) ** 0.4

    def p_crack(self, V):
        Ep = self.E / (1.0 - self.nu ** 2)
        KIc = math.sqrt(Ep * self.G_c)
        if KIc <= 0:
            return np.inf * np.ones_like(np.asarray(V, float))
        return math.sqrt(math.pi) * KIc / 2.0 / np.sqrt(self.crack_radius(V))

    def pressure(self, V):
        pc = self.p_cav(V)
        if self.crack and self.G_c > 0:
            return np.minimum(pc, self.p_crack(V))
        return pc

    def mode(self, V) -> str:
        if self.crack and self.G_c > 0 and self.p_crack(V) < self.p_cav(V):
            return "crack"
        return "cavity"

    @property
    def p_bound(self) -> float:
        """Upper bound of p_c over all volumes (the neo-Hookean plateau 5E/6)."""
        return 5.0 * self.E / 6.0


def solve_cavity_volume(law, V_n: float, dt: float, Q: float, a0: float, a1: float) -> float:
    """Backward-Euler cavity balance ``V - V_n - dt (Q - a0 - a1 P(V)) = 0`` for V (outflow a0 + a1 p_c).

    a1 >= 0. Bracketed by P >= 0 for V >= V0 and P < 0 below V0; solved with brentq.
    """
    rhs = V_n + dt * (Q - a0)
    if a1 * dt <= 0.0:
        return rhs

    def g(V):
        return V - rhs + dt * a1 * float(law.pressure(V))

    V0 = law.V0
    hi = max(rhs, V0)
    hi = hi + 1e-12 * abs(hi) + 1e-300
    ghi = g(hi)
    k = 0
    while ghi < 0 and k < 200:  # only through round-off
        hi *= 2.0
        ghi = g(hi)
        k += 1
    lo = min(V0, rhs) if rhs < V0 else V0
    glo = g(lo)
    k = 0
    while glo > 0 and k < 2000:
        lo *= 0.5
        glo = g(lo)
        k += 1
    if glo == 0:
        return lo
    if ghi == 0:
        return hi
    return brentq(g, lo, hi, xtol=1e-15 * hi, rtol=1e-15, maxiter=200)


# ============================================================================ numba kernels
@njit(cache=True)
def _tree_accumulate(b, parent_pos):
    """Flows on a rooted tree given node budgets b (inflow needed); returns flow parent->child per node."""
    acc = b.copy()
    for i in range(b.shape[0] - 1, 0, -1):
        acc[parent_pos[i]] += acc[i]
    return acc


# ============================================================================ main class
_DEFAULTS = dict(
    cavity=True,            # lumped cavity node per needle (False: needle flow enters the tip voxel)
    crack=True,             # p_c = min(p_cav, p_crack)
    boundary="drained",     # domain faces: "drained" | "sealed" | float Pa | dict per side
    face_k="kirchhoff",     # "kirchhoff" (harmonic K0 x Kirchhoff-mean strain factor) | "harmonic"
    G_sink=None,            # leak conductance per cavity-sink contact face, m^3/(Pa s); default K_max h
    picard_tol=1e-6,
    picard_max=12,
    anderson=3,
    wall_predictor=True,    # local nonlinear update of wall-adjacent voxels before the first Picard iterate             # Anderson-acceleration depth of the outer Picard iteration (0 = plain Picard)
    rtol=1e-10,
    solver="auto",
    active_box=True,
    box_eps=1e-8,           # grow the active box when |p| on its sealed faces exceeds box_eps * max p
    box_redo=1e-5,          # ... and repeat the step when it exceeds box_redo
    box_margin=4,
    track_exit_length=None,
    well_lnmin=0.5,
)


class InjectionMechanics:
    """Volume-exact injection mechanics (see module docstring).

    ``step(dt, q_in)`` advances by dt with the needle flow rates ``q_in`` (m^3/s, one per needle) and
    returns a :class:`FlowStep`. State: ``e``, ``p``, ``f``, ``theta_extra``, ``V_c``, ``p_c``,
    ``track_h``, ``track_volume``; ``volume_budget()`` gives the cumulative ledger.
    """

    def __init__(self, grid, tissue: MechanicsTissue, needles: list, mu_inj: float, **options):
        unknown = set(options) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}")
        self.opt = dict(_DEFAULTS)
        self.opt.update(options)
        self.grid = grid
        self.shape = tuple(grid.shape)
        self.h = np.asarray(grid.spacing, dtype=np.float64)
        self.dV = float(np.prod(self.h))
        self.area = np.array([self.h[1] * self.h[2], self.h[0] * self.h[2], self.h[0] * self.h[1]])
        self.tis = tissue.validated(self.shape)
        self.mu = float(mu_inj)
        if self.mu <= 0:
            raise ValueError("mu_inj must be > 0")
        self.cavity_mode = bool(self.opt["cavity"])
        self.bc = self._parse_boundary(self.opt["boundary"])
        self.G_sink = (float(self.opt["G_sink"]) if self.opt["G_sink"] is not None
                       else float(np.max(self.tis.K_max)) * float(np.cbrt(self.dV)))
        self.solver = SPDSolver(rtol=self.opt["rtol"], method=self.opt["solver"])

        n = self.shape
        self.strides = np.array([n[1] * n[2], n[2], 1], dtype=np.int64)
        self.e = np.zeros(n)
        self.f = np.zeros(n)
        self.p = np.zeros(n)
        self.time = 0.0
        self.owner = np.full(n, -1, dtype=np.int32)
        self.order_pos = np.full(n, -1, dtype=np.int64)
        # number of sink-mask face neighbours per voxel
        self.sink_contacts = self._count_sink_contacts()

        self.needles = list(needles)
        self.nN = len(self.needles)
        if not self.cavity_mode and any(len(nd.track) for nd in self.needles):
            raise ValueError("needle tracks need the cavity model (cavity=True)")
        self._setup_needles()
        self.ledger = {k: 0.0 for k in ("injected", "backflow_out", "vascular", "lymph", "sinks", "boundary")}
        self._box = None
        self._pattern = None
        self._Xprev = None
        self._debug = False
        self._last_box_rel = 0.0
        self.redos = 0
        self._init_box()

    # ------------------------------------------------------------------ setup helpers
    def _parse_boundary(self, b):
        if isinstance(b, dict):
            out = {}
            for s in _SIDES:
                out[s] = b.get(s, "drained")
        else:
            out = {s: b for s in _SIDES}
        for s, v in out.items():
            if isinstance(v, str):
                if v not in ("drained", "sealed"):
                    raise ValueError(f"boundary {s}: {v!r}")
                out[s] = None if v == "sealed" else 0.0
            else:
                out[s] = float(v)
        return out  # None = sealed, float = prescribed excess pressure

    def _count_sink_contacts(self):
        sm = self.tis.sink_mask
        c = np.zeros(self.shape, dtype=np.int32)
        for ax in range(3):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[ax] = slice(0, -1)
            hi[ax] = slice(1, None)
            c[tuple(lo)] += sm[tuple(hi)]
            c[tuple(hi)] += sm[tuple(lo)]
        return c

    def _flat(self, idx):
        i, j, k = (int(v) for v in idx)
        for d, v in enumerate((i, j, k)):
            if not 0 <= v < self.shape[d]:
                raise ValueError(f"voxel index {idx} outside the grid")
        return int(i * self.strides[0] + j * self.strides[1] + k)

    def _setup_needles(self):
        tis = self.tis
        self.laws = []
        self.tip_flat = np.zeros(self.nN, dtype=np.int64)
        self.V_c = np.zeros(self.nN)
        self.V0 = np.zeros(self.nN)
        self.orders = []
        self.parents = []
        self.heaps = []
        self.discovered = []
        self.n_full = np.zeros(self.nN, dtype=np.int64)
        self.frac = np.zeros(self.nN)
        tr_host, tr_ell, tr_needle, tr_Sfull, tr_sigma, tr_Lam = [], [], [], [], [], []
        seg_coef, seg_len = [], []
        self.tr_offsets = [0]
        self.tr_z = []
        for m, nd in enumerate(self.needles):
            tip = self._flat(nd.tip_index)
            if not tis.tissue_mask.flat[tip] or tis.sink_mask.flat[tip]:
                raise ValueError(f"needle {m}: tip voxel must be tissue and not a sink")
            if self.owner.flat[tip] != -1:
                raise ValueError("two needles share a tip voxel")
            self.tip_flat[m] = tip
            V0 = float(nd.V0) if nd.V0 is not None else 4.0 / 3.0 * math.pi * nd.r_n ** 3
            self.V0[m] = V0
            self.V_c[m] = V0
            it = np.unravel_index(tip, self.shape)
            self.laws.append(CavityLaw(V0=V0, E=float(tis.E_d[it]), nu=float(tis.nu[it]), G_c=float(tis.G_c[it]),
                                       crack=bool(self.opt["crack"])))
            # cavity flood structures
            self.owner.flat[tip] = m
            self.order_pos.flat[tip] = 0
            self.orders.append([tip])
            self.parents.append([-1])
            self.heaps.append([])
            self.discovered.append({tip})
            if self.cavity_mode:
                self._push_neighbours(m, tip)
            # track nodes
            nodes = []
            for v in nd.track:
                fv = self._flat(v)
                if fv == tip or (nodes and nodes[-1] == fv):
                    continue
                nodes.append(fv)
            if len(set(nodes)) != len(nodes):
                raise ValueError(f"needle {m}: repeated track voxels")
            pos = [np.array(np.unravel_index(tip, self.shape), float) * self.h]
            pos += [np.array(np.unravel_index(v, self.shape), float) * self.h for v in nodes]
            segs = [float(np.linalg.norm(pos[k + 1] - pos[k])) for k in range(len(nodes))]
            if nodes:
                ex = self.opt["track_exit_length"]
                segs.append(float(ex) if ex is not None else 0.5 * segs[-1])
            G = float(nd.shear_modulus)
            rn = float(nd.r_n)
            coef = 2.0 * math.pi * rn * (rn / (2.0 * G)) ** 3 / (12.0 * self.mu)
            z = np.cumsum(segs[:len(nodes)]) if nodes else np.zeros(0)
            self.tr_z.append(np.asarray(z))
            for k, v in enumerate(nodes):
                ell = 0.5 * (segs[k] + segs[k + 1])
                tr_host.append(v)
                tr_ell.append(ell)
                tr_needle.append(m)
                tr_Sfull.append(math.pi * rn ** 2 * ell / G)
                tr_sigma.append(float(nd.sigma_s))
                tr_Lam.append(np.nan if nd.Lambda is None else float(nd.Lambda))
            for L in segs:
                seg_coef.append(coef / L)
                seg_len.append(L)
            self.tr_offsets.append(self.tr_offsets[-1] + len(nodes))
        self.nT = self.tr_offsets[-1]
        self.tr_host = np.asarray(tr_host, dtype=np.int64)
        self.tr_ell = np.asarray(tr_ell, float)
        self.tr_needle = np.asarray(tr_needle, dtype=np.int64)
        self.tr_Sfull = np.asarray(tr_Sfull, float)
        self.tr_sigma = np.asarray(tr_sigma, float)
        self.tr_Lam_override = np.asarray(tr_Lam, float)
        self.tr_rn = np.array([self.needles[m].r_n for m in tr_needle], float) if self.nT else np.zeros(0)
        self.tr_G = np.array([self.needles[m].shear_modulus for m in tr_needle], float) if self.nT else np.zeros(0)
        # segments: per needle n_nodes + 1 segments (tip-end .. exit) if it has nodes, else none
        self.seg_coef = np.asarray(seg_coef, float)
        self.seg_len = np.asarray(seg_len, float)
        self.seg_offsets = [0]
        for m in range(self.nN):
            nn = self.tr_offsets[m + 1] - self.tr_offsets[m]
            self.seg_offsets.append(self.seg_offsets[-1] + (nn + 1 if nn else 0))
        self.V_tr = np.zeros(self.nT)
        self.p_tr = np.zeros(self.nT)
        # well-index log factor
        re = 0.2 * float(np.cbrt(self.dV))
        self.tr_lnfac = np.maximum(np.log(re / np.maximum(self.tr_rn, 1e-300)), self.opt["well_lnmin"]) \
            if self.nT else np.zeros(0)

    # ------------------------------------------------------------------ cavity geometry
    def _eligible(self, flat):
        return bool(self.tis.tissue_mask.flat[flat]) and not bool(self.tis.sink_mask.flat[flat]) \
            and self.owner.flat[flat] == -1

    def _neighbours(self, flat):
        i, j, k = np.unravel_index(flat, self.shape)
        out = []
        for d, v in enumerate((i, j, k)):
            if v > 0:
                out.append(flat - int(self.strides[d]))
            if v < self.shape[d] - 1:
                out.append(flat + int(self.strides[d]))
        return out

    def _push_neighbours(self, m, flat):
        tip = np.array(np.unravel_index(self.tip_flat[m], self.shape), float) * self.h
        disc = self.discovered[m]
        for nb in self._neighbours(flat):
            if nb in disc or not self._eligible(nb):
                continue
            disc.add(nb)
            it = np.unravel_index(nb, self.shape)
            d = float(np.linalg.norm(np.array(it, float) * self.h - tip))
            cost = float(self.tis.weak[it]) * (5.0 / 6.0) * float(self.tis.E_d[it]) * d
            heapq.heappush(self.heaps[m], (cost, nb))

    def _grow_order(self, m, n_needed):
        order = self.orders[m]
        par = self.parents[m]
        tipc = np.array(np.unravel_index(self.tip_flat[m], self.shape), float) * self.h
        while len(order) < n_needed:
            if not self.heaps[m]:
                return False
            cost, v = heapq.heappop(self.heaps[m])
            if self.owner.flat[v] != -1:
                continue
            # parent: filled neighbour of this cavity closest to the tip
            best, bestd = -1, np.inf
            for nb in self._neighbours(v):
                if self.owner.flat[nb] == m and self.order_pos.flat[nb] >= 0:
                    d = float(np.linalg.norm(np.array(np.unravel_index(nb, self.shape), float) * self.h - tipc))
                    if d < bestd:
                        best, bestd = nb, d
            self.owner.flat[v] = m
            self.order_pos.flat[v] = len(order)
            par.append(int(self.order_pos.flat[best]))
            order.append(v)
            self._push_neighbours(m, v)
        return True

    def _set_cavity_volume(self, m):
        """Distribute V_c - V0 over the flood order (full voxels then one partial voxel).

        Returns the number of leading order entries that held cavity liquid before or after (the tree set).
        """
        Vl = self.V_c[m] - self.V0[m]
        x = Vl / self.dV
        nf = int(math.floor(x)) if x > 0 else 0
        fr = x - nf
        nf_old, fr_old = int(self.n_full[m]), float(self.frac[m])
        n_old = nf_old + (1 if fr_old != 0.0 else 0)
        if not self._grow_order(m, nf + 1):
            # no eligible frontier left: keep the excess in the last voxel (exact; f may exceed 1)
            nf = len(self.orders[m]) - 1
            fr = x - nf
            warnings.warn("cavity cannot grow further (no eligible frontier voxel)", RuntimeWarning)
        n_new = nf + (1 if fr != 0.0 else 0)
        order = self.orders[m]
        lo = min(nf_old, nf)
        hi = max(n_old, n_new, lo + 1)
        idx = np.asarray(order[lo:hi], dtype=np.int64)
        pos = np.arange(lo, lo + idx.size)
        self.f.flat[idx] = np.where(pos < nf, 1.0, np.where(pos == nf, fr, 0.0))
        self.n_full[m] = nf
        self.frac[m] = fr
        return max(n_old, n_new, 1)

    # ------------------------------------------------------------------ active box
    def _init_box(self):
        n = np.array(self.shape)
        if not self.opt["active_box"]:
            self._set_box(np.zeros(3, int), n.copy())
            return
        pts = [np.array(np.unravel_index(t, self.shape)) for t in self.tip_flat]
        pts += [np.array(np.unravel_index(t, self.shape)) for t in self.tr_host]
        lo = np.min(pts, axis=0) if pts else np.zeros(3, int)
        hi = np.max(pts, axis=0) + 1 if pts else n.copy()
        mg = int(self.opt["box_margin"])
        lo = np.maximum(lo - mg, 0)
        hi = np.minimum(hi + mg, n)
        for ax in range(3):  # prescribed non-zero boundary pressures: include that face layer and all of it
            for s, side_lo in ((f"{'xyz'[ax]}-", True), (f"{'xyz'[ax]}+", False)):
                pb = self.bc[s]
                if pb is not None and pb != 0.0:
                    lo[:] = np.where(np.arange(3) == ax, lo, 0)
                    hi[:] = np.where(np.arange(3) == ax, hi, n)
                    if side_lo:
                        lo[ax] = 0
                    else:
                        hi[ax] = n[ax]
        self._set_box(lo, hi)

    def _set_box(self, lo, hi):
        self._box = (np.asarray(lo, int).copy(), np.asarray(hi, int).copy())
        self._pattern = None
        self._Xprev = None
        self.solver.invalidate()

    def _box_slices(self):
        lo, hi = self._box
        return tuple(slice(int(lo[d]), int(hi[d])) for d in range(3))

    def _maybe_grow_box(self, pbox, pscale):
        lo, hi = (a.copy() for a in self._box)
        n = np.array(self.shape)
        bshape = hi - lo
        new_lo, new_hi = lo.copy(), hi.copy()
        eps = float(self.opt["box_eps"])
        w = 2
        mg = int(self.opt["box_margin"])
        # cavity extent (+ margin) must stay inside
        cav = [np.asarray(self.orders[m][: self.n_full[m] + 1], dtype=np.int64) for m in range(self.nN)]
        cav = np.concatenate(cav) if cav else np.zeros(0, np.int64)
        if cav.size:
            ci = np.array(np.unravel_index(cav, self.shape))
            new_lo = np.minimum(new_lo, np.maximum(ci.min(axis=1) - mg, 0))
            new_hi = np.maximum(new_hi, np.minimum(ci.max(axis=1) + 1 + mg, n))
        worst = 0.0
        redo = float(self.opt["box_redo"])
        for ax in range(3):
            for at_lo in (True, False):
                if (at_lo and lo[ax] == 0) or ((not at_lo) and hi[ax] == n[ax]):
                    continue
                sl = [slice(None)] * 3
                sl[ax] = slice(0, min(w, bshape[ax])) if at_lo else slice(max(0, bshape[ax] - w), bshape[ax])
                rel = float(np.max(np.abs(pbox[tuple(sl)]))) / pscale
                worst = max(worst, rel)
                if rel > eps:
                    frac = 0.5 if rel > redo else 0.1
                    grow = max(3, int(math.ceil(frac * bshape[ax])))
                    if at_lo:
                        new_lo[ax] = min(new_lo[ax], max(0, lo[ax] - grow))
                    else:
                        new_hi[ax] = max(new_hi[ax], min(n[ax], hi[ax] + grow))
        if np.any(new_lo != lo) or np.any(new_hi != hi):
            self._set_box(new_lo, new_hi)
        return worst

    # ------------------------------------------------------------------ sparse pattern
    def _build_pattern(self):
        """7-point pattern of the active box (fixed while the box is unchanged), CSR with a COO->CSR map."""
        lo, hi = self._box
        bs = tuple(int(v) for v in hi - lo)
        nb = int(np.prod(bs))
        idx = np.arange(nb, dtype=np.int64).reshape(bs)
        rows = [np.arange(nb, dtype=np.int64)]
        cols = [np.arange(nb, dtype=np.int64)]
        rows_sizes = []
        for ax in range(3):
            a = [slice(None)] * 3
            b = [slice(None)] * 3
            a[ax] = slice(0, -1)
            b[ax] = slice(1, None)
            ia, ib = idx[tuple(a)].ravel(), idx[tuple(b)].ravel()
            rows_sizes.append(ia)
            rows += [ia, ib]
            cols += [ib, ia]
        rows = np.concatenate(rows)
        cols = np.concatenate(cols)
        nnz = rows.size
        A = sp.coo_matrix((np.arange(1, nnz + 1, dtype=np.float64), (rows, cols)), shape=(nb, nb)).tocsr()
        A.sort_indices()
        if A.nnz != nnz:
            raise RuntimeError("duplicate entries in the injection matrix pattern")
        perm = (A.data - 1.0).astype(np.int64)
        inv = np.empty(nnz, np.int64)
        inv[perm] = np.arange(nnz)           # COO entry -> CSR position
        sizes = [nb] + [r.size for r in rows_sizes for _ in (0, 1)]
        offs = np.concatenate([[0], np.cumsum(sizes)])
        pos_diag = inv[offs[0]:offs[1]]
        pos_lo = [inv[offs[1 + 2 * ax]:offs[2 + 2 * ax]] for ax in range(3)]
        pos_hi = [inv[offs[2 + 2 * ax]:offs[3 + 2 * ax]] for ax in range(3)]
        hb = self._to_box_index(self.tr_host) if self.nT else np.zeros(0, np.int64)
        A.data[:] = 0.0
        self._pattern = dict(A=A, nb=nb, bshape=bs, host_box=hb, pos_diag=pos_diag, pos_lo=pos_lo, pos_hi=pos_hi)

    def _to_box_index(self, flat):
        lo, hi = self._box
        bs = hi - lo
        ijk = np.array(np.unravel_index(np.asarray(flat, np.int64), self.shape)).reshape(3, -1)
        if np.any(ijk < lo[:, None]) or np.any(ijk >= hi[:, None]):
            raise RuntimeError("voxel outside the active box")
        loc = ijk - lo[:, None]
        return (loc[0] * bs[1] + loc[1]) * bs[2] + loc[2]

    # ------------------------------------------------------------------ properties of the state
    @property
    def p_c(self) -> np.ndarray:
        return np.array([float(self.laws[m].pressure(self.V_c[m])) for m in range(self.nN)])

    @property
    def theta_extra(self) -> np.ndarray:
        return self.e + self.f

    @property
    def cavity_fraction(self) -> np.ndarray:
        return self.f

    @property
    def theta(self) -> np.ndarray:
        """Mobile liquid fraction: baseline interstitial fraction + dilation + cavity liquid."""
        return np.where(self.tis.tissue_mask, self.tis.phi0, 0.0) + self.e + self.f

    @property
    def interstitial_fraction(self) -> np.ndarray:
        return (self.tis.phi0 + self.e) / (1.0 + self.e)

    @property
    def track_h(self) -> list:
        out = []
        for m in range(self.nN):
            s = slice(self.tr_offsets[m], self.tr_offsets[m + 1])
            out.append(np.maximum(self.V_tr[s], 0.0) / (2.0 * math.pi * self.tr_rn[s] * self.tr_ell[s]))
        return out

    @property
    def track_volume(self) -> list:
        return [self.V_tr[self.tr_offsets[m]:self.tr_offsets[m + 1]].copy() for m in range(self.nN)]

    @property
    def track_pressure(self) -> list:
        return [self.p_tr[self.tr_offsets[m]:self.tr_offsets[m + 1]].copy() for m in range(self.nN)]

    def pressure_bound(self) -> float:
        return max([law.p_bound for law in self.laws], default=0.0)

    def volume_budget(self) -> dict:
        out = dict(self.ledger)
        out["stored_dilation"] = float(np.sum(self.e) * self.dV)
        out["cavity"] = float(np.sum(self.V_c - self.V0))
        out["track"] = float(np.sum(self.V_tr))
        lhs = out["injected"]
        rhs = sum(out[k] for k in ("stored_dilation", "cavity", "track", "backflow_out", "vascular", "lymph",
                                   "sinks", "boundary"))
        out["residual"] = lhs - rhs
        out["rel_error"] = abs(lhs - rhs) / max(abs(lhs), 1e-300) if lhs != 0 else abs(rhs)
        return out

    def cavity_shape(self, m: int = 0) -> dict:
        """Volume, centroid, principal-axis ratio (min/max sqrt eigenvalue of the second moment) and
        ``sphericity`` = share of the cavity liquid inside the equal-volume sphere about its centroid."""
        idx = np.asarray(self.orders[m][: self.n_full[m] + 1], np.int64)
        w = self.f.flat[idx] * self.dV
        V = float(w.sum())
        if V <= 0:
            return dict(volume=0.0, centroid=None, axis_ratio=1.0, sphericity=1.0, r_eq=0.0)
        X = np.array(np.unravel_index(idx, self.shape), float).T * self.h
        c = (w[:, None] * X).sum(0) / V
        Y = X - c
        C = (w[:, None, None] * Y[:, :, None] * Y[:, None, :]).sum(0) / V
        ev = np.linalg.eigvalsh(C)
        r_eq = (3 * V / (4 * math.pi)) ** (1 / 3)
        inside = np.linalg.norm(Y, axis=1) <= r_eq
        return dict(volume=V, centroid=c, axis_ratio=float(np.sqrt(max(ev[0], 0) / ev[-1])) if ev[-1] > 0 else 1.0,
                    sphericity=float(w[inside].sum() / V), r_eq=r_eq, eigen=np.sqrt(np.maximum(ev, 0)))

    # ------------------------------------------------------------------ the step
    def step(self, dt: float, q_in) -> FlowStep:
        """Advance by dt with needle flow rates q_in (m^3/s per needle); returns the step's fluxes.

        If the pressure reaches the sealed faces of the active box above ``box_redo`` (relative), the box
        is enlarged and the step repeated, so that the box truncation never matters to more than that."""
        for attempt in range(64):
            snap = (self.e.copy(), self.f.copy(), self.p.copy(), self.V_c.copy(), self.V_tr.copy(),
                    self.p_tr.copy(), self.n_full.copy(), self.frac.copy(), dict(self.ledger), self.time)
            fs = self._step_once(dt, q_in)
            if self._last_box_rel <= self.opt["box_redo"]:
                return fs
            (self.e, self.f, self.p, self.V_c, self.V_tr, self.p_tr, self.n_full, self.frac, self.ledger,
             self.time) = snap
            self.redos += 1
        return fs

    def _step_once(self, dt: float, q_in) -> FlowStep:
        dt = float(dt)
        if not dt > 0:
            raise ValueError("dt must be > 0")
        q = np.zeros(self.nN) if q_in is None else np.asarray(q_in, dtype=np.float64).reshape(-1)
        if q.size != self.nN:
            raise ValueError("q_in needs one rate per needle")
        if self._pattern is None:
            self._build_pattern()
        P = self._pattern
        sl = self._box_slices()
        bs = P["bshape"]
        nb, nT, nN = P["nb"], self.nT, self.nN
        tis = self.tis
        # ---- frozen per-step data on the box
        st = dict(dt=dt, q=q, sl=sl, bs=bs)
        st["K0"] = tis.K0[sl]
        st["M"] = tis.M[sl]
        st["Kmax"] = tis.K_max[sl]
        st["HA"] = tis.H_A[sl]
        st["sinkc"] = (tis.LpSV[sl] + tis.lymph[sl]) * self.dV
        st["e_n"] = self.e[sl].copy()
        L = np.full(bs, -2, dtype=np.int64)
        L[tis.tissue_mask[sl]] = -1
        if self.cavity_mode:
            for m in range(nN):
                full = np.asarray(self.orders[m][: self.n_full[m]], np.int64)
                if full.size:
                    L.flat[self._to_box_index(full)] = m
        st["L"] = L
        act = L == -1
        st["act"] = act
        hb = P["host_box"]
        host_L = L.ravel()[hb] if nT else np.zeros(0, np.int64)
        tr_active = host_L < 0
        st["host_L"] = host_L
        st["tr_active"] = tr_active
        st["tip_box"] = self._to_box_index(self.tip_flat) if nN else np.zeros(0, np.int64)
        # liquid of track nodes engulfed by a cavity is released into that cavity during this step
        release = np.where(tr_active, 0.0, self.V_tr) / dt if nT else np.zeros(0)
        q_cav = q.copy()
        if nT and np.any(release != 0):
            np.add.at(q_cav, host_L[~tr_active], release[~tr_active])
        st["release"] = release
        st["q_cav"] = q_cav
        st["well_on"] = np.array([self.cavity_mode and self.n_full[m] == 0 for m in range(nN)], bool)
        # open sinks (G_s) per cavity voxel at step start: contacts * G_s * (1 | f)
        gs_vox, gs_val, gs_cav = [], [], []
        if self.cavity_mode:
            for m in range(nN):
                nt = self.n_full[m] + (1 if self.frac[m] > 0 else 0)
                idx = np.asarray(self.orders[m][:nt], np.int64)
                if idx.size:
                    c = self.sink_contacts.flat[idx]
                    fac = np.where(np.arange(nt) < self.n_full[m], 1.0, self.frac[m])
                    g = self.G_sink * c * fac
                    keep = g > 0
                    gs_vox.append(idx[keep])
                    gs_val.append(g[keep])
                    gs_cav.append(np.full(int(keep.sum()), m))
        st["gs_vox"] = np.concatenate(gs_vox) if gs_vox else np.zeros(0, np.int64)
        st["gs_val"] = np.concatenate(gs_val) if gs_val else np.zeros(0)
        st["gs_cav"] = np.concatenate(gs_cav) if gs_cav else np.zeros(0, np.int64)
        st["segs"] = self._segments(tr_active, host_L)
        st["geo"] = self._geometry(st)

        # ---- outer Picard on K(e) (tissue) with the cavity/track subsystem solved inside
        p_star = np.where(act, st["HA"] * st["e_n"], 0.0).ravel()
        pc_star = self.p_c
        V_star = self.V_c.copy()
        ptr_star = self.p_tr.copy()
        linear = (not np.any(st["M"][act] != 0)) and nT == 0
        if not linear and self.opt["wall_predictor"]:
            pc_pred = np.array([float(self.laws[m].pressure(self.V_c[m] + dt * q_cav[m])) for m in range(nN)]) \
                if self.cavity_mode else pc_star
            p_star = self._predict_wall(st, p_star, np.maximum(pc_pred, 0.0) if nN else pc_pred)
        it = 0
        hist_x, hist_g = [], []
        depth = int(self.opt["anderson"])
        for it in range(1, int(self.opt["picard_max"]) + 1):
            C = self._assemble(st, p_star, pc_star, ptr_star)
            X0 = self._Xprev if (self._Xprev is not None and self._Xprev.shape == C["B"].shape) else None
            if it == 1:
                method = self.solver.choose(C["A"])   # decided once per step (the matrix changes little)
            X = self.solver.solve(C["A"], C["B"], X0=X0, method=method)
            self._Xprev = X
            V_new, pc_new, ptr_new = self._solve_nodes(st, C, X, V_star, ptr_star)
            p_new = X[:, 0].copy()
            for m in range(nN):           # (no BLAS gemv: thread contention on shared machines)
                p_new += pc_new[m] * X[:, 1 + m]
            scale = max(float(np.max(np.abs(p_new))) if nb else 0.0,
                        float(np.max(np.abs(pc_new))) if nN else 0.0,
                        float(np.max(np.abs(ptr_new))) if nT else 0.0, 1e-300)
            dp = float(np.max(np.abs(p_new - p_star))) if nb else 0.0
            if nN:
                dp = max(dp, float(np.max(np.abs(pc_new - pc_star))))
            if nT:
                dp = max(dp, float(np.max(np.abs(np.where(tr_active, ptr_new - ptr_star, 0.0)))))
            if self._debug:
                print(f"    picard {it}: dp={dp:.3e} scale={scale:.3e} pc={pc_new} "
                      f"solver={self.solver.last_method}/{self.solver.last_iterations}")
            if linear or dp <= self.opt["picard_tol"] * scale:
                p_star, pc_star, V_star, ptr_star = p_new, pc_new, V_new, ptr_new
                break
            # next linearisation point: Anderson-accelerated Picard (the final state is always the solution
            # of the last linear system, so acceleration changes only where K and the track are evaluated)
            xk = np.concatenate([p_star, pc_star, ptr_star])
            gk = np.concatenate([p_new, pc_new, ptr_new])
            nxt = gk
            if depth > 0:
                hist_x.append(xk)
                hist_g.append(gk)
                if len(hist_x) > depth + 1:
                    hist_x.pop(0)
                    hist_g.pop(0)
                if len(hist_x) >= 2:
                    F = [g - x for g, x in zip(hist_g, hist_x)]
                    dF = [F[i + 1] - F[i] for i in range(len(F) - 1)]
                    dG = [hist_g[i + 1] - hist_g[i] for i in range(len(F) - 1)]
                    k_ = len(dF)
                    dot = lambda u, v: float(np.einsum("i,i->", u, v))  # noqa: E731 (no threaded BLAS)
                    Gm = np.array([[dot(dF[i], dF[j]) for j in range(k_)] for i in range(k_)])
                    rh = np.array([dot(dF[i], F[-1]) for i in range(k_)])
                    try:
                        gam = np.linalg.solve(Gm + 1e-14 * np.trace(Gm) * np.eye(k_), rh)
                    except np.linalg.LinAlgError:
                        gam = np.full(k_, np.nan)
                    if np.all(np.isfinite(gam)) and np.max(np.abs(gam)) < 1e3:
                        nxt = gk.copy()
                        for i in range(k_):
                            nxt -= gam[i] * dG[i]
            p_star = nxt[:nb]
            pc_star = nxt[nb:nb + nN]
            ptr_star = nxt[nb + nN:]
            V_star = V_new
        self.last_picard = it
        return self._finish_step(st, C, p_star, pc_star, ptr_star, it)

    # ------------------------------------------------------------------ assembly (tissue)
    def _khalf(self, K0, M, Kmax, e_cell, e_face):
        if self.opt["face_k"] == "harmonic":
            return np.minimum(K0 * np.exp(M * e_cell), Kmax)
        return np.minimum(K0 * expmean(M * e_cell, M * e_face), Kmax)

    def _host_leak(self, st, e_s):
        """Track leak conductance Lambda*l per node (0 for frozen nodes and non-tissue hosts)."""
        if self.nT == 0:
            return np.zeros(0)
        hb = self._pattern["host_box"]
        K0, Mm, Kmax = st["K0"].ravel()[hb], st["M"].ravel()[hb], st["Kmax"].ravel()[hb]
        Kh = np.minimum(K0 * np.exp(Mm * e_s.ravel()[hb]), Kmax)
        Lam = np.where(np.isnan(self.tr_Lam_override), 2.0 * math.pi * Kh / np.maximum(self.tr_lnfac, 1e-300),
                       self.tr_Lam_override)
        return np.where(st["tr_active"] & (st["host_L"] == -1), Lam * self.tr_ell, 0.0)

    def _geometry(self, st):
        """Per-step static face data (cavity set frozen): tissue faces, cavity walls, domain faces, diagonal base."""
        bs, L, act = st["bs"], st["L"], st["act"]
        K0, Mm, Kmax, HA = st["K0"], st["M"], st["Kmax"], st["HA"]
        nb, dt = int(np.prod(bs)), st["dt"]
        strides = (bs[1] * bs[2], bs[2], 1)
        idx = np.arange(nb, dtype=np.int64).reshape(bs)
        geo = dict(axes=[], bnd=[], cc=[])
        harmonic = self.opt["face_k"] == "harmonic"
        for ax in range(3):
            a = [slice(None)] * 3
            b = [slice(None)] * 3
            a[ax] = slice(0, -1)
            b[ax] = slice(1, None)
            a, b = tuple(a), tuple(b)
            La, Lb = L[a], L[b]
            Ah = self.area[ax] / self.h[ax]
            tt = (La == -1) & (Lb == -1)
            ax_d = dict(a=a, b=b, Ah=Ah, tt=tt)
            if harmonic:
                ax_d["K0h"] = None
            else:
                K0a, K0b = K0[a], K0[b]
                s_ = K0a + K0b
                K0h = np.where(tt & (s_ > 0), 2 * K0a * K0b / np.where(s_ > 0, s_, 1.0), 0.0)
                ax_d["K0h"] = K0h
                ax_d["Mf"] = 0.5 * (Mm[a] + Mm[b])
                ax_d["Kcap"] = np.minimum(Kmax[a], Kmax[b])
            # cavity walls: (face flat index, tissue box index, cavity, tissue on high side?)
            walls = []
            for cav_side, t_side, mask in ((a, b, (La >= 0) & (Lb == -1)), (b, a, (La == -1) & (Lb >= 0))):
                fi = np.flatnonzero(mask)
                if fi.size == 0:
                    continue
                tis_box = idx[t_side].ravel()[fi]
                cav_box = idx[cav_side].ravel()[fi]
                walls.append(dict(fi=fi, tb=tis_box, m=L.ravel()[cav_box], Kc=Kmax.ravel()[cav_box]))
            if walls:
                w = {k: np.concatenate([d[k] for d in walls]) for k in ("fi", "tb", "m", "Kc")}
            else:
                w = dict(fi=np.zeros(0, np.int64), tb=np.zeros(0, np.int64), m=np.zeros(0, np.int64),
                         Kc=np.zeros(0))
            ax_d["walls"] = w
            ccm = (La >= 0) & (Lb >= 0) & (La != Lb)
            Tcc = np.zeros(La.shape)
            if ccm.any():
                Tcc[ccm] = Ah * 2 * Kmax[a][ccm] * Kmax[b][ccm] / np.maximum(Kmax[a][ccm] + Kmax[b][ccm], 1e-300)
                for mm, nn_, g in zip(La[ccm], Lb[ccm], Tcc[ccm]):
                    geo["cc"].append((int(mm), int(nn_), float(g)))
            ax_d["Tcc"] = Tcc
            geo["axes"].append(ax_d)
        lo, hi = self._box
        for ax in range(3):
            for s, at_lo in ((f"{'xyz'[ax]}-", True), (f"{'xyz'[ax]}+", False)):
                pbnd = self.bc[s]
                if pbnd is None:
                    continue
                if (at_lo and lo[ax] != 0) or ((not at_lo) and hi[ax] != self.shape[ax]):
                    continue
                lay = [slice(None)] * 3
                lay[ax] = 0 if at_lo else bs[ax] - 1
                lay = tuple(lay)
                geo["bnd"].append(dict(side=s, ax=ax, at_lo=at_lo, lay=lay, p=pbnd, vox=idx[lay].ravel(),
                                       Ll=L[lay].ravel(), Ah2=self.area[ax] / (0.5 * self.h[ax])))
        geo["diag0"] = np.where(act, self.dV / (HA * dt) + st["sinkc"], 0.0).ravel()
        geo["rhs0"] = np.where(act, self.dV * st["e_n"] / dt, 0.0).ravel()
        geo["inact"] = ~act.ravel()
        geo["strides"] = strides
        return geo

    def _predict_wall(self, st, p_star, pc_star, sweeps=4):
        """Local nonlinear (Picard-Jacobi) update of the voxels next to a cavity wall, whose K(e) changes most
        within a step; gives the outer Picard a better first linearisation point (no effect on the result)."""
        geo, bs, L = st["geo"], st["bs"], st["L"]
        if self.opt["face_k"] == "harmonic" or self.nN == 0:
            return p_star
        tb = [ad["walls"]["tb"] for ad in geo["axes"] if ad["walls"]["tb"].size]
        if not tb:
            return p_star
        W = np.unique(np.concatenate(tb))
        Lf = L.ravel()
        K0f, Mf_, Kmf, HAf = (st[k].ravel() for k in ("K0", "M", "Kmax", "HA"))
        ijk = np.array(np.unravel_index(W, bs))
        nbrs = []
        for ax in range(3):
            s = geo["strides"][ax]
            for sg in (-1, 1):
                ok = (ijk[ax] + sg >= 0) & (ijk[ax] + sg < bs[ax])
                j = np.where(ok, W + sg * s, W)
                lab = np.where(ok, Lf[j], -2)
                nbrs.append((ax, j, lab))
        p = p_star.copy()
        pcs = np.asarray(pc_star, float)
        for _ in range(sweeps):
            e_i = p[W] / HAf[W]
            num = geo["rhs0"][W].copy()
            den = geo["diag0"][W].copy()
            for ax, j, lab in nbrs:
                A_, hx = self.area[ax], self.h[ax]
                tt = lab == -1
                if tt.any():
                    jj = j[tt]
                    s_ = K0f[W[tt]] + K0f[jj]
                    K0h = np.where(s_ > 0, 2 * K0f[W[tt]] * K0f[jj] / np.where(s_ > 0, s_, 1.0), 0.0)
                    Mf = 0.5 * (Mf_[W[tt]] + Mf_[jj])
                    Kf = np.minimum(K0h * expmean(Mf * e_i[tt], Mf * p[jj] / HAf[jj]), np.minimum(Kmf[W[tt]], Kmf[jj]))
                    T = Kf * A_ / hx
                    num[tt] += T * p[jj]
                    den[tt] += T
                wl = lab >= 0
                if wl.any():
                    ew = pcs[lab[wl]] / HAf[W[wl]]
                    Kh = self._khalf(K0f[W[wl]], Mf_[W[wl]], Kmf[W[wl]], e_i[wl], ew)
                    Kc = Kmf[j[wl]]
                    T = np.where(Kh > 0, A_ / (hx / (2 * Kc) + hx / (2 * np.maximum(Kh, 1e-300))), 0.0)
                    num[wl] += T * pcs[lab[wl]]
                    den[wl] += T
            p[W] = num / den
        return p

    def _assemble(self, st, p_star, pc_star, ptr_star):
        P = self._pattern
        nb, nT, nN = P["nb"], self.nT, self.nN
        bs, L, act = st["bs"], st["L"], st["act"]
        K0f, Mf_, Kmf, HAf = (st[k].ravel() for k in ("K0", "M", "Kmax", "HA"))
        geo = st["geo"]
        e_n = st["e_n"]
        e_s = np.where(act, p_star.reshape(bs) / st["HA"], e_n)
        esf = e_s.ravel()
        diag = geo["diag0"].copy()
        rhs0 = geo["rhs0"].copy()
        Bc = np.zeros((nb, nN))
        harmonic = self.opt["face_k"] == "harmonic"
        pcs = np.asarray(pc_star, float)
        thr = 1e-10  # |M e| below this: exp-mean = 1 to 1e-10
        if harmonic:
            Kv = np.minimum(st["K0"] * np.exp(st["M"] * e_s), st["Kmax"])
        faces, offd, wall_rows, wall_cols, wall_vals = [], [], [], [], []
        for ax, ad in enumerate(geo["axes"]):
            a, b, Ah, tt = ad["a"], ad["b"], ad["Ah"], ad["tt"]
            if harmonic:
                Ka, Kb = Kv[a], Kv[b]
                s_ = Ka + Kb
                Ttt = np.where(tt & (s_ > 0), 2 * Ka * Kb / np.where(s_ > 0, s_, 1.0), 0.0) * Ah
            else:
                Kf = ad["K0h"].copy()
                ea, eb = e_s[a], e_s[b]
                Mf = ad["Mf"]
                nl = np.flatnonzero(tt & ((np.abs(Mf * ea) > thr) | (np.abs(Mf * eb) > thr)))
                if nl.size:
                    mfn = Mf.ravel()[nl]
                    Kf.ravel()[nl] = np.minimum(Kf.ravel()[nl] * expmean(mfn * ea.ravel()[nl], mfn * eb.ravel()[nl]),
                                                ad["Kcap"].ravel()[nl])
                Ttt = Kf * Ah
            d3 = diag.reshape(bs)
            d3[a] += Ttt
            d3[b] += Ttt
            # cavity walls
            w = ad["walls"]
            Tw = np.zeros(Ttt.shape)
            if w["fi"].size:
                tb = w["tb"]
                ew = pcs[w["m"]] / HAf[tb]
                Kh = self._khalf(K0f[tb], Mf_[tb], Kmf[tb], esf[tb], ew)
                hx = self.h[ax]
                Tv = np.where(Kh > 0, self.area[ax] / (hx / (2 * w["Kc"]) + hx / (2 * np.maximum(Kh, 1e-300))), 0.0)
                Tw.ravel()[w["fi"]] = Tv
                np.add.at(diag, tb, Tv)
                wall_rows.append(tb)
                wall_cols.append(w["m"])
                wall_vals.append(Tv)
            faces.append(dict(Ttt=Ttt, Tw=Tw, Tcc=ad["Tcc"]))
            offd.append(-Ttt.ravel())
        if wall_rows:
            np.add.at(Bc, (np.concatenate(wall_rows), np.concatenate(wall_cols)), np.concatenate(wall_vals))
        fixed = []
        bnd = {}
        for bd in geo["bnd"]:
            vox, Ll, pbnd = bd["vox"], bd["Ll"], bd["p"]
            Kh = self._khalf(K0f[vox], Mf_[vox], Kmf[vox], esf[vox], pbnd / HAf[vox])
            Tb = np.where(Ll == -1, bd["Ah2"] * Kh, 0.0)
            Tb = np.where(Ll >= 0, bd["Ah2"] * Kmf[vox], Tb)
            tis = Ll == -1
            diag[vox[tis]] += Tb[tis]
            rhs0[vox[tis]] += Tb[tis] * pbnd
            for mm in range(nN):
                gsum = float(Tb[Ll == mm].sum())
                if gsum > 0:
                    fixed.append((mm, gsum, pbnd, "boundary"))
            bnd[bd["side"]] = dict(Tb=Tb.reshape(L[bd["lay"]].shape), lay=bd["lay"], p=pbnd, ax=bd["ax"],
                                   at_lo=bd["at_lo"])
        # sub-voxel cavity in the tip voxel
        T_well = np.zeros(nN)
        tip_box = st["tip_box"]
        for m in range(nN):
            if st["well_on"][m]:
                tb = int(tip_box[m])
                if not act.flat[tb]:
                    continue
                rc = (3.0 * max(self.V_c[m], 1e-300) / (4.0 * math.pi)) ** (1.0 / 3.0)
                re = _R_EQ_7PT * float(np.cbrt(self.dV))
                Kh = float(self._khalf(K0f[tb], Mf_[tb], Kmf[tb], esf[tb], pcs[m] / HAf[tb]))
                T_well[m] = 4.0 * math.pi * Kh / max(1.0 / rc - 1.0 / re, 1.0 / re)
                diag[tb] += T_well[m]
                Bc[tb, m] += T_well[m]
        if not self.cavity_mode:
            for m in range(nN):
                rhs0[int(tip_box[m])] += st["q"][m]
        gs_val = st["gs_val"]
        for m in range(nN):
            g = float(gs_val[st["gs_cav"] == m].sum()) if gs_val.size else 0.0
            if g > 0:
                fixed.append((m, g, 0.0, "sinks"))
        # track leak into host voxels (track pressures lagged from the current iterate)
        gl = self._host_leak(st, e_s)
        if nT:
            hb = P["host_box"]
            np.add.at(diag, hb, gl)
            np.add.at(rhs0, hb, gl * ptr_star)
        inact = geo["inact"]
        dref = float(np.mean(diag[~inact])) if np.any(~inact) else 1.0
        diag = np.where(inact, dref, diag)
        B = np.zeros((nb, 1 + nN))
        B[:, 0] = np.where(inact, 0.0, rhs0)
        wall_idx = np.zeros(0, np.int64)
        if nN:
            B[:, 1:] = Bc
            B[inact, 1:] = 0.0
            rows = [np.concatenate(wall_rows)] if wall_rows else []
            rows += [tip_box[st["well_on"]]]
            wall_idx = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
        A = P["A"]
        A.data[P["pos_diag"]] = diag
        for ax in range(3):
            o = offd[ax]
            A.data[P["pos_lo"][ax]] = o
            A.data[P["pos_hi"][ax]] = o
        return dict(A=A, B=B, faces=faces, bnd=bnd, fixed=fixed, cc=geo["cc"], T_well=T_well, gl=gl, diag=diag,
                    e_s=e_s, wall_idx=wall_idx)

    # ------------------------------------------------------------------ cavities + tracks (Newton)
    def _segments(self, tr_active, host_L):
        """Track segments of this step: end types (0 cavity, 1 node, 2 exit), ids, attach voxels, coefficients."""
        ta, ia, tb, ib, att_a, att_b, coef, sig, need = [], [], [], [], [], [], [], [], []
        hb = self._pattern["host_box"] if self.nT else np.zeros(0, np.int64)
        tipb = self._to_box_index(self.tip_flat) if self.nN else np.zeros(0, np.int64)
        for m in range(self.nN):
            o0, o1 = self.tr_offsets[m], self.tr_offsets[m + 1]
            if o1 == o0:
                continue
            ends = [(0, m, int(tipb[m]))]
            for g in range(o0, o1):
                ends.append((1, g, -1) if tr_active[g] else (0, int(host_L[g]), int(hb[g])))
            ends.append((2, -1, -1))
            s0 = self.seg_offsets[m]
            for k in range(len(ends) - 1):
                (t1, i1, a1), (t2, i2, a2) = ends[k], ends[k + 1]
                if t1 == 0 and t2 == 0 and i1 == i2:
                    continue  # both ends in the same cavity
                ta.append(t1)
                ia.append(i1)
                att_a.append(a1)
                tb.append(t2)
                ib.append(i2)
                att_b.append(a2)
                coef.append(self.seg_coef[s0 + k])
                sig.append(self.tr_sigma[o0])
                need.append(m)
        f = lambda v, t: np.asarray(v, t)
        return dict(ta=f(ta, np.int64), ia=f(ia, np.int64), tb=f(tb, np.int64), ib=f(ib, np.int64),
                    att_a=f(att_a, np.int64), att_b=f(att_b, np.int64), coef=f(coef, float), sig=f(sig, float),
                    needle=f(need, np.int64))

    def _cavity_coeffs(self, C, X):
        """Cavity outflow to tissue, open sinks, domain faces and other cavities: a0 + A1 p_c."""
        nN = self.nN
        wi = C["wall_idx"]
        Bc = C["B"][wi, 1:]
        Xw = X[wi]
        G = Bc.sum(axis=0)
        a0 = -(Bc.T @ Xw[:, 0])
        A1 = -(Bc.T @ Xw[:, 1:])
        A1[np.diag_indices(nN)] += G
        for (m, g, pf, kind) in C["fixed"]:
            a0[m] -= g * pf
            A1[m, m] += g
        for (m, k, g) in C["cc"]:
            A1[m, m] += g
            A1[m, k] -= g
            A1[k, k] += g
            A1[k, m] -= g
        return a0, A1

    def _solve_nodes(self, st, C, X, V_init, ptr_init):
        """Cavity volumes and track pressures for the current tissue linearisation.

        Each cavity: ``R(V) = V - V^n - dt (Q - a0 - A1 P(V) - q_track(P(V))) = 0`` by brentq (nonlinear
        Gauss-Seidel over cavities), where q_track is the flow into the needle track(s) obtained by solving the
        1-D track chain for that cavity pressure with a banded Newton (Kirchhoff fluxes).
        """
        nN, nT = self.nN, self.nT
        if nN == 0:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        if not self.cavity_mode:
            return self.V_c.copy(), np.zeros(nN), np.zeros(nT)
        dt = st["dt"]
        qc = st["q_cav"]
        a0, A1 = self._cavity_coeffs(C, X)
        segs = st["segs"]
        tr_active = st["tr_active"]
        if segs["coef"].size == 0 or not np.any(tr_active):
            V, pc = self._solve_cavities_only(dt, qc, a0, A1)
            return V, pc, np.where(tr_active, ptr_init, 0.0) if nT else np.zeros(0)
        hb = self._pattern["host_box"]
        gl = C["gl"]
        ctx = dict(dt=dt, segs=segs, act=tr_active, gl=gl, h0=X[hb, 0], hX=X[hb, 1:],
                   w=np.where(gl > 0, gl / np.maximum(C["diag"][hb], 1e-300), 0.0), pstar=ptr_init.copy(),
                   p=np.where(tr_active, ptr_init, 0.0))
        # needles whose track touches each cavity
        touch = [set() for _ in range(nN)]
        for s_ in range(segs["coef"].size):
            for t_, i_ in ((segs["ta"][s_], segs["ia"][s_]), (segs["tb"][s_], segs["ib"][s_])):
                if t_ == 0:
                    touch[i_].add(int(segs["needle"][s_]))
        V = np.asarray(V_init, float).copy()
        pc = np.array([float(self.laws[m].pressure(V[m])) for m in range(nN)])
        for sweep in range(100):
            change = 0.0
            for m in range(nN):
                needles = sorted(touch[m])

                def track_out(pm):
                    pcs = pc.copy()
                    pcs[m] = pm
                    out = 0.0
                    for k in needles:
                        out += self._chain_solve(k, pcs, ctx)[m]
                    return out

                a0_eff = a0[m] + sum(A1[m, k] * pc[k] for k in range(nN) if k != m)
                Vm = self._cavity_root(m, dt, qc[m], a0_eff, max(A1[m, m], 0.0), track_out if needles else None,
                                       V_start=V[m])
                pm = float(self.laws[m].pressure(Vm))
                if needles:
                    track_out(pm)   # leave the chain at the root
                change = max(change, abs(pm - pc[m]))
                V[m], pc[m] = Vm, pm
            if nN == 1 or change <= 1e-12 * max(float(np.max(np.abs(pc))), 1e-300):
                break
        return V, pc, np.where(tr_active, ctx["p"], 0.0)

    def _cavity_root(self, m, dt, Q, a0, a1, track_out, V_start=None):
        """Root of g(V) = V - V^n - dt (Q - a0 - a1 P(V) - track_out(P(V))) for cavity m.

        In cavity mode g' >= 1, so [V_s, V_s + |g(V_s)|] (or [V_s - g(V_s), V_s]) brackets the root; brentq
        inside (each evaluation solves the track chain, warm-started)."""
        law = self.laws[m]
        Vn = self.V_c[m]
        if track_out is None:
            return solve_cavity_volume(law, Vn, dt, Q, a0, a1)

        def g(V):
            p = float(law.pressure(V))
            return V - Vn - dt * (Q - a0 - a1 * p - track_out(p))

        Vs = float(V_start) if V_start is not None and V_start > 0 else max(Vn, 1e-300)
        gs = g(Vs)
        gtol = 1e-14 * (abs(Vn) + dt * abs(Q) + abs(Vs))   # the track solve is exact only to ~this
        if abs(gs) <= gtol:
            return Vs
        step = abs(gs)
        if gs < 0:
            lo, glo = Vs, gs
            hi = Vs + step * (1.0 + 1e-12)
            ghi = g(hi)
            k = 0
            while ghi < 0 and k < 200:     # only in crack mode (g' may be < 1)
                lo, glo = hi, ghi
                step *= 2.0
                hi = hi + step
                ghi = g(hi)
                k += 1
        else:
            hi, ghi = Vs, gs
            lo = max(Vs - step * (1.0 + 1e-12), 0.5 * Vs)
            glo = g(lo)
            k = 0
            while glo > 0 and k < 2000:
                hi, ghi = lo, glo
                lo = 0.5 * lo if lo - step <= 0 else max(lo - step, 0.5 * lo)
                step *= 2.0
                glo = g(lo)
                k += 1
        if abs(glo) <= gtol:
            return lo
        if abs(ghi) <= gtol:
            return hi
        try:
            return brentq(g, lo, hi, xtol=1e-15 * hi, rtol=1e-15, maxiter=300)
        except ValueError:  # endpoint re-evaluation flipped sign within the track-solve tolerance
            return lo if abs(glo) < abs(ghi) else hi

    def _chain_solve(self, k, pcs, ctx):
        """Solve the track of needle k for given cavity pressures (banded Newton, line search).

        Returns the net flow out of each cavity into this track; stores node pressures in ctx["p"]."""
        nN = self.nN
        o0, o1 = self.tr_offsets[k], self.tr_offsets[k + 1]
        segs = ctx["segs"]
        sel = np.flatnonzero(segs["needle"] == k)
        out = np.zeros(nN)
        if sel.size == 0:
            return out
        act = ctx["act"][o0:o1]
        nodes = o0 + np.flatnonzero(act)
        na = nodes.size
        ta, ia, tb, ib = segs["ta"][sel], segs["ia"][sel], segs["tb"][sel], segs["ib"][sel]
        coef, sig = segs["coef"][sel], segs["sig"][sel]
        dt = ctx["dt"]

        def end_p(t, i, p):
            return np.where(t == 0, pcs[np.maximum(i, 0) % max(nN, 1)], np.where(t == 1, p[np.maximum(i, 0)], 0.0))

        if na == 0:
            q = coef * (np.maximum(end_p(ta, ia, ctx["p"]) - sig, 0) ** 4 - np.maximum(end_p(tb, ib, ctx["p"]) - sig, 0) ** 4) / 4
            np.add.at(out, ia[ta == 0], q[ta == 0])
            np.add.at(out, ib[tb == 0], -q[tb == 0])
            return out
        loc = np.full(self.nT, -1, np.int64)
        loc[nodes] = np.arange(na)
        la = np.where(ta == 1, loc[np.maximum(ia, 0)], -1)
        lb = np.where(tb == 1, loc[np.maximum(ib, 0)], -1)
        Sf, sg_n, Vn = self.tr_Sfull[nodes], self.tr_sigma[nodes], self.V_tr[nodes]
        g_, w_ = ctx["gl"][nodes], ctx["w"][nodes]
        ph0 = ctx["h0"][nodes] + ctx["hX"][nodes] @ pcs - w_ * ctx["pstar"][nodes]
        reg = 1e-12 * Sf + 1e-300

        def F(x):
            p = ctx["p"].copy()
            p[nodes] = x
            pa, pb = end_p(ta, ia, p), end_p(tb, ib, p)
            ua, ub = np.maximum(pa - sig, 0.0), np.maximum(pb - sig, 0.0)
            q = coef * (ua ** 4 - ub ** 4) / 4.0
            R = Sf * np.maximum(x - sg_n, 0.0) - Vn + dt * g_ * (x - ph0 - w_ * x)
            dA = dt * coef * ua ** 3
            dB = dt * coef * ub ** 3
            diag = np.where(x > sg_n, Sf, 0.0) + dt * g_ * (1.0 - w_) + reg
            up = np.zeros(na)   # J[i, i+1]
            lo = np.zeros(na)   # J[i+1, i]
            ma, mb = la >= 0, lb >= 0
            # each active node is the low end of at most one segment and the high end of at most one
            R[la[ma]] += dt * q[ma]
            R[lb[mb]] -= dt * q[mb]
            diag[la[ma]] += dA[ma]
            diag[lb[mb]] += dB[mb]
            both = ma & mb
            # segment between consecutive active nodes la -> lb (lb = la + 1)
            up[la[both]] += -dB[both]
            lo[la[both]] += -dA[both]
            return R, diag, up, lo, q, pa, pb

        def solve_tri(diag, up, lo, R):
            ab = np.zeros((3, na))
            ab[0, 1:] = up[:-1]
            ab[1] = diag
            ab[2, :-1] = lo[:-1]
            return solve_banded((1, 1), ab, -R)

        # residuals are volumes: stop when they are at round-off of the volumes and flows involved
        rtol_v = 1e-13 * (float(np.sum(np.abs(Vn))) + dt * float(np.sum(np.abs(coef))) *
                          max(float(np.max(np.abs(pcs))) if nN else 0.0, 1.0) ** 4 * 0 +
                          float(np.sum(Sf)) * max(float(np.max(np.abs(pcs))) if nN else 0.0, 1e-30))

        def newton(x, maxit):
            R, dg, up, lw, q, pa, pb = F(x)
            for _ in range(maxit):
                if float(np.max(np.abs(R))) <= rtol_v:
                    return True, x
                W = 1.0 / np.maximum(np.abs(dg), 1e-300)
                phi0 = float(np.sum((W * R) ** 2))
                if phi0 == 0.0:
                    return True, x
                d = solve_tri(dg, up, lw, R)
                if not np.all(np.isfinite(d)):
                    return False, x
                lam = 1.0
                acc = False
                for _ in range(25):
                    x1 = x + lam * d
                    R1, dg1, up1, lw1, q1, pa1, pb1 = F(x1)
                    phi1 = float(np.sum((W * R1) ** 2))
                    if phi1 <= (1.0 - 1e-4 * lam) * phi0:
                        acc = True
                        break
                    lam *= 0.5
                scale = max(float(np.max(np.abs(x1))), float(np.max(np.abs(pcs))) if nN else 0.0, 1e-300)
                small = float(np.max(np.abs(lam * d))) <= 1e-12 * scale
                if not acc:
                    return small, x
                x, R, dg, up, lw = x1, R1, dg1, up1, lw1
                if small:
                    return True, x
            return False, x

        ok, x = newton(ctx["p"][nodes].copy(), 30)
        if not ok:
            top = max(float(np.max(pcs)) if nN else 0.0, float(np.max(ph0 + w_ * ctx["pstar"][nodes])), 0.0)
            ok, x = newton(np.full(na, top), 300)
            if not ok:
                warnings.warn("needle-track Newton did not converge", RuntimeWarning)
        ctx["p"][nodes] = x
        R, dg, up, lw, q, pa, pb = F(x)
        np.add.at(out, ia[ta == 0], q[ta == 0])
        np.add.at(out, ib[tb == 0], -q[tb == 0])
        return out

    def _solve_cavities_only(self, dt, qc, a0, A1):
        nN = self.nN
        V = self.V_c.copy()
        pc = np.array([float(self.laws[m].pressure(V[m])) for m in range(nN)])
        for sweep in range(200):
            change = 0.0
            for m in range(nN):
                a0_eff = a0[m] + sum(A1[m, k] * pc[k] for k in range(nN) if k != m)
                Vm = solve_cavity_volume(self.laws[m], self.V_c[m], dt, qc[m], a0_eff, max(A1[m, m], 0.0))
                pm = float(self.laws[m].pressure(Vm))
                change = max(change, abs(pm - pc[m]))
                V[m], pc[m] = Vm, pm
            if nN == 1 or change <= 1e-13 * max(np.max(np.abs(pc)), 1e-300):
                break
        return V, pc

    # ------------------------------------------------------------------ fluxes and state update
    def _finish_step(self, st, C, p_sol, pc, ptr, picard_its):
        P = self._pattern
        nb, nT, nN = P["nb"], self.nT, self.nN
        dt, q, sl, bs, L, act = st["dt"], st["q"], st["sl"], st["bs"], st["L"], st["act"]
        e_n, tip_box = st["e_n"], st["tip_box"]
        tr_active, host_L = st["tr_active"], st["host_L"]
        dV = self.dV
        lo_box = self._box[0]
        pb = p_sol.reshape(bs)
        pnode = np.where(act, pb, 0.0)
        Lc = L >= 0
        if nN and Lc.any():
            pnode = np.where(Lc, pc[np.maximum(L, 0)], pnode)
        # ---- Darcy face fluxes (tissue, cavity wall, cavity-cavity) with the frozen transmissibilities
        nx, ny, nz = self.shape
        Ffull = (np.zeros((nx + 1, ny, nz)), np.zeros((nx, ny + 1, nz)), np.zeros((nx, ny, nz + 1)))
        divb = np.zeros(bs)
        for ax in range(3):
            a = [slice(None)] * 3
            b = [slice(None)] * 3
            a[ax] = slice(0, -1)
            b[ax] = slice(1, None)
            fc = C["faces"][ax]
            F = (fc["Ttt"] + fc["Tw"] + fc["Tcc"]) * (pnode[tuple(a)] - pnode[tuple(b)])
            divb[tuple(a)] += F
            divb[tuple(b)] -= F
            fs = [slice(int(lo_box[d]), int(lo_box[d] + bs[d])) for d in range(3)]
            fs[ax] = slice(int(lo_box[ax]) + 1, int(lo_box[ax] + bs[ax]))
            Ffull[ax][tuple(fs)] = F
        bnd_out = 0.0
        for s, bd in C["bnd"].items():
            ax, lay = bd["ax"], bd["lay"]
            out = bd["Tb"] * (pnode[lay] - bd["p"])  # outward
            divb[lay] += out
            bnd_out += float(out.sum())
            fs = [slice(int(lo_box[d]), int(lo_box[d] + bs[d])) for d in range(3)]
            fs[ax] = 0 if bd["at_lo"] else self.shape[ax]
            Ffull[ax][tuple(fs)] = -out if bd["at_lo"] else out
        # ---- point / intra-voxel exchanges (box arrays, flat views)
        vasc = np.where(act, self.tis.LpSV[sl] * dV * pb, 0.0)
        lymph = np.where(act, self.tis.lymph[sl] * dV * pb, 0.0)
        src = np.zeros(nb)
        snk = (vasc + lymph).ravel().copy()
        tissue_in = np.zeros(nb)   # into the tissue part (well, track leak, needle without cavity)
        cav_out = np.zeros(nb)     # out of the cavity part, other than faces (well, sinks, track)
        for m in range(nN):
            tb = int(tip_box[m])
            src[tb] += q[m]
            if not self.cavity_mode:
                tissue_in[tb] += q[m]
            if C["T_well"][m] > 0:
                qw = C["T_well"][m] * (pc[m] - pb.flat[tb])
                tissue_in[tb] += qw
                cav_out[tb] += qw
        sinks_flow = 0.0
        gs_vox = st["gs_vox"]
        if gs_vox.size:
            gb = self._to_box_index(gs_vox)
            qs = st["gs_val"] * pc[st["gs_cav"]]
            np.add.at(cav_out, gb, qs)
            np.add.at(snk, gb, qs)
            sinks_flow = float(qs.sum())
        # ---- tracks
        backflow = 0.0
        track_out = []
        V_tr_new = self.V_tr.copy()
        p_tr_new = self.p_tr.copy()
        if nT:
            hb = P["host_box"]
            segs = st["segs"]
            leak = C["gl"] * (ptr - pb.ravel()[hb])
            leak = np.where(tr_active & (host_L == -1), leak, 0.0)
            np.add.at(src, hb, leak)
            np.add.at(tissue_in, hb, leak)
            node_net = -leak
            ta, ia, tb_, ib = segs["ta"], segs["ia"], segs["tb"], segs["ib"]
            pc_safe = pc if nN else np.zeros(1)
            pa = np.where(ta == 0, pc_safe[np.maximum(ia, 0) % max(nN, 1)],
                          np.where(ta == 1, ptr[np.maximum(ia, 0)], 0.0))
            pz = np.where(tb_ == 0, pc_safe[np.maximum(ib, 0) % max(nN, 1)],
                          np.where(tb_ == 1, ptr[np.maximum(ib, 0)], 0.0))
            ua, ub = np.maximum(pa - segs["sig"], 0.0), np.maximum(pz - segs["sig"], 0.0)
            qseg = segs["coef"] * (ua ** 4 - ub ** 4) / 4.0
            for s_ in range(qseg.size):
                qq = qseg[s_]
                if ta[s_] == 1:
                    node_net[ia[s_]] -= qq
                elif ta[s_] == 0:
                    cav_out[segs["att_a"][s_]] += qq
                    snk[segs["att_a"][s_]] += qq
                if tb_[s_] == 1:
                    node_net[ib[s_]] += qq
                elif tb_[s_] == 0:
                    cav_out[segs["att_b"][s_]] -= qq
                    snk[segs["att_b"][s_]] -= qq
                else:
                    backflow += qq
            release = st["release"]
            rel = release != 0
            if rel.any():
                np.add.at(cav_out, hb[rel], -release[rel])
                np.add.at(src, hb[rel], release[rel])
            V_tr_new = self.V_tr + dt * (np.where(tr_active, node_net, 0.0) - release)
            p_tr_new = np.where(tr_active, ptr, pc_safe[np.maximum(host_L, 0) % max(nN, 1)])
            for m in range(nN):
                o0, o1 = self.tr_offsets[m], self.tr_offsets[m + 1]
                sel = segs["needle"] == m
                track_out.append(dict(host=self.tr_host[o0:o1].copy(), q=qseg[sel].copy(), leak=leak[o0:o1].copy(),
                                      volume=V_tr_new[o0:o1].copy(), p=p_tr_new[o0:o1].copy(), z=self.tr_z[m].copy(),
                                      h=np.maximum(V_tr_new[o0:o1], 0) /
                                      (2 * math.pi * self.tr_rn[o0:o1] * self.tr_ell[o0:o1])))
        # ---- tissue part: dilation from the fluxes
        divf = divb.ravel()
        net_t = -divf + tissue_in - vasc.ravel() - lymph.ravel()
        e_new = np.where(act.ravel(), e_n.ravel() + dt / dV * net_t, e_n.ravel()).reshape(bs)
        # ---- cavity part: volumes from the fluxes
        cav_vox_out = np.where(Lc.ravel(), divf, 0.0) + cav_out
        outflow = np.zeros(nN)
        if nN and self.cavity_mode:
            owner_box = self.owner[sl].ravel()
            nzm = cav_vox_out != 0
            if np.any(owner_box[nzm] < 0):
                raise RuntimeError("cavity outflow on a voxel without a cavity")
            np.add.at(outflow, owner_box[nzm], cav_vox_out[nzm])
        # ---- commit
        f_old = self.f.copy()
        self.e[sl] = e_new
        self.V_tr = V_tr_new
        self.p_tr = p_tr_new
        touched = [1] * nN
        if self.cavity_mode:
            self.V_c = self.V_c + dt * (q - outflow)
            touched = [self._set_cavity_volume(m) for m in range(nN)]
        source = np.zeros(self.shape)
        sink = np.zeros(self.shape)
        source[sl] = src.reshape(bs)
        sink[sl] = snk.reshape(bs)
        # ---- liquid carried inside each cavity from the tip to where it is stored or leaves (flood tree)
        if self.cavity_mode:
            cav_out_full = np.zeros(self.shape)
            cav_out_full[sl] = cav_vox_out.reshape(bs)
            for m in range(nN):
                nt = touched[m]
                idx = np.asarray(self.orders[m][:nt], np.int64)
                par = np.asarray(self.parents[m][:nt], np.int64)
                bvec = (self.f.flat[idx] - f_old.flat[idx]) * dV / dt + cav_out_full.flat[idx]
                bvec[0] -= q[m]
                acc = _tree_accumulate(bvec, par)
                if nt > 1:
                    self._add_tree_fluxes(Ffull, idx[par[1:]], idx[1:], acc[1:])
        # ---- theta change and ledger
        dtheta = self.f - f_old
        dtheta[sl] += e_new - e_n
        self.ledger["injected"] += float(q.sum()) * dt
        self.ledger["vascular"] += float(vasc.sum()) * dt
        self.ledger["lymph"] += float(lymph.sum()) * dt
        self.ledger["sinks"] += sinks_flow * dt
        self.ledger["boundary"] += bnd_out * dt
        self.ledger["backflow_out"] += backflow * dt
        self.time += dt
        # ---- pressure field: the solved pressure in the active box, p_c in full cavity voxels
        # (equal to H_A e to the solver tolerance; e is the volume state)
        pfull = np.zeros(self.shape)
        pfull[sl] = np.where(act, pb, 0.0)
        pcn = self.p_c
        if nN and self.cavity_mode:
            for m in range(nN):
                fidx = np.asarray(self.orders[m][: self.n_full[m]], np.int64)
                if fidx.size:
                    pfull.flat[fidx] = pcn[m]
        self.p = pfull
        if self.opt["active_box"]:
            pscale = max(float(np.max(np.abs(pb[act]))) if act.any() else 0.0,
                         float(np.max(np.abs(pc))) if nN else 0.0, 1e-300)
            self._last_box_rel = self._maybe_grow_box(np.where(act, pb, 0.0), pscale)
        return FlowStep(Fx=Ffull[0], Fy=Ffull[1], Fz=Ffull[2], source=source, sink=sink, backflow=backflow, dt=dt,
                        theta_change=dtheta, p_c=pcn if self.cavity_mode else np.zeros(nN), V_c=self.V_c.copy(),
                        q_in=q.copy(), track=track_out, picard_iterations=picard_its)

    def _add_tree_fluxes(self, Ffull, parent, child, flow):
        dif = child - parent
        for ax in range(3):
            s = int(self.strides[ax])
            for sgn in (1, -1):
                sel = dif == sgn * s
                if not sel.any():
                    continue
                # face between the two voxels: low face of the one with the larger index
                upper = np.where(sgn > 0, child[sel], parent[sel])
                ijk = np.array(np.unravel_index(upper, self.shape))
                F = Ffull[ax]
                # flow parent -> child is +ax when child is the upper voxel
                np.add.at(F, (ijk[0], ijk[1], ijk[2]), sgn * flow[sel])


# ============================================================================ baseline IFP
def baseline_ifp(grid, K, LpSV, p_e, tissue_mask=None, level_set=None, boundary: str = "sealed",
                 solver: SPDSolver | None = None) -> np.ndarray:
    """Steady interstitial fluid pressure with vascular exchange (Baxter & Jain 1989)::

        -div(K grad P) + LpSV (P - p_e) = 0   in tissue,   P = 0 on the tissue surface

    ``p_e`` = effective vascular pressure p_v - sigma (pi_v - pi_i) (array or scalar). The surface lies on
    faces between tissue and non-tissue voxels; with a signed-distance ``level_set`` (negative inside) it is
    placed at the interpolated zero crossing (symmetric ghost-fluid / Shortley-Weller flux ``K A P_i/(theta h)``,
    second order), otherwise at the face. Domain faces: "sealed" or "drained" (P = 0 at the face).
    Reads K, LpSV, p_e; returns P (0 outside tissue).
    """
    shape = tuple(grid.shape)
    h = np.asarray(grid.spacing, float)
    dV = float(np.prod(h))
    area = np.array([h[1] * h[2], h[0] * h[2], h[0] * h[1]])
    K = np.broadcast_to(np.asarray(K, float), shape)
    Lp = np.broadcast_to(np.asarray(LpSV, float), shape)
    pe = np.broadcast_to(np.asarray(p_e, float), shape)
    tm = np.ones(shape, bool) if tissue_mask is None else np.asarray(tissue_mask, bool)
    phi = None if level_set is None else np.asarray(level_set, float)
    n = int(np.prod(shape))
    idx = np.arange(n).reshape(shape)
    diag = np.where(tm, Lp * dV, 1.0)
    rhs = np.where(tm, Lp * pe * dV, 0.0)
    rows, cols, vals = [], [], []
    for ax in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax] = slice(0, -1)
        b[ax] = slice(1, None)
        a, b = tuple(a), tuple(b)
        ta, tb = tm[a], tm[b]
        Ka, Kb = K[a], K[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            Kh = np.where(Ka + Kb > 0, 2 * Ka * Kb / np.where(Ka + Kb > 0, Ka + Kb, 1), 0.0)
        T = np.where(ta & tb, Kh * area[ax] / h[ax], 0.0)
        dd = np.zeros(shape)
        dd[a] += T
        dd[b] += T
        # surface faces
        for msk, sa, sb in ((ta & ~tb, a, b), (~ta & tb, b, a)):
            if not msk.any():
                continue
            if phi is None:
                theta = np.full(msk.shape, 0.5)
            else:
                pi_, po_ = phi[sa], phi[sb]
                with np.errstate(divide="ignore", invalid="ignore"):
                    theta = np.where(po_ - pi_ != 0, -pi_ / (po_ - pi_), 0.5)
                theta = np.clip(theta, 1e-3, 1.0)
            Ts = np.where(msk, K[sa] * area[ax] / (theta * h[ax]), 0.0)
            dd[sa] += Ts
        diag = diag + np.where(tm, dd, 0.0)
        sel = (T != 0).ravel()
        ia, ib = idx[a].ravel()[sel], idx[b].ravel()[sel]
        rows += [ia, ib]
        cols += [ib, ia]
        vals += [-T.ravel()[sel], -T.ravel()[sel]]
        if boundary == "drained":
            for lay in (0, shape[ax] - 1):
                s = [slice(None)] * 3
                s[ax] = lay
                s = tuple(s)
                add = np.zeros(shape)
                add[s] = np.where(tm[s], K[s] * area[ax] / (0.5 * h[ax]), 0.0)
                diag = diag + add
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag.ravel())
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    solver = solver or SPDSolver()
    P = solver.solve(A, rhs.ravel())
    return np.where(tm, P.reshape(shape), 0.0)
