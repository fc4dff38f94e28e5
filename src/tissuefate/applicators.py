"""Applicators: the geometry of treatment (like sources and receivers in a seismic model).

A :class:`Needle` knows its tip, its shaft direction (from the tip back towards the skin entry),
its gauge and therefore its outer radius, and the ordered voxels of its insertion track from the
tip to the last tissue voxel before air (or the domain boundary). Physics uses the tip voxel (where
the injectate enters), the track (backflow path, temporary hemostasis) and the radius.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ScenarioError
from .geometry import Grid

# Outer and nominal inner diameters (regular wall), m (ISO 9626 [R], injection.md §6.4)
NEEDLE_GAUGE_MM = {
    14: (2.108, 1.600), 16: (1.651, 1.194), 18: (1.270, 0.838), 19: (1.067, 0.686), 20: (0.908, 0.603),
    21: (0.819, 0.514), 22: (0.718, 0.413), 23: (0.642, 0.337), 24: (0.566, 0.311), 25: (0.515, 0.260),
    26: (0.464, 0.260), 27: (0.413, 0.210), 28: (0.362, 0.184), 29: (0.337, 0.184), 30: (0.312, 0.159),
    31: (0.261, 0.133), 32: (0.235, 0.108), 33: (0.210, 0.108), 34: (0.159, 0.0826),
}


@dataclass(frozen=True)
class Needle:
    tip: np.ndarray            # m, grid frame
    direction: np.ndarray      # unit vector from the tip back along the shaft (towards the entry)
    gauge: int
    outer_radius: float        # m
    inner_radius: float        # m
    tip_index: tuple[int, int, int]
    track: tuple[tuple[int, int, int], ...]   # tip voxel first, entry voxel last
    track_length: float        # m, tip to skin entry

    @property
    def entry_index(self) -> tuple[int, int, int]:
        return self.track[-1]


def make_needle(grid: Grid, tissue_mask: np.ndarray, tip, direction, gauge: int, field: str) -> Needle:
    """Build a needle; the tip must lie in tissue inside the domain (ScenarioError naming ``field`` otherwise)."""
    tip = np.asarray(tip, dtype=float)
    if gauge not in NEEDLE_GAUGE_MM:
        raise ScenarioError(f"{field}.gauge", gauge, f"a needle gauge in {min(NEEDLE_GAUGE_MM)}..{max(NEEDLE_GAUGE_MM)}")
    lo = np.asarray(grid.origin) - 0.5 * np.asarray(grid.spacing)
    hi = lo + np.asarray(grid.extent)
    if np.any(tip < lo) or np.any(tip > hi):
        raise ScenarioError(f"{field}.tip", f"({', '.join(f'{1e3 * v:g} mm' for v in tip)})",
                            "a point inside the domain: " + ", ".join(
                                f"{a} in [{1e3 * l:.3g}, {1e3 * h:.3g}] mm" for a, l, h in zip("xyz", lo, hi)))
    idx = grid.index_of(tip)
    idx = tuple(int(np.clip(i, 0, n - 1)) for i, n in zip(idx, grid.shape))
    if not tissue_mask[idx]:
        raise ScenarioError(f"{field}.tip", f"({', '.join(f'{1e3 * v:g} mm' for v in tip)})",
                            "a point inside tissue (not in air or a vessel lumen)")
    d = np.asarray(direction, dtype=float)
    d = d / np.linalg.norm(d)
    h = min(grid.spacing)
    track = [idx]
    s = 0.0
    length = 0.0
    while True:
        s += 0.25 * h
        p = tip + s * d
        j = grid.index_of(p)
        if not all(0 <= j[a] < grid.shape[a] for a in range(3)) or not tissue_mask[j]:
            break
        length = s
        if j != track[-1]:
            track.append(tuple(int(v) for v in j))
    od, idm = NEEDLE_GAUGE_MM[gauge]
    return Needle(tip, d, gauge, 0.5e-3 * od, 0.5e-3 * idm, idx, tuple(track), length)
