"""End-to-end runs of the built-in scenarios on coarse grids: run folder, metrics keys, conservation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import tissuefate
from tissuefate.cli import app

REQUIRED_KEYS = ["tumor_volume_ml", "viable_tumor_ml", "necrotic_tumor_fraction", "normal_tissue_necrosis_ml",
                 "necrosis_beyond_tumor_mm", "injected_ml", "peak_pressure_kpa", "backflow_ml", "oxidant_injected_mmol",
                 "oxidant_consumed_mmol", "oxidant_balance_rel_error", "fluid_balance_rel_error",
                 "stoichiometric_bound_ml", "hypotheses", "runtime_s", "timeseries"]

COARSE = ["domain.voxel_size=1 mm", "course.sessions.0.follow_up=6 h", "solver.max_dt=20 min"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "default"
    res = CliRunner().invoke(app, ["run", "--out", str(out), "--quiet", *sum((["--set", s] for s in COARSE), [])])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_run_folder_complete(default_run):
    out, output = default_run
    assert "run folder" in output and str(out.name) in " ".join(output.split())
    for name in ["scenario.yaml", "scenario_resolved.json", "provenance.json", "metrics.json", "fields.nc",
                 "fields.vti", "labels_affine.json", "figures/slices_tip.png", "figures/necrosis_over_time.png",
                 "figures/injected_volume.png", "figures/injection_pressure.png"]:
        assert (out / name).is_file(), name
    prov = json.loads((out / "provenance.json").read_text())
    for k in ("tissuefate_version", "git_commit", "seed", "wall_time_s", "platform"):
        assert k in prov
    ds = xr.open_dataset(out / "fields.nc")
    assert ds["pressure"].attrs["units"] == "Pa"
    assert ds["oxidant_exposure"].attrs["units"] == "mol s m-3"
    assert ds.sizes["time"] >= 3


def test_metrics_and_conservation(default_run):
    out, _ = default_run
    m = json.loads((out / "metrics.json").read_text())
    for k in REQUIRED_KEYS:
        assert k in m, k
    assert m["oxidant_balance_rel_error"] < 1e-6
    assert m["fluid_balance_rel_error"] < 1e-6
    assert m["injected_ml"] == pytest.approx(2.0)
    assert m["oxidant_injected_mmol"] == pytest.approx(2.0e-6 * 2000 / 67.45 * 1e3 * 1e-3, rel=1e-6)
    assert 0 <= m["necrotic_tumor_fraction"] <= 1
    assert m["peak_pressure_kpa"] > 0
    names = {h["name"] for h in m["hypotheses"]}
    assert "tissue.tumor.reductive_fast" in names
    oxidative = m["necrosis_by_cause_ml"]["oxidative_necrosis"]
    assert oxidative <= m["stoichiometric_bound_ml"] * (1 + 1e-9) + 1e-9


def test_python_api_ethanol_coarse():
    sc = tissuefate.load_scenario("ethanol_subcutaneous", sets=COARSE)
    res = tissuefate.run(sc)
    assert res.metrics["fluid_balance_rel_error"] < 1e-6
    assert res.metrics["balances"]["ethanol"]["rel_error"] < 1e-6
    assert "ethanol_dose" in res.fields
    assert res.metrics["necrosis_by_cause_ml"]["chemical_necrosis"] > 0
