"""Ablation-zone metrics against analytic shapes (ellipsoid zones, concentric and off-centre spheres), and a smoke
test of the thermal figures on a tiny synthetic Dataset."""
import math

import numpy as np
import pytest

from tissuefate.thermal_metrics import (ablation_zone_ml, isotherm_volume_ml, min_margin_location_index,
                                        min_margin_mm, min_margin_pair_index, normal_tissue_ablated_ml,
                                        peak_temperature_c, tumor_coverage, zone_axes_mm, zone_metrics)

ML = 1e-6
C = np.array([0.17e-3, -0.11e-3, 0.23e-3])          # shape centres off the voxel lattice: no lucky symmetry


def grid(half_m, spacing):
    """Voxel-centre coordinates of a box [-half, half]^3 (m), origin (m)."""
    n = [int(math.ceil(2 * half_m / h)) + 1 for h in spacing]
    origin = [-(k - 1) / 2 * h for k, h in zip(n, spacing)]
    x, y, z = (origin[d] + spacing[d] * np.arange(n[d]) for d in range(3))
    return (x[:, None, None], y[None, :, None], z[None, None, :]), tuple(origin)


def ball(X, centre, r):
    return (X[0] - centre[0]) ** 2 + (X[1] - centre[1]) ** 2 + (X[2] - centre[2]) ** 2 <= r * r


def ellipsoid(X, centre, u, a, b):
    """Semi-axis a along the unit vector u, b perpendicular."""
    r = [X[d] - centre[d] for d in range(3)]
    s = r[0] * u[0] + r[1] * u[1] + r[2] * u[2]
    r2 = r[0] ** 2 + r[1] ** 2 + r[2] ** 2
    return s * s / a**2 + (r2 - s * s) / b**2 <= 1.0


# ---------------------------------------------------------------------------------------------
# zone axes and volume
# ---------------------------------------------------------------------------------------------
AXIAL = np.array([0.0, 0.0, 1.0])
OBLIQUE = np.array([1.0, 0.7, 0.4]) / np.linalg.norm([1.0, 0.7, 0.4])


@pytest.mark.parametrize("u", [AXIAL, OBLIQUE], ids=["axial", "oblique"])
def test_ellipsoid_axes_and_volume(u):
    a, b = 10e-3, 6e-3
    v_exact = 4 / 3 * math.pi * a * b * b / ML
    vol_err = []
    for h in (1e-3, 0.5e-3, 0.25e-3):
        sp = (h, h, h)
        X, origin = grid(12e-3, sp)
        zone = ellipsoid(X, C, u, a, b)
        long_mm, short_mm = zone_axes_mm(zone, sp, origin, C + 0.6 * a * u, u)
        # convention max - min + one voxel: for curved zones this over-estimates by up to ~1 voxel (measured
        # 0.0-0.8 h for the long axis, 0.7-0.94 h for the short one); a missing "+ voxel" gives about -0.3..-1 h
        assert -0.25 <= (long_mm - 2 * a / 1e-3) / (h / 1e-3) <= 1.05
        assert 0.25 <= (short_mm - 2 * b / 1e-3) / (h / 1e-3) <= 1.05
        vol_err.append(abs(ablation_zone_ml(zone, h**3) / v_exact - 1))
    assert vol_err[0] < 0.02
    assert vol_err[-1] < vol_err[0] and vol_err[-1] < 2e-3


def test_long_axis_is_along_the_probe_not_the_largest_extent():
    # a flat disc (b > a): the "long" axis along the probe is the thin one
    h = 0.5e-3
    X, origin = grid(12e-3, (h, h, h))
    zone = ellipsoid(X, C, OBLIQUE, 3e-3, 9e-3)
    long_mm, short_mm = zone_axes_mm(zone, (h, h, h), origin, C, OBLIQUE)
    assert abs(long_mm - 6.0) <= 1.05 * h / 1e-3
    assert abs(short_mm - 18.0) <= 1.05 * h / 1e-3


def test_single_voxel_rod_is_n_voxels_long_and_one_voxel_wide():
    zone = np.zeros((9, 9, 20), bool)
    zone[4, 4, 3:15] = True
    sp = (1e-3, 1e-3, 2e-3)
    long_mm, short_mm = zone_axes_mm(zone, sp, (0.0, 0.0, 0.0), (4e-3, 4e-3, 20e-3), AXIAL)
    assert long_mm == pytest.approx(12 * 2.0, abs=1e-9)
    assert short_mm == pytest.approx(1.0, abs=1e-9)


def test_axes_measure_only_the_component_at_the_tip():
    h = 0.5e-3
    X, origin = grid(12e-3, (h, h, h))
    main = ellipsoid(X, C, AXIAL, 8e-3, 4e-3)
    satellite = ball(X, (9e-3, 9e-3, 0.0), 2e-3)       # e.g. heating around a vessel wall, not connected
    tip_outside = C + np.array([0.0, 0.0, 9e-3])       # tip just beyond the zone: the nearest component counts
    for tip in (C, tip_outside):
        assert zone_axes_mm(main | satellite, (h,) * 3, origin, tip, AXIAL) == \
            zone_axes_mm(main, (h,) * 3, origin, tip, AXIAL)
    long_sat, _ = zone_axes_mm(main | satellite, (h,) * 3, origin, (9e-3, 9e-3, 0.0), AXIAL)
    assert abs(long_sat - 4.0) <= 1.05 * h / 1e-3
    assert zone_axes_mm(np.zeros_like(main), (h,) * 3, origin, C, AXIAL) == (0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# coverage, margin, normal tissue
# ---------------------------------------------------------------------------------------------
SPACINGS = [(1e-3,) * 3, (0.5e-3,) * 3, (0.5e-3, 0.5e-3, 1e-3)]


@pytest.mark.parametrize("sp", SPACINGS, ids=["h1", "h0.5", "aniso"])
def test_concentric_spheres_zone_larger_than_tumour(sp):
    r_t, r_z = 6e-3, 10e-3
    X, origin = grid(13e-3, sp)
    tumor, zone = ball(X, C, r_t), ball(X, C, r_z)
    tissue = np.ones_like(zone)
    h_mm = max(sp) / 1e-3
    # measured -0.38, -0.44, -0.47 voxel; the face convention on both sides gave -0.9 voxel
    assert abs(min_margin_mm(zone, tumor, sp) - (r_z - r_t) / 1e-3) <= 0.55 * h_mm
    assert tumor_coverage(zone, tumor) == 1.0
    dV = float(np.prod(sp))
    shell = 4 / 3 * math.pi * (r_z**3 - r_t**3) / ML
    assert normal_tissue_ablated_ml(zone, tissue, tumor, dV) == pytest.approx(shell, rel=0.01)
    # the tissue mask is honoured: no tissue within 8 mm (e.g. a vessel lumen) leaves the 8-10 mm shell
    outer = ~ball(X, C, 8e-3)
    assert normal_tissue_ablated_ml(zone, outer, tumor, dV) == pytest.approx(
        4 / 3 * math.pi * (r_z**3 - 8e-3**3) / ML, rel=0.02)


@pytest.mark.parametrize("sp", SPACINGS, ids=["h1", "h0.5", "aniso"])
def test_concentric_spheres_zone_smaller_than_tumour(sp):
    r_t, r_z = 6e-3, 4e-3
    X, origin = grid(8e-3, sp)
    tumor, zone = ball(X, C, r_t), ball(X, C, r_z)
    h_mm = max(sp) / 1e-3
    margin = min_margin_mm(zone, tumor, sp)
    assert margin < 0
    assert abs(margin - (r_z - r_t) / 1e-3) <= 0.55 * h_mm          # measured +0.05, +0.03, +0.01 voxel
    assert tumor_coverage(zone, tumor) == pytest.approx((r_z / r_t) ** 3, rel=0.01)
    assert normal_tissue_ablated_ml(zone, np.ones_like(zone), tumor, float(np.prod(sp))) == 0.0


@pytest.mark.parametrize("sp", SPACINGS, ids=["h1", "h0.5", "aniso"])
@pytest.mark.parametrize("r_z", [10e-3, 6e-3], ids=["covered", "uncovered"])
def test_off_centre_zone_margin_is_the_analytic_minimum_gap(sp, r_z):
    r_t = 5e-3
    shift = np.array([2.3e-3, -1.1e-3, 0.7e-3])
    X, origin = grid(13e-3, sp)
    tumor, zone = ball(X, C, r_t), ball(X, C + shift, r_z)
    gap = r_z - r_t - np.linalg.norm(shift)                 # > 0: smallest tissue layer; < 0: uncovered depth
    margin = min_margin_mm(zone, tumor, sp)
    assert np.sign(margin) == np.sign(gap)
    assert abs(margin - gap / 1e-3) <= 0.55 * max(sp) / 1e-3    # measured |err| <= 0.47 voxel
    # the thinnest margin is on the side away from the shift
    loc = np.asarray(origin) + np.asarray(min_margin_location_index(zone, tumor, sp)) * np.asarray(sp) - C
    assert loc @ (-shift) / (np.linalg.norm(loc) * np.linalg.norm(shift)) > 0.9
    # the pair used by the figure: tumour voxel and the voxel across the zone surface, |margin| + h/2 apart
    t_idx, q_idx = min_margin_pair_index(zone, tumor, sp)
    assert zone[t_idx] != zone[q_idx] and tumor[t_idx]
    if len(set(sp)) == 1:
        d_mm = np.linalg.norm((np.subtract(q_idx, t_idx)) * np.asarray(sp)) / 1e-3
        assert d_mm - 0.5 * sp[0] / 1e-3 == pytest.approx(abs(margin), abs=1e-9)
    if r_z > 7e-3:
        assert tumor_coverage(zone, tumor) == 1.0
    else:
        assert 0.5 < tumor_coverage(zone, tumor) < 1.0


def test_margin_convention_half_voxel_each_side_of_the_zone_surface():
    # flat zone face at a voxel boundary: tumour voxel just inside -> +h/2, just outside -> -h/2
    h = 1e-3
    zone = np.zeros((10, 3, 3), bool)
    zone[:5] = True
    tumor = np.zeros_like(zone)
    tumor[4, 1, 1] = True
    assert min_margin_mm(zone, tumor, (h, h, h)) == pytest.approx(0.5)
    tumor[5, 1, 1] = True
    assert min_margin_mm(zone, tumor, (h, h, h)) == pytest.approx(-0.5)
    tumor[7, 1, 1] = True
    assert min_margin_mm(zone, tumor, (h, h, h)) == pytest.approx(-2.5)
    assert math.isnan(min_margin_mm(np.zeros_like(zone), tumor, (h, h, h)))
    assert math.isnan(min_margin_mm(zone, np.zeros_like(zone), (h, h, h)))


def test_isotherm_volume_and_peak_temperature():
    h = 0.5e-3
    X, origin = grid(12e-3, (h, h, h))
    r = np.sqrt((X[0] - C[0]) ** 2 + (X[1] - C[1]) ** 2 + (X[2] - C[2]) ** 2)
    T_k = 273.15 - 60.0 + 8000.0 * r                      # ice ball: -60 degC at the probe, +8 K/mm outward
    for level_c, radius in [(0.0, 7.5e-3), (-20.0, 5e-3), (-40.0, 2.5e-3)]:
        v = isotherm_volume_ml(T_k, 273.15 + level_c, h**3)
        assert v == pytest.approx(4 / 3 * math.pi * radius**3 / ML, rel=0.03)
    within = np.broadcast_to(X[2] >= C[2], T_k.shape)
    assert isotherm_volume_ml(T_k, 273.15, h**3, within) == pytest.approx(
        0.5 * isotherm_volume_ml(T_k, 273.15, h**3), rel=0.03)
    assert isotherm_volume_ml(-T_k, -273.15, h**3, below=False) == isotherm_volume_ml(T_k, 273.15, h**3)
    T_max = 310.15 + 60.0 * np.exp(-r / 3e-3)
    assert peak_temperature_c(T_max, ball(X, C, 20e-3)) == pytest.approx(37.0 + 60.0 * math.exp(-r.min() / 3e-3),
                                                                         rel=1e-12)
    assert peak_temperature_c(T_max, r >= 9e-3) == pytest.approx(37.0 + 60.0 * math.exp(-3.0), abs=0.5)
    assert math.isnan(peak_temperature_c(T_max, np.zeros(T_max.shape, bool)))


def test_zone_metrics_dict():
    h = 0.5e-3
    sp = (h, h, h)
    X, origin = grid(13e-3, sp)
    zone = ellipsoid(X, C, OBLIQUE, 12e-3, 8e-3)
    tumor = ball(X, C, 5e-3)
    m = zone_metrics(zone, tumor, np.ones_like(zone), sp, origin, C + 5e-3 * OBLIQUE, OBLIQUE)
    assert set(m) == {"ablation_zone_ml", "zone_short_axis_mm", "zone_long_axis_mm", "tumor_coverage",
                      "min_margin_mm", "normal_tissue_ablated_ml"}
    assert m["ablation_zone_ml"] == pytest.approx(4 / 3 * math.pi * 12e-3 * 64e-6 / ML, rel=0.01)
    assert m["zone_long_axis_mm"] == pytest.approx(24.0, abs=0.6)
    assert m["zone_short_axis_mm"] == pytest.approx(16.0, abs=0.6)
    assert m["min_margin_mm"] == pytest.approx(3.0, abs=0.3)        # tumour touches the short semi-axis first
    assert m["tumor_coverage"] == 1.0
    assert m["normal_tissue_ablated_ml"] == pytest.approx(m["ablation_zone_ml"] - np.count_nonzero(tumor) * h**3
                                                          / ML, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# figures (smoke test on a tiny synthetic run)
# ---------------------------------------------------------------------------------------------
def synthetic_dataset(modality: str, n: int = 20, h_mm: float = 1.5):
    import xarray as xr

    from tissuefate.tissue_state import TissueState

    u = np.array([0.3, 0.0, -0.95]) / np.linalg.norm([0.3, 0.0, -0.95])     # oblique, inserted from +z
    x = (np.arange(n) - (n - 1) / 2) * h_mm
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    table = {0: "air", 1: "skin", 2: "liver", 3: "tumor"}
    lab = np.full(X.shape, 2, np.uint8)
    lab[Z > 9.0] = 1
    lab[Z > 10.5] = 0
    lab[X**2 + Y**2 + Z**2 <= 5.0**2] = 3
    r2 = X**2 + Y**2 + Z**2 - (X * u[0] + Z * u[2]) ** 2
    g = np.exp(-((X * u[0] + Z * u[2]) ** 2 / 9.0**2 + r2 / 6.0**2))
    times = np.array([0.0, 300.0, 600.0])
    dT = -180.0 if modality == "cryo" else 70.0
    T = 37.0 + dT * np.stack([0 * g, g, 0.3 * g])
    dims = ("time", "x", "y", "z")
    omega = np.stack([0 * g, 3 * g**4, 10 * g**4]) * 1e2
    dead = np.stack([0 * g, g > 0.5, g > 0.5]).astype(bool)
    code = TissueState.FROZEN_DEAD if modality == "cryo" else TissueState.COAGULATED
    state = np.where(dead, int(code), int(TissueState.VIABLE)).astype(np.int8)
    state[:, lab == 0] = int(TissueState.NO_TISSUE)
    ds = xr.Dataset({"labels": (("x", "y", "z"), lab), "temperature": (dims, T), "tissue_state": (dims, state),
                     "damage_omega": (dims, omega), "temperature_max": (("x", "y", "z"), T.max(0)),
                     "temperature_min": (dims, np.minimum.accumulate(T, axis=0))},
                    coords={"time": times, "x": x, "y": x, "z": x})
    t = list(np.linspace(0.0, 600.0, 13))
    on = [ti <= 300.0 for ti in t]
    ts = {"t_s": t}
    if modality == "cryo":
        ts["probe_temperature_c"] = [-150.0 if o else 0.0 for o in on]
    else:
        ts.update(power_w=[60.0 if o else 0.0 for o in on], impedance_ohm=[90.0 if o else None for o in on],
                  tip_temperature_c=[90.0 if o else 50.0 for o in on],
                  energy_delivered_j=list(np.cumsum([60.0 * 50.0 if o else 0.0 for o in on])))
    tip = [int(np.argmin(abs(x - v))) for v in 4.0 * u]
    extras = {"label_table": table, "probe_tips_index": [tip], "probe_direction": list(u), "heating_end_s": 300.0,
              "modality": modality}
    return ds, {"scenario": f"smoke_{modality}", "timeseries": ts, "min_margin_mm": 1.2}, extras


@pytest.mark.parametrize("modality", ["rfa", "cryo"])
def test_thermal_figures_are_written(tmp_path, modality):
    from tissuefate.report.thermal_figures import make_thermal_figures

    ds, metrics, extras = synthetic_dataset(modality)
    paths = make_thermal_figures(ds, metrics, extras, tmp_path)
    assert sorted(p.name for p in paths) == ["generator_curves.png", "thermal_slices.png", "zone_over_tumor.png"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 10_000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_thermal_figures_skip_what_is_missing(tmp_path):
    from tissuefate.report.thermal_figures import make_thermal_figures, probe_planes

    ds, metrics, extras = synthetic_dataset("mwa")
    assert [(a, why.split(" (")[0]) for a, _, why in probe_planes(ds, extras)] == [
        ("y", "plane along the probe"), ("z", "plane across the active part")]
    ds = ds.drop_vars(["damage_omega", "temperature_max", "temperature_min"])
    paths = make_thermal_figures(ds, {"scenario": "bare"}, {k: extras[k] for k in ("label_table", "modality")},
                                 tmp_path)
    assert sorted(p.name for p in paths) == ["thermal_slices.png", "zone_over_tumor.png"]   # no generator series
    assert all(p.stat().st_size > 10_000 for p in paths)
    paths = make_thermal_figures(ds.drop_vars(["labels", "tissue_state"]), {"scenario": "no labels"}, {}, tmp_path)
    assert [p.name for p in paths] == ["thermal_slices.png"]      # no zone and no tumour: nothing to overlay
