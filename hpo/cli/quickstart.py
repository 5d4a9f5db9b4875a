"""``hpo quickstart``: the offline demo, a digits CNN study tuned by two local workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import click

from hpo.cli.common import fmt_value, storage_option, storage_target

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


@click.command()
@storage_option
@click.option("--processes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Local worker processes.")
@click.option("--name", default=None, help="Study name (default: digits-quickstart-<time>).")
def quickstart(storage: str | None, processes: int, name: str | None) -> None:
    """Tune a CNN on scikit-learn's digits, offline: create a study, run workers, show the best."""
    from hpo.results.summary import study_summary
    from hpo.spec import load_spec
    from hpo.study.studies import create_study, load_study
    from hpo.worker.pool import run_pool

    name = name or f"digits-quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    with bundled_spec(QUICKSTART_SPEC) as spec_path:
        spec = load_spec(spec_path, name=name)
    target = storage_target(storage)
    create_study(spec, target)
    click.echo(f"Created study {name!r} from {spec_path.name} in {target.display}")
    click.echo(f"Running {processes} worker processes: {spec.budget.n_trials} trials of up to "
               f"{spec.train.epochs} epochs, {spec.pruner.name} pruning...")
    started = time.monotonic()
    code = run_pool(name, target, processes=processes, rank=0, n_trials=None, timeout=None, device="cpu")
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
    click.echo(f"  hpo study show {name}")
    click.echo(f"  hpo study best {name} --format yaml")
    # Never the URL itself: it carries the password.
    dashboard_target = '"$HPO_STORAGE"' if target.kind == "rdb" else target.display
    click.echo(f"  uv run optuna-dashboard {dashboard_target}    # then open http://127.0.0.1:8080")
    if code:
        raise click.exceptions.Exit(code)
