r"""Movement and detachment of a separated necrotic mass (Phase III).

A connected dead mass (6-connectivity) whose boundary is separated (or free, facing air) over at least
``detach_separated_fraction`` of its faces is a free body. It translates rigidly toward the nearest free surface
(the skin-air boundary) along the line from its closest voxel to the closest air voxel, driven by the
granulation/contracture of the tissue behind it and resisted by the tissue in front (resistance law)::

    v = v0 G (1 - h_front / h_max)_+          h_front = h_0 - x      (distance of living tissue still in front)

``G`` the mean granulation maturity (:mod:`.inflammation`) of the living voxels touching the mass, ``h_0`` the
thickness of tissue between the mass and the air when it starts to move, ``x`` the distance moved. The tissue in
front is taken to break down as the mass advances (pressure necrosis / resorption, a hypothesis); when ``x >= h_0``
the mass reaches the surface through a broken overlying layer and detaches: its voxels leave the body. A domain
without air (a deep organ such as the liver phantom) gives no direction and the mass stays: its fate is healing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

_SIX = ndimage.generate_binary_structure(3, 1)


@dataclass
class MovingMass:
    voxels: np.ndarray                # bool mask (at the time it became free)
    direction: np.ndarray             # unit vector, grid frame
    h0: float                         # tissue in front when it started, m
    t_free: float                     # time it became free, s
    moved: float = 0.0                # m
    detached_at: float | None = None  # s
    history: list = field(default_factory=list)

    @property
    def volume_voxels(self) -> int:
        return int(np.count_nonzero(self.voxels))


def components(dead: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(dead, structure=_SIX)


def _component_faces(lab, n, living, free, separated):
    """Per component label: (separated or free faces, all boundary faces) toward living tissue or air."""
    sep = np.zeros(n + 1)
    tot = np.zeros(n + 1)
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        la, lb = lab[tuple(lo)], lab[tuple(hi)]
        s = separated[ax]
        for own, other_living, other_free in ((la, living[tuple(hi)], free[tuple(hi)]),
                                              (lb, living[tuple(lo)], free[tuple(lo)])):
            m = (own > 0) & other_living
            tot += np.bincount(own[m], minlength=n + 1)
            sep += np.bincount(own[m & s], minlength=n + 1)
            f = (own > 0) & other_free
            c = np.bincount(own[f], minlength=n + 1)
            tot += c
            sep += c
    tot[0] = 0
    return sep, tot


def free_surface_path(comp: np.ndarray, air: np.ndarray, spacing) -> tuple[np.ndarray, float] | None:
    """(unit direction, thickness of what lies between) from the mass to the nearest air voxel, or None."""
    if not air.any():
        return None
    dist, idx = ndimage.distance_transform_edt(~air, sampling=spacing, return_indices=True)
    d = np.where(comp, dist, np.inf)
    k = np.unravel_index(np.argmin(d), d.shape)
    target = np.array([idx[a][k] for a in range(3)])
    vec = (target - np.array(k)) * np.asarray(spacing)
    n = np.linalg.norm(vec)
    if n == 0:
        return np.array([0.0, 0.0, 1.0]), 0.0
    h = max(float(d[k]) - 0.5 * float(np.min(spacing)), 0.0)   # centre-to-centre minus the air voxel's half
    h = max(h - 0.5 * float(np.min(spacing)), 0.0)             # and the mass voxel's half: 0 when adjacent
    return vec / n, h


class Detachment:
    def __init__(self, spacing, params: dict):
        self.spacing = tuple(spacing)
        self.p = params
        self.masses: list[MovingMass] = []

    def find_free_masses(self, t: float, dead: np.ndarray, living: np.ndarray, air: np.ndarray, integrity) -> None:
        """Start moving every dead component that has become free (and is not moving yet)."""
        lab, n = components(dead)
        if n == 0:
            return
        sep, tot = _component_faces(lab, n, living, air, integrity.separated)
        for m in self.masses:
            if m.detached_at is None:
                for c in np.unique(lab[m.voxels & dead]):
                    tot[c] = 0                      # already moving
        free = np.nonzero((tot > 0) & (sep >= self.p["detach_separated_fraction"] * tot))[0]
        for c in free:
            comp = lab == c
            path = free_surface_path(comp, air, self.spacing)
            if path is None:
                continue
            direction, h0 = path
            self.masses.append(MovingMass(comp, direction, h0, t))

    def advance(self, t: float, dt: float, granulation: np.ndarray, living: np.ndarray) -> list[MovingMass]:
        """Move the free masses; return those that detached in this step."""
        v0, hmax = self.p["extrusion_speed"], self.p["extrusion_max_depth"]
        out = []
        for m in self.masses:
            if m.detached_at is not None:
                continue
            shell = ndimage.binary_dilation(m.voxels, structure=_SIX) & living
            G = float(granulation[shell].mean()) if shell.any() else 0.0
            front = m.h0 - m.moved
            v = v0 * G * max(0.0, 1.0 - front / hmax) if front > 0 else 0.0
            m.moved += v * dt
            m.history.append((t + dt, m.moved))
            if m.moved >= m.h0 - 1e-12:
                m.detached_at = t + dt
                out.append(m)
        return out

    def shifted_mask(self, m: MovingMass) -> np.ndarray:
        """The mass at its current position, rounded to whole voxels (for figures)."""
        shift = np.rint(m.direction * m.moved / np.asarray(self.spacing)).astype(int)
        return ndimage.shift(m.voxels.astype(np.uint8), shift, order=0, mode="constant", cval=0).astype(bool)
