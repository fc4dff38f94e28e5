"""Tissue property library.

One table (``data/tissues.yaml``) holds, per tissue type, every property the physics reads, each with
its unit, its source (a key into ``../shared/science/``) or a ``hypothesis`` flag with a plausible
range. Values are converted to SI once, here. Scenario files may override any value per tissue; an
override keeps the row's unit kind and is recorded as ``source: scenario override``.

``property_fields(library, labels, label_table)`` turns the table into per-voxel arrays. Voxels of
non-tissue labels (``air`` outside the body, ``vessel`` blood lumen) get zeros.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import yaml

from .errors import ScenarioError
from .units import KINDS, parse_quantity

NON_TISSUE = ("air", "vessel")


@dataclass(frozen=True)
class Param:
    name: str
    value: float            # SI
    unit: str               # SI unit of value
    text: str               # as written, with its unit
    source: str
    hypothesis: bool = False
    range: tuple[float, float] | None = None   # SI

    def as_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit, "as_written": self.text, "source": self.source,
                "hypothesis": self.hypothesis, "range": list(self.range) if self.range else None}


def make_param(name, value, unit, text, source, hypothesis=False, range=None) -> Param:
    """A Param from SI ``value`` (``text`` is the value as a reader writes it, with its unit)."""
    return Param(name, float(value), unit, text, source, hypothesis, range)


def table_hypotheses(obj, table: dict[str, Param]) -> list[dict]:
    """Rows (same format as ``parameters.module_hypotheses``) for the hypothesis fields of a parameter
    dataclass whose defaults are described by ``table`` (field -> Param); values are read from ``obj``,
    so overrides show up in the results."""
    rows = []
    for name, p in table.items():
        if p.hypothesis and hasattr(obj, name):
            rows.append({"name": f"{type(obj).__name__}.{name}", "value": float(getattr(obj, name)), "unit": p.unit,
                         "range": list(p.range) if p.range else None, "source": p.source})
    return rows


@dataclass
class TissueLibrary:
    properties: dict[str, dict]                 # name -> {kind, description}
    tissues: dict[str, dict[str, Param]]        # tissue -> property -> Param

    def get(self, tissue: str, prop: str) -> Param:
        return self.tissues[tissue][prop]

    def value(self, tissue: str, prop: str) -> float:
        return self.tissues[tissue][prop].value

    def tissue_names(self) -> list[str]:
        return list(self.tissues)

    def with_overrides(self, overrides: dict[str, dict[str, object]], field_prefix: str = "tissues") -> "TissueLibrary":
        """A copy with scenario overrides applied; unknown tissues or properties are errors naming the field."""
        tissues = {t: dict(p) for t, p in self.tissues.items()}
        for tissue, props in (overrides or {}).items():
            if tissue not in tissues:
                raise ScenarioError(f"{field_prefix}.{tissue}", tissue, f"one of {sorted(tissues)}")
            for prop, text in (props or {}).items():
                field = f"{field_prefix}.{tissue}.{prop}"
                if prop not in self.properties:
                    raise ScenarioError(field, prop, f"a property of {sorted(self.properties)}")
                kind = self.properties[prop]["kind"]
                value = parse_quantity(text, kind, field)
                old = tissues[tissue].get(prop)
                rng = old.range if old else None
                tissues[tissue][prop] = Param(prop, value, KINDS[kind][0], str(text), "scenario override",
                                              hypothesis=bool(old and old.hypothesis), range=rng)
        return TissueLibrary(self.properties, tissues)

    def hypotheses(self, tissues_present=None) -> list[dict]:
        """Every hypothesis parameter (for the tissues present), as rows for metrics.json."""
        rows = []
        for t, props in self.tissues.items():
            if tissues_present is not None and t not in tissues_present:
                continue
            for p in props.values():
                if p.hypothesis:
                    rows.append({"name": f"tissue.{t}.{p.name}", "value": p.value, "unit": p.unit,
                                 "range": list(p.range) if p.range else None, "source": p.source})
        return rows

    def table_rows(self) -> list[dict]:
        rows = []
        for prop, meta in self.properties.items():
            row = {"property": prop, "unit": KINDS[meta["kind"]][0], "description": meta["description"]}
            for t in self.tissues:
                row[t] = self.tissues[t].get(prop)
            rows.append(row)
        return rows


def load_library(path=None) -> TissueLibrary:
    """Load the built-in library (or a YAML file with the same structure)."""
    if path is None:
        text = resources.files("tissuefate").joinpath("data/tissues.yaml").read_text()
    else:
        with open(path) as fh:
            text = fh.read()
    raw = yaml.safe_load(text)
    properties = raw["properties"]
    tissues: dict[str, dict[str, Param]] = {}
    for tissue, props in raw["tissues"].items():
        tissues[tissue] = {}
        for prop, entry in props.items():
            kind = properties[prop]["kind"]
            field = f"tissue library.{tissue}.{prop}"
            value = parse_quantity(entry["value"] if kind != "dimensionless" else float(entry["value"]), kind, field)
            rng = tuple(float(x) for x in entry["range"]) if entry.get("range") else None
            tissues[tissue][prop] = Param(prop, value, KINDS[kind][0], str(entry["value"]), entry.get("source", ""),
                                          bool(entry.get("hypothesis", False)), rng)
    return TissueLibrary(properties, tissues)


def property_fields(library: TissueLibrary, labels: np.ndarray, label_table: dict[int, str],
                    names=None) -> dict[str, np.ndarray]:
    """Per-voxel SI property arrays from a label map. Non-tissue voxels get 0."""
    names = list(names or library.properties)
    present = [int(v) for v in np.unique(labels)]
    out = {n: np.zeros(labels.shape) for n in names}
    for lab in present:
        tissue = label_table[lab]
        if tissue in NON_TISSUE:
            continue
        if tissue not in library.tissues:
            raise ScenarioError("geometry.labels", tissue, f"a tissue of the library {sorted(library.tissues)}")
        mask = labels == lab
        for n in names:
            p = library.tissues[tissue].get(n)
            if p is not None:
                out[n][mask] = p.value
    return out


def tissue_mask(labels: np.ndarray, label_table: dict[int, str]) -> np.ndarray:
    keep = [lab for lab, t in label_table.items() if t not in NON_TISSUE]
    return np.isin(labels, keep)
