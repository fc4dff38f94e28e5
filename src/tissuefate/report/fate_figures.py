"""Figures of the post-kill follow-up (Phases II-III), from the run's fields and metrics only.

* ``fate_deformation.png``: vertical slice through the tumour at 1 h, 24 h and the end: tissue state with the
  deformed tumour outline, and the local volume change with displacement arrows;
* ``fate_surface.png``: skin-surface displacement over the tumour at every output time (negative = dent);
* ``fate_volume.png``: tumour volume change, separated share of the dead boundary and demarcation-rim thickness
  over time, with detachment marked;
* ``fate_separation.png``: matrix integrity, inflammatory cells and the separated interface at the end.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402

from ..tissue_state import TissueState  # noqa: E402
from .figures import DISCLAIMER, STATE_COLORS, _extent  # noqa: E402

DAY = 86400.0


def _fate_times(ds):
    if "volume_change" not in ds:
        return []
    ok = [i for i in range(ds.sizes["time"]) if np.isfinite(ds["volume_change"].isel(time=i).values).any()]
    return ok


def _tumor_centre(ds, table):
    lab = ds["labels"].values
    tum = np.isin(lab, [k for k, v in table.items() if v == "tumor"])
    if not tum.any():
        return [s // 2 for s in lab.shape], tum
    return [int(round(c)) for c in np.argwhere(tum).mean(axis=0)], tum


def _when(t):
    if t < 3600.0:
        return f"{t / 60:.0f} min"
    return f"{t / 3600:.0f} h" if t < 2 * DAY else f"day {t / DAY:.0f}"


def deformation(result, path: Path) -> None:
    ds = result.fields
    table = {int(k): v for k, v in result.extras["label_table"].items()}
    idx = _fate_times(ds)
    times = ds["time"].values
    want = [3600.0, DAY, times[idx[-1]]]
    picks = sorted({min(idx, key=lambda i: abs(times[i] - w)) for w in want})
    c, tum = _tumor_centre(ds, table)
    j = c[1]
    x, z = ds["x"].values, ds["z"].values
    cmap_state = ListedColormap([STATE_COLORS[s] for s in TissueState])
    norm_state = BoundaryNorm(np.arange(-0.5, len(TissueState) + 0.5), cmap_state.N)
    fig, axes = plt.subplots(2, len(picks), figsize=(4.3 * len(picks), 7.4), constrained_layout=True, squeeze=False)
    vmax = max(float(np.nanmax(np.abs(ds["volume_change"].isel(time=i, y=j).values))) for i in picks) or 1e-3
    for col, i in enumerate(picks):
        st = ds["tissue_state"].isel(time=i, y=j).values.T.astype(float)
        ax = axes[0, col]
        ax.imshow(st, origin="lower", extent=_extent(ds, "x", "z"), cmap=cmap_state, norm=norm_state,
                  interpolation="nearest")
        ax.contour(x, z, tum[:, j, :].T.astype(float), levels=[0.5], colors="k", linewidths=0.8)
        ux = uz = None
        if "displacement_x" in ds and np.isfinite(ds["displacement_x"].isel(time=i).values).any():
            ux = ds["displacement_x"].isel(time=i, y=j).values
            uz = ds["displacement_z"].isel(time=i, y=j).values
        umax = float(np.nanmax(np.hypot(ux, uz))) if ux is not None else 0.0
        if umax > 1e-3:
            gain = max(1.0, 3.0 / umax)   # the largest displacement drawn as 3 mm (never shrunk)
            X, Z = np.meshgrid(x, z, indexing="ij")
            ax.contour(X + gain * np.nan_to_num(ux), Z + gain * np.nan_to_num(uz), tum[:, j, :].astype(float),
                       levels=[0.5], colors="#1a9850", linewidths=1.2)
            ax.set_title(f"tissue state, {_when(times[i])}\nblack: tumour; green: deformed "
                         f"(x{gain:.0f}, max |u| {umax:.2f} mm)", fontsize=8)
        else:
            ax.set_title(f"tissue state, {_when(times[i])}", fontsize=8)
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("z (mm)")
        ax = axes[1, col]
        vc = ds["volume_change"].isel(time=i, y=j).values.T
        im = ax.imshow(vc, origin="lower", extent=_extent(ds, "x", "z"), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                       interpolation="nearest")
        ax.contour(x, z, tum[:, j, :].T.astype(float), levels=[0.5], colors="k", linewidths=0.8)
        if "displacement_x" in ds and np.isfinite(ds["displacement_x"].isel(time=i).values).any():
            s = max(1, len(x) // 16)
            ux = ds["displacement_x"].isel(time=i, y=j).values[::s, ::s]
            uz = ds["displacement_z"].isel(time=i, y=j).values[::s, ::s]
            X, Z = np.meshgrid(x[::s], z[::s], indexing="ij")
            ax.quiver(X, Z, ux, uz, color="k", alpha=0.7, width=0.004)
        fig.colorbar(im, ax=ax, shrink=0.8, label="volume change J - 1")
        ax.set_title(f"local volume change (red swelling, blue shrinkage)\n{_when(times[i])}", fontsize=8)
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("z (mm)")
    fig.suptitle(f"{result.metrics.get('scenario')}: after the kill, slice y = {float(ds['y'].values[j]):.1f} mm  "
                 f"({DISCLAIMER})", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def surface(result, path: Path) -> None:
    prof = result.metrics.get("surface_profiles_mm") or []
    fig, ax = plt.subplots(figsize=(6.5, 4.0), constrained_layout=True)
    cmap = plt.get_cmap("viridis")
    for k, p in enumerate(prof):
        ax.plot(p["x_mm"], p["u_z_mm"], color=cmap(k / max(len(prof) - 1, 1)), label=_when(p["t_s"]))
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("x (mm), through the tumour centre")
    ax.set_ylabel("skin-surface displacement u_z (mm)\nnegative = dent, positive = bulge")
    if prof:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no skin surface over the tumour (deep organ)", ha="center", transform=ax.transAxes)
    ax.set_title(f"{result.metrics.get('scenario')}: skin surface over the tumour\n{DISCLAIMER}", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def volume(result, path: Path) -> None:
    m = result.metrics
    ts = m["fate_timeseries"]
    t = np.asarray(ts["t_s"], dtype=float) / DAY
    sel = t > 0
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    axes[0].plot(t[sel], 100 * np.asarray(ts["tumor_volume_change"], dtype=float)[sel], "o-")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("tumour volume change (%)")
    axes[1].plot(t[sel], 100 * np.asarray(ts["separated_boundary_fraction"], dtype=float)[sel], "o-", color="C3")
    axes[1].set_ylabel("separated share of the dead boundary (%)")
    axes[2].plot(t[sel], np.asarray(ts["demarcation_rim_mm"], dtype=float)[sel], "o-", color="C2")
    axes[2].set_ylabel("demarcation rim (mm)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("days after the course start")
        if m.get("detachment_day"):
            ax.axvline(m["detachment_day"], color="k", ls="--", lw=0.8)
    if m.get("detachment_day"):
        axes[1].text(m["detachment_day"], 5, " detached", fontsize=7)
    fig.suptitle(f"{m.get('scenario')}: after the kill  ({DISCLAIMER})", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def separation(result, path: Path) -> None:
    ds = result.fields
    table = {int(k): v for k, v in result.extras["label_table"].items()}
    idx = _fate_times(ds)
    i = idx[-1]
    c, tum = _tumor_centre(ds, table)
    j = c[1]
    x, z = ds["x"].values, ds["z"].values
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.0), constrained_layout=True)
    panels = [("matrix_integrity", "matrix integrity (1 intact)", "cividis", (0, 1)),
              ("inflammation", "inflammatory cells (normalised)", "magma", (0, 1)),
              ("separation", "separated interface (voxels on either side)", "Reds", (0, 1))]
    for ax, (name, title, cmap, (lo, hi)) in zip(axes, panels):
        img = ds[name].isel(time=i, y=j).values.T.astype(float)
        im = ax.imshow(img, origin="lower", extent=_extent(ds, "x", "z"), cmap=cmap, vmin=lo, vmax=hi,
                       interpolation="nearest")
        ax.contour(x, z, tum[:, j, :].T.astype(float), levels=[0.5], colors="w" if name != "separation" else "k",
                   linewidths=0.8)
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(f"{title}\n{_when(ds['time'].values[i])}, y = {float(ds['y'].values[j]):.1f} mm", fontsize=8)
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("z (mm)")
    fig.suptitle(f"{result.metrics.get('scenario')}: demarcation and separation  ({DISCLAIMER})", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_fate_figures(result, folder: Path) -> list[Path]:
    if "fate_timeseries" not in result.metrics or not _fate_times(result.fields):
        return []
    out = []
    for fn, name in [(deformation, "fate_deformation.png"), (surface, "fate_surface.png"),
                     (volume, "fate_volume.png"), (separation, "fate_separation.png")]:
        fn(result, Path(folder) / name)
        out.append(Path(folder) / name)
    return out
