"""``hpo retrain NAME``: the chosen trial's config on train+validation, then the test split."""

from __future__ import annotations

from pathlib import Path

import click

from hpo.cli.common import device_option, storage_option, storage_target
from hpo.cli.modules import module_options, module_policy


@click.command()
@click.argument("name")
@click.option("--trial", "trial_number", type=click.IntRange(min=0), default=None,
              help="Trial number to retrain (default: the best completed trial).")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train K models, with seeds train.seed + 0..K-1; metrics are mean ± std.")
@click.option("--test", is_flag=True,
              help="Evaluate once on the held-out test split (only then is it loaded).")
@click.option("--output", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Directory for weights, metrics.json and reports (default: retrain-NAME-TRIAL).")
@storage_option
@device_option()
@module_options
def retrain(name: str, trial_number: int | None, seeds: int, test: bool, output: Path | None,
            storage: str | None, device: str, allow_modules: tuple[str, ...],
            module_paths: tuple[str, ...]) -> None:
    """Retrain a trial's config on train+validation for its full epochs, K seeds.

    No pruning and no early stopping: validation is training data here. With --test the
    held-out test split gives the final number (do it once, at the end).

    Example: hpo retrain digits-cnn --seeds 3 --test
    """
    from hpo.results.outputs import check_output_dir
    from hpo.results.retrain import retrain as run_retrain
    from hpo.study.studies import load_study
    from hpo.worker.device import resolve_device
    from hpo.worker.model_code import using_module_policy

    if output is not None:
        check_output_dir(output)  # before the storage is read and a model trained
    policy = module_policy(allow_modules, module_paths)
    loaded = load_study(name, storage_target(storage))
    with using_module_policy(policy):  # the trial's stored config names the model's module
        run_retrain(loaded, trial_number=trial_number, seeds=seeds, test=test, output=output,
                    device=resolve_device(device), say=click.echo)
