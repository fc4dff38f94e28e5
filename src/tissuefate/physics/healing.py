r"""Healing between and after sessions: debris clearance, inflammation, granulation, scar, regeneration, regrowth.

State per tissue voxel (per undeformed volume). Volume fractions, summing to one:

    u  viable tumour          h  viable host (normal) tissue
    d_m necrotic debris by death mode m in {oxidative, chemical, coagulated, frozen, ischemic}
    w  cleared space (fluid and fibrin)   g  granulation tissue   c  scar (collagen)

and densities: M phagocytes (neutrophils + macrophages, relative to a saturated infiltrate, 0..1), F fibroblasts
(0..1), v relative microvascular density (1 = the intact tissue's), epsilon_c scar contraction (volume lost per
volume). Equations (time in s; every rate is a row of :mod:`.healing_parameters`)::

    injury   I = sum_m a_m d_m  (own voxel + mean of the face neighbours; a_m = inflammatory potency)
    dM/dt = div(D_M grad M) + k_M I (u + h + g) min(v, 1) (1 - M) - mu_M M
    dF/dt = k_F M (1 - F) - mu_F F
    dd_m/dt = -(k_clr delta_m M + k_org (1 - delta_m) F) d_m           delta_m = digestibility of mode m
                 cleared -> w,  organised (the seed's fibrosis of trapped debris; k_org = 0 switches it off) -> c
    dv/dt = div(D_v grad v) + r_v v (1 - v / v*)     v* = u + h + v_g (g + w) + v_c c   (0 in debris)
    w -> g at k_g v;   g -> c at k_col F;   g -> h at r_h (h + <h>_nb) / 2   (r_h: the host tissue's regeneration)
    du/dt = div(D_u grad u) + rho f(v) u (1 - u / A),   A = 1 - sum_m d_m - c,   f(v) = v'(1 + K)/(v' + K), v' = min(v, 1)
            (the tumour fills cleared space first, then displaces host, then granulation; where diffusion brings
             more than A the excess is crowded out and booked)
    d epsilon_c/dt = k_mat (kappa c - epsilon_c)

Numerics (one step dt, implicit or exact, stable at steps of a day): diffusion by the LOD sweeps of
:mod:`..numerics.lod` (backward Euler per axis, zero flux at tissue boundaries, conservative); the per-voxel
reactions are solved exactly for frozen coefficients (exponential decay, logistic solution) or by backward Euler
for the saturating recruitment (stays in [0, 1]). The tumour step is Strang-split (half logistic, forward and
reverse LOD half steps, half logistic), second order in time. Every transfer moves volume between components,
so the fractions keep summing to one; :meth:`HealingModel.check` asserts it (tests call it at every step).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..numerics.lod import LODWorkspace, lod_diffuse
from .fate_parameters import DEATH_MODES

COMPONENTS = ("tumor", "host", *(f"debris_{m}" for m in DEATH_MODES), "fluid", "granulation", "scar")
IDX = {name: i for i, name in enumerate(COMPONENTS)}
DEBRIS = slice(IDX[f"debris_{DEATH_MODES[0]}"], IDX[f"debris_{DEATH_MODES[-1]}"] + 1)
LIVING = (IDX["tumor"], IDX["host"], IDX["granulation"])


@dataclass
class HealingState:
    """Per-voxel healing state; ``frac[k]`` is the volume fraction of ``COMPONENTS[k]``."""
    frac: np.ndarray                 # (n_components, nx, ny, nz)
    phagocytes: np.ndarray
    fibroblasts: np.ndarray
    vascular: np.ndarray
    contraction: np.ndarray
    crowded_out: float = 0.0         # tumour volume (m^3) pushed into fully occupied voxels and lost there
    t: float = 0.0                   # s, course clock

    @classmethod
    def from_labels(cls, tumor: np.ndarray, tissue: np.ndarray) -> "HealingState":
        """Untreated tissue: tumour voxels are viable tumour, other tissue voxels viable host, v = 1."""
        frac = np.zeros((len(COMPONENTS), *tumor.shape))
        frac[IDX["tumor"]] = tumor & tissue
        frac[IDX["host"]] = tissue & ~tumor
        z = np.zeros(tumor.shape)
        return cls(frac, z.copy(), z.copy(), np.where(tissue, 1.0, 0.0), z.copy())

    def __getitem__(self, name: str) -> np.ndarray:
        return self.frac[IDX[name]]

    @property
    def debris(self) -> np.ndarray:
        return self.frac[DEBRIS].sum(axis=0)

    @property
    def living(self) -> np.ndarray:
        return self.frac[list(LIVING)].sum(axis=0)

    def kill(self, where: np.ndarray, mode: str) -> float:
        """A session killed the living cells of ``where`` by ``mode``: tumour, host and granulation become debris.
        Returns the host fraction killed, summed over voxels (times dV is the normal tissue destroyed)."""
        k = IDX[f"debris_{mode}"]
        host_killed = float(self.frac[IDX["host"]][where].sum())
        for i in LIVING:
            self.frac[k][where] += self.frac[i][where]
            self.frac[i][where] = 0.0
        return host_killed


# ----------------------------------------------------------------------------------------- pure kernels

def neighbour_mean(a: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Mean of ``a`` over the face neighbours that are tissue (zero-flux boundary); 0 where none is."""
    s = np.zeros_like(a)
    n = np.zeros_like(a)
    at = np.where(tissue, a, 0.0)
    tf = tissue.astype(a.dtype)
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        s[lo] += at[hi]
        n[lo] += tf[hi]
        s[hi] += at[lo]
        n[hi] += tf[lo]
    return np.divide(s, n, out=np.zeros_like(a), where=n > 0)


def logistic_exact(x: np.ndarray, rate: np.ndarray | float, capacity: np.ndarray, dt: float) -> np.ndarray:
    """Exact solution after ``dt`` of x' = rate x (1 - x / K) with frozen rate and K (K <= 0: pure decay)."""
    e = np.exp(np.asarray(rate) * dt)
    K = np.asarray(capacity)
    pos = K > 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        grown = K * x * e / (K + x * (e - 1.0))
    return np.where(pos, np.where(x > 0, grown, 0.0), x / e)


def split_decay(d: np.ndarray, rate_a: np.ndarray, rate_b: np.ndarray, dt: float):
    """Exact first-order loss of ``d`` at rate a + b over ``dt``, split between the two routes.
    Returns (d_new, lost_to_a, lost_to_b)."""
    total = rate_a + rate_b
    lost = d * -np.expm1(-total * dt)
    share_a = np.divide(rate_a, total, out=np.zeros_like(d), where=total > 0)
    return d - lost, lost * share_a, lost * (1.0 - share_a)


def saturating_recruitment(x: np.ndarray, source: np.ndarray, removal: float, dt: float) -> np.ndarray:
    """Backward Euler of x' = s (1 - x) - mu x: stays in [0, 1] at any dt."""
    return (x + dt * source) / (1.0 + dt * (source + removal))


def take_space(need: np.ndarray, pools: list[np.ndarray]) -> None:
    """Remove ``need`` (>= 0) from the pools in order, in place; the caller guarantees sum(pools) >= need."""
    rest = need.copy()
    for p in pools:
        t = np.minimum(p, rest)
        p -= t
        rest -= t


# ----------------------------------------------------------------------------------------- the model

class HealingModel:
    """Advances a :class:`HealingState` on one grid (see the module docstring for the equations).

    params:        :func:`.healing_parameters.healing_parameters` values (SI)
    digestibility: ``{mode: delta_m}`` (shared with the post-kill model)
    tissue:        bool mask of tissue voxels (elsewhere nothing changes and no flux crosses)
    regeneration:  per-voxel regeneration rate of the host tissue there, 1/s
    spacing:       voxel edges, m
    check:         assert fractions sum to one and stay non-negative after every step
    """

    def __init__(self, params: dict, digestibility: dict, tissue: np.ndarray, regeneration: np.ndarray,
                 spacing, check: bool = False):
        self.p = dict(params)
        self.delta = np.array([digestibility[m] for m in DEATH_MODES])
        self.potency = np.array([params[f"inflammatory_potency_{m}"] for m in DEATH_MODES])
        self.tissue = tissue
        self.theta = tissue.astype(np.float64)
        self.regeneration = np.where(tissue, regeneration, 0.0)
        self.spacing = tuple(float(h) for h in spacing)
        self.check_each_step = check
        self.work = LODWorkspace(tissue.shape)
        self.max_sum_error = 0.0
        self.min_fraction = 0.0

    # ------------------------------------------------------------------ one step
    def step(self, s: HealingState, dt: float) -> None:
        p, f = self.p, s.frac
        self._phagocytes_and_fibroblasts(s, dt)
        self._clearance(s, dt)
        self._vessels(s, dt)
        self._repair(s, dt)
        self._tumor(s, dt)
        eps_target = p["scar_contraction"] * f[IDX["scar"]]
        s.contraction[:] = eps_target + (s.contraction - eps_target) * np.exp(-p["scar_maturation_rate"] * dt)
        s.t += dt
        self._tidy(s)
        if self.check_each_step:
            self.check(s)

    def _diffuse(self, c: np.ndarray, D: float, dt: float, reverse: bool = False) -> None:
        if D > 0:
            lod_diffuse(c, self.theta, self.theta * D, dt, self.spacing, work=self.work, reverse=reverse)

    def _phagocytes_and_fibroblasts(self, s: HealingState, dt: float) -> None:
        p, f = self.p, s.frac
        injury_own = np.tensordot(self.potency, f[DEBRIS], axes=1)
        injury = injury_own + neighbour_mean(injury_own, self.tissue)
        source = p["phagocyte_recruitment_rate"] * injury * s.living * np.minimum(s.vascular, 1.0)
        self._diffuse(s.phagocytes, p["phagocyte_diffusivity"], dt)
        s.phagocytes[:] = np.where(self.tissue, saturating_recruitment(
            s.phagocytes, source, p["phagocyte_removal_rate"], dt), 0.0)
        s.fibroblasts[:] = np.where(self.tissue, saturating_recruitment(
            s.fibroblasts, p["fibroblast_recruitment_rate"] * s.phagocytes, p["fibroblast_apoptosis_rate"], dt), 0.0)

    def _clearance(self, s: HealingState, dt: float) -> None:
        p, f = self.p, s.frac
        for j, _ in enumerate(DEATH_MODES):
            k = DEBRIS.start + j
            clear = p["clearance_rate"] * self.delta[j] * s.phagocytes
            organise = p["organisation_rate"] * (1.0 - self.delta[j]) * s.fibroblasts
            f[k], to_fluid, to_scar = split_decay(f[k], clear, organise, dt)
            f[IDX["fluid"]] += to_fluid
            f[IDX["scar"]] += to_scar

    def _vessels(self, s: HealingState, dt: float) -> None:
        p, f = self.p, s.frac
        target = (f[IDX["tumor"]] + f[IDX["host"]] + p["vascular_density_granulation"] * (f[IDX["granulation"]]
                  + f[IDX["fluid"]]) + p["vascular_density_scar"] * f[IDX["scar"]])
        self._diffuse(s.vascular, p["angiogenesis_diffusivity"], dt)
        s.vascular[:] = np.where(self.tissue, logistic_exact(s.vascular, p["angiogenesis_rate"], target, dt), 0.0)

    def _repair(self, s: HealingState, dt: float) -> None:
        p, f = self.p, s.frac
        w, g, h = f[IDX["fluid"]], f[IDX["granulation"]], f[IDX["host"]]
        new_g = w * -np.expm1(-p["granulation_rate"] * s.vascular * dt)
        w -= new_g
        g += new_g
        host_near = 0.5 * (h + neighbour_mean(h, self.tissue))
        g[:], to_scar, to_host = split_decay(g, p["collagen_rate"] * s.fibroblasts, self.regeneration * host_near, dt)
        f[IDX["scar"]] += to_scar
        h += to_host

    def _tumor(self, s: HealingState, dt: float) -> None:
        p, f = self.p, s.frac
        u = f[IDX["tumor"]]
        u_old = u.copy()
        capacity = np.where(self.tissue, 1.0 - f[DEBRIS].sum(axis=0) - f[IDX["scar"]], 0.0)
        K = p["tumor_perfusion_half"]
        vv = np.minimum(s.vascular, 1.0)
        rate = p["tumor_proliferation_rate"] * vv * (1.0 + K) / (vv + K)
        u[:] = logistic_exact(u, rate, capacity, 0.5 * dt)
        self._diffuse(u, p["tumor_diffusivity"], 0.5 * dt)
        self._diffuse(u, p["tumor_diffusivity"], 0.5 * dt, reverse=True)
        over = np.maximum(u - capacity, 0.0)
        s.crowded_out += float(over.sum()) * float(np.prod(self.spacing))
        u -= over
        u[:] = logistic_exact(u, rate, capacity, 0.5 * dt)
        change = u - u_old
        take_space(np.maximum(change, 0.0), [f[IDX["fluid"]], f[IDX["host"]], f[IDX["granulation"]]])
        f[IDX["fluid"]] += np.maximum(-change, 0.0)

    # ------------------------------------------------------------------ checks
    def _tidy(self, s: HealingState) -> None:
        """Round-off: clip negatives of order 1e-15 and record the worst sum error."""
        f = s.frac
        self.min_fraction = min(self.min_fraction, float(f.min()))
        np.maximum(f, 0.0, out=f)
        err = np.abs(f.sum(axis=0) - self.theta)
        self.max_sum_error = max(self.max_sum_error, float(err.max()))

    def check(self, s: HealingState, tol: float = 1e-9) -> None:
        """Assert that the fractions of every tissue voxel sum to one and none is negative beyond round-off."""
        f = s.frac
        total = f.sum(axis=0)
        bad_sum = float(np.abs(total - self.theta).max())
        if bad_sum > tol:
            raise AssertionError(f"healing fractions do not sum to one: max error {bad_sum:.3e}")
        if self.min_fraction < -tol:
            raise AssertionError(f"a healing fraction went negative: {self.min_fraction:.3e}")
        for name, a in (("phagocytes", s.phagocytes), ("fibroblasts", s.fibroblasts), ("vascular", s.vascular)):
            if float(a.min()) < -tol:
                raise AssertionError(f"{name} went negative: {float(a.min()):.3e}")

    # ------------------------------------------------------------------ driver
    def advance(self, s: HealingState, t_end: float, dt_max: float, on_step=None) -> int:
        """Step from ``s.t`` to ``t_end`` with steps <= dt_max, landing on t_end. Returns the number of steps."""
        n = 0
        while s.t < t_end - 1e-6:
            dt = min(dt_max, t_end - s.t)
            self.step(s, dt)
            n += 1
            if on_step is not None:
                on_step(s)
        return n
