"""Command line: ``tissuefate run|validate|scenarios|params``.

Exit codes: 0 success, 2 bad input (the message names the field, the value and what was expected),
1 an internal error (a bug: please report it with the traceback printed by ``--debug``).
"""
from __future__ import annotations

import datetime as _dt
import sys
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


@app.command()
def run(scenario: Optional[str] = typer.Argument(None, help="YAML file or built-in name (default: clo2_subcutaneous)"),
        out: Optional[Path] = typer.Option(None, "--out", help="run folder to create (default runs/<name>-<time>)"),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="override, e.g. course.sessions.0.follow_up='2 h'"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
        debug: bool = typer.Option(False, "--debug", help="show tracebacks of internal errors")):
    """Run a scenario and write its run folder."""
    from .scenario import load_raw, validate
    from .simulation import run_scenario
    try:
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
    except ScenarioError as err:
        _fail(err)
    except KeyboardInterrupt:
        err_console.print("interrupted; no run folder written")
        raise typer.Exit(130)
    except Exception:
        if debug:
            raise
        err_console.print_exception(max_frames=3)
        raise typer.Exit(1)
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


def main():  # pragma: no cover
    sys.exit(app())
