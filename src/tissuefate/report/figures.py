"""PNG figures of a run, made from the Result (fields and metrics) only.

* ``slices_tip.png``: planes through the (first) needle tip: injected-liquid fraction and pressure at the end
  of injection; oxidant (or ethanol) exposure, reductive capacity left and tissue state at the end; the
  tumour outline and the skin surface drawn on every panel.
* ``necrosis_over_time.png``: necrotic volume over time, in and outside the tumour, by cause.
* ``injected_volume.png``: where the injected volume went, over time (stacked).
* ``injection_pressure.png``: cavity pressure and volume during injection.
"""
from __future__ import annotations

from dataclasses import replace as dc_replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402

from ..tissue_state import TissueState  # noqa: E402

STATE_COLORS = {
    TissueState.VIABLE: "#e8e2d0", TissueState.OXIDATIVE_NECROSIS: "#b2182b", TissueState.ISCHEMIC_NECROSIS: "#f4a582",
    TissueState.CHEMICAL_NECROSIS: "#5e3c99", TissueState.COAGULATED: "#542788", TissueState.FROZEN_DEAD: "#2166ac",
    TissueState.CLEARED: "#ffffff", TissueState.REGENERATING: "#a6dba0", TissueState.SCAR: "#878787",
    TissueState.NO_TISSUE: "#202020",
}
VOLUME_LABELS = {"backflow_out": "out through the skin along the track", "vascular": "into microvessels",
                 "lymph": "into lymphatics", "sinks": "into large vessels / open surfaces",
                 "boundary": "left the simulated domain through tissue", "stored_dilation": "stored by tissue dilation",
                 "cavity": "in the injection cavity", "track": "in the needle track"}
DISCLAIMER = "tissuefate: research software, not a medical device; no dosing advice"


def _time_index(ds, t):
    return int(np.argmin(np.abs(ds["time"].values - t)))


def _plane(da, axis, index):
    return da.isel({axis: index})


def _extent(ds, a, b):
    xa, xb = ds[a].values, ds[b].values
    ha = xa[1] - xa[0] if len(xa) > 1 else 1.0
    hb = xb[1] - xb[0] if len(xb) > 1 else 1.0
    return [xa[0] - ha / 2, xa[-1] + ha / 2, xb[0] - hb / 2, xb[-1] + hb / 2]


def _outline(ax, ds, plane_axis, index, labels_names):
    lab = ds["labels"].isel({plane_axis: index}).values
    table = labels_names
    a, b = [d for d in ("x", "y", "z") if d != plane_axis]
    tumor_vals = [k for k, v in table.items() if v == "tumor"]
    air_vals = [k for k, v in table.items() if v in ("air",)]
    xa, xb = ds[a].values, ds[b].values
    if tumor_vals:
        ax.contour(xa, xb, np.isin(lab, tumor_vals).T.astype(float), levels=[0.5], colors="k", linewidths=0.8)
    if air_vals and np.isin(lab, air_vals).any():
        ax.contour(xa, xb, np.isin(lab, air_vals).T.astype(float), levels=[0.5], colors="#1b7837", linewidths=0.8,
                   linestyles="--")


def slices_tip(result, path: Path) -> None:
    ds = result.fields
    tip = result.extras.get("needle_tips_index", [[s // 2 for s in ds["labels"].shape]])[0]
    table = {int(k): v for k, v in result.extras["label_table"].items()}
    t_inj = result.extras.get("injection_end_s", float(ds["time"].values[0]))
    i_inj, i_end = _time_index(ds, t_inj), len(ds["time"]) - 1
    agent = "oxidant_exposure" if "oxidant_exposure" in ds else "ethanol_dose"
    left = "reductive_total_left" if "reductive_total_left" in ds else "ethanol"
    panels = [
        ("injected_liquid", i_inj, "injected liquid (volume fraction)\nend of injection", "Blues", None),
        ("pressure", i_inj, "pressure (kPa)\nend of injection", "magma", 1e-3),
        (agent, i_end, ("ClO2 exposure (mM s)" if agent == "oxidant_exposure" else "ethanol dose Omega") + "\nend",
         "viridis", None),
        (left, i_end, ("reductive capacity left (fraction)" if left.startswith("reductive") else "ethanol (v/v)")
         + "\nend", "cividis", None),
        ("tissue_state", i_end, "tissue state\nend", None, None),
    ]
    planes = [("y", tip[1], "x", "z"), ("z", tip[2], "x", "y")]
    fig, axes = plt.subplots(len(planes), len(panels), figsize=(4.0 * len(panels), 3.6 * len(planes)),
                             constrained_layout=True)
    cmap_state = ListedColormap([STATE_COLORS[s] for s in TissueState])
    norm_state = BoundaryNorm(np.arange(-0.5, len(TissueState) + 0.5), cmap_state.N)
    for r, (pax, pidx, a, b) in enumerate(planes):
        for c, (name, ti, title, cmap, scale) in enumerate(panels):
            ax = axes[r, c]
            if name not in ds:
                ax.set_axis_off()
                continue
            da = ds[name].isel(time=ti) if "time" in ds[name].dims else ds[name]
            img = _plane(da, pax, pidx).transpose(b, a).values.astype(float)
            if scale:
                img = img * scale
            if name == "tissue_state":
                im = ax.imshow(img, origin="lower", extent=_extent(ds, a, b), cmap=cmap_state, norm=norm_state,
                               interpolation="nearest")
                if r == 0:
                    present = sorted({int(v) for v in np.unique(ds[name].isel(time=ti).values)})
                    handles = [plt.Rectangle((0, 0), 1, 1, color=STATE_COLORS[TissueState(v)]) for v in present]
                    ax.legend(handles, [TissueState(v).name.lower().replace("_", " ") for v in present],
                              fontsize=6, loc="lower left", framealpha=0.8)
            else:
                im = ax.imshow(img, origin="lower", extent=_extent(ds, a, b), cmap=cmap, interpolation="nearest")
                fig.colorbar(im, ax=ax, shrink=0.8)
            _outline(ax, ds, pax, pidx, table)
            ax.set_xlabel(f"{a} (mm)")
            ax.set_ylabel(f"{b} (mm)")
            ax.set_title(f"{title}\n{pax} = {float(ds[pax].values[pidx]):.1f} mm", fontsize=8)
    fig.suptitle(f"{result.metrics.get('scenario')}: planes through the needle tip  ({DISCLAIMER})", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def necrosis_over_time(result, path: Path) -> None:
    ts = result.metrics["timeseries"]
    t = np.asarray(ts["t_s"]) / 3600.0
    fig, ax = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    for key, label, style in [("necrotic_tumor_ml", "tumour necrosis", "-"),
                              ("normal_tissue_necrosis_ml", "normal-tissue necrosis", "-"),
                              ("committed_ml", "committed, not yet necrotic", ":"),
                              ("viable_tumor_ml", "viable tumour", "--")]:
        if key in ts:
            ax.plot(np.maximum(t, 1e-4), ts[key], style, label=label)
    if result.metrics.get("stoichiometric_bound_ml") is not None:
        ax.axhline(result.metrics["stoichiometric_bound_ml"], color="0.5", lw=0.8,
                   label="stoichiometric bound (oxidant)")
    ax.set_xscale("log")
    ax.set_xlabel("time since session start (h)")
    ax.set_ylabel("volume (mL)")
    ax.legend(fontsize=8)
    ax.set_title(f"{result.metrics.get('scenario')}: necrotic volume over time", fontsize=9)
    fig.text(0.01, 0.005, DISCLAIMER, fontsize=6, color="0.4")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def injected_volume(result, path: Path) -> None:
    ts = result.metrics["timeseries"]
    t = np.asarray(ts["t_s"]) / 60.0
    keys = [k for k in ts if k.startswith("volume_")]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    if keys:
        ax.stackplot(np.maximum(t, 1e-3), *[np.asarray(ts[k]) for k in keys],
                     labels=[VOLUME_LABELS.get(k.removeprefix("volume_"), k.removeprefix("volume_").replace("_", " "))
                             for k in keys])
    ax.set_xscale("log")
    ax.set_xlabel("time since session start (min)")
    ax.set_ylabel("injected volume (mL)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"{result.metrics.get('scenario')}: where the injected volume went", fontsize=9)
    fig.text(0.01, 0.005, DISCLAIMER, fontsize=6, color="0.4")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def injection_pressure(result, path: Path) -> None:
    ts = result.metrics["timeseries"]
    t = np.asarray(ts["t_s"])
    t_end = result.extras.get("injection_end_s", t[-1]) * 1.5
    sel = t <= t_end
    fig, ax = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    ax.plot(t[sel], np.asarray(ts["peak_pressure_kpa"])[sel], label="peak tissue/cavity pressure")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pressure (kPa)")
    ax2 = ax.twinx()
    if "volume_cavity" in ts:
        ax2.plot(t[sel], np.asarray(ts["volume_cavity"])[sel], "C1--", label="cavity volume")
    ax2.set_ylabel("cavity volume (mL)")
    ax.set_title(f"{result.metrics.get('scenario')}: injection pressure and cavity", fontsize=9)
    fig.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.005, DISCLAIMER, fontsize=6, color="0.4")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_figures(result, folder: Path) -> list[Path]:
    folder = Path(folder)
    out = []
    mods = set(result.metrics.get("modalities", []))
    # the session figures read the session snapshots only (the post-kill outputs come after them)
    t_sess = result.extras.get("sessions_end_s")
    sess = result
    if t_sess is not None:
        keep = np.nonzero(result.fields["time"].values <= t_sess + 1e-6)[0]
        sess = dc_replace(result, fields=result.fields.isel(time=keep))
    if mods & {"clo2", "ethanol"}:
        for fn, name in [(slices_tip, "slices_tip.png"), (necrosis_over_time, "necrosis_over_time.png"),
                         (injected_volume, "injected_volume.png"), (injection_pressure, "injection_pressure.png")]:
            fn(sess, folder / name)
            out.append(folder / name)
    if mods & {"rfa", "mwa", "cryo"}:
        from .thermal_figures import make_thermal_figures
        out += make_thermal_figures(sess.fields, result.metrics, result.extras, folder)
    from .fate_figures import make_fate_figures
    out += make_fate_figures(result, folder)
    return out
