"""README and docs/ stay true to the code.

README is the guide (every command and option, the quick start); docs/spec.md documents every
spec key, docs/development.md every pytest marker; every page under docs/ is linked from README,
and every relative link in README and docs/ reaches a file (and heading) that exists."""

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
DOCS = sorted((ROOT / "docs").glob("*.md"))
SPEC_DOC = (ROOT / "docs" / "spec.md").read_text()


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


def test_spec_doc_documents_every_spec_key():
    keys = {f"objective.{k}" for k in Objective.model_fields}
    keys |= {f"budget.{k}" for k in Budget.model_fields}
    keys |= {f"data.{k}" for k in DataConfig.model_fields}
    keys |= {f"train.{k}" for k in TrainConfig.model_fields if k != "early_stopping"}
    keys |= {f"train.early_stopping.{k}" for k in EarlyStoppingConfig.model_fields}
    for registry, section in ((SAMPLERS, "sampler"), (PRUNERS, "pruner")):
        for name in registry.names():
            assert f"`{name}`" in SPEC_DOC, f"docs/spec.md does not mention {section} {name}"
            keys |= {f"{section}.{k}" for k in registry.get(name).options.model_fields}
    for name in MODELS.names():
        assert f"`{name}`" in SPEC_DOC, f"docs/spec.md does not mention model {name}"
        keys |= {f"model.{k}" for k in MODELS.get(name).config.model_fields}
    missing = sorted(k for k in keys if f"`{k}`" not in SPEC_DOC)
    assert not missing, f"docs/spec.md does not document: {missing}"
    for key in SearchParam.model_fields:
        assert f"`{key}`" in SPEC_DOC, f"docs/spec.md does not document search key {key}"


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    quick_start = README.split("## Quick start")[1].split("##")[0]
    assert "uv run pytest " in quick_start and 'uv run pytest -m "not slow"' in quick_start
    for command in ("uv run ruff check .", "uv run mypy", "uv run pytest"):
        assert f"`{command}`" in README, command
        assert re.search(rf"(^|\s){re.escape(command)}$", ci, re.M), f".ci/run does not run {command}"


def test_development_doc_documents_every_pytest_marker():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    names = [marker.split(":")[0] for marker in options["markers"]]
    assert names and "--strict-markers" in options["addopts"]
    development = (ROOT / "docs" / "development.md").read_text()
    for name in names:
        assert f"- `{name}`: " in development, f"docs/development.md does not document the pytest marker {name}"


def test_readme_links_every_docs_page():
    assert DOCS, "docs/ has no pages"
    for page in DOCS:
        assert f"](docs/{page.name}" in README, f"README does not link docs/{page.name}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", text)
    return {_anchor(m.group(1)) for m in re.finditer(r"(?m)^#{1,6} (.*)$", text)}


def test_relative_links_resolve():
    broken = []
    for page in [ROOT / "README.md", *DOCS]:
        text = page.read_text()
        prose = re.sub(r"(?ms)^```.*?^```", "", text)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not file.exists():
                broken.append(f"{where}: no file {path}")
            elif fragment and (file.suffix != ".md" or fragment not in _anchors(file.read_text())):
                broken.append(f"{where}: no heading #{fragment} in {file.relative_to(ROOT)}")
    assert not broken, broken


def test_anchor_matches_github():
    assert _anchor("`hpo worker`") == "hpo-worker"
    assert _anchor("Augmentation (`data.augment`)") == "augmentation-dataaugment"
    assert _anchor("Storage: one machine or many") == "storage-one-machine-or-many"
    assert _anchor("The report (`hpo study report`)") == "the-report-hpo-study-report"


def test_spec_doc_lists_every_example_spec():
    table = SPEC_DOC.split("## Example specs")[1]
    for spec in sorted((ROOT / "search_spaces").glob("*.yaml")):
        assert f"| `{spec.name}` |" in table, f"docs/spec.md's example table lacks {spec.name}"


def _pages() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in [ROOT / "README.md", *DOCS]}


def test_named_repository_paths_exist():
    top = r"(?:docker|search_spaces|benchmarks|models|hpo|tests|docs|\.ci)/"
    yours = {"docker/hpo.env"}  # made by the user from docker/hpo.env.example, git-ignored
    missing = []
    for name, text in _pages().items():
        for path in re.findall(rf"`({top}[\w./-]*)`", text):
            if path not in yours and not any(c in path for c in "*<") and not (ROOT / path).exists():
                missing.append(f"{name}: {path}")
    assert not missing, f"paths named in the docs that do not exist: {missing}"


def test_named_environment_variables_are_read():
    code = "\n".join(p.read_text() for d in ("hpo", "docker", "tests") for p in (ROOT / d).rglob("*")
                     if p.is_file() and p.suffix in {".py", ".yaml", ".yml", ".example", ".sh", ""})
    unknown = sorted({f"{name}: {var}" for name, text in _pages().items()
                      for var in re.findall(r"\b(HPO_[A-Z_]+)\b", text) if var not in code})
    assert not unknown, f"environment variables the docs name but nothing reads: {unknown}"
