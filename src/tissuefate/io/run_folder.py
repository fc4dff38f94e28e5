"""Write a run folder atomically.

Layout::

    <run>/scenario.yaml            the scenario as written (after --set overrides)
    <run>/scenario_resolved.json   validated scenario in SI units
    <run>/provenance.json          version, git commit, seed, wall time, platform
    <run>/metrics.json             metrics, ledgers, hypotheses, timeseries
    <run>/fields.nc                snapshots (time, x, y, z), NetCDF4 with units
    <run>/course.nc                healing fields by course day (day, x, y, z)
    <run>/fields.vti               last snapshot as a VTK image (ParaView)
    <run>/labels_affine.json       voxel -> world-mm affine, to lay the result over the source image
    <run>/figures/*.png

Everything is written into a hidden temporary folder next to the target and renamed when complete,
so an interrupted or failed run never leaves a half-written result folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml

from ..result import Result


def _json_default(o):
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n")


def _sanitize(obj):
    """Replace NaN/inf by None so metrics.json stays strict JSON."""
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def write_vti(path_noext: Path, ds) -> None:
    from pyevtk.hl import imageToVTK
    last = ds.isel(time=-1)
    dx, dy, dz = (float(ds.attrs["spacing_mm"][i]) for i in range(3))
    ox, oy, oz = (float(ds.attrs["origin_mm"][i]) - 0.5 * h for i, h in enumerate((dx, dy, dz)))
    cell = {}
    for name, da in last.data_vars.items():
        if set(da.dims) == {"x", "y", "z"}:
            cell[name] = np.ascontiguousarray(da.transpose("x", "y", "z").values.astype(np.float64))
    imageToVTK(str(path_noext), origin=(ox, oy, oz), spacing=(dx, dy, dz), cellData=cell)


def write_run(result: Result, out_dir: Path, figures: bool = True, vtk: bool = True) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        (tmp / "scenario.yaml").write_text(yaml.safe_dump(result.scenario_raw, sort_keys=False))
        write_json(tmp / "scenario_resolved.json", _sanitize(result.scenario_resolved))
        write_json(tmp / "provenance.json", result.provenance)
        write_json(tmp / "metrics.json", _sanitize(result.metrics))
        ds = result.fields
        write_json(tmp / "labels_affine.json", {"affine_mm": ds.attrs.get("affine_mm"),
                                                "note": "voxel index (i, j, k) -> world mm of the source image"})
        enc = {v: {"compression": "gzip", "compression_opts": 4} for v in ds.data_vars}
        ds.to_netcdf(tmp / "fields.nc", engine="h5netcdf", encoding=enc)
        if result.course is not None:
            cenc = {v: {"compression": "gzip", "compression_opts": 4} for v in result.course.data_vars}
            result.course.to_netcdf(tmp / "course.nc", engine="h5netcdf", encoding=cenc)
        if vtk:
            write_vti(tmp / "fields", ds)
        if figures:
            from ..report.figures import make_figures
            (tmp / "figures").mkdir()
            make_figures(result, tmp / "figures")
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.path = out_dir
    return out_dir
