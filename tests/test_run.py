"""End-to-end runs of the built-in scenarios on coarse grids: run folder, metrics keys, conservation."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import xarray as xr
from typer.testing import CliRunner

import tissuefate
from tissuefate.cli import app

REQUIRED_KEYS = ["tumor_volume_ml", "viable_tumor_ml", "necrotic_tumor_fraction", "normal_tissue_necrosis_ml",
                 "necrosis_beyond_tumor_mm", "injected_ml", "peak_pressure_kpa", "backflow_ml", "oxidant_injected_mmol",
                 "oxidant_consumed_mmol", "oxidant_balance_rel_error", "fluid_balance_rel_error",
                 "stoichiometric_bound_ml", "hypotheses", "runtime_s", "timeseries"]

# coarse for CI (the built-ins run on 1 mm voxels); the physics is unchanged
COARSE = ["domain.voxel_size=1.5 mm", "course.sessions.0.follow_up=2 h", "solver.max_dt=30 min",
          "solver.injection_dt=8 s", "fate.until=3 d", "fate.outputs=[1 h, 24 h, 3 d]"]
NO_FATE = ["fate.enabled=false"]
FATE_KEYS = ["tumor_volume_change_1h", "tumor_volume_change_24h", "surface_displacement_mm",
             "separated_boundary_fraction", "demarcation_rim_mm", "detached_ml", "detachment_day",
             "water_balance_rel_error", "fate_timeseries"]


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
                 "figures/injected_volume.png", "figures/injection_pressure.png", "figures/fate_deformation.png",
                 "figures/fate_surface.png", "figures/fate_volume.png", "figures/fate_separation.png", "course.nc"]:
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
    for k in REQUIRED_KEYS + FATE_KEYS:
        assert k in m, k
    assert m["water_balance_rel_error"] < 1e-9
    assert m["surface_displacement_mm"] is not None      # the default phantom has a skin surface over the tumour
    assert len(m["fate_timeseries"]["t_s"]) == 4          # 0, 1 h, 24 h, 3 d
    assert any(h["name"].startswith("fate.") for h in m["hypotheses"])
    assert any(h["name"].startswith("healing.") for h in m["hypotheses"])
    c = m["course"]                                       # healing to day 30 after the single session
    assert c["follow_up_day"] == pytest.approx(30.0) and c["healing_fraction_sum_error"] < 1e-12
    assert c["sessions"][0]["predictability"] == 1.0
    assert m["oxidant_balance_rel_error"] < 1e-6
    assert m["fluid_balance_rel_error"] < 1e-6
    assert m["injected_ml"] == pytest.approx(2.0)
    assert m["oxidant_injected_mmol"] == pytest.approx(2.0e-6 * (2000e-3 / 67.45e-3) * 1e3, rel=1e-6)
    assert 0 <= m["necrotic_tumor_fraction"] <= 1
    assert m["peak_pressure_kpa"] > 0
    names = {h["name"] for h in m["hypotheses"]}
    assert "tissue.tumor.reductive_fast" in names
    oxidative = m["necrosis_by_cause_ml"]["oxidative_necrosis"]
    assert oxidative <= m["stoichiometric_bound_ml"] * (1 + 1e-9) + 1e-9


def test_python_api_ethanol_coarse():
    sc = tissuefate.load_scenario("ethanol_subcutaneous", sets=COARSE + ["course.healing=false"])
    res = tissuefate.run(sc)
    assert res.metrics["fluid_balance_rel_error"] < 1e-6
    assert res.metrics["balances"]["ethanol"]["rel_error"] < 1e-6
    assert "ethanol_dose" in res.fields
    assert res.metrics["necrosis_by_cause_ml"]["chemical_necrosis"] > 0
    for k in FATE_KEYS:
        assert k in res.metrics, k
    assert res.metrics["water_balance_rel_error"] < 1e-9


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ppm=st.floats(100, 3000), volume_ml=st.floats(0.05, 0.4), fast_mM=st.floats(4, 40),
       threshold=st.floats(0.3, 0.95), gauge=st.sampled_from([18, 22, 27]))
def test_oxidative_necrosis_never_exceeds_the_stoichiometric_bound(ppm, volume_ml, fast_mM, threshold, gauge):
    sets = ["domain.voxel_size=1.5 mm", "domain.extent=[27 mm, 27 mm, 24 mm]", "course.sessions.0.follow_up=3 h",
            "solver.injection_dt=3 s", "solver.max_dt=30 min", "fate.enabled=false", "course.healing=false",
            f"course.sessions.0.agent.concentration={ppm:.6g} ppm",
            f"course.sessions.0.injections.0.volume={volume_ml:.6g} mL",
            f"course.sessions.0.injections.0.gauge={gauge}",
            f"tissues.tumor.reductive_fast={fast_mM:.6g} mM",
            f"tissues.tumor.oxidative_death_threshold={threshold:.6g}"]
    res = tissuefate.run(tissuefate.load_scenario("clo2_subcutaneous", sets=sets))
    m = res.metrics
    assert m["oxidant_balance_rel_error"] < 1e-6 and m["fluid_balance_rel_error"] < 1e-6
    dV_ml = np.prod(m["grid"]["voxel_mm"]) * 1e-3
    assert m["necrosis_by_cause_ml"]["oxidative_necrosis"] <= m["stoichiometric_bound_ml"] + 1e-9 * dV_ml
