r"""Tissue water after the kill: release from dead cells, drainage, inflammatory edema, vapour loss.

Per voxel, volumes per unit volume of *undeformed* tissue (reference configuration):

* ``cell_water``  w_c: water inside cells, initially ``cw (1 - phi0 - m)`` (``cw`` cell water fraction, ``m`` matrix solids);
* ``excess``      e: interstitial liquid above the baseline ``phi0`` (released water, edema; negative = drier);
* solids (cell solids, matrix) are conserved and never move.

So the local volume ratio is ``J = 1 + (w_c - w_c0) + e + e_inj`` (``e_inj`` the injection's own dilation, owned by
the injection mechanics until its session ends, then handed over to ``e``), and ``J - 1`` is the volumetric
eigenstrain the mechanics sees.

Equations (per voxel; ``p = H_A e`` the excess interstitial pressure, ``H_A`` the drained aggregate modulus)::

    dw_c/dt = -(w_c - w_c^target) / tau_mode            for t > t_death (membrane failure releases cell water)
    w_c^target = w_c0 (1 - f_mode)                       (coagulated: f_coag (1 - exp(-Omega_shrink)))
    de/dt  = -dw_c/dt + div(K grad p) - (LpSV v + L_l l 1[p > 0]) p + a_e I v

``K`` Darcy conductivity (x ``necrotic_conductivity_factor`` in dead voxels), ``LpSV v`` microvascular exchange with
the surviving microvessel fraction ``v`` (negative ``p`` filters plasma in), ``L_l l`` lymph drainage (``l`` = 1 in
living tissue, ``lymph_function_dead`` in dead tissue; lymph only drains), ``a_e I v`` inflammatory edema filtered
from the blood where inflammatory cells ``I`` (see :mod:`.inflammation`) and perfusion are.
Vaporised water (thermal sessions) leaves the tissue at once when the session ends.

Numerics: release is exact per step (exponential relaxation); transport is one LOD step of
``d(c p)/dt = div(K grad p)`` (``c = 1/H_A``, :func:`tissuefate.numerics.lod.lod_diffuse`, conservative to
round-off) followed by the exact per-voxel exchange ``p <- p exp(-lambda dt)``, lambda = S H_A. The stored excess is
updated from what moved, so the ledger ``initial + injected + filtered = final + drained + leaked`` closes to
round-off whatever the linear-solve tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..numerics.lod import lod_diffuse


def shrinkage_rate(T_kelvin, A: float, Ea: float) -> np.ndarray:
    """Arrhenius rate of thermal shrinkage (Farina 2016 kinetics): dOmega_s/dt = A exp(-Ea / (R T)), 1/s."""
    return A * np.exp(-Ea / (8.314 * np.asarray(T_kelvin, dtype=float)))


@dataclass
class WaterModel:
    """Water of every tissue voxel after the kill (see module docstring). Arrays have the grid shape."""
    spacing: tuple
    tissue: np.ndarray            # bool
    phi0: np.ndarray              # baseline interstitial fraction
    cell_water0: np.ndarray       # w_c0
    K: np.ndarray                 # Darcy conductivity of living tissue, m^2/(Pa s)
    H_A: np.ndarray               # aggregate modulus, Pa
    LpSV: np.ndarray              # microvascular conductance per volume, 1/(Pa s)
    lymph: np.ndarray             # lymphatic conductance per volume, 1/(Pa s)
    cell_water: np.ndarray = field(init=False)
    excess: np.ndarray = field(init=False)
    ledger: dict = field(init=False)

    def __post_init__(self):
        self.cell_water = np.where(self.tissue, self.cell_water0, 0.0).astype(float)
        self.excess = np.zeros(self.tissue.shape)
        self.dV = float(np.prod(self.spacing))
        self.ledger = {"initial": self.total_water(), "injected": 0.0, "filtered": 0.0, "drained_vascular": 0.0,
                       "drained_lymph": 0.0, "vapour": 0.0, "detached": 0.0, "handed_over": 0.0}

    # ------------------------------------------------------------------ stocks
    def total_water(self) -> float:
        """Water held by the tissue (cells + interstitium incl. excess), m^3 (without the injection's own dilation)."""
        t = self.tissue
        return float(np.sum(self.cell_water[t] + self.phi0[t] + self.excess[t])) * self.dV

    def volume_change(self) -> np.ndarray:
        """J - 1 from water (per undeformed volume); the injection dilation is added by the caller."""
        return np.where(self.tissue, (self.cell_water - self.cell_water0) + self.excess, 0.0)

    def pressure(self) -> np.ndarray:
        return self.H_A * self.excess

    # ------------------------------------------------------------------ processes
    def release(self, dt: float, target: np.ndarray, tau: np.ndarray, active: np.ndarray) -> float:
        """Cell water of ``active`` voxels relaxes to ``target`` with time constant ``tau`` (exact); the water goes
        to the interstitial excess. Returns the volume moved, m^3."""
        a = active & self.tissue & (self.cell_water > target)
        if not a.any():
            return 0.0
        moved = (self.cell_water[a] - target[a]) * (-np.expm1(-dt / tau[a]))
        self.cell_water[a] -= moved
        self.excess[a] += moved
        return float(moved.sum()) * self.dV

    def remove_vapour(self, vapour_fraction: np.ndarray) -> float:
        """Water vaporised during heating leaves the tissue: that fraction of the voxel's water (cells and
        interstitium alike) is lost. Returns the volume, m^3."""
        f = np.clip(np.where(self.tissue, vapour_fraction, 0.0), 0.0, 1.0)
        lost_c = f * self.cell_water
        lost_i = f * (self.phi0 + np.maximum(self.excess, 0.0))
        self.cell_water -= lost_c
        self.excess -= lost_i
        v = float(np.sum(lost_c + lost_i)) * self.dV
        self.ledger["vapour"] += v
        return v

    def hand_over(self, e_injection: np.ndarray) -> float:
        """Take over the injection's remaining dilation (its session has ended)."""
        add = np.where(self.tissue, e_injection, 0.0)
        self.excess += add
        v = float(add.sum()) * self.dV
        self.ledger["handed_over"] += v
        return v

    def transport(self, dt: float, K_eff: np.ndarray, H_A: np.ndarray, vascular: np.ndarray, lymph: np.ndarray,
                  source: np.ndarray) -> None:
        """One step of Darcy flow, microvascular/lymph exchange and edema filtration.

        K_eff: conductivity, H_A: aggregate modulus (current state), vascular / lymph: conductance per volume,
        1/(Pa s) (lymph used only where p > 0), source: filtration into the interstitium, 1/s (>= 0)."""
        t = self.tissue
        src = np.where(t, source, 0.0) * dt
        self.excess += src
        self.ledger["filtered"] += float(src.sum()) * self.dV
        cap = np.where(t, 1.0 / H_A, 0.0)
        p = np.ascontiguousarray(np.where(t, H_A * self.excess, 0.0))
        before = cap * p
        lod_diffuse(p, cap, np.where(t, K_eff, 0.0), dt, self.spacing)
        e_mid = cap * p
        # the LOD step only moves water between voxels: take its exact transfer, not c*p rounding
        self.excess += np.where(t, e_mid - before, 0.0)
        p = np.where(t, H_A * self.excess, 0.0)
        lam_v = np.where(t, vascular * H_A, 0.0)
        lam_l = np.where(t & (p > 0), lymph * H_A, 0.0)
        lam = lam_v + lam_l
        out = self.excess * (-np.expm1(-lam * dt))          # exact linear exchange, positive = leaves
        share_v = np.divide(lam_v, lam, out=np.ones_like(lam), where=lam > 0)
        self.excess -= out
        self.ledger["drained_vascular"] += float(np.sum(out * share_v)) * self.dV
        self.ledger["drained_lymph"] += float(np.sum(out * (1.0 - share_v))) * self.dV

    def detach(self, mask: np.ndarray) -> float:
        """Voxels leave the body with their water."""
        m = mask & self.tissue
        v = float(np.sum(self.cell_water[m] + self.phi0[m] + self.excess[m])) * self.dV
        self.cell_water[m] = 0.0
        self.excess[m] = 0.0
        self.phi0 = np.where(m, 0.0, self.phi0)
        self.tissue = self.tissue & ~m
        self.ledger["detached"] += v
        return v

    def balance(self) -> dict:
        """``initial + injected(handed over) + filtered = final + drained + leaked`` (m^3) and its relative error."""
        L = self.ledger
        final = self.total_water()
        drained = L["drained_vascular"] + L["drained_lymph"]
        leaked = L["vapour"] + L["detached"]
        lhs = L["initial"] + L["handed_over"] + L["filtered"]
        res = lhs - final - drained - leaked
        scale = max(L["handed_over"] + L["filtered"] + abs(drained) + leaked + self.moved_scale(), 1e-30)
        return {"initial": L["initial"], "handed_over": L["handed_over"], "filtered": L["filtered"], "final": final,
                "drained": drained, "leaked": leaked, "residual": res, "rel_error": abs(res) / scale}

    def moved_scale(self) -> float:
        return float(np.sum(np.abs(self.cell_water - np.where(self.tissue, self.cell_water0, 0.0))
                            + np.abs(self.excess))) * self.dV
