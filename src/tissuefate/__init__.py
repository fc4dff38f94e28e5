"""tissuefate: research simulator of local tumour treatment in 3-D tissue and the tissue's fate.

Research software, not a medical device; nothing it computes is dosing advice.

    import tissuefate
    sc = tissuefate.load_scenario("clo2_subcutaneous")     # or a path to a YAML file
    result = tissuefate.run(sc)                            # result.metrics (dict), result.fields (xarray.Dataset)
"""
__version__ = "0.1.0"

import os as _os

# BLAS threads spinning against Numba's threads made the Krylov dot products ~3x slower on 2 cores;
# the hot loops are Numba-parallel, so BLAS runs single-threaded unless the user says otherwise.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

from .errors import ScenarioError  # noqa: E402
from .scenario import load_scenario  # noqa: E402


def run(scenario, out=None, progress=None, scenario_raw=None):
    """Run a scenario (a :class:`~tissuefate.scenario.Scenario`, a path or a built-in name).

    Returns a :class:`~tissuefate.result.Result`; if ``out`` is given the run folder is written there
    atomically.
    """
    from .simulation import run_scenario
    return run_scenario(scenario, out=out, progress=progress, scenario_raw=scenario_raw)


__all__ = ["ScenarioError", "load_scenario", "run", "__version__"]
