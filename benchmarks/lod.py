"""Benchmark of the constant-coefficient LOD diffusion-decay step (tissuefate.numerics.lod.DiffusionDecayLOD).

    python benchmarks/lod.py --n 128 --threads 2 [--steps S] [--trials K]

Prints ONE JSON line:

* ``voxel_updates_per_s``: n^3 * steps / time for ``DiffusionDecayLOD.step`` (one update = one voxel advanced by one
  full x+y+z step incl. decay), best of ``--trials`` timed batches after a JIT/warm-up step; the median is given too
  (the machine may be shared: the best batch is the least disturbed one; ``other_cpu_load_cores`` reports how
  much CPU other processes used during the timing).
* ``memory_bandwidth_gb_s``: STREAM triad ``a = b + s*c`` (Numba, prange, same thread count) on three 128 MiB arrays,
  counted the STREAM way (24 B per element: 2 reads + 1 write, write-allocate not counted); best of 2 x 15 runs
  (before and after the LOD timing).
  ``memory_bandwidth_rmw_gb_s``: in-place ``a = s*a + t`` (16 B per element, no write-allocate, the access pattern
  of the sweeps).
* ``bytes_per_update``: minimum DRAM traffic per voxel update of this kernel = 32 B. Model: the step is two passes
  over the field, each reading and writing every voxel of ``c`` once (8 B + 8 B): (1) the x sweep, run per y-row j
  so the (nx, nz) slice stays in L2 between its forward elimination and back substitution; (2) the fused y+z sweep
  + decay, run per x-slab so the (ny, nz) slab stays in L2 (y elimination, then y back substitution interleaved
  with the z sweep in 8-row blocks). The Thomas factors (3 vectors per axis) are negligible. An unfused
  3-sweep kernel would need 48 B (3 x 16 B).
* ``--variable``: also ``lod_diffuse_updates_per_s`` of the variable-coefficient path (lam None / scalar / field).
* ``roofline_fraction = voxel_updates_per_s * bytes_per_update / memory_bandwidth_gb_s`` (and ``_rmw`` against the
  in-place bandwidth). Caveat: a 128^3 float64 field is 16 MiB and fits in this CPU's 32 MiB L3, so for n <= ~150
  the "DRAM" traffic is really L3 traffic and the fraction may exceed what DRAM alone could deliver.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numba
import numpy as np
from numba import njit, prange

from tissuefate.numerics.lod import DiffusionDecayLOD, LODWorkspace, lod_diffuse

BYTES_PER_UPDATE = 32.0


@njit(parallel=True, fastmath=True)
def _triad(a, b, c, s):
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


@njit(parallel=True, fastmath=True)
def _rmw(a, s, t):
    for i in prange(a.size):
        a[i] = s * a[i] + t


def _cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (from /proc/stat; 0 if unavailable)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return 0.0
    busy = sum(v) - v[3] - v[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stream_bandwidth(reps: int = 15, n: int = 1 << 24) -> tuple[float, float]:
    """(triad GB/s counted as 24 B/element, in-place update GB/s counted as 16 B/element), best of reps."""
    a = np.zeros(n)
    b = np.ones(n)
    c = np.full(n, 2.0)
    _triad(a, b, c, 3.0)
    _rmw(a, 0.5, 1.0)
    t_triad = t_rmw = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        _triad(a, b, c, 3.0)
        t_triad = min(t_triad, time.perf_counter() - t0)
        t0 = time.perf_counter()
        _rmw(a, 0.5, 1.0)
        t_rmw = min(t_rmw, time.perf_counter() - t0)
    return 24.0 * n / t_triad / 1e9, 16.0 * n / t_rmw / 1e9


def bench_lod(n: int, steps: int | None, trials: int) -> dict:
    shape = (n, n, n)
    h = 20e-6
    D = 1e-9
    solver = DiffusionDecayLOD(shape, (h, h, h), D=D, lam=1e-3, dt=10 * h * h / D)
    rng = np.random.default_rng(0)
    c = rng.random(shape)
    solver.step(c)  # JIT (or cache load) + warm-up
    solver.step(c)
    if steps is None:
        t0 = time.perf_counter()
        solver.step(c)
        t1 = time.perf_counter() - t0
        steps = max(3, int(0.2 / max(t1, 1e-6)))
    times = []
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(steps):
            solver.step(c)
        times.append((time.perf_counter() - t0) / steps)
    if not np.all(np.isfinite(c)):
        raise RuntimeError("non-finite state")
    best = min(times)
    med = float(np.median(times))
    return {"steps": steps, "trials": trials, "step_time_s": best,
            "voxel_updates_per_s": n**3 / best, "voxel_updates_per_s_median": n**3 / med}


def bench_variable(n: int, trials: int = 5) -> dict:
    """Rate of the variable-coefficient lod_diffuse (random theta, thetaD = theta*D) for lam None/scalar/field."""
    rng = np.random.default_rng(0)
    shape = (n, n, n)
    theta = rng.uniform(0.1, 0.5, shape)
    thetaD = theta * 1e-9
    c = rng.random(shape)
    ws = LODWorkspace(shape)
    h = 20e-6
    dt = 10 * h * h / 1e-9
    out = {}
    for name, lam in (("none", None), ("scalar", 1e-3), ("field", np.full(shape, 1e-3))):
        lod_diffuse(c, theta, thetaD, dt, (h, h, h), lam=lam, work=ws)
        best = np.inf
        for _ in range(trials):
            t0 = time.perf_counter()
            for _ in range(3):
                lod_diffuse(c, theta, thetaD, dt, (h, h, h), lam=lam, work=ws)
            best = min(best, (time.perf_counter() - t0) / 3)
        out[name] = n**3 / best
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    p.add_argument("--steps", type=int, default=None, help="steps per timed batch (default: ~0.2 s worth)")
    p.add_argument("--trials", type=int, default=15)
    p.add_argument("--variable", action="store_true",
                   help="also time the variable-coefficient lod_diffuse (key lod_diffuse_updates_per_s)")
    a = p.parse_args(argv)
    numba.set_num_threads(a.threads)
    res = {"n": a.n, "threads": a.threads}
    bw0, bw_rmw0 = stream_bandwidth()
    t0, busy0, own0 = time.perf_counter(), _cpu_busy_s(), _own_cpu_s()
    res.update(bench_lod(a.n, a.steps, a.trials))
    wall = time.perf_counter() - t0
    other = max(0.0, (_cpu_busy_s() - busy0) - (_own_cpu_s() - own0)) / wall
    if a.variable:
        res["lod_diffuse_updates_per_s"] = {k: float(f"{v:.4g}") for k, v in bench_variable(a.n).items()}
    bw1, bw_rmw1 = stream_bandwidth()
    bw, bw_rmw = max(bw0, bw1), max(bw_rmw0, bw_rmw1)  # before and after the timing: best (least disturbed)
    rate = res["voxel_updates_per_s"]
    res.update({
        "memory_bandwidth_gb_s": bw,
        "memory_bandwidth_rmw_gb_s": bw_rmw,
        "bytes_per_update": BYTES_PER_UPDATE,
        "roofline_fraction": rate * BYTES_PER_UPDATE / (bw * 1e9),
        "roofline_fraction_rmw": rate * BYTES_PER_UPDATE / (bw_rmw * 1e9),
        "field_mib": a.n**3 * 8 / 2**20,
        "other_cpu_load_cores": other,  # CPU used by other processes during the timing (shared machine)
        "threading_layer": numba.threading_layer(),
        "machine": platform.processor() or platform.machine(),
    })
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) and abs(v) < 1e3 else
                          (float(f"{v:.4g}") if isinstance(v, float) else v)) for k, v in res.items()}))


if __name__ == "__main__":
    main()
