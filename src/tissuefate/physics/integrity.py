r"""Matrix integrity of dead tissue and the separation planes at the necrotic-living interface.

Integrity ``s`` (0..1, 1 = intact, living tissue stays at 1). At death a voxel's integrity drops to
``s_mode``: oxidative necrosis ``1 - a_ox x`` with ``x`` the oxidised fraction of the slow reductive pool
(proteins, membranes; the seed's debridement claim as the hypothesis ``oxidative_matrix_attack``), the other
modes the ``integrity_after_death_<mode>`` row (heat-fixed proteins keep the mass cohesive). Afterwards proteases
carried by the inflammatory cells ``I`` (:mod:`.inflammation`) digest it, slower where proteins were fixed::

    ds/dt = -k_p d_mode I s            (dead voxels; exact exponential per step)

The interface itself (each face between a dead and a living voxel) has its own integrity ``s_f``: it starts at
the dead voxel's integrity after death and is digested by the inflammatory cells of the *living* side, where the
demarcation line forms (fate.md §3: the connections are "softened and eaten through" along it)::

    ds_f/dt = -k_p d_mode I_living s_f

so the time to separation does not depend on how far the cells have diffused into a voxel of the dead side
(grid independent). The interface has the strength ``sigma_int s_f``. It separates, irreversibly, when it is
digested through (``s_f < s_sep``) or when the tensile normal stress across it (mean of the two voxels'
normal stress, tension positive) exceeds its strength. The mechanics is not re-solved with the opened faces
(no contact/gap model): a documented simplification.
"""
from __future__ import annotations

import numpy as np

from .fate_parameters import DEATH_MODES


def _pairs(ax: int):
    lo = [slice(None)] * 3
    hi = [slice(None)] * 3
    lo[ax], hi[ax] = slice(0, -1), slice(1, None)
    return tuple(lo), tuple(hi)


class MatrixIntegrity:
    def __init__(self, shape, params: dict):
        self.p = params
        self.s = np.ones(shape)
        self.initialised = np.zeros(shape, dtype=bool)
        # separated interface faces, one bool array per axis: face between voxel i and i+1 along the axis
        self.separated = [np.zeros(tuple(n - (d == ax) for d, n in enumerate(shape)), dtype=bool) for ax in range(3)]
        self.face = [np.ones(tuple(n - (d == ax) for d, n in enumerate(shape))) for ax in range(3)]

    def on_death(self, newly_dead: np.ndarray, mode: np.ndarray, slow_oxidised: np.ndarray) -> None:
        """Set the integrity of voxels that just died (``mode``: index into DEATH_MODES per voxel)."""
        p = self.p
        for k, name in enumerate(DEATH_MODES):
            m = newly_dead & (mode == k)
            if not m.any():
                continue
            if name == "oxidative":
                self.s[m] = np.clip(1.0 - p["oxidative_matrix_attack"] * np.clip(slow_oxidised[m], 0.0, 1.0), 0.0, 1.0)
            else:
                self.s[m] = p[f"integrity_after_death_{name}"]
        self.initialised |= newly_dead
        for ax in range(3):
            lo, hi = _pairs(ax)
            f = self.face[ax]
            np.minimum(f, np.where(newly_dead[lo], self.s[lo], 1.0), out=f)
            np.minimum(f, np.where(newly_dead[hi], self.s[hi], 1.0), out=f)

    def digest(self, dt: float, dead: np.ndarray, mode: np.ndarray, inflammatory: np.ndarray) -> None:
        dig = np.zeros(self.s.shape)
        for k, name in enumerate(DEATH_MODES):
            dig[mode == k] = self.p[f"digestibility_{name}"]
        rate = self.p["protease_rate"] * dig * inflammatory
        m = dead & (rate > 0)
        self.s[m] *= np.exp(-rate[m] * dt)
        living = ~dead
        for ax in range(3):
            lo, hi = _pairs(ax)
            k = self.p["protease_rate"] * (np.where(dead[lo] & living[hi], dig[lo] * inflammatory[hi], 0.0)
                                           + np.where(living[lo] & dead[hi], dig[hi] * inflammatory[lo], 0.0))
            self.face[ax] *= np.exp(-k * dt)

    def interfaces(self, dead: np.ndarray, living: np.ndarray):
        """Per axis, bool arrays of faces between a dead and a living voxel, and the interface integrity there."""
        out = []
        for ax in range(3):
            lo, hi = _pairs(ax)
            iface = (dead[lo] & living[hi]) | (living[lo] & dead[hi])
            out.append((iface, self.face[ax]))
        return out

    def update_separation(self, dead: np.ndarray, living: np.ndarray, normal_stress=None) -> None:
        """Open interfaces digested through or, with ``normal_stress`` (list of 3 voxel arrays sigma_xx, sigma_yy,
        sigma_zz, Pa), pulled apart."""
        s_sep, strength = self.p["separation_integrity"], self.p["interface_strength"]
        for ax, (iface, s_dead) in enumerate(self.interfaces(dead, living)):
            opened = iface & (s_dead < s_sep)
            if normal_stress is not None:
                lo, hi = _pairs(ax)
                sn = 0.5 * (normal_stress[ax][lo] + normal_stress[ax][hi])
                opened |= iface & (sn > strength * s_dead)
            self.separated[ax] |= opened

    def separated_fraction(self, dead: np.ndarray, living: np.ndarray, spacing) -> float:
        """Separated share (by area) of the interface between dead and living tissue (0 without one)."""
        tot = sep = 0.0
        for ax, (iface, _) in enumerate(self.interfaces(dead, living)):
            a = float(np.prod([h for d, h in enumerate(spacing) if d != ax]))
            tot += np.count_nonzero(iface) * a
            sep += np.count_nonzero(iface & self.separated[ax]) * a
        return sep / tot if tot > 0 else 0.0
