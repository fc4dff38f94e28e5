"""End-to-end thermal sessions on coarse grids: every built-in thermal scenario runs, conserves energy, and
reports the keys any two runs are compared by."""
import json

import numpy as np
import pytest

import tissuefate as tf

THERMAL_BUILTINS = ["rfa_liver", "mwa_liver", "cryo_liver", "rfa_subcutaneous", "mwa_subcutaneous",
                    "cryo_subcutaneous"]
COARSE = ["domain.voxel_size=2 mm", "course.sessions.0.follow_up=30 min", "outputs.vtk=false"]
# the post-kill follow-up, coarse in time, on the subcutaneous phantom (skin surface, detachment possible)
FATE = ["fate.until=3 d", "fate.outputs=[1 h, 24 h, 3 d]"]
FATE_KEYS = ["tumor_volume_change_1h", "tumor_volume_change_24h", "surface_displacement_mm",
             "separated_boundary_fraction", "demarcation_rim_mm", "detached_ml", "detachment_day",
             "water_balance_rel_error", "fate_timeseries"]
SHARED_KEYS = ["tumor_volume_ml", "viable_tumor_ml", "necrotic_tumor_fraction", "normal_tissue_necrosis_ml",
               "necrosis_beyond_tumor_mm", "hypotheses", "runtime_s", "timeseries"]
THERMAL_KEYS = ["ablation_zone_ml", "zone_short_axis_mm", "zone_long_axis_mm", "tumor_coverage", "min_margin_mm",
                "normal_tissue_ablated_ml", "energy_delivered_j", "energy_balance_rel_error", "peak_temperature_c"]


@pytest.mark.parametrize("name", THERMAL_BUILTINS)
def test_thermal_builtin_runs_and_conserves_energy(name, tmp_path):
    subcutaneous = name.endswith("subcutaneous")
    sc = tf.load_scenario(name, COARSE + (FATE if subcutaneous else ["fate.enabled=false"])
                          + ["course.healing=false"])
    res = tf.run(sc, out=tmp_path / "run")
    m = res.metrics
    if subcutaneous:
        for key in FATE_KEYS:
            assert key in m, key
        assert m["water_balance_rel_error"] < 1e-9
        assert m["surface_displacement_mm"] is not None
        assert m["fate_water_ledger_ml"]["leaked"] >= 0.0
    for key in SHARED_KEYS + THERMAL_KEYS:
        assert key in m, key
    assert m["energy_balance_rel_error"] < 1e-3
    assert m["ablation_zone_ml"] > 0.5
    assert 0.0 <= m["tumor_coverage"] <= 1.0
    assert m["zone_long_axis_mm"] >= 0.5 * m["zone_short_axis_mm"]
    assert m["disclaimer"].startswith("Research software")
    hyp_names = {h["name"] for h in m["hypotheses"]}
    assert any(n.startswith("ThermalDamageParams") or "damage" in n.lower() for n in hyp_names)
    folder = tmp_path / "run"
    for f in ("metrics.json", "fields.nc", "provenance.json", "scenario_resolved.json"):
        assert (folder / f).is_file()
    figs = sorted(p.name for p in (folder / "figures").glob("*.png"))
    assert "thermal_slices.png" in figs and "zone_over_tumor.png" in figs
    json.loads((folder / "metrics.json").read_text())
    ts = m["timeseries"]
    if sc.course.sessions[0].modality == "cryo":
        ice = m["ice_ball_ml"]
        assert ice["0 degC"] > ice["-20 degC"] > ice["-40 degC"] > 0
        assert m["energy_delivered_j"] < 0                      # heat extracted
        assert min(x for x in ts["probe_temperature_c"] if x is not None) < -100
        assert m["peak_temperature_c"] < 38.0
    else:
        assert m["energy_delivered_j"] > 1e3
        assert m["peak_temperature_c"] > 60.0
        assert "generator_curves.png" in figs
        if sc.course.sessions[0].modality == "rfa":
            z = [x for x in ts["impedance_ohm"] if x is not None]
            assert len(z) > 10 and all(np.isfinite(z))


def test_rf_power_scales_the_zone():
    """More power (constant-power mode) must not give a smaller zone: a monotonicity check the model could fail."""
    base = ["domain.voxel_size=2 mm", "course.sessions.0.follow_up=30 min", "outputs.vtk=false",
            "outputs.figures=false", "course.sessions.0.generator.mode=constant_power", "fate.enabled=false",
            "course.healing=false", "course.sessions.0.duration=6 min"]
    zones = []
    for p in ("15 W", "30 W"):
        r = tf.run(tf.load_scenario("rfa_liver", base + [f"course.sessions.0.generator.power={p}"]))
        zones.append(r.metrics["ablation_zone_ml"])
        assert r.metrics["energy_balance_rel_error"] < 1e-3
    assert zones[1] > zones[0] > 0
