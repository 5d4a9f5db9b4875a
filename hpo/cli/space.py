"""``hpo space preview``: check a spec and see what trials would get, without training."""

from __future__ import annotations

from pathlib import Path

import click

from hpo.cli.common import console, fmt_value, format_option, print_json, print_yaml
from hpo.cli.overrides import set_option


@click.group()
def space() -> None:
    """Work with search spaces (the `search:` section of a spec)."""


@space.command()
@click.argument("spec_file", metavar="SPEC.yaml", type=click.Path(path_type=Path))
@click.option("-n", "count", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many configurations to draw.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random draws.")
@set_option
@format_option("table", "json", "yaml")
def preview(spec_file: Path, count: int, seed: int, overrides: tuple[str, ...], fmt: str) -> None:
    """Validate SPEC.yaml and print N randomly sampled configurations.

    \b
    Examples:
      hpo space preview search_spaces/digits_cnn.yaml -n 3
      hpo space preview search_spaces/digits_cnn.yaml --set search.model.n_blocks.high=2
    """
    from hpo.spec import load_spec
    from hpo.spec.space import preview as draw
    from hpo.spec.space import space_size

    spec = load_spec(spec_file, overrides=overrides)
    drawn = draw(spec, count, seed)
    if fmt != "table":
        data = [{"params": params, "config": config} for params, config in drawn]
        print_json(data) if fmt == "json" else print_yaml(data)
        return
    out = console()
    out.print(f"{spec_file} is valid: {len(spec.search)} searched keys; {count} sampled configurations:")
    for index, (params, _config) in enumerate(drawn, 1):
        shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items()) or "(nothing searched)"
        out.print(f"{index}: {shown}")
    size = space_size(spec)
    if size is not None:  # a finite space: how much of it the budget covers (a share resolved)
        trials = "no limit on trials" if spec.budget.n_trials is None else f"{spec.budget.n_trials} trials"
        out.print(f"budget: {trials} of the search space's {size} configurations")
