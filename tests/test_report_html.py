"""The compare report: content of report.html built from synthetic run folders, the page in headless Chromium,
and `tissuefate compare` on finished run folders and on bad input.

The browser test skips without Chromium, except when CI is set or TISSUEFATE_REQUIRE_BROWSER=1: then it fails
(install Chromium with `make browser`)."""
from __future__ import annotations

import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from tissuefate.cli import app  # noqa: E402
from tissuefate.report.browser_check import check_page, find_chromium, parse_console, parse_status  # noqa: E402
from tissuefate.report.html_report import DISCLAIMER, metric_rows, write_compare_report  # noqa: E402

DAYS = np.arange(0.0, 31.0)
COMMON_HYP = {"name": "tissue.tumor.interstitial_fraction", "value": 0.3, "unit": "", "range": [0.2, 0.5],
              "source": "injection.md §3"}


def _metrics(name: str, modality: str, clearance: float, extra_hyp: dict | None, clear_day: float | None) -> dict:
    viable = np.maximum(0.0, 1.5 * (1.0 - DAYS / (clear_day or 60.0)))
    scar = 1.2 * (1.0 - np.exp(-DAYS / (8.0 / clearance)))
    debris = 2.0 * np.exp(-DAYS * clearance / 6.0)
    hyps = [COMMON_HYP, {"name": "healing.clearance_rate", "value": clearance, "unit": "1/d", "range": [0.05, 1.0],
                         "source": "healing.md §2 (hypothesis)"}]
    if extra_hyp:
        hyps.append(extra_hyp)
    return {
        "scenario": name, "disclaimer": "Research software, not a medical device; no dosing advice.",
        "modalities": [modality], "tumor_volume_ml": 3.33, "viable_tumor_ml": 3.1, "normal_tissue_necrosis_ml": 4.2,
        "necrosis_beyond_tumor_mm": 11.4, "runtime_s": 128.0 if modality == "clo2" else 95.5,
        "hypotheses": hyps,
        "first_separation_day": 5.6, "detachment_day": 14.2 if modality == "clo2" else None,
        "detached_ml": 4.4 if modality == "clo2" else 0.0, "separated_boundary_fraction": 1.0,
        "course": {
            "follow_up_day": 30.0, "detection_size_mm": 2.0, "day_no_visible_tumor": clear_day,
            "normal_tissue_destroyed_ml": 3.2, "scar_ml": float(scar[-1]), "viable_tumor_ml": float(viable[-1]),
            "by_day": {"day": DAYS.tolist(), "viable_tumor_ml": viable.tolist(), "debris_ml": debris.tolist(),
                       "scar_ml": scar.tolist(), "granulation_ml": (0.5 * scar).tolist(),
                       "normal_tissue_lost_ml": (3.2 * (1 - np.exp(-DAYS))).tolist(),
                       "phagocytes_ml": (0.1 * debris).tolist()},
            "debris_by_mode_ml": {"oxidative": debris.tolist(), "chemical": [0.0] * len(DAYS)},
            "sessions": [{"index": 0, "day": 0.0, "modality": modality, "targeted": False, "killed_ml": 2.0,
                          "tumor_killed_ml": 1.5, "normal_tissue_destroyed_ml": 0.5, "target_ml": 2.1,
                          "coverage": 0.71, "reference_coverage": 0.71, "predictability": 1.0,
                          "scar_fraction_of_target": 0.0,
                          "applicators": [{"tip_mm": [0, 0, -9], "direction": [0, 0, 1]}]},
                         {"index": 1, "day": 14.0, "modality": modality, "targeted": True, "predictability": 0.8}],
            "hypotheses": ["healing.clearance_rate", "healing.scar_contraction"],
        },
    }


def _course_nc(path, shift: int) -> None:
    nx, ny, nz = 20, 20, 16
    x = np.arange(nx) - nx / 2 + 0.5
    y = np.arange(ny) - ny / 2 + 0.5
    z = np.arange(nz) - nz + 0.5
    saved = np.array([0.0, 7.0, 14.0, 21.0, 28.0, 30.0])
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    r = np.sqrt(X ** 2 + Y ** 2 + (Z + 8) ** 2)
    shape = (len(saved), nx, ny, nz)
    f = {k: np.zeros(shape, np.float32) for k in ("tumor", "host", "debris", "granulation", "scar", "fluid")}
    for t, d in enumerate(saved):
        core = r < 5.0 - 0.1 * d - 0.05 * shift * d
        rim = (r >= 5.0 - 0.1 * d) & (r < 6.5)
        f["tumor"][t][core] = np.clip(1 - d / 20.0, 0, 1)
        f["debris"][t][core] = 1 - f["tumor"][t][core]
        f["granulation"][t][rim] = 0.5
        f["scar"][t][rim] = min(0.5, d / 40.0)
        f["fluid"][t][rim] = 0.5 - f["scar"][t][rim]
        f["host"][t][~(core | rim)] = 1.0
    ds = xr.Dataset({f"{k}_fraction": (("day", "x", "y", "z"), v, {"units": "1"}) for k, v in f.items()},
                    coords={"day": ("day", saved, {"units": "d"}), "x": ("x", x, {"units": "mm"}),
                            "y": ("y", y, {"units": "mm"}), "z": ("z", z, {"units": "mm"})},
                    attrs={"tumor_center_index": [nx // 2, ny // 2, 8]})
    ds.to_netcdf(path, engine="h5netcdf")


def _figure(path, title: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.imshow(rng.random((20, 30)), cmap="viridis")
    ax.set_title(title)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def make_run_folder(path, name: str, modality: str, clearance: float, extra_hyp: dict | None = None,
                    clear_day: float | None = 17.0, shift: int = 0):
    """A run folder as the course model writes it: metrics.json, scenario_resolved.json, figures, course.nc."""
    (path / "figures").mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(_metrics(name, modality, clearance, extra_hyp, clear_day)))
    (path / "scenario_resolved.json").write_text(json.dumps(
        {"name": name, "course": {"sessions": [{"day": 0.0, "modality": modality}]}}))
    (path / "scenario.yaml").write_text(f"name: {name}\n")
    for i, fig in enumerate(("course_composition.png", "slices_tip.png", "fate_volume.png")):
        _figure(path / "figures" / fig, f"{name} {fig}", i)
    _course_nc(path / "course.nc", shift)
    return path


@pytest.fixture()
def two_runs(tmp_path):
    a = make_run_folder(tmp_path / "run_a", "clo2_subcutaneous", "clo2", 0.3,
                        {"name": "oxidant.k_fast", "value": 1.2e3, "unit": "1/(M s)", "range": [1e2, 1e4],
                         "source": "chemistry.md §2"})
    b = make_run_folder(tmp_path / "run_b", "rfa_subcutaneous", "rfa", 0.5, None, clear_day=None, shift=1)
    return [a, b]


def _img_srcs(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)


def test_report_content(two_runs, tmp_path):
    path = write_compare_report(two_runs, tmp_path / "out")
    assert path == tmp_path / "out" / "report.html"
    page = path.read_text()
    assert DISCLAIMER in page
    # the metrics table: one column per run, every metric row
    table = re.search(r'<table id="metrics".*?</table>', page, re.S).group(0)
    header = re.search(r"<thead><tr>(.*?)</tr>", table, re.S).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == ["metric", "clo2_subcutaneous", "rfa_subcutaneous"]
    rows = re.findall(r'<tr[^>]*><th scope="row">(.*?)</th>((?:<td>.*?</td>)+)</tr>', table)
    labels = [r[0] for r in rows]
    assert labels == [lab for lab, _ in metric_rows([])]
    for needle in ("modalities", "sessions", "viable tumour at end", "day no visible tumour",
                   "normal tissue destroyed", "scar at end", "predictability", "first separation day",
                   "detachment day", "detached", "runtime"):
        assert any(needle in lab for lab in labels), needle
    for _, cells in rows:
        assert cells.count("<td>") == 2
    cells = dict(rows)
    assert "17.0" in cells["day no visible tumour"] and "–" in cells["day no visible tumour"]
    assert "day 0.0: clo2; day 14.0: clo2 (targeted)" in cells["sessions (day: modality)"]
    assert "#1: 0.8" in cells["predictability per session"]
    # sections
    for sid in ("curves", "weeks-section", "slices", "timeline", "hypotheses", "figures"):
        assert f'id="{sid}"' in page, sid
    # hypotheses: per run and the differences between the runs
    assert "healing.clearance_rate" in page and "healing.md §2 (hypothesis)" in page
    diff = re.search(r'<table id="hyp-diff".*?</table>', page, re.S).group(0)
    assert "healing.clearance_rate" in diff and "value differs" in diff and "0.3 1/d" in diff
    partial = re.search(r'<table id="hyp-partial".*?</table>', page, re.S).group(0)
    assert "oxidant.k_fast" in partial and "only clo2_subcutaneous" in partial and "not used" in partial
    # a course hypothesis listed by name only, in both runs
    assert "healing.scar_contraction" in page and "healing.scar_contraction" not in diff + partial
    assert "tissue.tumor.interstitial_fraction" not in diff + partial
    assert page.count('<details class="hyp-run">') == 2
    # week table: days 0, 7, 14, 21, 28 and the follow-up day 30
    weeks = re.search(r'<table id="weeks".*?</table>', page, re.S).group(0)
    assert re.findall(r'<th scope="row">(.*?)</th>', weeks) == ["0", "7", "14", "21", "28", "30"]
    # self-contained: every image a PNG data URI, no external URL anywhere in src/href, no external script
    srcs = _img_srcs(page)
    # time curves, 2 slice images, the timeline and 3 figures per run
    assert len(srcs) == 1 + 2 + 1 + 6
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "http" not in " ".join(re.findall(r'(?:src|href)="([^"]{0,40})', page))
    assert "<script src" not in page and "<link" not in page


def test_report_missing_keys(tmp_path):
    """A run folder with almost nothing in metrics.json still gives a page, with "–" where values are missing."""
    run = tmp_path / "bare"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"scenario": "bare", "course": None, "hypotheses": None,
                                                  "runtime_s": None}))
    page = write_compare_report([run], tmp_path / "out", labels=["only run"]).read_text()
    assert DISCLAIMER in page and "only run" in page
    assert "No run has course time series" in page and "No course.nc" in page


def test_console_and_status_parsing():
    err = ('[1:1:1123/083838.667777:INFO:CONSOLE:5] "deliberate error", source: file:///t.html (5)\n'
           "[1:1:1123/083838.1:ERROR:dbus/bus.cc:405] Failed to connect to the bus\n"
           '[1:1:1123/083838.670836:INFO:CONSOLE(7)] "Uncaught ReferenceError: f is not defined", source: x (7)\n')
    msgs = parse_console(err)
    assert [m["message"] for m in msgs] == ["deliberate error", "Uncaught ReferenceError: f is not defined"]
    dom = '<div id="tf-check" data-status="{&quot;images_ok&quot;:true,&quot;errors&quot;:[]}" hidden=""></div>'
    assert parse_status(dom) == {"images_ok": True, "errors": []}
    assert parse_status("<html></html>") is None


def _require_browser() -> str:
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI") or os.environ.get("TISSUEFATE_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium is required here (CI or TISSUEFATE_REQUIRE_BROWSER=1) but not installed: "
                        "run `make browser`")
        pytest.skip("Chromium not installed (`make browser` installs it); set TISSUEFATE_REQUIRE_BROWSER=1 "
                    "to make this a failure")
    return exe


def _distinct_colours(png) -> int:
    img = mpimg.imread(png)
    rgb = (np.asarray(img)[..., :3] * 255).astype(np.uint32).reshape(-1, 3)
    return len(np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]))


def test_report_in_chromium(two_runs, tmp_path):
    _require_browser()
    page = write_compare_report(two_runs, tmp_path / "out")
    shot = tmp_path / "out" / "report.png"
    res = check_page(page, shot)
    assert res["console_errors"] == [], res
    assert res["images_ok"] and res["table_ok"], res
    assert res["images"] == 10
    assert shot.is_file() and res["screenshot"] == str(shot)
    img = mpimg.imread(shot)
    assert img.shape[1] == 1400 and img.shape[0] > 2000  # the whole page, not one viewport
    assert _distinct_colours(shot) > 200


def test_check_page_reports_broken_page(tmp_path):
    """The check is not vacuous: a broken image, a missing table and a script error are reported."""
    _require_browser()
    page = tmp_path / "broken.html"
    from tissuefate.report.html_report import SCRIPT_CHECK, SCRIPT_HEAD
    page.write_text(f"<!DOCTYPE html><html><head>{SCRIPT_HEAD}</head><body><img alt='x' src='missing.png'>"
                    "<script>undefinedFunction();</script><div id='tf-check' hidden></div>"
                    f"{SCRIPT_CHECK}</body></html>")
    res = check_page(page, tmp_path / "broken.png", height=600)
    assert not res["images_ok"] and not res["table_ok"]
    text = " ".join(res["console_errors"])
    assert "undefinedFunction" in text and "missing.png" in text


cli = CliRunner()


def test_cli_compare_run_folders(two_runs, tmp_path):
    out = tmp_path / "cmp"
    check = ["--check"] if find_chromium() else ["--no-check"]
    res = cli.invoke(app, ["compare", str(two_runs[0]), str(two_runs[1]), "--out", str(out), *check])
    assert res.exit_code == 0, res.output
    page = (out / "report.html").read_text()
    assert DISCLAIMER in page and "rfa_subcutaneous" in page
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cmp")]
    if check == ["--check"]:
        rep = json.loads((out / "report_check.json").read_text())
        assert rep["images_ok"] and rep["table_ok"] and rep["console_errors"] == []
        assert (out / "report.png").is_file() and rep["screenshot"] == "report.png"
    # the folder exists now: a second compare into it is bad input
    res = cli.invoke(app, ["compare", str(two_runs[0]), "--out", str(out), "--no-check"])
    assert res.exit_code == 2 and "--out" in res.output


def test_cli_compare_same_scenario_twice(two_runs, tmp_path):
    out = tmp_path / "cmp"
    res = cli.invoke(app, ["compare", str(two_runs[0]), str(two_runs[0]), "--out", str(out), "--no-check"])
    assert res.exit_code == 0, res.output
    page = (out / "report.html").read_text()
    assert "<th>clo2_subcutaneous</th><th>clo2_subcutaneous (2)</th>" in page


def test_cli_compare_bad_input(two_runs, tmp_path):
    out = tmp_path / "cmp"
    res = cli.invoke(app, ["compare", str(two_runs[0]), str(tmp_path / "nonexistent.yaml"), "--out", str(out),
                           "--no-check"])
    assert res.exit_code == 2, res.output
    assert "nonexistent.yaml" in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cmp")]
    # a bad --set is bad input too, found before anything runs
    res = cli.invoke(app, ["compare", "clo2_subcutaneous", "--out", str(out), "--no-check",
                           "--set", "course.sessions.0.injections.0.volume=2 mm"])
    assert res.exit_code == 2, res.output
    assert not out.exists()
