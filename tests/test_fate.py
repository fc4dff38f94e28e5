"""Post-kill model (Phases II-III): water balance, no built-in preference, separation timing, detachment."""
from __future__ import annotations

import numpy as np
import pytest

from tissuefate.fate import FateRunner
from tissuefate.model import build_model
from tissuefate.physics import fate_parameters as fp
from tissuefate.physics.water import WaterModel
from tissuefate.scenario import load_raw, validate
from tissuefate.tissue_state import TissueState

DAY = 86400.0


def _model(voxel="2 mm", **fate):
    raw, path = load_raw("clo2_subcutaneous")
    raw["domain"]["voxel_size"] = voxel
    if fate:
        raw["fate"] = fate
    sc = validate(raw, str(path))
    return build_model(sc), sc


def _runner(model, sc, state_code, params=None, dead=None, until=None, microvessels=1.0, slow_oxidised=0.0,
            shrink_omega=50.0, outputs=None):
    """A FateRunner on the model with the tumour (or ``dead``) killed at t = 0 in one death mode."""
    dead = model.mask("tumor") if dead is None else dead
    state = np.where(model.tissue, int(TissueState.VIABLE), int(TissueState.NO_TISSUE)).astype(np.int8)
    state[dead] = int(state_code)
    death_time = np.where(dead, 0.0, np.nan)
    mv = np.where(dead, 0.0, microvessels)
    cfg = sc.fate.model_copy(update={k: v for k, v in {"until": until, "outputs": outputs}.items() if v is not None})
    return FateRunner(model, cfg, params or fp.fate_parameters(), state, death_time, mv,
                      np.full(model.grid.shape, slow_oxidised), np.full(model.grid.shape, shrink_omega))


# ----------------------------------------------------------------------------- water model

def test_vascular_drainage_is_exact_exponential():
    shape = (6, 5, 4)
    tissue = np.ones(shape, bool)
    H_A, LpSV = 2.0e4, 3.0e-9
    w = WaterModel((1e-3,) * 3, tissue, np.full(shape, 0.2), np.full(shape, 0.5), np.full(shape, 1e-14),
                   np.full(shape, H_A), np.full(shape, LpSV), np.zeros(shape))
    w.hand_over(np.full(shape, 0.05))
    t, dt = 0.0, 600.0
    for _ in range(10):
        w.transport(dt, w.K, np.full(shape, H_A), np.full(shape, LpSV), np.zeros(shape), np.zeros(shape))
        t += dt
    exact = 0.05 * np.exp(-LpSV * H_A * t)
    assert np.allclose(w.excess, exact, rtol=1e-12)
    assert w.balance()["rel_error"] < 1e-12


def test_water_balance_closes_with_release_darcy_lymph_edema_vapour_detach():
    rng = np.random.default_rng(3)
    shape = (12, 10, 8)
    tissue = np.ones(shape, bool)
    tissue[:, :, -1] = False
    w = WaterModel((1e-3,) * 3, tissue, np.full(shape, 0.25), np.full(shape, 0.45),
                   10 ** rng.uniform(-15, -13, shape), rng.uniform(5e3, 5e4, shape), rng.uniform(0, 1e-8, shape),
                   rng.uniform(0, 1e-8, shape))
    dead = np.zeros(shape, bool)
    dead[3:8, 3:7, 2:6] = True
    w.remove_vapour(np.where(dead, 0.3, 0.0))
    w.hand_over(np.where(dead, 0.1, 0.0))
    for k in range(20):
        w.release(300.0, np.where(dead, 0.2, 0.45), np.full(shape, 900.0), dead)
        w.transport(300.0 * (1 + k), w.K * (1 + 2 * dead), rng.uniform(5e3, 5e4, shape), w.LpSV, w.lymph,
                    np.where(~dead, 1e-7, 0.0))
    w.detach(dead & (np.indices(shape)[2] >= 4))
    b = w.balance()
    assert b["rel_error"] < 1e-12
    assert b["filtered"] > 0 and b["leaked"] > 0 and b["drained"] != 0


# ----------------------------------------------------------------------------- no built-in preference

def _equalise(params, mode_from="coagulated", mode_to="oxidative"):
    p = dict(params)
    for q in ("release_fraction", "release_time", "digestibility", "stiffness_factor"):
        p[f"{q}_{mode_to}"] = p[f"{q}_{mode_from}"]
    return p


def test_mechanics_has_no_built_in_preference_between_oxidative_and_coagulated_necrosis():
    """With the death-mode parameters of ClO2 necrosis set to those of coagulation, the same dead region gives
    the same volume change, surface and separation (coagulated release is scaled by 1 - exp(-Omega_s): take
    Omega_s large; the oxidative integrity after death is 1 - a x: take a = 0 and coagulated integrity 1)."""
    model, sc = _model()
    p = _equalise(fp.fate_parameters())
    p["oxidative_matrix_attack"] = 0.0
    p["integrity_after_death_coagulated"] = 1.0
    outs = ["1 h", "1 d", "7 d"]
    res = {}
    for code in (TissueState.OXIDATIVE_NECROSIS, TissueState.COAGULATED):
        r = _runner(model, sc, code, p, until=7 * DAY, outputs=[3600.0, DAY, 7 * DAY], shrink_omega=800.0)
        r.run()
        res[code] = r.metrics()
    a, b = res[TissueState.OXIDATIVE_NECROSIS], res[TissueState.COAGULATED]
    for key in ("tumor_volume_change_1h", "tumor_volume_change_24h", "surface_displacement_mm",
                "separated_boundary_fraction", "demarcation_rim_mm"):
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    assert a["tumor_volume_change_24h"] != 0.0
    # and with the default parameters the modes do differ (the test can fail)
    outs = []
    for code in (TissueState.OXIDATIVE_NECROSIS, TissueState.COAGULATED):
        r = _runner(model, sc, code, until=DAY, outputs=[3600.0, DAY])
        r.run()
        outs.append(r.metrics()["tumor_volume_change_24h"])
    assert outs[0] != pytest.approx(outs[1], rel=1e-3)


# ----------------------------------------------------------------------------- demarcation and separation

def test_perfused_interface_separates_in_one_to_two_weeks_and_faster_when_digestible():
    """Calibration check of the protease rate against dry-necrosis separation (fate.md §3: cord 7.4 +- 3.3 d,
    10.9-13.9 d; cryo crust 1-3 weeks): the first separated interface appears between day 5 and day 21,
    and fixed (coagulated) tissue separates later than oxidative necrosis."""
    model, sc = _model()
    days = {}
    for code in (TissueState.OXIDATIVE_NECROSIS, TissueState.COAGULATED):
        r = _runner(model, sc, code, until=28 * DAY, outputs=[DAY * d for d in (1, 3, 5, 7, 10, 14, 21, 28)])
        r.run()
        m = r.metrics()
        days[code] = m["first_separation_day"]
        rim = m["fate_timeseries"]["demarcation_rim_mm"]
        assert rim[-1] > rim[2] > 0.0 == rim[1]      # no rim at 1 h (lag); it forms by day 1 and thickens
    assert days[TissueState.OXIDATIVE_NECROSIS] is not None and 5 <= days[TissueState.OXIDATIVE_NECROSIS] <= 21
    assert days[TissueState.COAGULATED] is None or days[TissueState.COAGULATED] > days[TissueState.OXIDATIVE_NECROSIS]


def test_no_recruitment_without_perfusion():
    model, sc = _model()
    r = _runner(model, sc, TissueState.OXIDATIVE_NECROSIS, until=3 * DAY, outputs=[DAY, 3 * DAY], microvessels=0.0)
    r.run()
    assert r.metrics()["demarcation_rim_mm"] == 0.0


def test_mass_at_the_skin_detaches_and_deep_mass_stays():
    model, sc = _model()
    g = model.grid
    tum = model.mask("tumor")
    skin = model.mask("skin") | model.mask("fat")
    # dead column from the tumour through fat and skin to the air: free once separated, nothing in front
    col = np.zeros(g.shape, bool)
    cx, cy = [int(round(c)) for c in np.argwhere(tum).mean(axis=0)[:2]]
    col[cx - 2:cx + 3, cy - 2:cy + 3, :] = True
    dead = (tum | (skin & col)) & model.tissue
    p = fp.fate_parameters()
    p["separation_integrity"] = 0.9           # separate quickly, to test the movement, not the digestion
    p["detach_separated_fraction"] = 0.8
    r = _runner(model, sc, TissueState.OXIDATIVE_NECROSIS, p, dead=dead, until=21 * DAY)
    r.run()
    m = r.metrics()
    assert m["detachment_day"] is not None and m["detached_ml"] > 0
    assert m["water_balance_rel_error"] if "water_balance_rel_error" in m else True
    assert r.water.balance()["rel_error"] < 1e-9
    # the tumour alone is 6 mm under the skin: with h_max = 3 mm it cannot move
    p2 = dict(p)
    p2["extrusion_max_depth"] = 3e-3
    r2 = _runner(model, sc, TissueState.OXIDATIVE_NECROSIS, p2, until=21 * DAY)
    r2.run()
    assert r2.metrics()["detached_ml"] == 0.0


def test_bad_fate_input_names_the_field():
    from tissuefate.errors import ScenarioError
    with pytest.raises(ScenarioError, match="model.fate.nope"):
        fp.fate_parameters({"nope": 1})
    with pytest.raises(ScenarioError, match="model.fate.protease_rate"):
        fp.fate_parameters({"protease_rate": "2 kg"})
    with pytest.raises(ScenarioError, match="model.fate.release_fraction_oxidative"):
        fp.fate_parameters({"release_fraction_oxidative": 1.5})
    assert fp.fate_parameters({"release_time_oxidative": "30 min"})["release_time_oxidative"] == 1800.0
    raw, path = load_raw("clo2_subcutaneous")
    raw["fate"] = {"until": "2 kg"}
    with pytest.raises(ScenarioError, match="fate.until"):
        validate(raw, str(path))
