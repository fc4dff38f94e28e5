"""Units at the edge: scenario text such as ``2 mL``, ``300 ppm``, ``37 degC`` -> SI floats.

Everything inside tissuefate is SI (m, s, kg, mol, Pa, K). This module is the only place that
parses units. Conventions:

* ``ppm`` for a dissolved oxidant means mg/L (the convention of ClO2 solution labels);
  it is converted to mol/m^3 with the solute's molar mass (ClO2: 67.45 g/mol, so 1 ppm = 14.83 uM).
* ``%`` for ethanol means volume fraction (v/v).
* A bare number is accepted only where the expected unit is dimensionless.
"""
from __future__ import annotations

import re
from functools import lru_cache

import pint

from .errors import ScenarioError

CLO2_MOLAR_MASS = 67.45e-3  # kg/mol


@lru_cache(maxsize=1)
def ureg() -> pint.UnitRegistry:
    reg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    reg.define("mmHg_ = 133.322 * pascal = mmhg")
    return reg


# expected kind -> (SI unit string, human description)
KINDS = {
    "length": ("m", "a length, e.g. '12 mm'"),
    "volume": ("m**3", "a volume, e.g. '2 mL'"),
    "flow": ("m**3/s", "a flow rate, e.g. '0.5 mL/min'"),
    "time": ("s", "a duration, e.g. '24 h' or '10 min'"),
    "temperature": ("K", "a temperature, e.g. '37 degC'"),
    "pressure": ("Pa", "a pressure, e.g. '5 kPa' or '20 mmHg'"),
    "molar_concentration": ("mol/m**3", "a molar concentration, e.g. '20 mM'"),
    "viscosity": ("Pa*s", "a viscosity, e.g. '1.1 mPa*s'"),
    "diffusivity": ("m**2/s", "a diffusivity, e.g. '1.5e-9 m^2/s'"),
    "hydraulic_conductivity": ("m**2/(Pa*s)", "a hydraulic conductivity, e.g. '1e-14 m^2/(Pa*s)'"),
    "rate": ("1/s", "a rate, e.g. '6.4e-3 1/s'"),
    "energy_per_area": ("J/m**2", "a fracture energy, e.g. '164 J/m^2'"),
    "conductance_density": ("1/(Pa*s)", "a conductance per volume, e.g. '4.2e-7 1/(Pa*s)'"),
    "second_order_rate": ("m**3/(mol*s)", "a second-order rate constant, e.g. '1e7 1/(M*s)'"),
    "dose": ("mol*s/m**3", "an exposure, e.g. '1 mM*s'"),
    "thermal_conductivity": ("W/(m*K)", "a thermal conductivity, e.g. '0.512 W/(m*K)'"),
    "density": ("kg/m**3", "a density, e.g. '1060 kg/m^3'"),
    "specific_heat": ("J/(kg*K)", "a specific heat, e.g. '3600 J/(kg*K)'"),
    "electrical_conductivity": ("S/m", "an electrical conductivity, e.g. '0.35 S/m'"),
    "molar_energy": ("J/mol", "an activation energy, e.g. '257.7 kJ/mol'"),
    "power": ("W", "a power, e.g. '60 W'"),
    "energy": ("J", "an energy, e.g. '20 kJ'"),
    "frequency": ("Hz", "a frequency, e.g. '2.45 GHz'"),
    "resistance": ("ohm", "a resistance, e.g. '20 ohm'"),
    "heat_transfer": ("W/(m**2*K)", "a heat-transfer coefficient, e.g. '10 W/(m^2*K)'"),
    "dimensionless": ("", "a plain number or a fraction, e.g. '0.3' or '30 %'"),
}


def _normalise(text: str) -> str:
    t = text.strip().replace("^", "**").replace("µ", "u")
    t = re.sub(r"(?<![A-Za-z])M(?![A-Za-z])", "molar", t)   # 'mM', 'uM' handled by pint; bare 'M' = mol/L
    return t


def parse_quantity(value, kind: str, field: str) -> float:
    """Convert a scenario value to an SI float of the given kind; ScenarioError names the field otherwise."""
    si, desc = KINDS[kind]
    if isinstance(value, bool) or value is None:
        raise ScenarioError(field, value, desc)
    if isinstance(value, (int, float)):
        if kind == "dimensionless":
            return float(value)
        raise ScenarioError(field, value, desc, hint="write the unit with the number")
    if not isinstance(value, str):
        raise ScenarioError(field, value, desc)
    text = _normalise(value)
    if kind == "molar_concentration" and re.search(r"\bppm\b", text):
        # ppm of a dissolved oxidant is mg/L; convert via the molar mass of ClO2
        try:
            q = ureg().Quantity(text.replace("ppm", "mg/L")).to("kg/m**3").magnitude
        except Exception:
            raise ScenarioError(field, value, desc) from None
        return float(q / CLO2_MOLAR_MASS)
    try:
        q = ureg().Quantity(text)
    except Exception:
        raise ScenarioError(field, value, desc, hint="could not read the quantity") from None
    try:
        if kind == "dimensionless":
            return float(q.to("dimensionless").magnitude)
        return float(q.to(si).magnitude)
    except pint.DimensionalityError:
        raise ScenarioError(field, value, f"{desc} [unit {si}]", hint=f"'{q.units}' has the wrong dimension") from None


def format_si(value: float, si_unit: str) -> str:
    return f"{value:.4g} {si_unit}".strip()
