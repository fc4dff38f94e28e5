"""One test per class of bad input: the message names the field, the value and the expected unit or range;
exit code 2; no traceback; no run folder (or partial folder) left behind."""
from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tissuefate.cli import app
from tissuefate.scenario import builtin_dir

runner = CliRunner()


def _default_raw():
    return yaml.safe_load(builtin_dir().joinpath("clo2_subcutaneous.yaml").read_text())


def _run_bad(tmp_path, raw=None, text=None, extra=()):
    path = tmp_path / "bad.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", str(path), "--out", str(out), "--quiet", *extra])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]
    return " ".join(res.output.split())


def test_missing_field(tmp_path):
    raw = _default_raw()
    del raw["course"]["sessions"][0]["injections"][0]["volume"]
    msg = _run_bad(tmp_path, raw)
    assert "course.sessions[0].injections[0].volume" in msg
    assert "missing" in msg


def test_wrong_unit(tmp_path):
    raw = _default_raw()
    raw["course"]["sessions"][0]["injections"][0]["volume"] = "2 mm"
    msg = _run_bad(tmp_path, raw)
    assert "course.sessions[0].injections[0].volume" in msg and "2 mm" in msg
    assert "volume" in msg and "m**3" in msg


def test_wrong_unit_concentration(tmp_path):
    raw = _default_raw()
    raw["course"]["sessions"][0]["agent"]["concentration"] = "300 mL"
    msg = _run_bad(tmp_path, raw)
    assert "course.sessions[0].agent.concentration" in msg and "300 mL" in msg and "mol/m**3" in msg


def test_negative_volume(tmp_path):
    raw = _default_raw()
    raw["course"]["sessions"][0]["injections"][0]["volume"] = "-2 mL"
    msg = _run_bad(tmp_path, raw)
    assert "course.sessions[0].injections[0].volume" in msg and "positive" in msg


def test_needle_outside_domain(tmp_path):
    raw = _default_raw()
    raw["course"]["sessions"][0]["injections"][0]["tip"] = ["0 mm", "0 mm", "-80 mm"]
    msg = _run_bad(tmp_path, raw)
    assert "course.sessions[0].injections[0].tip" in msg and "-80 mm" in msg and "inside the domain" in msg


def test_needle_in_air(tmp_path):
    raw = _default_raw()
    raw["course"]["sessions"][0]["injections"][0]["tip"] = ["0 mm", "0 mm", "0.5 mm"]
    msg = _run_bad(tmp_path, raw)
    assert "course.sessions[0].injections[0].tip" in msg and "inside tissue" in msg


def test_grid_too_large(tmp_path):
    raw = _default_raw()
    raw["domain"]["voxel_size"] = "0.02 mm"
    msg = _run_bad(tmp_path, raw)
    assert "domain.voxel_size" in msg and "voxels" in msg


def test_unknown_tissue(tmp_path):
    raw = _default_raw()
    raw["tissues"] = {"brain": {"reductive_fast": "10 mM"}}
    msg = _run_bad(tmp_path, raw)
    assert "tissues.brain" in msg and "tumor" in msg


def test_unknown_property_and_wrong_unit_override(tmp_path):
    raw = _default_raw()
    raw["tissues"] = {"tumor": {"reductive_fast": "10 mm"}}
    msg = _run_bad(tmp_path, raw)
    assert "tissues.tumor.reductive_fast" in msg and "10 mm" in msg and "mol/m**3" in msg


def test_unknown_key(tmp_path):
    raw = _default_raw()
    raw["course"]["sessions"][0]["injections"][0]["volumen"] = "2 mL"
    msg = _run_bad(tmp_path, raw)
    assert "volumen" in msg and "unknown key" in msg


def test_malformed_yaml(tmp_path):
    msg = _run_bad(tmp_path, text="name: x\ndomain: [1, 2\n  course: : :\n")
    assert "bad.yaml" in msg and "malformed YAML" in msg and "line" in msg


def _nifti_scenario(tmp_path, data, labels):
    import nibabel as nib
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 0.5, 1.0]))
    nib.save(img, tmp_path / "mask.nii.gz")
    raw = _default_raw()
    raw["geometry"] = {"phantom": "nifti", "path": "mask.nii.gz", "labels": labels}
    raw["course"]["sessions"][0]["injections"][0]["tip"] = ["5 mm", "5 mm", "5 mm"]
    return raw


def test_mismatched_nifti_labels(tmp_path):
    data = np.zeros((20, 20, 20), dtype=np.uint8)
    data[5:15, 5:15, 5:15] = 4
    data[8:12, 8:12, 8:12] = 7
    raw = _nifti_scenario(tmp_path, data, {0: "muscle", 4: "tumor"})
    msg = _run_bad(tmp_path, raw)
    assert "geometry.labels" in msg and "7" in msg


def test_malformed_nifti(tmp_path):
    raw = _nifti_scenario(tmp_path, np.zeros((20, 20, 20), dtype=np.uint8), {0: "muscle"})
    (tmp_path / "mask.nii.gz").write_bytes(b"this is not a nifti file")
    msg = _run_bad(tmp_path, raw)
    assert "geometry.path" in msg and "mask.nii.gz" in msg


def test_bad_set_override(tmp_path):
    raw = _default_raw()
    msg = _run_bad(tmp_path, raw, extra=["--set", "course.sessions.0.follow_up=5 kg"])
    assert "course.sessions[0].follow_up" in msg and "5 kg" in msg and "duration" in msg


def test_validate_command_ok_and_bad(tmp_path):
    res = runner.invoke(app, ["validate", "clo2_subcutaneous"])
    assert res.exit_code == 0 and "ok" in res.output
    res = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "nope.yaml" in res.output


@pytest.mark.parametrize("cmd", [["scenarios"], ["params"], ["params", "--tissue", "tumor"]])
def test_info_commands(cmd):
    res = runner.invoke(app, cmd)
    assert res.exit_code == 0
    assert "tumor" in res.output or "clo2_subcutaneous" in res.output


def test_unknown_model_parameter(tmp_path):
    raw = _default_raw()
    raw["model"] = {"vessels": {"k_clo2_tumour": 3.0}}
    msg = _run_bad(tmp_path, raw)
    assert "model.vessels.k_clo2_tumour" in msg and "k_clo2_tumor" in msg


def test_model_parameter_wrong_unit(tmp_path):
    raw = _default_raw()
    raw["model"] = {"procedure": {"perfusion_territory": "2 s"}}
    msg = _run_bad(tmp_path, raw)
    assert "model.procedure.perfusion_territory" in msg and "2 s" in msg and "m" in msg


def test_model_overrides_reach_the_processes():
    from tissuefate import load_scenario
    from tissuefate.model import build_model
    from tissuefate.simulation import SessionRunner, SimState
    sc = load_scenario("clo2_subcutaneous", sets=["model.procedure.track_seal_factor=3",
                                                  "model.procedure.perfusion_territory=2 mm",
                                                  "model.vessels.k_clo2_tumor=5",
                                                  "model.oxidant.k_clo2_slow=1e5 1/(M*s)"])
    model = build_model(sc)
    r = SessionRunner(model, sc, sc.course.sessions[0], 0, SimState.initial(model))
    assert r.procedure["track_seal_factor"] == 3.0
    assert abs(r.procedure["perfusion_territory"] - 2e-3) < 1e-15
    assert r.vessel_params.k_clo2_tumor == 5.0 and r.vessel_params.k_clo2_normal == 1.0
    assert abs(r.ox_params.k_clo2_slow - 100.0) < 1e-9
