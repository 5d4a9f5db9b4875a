"""README stays true to the code: every command and every spec key is documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click

from hpo.cli.main import cli
from hpo.models.registry import MODELS
from hpo.spec.model import Budget, Objective, SearchParam
from hpo.spec.strategies import PRUNERS, SAMPLERS
from hpo.training.config import DataConfig, EarlyStoppingConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


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
    ci = (ROOT / ".ci" / "run").read_text()
    quick_start = README.split("## Quick start")[1].split("##")[0]
    assert "uv run pytest " in quick_start and 'uv run pytest -m "not slow"' in quick_start
    for command in ("uv run ruff check .", "uv run mypy", "uv run pytest"):
        assert f"`{command}`" in README, command
        assert re.search(rf"(^|\s){re.escape(command)}$", ci, re.M), f".ci/run does not run {command}"


def test_readme_documents_every_pytest_marker():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    names = [marker.split(":")[0] for marker in options["markers"]]
    assert names and "--strict-markers" in options["addopts"]
    for name in names:
        assert f"- `{name}`: " in README, f"README does not document the pytest marker {name}"
