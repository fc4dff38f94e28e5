"""Validation of the healing model against published involution of necrotic zones.

Each case is a spherical necrotic zone of one death mode in one host tissue (the library's row, so its
regeneration rate), left to heal with the default healing parameters: one parameter set, no per-case tuning.
The measured quantity is the *zone volume remaining*, V(t) / V(t_ref), where the zone volume is what imaging
counts as not native tissue::

    V = sum over voxels of (debris + cleared fluid + granulation + scar - scar contraction) dV

(regenerated host and viable tumour are native). ``run_cases`` returns one row per case with the simulated
value, the published value or range, the error and whether it is within the case's tolerance;
``docs/validation_healing.md`` holds the table as measured on 1 mm voxels and ``tests/test_validation_healing.py``
re-runs it on 2 mm voxels. The published numbers are fate.md's validation cases F4, F5 and F6.

What the cases cannot capture, by construction: edema (the early swelling and its resolution, which dominates
the first week of infarct shrinkage) is not in the healing model, so infarct volumes are taken relative to day 7;
irreversible electroporation is not a death mode of tissuefate, so its zone is represented by debris of the
ischemic mode (digestibility 1, no protein fixation), an assumption stated in the case.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY = 86400.0


@dataclass(frozen=True)
class Case:
    id: str
    observation: str
    source: str
    mode: str                    # death mode of the zone's debris
    host: str                    # library tissue around and in the zone
    diameter_mm: float
    day: float                   # measurement day
    ref_day: float               # V(day) / V(ref_day)
    published: tuple[float, float]
    tolerance: float = 0.15      # relative, for point values; ranges: inside the range
    notes: str = ""
    compare_diameter_mm: float | None = None   # size-independence cases: ratio of two diameters' remaining


CASES = [
    Case("f5_rfa_pig_liver_3wk",
         "RFA zones in pig liver persist at 3 weeks with no significant volume reduction (and form a fibrous capsule)",
         "fate.md F5 / parameters.md E: 'Liver regeneration after radiofrequency ablation versus irreversible "
         "electroporation' [V]",
         "coagulated", "liver", 25.0, 21.0, 0.0, (0.85, 1.0),
         notes="zone diameter not in the abstract (25 mm assumed); 'no significant reduction' read as >= 85 % left"),
    Case("f5_ire_pig_liver_3wk",
         "IRE zones in pig liver at 3 weeks: 6 of 10 gone, 4 of 10 shrunk by more than half (regeneration)",
         "fate.md F5 / parameters.md E [V]",
         "ischemic", "liver", 25.0, 21.0, 0.0, (0.0, 0.5),
         notes="IRE is not a tissuefate death mode: its zone is ischemic-mode debris (digestibility 1); 25 mm assumed"),
    Case("f4_rfa_breast_fibroadenoma_1mo",
         "RFA of breast fibroadenoma (256 nodules): volume reduction ratio 39.06 % at 1 month",
         "fate.md F4: Li P et al. J Cancer Res Ther [V]",
         "coagulated", "fat", 20.0, 30.0, 0.0, (0.61, 0.61),
         notes="breast is represented by the library's fat (no breast row); 20 mm nodule assumed"),
    Case("f4_rfa_breast_fibroadenoma_3mo",
         "RFA of breast fibroadenoma: volume reduction ratio 75.99 % at 3 months",
         "fate.md F4: Li P et al. [V]",
         "coagulated", "fat", 20.0, 90.0, 0.0, (0.24, 0.24),
         notes="as above"),
    Case("f6_infarct_4mo",
         "Reperfused infarct mass (66 STEMI, CMR): 25 g at <= 1 week -> 17 g at ~4 months (-32 %)",
         "fate.md F6: Pokorney SD et al. J Cardiovasc Magn Reson 2012;14:62 [V]",
         "ischemic", "muscle", 20.0, 120.0, 7.0, (0.68, 0.68),
         notes="myocardium represented by the library's skeletal muscle; relative to day 7 (edema not modelled); "
               "20 mm zone assumed (25 g of myocardium is a larger, non-spherical region)"),
    Case("f6_infarct_14mo",
         "Reperfused infarct mass: 25 g at <= 1 week -> 15 g at ~14 months (-40 %)",
         "fate.md F6: Pokorney et al. 2012 [V]",
         "ischemic", "muscle", 20.0, 420.0, 7.0, (0.60, 0.60),
         notes="as above"),
    Case("f6_infarct_size_independence",
         "Percent infarct reduction at ~4 months is independent of the initial size",
         "fate.md F6: Pokorney et al. 2012 [V]",
         "ischemic", "muscle", 10.0, 120.0, 7.0, (1.0, 1.0), compare_diameter_mm=30.0,
         notes="ratio of the remaining fraction of a 10 mm zone to that of a 30 mm zone"),
]


def zone_volume(state) -> float:
    """Zone volume per voxel volume: debris, cleared fluid, granulation and scar, less scar contraction."""
    from .physics.healing import IDX
    f = state.frac
    v = state.debris + f[IDX["fluid"]] + f[IDX["granulation"]] + f[IDX["scar"]] - state.contraction
    return float(v.sum())


def remaining_fraction(mode: str, host: str, diameter_mm: float, days: list[float], ref_day: float = 0.0,
                       voxel_mm: float = 1.0, dt_days: float = 0.25, overrides: dict | None = None) -> list[float]:
    """V(day) / V(ref_day) for a ball of ``mode`` debris of ``diameter_mm`` in uniform ``host`` tissue.

    The box is twice the diameter wide, all tissue, with zero flux at its faces; the zone starts without
    microvessels (killed), the host around it intact."""
    from .physics.fate_parameters import fate_parameters, per_mode
    from .physics.healing import HealingModel, HealingState
    from .physics.healing_parameters import healing_parameters
    from .tissue import load_library

    n = max(int(round(2.0 * diameter_mm / voxel_mm)), 5)
    shape = (n, n, n)
    i, j, k = np.indices(shape)
    c = (n - 1) / 2.0
    zone = ((i - c) ** 2 + (j - c) ** 2 + (k - c) ** 2) * voxel_mm ** 2 <= (diameter_mm / 2.0) ** 2
    tissue = np.ones(shape, bool)
    regeneration = np.full(shape, load_library().value(host, "regeneration_rate"))
    model = HealingModel(healing_parameters(overrides), per_mode(fate_parameters(), "digestibility"), tissue,
                         regeneration, (voxel_mm * 1e-3,) * 3)
    state = HealingState.from_labels(np.zeros(shape, bool), tissue)
    state.kill(zone, mode)
    state.vascular[zone] = 0.0
    ref = None
    if ref_day <= 0.0:
        ref = zone_volume(state)
    out = []
    for day in sorted(set(days) | {ref_day}):
        model.advance(state, day * DAY, dt_days * DAY)
        if day == ref_day and ref is None:
            ref = zone_volume(state)
        if day in days:
            out.append(zone_volume(state) / ref)
    return out


def run_case(case: Case, voxel_mm: float = 1.0) -> dict:
    (value,) = remaining_fraction(case.mode, case.host, case.diameter_mm, [case.day], case.ref_day, voxel_mm)
    if case.compare_diameter_mm is not None:
        (other,) = remaining_fraction(case.mode, case.host, case.compare_diameter_mm, [case.day], case.ref_day,
                                      voxel_mm)
        value = value / other
    lo, hi = case.published
    if lo == hi:
        error = (value - lo) / lo
        within = abs(error) <= case.tolerance
    else:
        error = 0.0 if lo <= value <= hi else (value - (lo if value < lo else hi)) / max(abs(hi), 1e-12)
        within = lo <= value <= hi
    return {"id": case.id, "observation": case.observation, "source": case.source, "simulated": value,
            "published": [lo, hi], "error": error, "within_tolerance": bool(within), "notes": case.notes,
            "voxel_mm": voxel_mm}


def run_cases(cases=CASES, voxel_mm: float = 1.0) -> list[dict]:
    return [run_case(c, voxel_mm) for c in cases]


def markdown_table(rows: list[dict]) -> str:
    head = "| case | simulated | published | error | within | source |\n|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        lo, hi = r["published"]
        pub = f"{lo:.2f}" if lo == hi else f"{lo:.2f}–{hi:.2f}"
        err = f"{100 * r['error']:+.0f} %" if lo == hi else ("inside" if r["within_tolerance"]
                                                             else f"{100 * r['error']:+.0f} % outside")
        lines.append(f"| {r['id']} | {r['simulated']:.2f} | {pub} | {err} | "
                     f"{'yes' if r['within_tolerance'] else '**no**'} | {r['source']} |")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":   # pragma: no cover
    import json
    import sys
    voxel = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    rows = run_cases(voxel_mm=voxel)
    print(markdown_table(rows))
    print(json.dumps(rows, indent=1))
