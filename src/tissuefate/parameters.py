"""Model parameters that are not tissue properties (solutes, procedures), with units and sources.

Same conventions as the tissue library: SI values, a source key into ../shared/science/ or a
``hypothesis`` flag with a plausible range (SI). Results list the hypotheses they depend on.
"""
from __future__ import annotations

from .tissue import Param


def _p(name, value, unit, source, hypothesis=False, range=None):
    return Param(name, float(value), unit, f"{value} {unit}", source, hypothesis, range)


SOLUTE_DIFFUSIVITY = {
    # free-water diffusivities at 37 degC; the tissue hindrance factor is a tissue property
    "clo2": _p("D_clo2", 2.5e-9, "m^2/s", "parameters.md A2 (Wilke-Chang estimate at 37 degC [D]; 1.5e-9 used by Noszticzius [R])",
               True, (1.5e-9, 2.5e-9)),
    "chlorite": _p("D_chlorite", 1.4e-9, "m^2/s", "hypothesis (small anion, ~ chloride-like)", True, (1.0e-9, 2.0e-9)),
    "hocl": _p("D_hocl", 1.5e-9, "m^2/s", "hypothesis (small neutral molecule)", True, (1.0e-9, 2.0e-9)),
    "ethanol": _p("D_ethanol", 1.2e-9, "m^2/s", "injection.md §5 (ethanol in water ~1.2e-9 at 25 degC [R]; tissue 5e-10 [V-code])"),
    "injectate": _p("D_injectate", 2.3e-9, "m^2/s", "hypothesis (self-diffusion of water, mixing of injected and interstitial water)",
                    True, (1.0e-9, 3.0e-9)),
}

PROCEDURE = {
    "perfusion_territory": _p("perfusion_territory", 1.0e-3, "m",
                              "hypothesis: perfusion of a voxel follows the vessel integrity within this distance "
                              "(feeding vessels), which lets vessel damage cause ischemia beyond the oxidised zone",
                              True, (0.0, 3.0e-3)),
    "track_seal_factor": _p("track_seal_factor", 1.0, "1", "injection.md §6.4 (sigma_s = 1 G, range 0-3 G)", True, (0.0, 3.0)),
    "washout_partition": _p("washout_partition", 1.0, "1",
                                     "hypothesis: perfusion removes dissolved species at their interstitial concentration",
                                     True, (0.3, 1.0)),
}


def hypotheses_of(params, values: dict | None = None) -> list[dict]:
    rows = []
    for p in params:
        if p.hypothesis:
            rows.append({"name": p.name, "value": (values or {}).get(p.name, p.value), "unit": p.unit, "range": list(p.range) if p.range else None,
                         "source": p.source})
    return rows


# Hypothesis parameters of the process modules' parameter objects: field -> (unit, range (SI), source).
# Values are read from the objects actually used, so overrides show up in the results.
MODULE_HYPOTHESES = {
    "OxidantParams": {
        "k_clo2_slow": ("m^3/(mol s)", (30.0, 4.0e3), "hypothesis: mix of Tyr (3.6e5 M^-1s^-1 [D]), NADH (3.9e6 [V]), Trp (3.4e4 [R])"),
        "k_clo2_decay": ("1/s", (0.0, 1e-4), "hypothesis: self-decay negligible at pH 7.4 (Odeh 2002 [V] qualitative)"),
        "yield_chlorite_fast": ("mol/mol", (0.3, 1.0), "hypothesis: complement of the HOCl yield"),
        "k_hocl_fast": ("m^3/(mol s)", (1.0, 1.0e5), "hypothesis: HOCl + thiols 1e7 M^-1 s^-1"),
        "k_hocl_slow": ("m^3/(mol s)", (0.0, 1.0e2), "hypothesis"),
        "k_chlorite_fast": ("m^3/(mol s)", (1e-4, 1.0), "hypothesis: chlorite much slower than ClO2, acid-assisted (Ison 2006 [R])"),
        "k_chlorite_slow": ("m^3/(mol s)", (0.0, 1e-2), "hypothesis"),
    },
    "DeathParams": {
        "slow_pool_threshold": ("1", (0.2, 1.0), "hypothesis: fraction of the slow pool consumed that commits a cell"),
        "tau_oxidative": ("s", (600.0, 21600.0), "hypothesis: regulated-necrosis completion time constant"),
        "tau_chemical": ("s", (0.0, 600.0), "hypothesis: delay after the ethanol dose reaches 1"),
        "tau_ischemic": ("s", (0.0, 3600.0), "hypothesis: delay after the ischemic tolerance is exceeded"),
    },
    "VesselParams": {
        "k_clo2_tumor": ("m^3/(mol s)", (0.1, 30.0), "hypothesis: tumour microvessel loss per ClO2 exposure"),
        "k_clo2_normal": ("m^3/(mol s)", (0.1, 30.0), "hypothesis: normal microvessel loss per ClO2 exposure"),
        "k_ethanol_tumor": ("1", (0.5, 10.0), "hypothesis: tumour microvessel loss per unit ethanol dose"),
        "k_ethanol_normal": ("1", (0.5, 10.0), "hypothesis: normal microvessel loss per unit ethanol dose"),
        "hemostasis_time": ("s", (60.0, 900.0), "hypothesis: temporary (not sealing) hemostasis of the needle track"),
        "tau_recovery": ("s", (0.0, 600.0), "hypothesis: recovery of track perfusion after hemostasis"),
    },
    "EthanolKillParams": {
        "c_min": ("1", (0.02, 0.1), "hypothesis: no acute kill below ~5 % ethanol (HepG2 [V])"),
    },
}


def module_hypotheses(obj) -> list[dict]:
    rows = []
    for fname, (unit, rng, src) in MODULE_HYPOTHESES.get(type(obj).__name__, {}).items():
        v = getattr(obj, fname)
        if isinstance(v, (int, float)):
            rows.append({"name": f"{type(obj).__name__}.{fname}", "value": float(v), "unit": unit,
                         "range": list(rng), "source": src})
    return rows


# ----------------------------------------------------------------------------- scenario overrides (model: ...)

def _parse_model_value(value, unit: str, field: str) -> float:
    from .errors import ScenarioError
    from .units import _normalise, ureg
    if isinstance(value, bool):
        raise ScenarioError(field, value, f"a number in SI units ({unit}) or a quantity with units")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        q = ureg().Quantity(_normalise(str(value)))
        si = unit.replace("^", "**")
        return float(q.to(si if si not in ("1", "") else "dimensionless").magnitude)
    except Exception:
        raise ScenarioError(field, value, f"a quantity convertible to {unit}") from None


def model_parameters(overrides: dict) -> dict:
    """Process parameter objects for a scenario's ``model:`` section (unknown group/field: ScenarioError)."""
    from dataclasses import fields as dc_fields, replace

    from .errors import ScenarioError
    from .physics.death import DeathParams
    from .physics.ethanol import EthanolKillParams
    from .physics.oxidant import OxidantParams
    from .physics.vessels import VesselParams

    objs = {"oxidant": OxidantParams(), "death": DeathParams(), "vessels": VesselParams(),
            "ethanol_kill": EthanolKillParams()}
    procedure = {k: p.value for k, p in PROCEDURE.items()}
    per_tissue = {"fast_pool_threshold": "oxidative_death_threshold", "ischemia_tolerance": "ischemic_tolerance"}
    for group, values in (overrides or {}).items():
        if group in ("thermal", "thermal_damage", "fate"):
            continue   # validated by tissuefate.thermal and tissuefate.physics.fate_parameters
        if group == "procedure":
            for k, v in (values or {}).items():
                if k not in PROCEDURE:
                    raise ScenarioError(f"model.procedure.{k}", k, f"one of {sorted(PROCEDURE)}")
                procedure[k] = _parse_model_value(v, PROCEDURE[k].unit, f"model.procedure.{k}")
            continue
        if group not in objs:
            raise ScenarioError(f"model.{group}", group,
                                f"one of {sorted(objs) + ['fate', 'procedure', 'thermal', 'thermal_damage']}")
        obj = objs[group]
        names = {f.name for f in dc_fields(obj)}
        upd = {}
        for k, v in (values or {}).items():
            field = f"model.{group}.{k}"
            if k in per_tissue and group == "death":
                raise ScenarioError(field, k, f"a per-tissue value: set tissues.<tissue>.{per_tissue[k]} instead")
            if k not in names:
                raise ScenarioError(field, k, f"a parameter of {type(obj).__name__}: {sorted(names)}")
            unit = MODULE_HYPOTHESES.get(type(obj).__name__, {}).get(k, ("1",))[0]
            upd[k] = _parse_model_value(v, unit, field)
        try:
            objs[group] = replace(obj, **upd)
        except (ValueError, TypeError) as err:
            raise ScenarioError(f"model.{group}", upd, str(err)) from None
    objs["procedure"] = procedure
    return objs
