"""The result of a run: what the writers and the report read (never the solver's objects)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr


@dataclass
class Result:
    scenario_raw: dict            # the scenario as written (after --set overrides)
    scenario_resolved: dict       # validated, SI values
    metrics: dict                 # metrics.json content
    fields: xr.Dataset            # snapshots, dims (time, x, y, z), units in attrs
    provenance: dict
    path: Path | None = None      # run folder once written
    extras: dict = field(default_factory=dict)   # e.g. needle tips for figures
    course: xr.Dataset | None = None             # healing fields by course day (course.nc)

    def __repr__(self) -> str:
        return f"Result({self.metrics.get('scenario')!r}, path={self.path})"
