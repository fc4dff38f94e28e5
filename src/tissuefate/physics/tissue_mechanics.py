r"""Tissue mechanics after the kill: moduli by tissue state, the volume change as eigenstrain, what it does.

Quasi-static small-strain elasticity (solver: :mod:`tissuefate.numerics.elasticity`)::

    div sigma = 0,   sigma = C(E, nu) : (eps(u) - eps*),   eps* = (J - 1)/3 I

``J - 1`` the local volume change from water (:mod:`.water`) and the injection's dilation. Per voxel
``E = E_tissue f_mode max(s, s_floor)`` in dead tissue (``f_mode`` the ``stiffness_factor_<mode>`` row: oxidative
necrosis softens, coagulation stiffens; ``s`` the matrix integrity), ``E_tissue`` in living tissue; ``nu`` from the
tissue library. Boundary conditions: the skin-air surface and every surface toward air are traction-free, the
domain faces inside the body (deep and lateral tissue) are fixed.

Outputs: the deformed volume of a region (``sum (1 + tr eps) dV``), the skin-surface profile ``u_z`` over the
tumour (negative = dent), the mean normal and von Mises stress on the tumour boundary.
"""
from __future__ import annotations

import numpy as np

from .fate_parameters import DEATH_MODES


def aggregate_modulus(E, nu):
    """Drained (P-wave) aggregate modulus H_A = E (1 - nu) / ((1 + nu)(1 - 2 nu)), Pa."""
    return E * (1 - nu) / ((1 + nu) * (1 - 2 * nu))


def effective_modulus(E: np.ndarray, dead: np.ndarray, mode: np.ndarray, integrity: np.ndarray, params: dict) -> np.ndarray:
    out = E.copy()
    floor = params["integrity_stiffness_floor"]
    for k, name in enumerate(DEATH_MODES):
        m = dead & (mode == k)
        out[m] = E[m] * params[f"stiffness_factor_{name}"] * np.maximum(integrity[m], floor)
    return out


def _crop(sol, shape):
    """The solution restricted to the unpadded grid (voxel fields and corner nodes)."""
    from dataclasses import replace
    nx, ny, nz = shape
    return replace(sol, displacement=sol.displacement[:nx + 1, :ny + 1, :nz + 1],
                   strain=sol.strain[:, :nx, :ny, :nz], stress=sol.stress[:, :nx, :ny, :nz],
                   volumetric_strain=sol.volumetric_strain[:nx, :ny, :nz])


def fixed_faces_for(solid: np.ndarray, air: np.ndarray) -> tuple[str, ...]:
    """Domain faces with tissue on them that are not next to air: the body continues there, so they are fixed."""
    faces = []
    for ax, name in enumerate("xyz"):
        for side, sl in (("-", 0), ("+", -1)):
            idx = [slice(None)] * 3
            idx[ax] = sl
            if solid[tuple(idx)].any():
                faces.append(f"{name}{side}")
    return tuple(faces)


def _pad_width(shape, multiple: int = 4):
    """Layers to add at the + end of each axis so the matrix-free multigrid can coarsen (dims divisible by 4)."""
    return [(0, (-n) % multiple) for n in shape]


class TissueMechanics:
    """Elasticity on the tissue grid. The grid is padded at the + ends to dimensions divisible by 4 (the
    multigrid coarsens twice) by repeating the last layer: tissue at a fixed face continues (the body goes on),
    air at a free surface stays air; the solution is cropped back."""

    def __init__(self, spacing, solid: np.ndarray, air: np.ndarray, body: np.ndarray | None = None,
                 rtol: float = 1e-8):
        """solid: the material now (e.g. without detached tissue: a crater is void); air: outside the body;
        body: the body as it was (default ``solid``), which locates the original skin surface."""
        from ..numerics.elasticity import ElasticitySolver
        self.spacing = tuple(spacing)
        self.solid = solid
        self.air = air
        self.body = solid if body is None else body
        self.pad = _pad_width(solid.shape)
        padded = np.pad(solid, self.pad, mode="edge")
        self.solver = ElasticitySolver(self.spacing, padded, fixed_faces=fixed_faces_for(self.body, air), rtol=rtol)
        self.last = None

    def solve(self, E: np.ndarray, nu: np.ndarray, volume_change: np.ndarray):
        eps = np.where(self.solid, np.log1p(np.maximum(volume_change, -0.9)) / 3.0, 0.0)
        pad = lambda a: np.pad(a, self.pad, mode="edge")  # noqa: E731
        sol = self.solver.solve(pad(np.where(self.solid, E, 1.0)), pad(np.where(self.solid, nu, 0.3)), pad(eps))
        self.last = _crop(sol, self.solid.shape)
        return self.last

    # ------------------------------------------------------------------ read-outs
    def deformed_volume(self, region: np.ndarray) -> float:
        dV = float(np.prod(self.spacing))
        return float(np.sum(1.0 + self.last.volumetric_strain[region])) * dV

    def surface_profile(self, column_xy: tuple[int, int], axis: int = 0, present: np.ndarray | None = None):
        """(positions along ``axis`` through the column (index), height change of the skin surface, m) or None
        without a skin.

        The surface of a column is the top of its highest voxel that is still there (``present``: tissue not
        detached) with only air or detached tissue above it; its height change is the mean ``u_z`` of that voxel's
        4 top corners minus the thickness of tissue that has left the column (a crater is a dent)."""
        u = self.last.displacement
        nx, ny, nz = self.solid.shape
        present = self.solid if present is None else present
        i0, j0 = column_xy
        pos, dz = [], []
        h = self.spacing[2]
        rng = range(nx) if axis == 0 else range(ny)
        for a in rng:
            i, j = (a, j0) if axis == 0 else (i0, a)
            col = self.body[i, j, :]
            if not col.any():
                continue
            k0 = int(np.nonzero(col)[0][-1])               # the original skin voxel
            if k0 + 1 >= nz or not self.air[i, j, k0 + 1]:
                continue
            here = np.nonzero(present[i, j, :])[0]
            if here.size == 0:
                continue
            k = int(here[-1])
            top = u[i:i + 2, j:j + 2, k + 1, 2]
            if not np.isfinite(top).any():
                continue
            dz.append(float(np.nanmean(top)) - (k0 - k) * h)
            pos.append(a)
        if not pos:
            return None
        return np.asarray(pos), np.asarray(dz)

    def boundary_stress(self, region: np.ndarray) -> dict:
        """Mean normal stress across the region's boundary faces (tension positive) and mean von Mises stress of
        the voxels on both sides, Pa."""
        s = self.last.stress
        vm = np.sqrt(0.5 * ((s[0] - s[1]) ** 2 + (s[1] - s[2]) ** 2 + (s[2] - s[0]) ** 2)
                     + 3.0 * (s[3] ** 2 + s[4] ** 2 + s[5] ** 2))
        sn, vms = [], []
        for ax in range(3):
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[ax], hi[ax] = slice(0, -1), slice(1, None)
            lo, hi = tuple(lo), tuple(hi)
            face = (region[lo] & self.solid[hi] & ~region[hi]) | (region[hi] & self.solid[lo] & ~region[lo])
            sn.append(0.5 * (s[ax][lo] + s[ax][hi])[face])
            vms.append(0.5 * (vm[lo] + vm[hi])[face])
        sn, vms = np.concatenate(sn), np.concatenate(vms)
        if sn.size == 0:
            return {"normal_pa": 0.0, "von_mises_pa": 0.0}
        return {"normal_pa": float(sn.mean()), "von_mises_pa": float(vms.mean())}

    def normal_stresses(self):
        s = self.last.stress
        return [s[0], s[1], s[2]]
