"""Every built-in course runs end to end with the real session physics on a coarse grid (3 mm voxels, 4 mm for the
liver phantom, 15 s injection steps, 2 h (injection) or 30 min (thermal) session follow-up, no post-kill model; predictability reruns in two), and `tissuefate compare` turns two of them
into a report that renders in headless Chromium. The full-resolution comparison is docs/course_comparison.md."""
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from tissuefate.cli import app
from tissuefate.scenario import builtin_names, load_raw, validate
from tissuefate.simulation import run_scenario

COURSES = [n for n in builtin_names() if n.startswith("course_")]
WITH_PREDICTABILITY = {"course_clo2_weekly_subcutaneous", "course_rfa_residual_subcutaneous"}


def coarse_sets(name: str) -> list[str]:
    pred = "true" if name in WITH_PREDICTABILITY else "false"
    voxel = "4 mm" if name.endswith("_liver") else "3 mm"
    return [f"domain.voxel_size={voxel}", "fate.enabled=false", "solver.injection_dt=15 s",
            f"course.predictability={pred}", "outputs.figures=false", "outputs.vtk=false"]


def coarse(name: str):
    raw, path = load_raw(name, coarse_sets(name))
    for s in raw["course"]["sessions"]:
        # long enough for regulated necrosis after an injection; thermal deaths are immediate
        s["follow_up"] = "30 min" if s["modality"] in ("rfa", "mwa", "cryo") else "2 h"
    return validate(raw, str(path))


def test_all_builtin_courses_are_listed():
    kinds = {"clo2_weekly", "pei", "rfa_residual", "mwa", "cryo"}
    for site in ("subcutaneous", "liver"):
        assert {f"course_{k}_{site}" for k in kinds} <= set(COURSES)


@pytest.mark.parametrize("name", COURSES)
def test_builtin_course_runs_end_to_end(name):
    sc = coarse(name)
    result = run_scenario(sc)
    c = result.metrics["course"]
    sessions = sc.course.sessions
    assert [s["day"] for s in c["sessions"]] == [s.day for s in sessions]
    assert c["follow_up_day"] == pytest.approx(30.0)
    assert c["healing_fraction_sum_error"] < 1e-12
    by = c["by_day"]
    assert by["day"][0] == 0.0 and by["day"][-1] == pytest.approx(30.0) and len(by["day"]) >= 30
    for key in ("viable_tumor_ml", "debris_ml", "scar_ml", "granulation_ml", "fluid_ml"):
        assert min(by[key]) >= -1e-12, key
    assert c["normal_tissue_destroyed_ml"] >= 0.0
    assert by["viable_tumor_ml"][0] > 0 and by["normal_tissue_lost_ml"][0] == 0.0
    first = c["sessions"][0]
    assert first["predictability"] == 1.0 and first["scar_fraction_of_target"] == 0.0
    assert first["killed_ml"] > 0.0
    if name in WITH_PREDICTABILITY:
        assert all("reference_coverage" in s for s in c["sessions"] if not s.get("skipped"))
    # the run's fields by day are there, with the fractions summing to one in tissue
    ds = result.course
    total = sum(ds[v] for v in ("tumor_fraction", "host_fraction", "debris_fraction", "fluid_fraction",
                                "granulation_fraction", "scar_fraction"))
    tissue = total.isel(day=0).values > 0.5
    assert np.allclose(total.values[:, tissue], 1.0, atol=1e-5)
    assert any(h["name"].startswith("healing.") for h in result.metrics["hypotheses"])


def test_compare_two_builtin_courses_in_chromium(tmp_path):
    names = ["course_rfa_residual_subcutaneous", "course_cryo_subcutaneous"]
    sets = []
    for s in coarse_sets(names[0]):
        sets += ["--set", s]
    sets += ["--set", "course.predictability=false"]
    out = tmp_path / "cmp"
    from tissuefate.report.browser_check import find_chromium
    need = os.environ.get("CI") or os.environ.get("TISSUEFATE_REQUIRE_BROWSER") == "1"
    if find_chromium() is None and not need:
        pytest.skip("Chromium not installed (make browser)")
    res = CliRunner().invoke(app, ["compare", *names, "--out", str(out), "--jobs", "1", "--check", *sets])
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    assert "not a medical device" in html.lower()
    for n in names:
        assert n in html
    check = json.loads((out / "report_check.json").read_text())
    assert check["console_errors"] == [] and check["images_ok"] and check["table_ok"]
    assert (out / "report.png").stat().st_size > 10_000
