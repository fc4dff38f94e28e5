"""Built-in voxel phantoms (label maps) and grid-size helpers.

A phantom is a ``uint8`` label array of ``grid.shape`` plus a label table ``{label: tissue
name}`` that the tissue library resolves by *name*. Names used here: ``"air"`` (outside the
body, always label 0), ``"skin"``, ``"fat"``, ``"muscle"``, ``"tumor"``, ``"liver"``,
``"vessel"`` (blood lumen of a large vessel). Labels: see :data:`STANDARD_LABELS`.

Coordinate convention (grid frame, metres)
------------------------------------------
* x, y are lateral, z is the depth axis pointing **up, out of the body**: the tissue
  surface (skin, or liver capsule) is the horizontal plane ``z = z_top - air_gap`` where
  ``z_top`` is the upper face of the domain; air fills ``z >= z_surface``, tissue lies below.
  Depth below the surface is ``z_surface - z``.
* :func:`grid_for` builds a grid centred laterally on x = y = 0 with its upper face at
  ``z = +air_gap``, so that with the same ``air_gap`` the surface lies at **z = 0**, the body
  at z < 0 and depth = -z.
* A voxel belongs to a region if its *centre* does (point sampling; the volume error is a
  surface term that decreases with the voxel size, see tests/test_geometry.py).

Paint order (later wins): layers (air/skin/fat/muscle, or air/liver), then tumours, then the
vessel lumen (a large vessel running through a tumour keeps its blood lumen). No tumour or
vessel voxel is ever painted in air.

This module solves no equations; it reads nothing and writes the ``labels`` array only.
All functions are pure and vectorised (NumPy broadcasting over x-slabs, no per-voxel loops).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import ScenarioError
from .grid import Grid

__all__ = [
    "Phantom",
    "STANDARD_LABELS",
    "TISSUE_NAMES",
    "DEFAULT_BYTES_PER_VOXEL",
    "grid_for",
    "check_grid_size",
    "total_memory_bytes",
    "subcutaneous",
    "liver",
    "multi_tumor",
]

STANDARD_LABELS: dict[int, str] = {
    0: "air",
    1: "skin",
    2: "fat",
    3: "muscle",
    4: "tumor",
    5: "liver",
    6: "vessel",
}
TISSUE_NAMES: tuple[str, ...] = tuple(STANDARD_LABELS.values())
_LABEL = {name: lab for lab, name in STANDARD_LABELS.items()}

#: Rough memory of a full simulation per voxel (tens of float64 fields + sparse operators and
#: AMG hierarchy). Callers with a better estimate pass their own.
DEFAULT_BYTES_PER_VOXEL = 512

_SLAB_VOXELS = 1 << 22  # evaluate region predicates on x-slabs of about this many voxels


# --------------------------------------------------------------------------------------
# Phantom container
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Phantom:
    """Voxel phantom.

    grid:        the :class:`Grid`
    labels:      uint8 array of ``grid.shape`` (read-only)
    label_table: ``{label value: tissue name}``; contains every value present in ``labels``
    landmarks:   named points / values in grid-frame metres, e.g. ``"tumor_center"`` (3,),
                 ``"skin_surface_z"`` (0-d), ``"vessel_axis_point"``, ``"vessel_direction"``
                 (unit vector, dimensionless)
    """

    grid: Grid
    labels: np.ndarray
    label_table: dict[int, str]
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        labels = np.asarray(self.labels)
        if labels.shape != self.grid.shape:
            raise ScenarioError("geometry.labels", f"array of shape {labels.shape}",
                                f"shape {self.grid.shape} (grid.shape)")
        if labels.dtype != np.uint8:
            if labels.size and (not np.all(labels == np.round(labels)) or labels.min() < 0 or labels.max() > 255):
                raise ScenarioError("geometry.labels", f"array of dtype {labels.dtype}",
                                    "integer label values in 0..255")
            labels = labels.astype(np.uint8)
        else:
            labels = labels.copy() if labels.flags.writeable else labels
        labels.flags.writeable = False
        table = {int(k): str(v) for k, v in self.label_table.items()}
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
        missing = [int(v) for v in present if int(v) not in table]
        if missing:
            raise ScenarioError("geometry.labels", f"unmapped label values {missing}",
                                f"every label value in the label table {table}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "label_table", table)
        object.__setattr__(self, "landmarks",
                           {k: np.asarray(v, dtype=float) for k, v in self.landmarks.items()})

    def values_of(self, name: str) -> list[int]:
        """All label values mapped to tissue ``name``."""
        return [k for k, v in self.label_table.items() if v == name]

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of the voxels of tissue ``name``."""
        return np.isin(self.labels, self.values_of(name))

    def counts(self) -> dict[str, int]:
        """Voxel count per tissue name (names absent from the image count 0)."""
        bc = np.bincount(self.labels.ravel(), minlength=256)
        out: dict[str, int] = {}
        for k, v in self.label_table.items():
            out[v] = out.get(v, 0) + int(bc[k])
        return out

    def volume(self, name: str) -> float:
        """Volume of tissue ``name`` in m^3."""
        return self.counts().get(name, 0) * self.grid.dV


# --------------------------------------------------------------------------------------
# Grid helpers
# --------------------------------------------------------------------------------------
def total_memory_bytes() -> int | None:
    """Total physical RAM from ``os.sysconf`` (None if the platform does not tell)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_grid_size(shape: Sequence[int], bytes_per_voxel: float = DEFAULT_BYTES_PER_VOXEL,
                    limit_bytes: float | None = None, voxel_size=None) -> int:
    """Estimate the memory of a grid and reject it if it does not fit.

    Estimated memory = prod(shape) * bytes_per_voxel. ``limit_bytes`` is the memory the caller
    may use (e.g. the machine's available memory); when None the total RAM from
    ``os.sysconf`` is used (16 GiB if unknown). ``voxel_size`` (m, optional) is only used to
    word the message and suggest a coarser voxel. Returns the estimate in bytes; raises
    ``ScenarioError(field="domain.voxel_size")`` if it exceeds the limit.
    """
    shape = tuple(int(n) for n in shape)
    n_vox = math.prod(shape)
    est = n_vox * float(bytes_per_voxel)
    source = "given limit"
    if limit_bytes is None:
        limit_bytes = total_memory_bytes()
        source = "total RAM of this machine"
        if limit_bytes is None:
            limit_bytes, source = 16 * 1024**3, "assumed RAM (unknown platform)"
    if est > limit_bytes:
        dims = "x".join(str(n) for n in shape)
        got = f"grid {dims} = {n_vox:.3g} voxels, est. {_fmt_bytes(est)} at {bytes_per_voxel:g} B/voxel"
        if voxel_size is not None:
            vs = np.atleast_1d(np.asarray(voxel_size, dtype=float))
            got = f"{', '.join(f'{v:.4g}' for v in vs)} m ({got})"
        hint = "use a coarser voxel size or a smaller domain"
        if voxel_size is not None:
            factor = (est / limit_bytes) ** (1.0 / 3.0)
            hint = (f"use a voxel size of at least {float(np.max(vs)) * factor * 1.05:.3g} m "
                    f"(x{factor * 1.05:.3g}) or a smaller domain")
        raise ScenarioError("domain.voxel_size", got,
                            f"estimated memory <= {_fmt_bytes(limit_bytes)} ({source})", hint)
    return int(est)


def _triple(fieldname: str, value, what: str = "m", positive: bool = False) -> np.ndarray:
    """Coerce a scalar or 3-sequence to a finite float (3,) array, else ScenarioError."""
    try:
        a = np.broadcast_to(np.asarray(value, dtype=float), (3,)).copy()
    except (TypeError, ValueError):
        raise ScenarioError(fieldname, value, f"3 numbers in {what}") from None
    if not np.all(np.isfinite(a)) or (positive and np.any(a <= 0)):
        raise ScenarioError(fieldname, value, f"3 {'positive ' if positive else ''}finite numbers in {what}")
    return a


def _scalar(fieldname: str, value, lo: float = 0.0, strict: bool = False, unit: str = "m") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ScenarioError(fieldname, value, f"a number in {unit}") from None
    if not math.isfinite(v) or v < lo or (strict and v == lo):
        rel = ">" if strict else ">="
        raise ScenarioError(fieldname, value, f"a finite number {rel} {lo:g} {unit}")
    return v


def grid_for(extent_m, voxel_m, air_gap: float = 0.0, *,
             bytes_per_voxel: float | None = DEFAULT_BYTES_PER_VOXEL,
             limit_bytes: float | None = None) -> Grid:
    """Grid of (at least) ``extent_m`` (m, scalar or 3) with voxels ``voxel_m`` (m, scalar or 3).

    Laterally centred on x = y = 0; upper face at ``z = +air_gap`` so the tissue surface of a
    phantom built with the same ``air_gap`` lies at z = 0. The number of voxels per axis is
    ``ceil(extent / voxel)`` (the domain is enlarged to a whole number of voxels, downwards in
    z). The memory estimate is checked with :func:`check_grid_size` unless
    ``bytes_per_voxel`` is None.
    """
    ext = _triple("domain.extent", extent_m, positive=True)
    h = _triple("domain.voxel_size", voxel_m, positive=True)
    gap = _scalar("domain.air_gap", air_gap)
    n = np.ceil(ext / h * (1 - 1e-9)).astype(np.int64)
    if gap >= n[2] * h[2]:
        raise ScenarioError("domain.air_gap", gap, f"0 <= air_gap < domain height {n[2] * h[2]:g} m")
    if bytes_per_voxel is not None:
        check_grid_size(n, bytes_per_voxel, limit_bytes, voxel_size=voxel_m)
    origin = (-0.5 * (n[0] - 1) * h[0], -0.5 * (n[1] - 1) * h[1], gap - (n[2] - 0.5) * h[2])
    return Grid(tuple(int(v) for v in n), tuple(h), origin)


# --------------------------------------------------------------------------------------
# Painting helpers (vectorised over x-slabs)
# --------------------------------------------------------------------------------------
def _domain_box(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    o, h, n = (np.asarray(v, dtype=float) for v in (grid.origin, grid.spacing, grid.shape))
    return o - 0.5 * h, o + (n - 0.5) * h


def _index_range(grid: Grid, lo: np.ndarray, hi: np.ndarray) -> list[slice]:
    """Index slices of the voxels whose centres may lie in [lo, hi] (clipped to the grid)."""
    o, h = np.asarray(grid.origin), np.asarray(grid.spacing)
    i0 = np.clip(np.floor((lo - o) / h).astype(int), 0, grid.shape)
    i1 = np.clip(np.ceil((hi - o) / h).astype(int) + 1, 0, grid.shape)
    return [slice(int(a), int(b)) for a, b in zip(i0, i1)]


def _paint(labels: np.ndarray, grid: Grid, inside: Callable, value: int,
           lo: np.ndarray | None = None, hi: np.ndarray | None = None,
           protect: int | None = 0) -> None:
    """labels[inside(x, y, z)] = value within the bounding box [lo, hi], never over ``protect``."""
    if lo is None or hi is None:
        sl = [slice(0, n) for n in grid.shape]
    else:
        sl = _index_range(grid, lo, hi)
    x, y, z = (grid.axis(d)[sl[d]] for d in range(3))
    if x.size == 0 or y.size == 0 or z.size == 0:
        return
    step = max(1, _SLAB_VOXELS // (y.size * z.size))
    for a in range(0, x.size, step):  # slabs, not voxels
        xs = x[a:a + step]
        m = inside(xs[:, None, None], y[None, :, None], z[None, None, :])
        block = labels[sl[0].start + a: sl[0].start + a + xs.size, sl[1], sl[2]]
        if protect is not None:
            m = m & (block != protect)
        block[m] = value


def _layers(grid: Grid, boundaries: list[tuple[float, int]], top_label: int = 0) -> np.ndarray:
    """Horizontal layers: ``boundaries`` = [(z_top_of_layer, label), ...] from the top down.

    A voxel centre at z belongs to the first layer (from the bottom) whose top is above z;
    centres at or above the first top are ``top_label`` (air).
    """
    z = grid.axis(2)
    prof = np.full(z.shape, top_label, dtype=np.uint8)
    for ztop, lab in boundaries:  # few layers; later (deeper) layers overwrite below their top
        prof[z < ztop] = lab
    labels = np.empty(grid.shape, dtype=np.uint8)
    labels[...] = prof[None, None, :]
    return labels


def _surface_z(grid: Grid, air_gap: float) -> float:
    gap = _scalar("geometry.air_gap", air_gap)
    lo, hi = _domain_box(grid)
    if gap >= hi[2] - lo[2]:
        raise ScenarioError("geometry.air_gap", gap, f"0 <= air_gap < domain height {hi[2] - lo[2]:g} m")
    return float(hi[2] - gap)


def _check_inside_body(fieldname: str, grid: Grid, center, semi, z_surface: float) -> None:
    lo, hi = _domain_box(grid)
    hi = hi.copy()
    hi[2] = z_surface
    c, s = np.asarray(center), np.asarray(semi)
    tol = 1e-12
    if np.any(c - s < lo - tol) or np.any(c + s > hi + tol):
        raise ScenarioError(
            fieldname, tuple(float(v) for v in c),
            f"an ellipsoid with semi-axes {tuple(round(float(v), 9) for v in s)} m inside the body: "
            f"x in [{lo[0]:.4g}, {hi[0]:.4g}], y in [{lo[1]:.4g}, {hi[1]:.4g}], "
            f"z in [{lo[2]:.4g}, {hi[2]:.4g}] m (below the surface)",
            "move the tumour or enlarge the domain")


def _paint_ellipsoid(labels, grid, center, semi, value):
    c, s = center, semi

    def inside(x, y, z):
        return ((x - c[0]) / s[0]) ** 2 + ((y - c[1]) / s[1]) ** 2 + ((z - c[2]) / s[2]) ** 2 <= 1.0

    _paint(labels, grid, inside, value, c - s, c + s)


# --------------------------------------------------------------------------------------
# Phantoms
# --------------------------------------------------------------------------------------
def multi_tumor(grid: Grid, tumors: Sequence[tuple], skin_thickness: float,
                fat_thickness: float, air_gap: float) -> Phantom:
    """Subcutaneous layout with several axis-aligned ellipsoidal tumours (label "tumor").

    Layers from the top: air (``air_gap`` thick, free surface at ``z_s = z_top - air_gap``),
    skin (``skin_thickness``), fat (``fat_thickness``), muscle to the bottom of the domain.
    ``tumors`` = [(center (m, 3), semi_axes (m, 3)), ...]; each tumour must lie inside the
    body (within the domain and below the skin surface) and may straddle layers; overlapping
    tumours merge. Landmarks: ``skin_surface_z``, ``fat_top_z``, ``muscle_top_z`` (0-d),
    ``tumor_centers``/``tumor_semi_axes`` (n, 3), ``tumor_center`` (first tumour),
    ``tumor_<k>_center``.
    """
    zs = _surface_z(grid, air_gap)
    t_skin = _scalar("geometry.skin_thickness", skin_thickness)
    t_fat = _scalar("geometry.fat_thickness", fat_thickness)
    if len(tumors) == 0:
        raise ScenarioError("geometry.tumors", "an empty list", "at least one (center, semi_axes) pair")
    labels = _layers(grid, [(zs, _LABEL["skin"]), (zs - t_skin, _LABEL["fat"]),
                            (zs - t_skin - t_fat, _LABEL["muscle"])])
    centers, semis = [], []
    for k, tum in enumerate(tumors):
        try:
            c_raw, s_raw = tum
        except (TypeError, ValueError):
            raise ScenarioError(f"geometry.tumors[{k}]", tum, "a (center, semi_axes) pair in m") from None
        c = _triple(f"geometry.tumors[{k}].center", c_raw)
        s = _triple(f"geometry.tumors[{k}].semi_axes", s_raw, positive=True)
        _check_inside_body(f"geometry.tumors[{k}].center", grid, c, s, zs)
        _paint_ellipsoid(labels, grid, c, s, _LABEL["tumor"])
        centers.append(c)
        semis.append(s)
    table = {k: STANDARD_LABELS[k] for k in (0, 1, 2, 3, 4)}
    lm = {
        "skin_surface_z": np.asarray(zs),
        "fat_top_z": np.asarray(zs - t_skin),
        "muscle_top_z": np.asarray(zs - t_skin - t_fat),
        "tumor_centers": np.array(centers),
        "tumor_semi_axes": np.array(semis),
        "tumor_center": centers[0].copy(),
    }
    lm.update({f"tumor_{k}_center": c for k, c in enumerate(centers)})
    return Phantom(grid, labels, table, lm)


def subcutaneous(grid: Grid, tumor_center, tumor_semi_axes, skin_thickness: float,
                 fat_thickness: float, air_gap: float) -> Phantom:
    """Subcutaneous tumour: air / skin / fat / muscle layers and one ellipsoidal tumour.

    See :func:`multi_tumor` for the layout; errors name ``geometry.tumors[0].*``.
    Landmarks: ``tumor_center``, ``tumor_semi_axes`` (3,), ``skin_surface_z``, ``fat_top_z``,
    ``muscle_top_z``.
    """
    ph = multi_tumor(grid, [(tumor_center, tumor_semi_axes)], skin_thickness, fat_thickness, air_gap)
    lm = {k: v for k, v in ph.landmarks.items()
          if k not in ("tumor_centers", "tumor_semi_axes", "tumor_0_center")}
    lm["tumor_semi_axes"] = ph.landmarks["tumor_semi_axes"][0]
    return Phantom(ph.grid, ph.labels, ph.label_table, lm)


def liver(grid: Grid, tumor_center, tumor_radius: float, vessel_point=None, vessel_direction=None,
          vessel_radius: float | None = None, air_gap: float = 0.0) -> Phantom:
    """Liver parenchyma filling the domain, a spherical tumour and one straight large vessel.

    ``air_gap`` > 0 is the optional capsule margin: air above the liver capsule, a free
    surface at ``z = z_top - air_gap`` (exposed / subcapsular case); 0 fills the whole domain.
    The vessel is an infinite cylinder (axis through ``vessel_point`` along
    ``vessel_direction``, radius ``vessel_radius``) clipped to the tissue; it is omitted when
    ``vessel_radius`` is None or 0. Voxel centres with distance to the axis <= radius are
    "vessel" and win over the tumour. Landmarks: ``tumor_center``, ``tumor_radius``,
    ``capsule_surface_z``, and ``vessel_axis_point``, ``vessel_direction`` (unit),
    ``vessel_radius`` when a vessel is present.
    """
    zs = _surface_z(grid, air_gap)
    c = _triple("geometry.tumor_center", tumor_center)
    r = _scalar("geometry.tumor_radius", tumor_radius, strict=True)
    _check_inside_body("geometry.tumor_center", grid, c, np.full(3, r), zs)
    labels = _layers(grid, [(zs, _LABEL["liver"])])
    _paint(labels, grid,
           lambda x, y, z: (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r,
           _LABEL["tumor"], c - r, c + r)
    lm = {"tumor_center": c, "tumor_radius": np.asarray(r), "capsule_surface_z": np.asarray(zs)}
    if vessel_radius is not None and float(vessel_radius) != 0.0:
        rv = _scalar("geometry.vessel_radius", vessel_radius, strict=True)
        p = _triple("geometry.vessel_point", vessel_point)
        if not grid.contains(p) or p[2] >= zs:
            lo, hi = _domain_box(grid)
            raise ScenarioError("geometry.vessel_point", tuple(p),
                                f"a point inside the tissue: x in [{lo[0]:.4g}, {hi[0]:.4g}], "
                                f"y in [{lo[1]:.4g}, {hi[1]:.4g}], z in [{lo[2]:.4g}, {zs:.4g}) m")
        u = _triple("geometry.vessel_direction", vessel_direction, what="(any length)")
        norm = float(np.linalg.norm(u))
        if norm == 0.0:
            raise ScenarioError("geometry.vessel_direction", tuple(u), "a non-zero 3-vector")
        u = u / norm

        def inside(x, y, z):
            rx, ry, rz = x - p[0], y - p[1], z - p[2]
            along = rx * u[0] + ry * u[1] + rz * u[2]
            return rx * rx + ry * ry + rz * rz - along * along <= rv * rv

        _paint(labels, grid, inside, _LABEL["vessel"])
        lm.update(vessel_axis_point=p, vessel_direction=u, vessel_radius=np.asarray(rv))
    table = {k: STANDARD_LABELS[k] for k in (0, 4, 5, 6)}
    return Phantom(grid, labels, table, lm)
