"""Build the tissue model of a scenario: grid, label map, tissue library with overrides, property fields.

This is the 'model' object in the Devito sense: parameter fields on a grid, separate from the
applicators (needles) and from the solver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ScenarioError
from .geometry import Grid
from .geometry import phantoms as ph
from .scenario import Scenario
from .tissue import TissueLibrary, load_library, property_fields, tissue_mask

#: bytes per voxel of a full injection run (fields, snapshots, sparse operator and AMG hierarchy)
BYTES_PER_VOXEL = 1600


@dataclass
class TissueModel:
    grid: Grid
    labels: np.ndarray
    label_table: dict[int, str]
    landmarks: dict[str, np.ndarray]
    library: TissueLibrary
    props: dict[str, np.ndarray]
    tissue: np.ndarray          # bool: holds tissue
    vessel: np.ndarray          # bool: large-vessel lumen
    air: np.ndarray             # bool: outside the body

    def mask(self, name: str) -> np.ndarray:
        return np.isin(self.labels, [k for k, v in self.label_table.items() if v == name])

    def tissues_present(self) -> list[str]:
        vals = np.unique(self.labels)
        return sorted({self.label_table[int(v)] for v in vals})


def build_model(sc: Scenario, library: TissueLibrary | None = None) -> TissueModel:
    g = sc.geometry
    library = (library or load_library()).with_overrides(sc.tissues)
    if g.phantom == "nifti":
        from .geometry.nifti import load_label_map
        phantom = load_label_map(g.path, g.labels)
        ph.check_grid_size(phantom.grid.shape, BYTES_PER_VOXEL, voxel_size=sc.domain.voxel_size)
    else:
        air_gap = getattr(g, "air_gap", 0.0)
        grid = ph.grid_for(sc.domain.extent, sc.domain.voxel_size, air_gap, bytes_per_voxel=BYTES_PER_VOXEL)
        if g.phantom == "subcutaneous":
            phantom = ph.subcutaneous(grid, g.tumor_center, g.tumor_semi_axes, g.skin_thickness, g.fat_thickness,
                                      air_gap)
        elif g.phantom == "liver":
            phantom = ph.liver(grid, g.tumor_center, g.tumor_radius, g.vessel_point, g.vessel_direction,
                               g.vessel_radius)
        else:
            phantom = ph.multi_tumor(grid, [(t.center, t.semi_axes) for t in g.tumors], g.skin_thickness,
                                     g.fat_thickness, air_gap)
    table = phantom.label_table
    for lab in np.unique(phantom.labels):
        name = table[int(lab)]
        if name not in ("air", "vessel") and name not in library.tissues:
            raise ScenarioError("geometry.labels", name, f"a tissue of the library {sorted(library.tissues)}")
    props = property_fields(library, phantom.labels, table)
    tmask = tissue_mask(phantom.labels, table)
    vessel = np.isin(phantom.labels, [k for k, v in table.items() if v == "vessel"])
    air = np.isin(phantom.labels, [k for k, v in table.items() if v == "air"])
    return TissueModel(phantom.grid, np.asarray(phantom.labels), table, dict(phantom.landmarks), library, props,
                       tmask, vessel, air)
