"""Wall time of the thermal protocols on a fine grid, with a profile of where the time goes.

    .venv/bin/python benchmarks/thermal.py --protocol rfa --voxel 0.5 --extent 80 [--follow-up 10]

Runs the built-in ``rfa_liver`` (12 min cooled needle, impedance control) or ``cryo_liver`` (two probes,
10-8-10 min) scenario on a cube of ``extent`` mm with ``voxel`` mm voxels (80 mm at 0.5 mm is 160^3 = 4.1e6
voxels), without figures or VTK, and prints one JSON line: voxels, wall time, and seconds spent in the heat
solver, the RF potential solves, the damage update, the MW SAR, the records/snapshots, the set-up and the
post-session fate model; the heat solver's rejected sub-steps and local-correction statistics; the peak
resident memory; and the CPU that other processes used during the timed run (``other_cpu_load_cores``, from
/proc/stat, so a run on a shared machine can be recognised).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import time

GROUPS = {
    "heat_solver": ("bioheat.py", "step"),
    "rf_solves": ("tissuefate/thermal.py", "_solve"),
    "damage": ("thermal_damage.py", "update"),
    "mw_sar": ("microwave.py", "sar_field"),
    "equilibrate": ("tissuefate/thermal.py", "_equilibrate"),
    "records": ("tissuefate/thermal.py", "_record"),
    "snapshots": ("tissuefate/thermal.py", "_snapshot"),
    "build_model": ("model.py", "build_model"),
    "metrics": ("simulation.py", "compute_metrics"),
    "fate_model": ("fate.py", "run_fate"),
    # finer split of the session loop (nested in the groups above, not additional): the heat sub-steps with
    # damage and state updates (_advance, includes most of heat_solver and damage), the RF/MW driver's work per
    # step: sigma, generator, heating field (RFDriver.__call__, includes rf_solves), the tissue-state update
    "advance": ("tissuefate/thermal.py", "_advance"),
    "driver": ("tissuefate/thermal.py", "__call__"),
    "update_state": ("tissuefate/thermal.py", "_update_state"),
}


def _busy_cpu_s() -> float:
    """CPU seconds all processes have used (/proc/stat, all cores; 0 if unavailable)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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
    sets += ["fate.enabled=false", "course.healing=false"]     # the heat session only (the post-kill model has its own benchmark)
    sc = tf.load_scenario(f"{args.protocol}_liver", sets)
    # compile the kernels outside the timing (a tiny run of the same modality)
    tf.run(tf.load_scenario(f"{args.protocol}_liver", ["domain.voxel_size=3 mm", "course.sessions.0.follow_up=1 min",
                                                       "outputs.figures=false", "outputs.vtk=false",
                                                       "fate.enabled=false", "course.healing=false"]))
    from tissuefate import thermal
    runners = []
    run_session = thermal.ThermalSessionRunner.run

    def keep(self):
        runners.append(self)
        return run_session(self)

    thermal.ThermalSessionRunner.run = keep
    prof = cProfile.Profile()
    busy0, own0 = _busy_cpu_s(), _own_cpu_s()
    t0 = time.perf_counter()
    prof.enable()
    res = tf.run(sc)
    prof.disable()
    wall = time.perf_counter() - t0
    other_load = max(_busy_cpu_s() - busy0 - (_own_cpu_s() - own0), 0.0) / wall
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
    out["heat_substeps"] = sum(getattr(r, "n_substeps", 0) for r in runners)
    stats = [getattr(r.heat, "correction_stats", None) for r in runners]
    if stats and stats[0] is not None:
        out["local_correction"] = {k: (max if k.startswith("max") else sum)(st[k] for st in stats) for k in stats[0]}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    out["other_cpu_load_cores"] = round(other_load, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
