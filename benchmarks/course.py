"""Wall time and memory of a 30-day treatment course on a fine grid, with a profile of where the time goes.

    .venv/bin/python benchmarks/course.py --scenario course_clo2_weekly_subcutaneous --voxel 0.5 [--no-predictability]

Runs a built-in course (default: ClO2 weekly x4 on the 60 x 50 x 40 mm subcutaneous phantom; 0.5 mm voxels give
120 x 100 x 80 = 9.6e5 voxels) without figures, VTK or the post-kill model, and prints one JSON line: voxels, wall
time, the time in the sessions (and the predictability reruns), in the healing model (total, per step, per voxel
and step, and by process), in building the healed tissue, the peak resident memory, and the CPU other processes
used meanwhile (``other_cpu_load_cores``, from /proc/stat).
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
    "sessions": ("tissuefate/course.py", "run"),           # CourseRunner.run includes healing; subtracted below
    "session_runner": ("tissuefate/simulation.py", "run"),
    "thermal_runner": ("tissuefate/thermal.py", "run"),
    "predictability": ("tissuefate/course.py", "_predictability"),
    "healing": ("tissuefate/course.py", "heal_to"),
    "healing_step": ("physics/healing.py", "step"),
    "healing_phagocytes": ("physics/healing.py", "_phagocytes_and_fibroblasts"),
    "healing_clearance": ("physics/healing.py", "_clearance"),
    "healing_vessels": ("physics/healing.py", "_vessels"),
    "healing_repair": ("physics/healing.py", "_repair"),
    "healing_tumor": ("physics/healing.py", "_tumor"),
    "healing_records": ("tissuefate/course.py", "record"),
    "healed_tissue": ("tissuefate/course.py", "model_for"),
}


def _cpu_busy():
    with open("/proc/stat") as fh:
        parts = [float(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="course_clo2_weekly_subcutaneous")
    ap.add_argument("--voxel", type=float, default=0.5, help="voxel size, mm")
    ap.add_argument("--no-predictability", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--repeat-days", default=None,
                    help="replace the sessions by copies of the first one on these days, e.g. 0,7,14,21")
    args = ap.parse_args()
    from tissuefate.scenario import load_raw, validate
    from tissuefate.simulation import run_scenario
    sets = [f"domain.voxel_size={args.voxel} mm", "fate.enabled=false", "outputs.figures=false", "outputs.vtk=false",
            f"course.predictability={'false' if args.no_predictability else 'true'}", *args.set]
    raw, path = load_raw(args.scenario, sets)
    if args.repeat_days:
        first = raw["course"]["sessions"][0]
        raw["course"]["sessions"] = [dict(first, day=float(d)) for d in args.repeat_days.split(",")]
    sc = validate(raw, str(path))
    busy0, tot0 = _cpu_busy()
    self0 = time.process_time()
    prof = cProfile.Profile()
    t0 = time.time()
    prof.enable()
    result = run_scenario(sc)
    prof.disable()
    wall = time.time() - t0
    busy1, tot1 = _cpu_busy()
    ncpu = os.cpu_count() or 1
    ticks = os.sysconf("SC_CLK_TCK")
    other = max((busy1 - busy0) / ticks - (time.process_time() - self0), 0.0) / wall
    stats = pstats.Stats(prof)
    out = {}
    for group, (fname, func) in GROUPS.items():
        out[group] = sum(v[3] for k, v in stats.stats.items() if k[0].endswith(fname) and k[2] == func)
    c = result.metrics["course"]
    shape = result.metrics["grid"]["shape"]
    nvox = shape[0] * shape[1] * shape[2]
    steps = c["healing_steps"]
    print(json.dumps({
        "scenario": sc.name, "voxels": nvox, "shape": shape, "sessions": len(c["sessions"]),
        "predictability_reruns": not args.no_predictability,
        "wall_s": round(wall, 1),
        "session_runs_s": round(out["session_runner"] + out["thermal_runner"], 1),
        "of_which_predictability_reruns_s": round(out["predictability"], 1),
        "healing_s": round(c["healing_wall_s"], 1), "healing_steps": steps,
        "healing_s_per_step": round(c["healing_wall_s"] / max(steps, 1), 3),
        "healing_ns_per_voxel_step": round(1e9 * c["healing_wall_s"] / max(steps, 1) / nvox, 1),
        "healing_by_process_s": {k.removeprefix("healing_"): round(out[k], 1) for k in GROUPS if k.startswith("healing_")},
        "healed_tissue_s": round(out["healed_tissue"], 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "other_cpu_load_cores": round(other * 1.0, 2), "cpus": ncpu,
        "day_no_visible_tumor": c["day_no_visible_tumor"], "viable_tumor_ml_end": c["viable_tumor_ml"],
        "scar_ml": c["scar_ml"],
    }))


if __name__ == "__main__":
    main()
