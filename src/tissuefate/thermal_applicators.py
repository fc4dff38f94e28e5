"""Thermal applicators (RF electrodes, cryoprobes, microwave antennas) rasterised on the voxel grid.

Solves no equation: pure geometry. Reads a :class:`~tissuefate.geometry.Grid` (and optionally a tissue
mask); writes nothing but returns boolean voxel masks of ``grid.shape``.

Conventions (as :mod:`tissuefate.applicators`): points are grid-frame metres; ``direction`` is the unit
vector from the device tip back along the shaft (toward the skin entry).

Devices
-------
* :class:`CylinderProbe`: straight needle of diameter D. Active part = points at axial distance
  s = (p - tip).d in [0, active_length] within D/2 of the axis, with a hemispherical (rounded) tip whose
  extreme point is ``tip``. Insulated shaft = s in (active_length, shaft_length], stopped where the axis
  first leaves the tissue mask (air) or the domain.
* :func:`cluster_of_three`: three parallel probes, tips on an equilateral triangle of side ``spacing``
  centred on ``tip_centre`` in the plane normal to ``direction`` (Cool-tip cluster: 5 mm [R]).
* :class:`UmbrellaElectrode`: LeVeen-like array. Each tine is a circular arc in the plane spanned by the
  axis and its azimuth e_n: p(psi) = tip + rho (1 - cos psi) e_n - rho sin psi d, psi in [0, arc_angle];
  it leaves the trocar tip heading distally (-d) and curls back toward the shaft. rho is set so that the
  largest radial reach equals deployed_diameter/2 (arc_angle = pi: tine ends at the trocar-tip level,
  pointing back at the shaft; geometry assumption, not a measured shape).

Signed distance: ``active_signed_distance(grid)`` gives the exact distance of voxel centres to the active
surface (< 0 inside) within ~3 voxels of it (+inf farther); the RF solver uses it to place the metal surface
between voxel centres instead of on the staircase (see :mod:`tissuefate.physics.rf`).

Rasterisation rule (one rule for every device): a voxel belongs to a device part if its centre is inside,
or if at least half of its nsub^3 (default 3^3) sub-sample points are inside, or if the part's axis passes
through it (voxel traversal of the axis segments, so a device thinner than a voxel is still a face-connected
line of voxels). Limits: the mask is a staircase; partial volumes are not returned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from .geometry import Grid

__all__ = ["CylinderProbe", "UmbrellaElectrode", "cluster_of_three", "surface_voxels", "union_signed_distance",
           "perpendicular_basis",
           "COOL_TIP_DIAMETER_M", "COOL_TIP_CLUSTER_SPACING_M", "COOL_TIP_ACTIVE_LENGTHS_M"]

COOL_TIP_DIAMETER_M = 1.473e-3
"""17 G outer diameter, m (ISO 9626 [R]); the Cool-tip needle gauge (17 G [R])."""
COOL_TIP_CLUSTER_SPACING_M = 5.0e-3
"""Tip spacing of the Cool-tip cluster electrode, m ([R], as commonly described; not re-read here)."""
COOL_TIP_ACTIVE_LENGTHS_M = (1.0e-2, 2.0e-2, 3.0e-2)
"""Exposed-tip lengths offered for Cool-tip single electrodes, m ([R], not re-read here)."""

_NSUB = 3  # sub-samples per voxel edge
# The kernels are serial: a device's bounding box is small or mostly rejected by a distance test, and a
# parallel launch per (short) segment cost more than it saved (umbrella arrays have ~1000 segments).


# --------------------------------------------------------------------------------------------- kernels
@njit(cache=True)
def _inside_capsule(px, py, pz, ax, ay, az, ux, uy, uz, length, r2, round_a, round_b):
    """Is p inside the cylinder of radius^2 r2 on segment a -> a + length*u (ends rounded or flat)?"""
    wx, wy, wz = px - ax, py - ay, pz - az
    s = wx * ux + wy * uy + wz * uz
    if s < 0.0:
        if not round_a:
            return False
        return wx * wx + wy * wy + wz * wz <= r2
    if s > length:
        if not round_b:
            return False
        vx, vy, vz = wx - length * ux, wy - length * uy, wz - length * uz
        return vx * vx + vy * vy + vz * vz <= r2
    rx, ry, rz = wx - s * ux, wy - s * uy, wz - s * uz
    return rx * rx + ry * ry + rz * rz <= r2


@njit(cache=True)
def _capsule_frame(A, B, m, reach, origin, spacing, shape):
    """Start point, unit axis and length of capsule m, and the voxel index box within ``reach`` of it."""
    ax, ay, az = A[m, 0], A[m, 1], A[m, 2]
    dx, dy, dz = B[m, 0] - ax, B[m, 1] - ay, B[m, 2] - az
    length = math.sqrt(dx * dx + dy * dy + dz * dz)
    if length > 0.0:
        ux, uy, uz = dx / length, dy / length, dz / length
    else:
        ux, uy, uz = 1.0, 0.0, 0.0
    box = np.empty(6, np.int64)
    for d in range(3):
        lo = min(A[m, d], B[m, d]) - reach - origin[d]
        hi = max(A[m, d], B[m, d]) + reach - origin[d]
        box[2 * d] = max(int(math.floor(lo / spacing[d])), 0)
        box[2 * d + 1] = min(int(math.ceil(hi / spacing[d])) + 1, shape[d])
    return ax, ay, az, ux, uy, uz, length, box


@njit(cache=True)
def _rasterise_segments(out, origin, spacing, A, B, radius, round_a, round_b, nsub):
    """Set out[i,j,k] = True for voxels of the union of capsules A[m] -> B[m] (see module docstring)."""
    nx, ny, nz = out.shape
    hx, hy, hz = spacing[0], spacing[1], spacing[2]
    half_diag = 0.5 * math.sqrt(hx * hx + hy * hy + hz * hz)
    r2 = radius * radius
    ntot = nsub * nsub * nsub
    for m in range(A.shape[0]):
        # voxel index box of the capsule, padded by one voxel
        reach = radius + half_diag
        ax, ay, az, ux, uy, uz, length, box = _capsule_frame(A, B, m, reach, origin, spacing, out.shape)
        i0, i1, j0, j1, k0, k1 = box[0], box[1], box[2], box[3], box[4], box[5]
        for i in range(i0, i1):
            cx = origin[0] + i * hx
            for j in range(j0, j1):
                cy = origin[1] + j * hy
                for k in range(k0, k1):
                    if out[i, j, k]:
                        continue
                    cz = origin[2] + k * hz
                    # quick reject: centre farther than radius + half diagonal from the segment
                    wx, wy, wz = cx - ax, cy - ay, cz - az
                    s = min(max(wx * ux + wy * uy + wz * uz, 0.0), length)
                    qx, qy, qz = wx - s * ux, wy - s * uy, wz - s * uz
                    if qx * qx + qy * qy + qz * qz > reach * reach:
                        continue
                    if _inside_capsule(cx, cy, cz, ax, ay, az, ux, uy, uz, length, r2, round_a[m], round_b[m]):
                        out[i, j, k] = True
                        continue
                    cnt = 0
                    for a in range(nsub):
                        px = cx + ((a + 0.5) / nsub - 0.5) * hx
                        for b in range(nsub):
                            py = cy + ((b + 0.5) / nsub - 0.5) * hy
                            for c in range(nsub):
                                pz = cz + ((c + 0.5) / nsub - 0.5) * hz
                                if _inside_capsule(px, py, pz, ax, ay, az, ux, uy, uz, length, r2,
                                                   round_a[m], round_b[m]):
                                    cnt += 1
                    if 2 * cnt >= ntot:
                        out[i, j, k] = True
        # axis voxels (keeps devices thinner than a voxel face-connected)
        _mark_traversed(out, origin, spacing, ax, ay, az, B[m, 0], B[m, 1], B[m, 2])


@njit(cache=True)
def _mark_traversed(out, origin, spacing, x0, y0, z0, x1, y1, z1):
    """Mark the voxels the segment p0 -> p1 passes through (Amanatides-Woo traversal: face-connected)."""
    nx, ny, nz = out.shape
    p0 = np.empty(3)
    d = np.empty(3)
    p0[0] = (x0 - origin[0]) / spacing[0] + 0.5   # voxel i covers [i, i + 1) in these units
    p0[1] = (y0 - origin[1]) / spacing[1] + 0.5
    p0[2] = (z0 - origin[2]) / spacing[2] + 0.5
    d[0] = (x1 - origin[0]) / spacing[0] + 0.5 - p0[0]
    d[1] = (y1 - origin[1]) / spacing[1] + 0.5 - p0[1]
    d[2] = (z1 - origin[2]) / spacing[2] + 0.5 - p0[2]
    idx = np.empty(3, dtype=np.int64)
    step = np.empty(3, dtype=np.int64)
    t_max = np.empty(3)
    t_delta = np.empty(3)
    for a in range(3):
        idx[a] = int(math.floor(p0[a]))
        if d[a] > 0.0:
            step[a] = 1
            t_delta[a] = 1.0 / d[a]
            t_max[a] = (idx[a] + 1.0 - p0[a]) / d[a]
        elif d[a] < 0.0:
            step[a] = -1
            t_delta[a] = -1.0 / d[a]
            t_max[a] = (p0[a] - idx[a]) / -d[a]
        else:
            step[a] = 0
            t_delta[a] = np.inf
            t_max[a] = np.inf
    for _ in range(3 * (nx + ny + nz) + 3):       # a segment crosses at most this many voxels
        if 0 <= idx[0] < nx and 0 <= idx[1] < ny and 0 <= idx[2] < nz:
            out[idx[0], idx[1], idx[2]] = True
        a = 0
        if t_max[1] < t_max[a]:
            a = 1
        if t_max[2] < t_max[a]:
            a = 2
        if t_max[a] >= 1.0:                       # half-open: an end on a voxel face does not enter the next
            break
        idx[a] += step[a]
        t_max[a] += t_delta[a]


def _rasterise(grid: Grid, A, B, radius: float, round_a, round_b, out=None) -> np.ndarray:
    A = np.ascontiguousarray(np.atleast_2d(np.asarray(A, dtype=np.float64)))
    B = np.ascontiguousarray(np.atleast_2d(np.asarray(B, dtype=np.float64)))
    ra = np.ascontiguousarray(np.broadcast_to(np.asarray(round_a, dtype=np.bool_), (A.shape[0],)))
    rb = np.ascontiguousarray(np.broadcast_to(np.asarray(round_b, dtype=np.bool_), (A.shape[0],)))
    if out is None:
        out = np.zeros(grid.shape, dtype=np.bool_)
    _rasterise_segments(out, np.asarray(grid.origin, dtype=np.float64), np.asarray(grid.spacing, dtype=np.float64),
                        A, B, float(radius), ra, rb, _NSUB)
    return out


@njit(cache=True)
def _segment_sdf(px, py, pz, ax, ay, az, ux, uy, uz, length, r, round_a, round_b):
    """Signed distance (m, < 0 inside) to the cylinder of radius r on a -> a + length*u, ends rounded or flat."""
    wx, wy, wz = px - ax, py - ay, pz - az
    s = wx * ux + wy * uy + wz * uz
    rx, ry, rz = wx - s * ux, wy - s * uy, wz - s * uz
    rho = math.sqrt(rx * rx + ry * ry + rz * rz)
    if s < 0.0:
        if round_a:
            return math.sqrt(wx * wx + wy * wy + wz * wz) - r
        return -s if rho <= r else math.sqrt((rho - r) ** 2 + s * s)
    if s > length:
        e = s - length
        if round_b:
            return math.sqrt(rho * rho + e * e) - r
        return e if rho <= r else math.sqrt((rho - r) ** 2 + e * e)
    if rho >= r:
        return rho - r
    inside = r - rho
    if not round_a:
        inside = min(inside, s)
    if not round_b:
        inside = min(inside, length - s)
    return -inside


@njit(cache=True)
def _sdf_segments(out, origin, spacing, A, B, radius, round_a, round_b, band):
    """out = min(out, signed distance to each capsule A[m] -> B[m]) for voxel centres within ``band`` of it."""
    nx, ny, nz = out.shape
    hx, hy, hz = spacing[0], spacing[1], spacing[2]
    for m in range(A.shape[0]):
        ax, ay, az, ux, uy, uz, length, box = _capsule_frame(A, B, m, radius + band, origin, spacing, out.shape)
        i0, i1, j0, j1, k0, k1 = box[0], box[1], box[2], box[3], box[4], box[5]
        for i in range(i0, i1):
            cx = origin[0] + i * hx
            for j in range(j0, j1):
                cy = origin[1] + j * hy
                for k in range(k0, k1):
                    d = _segment_sdf(cx, cy, origin[2] + k * hz, ax, ay, az, ux, uy, uz, length, radius,
                                     round_a[m], round_b[m])
                    if d < out[i, j, k]:
                        out[i, j, k] = d


def _signed_distance(grid: Grid, A, B, radius: float, round_a, round_b, out=None) -> np.ndarray:
    A = np.ascontiguousarray(np.atleast_2d(np.asarray(A, dtype=np.float64)))
    B = np.ascontiguousarray(np.atleast_2d(np.asarray(B, dtype=np.float64)))
    ra = np.ascontiguousarray(np.broadcast_to(np.asarray(round_a, dtype=np.bool_), (A.shape[0],)))
    rb = np.ascontiguousarray(np.broadcast_to(np.asarray(round_b, dtype=np.bool_), (A.shape[0],)))
    if out is None:
        out = np.full(grid.shape, np.inf)
    band = 3.0 * max(grid.spacing)
    _sdf_segments(out, np.asarray(grid.origin, dtype=np.float64), np.asarray(grid.spacing, dtype=np.float64),
                  A, B, float(radius), ra, rb, band)
    return out


# --------------------------------------------------------------------------------------------- helpers
def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n == 0.0:
        raise ValueError(f"direction must be a non-zero vector, got {v}")
    return v / n


def perpendicular_basis(direction) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors e1, e2 with (e1, e2, d) right-handed orthonormal; e1 is deterministic in d."""
    d = _unit(direction)
    ref = np.eye(3)[int(np.argmin(np.abs(d)))]   # the axis least aligned with d
    e1 = np.cross(d, ref)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    return e1, e2


def _axis_extent_in_tissue(grid: Grid, start, direction, s_from: float, s_to: float,
                           tissue_mask: np.ndarray | None) -> float:
    """Largest s in [s_from, s_to] such that the axis stays in the domain (and in tissue) from s_from on."""
    lo = np.asarray(grid.origin) - 0.5 * np.asarray(grid.spacing)
    hi = lo + np.asarray(grid.extent)
    d = np.asarray(direction)
    # exit from the domain box (slab method), s measured from `start`
    s_exit = np.inf
    for a in range(3):
        if d[a] > 0:
            s_exit = min(s_exit, (hi[a] - start[a]) / d[a])
        elif d[a] < 0:
            s_exit = min(s_exit, (lo[a] - start[a]) / d[a])
    s_end = min(s_to, s_exit)
    if tissue_mask is None or s_end <= s_from:
        return max(s_end, s_from)
    step = 0.25 * min(grid.spacing)
    ns = int(np.ceil((s_end - s_from) / step)) + 1
    s = np.linspace(s_from, s_end, ns)
    p = start[None, :] + s[:, None] * d[None, :]
    idx = np.rint((p - np.asarray(grid.origin)) / np.asarray(grid.spacing)).astype(np.int64)
    for a in range(3):
        np.clip(idx[:, a], 0, grid.shape[a] - 1, out=idx[:, a])
    ok = tissue_mask[idx[:, 0], idx[:, 1], idx[:, 2]]
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return s_end
    return s[bad[0] - 1] if bad[0] > 0 else s_from


def union_signed_distance(distances) -> np.ndarray:
    """Signed distance of a union of devices (minimum of theirs; exact outside, approximate inside)."""
    return np.minimum.reduce([np.asarray(d) for d in distances])


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels NOT in ``mask`` that share a face with it (where a thermocouple on the surface reads)."""
    m = np.asarray(mask, dtype=bool)
    grown = m.copy()
    for a in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[a] = slice(0, -1)
        hi[a] = slice(1, None)
        grown[tuple(lo)] |= m[tuple(hi)]
        grown[tuple(hi)] |= m[tuple(lo)]
    return grown & ~m


# --------------------------------------------------------------------------------------------- devices
@dataclass(frozen=True)
class CylinderProbe:
    """Straight needle applicator (cooled RF needle, cryoprobe, MW antenna).

    tip:           extreme point of the rounded tip, m (grid frame)
    direction:     unit vector from the tip back along the shaft
    diameter:      outer diameter, m
    active_length: exposed (electrically / thermally active) length from the tip, m
    shaft_length:  inserted length measured from the tip (>= active_length), m; inf = to the domain edge/air
    """

    tip: np.ndarray
    direction: np.ndarray
    diameter: float
    active_length: float
    shaft_length: float = math.inf

    def __post_init__(self):
        object.__setattr__(self, "tip", np.asarray(self.tip, dtype=np.float64).reshape(3))
        object.__setattr__(self, "direction", _unit(self.direction).reshape(3))
        if not (self.diameter > 0 and self.active_length > 0):
            raise ValueError("diameter and active_length must be > 0")
        if self.shaft_length < self.active_length:
            raise ValueError("shaft_length is measured from the tip and must be >= active_length")

    @property
    def radius(self) -> float:
        return 0.5 * self.diameter

    def point_at(self, s: float) -> np.ndarray:
        """Axis point at distance s (m) from the tip toward the shaft."""
        return self.tip + s * self.direction

    def active_mask(self, grid: Grid) -> np.ndarray:
        """Voxels of the active part: rounded tip + cylinder up to ``active_length``."""
        r = self.radius
        a = self.point_at(min(r, self.active_length))   # centre of the hemispherical tip
        b = self.point_at(self.active_length)
        return _rasterise(grid, a, b, r, True, False)

    def active_signed_distance(self, grid: Grid) -> np.ndarray:
        """Signed distance (m, < 0 inside) of voxel centres to the active part; +inf beyond ~3 voxels."""
        r = self.radius
        return _signed_distance(grid, self.point_at(min(r, self.active_length)), self.point_at(self.active_length),
                                r, True, False)

    def shaft_mask(self, grid: Grid, tissue_mask: np.ndarray | None = None) -> np.ndarray:
        """Voxels of the insulated shaft (not in the active mask), up to shaft_length, air or the domain edge."""
        s_end = _axis_extent_in_tissue(grid, self.tip, self.direction, self.active_length, self.shaft_length,
                                       tissue_mask)
        out = np.zeros(grid.shape, dtype=np.bool_)
        if s_end > self.active_length:
            _rasterise(grid, self.point_at(self.active_length), self.point_at(s_end), self.radius, False, False, out)
        return out & ~self.active_mask(grid)

    def tip_index(self, grid: Grid) -> tuple[int, int, int]:
        """Voxel at the centre of the rounded tip (where a tip thermocouple sits), clipped to the grid."""
        p = self.point_at(min(self.radius, self.active_length))
        return tuple(int(np.clip(i, 0, n - 1)) for i, n in zip(grid.index_of(p), grid.shape))


def cluster_of_three(tip_centre, direction, spacing: float = COOL_TIP_CLUSTER_SPACING_M,
                     diameter: float = COOL_TIP_DIAMETER_M, active_length: float = 2.5e-2,
                     shaft_length: float = math.inf, rotation_rad: float = 0.0) -> list[CylinderProbe]:
    """Three parallel probes with tips on an equilateral triangle of side ``spacing`` around the centre axis.

    ``rotation_rad`` turns the triangle about the axis (0: first tip along the first perpendicular of
    :func:`perpendicular_basis`). Default active length 2.5 cm is the Cool-tip cluster's exposed tip [R].
    """
    c = np.asarray(tip_centre, dtype=np.float64)
    d = _unit(direction)
    e1, e2 = perpendicular_basis(d)
    rc = spacing / math.sqrt(3.0)      # circumradius of the triangle
    probes = []
    for n in range(3):
        phi = rotation_rad + 2.0 * math.pi * n / 3.0
        tip = c + rc * (math.cos(phi) * e1 + math.sin(phi) * e2)
        probes.append(CylinderProbe(tip, d, diameter, active_length, shaft_length))
    return probes


@dataclass(frozen=True)
class UmbrellaElectrode:
    """Multi-tine (LeVeen-like) array deployed from a trocar.

    tip:               trocar tip where the tines exit, m (grid frame)
    direction:         unit vector from the tip back along the trocar
    n_tines:           number of tines (LeVeen: 10-12 [R])
    deployed_diameter: diameter of the deployed umbrella, m (LeVeen: 2-5 cm [R])
    tine_diameter:     tine wire diameter, m
    trocar_diameter:   trocar (insulated cannula) diameter, m
    arc_angle_rad:     arc swept by each tine (pi: ends point back at the shaft; geometry assumption)
    rotation_rad:      azimuth of the first tine about the axis
    shaft_length:      inserted trocar length from the tip, m (inf = to the domain edge/air)
    """

    tip: np.ndarray
    direction: np.ndarray
    n_tines: int
    deployed_diameter: float
    tine_diameter: float
    trocar_diameter: float
    arc_angle_rad: float = math.pi
    rotation_rad: float = 0.0
    shaft_length: float = math.inf

    def __post_init__(self):
        object.__setattr__(self, "tip", np.asarray(self.tip, dtype=np.float64).reshape(3))
        object.__setattr__(self, "direction", _unit(self.direction).reshape(3))
        if self.n_tines < 1 or not (self.deployed_diameter > 0 and self.tine_diameter > 0
                                    and self.trocar_diameter > 0):
            raise ValueError("n_tines >= 1 and positive diameters required")
        if not (0.0 < self.arc_angle_rad <= 1.5 * math.pi):
            raise ValueError("arc_angle_rad must be in (0, 1.5 pi]")

    @property
    def arc_radius(self) -> float:
        """rho: radius of each tine's circle so that the radial reach is deployed_diameter / 2."""
        max_reach = 2.0 if self.arc_angle_rad >= math.pi else 1.0 - math.cos(self.arc_angle_rad)
        return 0.5 * self.deployed_diameter / max_reach

    def tine_paths(self, step: float) -> list[np.ndarray]:
        """Sampled centre lines of the tines (each (m, 3), m), points at most ``step`` apart."""
        d = self.direction
        e1, e2 = perpendicular_basis(d)
        rho = self.arc_radius
        npts = max(int(math.ceil(rho * self.arc_angle_rad / step)), 2) + 1
        psi = np.linspace(0.0, self.arc_angle_rad, npts)
        paths = []
        for n in range(self.n_tines):
            th = self.rotation_rad + 2.0 * math.pi * n / self.n_tines
            e = math.cos(th) * e1 + math.sin(th) * e2
            p = (self.tip[None, :] + (rho * (1.0 - np.cos(psi)))[:, None] * e[None, :]
                 - (rho * np.sin(psi))[:, None] * d[None, :])
            paths.append(p)
        return paths

    def active_mask(self, grid: Grid) -> np.ndarray:
        """Voxels of the tines (each tine a chain of capsules of the tine radius along its arc)."""
        paths = self.tine_paths(0.5 * min(grid.spacing))
        A = np.concatenate([p[:-1] for p in paths])
        B = np.concatenate([p[1:] for p in paths])
        return _rasterise(grid, A, B, 0.5 * self.tine_diameter, True, True)

    def active_signed_distance(self, grid: Grid) -> np.ndarray:
        """Signed distance (m, < 0 inside) of voxel centres to the tines; +inf beyond ~3 voxels."""
        paths = self.tine_paths(0.5 * min(grid.spacing))
        A = np.concatenate([p[:-1] for p in paths])
        B = np.concatenate([p[1:] for p in paths])
        return _signed_distance(grid, A, B, 0.5 * self.tine_diameter, True, True)

    def shaft_mask(self, grid: Grid, tissue_mask: np.ndarray | None = None) -> np.ndarray:
        """Voxels of the insulated trocar from the tip back (not in the active mask)."""
        s_end = _axis_extent_in_tissue(grid, self.tip, self.direction, 0.0, self.shaft_length, tissue_mask)
        out = np.zeros(grid.shape, dtype=np.bool_)
        if s_end > 0.0:
            _rasterise(grid, self.tip, self.tip + s_end * self.direction, 0.5 * self.trocar_diameter,
                       False, False, out)
        return out & ~self.active_mask(grid)
