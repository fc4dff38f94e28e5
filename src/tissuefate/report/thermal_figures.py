"""PNG figures of a thermal-ablation run (RFA, MWA, cryo), made from the saved fields and metrics only.

Reads an ``xarray.Dataset`` with coords ``time`` (s), ``x``, ``y``, ``z`` (mm) and variables ``labels`` (x, y, z),
``temperature`` (degC), ``tissue_state`` (TissueState codes), ``damage_omega`` (Arrhenius Omega, 1) over
(time, x, y, z), and ``temperature_max`` / ``temperature_min`` (degC) over (x, y, z) or (time, x, y, z); a ``metrics``
dict (``timeseries`` of equal-length lists, zone metrics); an ``extras`` dict (``label_table``, ``probe_tips_index``,
``probe_direction``, ``heating_end_s``, ``modality``, optional ``active_length_mm``). Writes PNGs, returns their paths:

* ``thermal_slices.png``: a grid plane through the (first) probe tip that (nearly) contains the probe axis, and one
  across it through the middle of the active part: temperature at the end of heating/freezing; peak temperature
  (cryo: minimum temperature with the 0, -20, -40 degC isotherms); Arrhenius Omega on a log scale with the Omega = 1
  contour; tissue state. Tumour outline (black) and skin line (green, dashed) on every panel, probe in grey.
* ``zone_over_tumor.png``: the ablation zone outline over the tumour in both planes, and in the plane through the
  point of thinnest margin, with the minimal margin drawn and annotated.
* ``generator_curves.png``: power, impedance and tip temperature over time (cryo: probe temperature), whichever
  series exist; delivered energy in the title.

Ablation zone shown: heat, Omega >= 1 at the last snapshot (Omega = 1 as lesion boundary, Chang & Nguyen 2004
BioMed Eng OnLine 3:27 [R], parameters.md D2), else tissue state COAGULATED; cryo, tissue state FROZEN_DEAD.
Isotherms -20 and -40 degC: the classical lethal range, Gage & Baust 1998 Cryobiology 37:171 [R] (parameters.md D3);
they are drawn for reading, not used as the zone. Missing variables are skipped (panel left out), never invented.
Figures only: no number shown here is computed differently from thermal_metrics.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm  # noqa: E402

from ..thermal_metrics import min_margin_mm, min_margin_pair_index  # noqa: E402
from ..tissue_state import TissueState  # noqa: E402
from .figures import DISCLAIMER, STATE_COLORS  # noqa: E402

OMEGA_LESION = 1.0                                  # (1) lesion boundary, parameters.md D2 [R]
CRYO_ISOTHERMS_C = (0.0, -20.0, -40.0)              # degC: ice-ball edge; lethal range, parameters.md D3 [R]
DEFAULT_ACTIVE_LENGTH_MM = 10.0                     # mm: only places the cross plane when the run gives none
OMEGA_FLOOR = 1e-3                                  # (1) lower end of the log colour scale (display choice)
PROBE_SHAFT_MM = 60.0                               # mm of shaft drawn behind the tip (display choice)
HALO = [patheffects.withStroke(linewidth=2.4, foreground="w")]   # keeps the black tumour outline readable on dark
AXES = ("x", "y", "z")


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _is_cryo(extras) -> bool:
    return str(extras.get("modality", "")).lower() == "cryo"


def _label_table(extras) -> dict[int, str]:
    return {int(k): str(v) for k, v in extras.get("label_table", {}).items()}


def _time_index(ds, t) -> int:
    return int(np.argmin(np.abs(ds["time"].values - t)))


def _at_time(ds, name, ti):
    da = ds[name]
    return da.isel(time=ti) if "time" in da.dims else da


def _last(ds, name):
    return _at_time(ds, name, len(ds["time"]) - 1)


def _spacing_m(ds) -> tuple[float, float, float]:
    return tuple(float(ds[a].values[1] - ds[a].values[0]) * 1e-3 if ds.sizes[a] > 1 else 1e-3 for a in AXES)


def _tip_index(ds, extras) -> list[int]:
    tips = extras.get("probe_tips_index") or [[ds.sizes[a] // 2 for a in AXES]]
    return [int(v) for v in tips[0]]


def _direction(extras) -> np.ndarray:
    u = np.asarray(extras.get("probe_direction", (0.0, 0.0, 1.0)), float)
    return u / np.linalg.norm(u)


def _point_mm(ds, index) -> np.ndarray:
    return np.array([float(ds[a].values[i]) for a, i in zip(AXES, index)])


def _nearest_index(ds, axis, value_mm) -> int:
    return int(np.clip(np.argmin(np.abs(ds[axis].values - value_mm)), 0, ds.sizes[axis] - 1))


def _in_plane_axes(normal: str) -> tuple[str, str]:
    """(horizontal, vertical) axes of a grid plane: x-z, y-z, x-y."""
    return {"y": ("x", "z"), "x": ("y", "z"), "z": ("x", "y")}[normal]


def probe_planes(ds, extras) -> list[tuple[str, int, str]]:
    """[(normal axis, index, title)]: the grid plane through the tip closest to containing the probe axis, and the
    one across the probe through the middle of its active part."""
    u = _direction(extras)
    tip = _tip_index(ds, extras)
    order = (1, 0, 2)                               # ties (probe along z): prefer the x-z view, as slices_tip does
    along = order[int(np.argmin([abs(u[d]) for d in order]))]
    across = int(np.argmax(np.abs(u)))
    half_active = 0.5 * float(extras.get("active_length_mm", DEFAULT_ACTIVE_LENGTH_MM))
    mid = _point_mm(ds, tip) - half_active * u      # the tip points along +u, the active part lies behind it
    tilt = np.degrees(np.arcsin(min(1.0, abs(u[along]))))
    return [(AXES[along], tip[along], f"plane along the probe (tilted {tilt:.0f} deg out of it)" if tilt >= 1
             else "plane along the probe"),
            (AXES[across], _nearest_index(ds, AXES[across], mid[across]), "plane across the active part")]


def _extent(ds, a, b):
    xa, xb = ds[a].values, ds[b].values
    ha = xa[1] - xa[0] if len(xa) > 1 else 1.0
    hb = xb[1] - xb[0] if len(xb) > 1 else 1.0
    return [xa[0] - ha / 2, xa[-1] + ha / 2, xb[0] - hb / 2, xb[-1] + hb / 2]


def _image(da, normal, index):
    a, b = _in_plane_axes(normal)
    return da.isel({normal: index}).transpose(b, a).values.astype(float)


def _contour(ax, ds, normal, mask_img, path_effects=None, **kw):
    if mask_img.any() and not mask_img.all():
        a, b = _in_plane_axes(normal)
        cs = ax.contour(ds[a].values, ds[b].values, mask_img.astype(float), levels=[0.5], **kw)
        if path_effects:
            cs.set_path_effects(path_effects)


def _outlines(ax, ds, normal, index, table):
    """Tumour outline (black) and skin line (green dashed: the body/air boundary)."""
    if "labels" not in ds:
        return
    lab = _image(ds["labels"], normal, index)
    tumor = [k for k, v in table.items() if v == "tumor"]
    air = [k for k, v in table.items() if v == "air"]
    if tumor:
        _contour(ax, ds, normal, np.isin(lab, tumor), colors="k", linewidths=0.9, path_effects=HALO)
    if air:
        _contour(ax, ds, normal, np.isin(lab, air), colors="#1b7837", linewidths=0.8, linestyles="--")


def _probe(ax, ds, extras, normal, index):
    """The probe on a plane: its projection (a shaft line behind the tip, thicker over the active length) when the
    plane nearly contains it, else a ring where its axis crosses the plane."""
    a, b = _in_plane_axes(normal)
    ia, ib, n = AXES.index(a), AXES.index(b), AXES.index(normal)
    u = _direction(extras)
    tip = _point_mm(ds, _tip_index(ds, extras))
    active = float(extras.get("active_length_mm", DEFAULT_ACTIVE_LENGTH_MM))
    if abs(u[n]) > 0.5:                              # across the probe: where does its axis cross the plane?
        s = (tip[n] - float(ds[normal].values[index])) / u[n]      # distance behind the tip
        if 0.0 <= s <= PROBE_SHAFT_MM:
            p = tip - s * u
            ax.plot(p[ia], p[ib], "o", mfc="none", mec="0.45", ms=7 if s <= active else 4, mew=1.5)
        return
    lim = ax.get_xlim(), ax.get_ylim()
    back, act = tip - PROBE_SHAFT_MM * u, tip - active * u
    ax.plot([tip[ia], back[ia]], [tip[ib], back[ib]], color="0.55", lw=1.0)
    ax.plot([tip[ia], act[ia]], [tip[ib], act[ib]], color="0.55", lw=2.5, solid_capstyle="butt")
    ax.set_xlim(lim[0])
    ax.set_ylim(lim[1])


def _decorate(ax, ds, normal, index, table, extras, title):
    a, b = _in_plane_axes(normal)
    _outlines(ax, ds, normal, index, table)
    _probe(ax, ds, extras, normal, index)
    ax.set_xlabel(f"{a} (mm)")
    ax.set_ylabel(f"{b} (mm)")
    ax.set_title(f"{title}\n{normal} = {float(ds[normal].values[index]):.1f} mm", fontsize=8)


def _state_legend(ax, states):
    handles = [plt.Rectangle((0, 0), 1, 1, color=STATE_COLORS[TissueState(v)]) for v in states]
    ax.legend(handles, [TissueState(v).name.lower().replace("_", " ") for v in states], fontsize=6,
              loc="lower left", framealpha=0.8)


def zone_mask_from_dataset(ds, extras) -> np.ndarray | None:
    """Ablation zone at the last snapshot (module docstring); None if the fields needed are missing."""
    if not _is_cryo(extras) and "damage_omega" in ds:
        return _last(ds, "damage_omega").values >= OMEGA_LESION
    if "tissue_state" not in ds:
        return None
    code = TissueState.FROZEN_DEAD if _is_cryo(extras) else TissueState.COAGULATED
    return _last(ds, "tissue_state").values == int(code)


def _tumor_mask(ds, extras) -> np.ndarray | None:
    tumor = [k for k, v in _label_table(extras).items() if v == "tumor"]
    return np.isin(ds["labels"].values, tumor) if tumor and "labels" in ds else None


# ---------------------------------------------------------------------------------------------
# thermal_slices.png
# ---------------------------------------------------------------------------------------------
def _slice_panels(ds, extras) -> list[dict]:
    cryo = _is_cryo(extras)
    i_heat = _time_index(ds, extras.get("heating_end_s", float(ds["time"].values[-1])))
    word = "freezing" if cryo else "heating"
    t_heat, t_last = float(ds["time"].values[i_heat]), float(ds["time"].values[-1])
    panels = []
    if "temperature" in ds:
        panels.append(dict(da=_at_time(ds, "temperature", i_heat), cmap="RdYlBu_r", cbar="temperature (°C)",
                           title=f"temperature, end of {word} (t = {t_heat:.0f} s)"))
    extreme = "temperature_min" if cryo else "temperature_max"
    if extreme in ds:
        panels.append(dict(da=_last(ds, extreme), cmap="viridis" if cryo else "inferno", cbar="temperature (°C)",
                           title=("minimum" if cryo else "peak") + f" temperature up to t = {t_last:.0f} s",
                           isotherms=CRYO_ISOTHERMS_C if cryo else ()))
    if "damage_omega" in ds:
        panels.append(dict(da=_last(ds, "damage_omega"), log=True, cmap="magma", cbar="Ω (1), log scale",
                           title=f"Arrhenius damage Ω at t = {t_last:.0f} s (Ω = 1 white)"))
    if "tissue_state" in ds:
        panels.append(dict(da=_last(ds, "tissue_state"), title=f"tissue state at t = {t_last:.0f} s", state=True))
    return panels


def _draw_panel(fig, ax, ds, p, normal, index):
    a, b = _in_plane_axes(normal)
    img = _image(p["da"], normal, index)
    ext = _extent(ds, a, b)
    if p.get("state"):
        cmap = ListedColormap([STATE_COLORS[s] for s in TissueState])
        norm = BoundaryNorm(np.arange(-0.5, len(TissueState) + 0.5), cmap.N)
        ax.imshow(img, origin="lower", extent=ext, cmap=cmap, norm=norm, interpolation="nearest")
        _state_legend(ax, sorted({int(v) for v in np.unique(img[np.isfinite(img)])}))
        return
    if p.get("log"):
        vmax = max(float(np.nanmax(p["da"].values)), 10 * OMEGA_FLOOR)
        im = ax.imshow(np.clip(img, OMEGA_FLOOR, None), origin="lower", extent=ext, cmap=p["cmap"],
                       norm=LogNorm(OMEGA_FLOOR, vmax), interpolation="nearest")
        ax.contour(ds[a].values, ds[b].values, img, levels=[OMEGA_LESION], colors="w", linewidths=1.0)
    else:
        full = p["da"].values
        im = ax.imshow(img, origin="lower", extent=ext, cmap=p["cmap"], interpolation="nearest",
                       vmin=float(np.nanmin(full)), vmax=float(np.nanmax(full)))
        iso = p.get("isotherms", ())
        levels = sorted(lv for lv in iso if np.nanmin(img) < lv < np.nanmax(img))
        if levels:
            styles = [["-", "--", ":"][iso.index(lv) % 3] for lv in levels]     # 0 solid, -20 dashed, -40 dotted
            cs = ax.contour(ds[a].values, ds[b].values, img, levels=levels, colors="w", linestyles=styles,
                            linewidths=0.9)
            ax.clabel(cs, fmt="%.0f °C", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8, label=p["cbar"])


def thermal_slices(ds, metrics, extras, out_dir) -> list[Path]:
    panels = _slice_panels(ds, extras)
    if not panels:
        return []
    table = _label_table(extras)
    planes = probe_planes(ds, extras)
    fig, axes = plt.subplots(len(planes), len(panels), figsize=(3.9 * len(panels), 3.7 * len(planes)),
                             constrained_layout=True, squeeze=False)
    for r, (normal, index, ptitle) in enumerate(planes):
        for c, p in enumerate(panels):
            _draw_panel(fig, axes[r, c], ds, p, normal, index)
            _decorate(axes[r, c], ds, normal, index, table, extras, f"{p['title']}\n{ptitle}")
    fig.suptitle(f"{metrics.get('scenario', '')} ({extras.get('modality', '?')}): planes through the probe; "
                 f"tumour black, skin green dashed, probe grey\n{DISCLAIMER}", fontsize=9)
    path = Path(out_dir) / "thermal_slices.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


# ---------------------------------------------------------------------------------------------
# zone_over_tumor.png
# ---------------------------------------------------------------------------------------------
TISSUE_COLORS = {"air": "#ffffff", "skin": "#f1d3bd", "fat": "#f7efc4", "muscle": "#e7c3c3", "liver": "#e3d7d0",
                 "vessel": "#c6dbef", "tumor": "#e3d7d0"}     # pale, so the outlines stay readable
OTHER_TISSUE_COLOR = "#dddddd"


def _label_background(ax, ds, normal, index, table):
    """Pale tissue map so the zone can be read against the anatomy; returns legend entries."""
    a, b = _in_plane_axes(normal)
    lab = _image(ds["labels"], normal, index).astype(int)
    codes = sorted(set(table) | {int(v) for v in np.unique(ds["labels"].values)})
    colors = [TISSUE_COLORS.get(table.get(c, ""), OTHER_TISSUE_COLOR) for c in codes]
    cmap = ListedColormap(colors + [OTHER_TISSUE_COLOR])      # at least two colours for ListedColormap/BoundaryNorm
    norm = BoundaryNorm(np.arange(-0.5, len(codes) + 1.5), cmap.N)
    ax.imshow(np.searchsorted(codes, lab), origin="lower", extent=_extent(ds, a, b), cmap=cmap, norm=norm,
              interpolation="nearest")
    return [(plt.Rectangle((0, 0), 1, 1, fc=colors[codes.index(c)], ec="0.6"), table.get(c, f"label {c}"))
            for c in sorted({int(v) for v in np.unique(lab)}) if table.get(c) != "tumor"]


def _zone_panel(ax, ds, normal, index, table, extras, zone, tumor, pair, margin_mm, title):
    a, b = _in_plane_axes(normal)
    handles = _label_background(ax, ds, normal, index, table) if "labels" in ds else []
    if tumor is not None:
        t_img = _image_mask(tumor, normal, index)
        if t_img.any():
            ax.contourf(ds[a].values, ds[b].values, t_img.astype(float), levels=[0.5, 1.5], colors=["#d6604d"],
                        alpha=0.45)
            handles.append((plt.Rectangle((0, 0), 1, 1, fc="#d6604d", alpha=0.45), "tumour"))
    if zone is not None:
        _contour(ax, ds, normal, _image_mask(zone, normal, index), colors="#2166ac", linewidths=1.6)
        handles.append((plt.Line2D([], [], color="#2166ac", lw=1.6), "ablation zone"))
    if _is_cryo(extras) and "temperature_min" in ds:
        ice = _image(_last(ds, "temperature_min"), normal, index) <= CRYO_ISOTHERMS_C[0]
        _contour(ax, ds, normal, ice, colors="#4393c3", linewidths=0.9, linestyles="--")
        handles.append((plt.Line2D([], [], color="#4393c3", lw=0.9, ls="--"), "ice ball (0 °C)"))
    _outlines(ax, ds, normal, index, table)
    _probe(ax, ds, extras, normal, index)
    if pair is not None:
        ia, ib = AXES.index(a), AXES.index(b)
        p, q = _point_mm(ds, pair[0]), _point_mm(ds, pair[1])
        ax.annotate("", xy=(q[ia], q[ib]), xytext=(p[ia], p[ib]),
                    arrowprops=dict(arrowstyle="->", color="#b2182b", lw=1.3))
        ax.plot(p[ia], p[ib], "x", color="#b2182b", ms=6, mew=1.5)
        if margin_mm is not None and np.isfinite(margin_mm):
            ax.annotate(f"{margin_mm:+.1f} mm", (p[ia], p[ib]), xytext=(6, 6), textcoords="offset points",
                        fontsize=7, color="#b2182b", fontweight="bold")
        handles.append((plt.Line2D([], [], color="#b2182b", marker="x", lw=1.3), "thinnest margin"))
    ax.set_xlabel(f"{a} (mm)")
    ax.set_ylabel(f"{b} (mm)")
    ax.set_title(f"{title}\n{normal} = {float(ds[normal].values[index]):.1f} mm", fontsize=8)
    return handles


def _image_mask(mask, normal, index):
    sl = [slice(None)] * 3
    sl[AXES.index(normal)] = index
    return mask[tuple(sl)].T                       # remaining axes are in (a, b) order: transpose to (b, a)


def zone_over_tumor(ds, metrics, extras, out_dir) -> list[Path]:
    zone = zone_mask_from_dataset(ds, extras)
    tumor = _tumor_mask(ds, extras)
    if zone is None and tumor is None:
        return []
    table = _label_table(extras)
    sp = _spacing_m(ds)
    pair = min_margin_pair_index(zone, tumor, sp) if zone is not None and tumor is not None else None
    margin = metrics.get("min_margin_mm")
    if margin is None and pair is not None:
        margin = min_margin_mm(zone, tumor, sp)
    planes = probe_planes(ds, extras)
    if pair is not None:                           # third panel: the plane through the thinnest margin
        normal = planes[0][0]
        planes.append((normal, pair[0][AXES.index(normal)], "plane through the thinnest margin"))
    fig, axes = plt.subplots(1, len(planes), figsize=(4.6 * len(planes), 4.4), constrained_layout=True,
                             squeeze=False)
    legend = {}
    for c, (normal, index, ptitle) in enumerate(planes):
        near = pair if pair is not None and abs(pair[0][AXES.index(normal)] - index) <= 1 else None
        for h, name in _zone_panel(axes[0, c], ds, normal, index, table, extras, zone, tumor, near, margin,
                                   ptitle):
            legend.setdefault(name, h)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=len(legend),
               fontsize=7, frameon=False)
    what = "lethal freezing (frozen dead)" if _is_cryo(extras) else (
        "Ω ≥ 1" if "damage_omega" in ds else "coagulated")
    mtxt = "n/a" if margin is None or not np.isfinite(margin) else f"{margin:+.1f} mm"
    cov = metrics.get("tumor_coverage")
    ctxt = f", tumour coverage {100 * cov:.1f} %" if cov is not None and np.isfinite(cov) else ""
    fig.suptitle(f"{metrics.get('scenario', '')} ({extras.get('modality', '?')}): ablation zone ({what}) over the "
                 f"tumour; minimal margin {mtxt}{ctxt}\n(negative margin: tumour left uncovered that deep)  "
                 f"{DISCLAIMER}", fontsize=9)
    path = Path(out_dir) / "zone_over_tumor.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


# ---------------------------------------------------------------------------------------------
# generator_curves.png
# ---------------------------------------------------------------------------------------------
SERIES = [("power_w", "power (W)", "C3"), ("impedance_ohm", "impedance (Ω)", "C0"),
          ("tip_temperature_c", "tip temperature (°C)", "C1"),
          ("probe_temperature_c", "probe temperature (°C)", "C0")]


def generator_curves(ds, metrics, extras, out_dir) -> list[Path]:
    ts = metrics.get("timeseries", {})
    present = [s for s in SERIES if s[0] in ts and np.isfinite(np.asarray(ts[s[0]], float)).any()]
    if "t_s" not in ts or not present:
        return []
    t = np.asarray(ts["t_s"], float)
    minutes = t[-1] > 600.0
    tx = t / 60.0 if minutes else t
    fig, axes = plt.subplots(len(present), 1, figsize=(6.4, 1.9 + 1.6 * len(present)), sharex=True,
                             constrained_layout=True, squeeze=False)
    t_end = extras.get("heating_end_s")
    for ax, (key, label, color) in zip(axes[:, 0], present):
        ax.plot(tx, np.asarray(ts[key], float), color=color)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if t_end is not None:
            ax.axvline(t_end / 60.0 if minutes else t_end, color="0.4", ls="--", lw=0.8)
    axes[-1, 0].set_xlabel("time (min)" if minutes else "time (s)")
    energy = ts.get("energy_delivered_j")
    e = energy[-1] if energy else metrics.get("energy_delivered_j")
    e = float("nan") if e is None else float(e)
    etxt = f"; delivered energy {e / 1e3:.2f} kJ" if np.isfinite(e) else ""
    end_word = "freezing" if _is_cryo(extras) else "power"
    axes[0, 0].set_title(f"{metrics.get('scenario', '')} ({extras.get('modality', '?')}){etxt}\n"
                         f"dashed: end of {end_word}", fontsize=9)
    fig.text(0.01, 0.005, DISCLAIMER, fontsize=6, color="0.4")
    path = Path(out_dir) / "generator_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def make_thermal_figures(ds, metrics, extras, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for fn in (thermal_slices, zone_over_tumor, generator_curves):
        out += fn(ds, metrics, extras, out_dir)
    return out
