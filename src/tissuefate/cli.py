"""Command line: ``tissuefate run|validate|scenarios|params``.

Exit codes: 0 success, 2 bad input (the message names the field, the value and what was expected),
1 an internal error (a bug: please report it with the traceback printed by ``--debug``).
"""
from __future__ import annotations

import datetime as _dt
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ScenarioError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="tissuefate: research simulator of local tumour treatment. Not a medical device; no dosing advice.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # never break an error message mid-word


def _fail(err: ScenarioError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(err))}")
    raise typer.Exit(2)


@contextmanager
def _user_facing_errors(debug: bool, what: str):
    """A user's mistake becomes one clear line (exit 2); an interrupt or internal error a short message."""
    try:
        yield
    except typer.Exit:
        raise
    except ScenarioError as err:
        _fail(err)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; no {what} written")
        raise typer.Exit(130)
    except Exception:
        if debug:
            raise
        err_console.print_exception(max_frames=3)
        raise typer.Exit(1)


@app.command()
def run(scenario: Optional[str] = typer.Argument(None, help="YAML file or built-in name (default: clo2_subcutaneous)"),
        out: Optional[Path] = typer.Option(None, "--out", help="run folder to create (default runs/<name>-<time>)"),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="override, e.g. course.sessions.0.follow_up='2 h'"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
        debug: bool = typer.Option(False, "--debug", help="show tracebacks of internal errors")):
    """Run a scenario and write its run folder."""
    from .scenario import load_raw, validate
    from .simulation import run_scenario
    with _user_facing_errors(debug, "run folder"):
        raw, path = load_raw(scenario, set_)
        sc = validate(raw, str(path))
        if sc.geometry.phantom == "nifti" and not Path(sc.geometry.path).is_absolute():
            g = sc.geometry.model_copy(update={"path": str((path.parent / sc.geometry.path).resolve())})
            sc = sc.model_copy(update={"geometry": g})
        if out is None:
            out = Path("runs") / f"{sc.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        if out.exists():
            raise ScenarioError("--out", str(out), "a folder that does not exist yet")
        if quiet:
            result = run_scenario(sc, out=out, scenario_raw=raw)
        else:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                          TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err_console,
                          transient=True) as bar:
                task = bar.add_task(sc.name, total=1.0)

                def progress(frac: float, text: str = "") -> None:
                    bar.update(task, completed=frac, description=f"{sc.name} {text}")
                result = run_scenario(sc, out=out, progress=progress, scenario_raw=raw)
    print_summary(result)
    console.print(f"run folder: [bold]{result.path}[/]")


def print_summary(result) -> None:
    m = result.metrics
    t = Table(title=f"{m.get('scenario')}  (research software, not a medical device; no dosing advice)",
              show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("tumour volume", "tumor_volume_ml", "mL"), ("viable tumour left", "viable_tumor_ml", "mL"),
        ("necrotic tumour fraction", "necrotic_tumor_fraction", ""),
        ("normal tissue necrosis", "normal_tissue_necrosis_ml", "mL"),
        ("necrosis beyond tumour", "necrosis_beyond_tumor_mm", "mm"), ("injected", "injected_ml", "mL"),
        ("peak pressure", "peak_pressure_kpa", "kPa"), ("backflow along the track", "backflow_ml", "mL"),
        ("  of which out of the skin", "backflow_out_of_skin_ml", "mL"),
        ("oxidant injected", "oxidant_injected_mmol", "mmol"), ("oxidant consumed", "oxidant_consumed_mmol", "mmol"),
        ("stoichiometric bound", "stoichiometric_bound_ml", "mL"),
        ("oxidant balance error", "oxidant_balance_rel_error", ""), ("fluid balance error", "fluid_balance_rel_error", ""),
        ("hypotheses used", "hypotheses", ""), ("runtime", "runtime_s", "s"),
    ]
    no_oxidant = not m.get("oxidant_injected_mmol")
    for label, key, unit in rows:
        v = m.get(key)
        if v is None or (no_oxidant and (key.startswith("oxidant") or key == "stoichiometric_bound_ml")):
            continue
        if key == "hypotheses":
            s = str(len(v))
        elif isinstance(v, float):
            s = f"{v:.3g} {unit}".strip()
        else:
            s = f"{v} {unit}".strip()
        t.add_row(label, s)
    console.print(t)


@app.command()
def validate(file: str = typer.Argument(..., help="scenario YAML file or built-in name")):
    """Validate a scenario file (units, ranges, geometry, needles and probes) without running it."""
    from .applicators import make_needle
    from .model import build_model
    from .scenario import load_scenario
    try:
        sc = load_scenario(file)
        model = build_model(sc)
        from .thermal import check_applicators
        for i, s in enumerate(sc.course.sessions):
            if s.modality in ("rfa", "mwa", "cryo"):
                check_applicators(model, s, i)
                continue
            for j, inj in enumerate(s.injections):
                make_needle(model.grid, model.tissue, inj.tip, inj.direction, inj.gauge,
                            f"course.sessions[{i}].injections[{j}]")
    except ScenarioError as err:
        _fail(err)
    console.print(f"[green]ok[/]: {sc.name} ({model.grid.shape[0]}x{model.grid.shape[1]}x{model.grid.shape[2]} voxels "
                  f"of {sc.domain.voxel_size * 1e3:g} mm, {len(sc.course.sessions)} session(s))")


@app.command()
def scenarios():
    """List the built-in scenarios."""
    from .scenario import DEFAULT_SCENARIO, builtin_names, load_scenario
    t = Table(show_header=True, header_style="bold")
    t.add_column("name")
    t.add_column("description")
    for n in builtin_names():
        sc = load_scenario(n)
        t.add_row(n + (" (default)" if n == DEFAULT_SCENARIO else ""), " ".join(sc.description.split())[:110])
    console.print(t)


@app.command()
def params(tissue: Optional[str] = typer.Option(None, help="only this tissue"),
           hypotheses_only: bool = typer.Option(False, "--hypotheses", help="only hypothesis parameters")):
    """Print the tissue property table (values, units, sources; * marks a hypothesis)."""
    from .tissue import load_library
    lib = load_library()
    names = [tissue] if tissue else lib.tissue_names()
    if tissue and tissue not in lib.tissues:
        _fail(ScenarioError("--tissue", tissue, f"one of {lib.tissue_names()}"))
    t = Table(show_header=True, header_style="bold", title="tissue library (* = hypothesis; SI units)")
    t.add_column("property")
    t.add_column("unit")
    for n in names:
        t.add_column(n, justify="right")
    for row in lib.table_rows():
        cells = []
        any_hyp = False
        for n in names:
            p = row[n]
            if p is None:
                cells.append("-")
            else:
                any_hyp |= p.hypothesis
                cells.append(f"{p.value:.3g}{'*' if p.hypothesis else ''}")
        if hypotheses_only and not any_hyp:
            continue
        t.add_row(row["property"], row["unit"] or "1", *cells)
    console.print(t)
    if tissue:
        s = Table(show_header=True, header_style="bold", title=f"sources for {tissue}")
        s.add_column("property")
        s.add_column("range (SI)")
        s.add_column("source")
        for p in lib.tissues[tissue].values():
            s.add_row(p.name, str(p.range or ""), p.source)
        console.print(s)


def _compare_worker_init(threads: str) -> None:
    """Process-pool initializer: limit numba's threads per worker (set before numba is imported)."""
    import os
    os.environ["NUMBA_NUM_THREADS"] = threads
    if "numba" in sys.modules:  # imported already (it is not, in a spawned worker): limit it at run time
        sys.modules["numba"].set_num_threads(int(threads))


def _compare_load(arg: str, sets: Optional[List[str]]):
    """Load and validate one scenario argument of ``compare``: (raw, validated scenario); ScenarioError if bad."""
    from .scenario import load_raw
    from .scenario import validate as validate_scenario
    raw, path = load_raw(arg, sets)
    sc = validate_scenario(raw, str(path))
    if sc.geometry.phantom == "nifti" and not Path(sc.geometry.path).is_absolute():
        g = sc.geometry.model_copy(update={"path": str((path.parent / sc.geometry.path).resolve())})
        sc = sc.model_copy(update={"geometry": g})
    return raw, sc


def _compare_run_one(arg: str, sets: Optional[List[str]], out: str) -> str:
    """Run one scenario of ``compare`` into the run folder ``out`` (in a worker process); returns ``out``."""
    from .simulation import run_scenario
    raw, sc = _compare_load(arg, sets)
    run_scenario(sc, out=Path(out), scenario_raw=raw)
    return out


def _compare_run_all(to_run: list, sets: Optional[List[str]], jobs: int) -> None:
    """Run the scenarios ``to_run`` [(arg, run folder)]: in this process if ``jobs == 1``, else in a pool of
    ``jobs`` spawned processes with NUMBA_NUM_THREADS=1 each. The first failure cancels the runs not started."""
    if jobs == 1:
        for arg, rd in to_run:
            err_console.print(f"running {arg} -> runs/{rd.name}")
            _compare_run_one(arg, sets, str(rd))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    err_console.print(f"running {len(to_run)} scenarios, {jobs} at a time")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_compare_worker_init, initargs=("1",))
    try:
        futs = {pool.submit(_compare_run_one, arg, sets, str(rd)): (arg, rd) for arg, rd in to_run}
        for fut in as_completed(futs):
            fut.result()
            err_console.print(f"done: {futs[fut][0]} -> runs/{futs[fut][1].name}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@app.command()
def compare(inputs: List[str] = typer.Argument(..., help="scenario files or built-in names, or finished run folders "
                                                           "(a directory with metrics.json)"),
            out: Path = typer.Option(..., "--out", help="folder to create: report.html, runs/<name>/, report.png"),
            set_: Optional[List[str]] = typer.Option(None, "--set", help="override applied to every scenario"),
            jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="parallel runs (default min(2, n))"),
            check: Optional[bool] = typer.Option(None, "--check/--no-check",
                                                 help="check the page in headless Chromium (default: if installed)"),
            debug: bool = typer.Option(False, "--debug", help="show tracebacks of internal errors")):
    """Run scenarios (or take finished run folders) and write a side-by-side HTML report."""
    import json
    import os
    import re
    import shutil
    import tempfile

    from .report.browser_check import find_chromium
    from .report.html_report import is_run_folder, load_run, unique_labels
    tmp: Optional[Path] = None
    with _user_facing_errors(debug, "compare folder"):
        try:
            if out.exists():
                raise ScenarioError("--out", str(out), "a folder that does not exist yet")
            # validate everything before writing anything: (label, existing run folder or None, scenario arg or None)
            plan = []
            for arg in inputs:
                if is_run_folder(Path(arg)):
                    plan.append((load_run(Path(arg)).label, Path(arg).resolve(), None))
                else:
                    _, sc = _compare_load(arg, set_)
                    plan.append((sc.name, None, arg))
            labels = unique_labels([lab for lab, _, _ in plan])
            chromium = find_chromium()
            if check is None:
                check = chromium is not None
            if check and chromium is None:
                raise ScenarioError("--check", "chromium not found",
                                    "an installed Chromium (`make browser`) or --no-check")
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
            run_dirs, to_run = [], []
            for label, existing, arg in plan:
                if existing is None:
                    existing = tmp / "runs" / (re.sub(r"[^\w.-]+", "_", label).strip("_") or "run")
                    to_run.append((arg, existing))
                run_dirs.append(existing)
            if to_run:
                (tmp / "runs").mkdir()
                _compare_run_all(to_run, set_, jobs or min(2, len(to_run)))
            from .report.html_report import write_compare_report
            report = write_compare_report(run_dirs, tmp, labels)
            check_result = None
            if check:
                from .report.browser_check import check_page
                check_result = check_page(report, tmp / "report.png")
                check_result["screenshot"] = "report.png" if check_result.get("screenshot") else None
                (tmp / "report_check.json").write_text(json.dumps(check_result, indent=2) + "\n")
            os.rename(tmp, out)
            tmp = None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"report: [bold]{out / 'report.html'}[/]")
    if check_result is not None:
        ok = check_result["images_ok"] and check_result["table_ok"] and not check_result["console_errors"]
        if not ok:
            err_console.print(f"[bold red]report check failed[/] (see {out / 'report_check.json'}): "
                              f"images_ok={check_result['images_ok']}, table_ok={check_result['table_ok']}, "
                              f"console errors: {escape(str(check_result['console_errors']))}")
            raise typer.Exit(1)
        console.print(f"checked in Chromium: {check_result['images']} images, no console errors; "
                      f"screenshot {out / 'report.png'}")


def main():  # pragma: no cover
    sys.exit(app())
