"""One quasi-static elasticity solve on n^3 voxels of a subcutaneous-like tissue block, with a profile.

    .venv/bin/python benchmarks/elasticity.py --n 128 --nu 0.4 --method gmg [--inclusion stiff|soft]

Geometry (a 60 mm cube, voxel 60/n mm, z up): muscle for z < 30 mm (E 25 kPa), fat 30-50 mm (3 kPa),
dermis 50-53 mm (100 kPa), air above 53 mm (void voxels: traction-free skin surface); a sphere of radius
10 mm centred at z = 38 mm (a tumour straddling fat and muscle) with E 30 kPa ("stiff") or 1 kPa ("soft")
and a swelling eigenstrain of 0.03 (isotropic linear), partial-volume voxels by the Reuss mixture; the same
nu in every tissue; deep face z- fixed (u = 0), the four sides and the top traction-free.
The muscle/fat/dermis moduli are round illustrative numbers, not parameters of the model.

Prints one JSON line: unknowns, method, set-up and solve times, CG iterations, final residual, peak RSS
(resource.getrusage, includes the Numba compilation done on a tiny warm-up problem first), and a profile of
the solve (cProfile: seconds in the fine-grid operator, the smoother vector kernels, transfer, coarse solve,
CG vector kernels / sparse products, AMG V-cycles).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import time

import numpy as np

GROUPS = {
    "operator_apply": ("elasticity.py", "_apply"),
    "smoother_vector_ops": ("elasticity.py", ("_cheb_start", "_cheb_step", "_sub")),
    "transfer": ("elasticity.py", ("_restrict", "_prolong_add")),
    "cg_vector_ops": ("elasticity.py", ("_dot", "_cg_update", "_xpby")),
    "gmg_build": ("elasticity.py", "_build_gmg"),
    "lanczos_lmax": ("elasticity.py", "_lmax"),
    "bsr_assembly": ("elasticity.py", "_assemble_bsr"),
    "amg_setup": ("elasticity.py", "_build_amg"),
    "amg_vcycles": ("multilevel.py", "aspreconditioner"),
    "sparse_matvec": ("_bsr.py", "_matmul_vector"),
    "eigen_force": ("elasticity.py", "_eigen_force"),
    "post": ("elasticity.py", "_post"),
}


def build_case(n, nu, inclusion):
    from tissuefate.numerics.elasticity import partial_volume_moduli, sphere_volume_fraction
    side = 60e-3
    h = side / n
    zc = (np.arange(n) + 0.5) * h
    E_layer = np.where(zc < 30e-3, 25e3, np.where(zc < 50e-3, 3e3, 100e3))
    solid = np.broadcast_to(zc < 53e-3, (n, n, n)).copy()
    phi = sphere_volume_fraction((n, n, n), (h, h, h), (side / 2, side / 2, 38e-3), 10e-3)
    E_inc = 30e3 if inclusion == "stiff" else 1e3
    E_bg = np.broadcast_to(E_layer, (n, n, n))
    E, nu_v, eig = partial_volume_moduli(phi, E_inc, nu, E_bg, nu, 0.03, 0.0)
    return (h, h, h), solid, E, nu_v, eig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--nu", type=float, default=0.4)
    ap.add_argument("--method", choices=["auto", "gmg", "amg"], default="auto")
    ap.add_argument("--inclusion", choices=["stiff", "soft"], default="stiff")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--threads", type=int, default=None,
                    help="Numba threads (default: the solver's choice, 1 on a busy machine)")
    ap.add_argument("--profile", action="store_true", help="group the solve time with cProfile")
    args = ap.parse_args()
    from tissuefate.numerics.elasticity import ElasticitySolver

    # compile the kernels outside the timing
    sp_, solid, E, nu, eig = build_case(16, args.nu, args.inclusion)
    for m in ("gmg", "amg"):
        ElasticitySolver(sp_, solid, method=m, threads=args.threads).solve(E, nu, eig)

    spacing, solid, E, nu, eig = build_case(args.n, args.nu, args.inclusion)
    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    solver = ElasticitySolver(spacing, solid, fixed_faces=("z-",), rtol=args.rtol, method=args.method,
                              threads=args.threads)
    t_init = time.perf_counter() - t0
    sol = solver.solve(E, nu, eig)
    if prof:
        prof.disable()
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB
    out = {"n": args.n, "voxels": int(np.prod(solid.shape)), "solid_voxels": int(solid.sum()),
           "unknowns": sol.n_dofs, "method": sol.method, "nu": args.nu, "inclusion": args.inclusion,
           "threads": sol.info.get("threads"), "load_avg_1min": round(os.getloadavg()[0], 2),
           "init_s": round(t_init, 2), "setup_s": round(sol.setup_s, 2), "solve_s": round(sol.solve_s, 2),
           "wall_s": round(wall, 2), "iterations": sol.iterations, "residual": sol.residual,
           "peak_rss_gib": round(rss, 2), "max_uz_mm": float(np.nanmax(sol.displacement[..., 2]) * 1e3),
           "info": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in sol.info.items()
                    if k != "levels"}}
    lv = sol.info.get("levels") or {}
    out["hierarchy"] = {k: (round(v, 2) if isinstance(v, float) else (str(v) if k == "levels" else v))
                        for k, v in lv.items()}
    if prof:
        st = pstats.Stats(prof).stats
        groups = {}
        for name, (fname, funcs) in GROUPS.items():
            funcs = (funcs,) if isinstance(funcs, str) else funcs
            tot = 0.0
            for (file, _line, fn), (_cc, _nc, tt, ct, _callers) in st.items():
                if file.endswith(fname) and fn in funcs:
                    tot += ct
            groups[name] = round(tot, 2)
        out["profile_s"] = groups
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
