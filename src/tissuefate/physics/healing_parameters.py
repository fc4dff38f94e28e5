"""Parameters of healing between and after sessions (days to weeks), as one readable table.

Rows as in :mod:`.fate_parameters` (SI value, unit, value as written, source or hypothesis flag with a range).
The per-death-mode *digestibility* is shared with the post-kill model (``fate_parameters``
``digestibility_<mode>``): one number says how well phagocytes and proteases digest a mode's debris. The
per-mode *inflammatory potency* is here. Setting the oxidative rows equal to the coagulated ones makes the two
modes identical to the healing model (tests/test_healing.py, no built-in preference).

Overrides: a scenario's ``model: {healing: {name: value}}`` with units, e.g. ``clearance_rate: 0.3 1/d``;
the shared digestibilities are overridden in ``model.fate``.
"""
from __future__ import annotations

from ..errors import ScenarioError
from ..tissue import Param, make_param
from .fate_parameters import DEATH_MODES

DAY = 86400.0
MM = 1e-3
MM2_PER_DAY = 1e-6 / DAY
_H = True


def _p(name, value, unit, text, source, hypothesis=False, range=None) -> Param:
    return make_param(name, value, unit, text, source, hypothesis, range)


_ROWS = [
    # --- phagocytes (neutrophils + macrophages, one density relative to a saturated infiltrate)
    _p("phagocyte_recruitment_rate", 1.0 / DAY, "1/s", "1 /d",
       "hypothesis: peak infiltrate at days 1-3 (fate.md §1.1 MI timeline [V]); the post-kill recruitment_rate", _H,
       (0.3 / DAY, 3.0 / DAY)),
    _p("phagocyte_removal_rate", 0.3 / DAY, "1/s", "0.3 /d", "fate.md §2 (macrophage removal 0.3 /d, Adler 2020 [V])"),
    _p("phagocyte_diffusivity", 0.05 * MM2_PER_DAY, "m^2/s", "0.05 mm^2/d",
       "hypothesis: fate.md suggested structure 4 (cell migration 0.01-0.1 mm^2/d [H])", _H,
       (0.01 * MM2_PER_DAY, 0.1 * MM2_PER_DAY)),
    # --- debris clearance: d' = -k_clear * digestibility_mode * M * d
    _p("clearance_rate", 0.5 / DAY, "1/s", "0.5 /d",
       "hypothesis: debris removal per unit phagocyte density; calibrate to digestible (IRE-like) zones gone in "
       "~3 weeks and coagulated ones persisting (fate.md F5 [V]); macrophage clearance per volume [NF]", _H,
       (0.1 / DAY, 2.0 / DAY)),
    # --- fibroblasts / myofibroblasts (one density)
    _p("fibroblast_recruitment_rate", 0.9 / DAY, "1/s", "0.9 /d",
       "fate.md §2 (myofibroblast proliferation 0.9 /d, Adler 2020 [V code]), driven by the phagocyte density", _H,
       (0.3 / DAY, 2.0 / DAY)),
    _p("fibroblast_apoptosis_rate", 0.1 / DAY, "1/s", "0.1 /d",
       "fate.md §2 / suggested structure 8 (myofibroblast apoptosis 0.02-0.3 /d [R/V])", _H, (0.02 / DAY, 0.3 / DAY)),
    # --- vascular ingrowth (relative microvascular density v; logistic ingrowth + diffusion)
    _p("angiogenesis_rate", 1.0 / DAY, "1/s", "1 /d",
       "hypothesis: with the diffusivity below the ingrowth front moves 2 sqrt(D r) = 0.5 mm/d "
       "(fate.md §1.1 vascular loops 0.5 mm/day [V weak])", _H, (0.3 / DAY, 3.0 / DAY)),
    _p("angiogenesis_diffusivity", 0.0625 * MM2_PER_DAY, "m^2/s", "0.0625 mm^2/d",
       "[D] from a 0.5 mm/d front (fate.md §1.1 [V weak]) and the rate above", _H,
       (0.01 * MM2_PER_DAY, 0.25 * MM2_PER_DAY)),
    _p("vascular_density_granulation", 2.0, "1", "2",
       "fate.md suggested structure 9 (granulation perfusion 1.5-3 x, days 3-21 [H, shape V])", _H, (1.5, 3.0)),
    _p("vascular_density_scar", 0.4, "1", "0.4", "fate.md suggested structure 9 (scar perfusion 0.3-0.5 x normal, "
       "myocardium [V])", False, (0.3, 0.5)),
    # --- repair of cleared space
    _p("granulation_rate", 1.0 / DAY, "1/s", "1 /d",
       "hypothesis: cleared space fills with granulation at this rate per unit vascular density (granulation days "
       "7-14, fate.md §1.1 [V])", _H, (0.2 / DAY, 3.0 / DAY)),
    _p("collagen_rate", 0.1 / DAY, "1/s", "0.1 /d",
       "hypothesis: granulation becomes scar at this rate per unit fibroblast density (collagen synthesis peaks "
       "~day 7, strength 20 % at 3 wk: fate.md §2 [V])", _H, (0.03 / DAY, 0.3 / DAY)),
    _p("organisation_rate", 0.05 / DAY, "1/s", "0.05 /d",
       "hypothesis (the seed's fibrosis mechanism, switch off with 0): debris that stays undigested is organised "
       "into scar at this rate x fibroblast density x (1 - digestibility); coagulated MI stroma is collagenised "
       "(fate.md §1.1, G Ital Cardiol 1975 [V])", _H, (0.0, 0.2 / DAY)),
    _p("scar_contraction", 0.3, "1", "0.3",
       "hypothesis: volume lost by mature scar (contracture; morphoelastic models, fate.md §2 [V structure])", _H,
       (0.0, 0.6)),
    _p("scar_maturation_rate", 0.05 / DAY, "1/s", "0.05 /d",
       "hypothesis: scar contracts over weeks (strength 20 % at 3 wk, 80 % at 3 mo, fate.md §2 [V secondary])", _H,
       (0.01 / DAY, 0.2 / DAY)),
    # --- tumour regrowth (Fisher-KPP, TumorTwin form)
    _p("tumor_diffusivity", 0.05 * MM2_PER_DAY, "m^2/s", "0.05 mm^2/d",
       "fate.md §5 (TumorTwin demo defaults 0.025-0.05 mm^2/d [V code])", _H, (0.0, 2.0 * MM2_PER_DAY)),
    _p("tumor_proliferation_rate", 0.025 / DAY, "1/s", "0.025 /d",
       "fate.md §5 (TumorTwin demos 0.025-0.05 /d [V code]; HCC net 0.004-0.008 /d, GBM 0.033 /d [D])", _H,
       (0.004 / DAY, 0.5 / DAY)),
    _p("tumor_perfusion_half", 0.2, "1", "0.2",
       "hypothesis: proliferation x v (1 + K)/(v + K), v the relative vascular density (growth slowed where "
       "perfusion is low, fate.md suggested structure 10 [H])", _H, (0.05, 1.0)),
    # --- bookkeeping thresholds
    _p("living_code_fraction", 0.01, "1", "0.01",
       "hypothesis: a voxel with at least this fraction of living cells counts as living for the next session "
       "(its properties are still the mix of what it holds)", _H, (0.001, 0.5)),
    _p("visible_tumor_fraction", 0.5, "1", "0.5",
       "hypothesis: a voxel with at least this viable-tumour fraction is visible tumour (imaging)", _H, (0.2, 0.8)),
]

_MODE_ROWS = [
    _p(f"inflammatory_potency_{m}", 1.0, "1", "1",
       "hypothesis: recruitment per unit debris of this death mode; no comparative in-vivo data [NF] "
       "(fate.md §6: ClO2 inflammation kinetics [NF]), so all modes start equal", _H, (0.2, 3.0))
    for m in DEATH_MODES
]

HEALING: dict[str, Param] = {p.name: p for p in _ROWS + _MODE_ROWS}


def healing_parameters(overrides: dict | None = None) -> dict[str, float]:
    """SI values of the table with a scenario's ``model.healing`` overrides (bad name or unit: ScenarioError)."""
    from ..parameters import _parse_model_value
    values = {k: p.value for k, p in HEALING.items()}
    for k, v in (overrides or {}).items():
        if k not in HEALING:
            raise ScenarioError(f"model.healing.{k}", k, f"one of {sorted(HEALING)}")
        x = _parse_model_value(v, HEALING[k].unit, f"model.healing.{k}")
        unit_interval = HEALING[k].unit == "1" and not k.startswith(("inflammatory_potency", "vascular_density"))
        if x < 0 or (unit_interval and x > 1):
            raise ScenarioError(f"model.healing.{k}", v, "a value in [0, 1]" if unit_interval
                                else f"a non-negative value in {HEALING[k].unit}")
        values[k] = x
    return values


def healing_hypotheses(values: dict) -> list[dict]:
    return [{"name": f"healing.{k}", "value": values[k], "unit": p.unit, "range": list(p.range) if p.range else None,
             "source": p.source} for k, p in HEALING.items() if p.hypothesis]
