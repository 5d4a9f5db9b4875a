"""``hpo``: the command-line entry point."""

from __future__ import annotations

import click

from hpo.cli.common import HpoGroup
from hpo.cli.dashboard import dashboard
from hpo.cli.quickstart import quickstart
from hpo.cli.retrain import retrain
from hpo.cli.space import space
from hpo.cli.study import study
from hpo.cli.worker import worker


@click.group(cls=HpoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="hpo", prog_name="hpo")  # read only when asked
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Hyperparameter optimisation for image classifiers, on Optuna.

    \b
    Quick start (offline, about a minute on 2 cores):
      hpo quickstart
    Then, for your own search:
      hpo study create search_spaces/digits_cnn.yaml
      hpo worker digits-cnn --processes 2
      hpo study show digits-cnn
    """
    ctx.ensure_object(dict)["debug"] = debug


cli.add_command(quickstart)
cli.add_command(study)
cli.add_command(worker)
cli.add_command(space)
cli.add_command(retrain)
cli.add_command(dashboard)


def main() -> None:
    import logging

    from hpo.storage.secrets import ScrubSecretsFilter

    handler = logging.StreamHandler()
    handler.addFilter(ScrubSecretsFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(levelname)s: %(message)s")
    cli(prog_name="hpo")
