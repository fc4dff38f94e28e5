"""The validated scenario: YAML in, SI out.

A scenario file is safe-loaded YAML validated with pydantic v2. Every quantity is written with its
unit (``2 mL``, ``0.5 mL/min``, ``300 ppm``, ``12 mm``, ``24 h``) and converted to SI here, at the
edge; a value of the wrong dimension, a missing field or an unknown key is a :class:`ScenarioError`
naming the field, the value and what was expected. ``--set key=value`` overrides are applied to the
raw YAML tree before validation, so they are validated the same way.
"""
from __future__ import annotations

import copy
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from .errors import ScenarioError
from .units import KINDS, parse_quantity


def _si(kind: str, value: Any) -> float:
    if isinstance(value, float) and kind != "dimensionless" and getattr(value, "_si", False):
        return value
    try:
        return parse_quantity(value, kind, "")
    except ScenarioError as err:
        raise ValueError(f"expected {KINDS[kind][1]} [SI unit {KINDS[kind][0] or '1'}]") from err


def Q(kind: str):
    """A float field given in the scenario with units, stored in SI."""
    return Annotated[float, BeforeValidator(partial(_si, kind))]


Length, Volume, Flow, Time = Q("length"), Q("volume"), Q("flow"), Q("time")
Concentration, Viscosity = Q("molar_concentration"), Q("viscosity")
Point = Annotated[tuple[float, float, float], BeforeValidator(
    lambda v: tuple(_si("length", x) for x in v) if isinstance(v, (list, tuple)) and len(v) == 3 else _bad_point(v))]


def _bad_point(v):
    raise ValueError("expected a point [x, y, z] with units, e.g. [0 mm, 0 mm, -9 mm]")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Domain(Strict):
    voxel_size: Length = Field(description="edge of a cubic voxel")
    extent: Point | None = Field(None, description="domain edge lengths (phantoms); from the image for NIfTI")

    @field_validator("voxel_size")
    @classmethod
    def _positive(cls, v):
        if not (1e-5 <= v <= 5e-3):
            raise ValueError("expected a voxel size between 0.01 mm and 5 mm")
        return v


class SubcutaneousGeometry(Strict):
    phantom: Literal["subcutaneous"]
    tumor_center: Point
    tumor_semi_axes: Point
    skin_thickness: Length = 2e-3
    fat_thickness: Length = 4e-3
    air_gap: Length = 1e-3


class LiverGeometry(Strict):
    phantom: Literal["liver"]
    tumor_center: Point
    tumor_radius: Length
    vessel_point: Point
    vessel_direction: tuple[float, float, float]
    vessel_radius: Length


class TumorSpec(Strict):
    center: Point
    semi_axes: Point


class MultiTumorGeometry(Strict):
    phantom: Literal["multi_tumor"]
    tumors: list[TumorSpec] = Field(min_length=1)
    skin_thickness: Length = 2e-3
    fat_thickness: Length = 4e-3
    air_gap: Length = 1e-3


class NiftiGeometry(Strict):
    phantom: Literal["nifti"]
    path: str
    labels: dict[int, str] = Field(description="label value -> tissue name")


Geometry = Annotated[SubcutaneousGeometry | LiverGeometry | MultiTumorGeometry | NiftiGeometry,
                     Field(discriminator="phantom")]


class Injection(Strict):
    tip: Point
    direction: tuple[float, float, float] = Field((0.0, 0.0, 1.0), description="from the tip back along the shaft")
    gauge: int = Field(22, ge=10, le=34)
    volume: Volume
    rate: Flow
    start: Time = 0.0

    @field_validator("volume", "rate")
    @classmethod
    def _positive(cls, v, info):
        if not v > 0:
            raise ValueError(f"expected a positive {info.field_name}")
        return v

    @field_validator("direction")
    @classmethod
    def _unit(cls, v):
        if sum(x * x for x in v) == 0:
            raise ValueError("expected a non-zero direction vector")
        return v


class ClO2Agent(Strict):
    concentration: Concentration = Field(description="ClO2 in the injectate; ppm means mg/L")
    viscosity: Viscosity = 0.9e-3

    @field_validator("concentration")
    @classmethod
    def _range(cls, v):
        if not (0 < v <= 200.0):  # 200 mol/m^3 ~ 13 500 ppm, far above solubility
            raise ValueError("expected a concentration between 0 and 13 500 ppm (200 mM)")
        return v


class EthanolAgent(Strict):
    formulation: Literal["ethanol", "ec6", "ec12"] = "ethanol"
    ethanol_fraction: Annotated[float, BeforeValidator(partial(_si, "dimensionless"))] | None = Field(
        None, description="ethanol volume fraction of the injectate; default: the formulation's")

    @field_validator("ethanol_fraction")
    @classmethod
    def _frac(cls, v):
        if v is not None and not (0 < v <= 1):
            raise ValueError("expected a volume fraction in (0, 1], e.g. '99 %'")
        return v


Target = Literal["planned", "remaining_viable_tumor"]
TARGET_HELP = ("planned: the applicators where the scenario puts them; remaining_viable_tumor: the plan (written "
               "for the original tumour) is moved onto the largest remaining visible tumour components (course.py)")


class Targeting(Strict):
    """How an injection session aimed at ``remaining_viable_tumor`` chooses needles and doses."""
    max_needles: int = Field(3, ge=1, le=20, description="one needle on each of the largest components, at most this")
    volume_ratio: float | None = Field(
        None, gt=0, le=10, description="injected volume = ratio x the component's volume (ethanol 0.25-4 x tumour "
        "volume: Morhard 2017, parameters.md V14); null keeps the planned volume of the first injection")
    min_volume: Volume = 0.05e-6
    max_volume: Volume = 10e-6


class Session(Strict):
    """An injection session (ClO2 or ethanol)."""
    day: float = Field(0.0, ge=0)
    modality: Literal["clo2", "ethanol"]
    agent: ClO2Agent | EthanolAgent
    injections: list[Injection] = Field(min_length=1)
    follow_up: Time = 24 * 3600.0
    target: Target = Field("planned", description=TARGET_HELP)
    targeting: Targeting = Targeting()


# ----------------------------------------------------------------------------------------------- thermal sessions

Temperature, Power, Frequency = Q("temperature"), Q("power"), Q("frequency")
Resistance = Q("resistance")


def _unit_vector(v):
    if sum(x * x for x in v) == 0:
        raise ValueError("expected a non-zero direction vector")
    return v


class Probe(Strict):
    """A straight applicator: its tip and the direction from the tip back along the shaft."""
    tip: Point
    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)

    _unit = field_validator("direction")(classmethod(lambda cls, v: _unit_vector(v)))


class RFDevice(Strict):
    kind: Literal["cooled_needle", "cluster", "umbrella"] = "cooled_needle"
    tip: Point
    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    diameter: Length = Field(1.5e-3, description="needle diameter (17 G ~ 1.5 mm)")
    active_length: Length = Field(30e-3, description="exposed (active) tip length")
    coolant_temperature: Temperature | None = Field(None, description="internally cooled tip held near this")
    cluster_spacing: Length = 5e-3
    tines: int = Field(10, ge=2, le=16)
    deployed_diameter: Length = 35e-3
    tine_diameter: Length = 0.4e-3

    _unit = field_validator("direction")(classmethod(lambda cls, v: _unit_vector(v)))

    @field_validator("diameter", "active_length", "cluster_spacing", "deployed_diameter", "tine_diameter")
    @classmethod
    def _positive(cls, v, info):
        if not v > 0:
            raise ValueError(f"expected a positive {info.field_name}")
        return v


class RFGenerator(Strict):
    mode: Literal["constant_power", "temperature", "impedance"] = "impedance"
    power: Power = Field(200.0, description="set power (constant_power) or maximum power")
    target_temperature: Temperature = 273.15 + 90.0
    ramp_per_min: Power | None = Field(None, description="power ramp per minute in impedance mode (default: the "
                                       "generator model's)")
    series_resistance: Resistance | None = None

    @field_validator("power")
    @classmethod
    def _pos(cls, v):
        if not (0 < v <= 500):
            raise ValueError("expected a power between 0 and 500 W")
        return v


class RFASession(Strict):
    """Radiofrequency ablation."""
    day: float = Field(0.0, ge=0)
    modality: Literal["rfa"]
    device: RFDevice
    generator: RFGenerator = RFGenerator()
    duration: Time
    follow_up: Time = 3600.0
    target: Target = Field("planned", description=TARGET_HELP)


class MWAntenna(Strict):
    antenna: Literal["monopole", "dipole", "choked", "dual_slot"] = "choked"
    frequency: Frequency = 2.45e9
    tip: Point
    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    diameter: Length = 1.8e-3
    shaft_cooling: bool = Field(True, description="cooled shaft (no heating behind the choke region)")

    _unit = field_validator("direction")(classmethod(lambda cls, v: _unit_vector(v)))

    @field_validator("frequency")
    @classmethod
    def _freq(cls, v):
        if min(abs(v - 915e6), abs(v - 2.45e9)) > 1e6:
            raise ValueError("expected 915 MHz or 2.45 GHz")
        return v


class MWASession(Strict):
    """Microwave ablation."""
    day: float = Field(0.0, ge=0)
    modality: Literal["mwa"]
    device: MWAntenna
    power: Power
    duration: Time
    follow_up: Time = 3600.0
    target: Target = Field("planned", description=TARGET_HELP)

    @field_validator("power")
    @classmethod
    def _pos(cls, v):
        if not (0 < v <= 200):
            raise ValueError("expected a power between 0 and 200 W")
        return v


class CryoPhase(Strict):
    phase: Literal["freeze", "thaw"]
    duration: Time
    active: bool = Field(False, description="thaw: active (helium/electric) warming instead of passive")


class CryoDevice(Strict):
    probes: list[Probe] = Field(min_length=1)
    diameter: Length = 1.5e-3
    active_length: Length = Field(30e-3, description="length of the freezing zone of the probe")


class CryoSession(Strict):
    """Cryoablation (argon-like probes), freeze-thaw cycles."""
    day: float = Field(0.0, ge=0)
    modality: Literal["cryo"]
    device: CryoDevice
    protocol: list[CryoPhase] = Field(min_length=1)
    follow_up: Time = 3600.0
    target: Target = Field("planned", description=TARGET_HELP)


THERMAL_MODALITIES = ("rfa", "mwa", "cryo")
AnySession = Annotated[Session | RFASession | MWASession | CryoSession, Field(discriminator="modality")]


class Course(Strict):
    """Sessions on days, with the healing model between and after them (course.py, physics/healing.py)."""
    sessions: list[AnySession] = Field(min_length=1)
    healing: bool = Field(True, description="run the healing model between sessions and to the follow-up day")
    follow_up: Time = Field(30 * 86400.0, description="the course's last day, since the first session's day 0")
    detection_size: Length = Field(2e-3, description="smallest visible tumour component (equivalent diameter)")
    outputs: list[Time] = Field(
        default_factory=lambda: [d * 86400.0 for d in (1, 3, 7, 14, 21, 28)],
        description="days at which the healing fields are saved (session days and the last day are added)")
    predictability: bool = Field(
        True, description="rerun each later session's plan in untreated tissue to measure its predictability")

    @field_validator("sessions")
    @classmethod
    def _ordered(cls, v):
        days = [s.day for s in v]
        if days != sorted(days):
            raise ValueError(f"expected sessions in order of their day, got days {days}")
        return v

    @field_validator("follow_up")
    @classmethod
    def _follow(cls, v):
        if not (0 <= v <= 3650 * 86400.0):
            raise ValueError("expected a follow-up between 0 d and 3650 d")
        return v


class Outputs(Strict):
    snapshots: list[Time] = Field(default_factory=lambda: [0.0, 300.0, 3600.0, 86400.0])
    vtk: bool = True
    figures: bool = True


class Fate(Strict):
    """What happens after the kill (water, collapse or swelling, separation, demarcation, detachment)."""
    enabled: bool = True
    until: Time = Field(28 * 86400.0, description="end of the post-kill follow-up, since the course start")
    outputs: list[Time] = Field(
        default_factory=lambda: [600.0, 3600.0, 6 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0, 10 * 86400.0,
                                 14 * 86400.0, 21 * 86400.0, 28 * 86400.0],
        description="times (since the course start) at which the mechanics is solved and fields are saved; "
                    "1 h and 24 h are always added")
    max_dt: Time = Field(4 * 3600.0, description="largest post-kill time step")

    @field_validator("until")
    @classmethod
    def _until(cls, v):
        if not (3600.0 <= v <= 365 * 86400.0):
            raise ValueError("expected a follow-up between 1 h and 365 d")
        return v


class Solver(Strict):
    injection_dt: Time = 4.0
    heating_dt: Time | None = Field(None, description="heat step while an applicator is on (default 2 s for RFA "
                                    "and MWA, 5 s for cryo)")
    max_dt: Time = 1800.0
    dt_growth: float = Field(1.3, gt=1.0, le=3.0)
    healing_dt: Time = Field(6 * 3600.0, description="healing time step (implicit; stable at any step)")

    @field_validator("healing_dt")
    @classmethod
    def _hdt(cls, v):
        if not (600.0 <= v <= 2 * 86400.0):
            raise ValueError("expected a healing step between 10 min and 2 d")
        return v


class Scenario(Strict):
    name: str
    description: str = ""
    seed: int = 0
    domain: Domain
    geometry: Geometry
    tissues: dict[str, dict[str, Any]] = Field(default_factory=dict)
    course: Course
    outputs: Outputs = Outputs()
    solver: Solver = Solver()
    fate: Fate = Fate()
    model: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="overrides of process parameters: groups oxidant, death, vessels, "
        "ethanol_kill, procedure, thermal, thermal_damage, fate, healing (see docs/model.md)")


# ----------------------------------------------------------------------------------------------- loading

def _loc_to_field(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("SubcutaneousGeometry", "LiverGeometry", "MultiTumorGeometry", "NiftiGeometry",
                      "subcutaneous", "liver", "multi_tumor", "nifti", "ClO2Agent", "EthanolAgent",
                      "clo2", "ethanol", "rfa", "mwa", "cryo"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(scenario)"


def _raise_validation(err: ValidationError, raw: dict) -> None:
    e = err.errors()[0]
    field = _loc_to_field(e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "missing":
        raise ScenarioError(field, "nothing (missing)", "this field to be given") from None
    if e["type"] == "extra_forbidden":
        raise ScenarioError(field, e.get("input"), "no such field here (unknown key)") from None
    value = e.get("input")
    expected = msg.removeprefix("expected ") if msg.startswith("expected") else msg
    raise ScenarioError(field, value, expected) from None


def apply_overrides(raw: dict, sets: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (``course.sessions.0.injections.0.volume=3 mL``)."""
    tree = copy.deepcopy(raw)
    for item in sets or []:
        if "=" not in item:
            raise ScenarioError("--set", item, "key=value, e.g. course.sessions.0.follow_up=2 h")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = tree
        for i, part in enumerate(parts[:-1]):
            nxt = int(part) if part.isdigit() else part
            if isinstance(node, dict) and nxt not in node:
                node[nxt] = {}   # a section not written in the file (pydantic rejects unknown ones)
            try:
                node = node[nxt]
            except (KeyError, IndexError, TypeError):
                raise ScenarioError(f"--set {key}", value, f"an existing path (no '{'.'.join(parts[:i + 1])}')") from None
        last = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
        node[last] = yaml.safe_load(value) if value.strip()[:1] in "[{" else _scalar(value)
    return tree


def _scalar(text: str):
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return v


def validate(raw: Any, source: str = "<scenario>") -> Scenario:
    if not isinstance(raw, dict):
        raise ScenarioError(source, type(raw).__name__, "a YAML mapping with keys name, domain, geometry, course")
    try:
        sc = Scenario.model_validate(raw)
    except ValidationError as err:
        _raise_validation(err, raw)
    if sc.geometry.phantom != "nifti" and sc.domain.extent is None:
        raise ScenarioError("domain.extent", None, "three lengths, e.g. [32 mm, 32 mm, 26 mm], for a phantom")
    return sc


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ScenarioError("scenario", str(path), "an existing YAML file or a built-in name (see `tissuefate scenarios`)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ScenarioError(f"scenario file {p.name}", f"malformed YAML at {where}",
                            "valid YAML (check indentation and colons)") from None
    return raw


def builtin_dir():
    return resources.files("tissuefate").joinpath("scenarios")


def builtin_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in builtin_dir().iterdir() if p.name.endswith(".yaml"))


DEFAULT_SCENARIO = "clo2_subcutaneous"


def resolve_path(name_or_path: str | None) -> Path:
    if name_or_path is None:
        name_or_path = DEFAULT_SCENARIO
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    if name_or_path in builtin_names():
        return Path(str(builtin_dir().joinpath(f"{name_or_path}.yaml")))
    raise ScenarioError("scenario", name_or_path, f"a YAML file or one of the built-ins {builtin_names()}")


def load_raw(name_or_path: str | None = None, sets: list[str] | None = None) -> tuple[dict, Path]:
    path = resolve_path(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ScenarioError(f"scenario file {path.name}", type(raw).__name__, "a YAML mapping")
    if sets:
        raw = apply_overrides(raw, sets)
    return raw, path


def load_scenario(name_or_path: str | None = None, sets: list[str] | None = None) -> Scenario:
    """Load and validate a scenario file or built-in scenario name; raises ScenarioError on bad input."""
    raw, path = load_raw(name_or_path, sets)
    sc = validate(raw, str(path))
    if sc.geometry.phantom == "nifti" and not Path(sc.geometry.path).is_absolute():
        g = sc.geometry.model_copy(update={"path": str((path.parent / sc.geometry.path).resolve())})
        sc = sc.model_copy(update={"geometry": g})
    return sc
