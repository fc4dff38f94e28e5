"""NIfTI label-map import / export.

``load_label_map(path, label_table)`` turns a 3-D integer-valued NIfTI-1/2 image into a
:class:`~tissuefate.geometry.phantoms.Phantom`; ``save_label_map(phantom, path)`` writes one.

Frames
------
* Spacing is taken from the header zooms (``pixdim``), converted to metres using the header's
  spatial unit (mm when the unit is "mm" or unknown; "meter" and "micron" are honoured).
* ``Grid.affine_mm`` is the image affine (voxel index -> world mm; the sform if set, else the
  qform), so results can be laid over the original image.
* Axis-aligned images (affine 3x3 block diagonal with positive entries): ``Grid.origin`` is
  the affine translation in m, so grid-frame coordinates equal world (scanner) coordinates.
* Any other affine (axis flips, permutations, oblique/sheared): the computational frame is the
  voxel-axis frame, ``x = i*dx, y = j*dy, z = k*dz`` with ``Grid.origin = (0, 0, 0)``; the
  world position of a grid-frame point is ``affine_mm @ [x/dx, y/dy, z/dz, 1]`` (mm), see
  :func:`grid_to_world_mm`. Note that then "z" is the image's third voxel axis, not
  necessarily "up out of the body" as in the built-in phantoms.

Float32 header values are read back as the shortest decimal that reproduces them, so a value
written as 0.7 mm comes back as exactly 0.7e-3 m.

Errors are always :class:`~tissuefate.errors.ScenarioError` (``geometry.path`` for unreadable /
malformed / non-3-D / non-integer images, ``geometry.labels`` for values missing from the table).
No equations; reads a file, writes the ``labels`` array.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ScenarioError
from .grid import Grid
from .phantoms import Phantom

__all__ = ["load_label_map", "save_label_map", "grid_to_world_mm"]

_UNIT_TO_M = {"mm": 1e-3, "unknown": 1e-3, "meter": 1.0, "micron": 1e-6}
_EXPECT_FILE = "a readable NIfTI-1/2 label image (.nii or .nii.gz)"


def _clean_f32(a) -> np.ndarray:
    """float32 values -> float64 of their shortest round-tripping decimal (0.7f -> 0.7)."""
    a32 = np.asarray(a, dtype=np.float32)
    return np.array([float(np.format_float_positional(v, unique=True, trim="-"))
                     for v in a32.ravel()], dtype=float).reshape(a32.shape)


def _scale_decimal(v: float, factor: float) -> float:
    """v * factor for a power-of-ten factor without binary noise (0.7 mm -> 0.0007 m, not 0.00069999...)."""
    exp = int(round(np.log10(factor)))
    if factor != 10.0 ** exp:
        return float(v) * factor
    return float(f"{float(v)!r}e{exp}")


def grid_to_world_mm(grid: Grid, points_m) -> np.ndarray:
    """World (image) coordinates in mm of grid-frame points (m), shape (..., 3)."""
    p = np.asarray(points_m, dtype=float)
    ijk = (p - np.asarray(grid.origin)) / np.asarray(grid.spacing)
    a = np.asarray(grid.affine_mm)
    return ijk @ a[:3, :3].T + a[:3, 3]


def _read(path: Path):
    import nibabel as nib

    spath = str(path)
    if not path.exists():
        raise ScenarioError("geometry.path", spath, _EXPECT_FILE, "the file does not exist")
    if path.is_dir():
        raise ScenarioError("geometry.path", spath, _EXPECT_FILE, "this is a directory")
    try:
        img = nib.load(spath)
    except Exception as exc:  # nibabel raises many types for garbage input
        raise ScenarioError("geometry.path", spath, _EXPECT_FILE,
                            f"could not read a NIfTI header ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, nib.Nifti1Pair):  # Nifti1Image, Nifti2Image and pairs
        raise ScenarioError("geometry.path", spath, _EXPECT_FILE,
                            f"the file is a {type(img).__name__}, not NIfTI")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated / corrupt data block or gzip stream
        raise ScenarioError("geometry.path", spath, _EXPECT_FILE,
                            f"the image data could not be read, the file may be truncated "
                            f"({type(exc).__name__}: {exc})") from exc
    return img, data


def load_label_map(path, label_table: dict[int, str]) -> Phantom:
    """Load a 3-D integer label image as a Phantom with the given ``{label: tissue name}`` table.

    A trailing singleton 4th dimension (nx, ny, nz, 1) is accepted. Float-typed data is
    accepted when every value is an integer (labels saved as float by some tools).
    Landmarks: ``centroid_<tissue>`` for every tissue present (grid frame, m) and
    ``tumor_center`` (= ``centroid_tumor``) if a "tumor" label is present.
    """
    path = Path(os.fspath(path))
    spath = str(path)
    table = {int(k): str(v) for k, v in label_table.items()}
    bad_keys = [k for k in table if not 0 <= k <= 255]
    if bad_keys:
        raise ScenarioError("geometry.labels", f"label values {bad_keys} in the label table",
                            "label values in 0..255")
    img, data = _read(path)

    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ScenarioError("geometry.path", f"{spath} ({data.ndim}-D image of shape {tuple(img.shape)})",
                            "a 3-D integer-valued label image")
    if data.size == 0:
        raise ScenarioError("geometry.path", f"{spath} (empty image of shape {data.shape})",
                            "a 3-D integer-valued label image")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.bool_)):
        if not np.issubdtype(data.dtype, np.floating):
            raise ScenarioError("geometry.path", f"{spath} (data type {data.dtype})",
                                "a 3-D integer-valued label image")
        nonint = ~np.isfinite(data) | (data != np.round(data))
        if np.any(nonint):
            examples = np.unique(data[nonint])[:5].tolist()
            raise ScenarioError("geometry.path",
                                f"{spath} (float-valued image: {int(nonint.sum())} non-integer voxels, "
                                f"e.g. {examples})",
                                "a 3-D integer-valued label image",
                                "export the segmentation as an integer label map, not a probability map")
    lo, hi = data.min(), data.max()
    if lo < 0 or hi > 255:
        vals = np.unique(data[(data < 0) | (data > 255)])
        raise ScenarioError("geometry.labels", f"label values {vals[:20].astype(np.int64).tolist()}",
                            f"label values in 0..255 present in the label table {table}")
    labels = data.astype(np.uint8)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    unmapped = [int(v) for v in present if int(v) not in table]
    if unmapped:
        raise ScenarioError("geometry.labels", f"unmapped label values {unmapped} in {spath}",
                            f"every label value present in the label table {table}",
                            "add the missing values to geometry.labels")

    hdr = img.header
    unit = hdr.get_xyzt_units()[0]
    to_m = _UNIT_TO_M.get(unit, 1e-3)
    zooms = _clean_f32(hdr.get_zooms()[:3])
    if np.any(zooms <= 0) or not np.all(np.isfinite(zooms)):
        raise ScenarioError("geometry.path", f"{spath} (voxel size {zooms.tolist()} {unit})",
                            "positive voxel sizes in the header (pixdim)")
    spacing = tuple(_scale_decimal(z, to_m) for z in zooms)
    sform, scode = hdr.get_sform(coded=True)
    affine = _clean_f32(sform) if scode and scode > 0 else np.asarray(img.affine, dtype=float)
    affine_mm = affine.copy()
    affine_mm[:3, :] *= to_m * 1e3  # header unit -> mm (no-op for mm)
    lin = affine_mm[:3, :3]
    axis_aligned = np.allclose(lin, np.diag(np.diag(lin)), rtol=0, atol=1e-6 * np.abs(lin).max()) \
        and np.all(np.diag(lin) > 0)
    origin = tuple(_scale_decimal(t, 1e-3) for t in affine_mm[:3, 3]) if axis_aligned else (0.0, 0.0, 0.0)
    grid = Grid(labels.shape, spacing, origin, affine_mm=affine_mm)

    lm = _centroids(grid, labels, table)
    return Phantom(grid, labels, table, lm)


def _centroids(grid: Grid, labels: np.ndarray, table: dict[int, str]) -> dict[str, np.ndarray]:
    """Centroid (grid frame, m) of every tissue present except air, via bincount."""
    flat = labels.ravel()
    cnt = np.bincount(flat, minlength=256).astype(float)
    sums = []
    for d in range(3):  # weights = coordinate of each voxel along axis d (3 passes, no voxel loop)
        shape = [1, 1, 1]
        shape[d] = -1
        coord = np.broadcast_to(grid.axis(d).reshape(shape), grid.shape).ravel()
        sums.append(np.bincount(flat, weights=coord, minlength=256))
    sums = np.stack(sums, axis=1)
    out: dict[str, np.ndarray] = {}
    for name in sorted(set(table.values()) - {"air"}):
        vals = [k for k, v in table.items() if v == name]
        n = cnt[vals].sum()
        if n > 0:
            out[f"centroid_{name}"] = sums[vals].sum(axis=0) / n
    if "centroid_tumor" in out:
        out["tumor_center"] = out["centroid_tumor"].copy()
    return out


def save_label_map(phantom: Phantom, path) -> Path:
    """Write ``phantom.labels`` (uint8) with ``phantom.grid.affine_mm`` as a NIfTI-1 image (mm).

    The affine is stored in both sform and qform (code 2, aligned); a sheared affine is exact
    only in the sform, which is what :func:`load_label_map` reads. Returns the path.
    """
    import nibabel as nib

    path = Path(os.fspath(path))
    affine = np.asarray(phantom.grid.affine_mm, dtype=float)
    img = nib.Nifti1Image(np.asarray(phantom.labels, dtype=np.uint8), affine)
    img.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=2)
    # zooms from the grid spacing (equal to the affine column norms for a consistent grid)
    img.header.set_zooms(tuple(float(h) * 1e3 for h in phantom.grid.spacing))
    try:
        nib.save(img, str(path))
    except OSError as exc:
        raise ScenarioError("output.path", str(path), "a writable file path",
                            f"{type(exc).__name__}: {exc}") from exc
    return path
