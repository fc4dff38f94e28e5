"""Parameters of what happens after the kill (Phases II-III), as one readable table.

Every row: SI value, unit, the value as a reader writes it, the source (a key into ``../shared/science/``) or a
hypothesis flag with a plausible range. Death modes are the ways a voxel died, kept apart because the seed
claims are about their differences: ``oxidative`` (ClO2), ``chemical`` (ethanol), ``coagulated`` (heat),
``frozen`` (lethal freezing), ``ischemic`` (loss of perfusion). A per-mode parameter is named
``<quantity>_<mode>``; setting the oxidative row equal to the coagulated row makes the two modes identical to
the model (no built-in preference: tests/test_fate.py).

Overrides: a scenario's ``model: {fate: {name: value}}`` with units, e.g. ``release_time_oxidative: 30 min``.
"""
from __future__ import annotations

import math

from ..errors import ScenarioError
from ..tissue import Param, make_param

DEATH_MODES = ("oxidative", "chemical", "coagulated", "frozen", "ischemic")

DAY = 86400.0
MM = 1e-3
R_GAS = 8.314

# shrinkage kinetics (Farina 2016): Ea measured; A a hypothesis giving a 60 s time constant at 90 degC
_EA_SHRINK = 201e3
_A_SHRINK = math.exp(_EA_SHRINK / (R_GAS * 363.15)) / 60.0

_H = True   # hypothesis


def _p(name, value, unit, text, source, hypothesis=False, range=None) -> Param:
    return make_param(name, value, unit, text, source, hypothesis, range)


_ROWS = [
    # --- composition (per volume of undeformed tissue)
    _p("cell_water_fraction", 0.7, "1", "0.7", "hypothesis: water is ~70 % of cell volume [R]", _H, (0.6, 0.8)),
    _p("matrix_solid_fraction", 0.05, "1", "0.05",
       "hypothesis: extracellular-matrix solids per tissue volume (cells = 1 - interstitial - matrix)", _H, (0.02, 0.15)),
    # --- water release after membrane failure: fraction of the cell water released, time constant
    _p("release_fraction_oxidative", 0.2, "1", "0.2",
       "hypothesis: fate.md suggested structure 2 (oxidant volume loss 0-10 % [H]; 0.2 of cell water ~ 10 %)", _H, (0.0, 0.4)),
    _p("release_time_oxidative", 20 * 60.0, "s", "20 min", "hypothesis: fate.md suggested structure 2 (chemicals 5-60 min [H])",
       _H, (300.0, 3600.0)),
    _p("release_fraction_chemical", 0.4, "1", "0.4",
       "fate.md §4 (ethanol-saturated liver keeps 80 % of its volume [V secondary]; 0.4 of cell water ~ 20 %)", _H, (0.1, 0.6)),
    _p("release_time_chemical", 10 * 60.0, "s", "10 min", "hypothesis: fate.md suggested structure 2 (5-60 min [H])",
       _H, (300.0, 3600.0)),
    _p("release_fraction_coagulated", 0.6, "1", "0.6",
       "fate.md §4 (thermal shrinkage 52-74 % volume ex vivo incl. vapour, Farina 2014 [V]); of the Arrhenius-shrunk part",
       _H, (0.3, 0.9)),
    _p("release_time_coagulated", 120.0, "s", "2 min", "fate.md §4 (shrinkage develops over 1-3 min, Farina 2014 [V])",
       _H, (60.0, 180.0)),
    _p("release_fraction_frozen", 0.6, "1", "0.6", "hypothesis: freeze-thaw ruptures most membranes", _H, (0.3, 0.9)),
    _p("release_time_frozen", 10 * 60.0, "s", "10 min", "hypothesis: release on thawing", _H, (60.0, 3600.0)),
    _p("release_fraction_ischemic", 0.2, "1", "0.2", "hypothesis: as oxidative (oncotic death, no fixation)", _H, (0.0, 0.4)),
    _p("release_time_ischemic", 3600.0, "s", "1 h", "hypothesis", _H, (600.0, 6 * 3600.0)),
    # --- thermal shrinkage kinetics (the part of the coagulated voxel's water the heat squeezed out)
    _p("shrinkage_activation_energy", _EA_SHRINK, "J/mol", "201 kJ/mol",
       "fate.md §4 / parameters.md (Farina L et al. 2016 Physiol Meas 37:1474, overall Ea 201 kJ/mol [V])"),
    _p("shrinkage_frequency_factor", _A_SHRINK, "1/s", f"{_A_SHRINK:.3g} 1/s",
       "hypothesis: gives a 60 s time constant at 90 degC (Farina: shrinkage within minutes [V])", _H,
       (_A_SHRINK / 10.0, _A_SHRINK * 6.0)),
    # --- drainage (Starling/lymph terms from the tissue library)
    _p("necrotic_conductivity_factor", 3.0, "1", "3", "hypothesis: dead tissue conducts water more easily (membranes lost)",
       _H, (1.0, 10.0)),
    _p("lymph_function_dead", 0.0, "1", "0", "hypothesis: lymphatics in dead tissue do not drain", _H, (0.0, 0.5)),
    _p("edema_rate", 0.1 / DAY, "1/s", "0.1 /d",
       "hypothesis: inflammatory filtration per unit inflammatory density (fate.md suggested structure 3)", _H,
       (0.02 / DAY, 1.0 / DAY)),
    # --- inflammation / demarcation rim
    _p("inflammation_lag", 6 * 3600.0, "s", "6 h", "fate.md §1.1 (MI: PMN margination 4-6 h, diapedesis 8-12 h [V])",
       _H, (4 * 3600.0, 12 * 3600.0)),
    _p("recruitment_rate", 1.0 / DAY, "1/s", "1 /d", "hypothesis: PMN peak at days 1-3 (fate.md §1.1 [V])", _H,
       (0.3 / DAY, 3.0 / DAY)),
    _p("inflammatory_removal_rate", 0.3 / DAY, "1/s", "0.3 /d", "fate.md §2 (macrophage removal 0.3 /d, Adler 2020 [V])"),
    _p("inflammatory_cell_diffusivity", 0.05e-6 / DAY, "m^2/s", "0.05 mm^2/d",
       "hypothesis: fate.md suggested structure 4 (0.01-0.1 mm^2/d [H])", _H, (0.01e-6 / DAY, 0.1e-6 / DAY)),
    _p("rim_source_width", 1.0 * MM, "m", "1 mm", "hypothesis: fate.md suggested structure 3 (within 1-3 mm of dead tissue)",
       _H, (0.5 * MM, 3.0 * MM)),
    _p("granulation_time", 7 * DAY, "s", "7 d", "fate.md §1.1 (granulation tissue days 7-14 [V])", _H, (4 * DAY, 14 * DAY)),
    # --- matrix integrity and separation
    _p("oxidative_matrix_attack", 0.5, "1", "0.5",
       "hypothesis (seed debridement claim): integrity lost per fraction of the slow reductive pool oxidised", _H, (0.0, 1.0)),
    _p("integrity_after_death_coagulated", 1.0, "1", "1",
       "hypothesis: heat-fixed proteins keep the mass cohesive (fate.md suggests scaffold 0.1-0.3 for regeneration)", _H,
       (0.1, 1.0)),
    _p("integrity_after_death_frozen", 0.9, "1", "0.9", "fate.md suggested structure 1 (cryo/IRE 0.8-1 [H])", _H, (0.8, 1.0)),
    _p("integrity_after_death_chemical", 1.0, "1", "1", "hypothesis: ethanol fixes tissue (fate.md §4 [V qual.])", _H,
       (0.5, 1.0)),
    _p("integrity_after_death_ischemic", 1.0, "1", "1", "hypothesis", _H, (0.8, 1.0)),
    _p("protease_rate", 0.25 / DAY, "1/s", "0.25 /d",
       "hypothesis calibrated to a perfused dry-necrosis interface separating in ~7-14 d (fate.md §3: cord 7.4 +- 3.3 d [V])",
       _H, (0.1 / DAY, 1.0 / DAY)),
    _p("digestibility_oxidative", 1.0, "1", "1", "hypothesis: enzymes partly active, no fixation (fate.md suggested 1)", _H,
       (0.3, 1.0)),
    _p("digestibility_chemical", 0.3, "1", "0.3", "hypothesis: ethanol-fixed (fate.md suggested 5: k_c/k_l 0.05-0.3)", _H,
       (0.05, 1.0)),
    _p("digestibility_coagulated", 0.15, "1", "0.15",
       "fate.md suggested structure 5 (coagulated resists proteolysis [V]; k_c/k_l 0.05-0.3 [H])", _H, (0.05, 0.3)),
    _p("digestibility_frozen", 1.0, "1", "1", "hypothesis: proteins not denatured by freezing", _H, (0.3, 1.0)),
    _p("digestibility_ischemic", 1.0, "1", "1", "hypothesis", _H, (0.3, 1.0)),
    _p("separation_integrity", 0.2, "1", "0.2", "hypothesis: an interface digested below this is separated", _H, (0.05, 0.5)),
    _p("interface_strength", 5e3, "Pa", "5 kPa",
       "hypothesis: tensile strength of an intact necrotic-viable interface (scaled by its integrity)", _H, (1e3, 5e4)),
    # --- stiffness of dead tissue relative to the living tissue it was
    _p("stiffness_factor_oxidative", 0.5, "1", "0.5", "hypothesis (seed claim: oxidative necrosis softens; parameters.md F)",
       _H, (0.2, 1.0)),
    _p("stiffness_factor_chemical", 2.0, "1", "2", "hypothesis: ethanol fixation stiffens", _H, (1.0, 5.0)),
    _p("stiffness_factor_coagulated", 4.0, "1", "4",
       "parameters.md F (MWA centre 78-97 kPa vs normal, Xu 2024 [V]; 24.7 kPa necrosis threshold, Guo [V])", _H, (2.0, 20.0)),
    _p("stiffness_factor_frozen", 0.5, "1", "0.5", "hypothesis: thawed cryo-necrosis is soft", _H, (0.2, 1.0)),
    _p("stiffness_factor_ischemic", 1.0, "1", "1", "hypothesis", _H, (0.5, 2.0)),
    _p("integrity_stiffness_floor", 0.1, "1", "0.1", "hypothesis: E scales with max(integrity, floor)", _H, (0.02, 0.5)),
    # --- movement and detachment
    _p("detach_separated_fraction", 0.9, "1", "0.9", "fate.md suggested structure 7 (80-95 % of the boundary [H])", _H,
       (0.8, 0.95)),
    _p("extrusion_speed", 0.2 * MM / DAY, "m/s", "0.2 mm/d", "fate.md suggested structure 7 (0.05-0.5 mm/d [H]; no source [NF])",
       _H, (0.05 * MM / DAY, 0.5 * MM / DAY)),
    _p("extrusion_max_depth", 10 * MM, "m", "10 mm",
       "hypothesis: resistance law v = v0 G (1 - h_front / h_max); deeper masses do not move", _H, (3 * MM, 30 * MM)),
]

FATE: dict[str, Param] = {p.name: p for p in _ROWS}


def fate_parameters(overrides: dict | None = None) -> dict[str, float]:
    """SI values of the table with a scenario's ``model.fate`` overrides (bad name or unit: ScenarioError)."""
    from ..parameters import _parse_model_value
    values = {k: p.value for k, p in FATE.items()}
    for k, v in (overrides or {}).items():
        if k not in FATE:
            raise ScenarioError(f"model.fate.{k}", k, f"one of {sorted(FATE)}")
        x = _parse_model_value(v, FATE[k].unit, f"model.fate.{k}")
        unit_interval = FATE[k].unit == "1" and "factor" not in k     # fractions, integrities, digestibilities
        if x < 0 or (unit_interval and x > 1):
            raise ScenarioError(f"model.fate.{k}", v, "a value in [0, 1]" if unit_interval
                                else f"a non-negative value in {FATE[k].unit}")
        values[k] = x
    return values


def per_mode(values: dict, quantity: str) -> dict[str, float]:
    """``{mode: value}`` of a per-mode quantity (modes without a row: None)."""
    return {m: values.get(f"{quantity}_{m}") for m in DEATH_MODES}


def fate_hypotheses(values: dict) -> list[dict]:
    return [{"name": f"fate.{k}", "value": values[k], "unit": p.unit, "range": list(p.range) if p.range else None,
             "source": p.source} for k, p in FATE.items() if p.hypothesis]
