"""README stays true to the code: every command and every spec key is documented."""

from __future__ import annotations

from pathlib import Path

import click

from hpo.cli.main import cli
from hpo.models.registry import MODELS
from hpo.spec.model import Budget, Objective, SearchParam
from hpo.spec.strategies import PRUNERS, SAMPLERS
from hpo.training.config import DataConfig, EarlyStoppingConfig, TrainConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _commands(group: click.Group, prefix: str):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def test_readme_documents_every_command_and_option():
    for path, command in _commands(cli, "hpo"):
        assert f"### `{path}`" in README, f"README has no section for {path}"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.opts[0] in README, f"README does not mention {path} {param.opts[0]}"


def test_readme_documents_every_spec_key():
    keys = {f"objective.{k}" for k in Objective.model_fields}
    keys |= {f"budget.{k}" for k in Budget.model_fields}
    keys |= {f"data.{k}" for k in DataConfig.model_fields}
    keys |= {f"train.{k}" for k in TrainConfig.model_fields if k != "early_stopping"}
    keys |= {f"train.early_stopping.{k}" for k in EarlyStoppingConfig.model_fields}
    for registry, section in ((SAMPLERS, "sampler"), (PRUNERS, "pruner")):
        for name in registry.names():
            assert f"`{name}`" in README, f"README does not mention {section} {name}"
            keys |= {f"{section}.{k}" for k in registry.get(name).options.model_fields}
    for name in MODELS.names():
        assert f"`{name}`" in README, f"README does not mention model {name}"
        keys |= {f"model.{k}" for k in MODELS.get(name).config.model_fields}
    missing = sorted(k for k in keys if f"`{k}`" not in README)
    assert not missing, f"README does not document: {missing}"
    for key in SearchParam.model_fields:
        assert f"`{key}`" in README, f"README does not document search key {key}"


def test_readme_test_command_is_what_ci_runs():
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "uv run pytest" in README.split("## Quick start")[1].split("##")[0]
    assert "\nuv run pytest" in ci
