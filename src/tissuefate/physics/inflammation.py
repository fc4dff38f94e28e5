r"""Inflammatory cells at the necrotic-viable boundary: the demarcation rim.

``I`` is the local inflammatory-cell density (neutrophils, then macrophages and granulation) normalised to its
saturation, ``0 <= I <= 1``. Recruitment happens in *perfused living* tissue next to dead tissue (fate.md,
suggested structure 3-4: the interface drives recruitment), after a lag (margination and diapedesis)::

    dI/dt = div(D_I grad I) + k_r S(x) v(x) H(t - t_d(x) - t_lag) (1 - I) - mu I 1[living, outside S]

``S`` = 1 in living tissue within ``rim_source_width`` of a dead voxel, ``v`` the surviving microvessel fraction
(perfusion), ``t_d`` the death time of the nearest dead neighbour region, ``mu`` the removal rate (only where no
debris is: inside dead tissue the cells stay as long as debris does, the healing issue's business). Cells migrate
into the dead tissue by diffusion and carry the proteases that digest its matrix (:mod:`.integrity`).

Granulation maturity ``G`` (0..1) integrates the inflammatory presence: ``dG/dt = I / t_gran`` (capped at 1),
so a rim that is fully inflamed becomes granulation tissue after ``granulation_time``.

Rim thickness (the metric): ``sum_living(I) dV / A_interface``, the inflamed volume on the living side per unit
area of the dead-living interface, a sub-voxel measure of the demarcation zone.

Numerics: LOD diffusion (conservative), exact relaxation of the source and removal terms per voxel.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..numerics.lod import lod_diffuse


def interface_area(dead: np.ndarray, living: np.ndarray, spacing) -> float:
    """Area of the faces between dead and living voxels, m^2."""
    area = 0.0
    for ax in range(3):
        a = np.prod([h for d, h in enumerate(spacing) if d != ax])
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        n = np.count_nonzero(dead[tuple(lo)] & living[tuple(hi)]) + np.count_nonzero(living[tuple(lo)] & dead[tuple(hi)])
        area += n * a
    return float(area)


def rim_source(dead: np.ndarray, living: np.ndarray, spacing, width: float, death_time: np.ndarray | None = None):
    """Living voxels within ``width`` of a dead voxel (distance between voxel centres) and, if ``death_time`` is
    given, the death time of the nearest dead voxel for each voxel (inf where there is no dead tissue)."""
    if not dead.any():
        return np.zeros_like(living), np.full(living.shape, np.inf)
    dist, idx = ndimage.distance_transform_edt(~dead, sampling=spacing, return_indices=True)
    # at least the face neighbours, whatever the voxel size
    src = living & (dist <= max(width, max(spacing)) + 1e-12)
    td = death_time[tuple(idx)] if death_time is not None else np.zeros(living.shape)
    return src, np.where(np.isfinite(td), td, 0.0)


class Inflammation:
    def __init__(self, spacing, tissue: np.ndarray, params: dict):
        self.spacing = tuple(spacing)
        self.tissue = tissue
        self.p = params
        self.I = np.zeros(tissue.shape)
        self.G = np.zeros(tissue.shape)
        self._cache = None          # (dead mask, source, death time of the nearest dead voxel)

    def step(self, t: float, dt: float, dead: np.ndarray, death_time: np.ndarray, perfusion: np.ndarray) -> None:
        p, tissue = self.p, self.tissue
        living = tissue & ~dead
        if self._cache is None or not np.array_equal(self._cache[0], dead):
            self._cache = (dead.copy(), *rim_source(dead, living, self.spacing, p["rim_source_width"], death_time))
        _, src, td = self._cache
        src = src & living
        on = src & (t + dt > td + p["inflammation_lag"])
        k = p["recruitment_rate"] * np.clip(perfusion, 0.0, 1.0)
        grow = on & (k > 0)
        self.I[grow] = 1.0 - (1.0 - self.I[grow]) * np.exp(-k[grow] * dt)
        cells = np.ascontiguousarray(self.I)
        D = p["inflammatory_cell_diffusivity"]
        lod_diffuse(cells, tissue.astype(float), np.where(tissue, D, 0.0), dt, self.spacing)
        decay = living & ~src
        cells[decay] *= np.exp(-p["inflammatory_removal_rate"] * dt)
        self.I = np.clip(cells, 0.0, 1.0)
        self.G = np.minimum(self.G + self.I * dt / p["granulation_time"], 1.0)

    def rim_thickness(self, dead: np.ndarray) -> float:
        """Inflamed volume on the living side per interface area, m (0 without dead tissue)."""
        living = self.tissue & ~dead
        A = interface_area(dead, living, self.spacing)
        if A <= 0:
            return 0.0
        return float(np.sum(self.I[living])) * float(np.prod(self.spacing)) / A
