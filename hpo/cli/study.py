"""``hpo study ...``: create, list, show, best, delete, confirm."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from hpo.cli.common import (
    HpoGroup,
    console,
    device_option,
    fmt_value,
    format_option,
    print_json,
    print_yaml,
    storage_option,
    storage_target,
)
from hpo.cli.modules import module_options, module_policy
from hpo.cli.overrides import set_option
from hpo.errors import UsageError

if TYPE_CHECKING:
    from hpo.study.studies import DeletedStudy


@click.group(cls=HpoGroup)
def study() -> None:
    """Create and inspect studies (a spec plus its trials, in the storage)."""


@study.command()
@click.argument("spec_file", metavar="SPEC.yaml", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Study name; overrides the spec's name.")
@storage_option
@click.option(
    "--if-exists", type=click.Choice(["fail", "reuse"]), default="fail", show_default=True,
    help="When the study exists: fail, or reuse it if its spec is identical (a spec that differs "
    "only in budget.n_trials/timeout is reused and its budget applied, as 'hpo study extend').",
)
@set_option
@click.option("--warm-start", "warm_start", metavar="OTHER", default=None,
              help="Start from what study OTHER (same storage, same objectives) learned: its best "
              "--top configurations that fit the new space run first, and its finished trials that "
              "fit are added for the sampler (not counted in the budget). Misfits are listed.")
@click.option("--top", default=3, show_default=True, type=click.IntRange(min=0),
              help="With --warm-start: how many of OTHER's best configurations to run first.")
@click.option("--artifacts", metavar="DIR|s3://BUCKET", default=None,
              help="Where trials store plots, weights and confusion matrices (recorded in the "
              "study; default: hpo-artifacts beside the journal file, or in the current "
              "directory). Give a shared directory or S3 when workers run on several machines.")
def create(spec_file: Path, name: str | None, storage: str | None, if_exists: Literal["fail", "reuse"],
           artifacts: str | None, overrides: tuple[str, ...], warm_start: str | None, top: int) -> None:
    """Validate SPEC.yaml and create a study from it.

    \b
    Examples:
      hpo study create search_spaces/digits_cnn.yaml --name my-run
      hpo study create search_spaces/digits_cnn.yaml --set budget.n_trials=20 --set train.epochs=3
      hpo study create search_spaces/digits_cnn.yaml --name run-2 --warm-start my-run --top 3
    """
    from hpo.api.studies import create_study, load_spec

    ctx = click.get_current_context()
    if warm_start is None and ctx.get_parameter_source("top") != click.core.ParameterSource.DEFAULT:
        raise UsageError("--top applies to --warm-start OTHER: give the study to start from too")
    spec = load_spec(spec_file, name=name, overrides=overrides)
    if spec.name is None:
        raise UsageError(f"{spec_file}: the study needs a name: add 'name:' to the spec or pass --name")
    made = create_study(spec, storage_target(storage), if_exists=if_exists, artifacts=artifacts,
                        warm_start=warm_start, top=top)
    click.echo(f"{'Created' if made.created else 'Reusing'} study {made.name!r} in {made.storage}")
    for note in made.notes:
        click.echo(f"Note: {note}")
    if made.spec.enqueue and made.created:
        click.echo(f"Queued the spec's {len(made.spec.enqueue)} enqueue: sets to run first")
    for line in made.warm_start.lines() if made.warm_start else []:
        click.echo(line)
    if made.artifacts:
        click.echo(f"Artifacts go to {made.artifacts}")
    click.echo(f"Start workers with: hpo worker {made.name}" + _storage_hint(storage))


def _storage_hint(storage: str | None) -> str:
    from hpo.storage.secrets import redact

    return f" --storage {redact(storage)}" if storage else ""


@study.command()
@click.argument("name")
@storage_option
@click.option("--n-trials", "n_trials", type=int, default=None,
              help="The study's new global n_trials (finished trials, all workers together); at least "
              "the trials it has already counted.")
@click.option("--timeout", default=None, metavar="T",
              help="The study's new global timeout, counted from its first trial: seconds or a "
              "duration such as 30m, 6h, 1h30m.")
def extend(name: str, storage: str | None, n_trials: int | None, timeout: str | None) -> None:
    """Raise (or set) the budget of an existing study; running workers pick it up before
    their next trial, and a spent study can be given more trials and new workers.

    The stored spec is left as created (its sha256 still verifies it); the new limits are
    kept beside it and 'hpo study show' shows the budget in force.

    \b
    Example:
      hpo study extend digits-cnn --n-trials 60 && hpo worker digits-cnn
    """
    from hpo.study.studies import extend_study

    target = storage_target(storage)
    change = extend_study(name, target, n_trials=n_trials, timeout=timeout)
    click.echo(f"Study {name!r} in {target.display}: {change.describe()}")


@study.command("list")
@storage_option
@format_option("table", "json")
def list_(storage: str | None, fmt: str) -> None:
    """List the studies in the storage, with trial counts and best values."""
    from hpo.study.studies import list_studies

    rows = list_studies(storage_target(storage))
    if fmt == "json":
        print_json(rows)
        return
    if not rows:
        click.echo("No studies.")
        return
    from rich.table import Table

    table = Table("name", "metric", "best", "trials", "complete", "pruned", "running", "fail", "budget")
    for r in rows:
        table.add_row(r["name"], f"{r['metric']} ({r['direction'][:3]})", fmt_value(r["best_value"]),
                      str(r["trials"]), str(r["complete"]), str(r["pruned"]), str(r["running"]),
                      str(r["fail"]), fmt_value(r["budget_trials"]))
    console().print(table)


@study.command()
@click.argument("name")
@storage_option
@format_option("table", "json")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1),
              help="How many of the best trials to list.")
@click.option("--trial", "number", type=click.IntRange(min=0), metavar="N",
              help="Show trial N instead: its measurements, train and validation accuracy per epoch, "
                   "class counts per split and the class weights its loss applied.")
def show(name: str, storage: str | None, fmt: str, top: int, number: int | None) -> None:
    """State counts, best value, top trials, failures and the epochs pruning saved
    (with --trial N: that trial's records)."""
    from hpo.results.summary import study_summary, top_table, trial_summary
    from hpo.results.text import trial_lines
    from hpo.study.studies import load_study

    if number is not None:
        shown = trial_summary(load_study(name, storage_target(storage)), number)
        if fmt == "json":
            print_json(shown)
        for line in trial_lines(shown) if fmt != "json" else []:
            console().print(line, markup=False)
        return
    loaded = load_study(name, storage_target(storage))
    summary = study_summary(loaded, top=top)
    if fmt == "json":
        print_json(summary)
        return
    out = console()
    states = ", ".join(f"{n} {s}" for s, n in summary["states"].items() if n) or "no trials yet"
    out.print(f"Study {summary['name']}: {summary['direction']} {summary['metric']}")
    budget = summary["budget"]
    limits = f"budget {fmt_value(budget['n_trials'])}" + (
        f", timeout {fmt_value(budget['timeout'])} s" if budget["timeout"] is not None else "")
    out.print(f"Trials: {states} ({limits}{', extended' if budget['extended'] else ''})")
    if summary["warm_start"]["trials"]:
        out.print(f"Warm start: {summary['warm_start']['trials']} trials added from "
                  f"{', '.join(summary['warm_start']['from'])} (not counted in the budget)")
    if summary["stopped"]:
        out.print(f"Stopped: {summary['stopped']}", markup=False)  # a reason may hold [brackets]
    best = summary["best"]
    tied = f"; tied: {_trials(best['tied'])}" if best and best.get("tied") else ""
    out.print(f"Best: {fmt_value(best['value'])} (trial {best['number']}{tied})" if best
              else "Best: no completed trial yet")
    epochs = summary["epochs"]
    out.print(f"Epochs: {epochs['trained']} trained, {epochs['without_pruning']} without pruning "
              f"({epochs['saved']} saved)")
    if summary["top"]:
        from rich.table import Table

        top_trials = top_table(loaded, [row["number"] for row in summary["top"]])  # the report's columns
        table = Table(title="Top trials")
        for header, align in zip(top_trials.header, top_trials.align):
            table.add_column(header, justify="right" if align == "right" else "left")
        for cells in top_trials.formatted():
            table.add_row(*cells)
        out.print(table)
    for failure in summary["failures"]:
        out.print(f"Failed ({failure['count']}): {failure['reason']}")


@study.command()
@click.argument("name")
@storage_option
@format_option("table", "json", "yaml")
def best(name: str, storage: str | None, fmt: str) -> None:
    """The best trial: its params and the full resolved config (the Pareto front of a
    multi-objective study: every trial no other beats on all objectives).

    With --format yaml the output is a spec that re-runs exactly that configuration:
    hpo study best NAME --format yaml > best.yaml && hpo study create best.yaml
    (a multi-objective study gives one spec per Pareto trial, as a YAML list).
    """
    from hpo.results.summary import best_trials
    from hpo.study.attrs import CONFIG
    from hpo.study.studies import load_study

    results = best_trials(load_study(name, storage_target(storage)))
    multi = len(results[0]["metrics"]) > 1
    if fmt == "json":
        print_json(results if multi else results[0])
    elif fmt == "yaml":
        print_yaml([r["spec"] for r in results] if multi else results[0]["spec"])
    else:
        out = console()
        if multi:
            out.print(f"Pareto front of {results[0]['study']} ({', '.join(results[0]['metrics'])}): "
                      f"{len(results)} trials")
        for result in results:
            scores = ", ".join(f"{m} = {fmt_value(v)}" for m, v in zip(result["metrics"], result["values"]))
            out.print(f"{'Trial' if multi else 'Best trial'} {result['number']} of {result['study']}: {scores}")
            if result.get("tied"):
                # Optuna's rule (hpo.results.summary.ranked_trials): say that it was a tie.
                verb = "has" if len(result["tied"]) == 1 else "have"
                out.print(f"Tied: {_trials(result['tied'])} {verb} the same {result['metric']}; Optuna and "
                          "its dashboard name the first of equal values, and so does hpo")
            out.print("Params:")
            for key, value in result["params"].items():
                out.print(f"  {key}: {fmt_value(value)}")
            out.print("Config:")
            for section, values in result[CONFIG].items():
                out.print(f"  {section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@study.command()
@click.argument("name")
@storage_option
@click.option("--yes", is_flag=True, help="Confirm the deletion (required).")
@click.option("--keep-artifacts", is_flag=True,
              help="Leave the study's files (curves, confusion matrices, weights, checkpoints) in "
              "its artifact store; by default they are removed with it.")
def delete(name: str, storage: str | None, yes: bool, keep_artifacts: bool) -> None:
    """Delete a study, all its trials and their artifacts.

    \b
    Examples:
      hpo study delete digits-cnn --yes
      hpo study delete digits-cnn --yes --keep-artifacts
    """
    from hpo.study.studies import delete_study

    if not yes:
        what = "all its trials" + ("" if keep_artifacts else " and their artifacts")
        raise UsageError(f"deleting study {name!r} removes {what}; add --yes to confirm"
                         + ("" if keep_artifacts else f" ({COPIES_ELSEWHERE})"))
    target = storage_target(storage)
    deleted = delete_study(name, target, keep_artifacts=keep_artifacts)
    click.echo(f"Deleted study {name!r} from {target.display}")
    click.echo(_artifacts_line(deleted))


# Only this storage's studies are read for files they share: a copy made in another storage
# (optuna.copy_study copies the artifact store and the records naming its files) is not
# found, and no manifest of copies is kept, so the user is told before and after.
COPIES_ELSEWHERE = ("a copy made with optuna.copy_study in another storage shares these files: "
                    "use --keep-artifacts")


def _artifacts_line(deleted: DeletedStudy) -> str:
    """One line on the study's files: how much went, or where they stay."""
    artifacts, removed = deleted.artifacts, deleted.removed
    if artifacts.location is None:
        return "It recorded no artifact store: no files to remove"
    if removed is None:
        return f"Kept its artifacts: {_files(len(artifacts.ids))} in {artifacts.where}"
    notes = []
    if removed.missing:
        was = "was" if removed.missing == 1 else "were"
        notes.append(f"{removed.missing} recorded {'file' if removed.missing == 1 else 'files'} {was} already gone")
    if artifacts.shared:
        others = ", ".join(repr(name) for name in sorted(artifacts.shared))
        notes.append(f"{_files(artifacts.n_shared)} named by {'study' if len(artifacts.shared) == 1 else 'studies'} "
                     f"{others} too were kept")
    if removed.files:
        notes.append("not checked: a copy of the study in another storage, which would name them too")
    line = f"Removed its artifacts: {_files(removed.files)}, {removed.bytes / 2**20:.2f} MB, from {artifacts.where}"
    return line + (f" ({'; '.join(notes)})" if notes else "")


def _trials(numbers: list[int]) -> str:
    """``trial 3`` or ``trials 3, 7``."""
    return ("trial " if len(numbers) == 1 else "trials ") + ", ".join(map(str, numbers))


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


@study.command()
@click.argument("name")
@storage_option
@click.option("--output", "-o", required=True, metavar="FILE", type=click.Path(path_type=Path),
              help="Where to write: FILE.csv, FILE.json or FILE.parquet (the suffix picks the format).")
def export(name: str, storage: str | None, output: Path) -> None:
    """Export every trial as one row: state, value, params, timings, memory, curves.

    Example: hpo study export digits-cnn --output trials.csv
    """
    from hpo.api.results import load_results
    from hpo.results.export import export_format
    from hpo.results.outputs import check_output_file

    check_output_file(output)  # a bad path or suffix fails before the storage is opened
    export_format(output)
    count = load_results(name, storage_target(storage)).export(output)
    click.echo(f"Exported {count} trials to {output}")


@study.command()
@click.argument("name")
@storage_option
@click.option("--output", "-o", required=True, metavar="DIR", type=click.Path(path_type=Path),
              help="Directory for report.md, report.html and the PNG figures (created if missing; "
              "its parent must exist).")
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1),
              help="How many of the best trials the table and the learning curves show.")
def report(name: str, storage: str | None, output: Path, top: int) -> None:
    """Write a report: history, importances, curves, trade-offs and the model comparison.

    Example: hpo study report digits-cnn --output report/
    """
    from hpo.results.outputs import check_output_dir
    from hpo.results.report import write_report
    from hpo.study.studies import load_study

    check_output_dir(output)  # before the storage is opened
    result = write_report(load_study(name, storage_target(storage)), output, top=top)
    click.echo(f"Wrote {result.markdown} and {result.html} ({len(result.figures)} figures)")
    for note in result.notes:
        click.echo(f"Note: {note}", err=True)


@study.command()
@click.argument("name")
@click.option("--top", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many of the best configurations to train again (all completed trials if fewer).")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=2),
              help="New seeds per configuration (train.seed + 1 … S), on the same train/validation split.")
@storage_option
@device_option()
@module_options
def confirm(name: str, top: int, seeds: int, storage: str | None, device: str, allow_modules: tuple[str, ...],
            module_paths: tuple[str, ...]) -> None:
    """Is the best trial better, or a lucky seed? Train the --top best configurations again
    with --seeds new seeds each, report mean ± std per configuration, mark the differences
    within noise (Welch's t-test against the pick), and record the pick (the best mean),
    which 'hpo retrain' then trains by default.

    \b
    Example:
      hpo study confirm digits-cnn --top 3 --seeds 3 && hpo retrain digits-cnn --test
    """
    from hpo.results.confirm import Interrupted
    from hpo.results.confirm import confirm as run_confirm
    from hpo.study.studies import load_study
    from hpo.worker.device import resolve_device
    from hpo.worker.model_code import using_module_policy

    policy = module_policy(allow_modules, module_paths)
    loaded = load_study(name, storage_target(storage))
    try:
        with using_module_policy(policy):  # the trials' stored configs name their models' modules
            confirmation = run_confirm(loaded, top=top, seeds=seeds, device=resolve_device(device), say=click.echo)
    except Interrupted as exc:
        click.echo(f"Error: {exc}", err=True)
        click.get_current_context().exit(130)
    from rich.table import Table

    table = Table("trial", "original", "mean ± std", "n", "vs pick",
                  title=f"{confirmation.metric} ({confirmation.direction}) over {seeds} new seeds")
    for column in table.columns[1:4]:
        column.justify = "right"
    for row in confirmation.rows():
        table.add_row(*row)
    out = console()
    out.print(table)
    for line in confirmation.legend():
        out.print(line, markup=False)
    picked, first = confirmation.picked, confirmation.candidates[0]
    search = (f"also the search's best, {first.original:.4f} in its one run" if picked is first else
              f"the search's best, trial {first.trial}, had {first.original:.4f} in its one run")
    out.print(f"Pick: trial {picked.trial}, {confirmation.metric} {picked.mean:.4f} ± {picked.std:.4f} "
              f"over {picked.n} seeds ({search})", markup=False)
    out.print(f"Recorded in study {name!r}: hpo retrain {name} now retrains trial {picked.trial} by default "
              "(--trial N overrides)", markup=False)
