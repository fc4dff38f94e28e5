"""Validation of the thermal models against published experimental observations.

Each case names a published observation (with its source key and tag), the scenario that reproduces its
setting, and the quantity measured on the simulated result. All cases run with the library's default
parameters: one parameter set, no per-case tuning. ``run_cases`` returns one row per case with the simulated
value, the published value or range, the error and whether it lies within the case's tolerance.
``docs/validation_thermal.md`` holds the table as measured; ``tests/test_validation_thermal.py`` re-runs it.

Quantities:

* ``margin_peak_temperature_c``: median over the voxels just inside the ablation-zone boundary (zone voxels
  with a face to non-zone tissue) of the highest temperature they reached. Mertyna et al. measured the peak
  temperature at the visible margin of ex vivo zones with thermocouples.
* ``transition_width_mm``: width of the band in which the Arrhenius kill probability 1 - exp(-Omega) goes from
  10 % to 90 %, i.e. (V(Omega >= 0.105) - V(Omega >= 2.30)) / A(Omega >= 1), with A the area of the zone
  surface counted by voxel faces. For cryo the lethality rule is a threshold, so the width is that of the
  band between the -20 degC and -40 degC minimum-temperature isotherms (the classical partial-kill range).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ML = 1e-6


@dataclass(frozen=True)
class Case:
    id: str
    observation: str
    source: str
    scenario: str
    overrides: tuple[str, ...]
    quantity: str
    published: tuple[float, float]          # (low, high); a point value has low == high
    unit: str
    tolerance: float = 0.15                  # relative, for point values; ranges: inside the range
    notes: str = ""
    coarse: tuple[str, ...] = field(default=("domain.voxel_size=1 mm",))


EX_VIVO = ("tissues.liver.perfusion=0 1/s", "tissues.tumor.perfusion=0 1/s", "geometry.vessel_radius=0 mm")
SHORT = ("course.sessions.0.follow_up=30 min", "outputs.figures=false", "outputs.vtk=false")

CASES = [
    Case("mertyna_rf_cluster_margin_temperature",
         "Peak temperature at the margin of RF cluster zones (20-40 mm), ex vivo bovine liver: 33-58 degC",
         "parameters.md D2: Mertyna P, Goldberg W, Yang W, Goldberg SN (2009) Acad Radiol 16(12) [V]",
         "rfa_liver",
         EX_VIVO + SHORT + ("course.sessions.0.device.kind=cluster", "course.sessions.0.device.active_length=25 mm",
                            "course.sessions.0.duration=2 min"),
         "margin_peak_temperature_c", (33.0, 58.0), "degC",
         notes="ex vivo: no perfusion, no vessel; tissue starts at 37 degC (bath temperature not in the abstract); "
               "2 min of impedance-controlled heating gives a zone of ~30-40 mm, the size range of the study"),
    Case("mertyna_mw_margin_temperature",
         "Peak temperature at the margin of microwave zones (20-40 mm), ex vivo bovine liver: 42-95 degC",
         "parameters.md D2: Mertyna et al. 2009 [V]",
         "mwa_liver", EX_VIVO + SHORT + ("course.sessions.0.duration=1 min",),
         "margin_peak_temperature_c", (42.0, 95.0), "degC",
         notes="2.45 GHz choked antenna at 60 W for 1 min (zone ~30-40 mm, the study's size range); the study's "
               "MW device and power are not in the abstract"),
    Case("transition_zone_rfa",
         "Width of the mixed viable/dead transition zone 24 h after RFA, pig liver in vivo: 0.811 mm",
         "fate.md F8 / §2 (PMC5744668) [V]",
         "rfa_liver", SHORT, "transition_width_mm", (0.811, 0.811), "mm", tolerance=0.5,
         notes="histology at 24 h; the model's band is the 10-90 % Arrhenius kill band (a model definition)"),
    Case("transition_zone_mwa",
         "Width of the transition zone 24 h after MWA, pig liver in vivo: 0.319 mm",
         "fate.md F8 / §2 (PMC5744668) [V]",
         "mwa_liver", SHORT, "transition_width_mm", (0.319, 0.319), "mm", tolerance=0.5),
    Case("transition_zone_cryo",
         "Width of the transition zone 24 h after cryoablation, pig liver in vivo: 0.452 mm",
         "fate.md F8 / §2 (PMC5744668) [V]",
         "cryo_liver", SHORT, "transition_width_mm", (0.452, 0.452), "mm", tolerance=0.5,
         notes="the model's cryo lethality is a threshold rule; the band is the -20 to -40 degC minimum-temperature band"),
]


# ----------------------------------------------------------------------------------------------- measures

def _face_area(mask: np.ndarray, spacing) -> float:
    a = 0.0
    for ax in range(3):
        d = np.diff(mask.astype(np.int8), axis=ax)
        other = [spacing[i] for i in range(3) if i != ax]
        a += float(np.count_nonzero(d)) * other[0] * other[1]
    return a


def _zone_boundary_inside(zone: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    out = np.zeros_like(zone)
    for ax in range(3):
        for shift in (1, -1):
            nb = np.roll(zone, shift, axis=ax)
            tnb = np.roll(tissue, shift, axis=ax)
            out |= zone & ~nb & tnb
    return out


def measure(result, quantity: str) -> float:
    from .tissue_state import TissueState
    ds = result.fields
    last = ds.isel(time=-1)
    state = last["tissue_state"].values
    labels = ds["labels"].values
    table = result.extras["label_table"]
    tissue = np.isin(labels, [k for k, v in table.items() if v not in ("air", "vessel")])
    zone = np.isin(state, [int(TissueState.COAGULATED), int(TissueState.FROZEN_DEAD)])
    spacing = [float(h) * 1e-3 for h in ds.attrs["spacing_mm"]]
    dV = float(np.prod(spacing))
    if quantity == "margin_peak_temperature_c":
        edge = _zone_boundary_inside(zone, tissue)
        return float(np.median(last["temperature_max"].values[edge]))
    if quantity == "transition_width_mm":
        if result.extras.get("modality") == "cryo":
            tmin = last["temperature_min"].values
            v1 = np.count_nonzero((tmin <= -20.0) & tissue) * dV
            v2 = np.count_nonzero((tmin <= -40.0) & tissue) * dV
            area = _face_area((tmin <= -30.0) & tissue, spacing)
        else:
            om = last["damage_omega"].values
            v1 = np.count_nonzero((om >= 0.105) & tissue) * dV
            v2 = np.count_nonzero((om >= 2.30) & tissue) * dV
            area = _face_area((om >= 1.0) & tissue, spacing)
        return (v1 - v2) / area * 1e3 if area > 0 else float("nan")
    raise ValueError(f"unknown quantity {quantity}")


def run_case(case: Case, extra_sets=()) -> dict:
    import tissuefate as tf
    sc = tf.load_scenario(case.scenario, list(case.overrides) + list(case.coarse) + list(extra_sets)
                          + ["fate.enabled=false", "course.healing=false"])
    res = tf.run(sc)
    sim = measure(res, case.quantity)
    lo, hi = case.published
    if lo == hi:
        err = (sim - lo) / lo
        ok = abs(err) <= case.tolerance
    else:
        err = 0.0 if lo <= sim <= hi else (sim - (lo if sim < lo else hi)) / (hi - lo)
        ok = lo <= sim <= hi
    return {"id": case.id, "quantity": case.quantity, "simulated": sim, "published": [lo, hi], "unit": case.unit,
            "error": err, "within_tolerance": bool(ok), "tolerance": case.tolerance, "source": case.source,
            "grid": sc.domain.voxel_size * 1e3, "ablation_zone_ml": res.metrics["ablation_zone_ml"]}


def run_cases(cases=CASES, extra_sets=()) -> list[dict]:
    return [run_case(c, extra_sets) for c in cases]


def markdown_table(rows: list[dict]) -> str:
    head = "| case | simulated | published | error | within | source |\n|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        lo, hi = r["published"]
        pub = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        err = f"{100 * r['error']:+.0f} %" if lo == hi else ("inside" if r["error"] == 0 else f"{r['error']:+.2f} of range")
        lines.append(f"| {r['id']} | {r['simulated']:.3g} {r['unit']} | {pub} {r['unit']} | {err} | "
                     f"{'yes' if r['within_tolerance'] else 'NO'} | {r['source']} |")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":   # pragma: no cover
    import json
    import sys
    rows = run_cases(extra_sets=sys.argv[1:])
    print(markdown_table(rows))
    print(json.dumps(rows, indent=1))
