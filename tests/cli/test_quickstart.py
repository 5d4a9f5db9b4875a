"""``hpo quickstart``'s closing hints are commands that work as printed: each parses as a real
hpo command (and the reading ones run), with the prefix that starts hpo from the user's shell,
the storage repeated when one was given, and never a database password."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hpo.cli import common
from hpo.cli.main import cli
from hpo.cli.quickstart import next_steps
from hpo.storage.urls import resolve_storage


def parse(words: list[str]) -> click.Context:
    """Resolve ``words`` through hpo's command tree as click would, down to the command's own
    options, without running it: an unknown command or option raises click.UsageError."""
    ctx = cli.make_context("hpo", list(words), resilient_parsing=False)
    while isinstance(ctx.command, click.Group):
        name, command, rest = ctx.command.resolve_command(ctx, ctx._protected_args + ctx.args)
        assert command is not None and name is not None
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def hints(output: str) -> list[str]:
    return [line.strip() for line in output.split("\nNext:\n", 1)[1].splitlines() if line.strip()]


def words_after(prefix: str, hint: str) -> list[str]:
    """The hpo arguments of a hint: without the prefix and the trailing comment."""
    assert hint.startswith(prefix + " "), (prefix, hint)
    return shlex.split(hint[len(prefix):], comments=True)


@pytest.fixture
def quickstart(tmp_path, monkeypatch):
    """``hpo quickstart`` in-process, its pool replaced by one finished trial (no training)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)

    def one_trial(name, target, **kwargs):
        # What a worker records that the reading commands use: params and the resolved config.
        from hpo.spec.space import sample_config
        from hpo.study.attrs import CONFIG
        from hpo.study.studies import load_study

        loaded = load_study(name, target)
        trial = loaded.study.ask()
        trial.set_user_attr(CONFIG, sample_config(trial, loaded.spec).to_json())
        loaded.study.tell(trial, 0.9)
        return 0

    monkeypatch.setattr("hpo.worker.pool.run_pool", one_trial)

    def run(*args: str):
        result = CliRunner().invoke(cli, ["quickstart", "--name", "demo", *args])
        assert result.exit_code == 0, result.output
        return result

    return run


def test_the_hints_are_hpo_commands_that_run(quickstart, monkeypatch, tmp_path):
    monkeypatch.setattr("hpo.cli.quickstart.hpo_invocation", lambda: "hpo")
    result = quickstart("--storage", "my studies.journal")
    assert f"Artifacts go to {tmp_path / 'hpo-artifacts'}" in result.stdout
    lines = hints(result.stdout)
    assert lines == [
        "hpo study show demo --storage 'my studies.journal'",
        "hpo study best demo --format yaml --storage 'my studies.journal'",
        "hpo dashboard --storage 'my studies.journal'    # then open http://127.0.0.1:8080/dashboard",
    ]
    for line in lines:
        assert parse(words_after("hpo", line)).params["storage"] == "my studies.journal"
    for line in lines[:2]:  # the reading ones, run as printed
        ran = CliRunner().invoke(cli, words_after("hpo", line))
        assert ran.exit_code == 0, ran.output
    assert "optuna-dashboard" not in "\n".join(lines)  # it cannot serve hpo's artifacts


def test_the_default_storage_needs_no_flag(quickstart, monkeypatch):
    monkeypatch.setattr("hpo.cli.quickstart.hpo_invocation", lambda: "uv run hpo")
    lines = hints(quickstart().stdout)
    assert lines[0] == "uv run hpo study show demo"
    for line in lines:
        assert parse(words_after("uv run hpo", line)).params["storage"] is None


def test_a_database_url_is_left_to_hpo_storage_and_never_printed():
    url = "postgresql://user:s3cret@127.0.0.1:5432/db"
    lines = next_steps("demo", url, resolve_storage(url))
    assert lines[0].startswith("(first set HPO_STORAGE to the storage URL you gave")
    assert all("s3cret" not in line and "--storage" not in line for line in lines)
    for line in lines[1:]:
        parse(words_after(common.hpo_invocation(), line))


@pytest.mark.parametrize(("uv", "project_venv", "path_has_hpo", "expected"), [
    (True, True, True, "uv run hpo"),  # uv run puts .venv/bin on the PATH, for its child only
    (False, True, True, "hpo"),
    (False, True, False, "{python} -m hpo"),
    (True, False, True, "{python} -m hpo"),  # started by uv, but not a project's environment (uvx)
])
def test_the_prefix_is_how_the_users_shell_starts_hpo(monkeypatch, tmp_path, uv, project_venv,
                                                      path_has_hpo, expected):
    venv = tmp_path / "my project" / (".venv" if project_venv else "tool-env")
    (venv / "bin").mkdir(parents=True)
    monkeypatch.chdir(venv.parent)  # inside the project, as uv run from its folder
    (venv.parent / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    script = venv / "bin" / "hpo"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setattr(sys, "executable", str(venv / "bin" / "python"))
    monkeypatch.setenv("PATH", str(venv / "bin") if path_has_hpo else str(tmp_path / "nothing"))
    if uv:
        monkeypatch.setenv("UV", "/usr/local/bin/uv")
    else:
        monkeypatch.delenv("UV", raising=False)
    assert common.hpo_invocation() == expected.format(python=shlex.quote(str(venv / "bin" / "python")))


@pytest.mark.subprocess
def test_python_m_hpo_works_as_printed():
    """The fallback form starts the same CLI."""
    import subprocess

    result = subprocess.run([*shlex.split(f"{shlex.quote(sys.executable)} -m hpo"), "dashboard", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Serve optuna-dashboard" in result.stdout


def test_hpo_artifacts_are_ignored_by_git_like_the_journal():
    root = Path(__file__).resolve().parents[2]
    ignored = (root / ".gitignore").read_text().splitlines()
    assert "hpo-artifacts/" in ignored and "hpo-studies.journal*" in ignored


def test_uv_run_from_outside_the_project_names_it(monkeypatch, tmp_path):
    """``uv run --project DIR hpo quickstart`` from elsewhere: a bare ``uv run hpo`` there
    would find no project."""
    venv = tmp_path / "my project" / ".venv"
    venv.mkdir(parents=True)
    (venv.parent / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setenv("UV", "/usr/local/bin/uv")
    assert common.hpo_invocation() == f"uv run --project {shlex.quote(str(venv.parent))} hpo"
    monkeypatch.chdir(venv.parent)
    assert common.hpo_invocation() == "uv run hpo"
