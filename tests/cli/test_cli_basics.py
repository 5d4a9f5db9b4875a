"""CLI behaviour that needs no training: help, exit codes, exact messages."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from hpo.cli.main import cli

SPEC = "name: demo\nmodel: {name: mlp, n_layers: 1, width: 16}\ntrain: {epochs: 1}\n"


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args))

    return invoke


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


@pytest.mark.subprocess
def test_help_imports_neither_torch_nor_optuna():
    code = (
        "import sys\n"
        "from hpo.cli.main import main\n"
        "sys.argv = ['hpo', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'optuna', 'sklearn', 'pandas') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage: hpo" in result.stdout
    assert "HEAVY []" in result.stdout


def _all_commands(group: click.Group, prefix: str = "hpo"):
    for name, command in group.commands.items():
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from _all_commands(command, f"{prefix} {name}")


@pytest.mark.parametrize("path, command", list(_all_commands(cli)), ids=lambda x: x if isinstance(x, str) else "")
def test_every_command_has_help(path, command):
    assert command.help and len(command.help.strip()) > 20, f"{path} lacks a help text"
    result = CliRunner().invoke(cli, path.split()[1:] + ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_create_prints_where_and_what_next(run, spec_file, tmp_path):
    result = run("study", "create", str(spec_file))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Created study 'demo' in {tmp_path / 'hpo-studies.journal'}\n"
        f"Artifacts go to {tmp_path / 'hpo-artifacts'}\n"
        "Start workers with: hpo worker demo\n"
    )
    assert result.stderr == f"Using the embedded storage {tmp_path / 'hpo-studies.journal'}\n"


def test_create_twice_fails_unless_reused_with_the_same_spec(run, spec_file):
    assert run("study", "create", str(spec_file)).exit_code == 0
    again = run("study", "create", str(spec_file))
    assert again.exit_code == 2
    assert again.stderr.splitlines()[-1].startswith("Error: study 'demo' already exists in ")
    assert again.stderr.splitlines()[-1].endswith("(use --if-exists reuse to keep it, or --name to pick another name)")
    reused = run("study", "create", str(spec_file), "--if-exists", "reuse")
    assert reused.exit_code == 0 and reused.stdout.startswith("Reusing study 'demo'")
    spec_file.write_text(SPEC.replace("epochs: 1", "epochs: 2"))
    changed = run("study", "create", str(spec_file), "--if-exists", "reuse")
    assert changed.exit_code == 2
    assert "already exists in" in changed.stderr and "with a different spec" in changed.stderr


def test_create_needs_a_name(run, tmp_path):
    path = tmp_path / "anon.yaml"
    path.write_text("model: {name: mlp}\n")
    result = run("study", "create", str(path))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: the study needs a name: add 'name:' to the spec or pass --name\n"
    assert run("study", "create", str(path), "--name", "anon").exit_code == 0


def test_unknown_study_names_the_known_ones(run, spec_file):
    run("study", "create", str(spec_file))
    for args in (["study", "show", "nope"], ["study", "best", "nope"], ["worker", "nope"]):
        result = run(*args)
        assert result.exit_code == 2, args
        assert result.stderr.splitlines()[-1].startswith("Error: no study named 'nope' in ")
        assert result.stderr.splitlines()[-1].endswith("(studies: demo)")


def test_delete_needs_yes(run, spec_file):
    run("study", "create", str(spec_file))
    refused = run("study", "delete", "demo")
    assert refused.exit_code == 2
    assert refused.stderr == ("Error: deleting study 'demo' removes all its trials and their artifacts; "
                              "add --yes to confirm (a copy made with optuna.copy_study in another storage "
                              "shares these files: use --keep-artifacts)\n")
    deleted = run("study", "delete", "demo", "--yes")
    assert deleted.exit_code == 0 and deleted.stdout.startswith("Deleted study 'demo' from ")
    listed = run("study", "list", "--format", "json")
    assert listed.stdout.strip() == "[]"


def test_best_without_completed_trials_is_a_runtime_error(run, spec_file):
    run("study", "create", str(spec_file))
    result = run("study", "best", "demo")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "Error: study 'demo' has no completed trial yet (no trials)"


def test_unsupported_storage_scheme(run, spec_file):
    result = run("study", "list", "--storage", "redis://user:hunter2@host/0")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: unsupported storage URL scheme 'redis' in redis://user:***@host/0 (expected "
        "postgresql://USER:PASSWORD@HOST:5432/DB, sqlite:///FILE, or a file path for the "
        "embedded journal store)\n"
    )


def test_bad_device_is_a_usage_error(run, spec_file):
    run("study", "create", str(spec_file))
    result = run("worker", "demo", "--device", "gpu0")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: unknown device 'gpu0' (expected auto, cpu, cuda, cuda:N or mps)"


def test_space_preview_prints_configs(run, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nmodel: {name: mlp}\nsearch:\n  train.batch_size: {choices: [16, 32]}\n")
    result = run("space", "preview", str(path), "-n", "3")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path} is valid: 1 searched keys; 3 sampled configurations:"
    assert [line.split(": ")[0] for line in lines[1:4]] == ["1", "2", "3"]
    assert all(line.split(": ")[1] in ("train.batch_size=16", "train.batch_size=32") for line in lines[1:4])
    assert lines[4:] == ["budget: 100 trials of the search space's 2 configurations"]


def test_reading_commands_do_not_create_the_embedded_store(run, tmp_path):
    listed = run("study", "list")
    assert listed.exit_code == 0 and listed.stdout == "No studies.\n"
    shown = run("study", "show", "x")
    assert shown.exit_code == 2
    assert shown.stderr.splitlines()[-1] == (
        f"Error: no study named 'x': {tmp_path / 'hpo-studies.journal'} does not exist")
    assert run("study", "delete", "x", "--yes").exit_code == 2
    assert not (tmp_path / "hpo-studies.journal").exists()


def test_create_records_the_artifact_store(run, spec_file, tmp_path):
    from hpo.storage.urls import resolve_storage
    from hpo.study.attrs import ARTIFACT_STORE as STORE_ATTR
    from hpo.study.studies import load_study

    result = run("study", "create", str(spec_file), "--artifacts", "shared/art")
    assert result.exit_code == 0
    assert f"Artifacts go to {tmp_path / 'shared' / 'art'}" in result.stdout
    study = load_study("demo", resolve_storage(None)).study
    assert study.user_attrs[STORE_ATTR] == {"kind": "file", "path": str(tmp_path / "shared" / "art")}
    bad = run("study", "create", str(spec_file), "--name", "x", "--artifacts", "ftp://host/dir")
    assert bad.exit_code == 2
    assert bad.stderr.splitlines()[-1] == (
        "Error: unsupported artifact location 'ftp://host/dir' (expected a directory or s3://BUCKET)")
