"""``hpo quickstart``: the offline demo, a digits CNN study tuned by two local workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hpo.cli.common import fmt_value, hpo_invocation, storage_option, storage_target
from hpo.cli.overrides import set_option

if TYPE_CHECKING:
    from hpo.storage.urls import StorageTarget

QUICKSTART_SPEC = "digits_cnn.yaml"
#: Where the wheel carries search_spaces/ (pyproject.toml maps it there): hpo/spec/examples/.
EXAMPLES_PACKAGE, EXAMPLES_FOLDER = "hpo.spec", "examples"


@contextmanager
def bundled_spec(filename: str) -> Iterator[Path]:
    """An example spec as a file: the copy packed into an installed wheel, else (a source
    checkout, an editable install) the repository's search_spaces/ itself."""
    packaged = resources.files(EXAMPLES_PACKAGE) / EXAMPLES_FOLDER / filename
    if packaged.is_file():
        with resources.as_file(packaged) as path:
            yield path
        return
    checkout = Path(__file__).resolve().parents[2] / "search_spaces" / filename
    if not checkout.is_file():
        raise FileNotFoundError(f"the example spec {filename} is missing: neither {packaged} "
                                f"(an installed hpo) nor {checkout} (a source checkout) exists")
    yield checkout


def next_steps(name: str, storage: str | None, target: StorageTarget) -> list[str]:
    """The hints after a quickstart: commands that work as printed, in the user's shell.

    ``hpo dashboard``, not ``optuna-dashboard``: only hpo's serves the trials' artifacts. A
    storage given by ``--storage`` is repeated (a journal path), or, for a database URL, left
    to ``$HPO_STORAGE``: the URL holds the password and is never printed."""
    import shlex

    from hpo.results.dashboard import url_for

    hpo = hpo_invocation()
    lines = []
    flag = ""
    if storage and target.kind == "rdb":
        lines.append("(first set HPO_STORAGE to the storage URL you gave: it is not printed, as it holds the password)")
    elif storage:
        flag = f" --storage {shlex.quote(storage)}"
    quoted = shlex.quote(name)
    return [*lines,
            f"{hpo} study show {quoted}{flag}",
            f"{hpo} study best {quoted} --format yaml{flag}",
            f"{hpo} dashboard{flag}    # then open {url_for('127.0.0.1', 8080)}"]


@click.command()
@storage_option
@click.option("--processes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Local worker processes.")
@click.option("--name", default=None, help="Study name (default: digits-quickstart-<time>).")
@set_option
def quickstart(storage: str | None, processes: int, name: str | None, overrides: tuple[str, ...]) -> None:
    """Tune a CNN on scikit-learn's digits, offline: create a study, run workers, show the best.

    Example (a shorter run): hpo quickstart --set budget.n_trials=6 --set train.epochs=3
    """
    from hpo.artifacts.store import describe, study_location
    from hpo.results.summary import study_summary
    from hpo.spec import load_spec
    from hpo.study.studies import create_study, load_study
    from hpo.worker.pool import run_pool

    name = name or f"digits-quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    with bundled_spec(QUICKSTART_SPEC) as spec_path:
        spec = load_spec(spec_path, name=name, overrides=overrides)
    target = storage_target(storage)
    study, _ = create_study(spec, target)
    click.echo(f"Created study {name!r} from {spec_path.name} in {target.display}")
    location = study_location(study)
    if location:
        click.echo(f"Artifacts go to {describe(location)}")
    click.echo(f"Running {processes} worker processes: {spec.budget.n_trials} trials of up to "
               f"{spec.train.epochs} epochs, {spec.pruner.name} pruning...")
    started = time.monotonic()
    # The device: each process's own --device auto (a GPU if there is one, else the CPU).
    code = run_pool(name, target, processes=processes, rank=0, n_trials=None, timeout=None)
    summary = study_summary(load_study(name, target))
    states = summary["states"]
    click.echo(f"\nFinished in {time.monotonic() - started:.0f} s: {states['complete']} complete, "
               f"{states['pruned']} pruned, {states['fail']} failed; "
               f"{summary['epochs']['saved']} epochs saved by pruning.")
    best = summary["best"]
    if best:
        click.echo(f"Best {summary['metric']}: {fmt_value(best['value'])} (trial {best['number']})")
        for key, value in best["params"].items():
            click.echo(f"  {key}: {fmt_value(value)}")
    click.echo("\nNext:")
    for line in next_steps(name, storage, target):
        click.echo(f"  {line}")
    if code:
        raise click.exceptions.Exit(code)
