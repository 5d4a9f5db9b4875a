"""``--set KEY=VALUE``, one option for every command that reads a spec (defined once)."""

from __future__ import annotations

import click

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a spec value (repeatable): a dotted key and a YAML value, checked like the file, "
    "e.g. --set train.lr=1e-3 --set budget.n_trials=20 --set search.train.lr.high=0.1 "
    "--set 'model.filters=[16, 32]'.",
)
