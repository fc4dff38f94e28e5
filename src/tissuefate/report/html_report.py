"""A self-contained HTML page comparing finished run folders side by side (``tissuefate compare``).

The page is built from run folders only (``metrics.json``, ``scenario_resolved.json``, ``figures/*.png``,
``course.nc``), never from solver objects, so a report can be rebuilt from runs made earlier. It has inline
CSS, every image embedded as a base64 PNG data URI, no external URL and no JavaScript library; one small
inline script checks, after load, that every image decoded and the metrics table exists, and writes the
result into ``#tf-check[data-status]`` for :mod:`tissuefate.report.browser_check`.

Sections: disclaimer; side-by-side metrics; time curves; week-by-week table; composition slices per run and
day; separation / detachment timeline; hypotheses per run and the hypotheses that differ between runs;
the runs' own figures. Every key of ``metrics.json`` may be missing or null: it is printed as "–".
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DISCLAIMER = ("Research software, not a medical device. No dosing advice. "
              "Results depend on the hypotheses listed below.")
DASH = "–"
MAIN_FIGURES = ("slices_tip.png", "thermal_slices.png", "zone_over_tumor.png", "necrosis_over_time.png",
                "fate_separation.png", "fate_volume.png")
CURVES = (("viable_tumor_ml", "viable tumour (mL)"), ("scar_ml", "scar (mL)"), ("debris_ml", "debris (mL)"),
          ("normal_tissue_lost_ml", "normal tissue lost (mL)"))
WEEK_DAYS = (0.0, 7.0, 14.0, 21.0, 28.0)
WEEK_QUANTITIES = (("viable_tumor_ml", "viable tumour"), ("scar_ml", "scar"),
                   ("normal_tissue_lost_ml", "normal tissue lost"))
# composition colours of the slice images (RGB in 0..1); whatever the fractions leave empty is white
COMPOSITION = (("tumor_fraction", "tumour", (0.84, 0.11, 0.11)), ("debris_fraction", "debris", (0.55, 0.45, 0.36)),
               ("scar_fraction", "scar", (0.17, 0.33, 0.80)), ("granulation_fraction", "granulation",
                                                                 (0.98, 0.60, 0.76)),
               ("host_fraction", "host tissue", (0.93, 0.90, 0.82)), ("fluid_fraction", "fluid", (0.25, 0.85, 0.92)))
MAX_SLICE_PANELS = 24
RUN_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


# ----------------------------------------------------------------------------------------------- reading
@dataclass
class RunData:
    """What the report needs from one run folder."""
    path: Path
    label: str
    metrics: dict
    scenario: dict | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    course_nc: Path | None = None

    @property
    def course(self) -> dict:
        c = self.metrics.get("course")
        return c if isinstance(c, dict) else {}


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def is_run_folder(path: Path) -> bool:
    """A finished run folder is a directory that contains ``metrics.json``."""
    return Path(path).is_dir() and (Path(path) / "metrics.json").is_file()


def load_run(run_dir: Path, label: str | None = None) -> RunData:
    """Read a run folder; raises FileNotFoundError / ValueError if it has no readable ``metrics.json``."""
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise FileNotFoundError(f"{run_dir}: not a run folder (no metrics.json)")
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        raise ValueError(f"{run_dir / 'metrics.json'}: not a JSON object")
    figs = {p.name: p for p in sorted((run_dir / "figures").glob("*.png"))} if (run_dir / "figures").is_dir() else {}
    nc = run_dir / "course.nc"
    return RunData(path=run_dir, label=label or str(metrics.get("scenario") or run_dir.name), metrics=metrics,
                   scenario=_read_json(run_dir / "scenario_resolved.json"), figures=figs,
                   course_nc=nc if nc.is_file() else None)


def unique_labels(labels: Iterable[str]) -> list[str]:
    """Make labels unique by appending " (2)", " (3)", ... to repeats."""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return out


# ------------------------------------------------------------------------------------------- formatting
def _num(v: Any) -> float | None:
    """A finite float, or None."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt(v: Any, digits: int = 3) -> str:
    """Readable text for a metric value; None, NaN and missing values are "–"."""
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return DASH
        if f == 0:
            return "0"
        return f"{f:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x, digits) for x in v) + "]" if v else DASH
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt(x, digits)}" for k, x in v.items()) or DASH
    s = str(v)
    return s if s else DASH


def fmt_day(v: Any) -> str:
    f = _num(v)
    return DASH if f is None else f"{f:.1f}"


def day_label(d: float) -> str:
    """A saved day for titles: one decimal at most (1.0028 -> "1", 7.5 -> "7.5")."""
    return f"{d:.1f}".rstrip("0").rstrip(".")


def fmt_runtime(v: Any) -> str:
    f = _num(v)
    if f is None:
        return DASH
    return f"{f:.0f} s" if f < 120 else f"{f / 60:.1f} min"


def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fig_png(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def img_tag(png: bytes, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{esc(alt)}" src="{png_data_uri(png)}">'


# ------------------------------------------------------------------------------------------ the metrics
def sessions(run: RunData) -> list[dict]:
    """The course's sessions; from ``metrics.course.sessions`` or else the resolved scenario."""
    s = run.course.get("sessions")
    if isinstance(s, list) and s:
        return [x for x in s if isinstance(x, dict)]
    sc = (run.scenario or {}).get("course") or {}
    return [{"index": i, "day": x.get("day"), "modality": x.get("modality")}
            for i, x in enumerate(sc.get("sessions") or []) if isinstance(x, dict)]


def session_days(run: RunData) -> list[float]:
    return [d for d in (_num(s.get("day")) for s in sessions(run)) if d is not None]


def sessions_text(run: RunData) -> str:
    out = []
    for s in sessions(run):
        txt = f"day {fmt_day(s.get('day'))}: {fmt(s.get('modality'))}"
        if s.get("targeted"):
            txt += " (targeted)"
        out.append(txt)
    return "; ".join(out) or DASH


def predictability_text(run: RunData) -> str:
    vals = [f"#{s.get('index', i)}: {fmt(s.get('predictability'), 2)}" for i, s in enumerate(sessions(run))
            if "predictability" in s]
    return "; ".join(vals) or DASH


def _first(*vals):
    for v in vals:
        if v is not None:
            return v
    return None


def metric_rows(runs: list[RunData]) -> list[tuple[str, list[str]]]:
    """The side-by-side table: (row label, one text cell per run)."""
    def row(label, fn):
        return label, [fn(r) for r in runs]
    m = lambda k: (lambda r: r.metrics.get(k))  # noqa: E731
    c = lambda k: (lambda r: r.course.get(k))  # noqa: E731
    return [
        row("modalities", lambda r: ", ".join(map(str, r.metrics.get("modalities") or [])) or DASH),
        row("sessions (day: modality)", sessions_text),
        row("tumour volume (mL)", lambda r: fmt(m("tumor_volume_ml")(r))),
        row("follow-up (day)", lambda r: fmt_day(c("follow_up_day")(r))),
        row("viable tumour at end (mL)", lambda r: fmt(_first(c("viable_tumor_ml")(r), m("viable_tumor_ml")(r)))),
        row("day no visible tumour", lambda r: fmt_day(c("day_no_visible_tumor")(r))),
        row("normal tissue destroyed (mL)", lambda r: fmt(_first(c("normal_tissue_destroyed_ml")(r),
                                                                m("normal_tissue_necrosis_ml")(r)))),
        row("scar at end (mL)", lambda r: fmt(c("scar_ml")(r))),
        row("predictability per session", predictability_text),
        row("first separation day", lambda r: fmt_day(m("first_separation_day")(r))),
        row("detachment day", lambda r: fmt_day(m("detachment_day")(r))),
        row("detached (mL)", lambda r: fmt(m("detached_ml")(r))),
        row("runtime", lambda r: fmt_runtime(m("runtime_s")(r))),
    ]


def metrics_table(runs: list[RunData]) -> str:
    head = "".join(f"<th>{esc(r.label)}</th>" for r in runs)
    body = []
    for label, cells in metric_rows(runs):
        differs = len(runs) > 1 and len(set(cells)) > 1
        tds = "".join(f"<td>{esc(x)}</td>" for x in cells)
        body.append(f'<tr{" class=differs" if differs else ""}><th scope="row">{esc(label)}</th>{tds}</tr>')
    return (f'<table id="metrics" class="metrics" data-runs="{len(runs)}"><thead><tr><th>metric</th>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table>'
            '<p class="note">Rows whose values differ between runs are shaded. "Normal tissue destroyed" and '
            '"viable tumour at end" come from the course model when the run has one, else from the end of the '
            'acute simulation.</p>')


# ------------------------------------------------------------------------------------------- time series
def series(run: RunData, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(day, values) of ``course.by_day[key]``, without null entries; None if missing."""
    by = run.course.get("by_day")
    if not isinstance(by, dict) or not isinstance(by.get("day"), list) or not isinstance(by.get(key), list):
        return None
    pairs = [(_num(d), _num(v)) for d, v in zip(by["day"], by[key])]
    pairs = [(d, v) for d, v in pairs if d is not None and v is not None]
    if not pairs:
        return None
    d, v = zip(*pairs)
    return np.asarray(d), np.asarray(v)


def time_curves_png(runs: list[RunData]) -> bytes | None:
    """One panel per quantity of :data:`CURVES`, every run on the same axes, session days marked."""
    if not any(series(r, k) is not None for r in runs for k, _ in CURVES):
        return None
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.4), sharex=True, constrained_layout=True)
    for ax, (key, title) in zip(axes.ravel(), CURVES):
        for i, r in enumerate(runs):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            s = series(r, key)
            if s is not None:
                ax.plot(s[0], s[1], "-", color=color, lw=1.8, label=r.label)
            for d in session_days(r):
                ax.axvline(d, color=color, ls=":", lw=1.0, alpha=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    for ax in axes[-1]:
        ax.set_xlabel("day")
    axes[0, 0].legend(fontsize=8, loc="best")
    fig.text(0.005, 0.005, "dotted lines: session days (colour of the run)", fontsize=7, color="0.35")
    return fig_png(fig)


def nearest_index(days: np.ndarray, day: float) -> int:
    return int(np.argmin(np.abs(np.asarray(days) - day)))


def week_days(runs: list[RunData]) -> list[float]:
    """Days 0, 7, 14, 21, 28 and every run's follow-up day, sorted, without repeats."""
    days = set(WEEK_DAYS)
    for r in runs:
        f = _num(r.course.get("follow_up_day"))
        if f is not None:
            days.add(f)
    return sorted(days)


def week_cell(run: RunData, key: str, day: float) -> str:
    s = series(run, key)
    if s is None:
        return DASH
    i = nearest_index(s[0], day)
    txt = fmt(s[1][i])
    if abs(s[0][i] - day) > 1e-6:
        txt += f" (d {day_label(s[0][i])})"
    return txt


def week_table(runs: list[RunData]) -> str:
    top = "".join(f'<th colspan="{len(WEEK_QUANTITIES)}">{esc(r.label)}</th>' for r in runs)
    sub = "".join(f"<th>{esc(q)} (mL)</th>" for _ in runs for _, q in WEEK_QUANTITIES)
    rows = []
    for d in week_days(runs):
        cells = "".join(f"<td>{esc(week_cell(r, k, d))}</td>" for r in runs for k, _ in WEEK_QUANTITIES)
        rows.append(f'<tr><th scope="row">{d:g}</th>{cells}</tr>')
    return (f'<table id="weeks" class="weeks"><thead><tr><th rowspan="2">day</th>{top}</tr><tr>{sub}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><p class="note">Value at the nearest saved day; '
            '"(d N)" gives that day when it is not the one asked for.</p>')


# ----------------------------------------------------------------------------------------------- slices
def composition_rgb(fractions: dict[str, np.ndarray]) -> np.ndarray:
    """RGB image (…, 3) mixing the composition colours by volume fraction; the unfilled rest is white."""
    shape = next(iter(fractions.values())).shape
    rgb = np.zeros(shape + (3,))
    total = np.zeros(shape)
    for name, _, color in COMPOSITION:
        f = fractions.get(name)
        if f is None:
            continue
        f = np.clip(np.nan_to_num(np.asarray(f, dtype=float)), 0.0, 1.0)
        rgb += f[..., None] * np.asarray(color)
        total += f
    over = np.maximum(total, 1.0)
    rgb = rgb / over[..., None] + np.clip(1.0 - total, 0.0, 1.0)[..., None]
    return np.clip(rgb, 0.0, 1.0)


def _pick_days(n: int, limit: int = MAX_SLICE_PANELS) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def slices_png(nc: Path, label: str) -> tuple[bytes | None, str]:
    """Composition of the x–z plane through the tumour centre, one small panel per saved day.

    Returns (PNG or None, a note for the page)."""
    import xarray as xr
    try:
        ds = xr.open_dataset(nc, engine="h5netcdf")
    except Exception as err:  # unreadable file: say so on the page, do not fail the report
        return None, f"course.nc could not be read ({type(err).__name__}: {err})"
    with ds:
        present = [n for n, _, _ in COMPOSITION if n in ds]
        if not present or "day" not in ds.dims:
            return None, "course.nc has no composition fractions over days"
        ny = ds.sizes.get("y", 1)
        center = ds.attrs.get("tumor_center_index")
        j = int(np.asarray(center).ravel()[1]) if center is not None and np.asarray(center).size >= 2 else ny // 2
        j = min(max(j, 0), ny - 1)
        planes = {n: ds[n].isel(y=j).transpose("day", "z", "x").values for n in present}
        days = ds["day"].values
        x, z = ds["x"].values, ds["z"].values
        y_mm = float(ds["y"].values[j]) if "y" in ds.coords else float(j)
    idx = _pick_days(len(days))
    ncol = min(len(idx), 8)
    nrow = math.ceil(len(idx) / ncol)
    hx = (x[1] - x[0]) if len(x) > 1 else 1.0
    hz = (z[1] - z[0]) if len(z) > 1 else 1.0
    extent = [x[0] - hx / 2, x[-1] + hx / 2, z[0] - hz / 2, z[-1] + hz / 2]
    aspect = (extent[3] - extent[2]) / max(extent[1] - extent[0], 1e-9)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.7 * ncol, 1.7 * nrow * aspect + 0.9), squeeze=False,
                             constrained_layout=True)
    for ax in axes.ravel():
        ax.set_axis_off()
    for a, t in zip(axes.ravel(), idx):
        rgb = composition_rgb({n: planes[n][t] for n in present})
        a.imshow(rgb, origin="lower", extent=extent, interpolation="nearest")
        a.set_title(f"day {day_label(float(days[t]))}", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for n, _, c in COMPOSITION if n in present]
    fig.legend(handles, [lab for n, lab, _ in COMPOSITION if n in present], loc="outside lower center",
               ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(f"{label}: x–z plane at y = {y_mm:g} mm (x → right, z ↑)", fontsize=9)
    note = "" if len(idx) == len(days) else f"{len(idx)} of {len(days)} saved days shown."
    return fig_png(fig), note


# --------------------------------------------------------------------------------------------- timeline
def timeline_events(run: RunData) -> list[tuple[float, str, str]]:
    """(day, kind, text) events: sessions, first separation, detachment, no visible tumour."""
    ev = [(d, "session", f"{fmt(s.get('modality'))}") for s in sessions(run)
          if (d := _num(s.get("day"))) is not None]
    for key, kind, text in (("first_separation_day", "separation", "first separation"),
                            ("detachment_day", "detachment", "detachment")):
        d = _num(run.metrics.get(key))
        if d is not None:
            ev.append((d, kind, text))
    d = _num(run.course.get("day_no_visible_tumor"))
    if d is not None:
        ev.append((d, "clear", "no visible tumour"))
    return ev


TIMELINE_STYLE = {"session": ("v", "#333333"), "separation": ("o", "#e08214"), "detachment": ("X", "#b2182b"),
                  "clear": ("*", "#1b7837")}


def timeline_png(runs: list[RunData]) -> bytes:
    """One horizontal line per run from day 0 to its follow-up, with its events marked."""
    fig, ax = plt.subplots(figsize=(12, 0.75 * len(runs) + 1.3), constrained_layout=True)
    end = 1.0
    for row, r in enumerate(runs):
        y = len(runs) - 1 - row
        ev = timeline_events(r)
        last = max([_num(r.course.get("follow_up_day")) or 0.0] + [d for d, _, _ in ev])
        end = max(end, last)
        ax.hlines(y, 0, last, color="0.7", lw=3)
        for k, (d, kind, text) in enumerate(sorted(ev)):
            marker, color = TIMELINE_STYLE[kind]
            ax.plot(d, y, marker, color=color, ms=10 if kind == "clear" else 8)
            ax.annotate(f"{text}\nday {d:.1f}", (d, y), textcoords="offset points",
                        xytext=(0, 9 if k % 2 == 0 else -22), ha="center", fontsize=7)
    ax.set_yticks(range(len(runs)), [r.label for r in reversed(runs)])
    ax.set_ylim(-0.8, len(runs) - 0.2)
    ax.set_xlim(-0.05 * end, end * 1.06)
    ax.set_xlabel("day")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker=m, color=c) for m, c in TIMELINE_STYLE.values()]
    ax.legend(handles, ["session", "first separation", "detachment", "no visible tumour"], fontsize=7,
              loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig_png(fig)


# ------------------------------------------------------------------------------------------- hypotheses
def hypotheses(run: RunData) -> dict[str, dict]:
    """name → {value, unit, range, source} of the hypotheses the run depends on (first entry per name).

    Names listed only in ``course.hypotheses`` (without details) get value None."""
    out: dict[str, dict] = {}
    for h in run.metrics.get("hypotheses") or []:
        if isinstance(h, dict) and h.get("name") is not None and str(h["name"]) not in out:
            out[str(h["name"])] = h
    for name in run.course.get("hypotheses") or []:
        if isinstance(name, dict):  # tolerate details instead of a bare name
            if name.get("name") is not None:
                out.setdefault(str(name["name"]), name)
        elif name is not None:
            out.setdefault(str(name), {"name": str(name)})
    return out


def same_value(a: Any, b: Any) -> bool:
    """Equal hypothesis values (floats to 1e-9 relative, lists element-wise)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    fa, fb = _num(a), _num(b)
    if fa is not None and fb is not None:
        return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def differing_hypotheses(runs: list[RunData]) -> list[tuple[str, str, list[dict | None]]]:
    """(name, reason, per-run entry or None) for every hypothesis that differs between runs or is not used
    by all of them, in order of first appearance."""
    per_run = [hypotheses(r) for r in runs]
    names: list[str] = []
    for h in per_run:
        names += [n for n in h if n not in names]
    out = []
    for n in names:
        entries = [h.get(n) for h in per_run]
        users = [r.label for r, e in zip(runs, entries) if e is not None]
        if len(users) < len(runs):
            reason = "only " + ", ".join(users) if len(users) <= len(runs) / 2 else \
                "not used by " + ", ".join(r.label for r, e in zip(runs, entries) if e is None)
        else:
            vals = [e.get("value") for e in entries]
            if all(same_value(vals[0], v) for v in vals[1:]):
                continue
            reason = "value differs"
        out.append((n, reason, entries))
    return out


def _range_text(r: Any) -> str:
    if isinstance(r, (list, tuple)) and len(r) == 2:
        return f"{fmt(r[0], 4)} – {fmt(r[1], 4)}"
    return fmt(r, 4)


def _hyp_value(e: dict | None) -> str:
    if e is None:
        return "not used"
    v = fmt(e.get("value"), 4)
    unit = e.get("unit")
    return f"{v} {unit}" if unit and v != DASH else v


def _diff_rows_table(runs: list[RunData], rows: list, table_id: str) -> str:
    head = "".join(f"<th>{esc(r.label)}</th>" for r in runs)
    body = []
    for name, reason, entries in rows:
        ref = next(e for e in entries if e is not None)
        cells = "".join(f'<td class="{"absent" if e is None else ""}">{esc(_hyp_value(e))}</td>' for e in entries)
        body.append(f"<tr><th scope=\"row\"><code>{esc(name)}</code></th><td>{esc(reason)}</td>{cells}"
                    f"<td>{esc(_range_text(ref.get('range')))}</td><td class=\"src\">{esc(fmt(ref.get('source')))}"
                    "</td></tr>")
    return (f'<table id="{table_id}" class="hyp"><thead><tr><th>hypothesis</th><th>why listed</th>{head}'
            f'<th>range</th><th>source</th></tr></thead><tbody>{"".join(body)}</tbody></table>')


def differences_table(runs: list[RunData], open_limit: int = 30) -> str:
    """Hypotheses whose value differs between runs (a table), then those not used by every run (a table,
    folded when it has more than ``open_limit`` rows)."""
    if len(runs) < 2:
        return "<p>Only one run: nothing to compare.</p>"
    rows = differing_hypotheses(runs)
    differ = [r for r in rows if r[1] == "value differs"]
    partial = [r for r in rows if r[1] != "value differs"]
    if differ:
        out = (f"<p>{len(differ)} hypotheses the runs share have different values:</p>"
               + _diff_rows_table(runs, differ, "hyp-diff"))
    else:
        out = "<p>The hypotheses the runs share have the same values in every run.</p>"
    if partial:
        counts = ", ".join(f"{r.label} {sum(e[i] is not None for _, _, e in partial)}" for i, r in enumerate(runs))
        out += (f'<details class="hyp-partial"{" open" if len(partial) <= open_limit else ""}><summary>'
                f"{len(partial)} hypotheses are used by only some of the runs ({esc(counts)})</summary>"
                + _diff_rows_table(runs, partial, "hyp-partial") + "</details>")
    elif not differ:
        out = "<p>All runs depend on the same hypotheses with the same values.</p>"
    return out


def run_hypotheses_table(run: RunData) -> str:
    h = hypotheses(run)
    course = {str(n) for n in run.course.get("hypotheses") or [] if not isinstance(n, dict)}
    rows = "".join(
        f"<tr><td><code>{esc(n)}</code>{' <span class=tag>course</span>' if n in course else ''}</td>"
        f"<td>{esc(fmt(e.get('value'), 4))}</td><td>{esc(e.get('unit') or '')}</td>"
        f"<td>{esc(_range_text(e.get('range')))}</td><td class=\"src\">{esc(fmt(e.get('source')))}</td></tr>"
        for n, e in h.items())
    return (f'<details class="hyp-run"><summary>{esc(run.label)}: {len(h)} hypotheses</summary>'
            '<table class="hyp"><thead><tr><th>name</th><th>value</th><th>unit</th><th>range</th><th>source</th>'
            f'</tr></thead><tbody>{rows}</tbody></table></details>')


# ------------------------------------------------------------------------------------------------ page
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1320px;
padding:0 24px 48px;color:#1d1d1f;background:#fff;line-height:1.4}
h1{margin:20px 0 4px;font-size:26px} h2{margin-top:34px;border-bottom:2px solid #ddd;padding-bottom:4px;font-size:20px}
h3{font-size:16px;margin:18px 0 6px}
.meta{color:#555;font-size:13px;margin:0 0 12px}
.disclaimer{background:#fff3cd;border:2px solid #d39e00;border-radius:6px;padding:12px 16px;font-size:16px;
font-weight:600;color:#5c4400}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d5d5d5;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f0f0f3} tbody tr:nth-child(even){background:#fafafa}
table.metrics td{text-align:right;min-width:110px} table.metrics tr.differs td{background:#eef5ff}
table.weeks td{text-align:right}
td.absent{color:#999;font-style:italic} td.src{color:#444;font-size:12px;max-width:420px}
.tag{font-size:10px;background:#e0ecff;border-radius:3px;padding:0 4px;color:#234}
.note{color:#666;font-size:12px;margin:2px 0 8px}
img{max-width:100%;height:auto;border:1px solid #eee;display:block;margin:6px 0}
figure{display:inline-block;vertical-align:top;max-width:100%;margin:8px 16px 16px 0}
figcaption{font-size:12px;color:#555}
details.hyp-run{margin:6px 0} summary{cursor:pointer;font-weight:600}
code{font-size:12px}
footer{margin-top:40px;color:#777;font-size:12px}
"""

# Collects uncaught errors, failed resource loads and console.error calls from the start; after load, checks
# that every <img> decoded and the metrics table has one column per run, and writes the result as JSON into
# #tf-check[data-status] (read by report/browser_check.py through --dump-dom).
SCRIPT_HEAD = """<script>
window.__tfErrors=[];
window.addEventListener('error',function(e){var t=e.target;
 window.__tfErrors.push(t&&t!==window&&t.tagName?('failed to load <'+t.tagName.toLowerCase()+'> '+
 String(t.src||t.href||'').slice(0,80)):('uncaught: '+e.message));},true);
window.addEventListener('unhandledrejection',function(e){window.__tfErrors.push('unhandled rejection: '+e.reason);});
(function(){var ce=console.error;console.error=function(){
 window.__tfErrors.push('console.error: '+Array.prototype.join.call(arguments,' '));
 return ce.apply(console,arguments);};})();
</script>"""

SCRIPT_CHECK = """<script>
window.addEventListener('load',function(){
 var imgs=Array.prototype.slice.call(document.images);
 var bad=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);});
 var t=document.getElementById('metrics');
 var n=t?parseInt(t.getAttribute('data-runs'),10):0;
 var tableOk=!!t&&t.rows.length>1&&t.rows[0].cells.length===n+1&&n>0;
 var badNames=bad.map(function(i){return (i.alt||'')+' <'+String(i.getAttribute('src')||'').slice(0,60)+'>';});
 var s={images:imgs.length,images_ok:imgs.length>0&&bad.length===0,bad_images:badNames,table_ok:tableOk,
  height:Math.max(document.body.scrollHeight,document.documentElement.scrollHeight)};
 if(bad.length){console.error('tissuefate report: image(s) did not load: '+badNames.join(', '));}
 if(!tableOk){console.error('tissuefate report: metrics table missing or incomplete');}
 s.errors=window.__tfErrors.slice();  // after the two console.error calls above, so they are included
 document.getElementById('tf-check').setAttribute('data-status',JSON.stringify(s));
});
</script>"""


def _section(title: str, body: str, sid: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def _figures_section(runs: list[RunData]) -> str:
    parts = []
    for r in runs:
        names = [n for n in r.figures if n.startswith("course_")] + [n for n in MAIN_FIGURES if n in r.figures]
        if not names:
            parts.append(f"<h3>{esc(r.label)}</h3><p>No figures in this run folder.</p>")
            continue
        figs = "".join(f'<figure>{img_tag(r.figures[n].read_bytes(), f"{r.label}: {n}")}'
                       f"<figcaption>{esc(n)}</figcaption></figure>" for n in names)
        parts.append(f"<h3>{esc(r.label)}</h3>{figs}")
    return "".join(parts)


def _slices_section(runs: list[RunData]) -> str:
    parts = []
    for r in runs:
        if r.course_nc is None:
            parts.append(f"<h3>{esc(r.label)}</h3><p>No course.nc in this run folder.</p>")
            continue
        png, note = slices_png(r.course_nc, r.label)
        body = img_tag(png, f"{r.label}: composition slices") if png else ""
        parts.append(f"<h3>{esc(r.label)}</h3>{body}" + (f'<p class="note">{esc(note)}</p>' if note else ""))
    return ("<p class=\"note\">Volume fractions mixed as colours: tumour red, debris brown, scar blue, granulation "
            "pink, host tissue light, fluid cyan; white where nothing is.</p>" + "".join(parts))


def shown_path(path: Path, out_dir: Path | None) -> str:
    """The run folder as shown on the page: relative to the report folder if inside it, else absolute."""
    path = Path(path).resolve()
    if out_dir is not None:
        try:
            return str(path.relative_to(Path(out_dir).resolve()))
        except ValueError:
            pass
    return str(path)


def _runs_list(runs: list[RunData], out_dir: Path | None) -> str:
    items = "".join(f"<li><b>{esc(r.label)}</b>: <code>{esc(shown_path(r.path, out_dir))}</code></li>" for r in runs)
    return f"<ul class=\"runs\">{items}</ul>"


def build_html(runs: list[RunData], created: _dt.datetime | None = None, out_dir: Path | None = None) -> str:
    """The whole page as a string (``out_dir``: where it is written, to show run folders relative to it)."""
    created = created or _dt.datetime.now()
    curves = time_curves_png(runs)
    curves_html = img_tag(curves, "time curves") if curves else "<p>No run has course time series (by_day).</p>"
    labels = ", ".join(r.label for r in runs)
    sections = [
        _section("Runs", _runs_list(runs, out_dir), "runs"),
        _section("Metrics side by side", metrics_table(runs), "metrics-section"),
        _section("Over time", curves_html, "curves"),
        _section("Week by week (mL)", week_table(runs), "weeks-section"),
        _section("Composition slices through the tumour centre", _slices_section(runs), "slices"),
        _section("Separation and detachment timeline", img_tag(timeline_png(runs), "timeline"), "timeline"),
        _section("Hypotheses", "<h3>Which hypotheses drive the difference</h3>" + differences_table(runs)
                 + "<h3>Hypotheses of each run</h3>" + "".join(run_hypotheses_table(r) for r in runs),
                 "hypotheses"),
        _section("Figures of each run", _figures_section(runs), "figures"),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>tissuefate compare: "
        f"{esc(labels)}</title><style>{CSS}</style>{SCRIPT_HEAD}</head><body>"
        f"<h1>tissuefate: comparison of {len(runs)} run{'s' if len(runs) != 1 else ''}</h1>"
        f"<p class=\"meta\">{esc(labels)} · report written {esc(created.strftime('%Y-%m-%d %H:%M'))}</p>"
        f"<div class=\"disclaimer\" id=\"disclaimer\">{esc(DISCLAIMER)}</div>"
        + "".join(sections)
        + f"<footer>tissuefate compare · {esc(DISCLAIMER)}</footer>"
        "<div id=\"tf-check\" data-status=\"\" hidden></div>"
        f"{SCRIPT_CHECK}</body></html>\n")


def write_compare_report(run_dirs: list[Path], out_dir: Path, labels: list[str] | None = None) -> Path:
    """Write ``out_dir/report.html`` comparing the run folders ``run_dirs`` and return its path.

    ``labels`` (one per run) default to the scenario names, made unique."""
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ValueError("write_compare_report needs at least one run folder")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"got {len(labels)} labels for {len(run_dirs)} run folders")
    runs = [load_run(p) for p in run_dirs]
    names = unique_labels(labels if labels is not None else [r.label for r in runs])
    for r, lab in zip(runs, names):
        r.label = lab
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(build_html(runs, out_dir=out_dir), encoding="utf-8")
    return path
