"""Uniform Cartesian voxel grid.

Every field in tissuefate is a float64 (or int8 label) NumPy array of shape ``grid.shape``
indexed ``[i, j, k]`` along x, y, z, C-ordered. Physics works in SI metres; the grid's
``affine`` maps voxel indices to world millimetres (the NIfTI/RAS convention) so that a
result can be laid over the image it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A uniform voxel grid.

    shape:   number of voxels (nx, ny, nz)
    spacing: voxel edge lengths (dx, dy, dz) in m
    origin:  world position of the centre of voxel (0, 0, 0) in m (used when no affine is given)
    affine:  4x4 voxel-index -> world-mm matrix; defaults to a diagonal one from spacing and origin
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    affine_mm: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing", tuple(float(h) for h in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        if self.affine_mm is None:
            a = np.eye(4)
            a[:3, :3] = np.diag(np.asarray(self.spacing) * 1e3)
            a[:3, 3] = np.asarray(self.origin) * 1e3
            object.__setattr__(self, "affine_mm", a)

    @property
    def dV(self) -> float:
        """Voxel volume in m^3."""
        return float(np.prod(self.spacing))

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def extent(self) -> tuple[float, float, float]:
        """Edge lengths of the whole domain in m."""
        return tuple(n * h for n, h in zip(self.shape, self.spacing))

    def axis(self, d: int) -> np.ndarray:
        """Voxel-centre coordinates along axis d, in m (grid frame)."""
        return self.origin[d] + self.spacing[d] * np.arange(self.shape[d])

    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable voxel-centre coordinates (x[:,None,None], y[None,:,None], z[None,None,:]) in m."""
        x, y, z = (self.axis(d) for d in range(3))
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def index_of(self, point_m) -> tuple[int, int, int]:
        """Nearest voxel index of a point given in grid-frame metres (no bounds check)."""
        p = np.asarray(point_m, dtype=float)
        idx = np.rint((p - np.asarray(self.origin)) / np.asarray(self.spacing)).astype(int)
        return tuple(int(i) for i in idx)

    def contains(self, point_m) -> bool:
        i = self.index_of(point_m)
        return all(0 <= i[d] < self.shape[d] for d in range(3))

    def zeros(self, dtype=np.float64) -> np.ndarray:
        return np.zeros(self.shape, dtype=dtype)
