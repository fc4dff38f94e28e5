"""Phantoms, grid helpers, NIfTI label-map I/O and ScenarioError (numbers against analytic volumes)."""
from __future__ import annotations

import gzip
import math
import pickle

import nibabel as nib
import numpy as np
import pytest

from tissuefate.errors import ScenarioError
from tissuefate.geometry.grid import Grid
from tissuefate.geometry.nifti import grid_to_world_mm, load_label_map, save_label_map
from tissuefate.geometry.phantoms import (
    STANDARD_LABELS,
    TISSUE_NAMES,
    Phantom,
    check_grid_size,
    grid_for,
    liver,
    multi_tumor,
    subcutaneous,
)

MM = 1e-3


def ellipsoid_volume(a, b, c):
    return 4.0 / 3.0 * math.pi * a * b * c


def domain_box(grid):
    o, h, n = (np.asarray(v, float) for v in (grid.origin, grid.spacing, grid.shape))
    return o - h / 2, o + (n - 0.5) * h


def assert_table_complete(ph: Phantom):
    present = set(np.flatnonzero(np.bincount(ph.labels.ravel(), minlength=256)).tolist())
    assert present <= set(ph.label_table)
    assert set(ph.label_table.values()) <= set(TISSUE_NAMES)
    assert ph.label_table.get(0) == "air"
    assert ph.labels.dtype == np.uint8 and ph.labels.shape == ph.grid.shape
    assert sum(ph.counts().values()) == ph.grid.n_voxels


def assert_point_inside(grid, p):
    lo, hi = domain_box(grid)
    p = np.asarray(p, float)
    assert np.all(p >= lo) and np.all(p <= hi), (p, lo, hi)


# ---------------------------------------------------------------- grid helpers
def test_grid_for_centring_and_surface_at_zero():
    g = grid_for((20 * MM, 16 * MM, 30 * MM), 0.5 * MM, air_gap=2 * MM)
    assert g.shape == (40, 32, 60)
    lo, hi = domain_box(g)
    np.testing.assert_allclose(lo[:2], -hi[:2], atol=1e-15)  # laterally centred
    assert hi[2] == pytest.approx(2 * MM, abs=1e-15)  # top face at +air_gap
    assert lo[2] == pytest.approx(-28 * MM, abs=1e-15)
    # non-multiple extents are enlarged to whole voxels
    g2 = grid_for(10 * MM, 0.7 * MM)
    assert g2.shape == (15, 15, 15) and g2.extent[0] >= 10 * MM


def test_check_grid_size_rejects_2000_cubed():
    with pytest.raises(ScenarioError) as ei:
        check_grid_size((2000, 2000, 2000))  # limit = this machine's total RAM
    e = ei.value
    assert e.field == "domain.voxel_size"
    s = str(e)
    assert "domain.voxel_size" in s and "2000x2000x2000" in s and "8e+09 voxels" in s and "TiB" in s
    assert "expected estimated memory <=" in s
    # explicit limit, 1 byte per voxel: 8e9 B > 4 GiB
    with pytest.raises(ScenarioError, match=r"domain\.voxel_size: got 0\.0001 m"):
        check_grid_size((2000,) * 3, bytes_per_voxel=1, limit_bytes=4 * 1024**3, voxel_size=1e-4)
    assert check_grid_size((100, 100, 100), bytes_per_voxel=8, limit_bytes=1e9) == 8_000_000


def test_grid_for_memory_check_suggests_coarser_voxel():
    with pytest.raises(ScenarioError) as ei:
        grid_for(0.1, 1e-5, limit_bytes=1e9)
    assert ei.value.field == "domain.voxel_size"
    assert "use a voxel size of at least" in str(ei.value)
    # the suggested voxel size fits
    h_ok = float(str(ei.value).split("at least ")[1].split(" m")[0])
    grid_for(0.1, h_ok, limit_bytes=1e9)


# ---------------------------------------------------------------- subcutaneous
SUBQ = dict(skin_thickness=1 * MM, fat_thickness=3 * MM, air_gap=2 * MM)


def test_subcutaneous_volumes_and_layers():
    g = grid_for((30 * MM, 30 * MM, 24 * MM), 0.5 * MM, air_gap=2 * MM)
    semi = (6 * MM, 5 * MM, 4 * MM)
    c = (1 * MM, -1.3 * MM, -6 * MM)  # spans z in [-10, -2] mm: fat (-1..-4) and muscle (< -4)
    ph = subcutaneous(g, c, semi, **SUBQ)
    assert_table_complete(ph)
    assert set(ph.label_table.values()) == {"air", "skin", "fat", "muscle", "tumor"}
    V = ellipsoid_volume(*semi)
    assert ph.volume("tumor") == pytest.approx(V, rel=0.02)
    area = g.extent[0] * g.extent[1]
    # layer faces coincide with voxel faces -> exact volumes
    assert ph.volume("air") == pytest.approx(area * 2 * MM, rel=1e-12)
    assert ph.volume("skin") == pytest.approx(area * 1 * MM, rel=1e-12)
    fat_and_muscle = ph.volume("fat") + ph.volume("muscle") + ph.volume("tumor")
    assert fat_and_muscle == pytest.approx(area * 21 * MM, rel=1e-12)
    # tumor straddles fat and muscle
    x, y, z = g.coords()
    zz = np.broadcast_to(z, g.shape)
    tum = ph.mask("tumor")
    assert np.any(tum & (zz > -4 * MM)) and np.any(tum & (zz < -4 * MM))
    # landmarks
    lm = ph.landmarks
    assert float(lm["skin_surface_z"]) == pytest.approx(0.0, abs=1e-15)
    assert float(lm["fat_top_z"]) == pytest.approx(-1 * MM)
    assert float(lm["muscle_top_z"]) == pytest.approx(-4 * MM)
    np.testing.assert_allclose(lm["tumor_center"], c)
    np.testing.assert_allclose(lm["tumor_semi_axes"], semi)
    assert_point_inside(g, lm["tumor_center"])
    assert ph.labels[g.index_of(c)] == 4
    assert ph.labels[g.index_of((0, 0, 1 * MM))] == 0 and ph.labels[g.index_of((0, 0, -0.25 * MM))] == 1
    assert not ph.labels.flags.writeable


def test_layer_thickness_not_a_voxel_multiple():
    g = grid_for((10 * MM, 10 * MM, 10 * MM), 0.5 * MM, air_gap=1 * MM)
    ph = subcutaneous(g, (0, 0, -6 * MM), (2 * MM,) * 3, skin_thickness=1.2 * MM,
                      fat_thickness=2.1 * MM, air_gap=1 * MM)
    area = g.extent[0] * g.extent[1]
    for name, t in (("skin", 1.2 * MM), ("fat", 2.1 * MM)):
        assert abs(ph.volume(name) / area - t) <= 0.5 * MM + 1e-12  # point sampling: within h/2


def _mean_rel_err_over_offsets(h, build, V, n=6):
    rng = np.random.default_rng(1)
    errs = [build(h, rng.uniform(-0.5, 0.5, 3) * h) / V - 1.0 for _ in range(n)]
    return float(np.mean(np.abs(errs))), float(np.max(np.abs(errs)))


def test_ellipsoid_and_sphere_volume_convergence():
    semi = (6 * MM, 5 * MM, 4 * MM)

    def ell(h, off):
        g = grid_for((16 * MM, 14 * MM, 14 * MM), h, air_gap=1 * MM)
        return subcutaneous(g, np.array([0, 0, -7 * MM]) + off, semi, 1 * MM, 2 * MM, 1 * MM).volume("tumor")

    def sph(h, off):
        g = grid_for(13 * MM, h)
        return liver(g, np.array([0, 0, -6.5 * MM]) + off, 5 * MM).volume("tumor")

    for build, V in ((ell, ellipsoid_volume(*semi)), (sph, ellipsoid_volume(5 * MM, 5 * MM, 5 * MM))):
        e1, _ = _mean_rel_err_over_offsets(1.0 * MM, build, V)
        e05, m05 = _mean_rel_err_over_offsets(0.5 * MM, build, V)
        e025, _ = _mean_rel_err_over_offsets(0.25 * MM, build, V)
        assert m05 < 0.01 and e05 < 0.005  # measured ~0.23 % mean, < 0.7 % worst
        order = math.log(e1 / e025) / math.log(4.0)
        assert order > 1.2, (e1, e05, e025, order)  # measured ~1.9-2.3
        assert e025 < e1


def test_multi_tumor():
    g = grid_for((30 * MM, 20 * MM, 16 * MM), 0.5 * MM, air_gap=1 * MM)
    tumors = [((-7 * MM, 0, -6 * MM), (4 * MM, 3 * MM, 3 * MM)),
              ((7 * MM, 1 * MM, -8 * MM), (3 * MM, 3 * MM, 3 * MM))]
    ph = multi_tumor(g, tumors, 1 * MM, 2 * MM, 1 * MM)
    assert_table_complete(ph)
    V = sum(ellipsoid_volume(*s) for _, s in tumors)
    assert ph.volume("tumor") == pytest.approx(V, rel=0.02)
    assert ph.landmarks["tumor_centers"].shape == (2, 3)
    for k, (c, _) in enumerate(tumors):
        np.testing.assert_allclose(ph.landmarks[f"tumor_{k}_center"], c)
        assert_point_inside(g, c)
        assert ph.labels[g.index_of(c)] == 4
    assert ph.labels[g.index_of((0, 0, -7 * MM))] == 3  # muscle between the tumours


# ---------------------------------------------------------------- liver
def test_liver_sphere_and_oblique_vessel_volumes():
    g = grid_for((40 * MM, 30 * MM, 30 * MM), 0.5 * MM)
    theta = math.radians(25)
    u = (math.sin(theta), math.cos(theta), 0.0)  # crosses both y faces, never an x or z face
    p = (-8 * MM, 0.0, -20 * MM)
    ph = liver(g, (8 * MM, 0, -10 * MM), 5 * MM, p, u, 1.5 * MM)
    assert_table_complete(ph)
    assert ph.volume("tumor") == pytest.approx(ellipsoid_volume(5 * MM, 5 * MM, 5 * MM), rel=0.02)
    V_cyl = math.pi * (1.5 * MM) ** 2 * g.extent[1] / math.cos(theta)  # cylinder cut by 2 parallel planes
    assert ph.volume("vessel") == pytest.approx(V_cyl, rel=0.03)
    assert ph.volume("air") == 0.0
    assert ph.volume("liver") + ph.volume("tumor") + ph.volume("vessel") == pytest.approx(
        g.n_voxels * g.dV, rel=1e-12)
    lm = ph.landmarks
    np.testing.assert_allclose(np.linalg.norm(lm["vessel_direction"]), 1.0)
    for key in ("tumor_center", "vessel_axis_point"):
        assert_point_inside(g, lm[key])
    assert float(lm["capsule_surface_z"]) == pytest.approx(0.0, abs=1e-15)


def test_vessel_cylinder_convergence_and_capsule_margin():
    errs = []
    for h in (1.0 * MM, 0.5 * MM, 0.25 * MM):
        g = grid_for((20 * MM, 12 * MM, 14 * MM), h, air_gap=1 * MM)
        # vessel along x (off-lattice axis), tumour 5.4 mm from the axis: no overlap (3 + 2 mm)
        ph = liver(g, (5 * MM, 0, -9.5 * MM), 3 * MM, (0, 0.13 * MM, -4.07 * MM), (1, 0, 0), 2 * MM,
                   air_gap=1 * MM)
        assert ph.volume("air") == pytest.approx(g.extent[0] * g.extent[1] * 1 * MM, rel=1e-12)
        V = math.pi * (2 * MM) ** 2 * g.extent[0]
        errs.append(abs(ph.volume("vessel") - V) / V)
    assert errs[1] < 0.03 and errs[2] < errs[0], errs


def test_vessel_lumen_wins_over_tumor():
    g = grid_for(20 * MM, 0.5 * MM)
    ph = liver(g, (0, 0, -10 * MM), 4 * MM, (0, 0, -10 * MM), (0, 1, 0), 1 * MM)
    assert ph.labels[g.index_of((0, 0, -10 * MM))] == 6
    V_t = ellipsoid_volume(4 * MM, 4 * MM, 4 * MM) - math.pi * (1 * MM) ** 2 * 2 * math.sqrt(16 - 1) * MM
    assert ph.volume("tumor") == pytest.approx(V_t, rel=0.04)


def test_liver_without_vessel():
    g = grid_for(12 * MM, 0.5 * MM)
    ph = liver(g, (0, 0, -6 * MM), 3 * MM)
    assert ph.volume("vessel") == 0.0 and "vessel_axis_point" not in ph.landmarks


# ---------------------------------------------------------------- phantom errors
@pytest.mark.parametrize(
    "kwargs, field, fragment",
    [
        (dict(tumor_center=(0, 0, -1 * MM)), "geometry.tumors[0].center", "inside the body"),
        (dict(tumor_center=(9 * MM, 0, -6 * MM)), "geometry.tumors[0].center", "inside the body"),
        (dict(tumor_semi_axes=(1 * MM, -1 * MM, 1 * MM)), "geometry.tumors[0].semi_axes", "positive"),
        (dict(skin_thickness=-1 * MM), "geometry.skin_thickness", ">= 0 m"),
        (dict(air_gap=50 * MM), "geometry.air_gap", "domain height"),
    ],
)
def test_subcutaneous_errors(kwargs, field, fragment):
    g = grid_for(20 * MM, 1 * MM, air_gap=1 * MM)
    args = dict(tumor_center=(0, 0, -6 * MM), tumor_semi_axes=(2 * MM,) * 3,
                skin_thickness=1 * MM, fat_thickness=2 * MM, air_gap=1 * MM)
    args.update(kwargs)
    with pytest.raises(ScenarioError) as ei:
        subcutaneous(g, **args)
    assert ei.value.field == field
    assert str(ei.value).startswith(f"{field}: got ") and fragment in str(ei.value)


def test_liver_errors():
    g = grid_for(20 * MM, 1 * MM)
    with pytest.raises(ScenarioError, match=r"geometry\.vessel_direction: got \(0, 0, 0\)"):
        liver(g, (0, 0, -10 * MM), 3 * MM, (0, 0, -5 * MM), (0, 0, 0), 1 * MM)
    with pytest.raises(ScenarioError, match=r"geometry\.vessel_point: got"):
        liver(g, (0, 0, -10 * MM), 3 * MM, (0, 0, 5 * MM), (1, 0, 0), 1 * MM)
    with pytest.raises(ScenarioError, match=r"geometry\.tumor_radius: got -0\.003; expected"):
        liver(g, (0, 0, -10 * MM), -3 * MM)


def test_phantom_rejects_unmapped_labels():
    g = Grid((2, 2, 2), (1e-3,) * 3)
    with pytest.raises(ScenarioError, match=r"geometry\.labels: got unmapped label values \[7\]"):
        Phantom(g, np.full((2, 2, 2), 7, np.uint8), {0: "air"})


# ---------------------------------------------------------------- ScenarioError
def test_scenario_error_format_and_pickle():
    e = ScenarioError("course.sessions[0].needles[1].tip", (0.0, 0.0, 0.05), "a point inside the domain (m)",
                      hint="the domain spans z in [-0.04, 0.002] m")
    assert isinstance(e, ValueError)
    assert str(e) == ("course.sessions[0].needles[1].tip: got (0, 0, 0.05); expected a point inside the "
                      "domain (m)\nhint: the domain spans z in [-0.04, 0.002] m")
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == str(e) and e2.field == e.field and e2.hint == e.hint


# ---------------------------------------------------------------- NIfTI
LABELS5 = {k: STANDARD_LABELS[k] for k in range(5)}


def _oblique_phantom():
    h_mm = np.array([0.7, 0.9, 1.2])  # anisotropic
    rot = np.array([[0.9396926, -0.3420201, 0.0],
                    [0.3213938, 0.8830222, -0.3420201],
                    [0.1169778, 0.3213938, 0.9396926]])  # Rz(20) then Rx(20), orthonormal to 1e-7
    rot, _ = np.linalg.qr(rot)
    A = np.eye(4)
    A[:3, :3] = rot * h_mm
    A[:3, 3] = (-12.3, 45.6, -78.9)
    g0 = grid_for((14 * MM, 12 * MM, 15 * MM), tuple(h_mm * MM), air_gap=1.2 * MM)
    g = Grid(g0.shape, (0.7e-3, 0.9e-3, 1.2e-3), g0.origin, affine_mm=A)
    ph = subcutaneous(g, (0, 0, -6 * MM), (4 * MM, 3 * MM, 3 * MM), 1.2 * MM, 2.4 * MM, 1.2 * MM)
    return ph, A


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_oblique_anisotropic(tmp_path, suffix):
    ph, A = _oblique_phantom()
    path = save_label_map(ph, tmp_path / f"labels{suffix}")
    q = load_label_map(path, ph.label_table)
    assert np.array_equal(q.labels, ph.labels)
    assert q.grid.shape == ph.grid.shape
    assert q.grid.spacing == (0.7e-3, 0.9e-3, 1.2e-3)  # exactly, float32 header noise removed
    np.testing.assert_allclose(q.grid.affine_mm, A, rtol=0, atol=1e-5)  # float32 sform
    assert q.grid.origin == (0.0, 0.0, 0.0)  # oblique: voxel-axis frame
    assert q.label_table == ph.label_table
    # tumour centroid lands on the phantom's tumour centre (in the voxel-axis frame)
    c_vox = (np.asarray(ph.landmarks["tumor_center"]) - np.asarray(ph.grid.origin))
    np.testing.assert_allclose(q.landmarks["tumor_center"], c_vox, atol=0.6 * MM)
    # the world position of voxel (0,0,0) and (1,2,3) follows the affine
    np.testing.assert_allclose(grid_to_world_mm(q.grid, [0, 0, 0]), A[:3, 3], atol=1e-4)
    p = np.array([1, 2, 3]) * np.asarray(q.grid.spacing)
    np.testing.assert_allclose(grid_to_world_mm(q.grid, p), A[:3, :3] @ [1, 2, 3] + A[:3, 3], atol=1e-4)


def test_nifti_round_trip_axis_aligned_keeps_origin(tmp_path):
    g = grid_for((12 * MM, 10 * MM, 8 * MM), (0.7 * MM, 0.5 * MM, 0.4 * MM), air_gap=0.8 * MM)
    ph = subcutaneous(g, (0, 0, -4 * MM), (3 * MM, 2 * MM, 2 * MM), 0.8 * MM, 1.2 * MM, 0.8 * MM)
    q = load_label_map(save_label_map(ph, tmp_path / "a.nii"), LABELS5)
    assert np.array_equal(q.labels, ph.labels)
    np.testing.assert_allclose(q.grid.origin, g.origin, rtol=0, atol=1e-12)
    np.testing.assert_allclose(q.grid.spacing, g.spacing, rtol=1e-12)
    np.testing.assert_allclose(q.grid.affine_mm, g.affine_mm, rtol=0, atol=1e-5)
    # grid frame == world frame: the phantom's tumour centre is the loaded centroid
    np.testing.assert_allclose(q.landmarks["tumor_center"], ph.landmarks["tumor_center"], atol=0.3 * MM)
    np.testing.assert_allclose(grid_to_world_mm(q.grid, (0.001, 0.002, -0.003)), (1.0, 2.0, -3.0), atol=1e-4)


def test_nifti_accepts_integral_float_4d_singleton_and_metre_units(tmp_path):
    data = np.zeros((4, 5, 6, 1), np.float32)
    data[1:3, 1:4, 2:5, 0] = 4.0
    img = nib.Nifti1Image(data, np.diag([0.7, 0.7, 0.7, 1.0]))
    img.header.set_xyzt_units("meter")
    img.header.set_zooms((0.0007, 0.0007, 0.0007, 1.0))
    nib.save(img, tmp_path / "f.nii")
    q = load_label_map(tmp_path / "f.nii", {0: "air", 4: "tumor"})
    assert q.grid.shape == (4, 5, 6) and q.grid.spacing == (0.0007,) * 3
    assert q.counts() == {"air": 120 - 18, "tumor": 18}
    np.testing.assert_allclose(np.diag(q.grid.affine_mm)[:3], 700.0, rtol=1e-6)  # metres -> mm


# ---------------------------------------------------------------- NIfTI errors
def _save(tmp_path, name, data, affine=None):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _check_err(exc: ScenarioError, field: str, value_fragments, expected_fragment):
    s = str(exc)
    assert exc.field == field and s.startswith(f"{field}: got ")
    for frag in value_fragments:
        assert frag in s, (frag, s)
    assert f"expected {expected_fragment}" in s, s


def test_nifti_2d_image(tmp_path):
    p = _save(tmp_path, "two_d.nii", np.zeros((4, 5), np.uint8))
    with pytest.raises(ScenarioError) as ei:
        load_label_map(p, LABELS5)
    _check_err(ei.value, "geometry.path", [str(p), "2-D image of shape (4, 5)"], "a 3-D integer-valued label image")


def test_nifti_float_valued_image(tmp_path):
    data = np.zeros((4, 5, 6), np.float32)
    data[0, 0, :3] = (0.25, 0.5, 2.5)
    p = _save(tmp_path, "prob.nii.gz", data)
    with pytest.raises(ScenarioError) as ei:
        load_label_map(p, LABELS5)
    _check_err(ei.value, "geometry.path", [str(p), "float-valued image: 3 non-integer voxels", "0.25"],
               "a 3-D integer-valued label image")


def test_nifti_unmapped_labels(tmp_path):
    data = np.zeros((4, 5, 6), np.int16)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = 4, 9, 12
    p = _save(tmp_path, "u.nii", data)
    with pytest.raises(ScenarioError) as ei:
        load_label_map(p, LABELS5)
    _check_err(ei.value, "geometry.labels", ["unmapped label values [9, 12]", str(p)],
               "every label value present in the label table {0: 'air'")
    data[0, 0, 1] = 300
    p = _save(tmp_path, "big.nii", data)
    with pytest.raises(ScenarioError) as ei:
        load_label_map(p, LABELS5)
    _check_err(ei.value, "geometry.labels", ["label values [300]"], "label values in 0..255")


def test_nifti_not_a_nifti_file(tmp_path):
    p = tmp_path / "notes.nii"
    p.write_text("this is not an image\n" * 40)
    with pytest.raises(ScenarioError) as ei:
        load_label_map(p, LABELS5)
    _check_err(ei.value, "geometry.path", [str(p)], "a readable NIfTI-1/2 label image")
    missing = tmp_path / "missing.nii"
    with pytest.raises(ScenarioError) as ei:
        load_label_map(missing, LABELS5)
    _check_err(ei.value, "geometry.path", [str(missing), "does not exist"], "a readable NIfTI-1/2 label image")
    # another nibabel format (MGH) is not NIfTI
    mgh = tmp_path / "x.mgz"
    nib.save(nib.MGHImage(np.zeros((3, 3, 3), np.uint8), np.eye(4)), mgh)
    with pytest.raises(ScenarioError) as ei:
        load_label_map(mgh, LABELS5)
    _check_err(ei.value, "geometry.path", [str(mgh), "MGHImage, not NIfTI"], "a readable NIfTI-1/2 label image")


@pytest.mark.parametrize("case", ["data_half", "header_only_part", "gz_half", "gz_data_cut"])
def test_nifti_truncated_file(tmp_path, case):
    ph, _ = _oblique_phantom()
    full = save_label_map(ph, tmp_path / "full.nii").read_bytes()
    p = tmp_path / ("t.nii.gz" if case.startswith("gz") else "t.nii")
    if case == "data_half":
        p.write_bytes(full[: len(full) // 2])
    elif case == "header_only_part":
        p.write_bytes(full[:200])
    elif case == "gz_half":
        p.write_bytes(gzip.compress(full)[: len(gzip.compress(full)) // 2])
    else:  # valid gzip stream of a file whose data block is cut
        p.write_bytes(gzip.compress(full[: len(full) - 1000]))
    with pytest.raises(ScenarioError) as ei:
        load_label_map(p, LABELS5)
    _check_err(ei.value, "geometry.path", [str(p)], "a readable NIfTI-1/2 label image")


def test_vertical_vessel_is_clipped_at_the_capsule():
    g = grid_for((12 * MM, 12 * MM, 10 * MM), 0.25 * MM, air_gap=2 * MM)
    ph = liver(g, (3 * MM, 3 * MM, -4 * MM), 1.5 * MM, (-2 * MM, -2 * MM, -5 * MM), (0, 0, 1), 1.5 * MM,
               air_gap=2 * MM)
    V = math.pi * (1.5 * MM) ** 2 * 8 * MM  # tissue height 8 mm, nothing in the 2 mm of air
    assert ph.volume("vessel") == pytest.approx(V, rel=0.02)
    assert ph.volume("air") == pytest.approx(g.extent[0] * g.extent[1] * 2 * MM, rel=1e-12)
