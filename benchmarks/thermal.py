"""Wall time of the thermal protocols on a fine grid, with a profile of where the time goes.

    .venv/bin/python benchmarks/thermal.py --protocol rfa --voxel 0.5 --extent 80 [--follow-up 10]

Runs the built-in ``rfa_liver`` (12 min cooled needle, impedance control) or ``cryo_liver`` (two probes,
10-8-10 min) scenario on a cube of ``extent`` mm with ``voxel`` mm voxels (80 mm at 0.5 mm is 160^3 = 4.1e6
voxels), without figures or VTK, and prints one JSON line: voxels, wall time, and seconds spent in the heat
solver, the RF potential solves, the damage update, the MW SAR, the records/snapshots and the set-up.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time

GROUPS = {
    "heat_solver": ("bioheat.py", "step"),
    "rf_solves": ("thermal.py", "_solve"),
    "damage": ("thermal_damage.py", "update"),
    "mw_sar": ("microwave.py", "sar_field"),
    "equilibrate": ("thermal.py", "_equilibrate"),
    "records": ("thermal.py", "_record"),
    "snapshots": ("thermal.py", "_snapshot"),
    "build_model": ("model.py", "build_model"),
    "metrics": ("simulation.py", "compute_metrics"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["rfa", "cryo", "mwa"], default="rfa")
    ap.add_argument("--voxel", type=float, default=0.5, help="mm")
    ap.add_argument("--extent", type=float, default=80.0, help="mm, edge of the cubic domain")
    ap.add_argument("--follow-up", type=float, default=10.0, help="min")
    ap.add_argument("--rf-coarsening", type=int, default=1, help="RF potential on a grid coarser by 1 or 2")
    args = ap.parse_args()
    import tissuefate as tf
    e = args.extent
    sets = [f"domain.voxel_size={args.voxel} mm", f"domain.extent=[{e} mm, {e} mm, {e} mm]",
            "geometry.tumor_center=[0 mm, 0 mm, -40 mm]", "geometry.vessel_point=[0 mm, 15 mm, -40 mm]",
            f"course.sessions.0.follow_up={args.follow_up} min", "outputs.figures=false", "outputs.vtk=false",
            f"model.thermal.rf_potential_coarsening={args.rf_coarsening}"]
    if args.protocol == "cryo":
        sets += ["course.sessions.0.device.probes.0.tip=[-7.5 mm, 0 mm, -55 mm]",
                 "course.sessions.0.device.probes.1.tip=[7.5 mm, 0 mm, -55 mm]"]
    else:
        sets += ["course.sessions.0.device.tip=[0 mm, 0 mm, -55 mm]"]
    sets += ["fate.enabled=false"]     # the heat session only (the post-kill model has its own benchmark)
    sc = tf.load_scenario(f"{args.protocol}_liver", sets)
    # compile the kernels outside the timing (a tiny run of the same modality)
    tf.run(tf.load_scenario(f"{args.protocol}_liver", ["domain.voxel_size=3 mm", "course.sessions.0.follow_up=1 min",
                                                       "outputs.figures=false", "outputs.vtk=false",
                                                       "fate.enabled=false"]))
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    res = tf.run(sc)
    prof.disable()
    wall = time.perf_counter() - t0
    st = pstats.Stats(prof).stats
    out = {"protocol": args.protocol, "voxel_mm": args.voxel, "extent_mm": e,
           "voxels": int(res.metrics["grid"]["shape"][0] * res.metrics["grid"]["shape"][1] * res.metrics["grid"]["shape"][2]),
           "wall_s": round(wall, 1), "threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1))}
    for g, (fname, func) in GROUPS.items():
        cum = sum(v[3] for k, v in st.items() if k[0].endswith(fname) and k[2] == func)
        out[f"{g}_s"] = round(cum, 1)
    out["energy_balance_rel_error"] = res.metrics["energy_balance_rel_error"]
    out["ablation_zone_ml"] = round(res.metrics["ablation_zone_ml"], 2)
    out["n_time_steps"] = len(res.metrics["timeseries"]["t_s"])
    out.update(res.metrics.get("thermal_solver", {}))
    out["rf_coarsening"] = args.rf_coarsening
    print(json.dumps(out))


if __name__ == "__main__":
    main()
