"""Small array helpers shared by the per-voxel kernels."""
from __future__ import annotations

import numpy as np


def scalar_or_field(x, n: int, name: str) -> tuple[np.ndarray, int]:
    """A parameter given as a scalar or one value per voxel, as a flat float64 array and its stride (0 or 1)."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if a.size == 1:
        return a.reshape(1), 0
    if a.size != n:
        raise ValueError(f"{name} must be a scalar or have one value per voxel")
    return a.reshape(-1), 1


_WORKSPACES: dict[tuple, object] = {}


def cached_workspace(factory, shape):
    """One preallocated work-array object per (kind, grid shape), so hot loops never allocate per step."""
    key = (factory, tuple(int(n) for n in shape))
    ws = _WORKSPACES.get(key)
    if ws is None:
        ws = _WORKSPACES[key] = factory(key[1])
    return ws
