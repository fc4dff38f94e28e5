"""Metrics: one small pure function per metric, computed from fields and the grid.

Each has the same meaning for every modality, so any two runs can be compared key by key.
Volumes are reported in mL (1e-6 m^3), lengths in mm, amounts in mmol: the edge of the code.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .tissue_state import DEAD_STATES, TissueState

ML = 1e-6  # m^3


def dead_mask(state: np.ndarray) -> np.ndarray:
    return np.isin(state, [int(s) for s in DEAD_STATES])


def volume_ml(mask: np.ndarray, dV: float) -> float:
    return float(np.count_nonzero(mask)) * dV / ML


def tumor_volume_ml(tumor: np.ndarray, dV: float) -> float:
    return volume_ml(tumor, dV)


def viable_tumor_ml(tumor: np.ndarray, state: np.ndarray, dV: float) -> float:
    return volume_ml(tumor & ~dead_mask(state), dV)


def necrotic_tumor_fraction(tumor: np.ndarray, state: np.ndarray) -> float:
    n = np.count_nonzero(tumor)
    return float(np.count_nonzero(tumor & dead_mask(state))) / n if n else 0.0


def normal_tissue_necrosis_ml(tissue: np.ndarray, tumor: np.ndarray, state: np.ndarray, dV: float) -> float:
    return volume_ml(tissue & ~tumor & dead_mask(state), dV)


def necrosis_beyond_tumor_mm(tumor: np.ndarray, state: np.ndarray, spacing) -> float:
    """Deepest necrosis outside the tumour, measured from the tumour surface (voxel centres), in mm."""
    outside_dead = dead_mask(state) & ~tumor
    if not outside_dead.any():
        return 0.0
    if not tumor.any():
        return float("nan")
    dist = ndimage.distance_transform_edt(~tumor, sampling=spacing)
    # a voxel adjacent to the tumour is half a voxel beyond its surface
    return float((dist[outside_dead].max() - 0.5 * min(spacing)) * 1e3)


def necrosis_by_cause_ml(state: np.ndarray, dV: float, within: np.ndarray | None = None) -> dict[str, float]:
    out = {}
    for s in DEAD_STATES:
        m = state == int(s)
        if within is not None:
            m &= within
        out[s.name.lower()] = volume_ml(m, dV)
    return out


def committed_ml(commit_time: np.ndarray, state: np.ndarray, dV: float) -> float:
    """Voxels committed to death whose necrosis has not completed yet."""
    return volume_ml(np.isfinite(commit_time) & (state == int(TissueState.VIABLE)), dV)
