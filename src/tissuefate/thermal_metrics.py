"""Ablation-zone metrics: one small pure function per metric, computed from masks, fields and the grid spacing.

Reads boolean masks (``zone``: ablated voxels, ``tumor``, ``tissue``) and temperature fields in kelvin, all of shape
(nx, ny, nz) on a uniform grid with voxel edges ``spacing`` (dx, dy, dz) in m and ``origin`` (centre of voxel 0) in m.
Writes nothing. Volumes are reported in mL (1e-6 m^3), lengths in mm, temperatures in degC: the edge of the code.

Definitions (the same for RFA, MWA and cryo, so runs compare key by key):

* volume:        V = N_voxels * dV.
* zone axes (clinical convention, long axis along the applicator, works for oblique probes): only the connected
  component of the zone (26-connectivity) that contains the probe tip, or the one nearest to it, is measured.
  With u the unit probe direction and x_v the voxel centres,
      long  = max_v(u.x_v) - min_v(u.x_v) + w(u),
      short = max over slabs S perpendicular to u, and over directions e(theta) in the plane perpendicular to u
              (theta every 5 deg in [0, 180)), of  max_{v in S}(e.x_v) - min_{v in S}(e.x_v) + w(e),
  where w(n) = |(n_x h_x, n_y h_y, n_z h_z)| is one voxel's extent along n (= h on an isotropic grid; the box's
  full projected width sum_d |n_d| h_d would add up to sqrt(3) h on diagonals). The slabs are max(h_d) thick, so
  each holds about one voxel layer even for oblique probes. Exact for voxel-aligned boxes (a rod of N voxels is
  N h long, one voxel wide); for curved zones the outermost centres lie almost on the surface, so "+ one voxel"
  over-estimates by up to ~1 voxel (measured on ellipsoids: long +0.0..+0.8 h, short +0.7..+0.94 h). The 5 deg
  sampling under-estimates a diameter by at most 1 - cos(2.5 deg) = 0.1 %.
* tumour coverage: N(tumour & zone) / N(tumour).
* minimal ablative margin (signed, mm): the smallest signed distance from a tumour voxel centre to the zone surface,
  the zone surface taken as the voxel faces around its voxel centres (half a voxel beyond its outermost centres):
      t in zone:     m(t) =   d(t, nearest voxel centre outside the zone) - h(n)/2,
      t not in zone: m(t) = -(d(t, nearest zone voxel centre) - h(n)/2),
  margin = min_t m(t) (reached on the tumour surface). n is the unit vector from t to that nearest voxel centre and
  h(n) = |(n_x h_x, n_y h_y, n_z h_z)| (= h on an isotropic grid). Positive: the tumour is covered with that much
  tissue to spare; negative: part of the tumour is uncovered, and -margin is the depth of the uncovered tumour
  (its voxel farthest from the zone). A tumour voxel just inside the zone surface gives +h/2, one just outside -h/2.
  The tumour is represented by its voxel centres (no half-voxel on its side): for smooth shapes the minimum over
  many surface voxels selects centres that lie almost on the true tumour surface, while a half-voxel face
  correction on both sides was measured to under-estimate concentric-sphere margins by ~0.9 voxel. Distances come
  from scipy.ndimage.distance_transform_edt with sampling=spacing (exact Euclidean distances between centres).
* normal tissue ablated: volume of zone & tissue & ~tumour.
* isotherm volume: volume of voxels at or below a level (ice-ball volumes at 0, -20, -40 degC), or at or above it.
* peak temperature: max of a (maximum-over-time) temperature field over a mask, in degC.

Limits: voxel-resolution metrics (errors of order one voxel for lengths and margins, of order h/R for volumes);
the zone axes ignore components of the zone other than the one at the tip; an empty tumour or zone gives NaN where
the quantity is undefined.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

ML = 1e-6            # m^3 per mL
MM = 1e-3            # m per mm
KELVIN_AT_0C = 273.15
SHORT_AXIS_ANGLE_STEP_DEG = 5.0   # numerical sampling of perpendicular directions (choice, see docstring)
_CONNECTIVITY_26 = ndimage.generate_binary_structure(3, 3)


# ---------------------------------------------------------------------------------------------
# volumes and fractions
# ---------------------------------------------------------------------------------------------
def volume_ml(mask: np.ndarray, dV: float) -> float:
    return float(np.count_nonzero(mask)) * dV / ML


def ablation_zone_ml(zone: np.ndarray, dV: float) -> float:
    return volume_ml(zone, dV)


def tumor_coverage(zone: np.ndarray, tumor: np.ndarray) -> float:
    """Fraction of tumour voxels inside the zone (NaN without tumour)."""
    n = np.count_nonzero(tumor)
    return float(np.count_nonzero(tumor & zone)) / n if n else float("nan")


def normal_tissue_ablated_ml(zone: np.ndarray, tissue: np.ndarray, tumor: np.ndarray, dV: float) -> float:
    return volume_ml(zone & tissue & ~tumor, dV)


def isotherm_volume_ml(T_field_k: np.ndarray, level_k: float, dV: float, within: np.ndarray | None = None,
                       below: bool = True) -> float:
    """Volume enclosed by the isotherm ``level_k``: T <= level (ice ball, default) or T >= level (``below=False``)."""
    m = T_field_k <= level_k if below else T_field_k >= level_k
    if within is not None:
        m &= within
    return volume_ml(m, dV)


def peak_temperature_c(T_max_k: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Highest temperature over the mask, in degC (NaN for an empty mask)."""
    vals = T_max_k[mask] if mask is not None else T_max_k
    return float(vals.max() - KELVIN_AT_0C) if vals.size else float("nan")


# ---------------------------------------------------------------------------------------------
# zone axes
# ---------------------------------------------------------------------------------------------
def voxel_extent_along(direction, spacing) -> float:
    """One voxel's extent along a unit direction n: |(n_x h_x, n_y h_y, n_z h_z)| in m (= h on an isotropic grid)."""
    return float(np.linalg.norm(np.asarray(direction, float) * np.asarray(spacing, float)))


def perpendicular_basis(direction) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing ``direction`` to a right-handed orthonormal frame."""
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    helper = np.eye(3)[int(np.argmin(np.abs(u)))]     # the grid axis least aligned with u: well conditioned
    e1 = np.cross(u, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(u, e1)


def voxel_centres_m(mask: np.ndarray, spacing, origin) -> np.ndarray:
    """(N, 3) world positions (m) of the voxel centres in a mask."""
    return np.asarray(origin, float) + np.argwhere(mask) * np.asarray(spacing, float)


def component_at_point(mask: np.ndarray, spacing, origin, point_m) -> np.ndarray:
    """The 26-connected component of ``mask`` containing ``point_m``, or the one whose voxel centre is nearest."""
    lab, n = ndimage.label(mask, structure=_CONNECTIVITY_26)
    if n <= 1:
        return lab > 0
    idx = np.rint((np.asarray(point_m, float) - np.asarray(origin, float)) / np.asarray(spacing, float)).astype(int)
    inside = all(0 <= idx[d] < mask.shape[d] for d in range(3))
    if inside and lab[tuple(idx)] > 0:
        return lab == lab[tuple(idx)]
    pts = np.argwhere(mask)
    d2 = (((pts * np.asarray(spacing, float) + np.asarray(origin, float)) - np.asarray(point_m, float)) ** 2).sum(1)
    return lab == lab[tuple(pts[int(np.argmin(d2))])]


def long_axis_m(centres: np.ndarray, direction, spacing) -> float:
    s = centres @ direction
    return float(s.max() - s.min()) + voxel_extent_along(direction, spacing)


def short_axis_m(centres: np.ndarray, direction, spacing, angle_step_deg: float = SHORT_AXIS_ANGLE_STEP_DEG) -> float:
    """Largest cross-section diameter perpendicular to ``direction`` (see module docstring), in m."""
    e1, e2 = perpendicular_basis(direction)
    theta = np.deg2rad(np.arange(0.0, 180.0, angle_step_deg))
    dirs = np.cos(theta)[:, None] * e1 + np.sin(theta)[:, None] * e2          # (n_dir, 3)
    widths = np.linalg.norm(dirs * np.asarray(spacing, float), axis=1)          # voxel extent along each direction
    slab = np.floor((centres @ direction) / max(spacing)).astype(np.int64)    # slab index along the probe
    order = np.argsort(slab, kind="stable")
    proj = (centres[order] @ dirs.T)                                           # (N, n_dir)
    starts = np.flatnonzero(np.r_[True, np.diff(slab[order]) != 0])
    extent = np.maximum.reduceat(proj, starts, axis=0) - np.minimum.reduceat(proj, starts, axis=0)
    return float((extent + widths).max())


def zone_axes_mm(zone: np.ndarray, spacing, origin, probe_tip_m, probe_direction) -> tuple[float, float]:
    """(long, short) axes in mm of the zone component at the probe tip; long is along the probe."""
    if not zone.any():
        return 0.0, 0.0
    u = np.asarray(probe_direction, float)
    u = u / np.linalg.norm(u)
    comp = component_at_point(zone, spacing, origin, probe_tip_m)
    centres = voxel_centres_m(comp, spacing, origin)
    return long_axis_m(centres, u, spacing) / MM, short_axis_m(centres, u, spacing) / MM


# ---------------------------------------------------------------------------------------------
# margin
# ---------------------------------------------------------------------------------------------
def _crop_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of a mask padded by one voxel (clipped to the grid).

    Exact for the margin: outside the box every voxel is outside the zone, and clamping a far non-zone voxel onto the
    box's padding layer only brings it closer to any voxel inside the box."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - 1, 0)
    hi = np.minimum(idx.max(0) + 2, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _nearest_offsets_m(feature_free: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EDT of a mask to its nearest False voxel: distance (m), offset vector (m, (3, ...)), that voxel's index."""
    dist, ind = ndimage.distance_transform_edt(feature_free, sampling=spacing, return_indices=True)
    offset = (ind - np.indices(feature_free.shape)) * np.asarray(spacing, float)[:, None, None, None]
    return dist, offset, ind


def _half_voxel_m(offset: np.ndarray, dist: np.ndarray, spacing) -> np.ndarray:
    """Half a voxel's extent along the unit vector offset/dist: the gap between a voxel centre and its face."""
    n = offset / np.maximum(dist, 1e-300)
    return 0.5 * np.sqrt(((n * np.asarray(spacing, float)[:, None]) ** 2).sum(0))


def _margin_terms(zone: np.ndarray, tumor: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Signed margin m(t) (m) of each tumour voxel, in argwhere(tumor) order, and the grid index (N, 3) of the voxel
    centre across the zone surface that it was measured to."""
    box = _crop_box(zone | tumor)
    z, t = zone[box], tumor[box]
    d_in, off_in, ind_in = _nearest_offsets_m(z, spacing)      # inside the zone: to the nearest non-zone centre
    d_out, off_out, ind_out = _nearest_offsets_m(~z, spacing)  # outside the zone: to the nearest zone centre
    cov, unc = t & z, t & ~z
    m = np.empty(t.shape)
    m[cov] = d_in[cov] - _half_voxel_m(off_in[:, cov], d_in[cov], spacing)
    m[unc] = -(d_out[unc] - _half_voxel_m(off_out[:, unc], d_out[unc], spacing))
    nearest = np.where(z, ind_in, ind_out)[:, t].T + np.array([b.start for b in box])
    return m[t], nearest


def _margin_defined(zone: np.ndarray, tumor: np.ndarray) -> bool:
    # needs a tumour, a zone, and a voxel outside the zone near the tumour (else the margin exceeds the domain)
    return bool(tumor.any() and zone.any() and not zone[_crop_box(zone | tumor)].all())


def margin_field_m(zone: np.ndarray, tumor: np.ndarray, spacing) -> np.ndarray:
    """Signed margin m(t) (m) of each tumour voxel (module docstring), as a flat array in argwhere(tumor) order."""
    return _margin_terms(zone, tumor, spacing)[0]


def min_margin_mm(zone: np.ndarray, tumor: np.ndarray, spacing) -> float:
    """Minimal signed ablative margin in mm (module docstring); NaN without tumour, zone, or voxel outside the zone."""
    if not _margin_defined(zone, tumor):
        return float("nan")
    return float(margin_field_m(zone, tumor, spacing).min() / MM)


def min_margin_pair_index(zone: np.ndarray, tumor: np.ndarray, spacing):
    """(tumour voxel index where the margin is smallest, index of the voxel across the zone surface it was measured
    to), for figures; None when the margin is undefined."""
    if not _margin_defined(zone, tumor):
        return None
    m, nearest = _margin_terms(zone, tumor, spacing)
    k = int(np.argmin(m))
    return tuple(int(v) for v in np.argwhere(tumor)[k]), tuple(int(v) for v in nearest[k])


def min_margin_location_index(zone: np.ndarray, tumor: np.ndarray, spacing) -> tuple[int, int, int] | None:
    """Grid index of the tumour voxel where the margin is smallest; None when undefined."""
    pair = min_margin_pair_index(zone, tumor, spacing)
    return pair[0] if pair else None


# ---------------------------------------------------------------------------------------------
# all zone metrics at once
# ---------------------------------------------------------------------------------------------
def zone_metrics(zone: np.ndarray, tumor: np.ndarray, tissue: np.ndarray, spacing, origin, probe_tip_m,
                 probe_direction) -> dict:
    dV = float(np.prod(spacing))
    long_mm, short_mm = zone_axes_mm(zone, spacing, origin, probe_tip_m, probe_direction)
    return {
        "ablation_zone_ml": ablation_zone_ml(zone, dV),
        "zone_short_axis_mm": short_mm,
        "zone_long_axis_mm": long_mm,
        "tumor_coverage": tumor_coverage(zone, tumor),
        "min_margin_mm": min_margin_mm(zone, tumor, spacing),
        "normal_tissue_ablated_ml": normal_tissue_ablated_ml(zone, tissue, tumor, dV),
    }
