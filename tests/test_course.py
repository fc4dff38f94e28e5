"""Courses: healing between sessions, healed tissue as the next session's material, targeting, course metrics.

The bookkeeping tests replace the session physics by a stand-in that kills a given region with a given death mode,
so that "the same dead region" is exact; the built-in courses run with the real physics in test_course_builtin.
"""
import numpy as np
import pytest

from tissuefate import course as course_mod
from tissuefate.course import CourseRunner, CourseTissue, place_session, visible_components
from tissuefate.model import build_model
from tissuefate.physics.healing import IDX
from tissuefate.scenario import load_raw, validate
from tissuefate.tissue_state import TissueState

CODE = {"clo2": TissueState.OXIDATIVE_NECROSIS, "ethanol": TissueState.CHEMICAL_NECROSIS,
        "rfa": TissueState.COAGULATED, "mwa": TissueState.COAGULATED, "cryo": TissueState.FROZEN_DEAD}


class FakeRunner:
    """Kills ``region`` (and records the model it was given) instead of running the physics."""
    region = None
    seen = []

    def __init__(self, model, sc, session, si, st, progress=None, span=(0.0, 1.0)):
        self.model, self.session, self.si, self.st = model, session, si, st
        self.t_end = 3600.0
        self.snapshots, self.timeseries = [], {}
        FakeRunner.seen.append((si, model))

    def run(self):
        f = self.st.f
        kill = FakeRunner.region & (f["state"] == int(TissueState.VIABLE))
        f["state"][kill] = int(CODE[self.session.modality])
        f["vessel_integrity"][kill] = 0.0


def _scenario(name, sets=()):
    raw, path = load_raw(name, ["domain.voxel_size=2 mm", "fate.enabled=false", *sets])
    return validate(raw, str(path))


def _ball(model, radius_mm):
    x, y, z = model.grid.coords()
    c = model.landmarks["tumor_center"]
    return ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= (radius_mm * 1e-3) ** 2) & model.tissue


def _run(sc, region, monkeypatch):
    monkeypatch.setattr(course_mod, "_runner", FakeRunner)
    FakeRunner.seen = []
    model = build_model(sc)
    FakeRunner.region = region(model)
    cr = CourseRunner(model, sc, check_fractions=True)
    cr.run()
    return cr


EQUAL = ["model.fate.digestibility_oxidative=0.15", "model.healing.inflammatory_potency_oxidative=1"]


def test_no_builtin_preference_between_clo2_and_rfa_courses(monkeypatch):
    """Same dead region, ClO2 (oxidative) vs RFA (coagulated) course: identical scar once the oxidative
    digestibility and inflammatory potency equal the coagulated ones; different with the defaults."""
    region = lambda m: _ball(m, 7.0)  # noqa: E731
    clo2 = _scenario("course_clo2_weekly_subcutaneous", EQUAL)
    rfa = _scenario("course_rfa_residual_subcutaneous", EQUAL)
    clo2 = clo2.model_copy(update={"course": clo2.course.model_copy(update={"sessions": clo2.course.sessions[:1]})})
    rfa = rfa.model_copy(update={"course": rfa.course.model_copy(update={"sessions": rfa.course.sessions[:1]})})
    a = _run(clo2, region, monkeypatch).metrics()
    b = _run(rfa, region, monkeypatch).metrics()
    assert a["scar_ml"] > 0.01
    assert a["scar_ml"] == pytest.approx(b["scar_ml"], rel=1e-12)
    assert a["by_day"]["viable_tumor_ml"] == pytest.approx(b["by_day"]["viable_tumor_ml"], rel=1e-12)
    # defaults: oxidative debris is more digestible than coagulated, so the outcomes differ
    clo2d = _scenario("course_clo2_weekly_subcutaneous")
    rfad = _scenario("course_rfa_residual_subcutaneous")
    clo2d = clo2d.model_copy(update={"course": clo2d.course.model_copy(update={"sessions": clo2d.course.sessions[:1]})})
    rfad = rfad.model_copy(update={"course": rfad.course.model_copy(update={"sessions": rfad.course.sessions[:1]})})
    c = _run(clo2d, region, monkeypatch).metrics()
    d = _run(rfad, region, monkeypatch).metrics()
    assert abs(c["debris_ml"] - d["debris_ml"]) > 0.05 * d["debris_ml"]


def test_later_sessions_run_in_healed_tissue_and_course_metrics(monkeypatch):
    sc = _scenario("course_rfa_residual_subcutaneous", ["course.sessions.1.target=planned"])
    cr = _run(sc, lambda m: _ball(m, 6.0), monkeypatch)
    m = cr.metrics()
    (s0, model0), (s1, model1), (s_ref, model_ref) = FakeRunner.seen
    assert s_ref == 1 and model_ref is cr.base       # the predictability reference: same plan, untreated
    assert model0 is cr.base                          # the first session: untreated tissue
    assert model1 is not cr.base
    tissue = cr.base.tissue
    # day 14: the dead core is still mostly coagulated debris: no perfusion there, scar/granulation labels at its rim
    core = _ball(cr.base, 3.0)
    assert np.all(model1.props["perfusion"][core] < 0.2 * cr.base.props["perfusion"][core])
    rim = _ball(cr.base, 8.0) & ~_ball(cr.base, 6.0)
    assert np.any(np.abs(model1.props["perfusion"][rim] - cr.base.props["perfusion"][rim])
                  > 0.05 * cr.base.props["perfusion"][rim])
    assert np.allclose(model1.props["reductive_fast"][core], cr.debris_R["reductive_fast"][core], rtol=0.01)
    # course metrics: by day, sessions, no fraction error
    assert m["by_day"]["day"][0] == 0.0 and m["follow_up_day"] == pytest.approx(30.0)
    assert len(m["sessions"]) == 2
    # the second plan kills the same ball again, which holds no viable tumour any more: coverage and the
    # reference coverage (same plan in untreated tissue) of the remaining tumour are both 0, predictability undefined
    s1 = m["sessions"][1]
    assert s1["coverage"] == 0.0 and s1["reference_coverage"] == 0.0 and s1["predictability"] is None
    assert m["healing_fraction_sum_error"] < 1e-12
    ball_ml = float(_ball(cr.base, 6.0).sum()) * cr.base.grid.dV * 1e6
    tumor_in_ball = float((_ball(cr.base, 6.0) & cr.base.mask("tumor")).sum()) * cr.base.grid.dV * 1e6
    assert m["sessions"][0]["killed_ml"] == pytest.approx(ball_ml)
    assert m["sessions"][0]["tumor_killed_ml"] == pytest.approx(tumor_in_ball)
    assert m["sessions"][0]["coverage"] == pytest.approx(tumor_in_ball / m["sessions"][0]["target_ml"])
    assert m["normal_tissue_destroyed_ml"] == pytest.approx(ball_ml - tumor_in_ball, abs=1e-9)


def test_scar_properties_follow_the_library(monkeypatch):
    sc = _scenario("course_mwa_subcutaneous")
    model = build_model(sc)
    cr = CourseRunner(model, sc)
    ct = CourseTissue(model, cr.hp)
    hs = cr.hs
    vox = tuple(int(i) for i in np.argwhere(model.mask("tumor"))[0])
    hs.frac[:, vox[0], vox[1], vox[2]] = 0.0
    hs.frac[IDX["scar"]][vox] = 1.0
    hs.vascular[vox] = cr.hp["vascular_density_scar"]
    healed = ct.model_for(hs, cr.debris_R)
    lib = model.library
    for prop in ("perfusion", "drained_youngs_modulus", "electrical_conductivity", "reductive_fast"):
        assert healed.props[prop][vox] == pytest.approx(lib.value("scar", prop), rel=1e-12), prop
    assert healed.label_table[int(healed.labels[vox])] == "scar"
    assert ct.state_codes(hs)[vox] == int(TissueState.SCAR)


def test_targeting_moves_the_plan_onto_the_remaining_components():
    sc = _scenario("course_clo2_weekly_subcutaneous")
    model = build_model(sc)
    g = model.grid
    u = np.zeros(g.shape)
    x, y, z = g.coords()
    blob = ((x - 6e-3) ** 2 + (y - 2e-3) ** 2 + (z + 12e-3) ** 2 <= (3e-3) ** 2) & model.tissue
    small = ((x + 8e-3) ** 2 + y ** 2 + (z + 12e-3) ** 2 <= (0.5e-3) ** 2) & model.tissue
    u[blob] = 1.0
    u[small] = 1.0
    comps = visible_components(u, model.tissue, g.spacing, 0.5, 2e-3)
    assert len(comps) == 1                            # the 1-voxel one is below the detection size
    tumor_centroid = course_mod._world(g, np.array(np.nonzero(model.mask("tumor"))).mean(axis=1))
    s = place_session(sc.course.sessions[1], comps, g, tumor_centroid, model.tissue)
    inj = s.injections
    assert len(inj) == 1
    centroid = course_mod._world(g, comps[0][1])
    assert np.allclose(np.asarray(inj[0].tip) - np.asarray(sc.course.sessions[1].injections[0].tip),
                       centroid - tumor_centroid)
    assert inj[0].volume == pytest.approx(min(max(comps[0][0], 0.05e-6), 4e-6))
    assert place_session(sc.course.sessions[1], [], g, tumor_centroid, model.tissue) is None
