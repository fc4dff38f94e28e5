"""Provenance of a run: version, git commit, seed, wall time, platform, library versions."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def provenance(seed: int, wall_time_s: float, started: _dt.datetime) -> dict:
    import numba
    import numpy
    import scipy

    from .. import __version__
    return {
        "tissuefate_version": __version__,
        "git_commit": git_commit(),
        "seed": seed,
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_time_s": round(wall_time_s, 3),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "threads": numba.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "disclaimer": "Research software, not a medical device; results are not dosing advice.",
    }
