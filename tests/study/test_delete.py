"""hpo study delete: the study's artifacts go with it (curves, confusion matrices, weights,
checkpoints), nothing else does; --keep-artifacts keeps them; an unreachable store deletes
nothing."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from hpo.artifacts.store import open_store
from hpo.cli.main import cli
from hpo.spec import load_spec
from hpo.storage.urls import open_storage, resolve_storage
from hpo.study.attrs import ARTIFACTS, CHECKPOINT
from hpo.study.studies import create_study
from hpo.worker.loop import run_worker
from tests.specs import write_spec

# What the removal line adds once files went: a copy in another storage is not looked for.
NOT_CHECKED = "not checked: a copy of the study in another storage, which would name them too"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _study(journal: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage(journal)))


def _leave_a_checkpoint(journal: str, name: str, store_dir: Path) -> str:
    """A trial whose worker was killed mid-trial and never retried: its last checkpoint is
    in the store, named only by the trial's ``checkpoint`` attribute."""
    study = _study(journal, name)
    trial = study.ask()
    artifact_id = f"checkpoint-{trial.number}-e1b0-{name}.pt"
    open_store({"kind": "file", "path": str(store_dir)}).write(artifact_id, io.BytesIO(b"x" * 4096))
    trial.set_user_attr(CHECKPOINT, artifact_id)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return artifact_id


@pytest.fixture
def studies(tmp_path, monkeypatch):
    """Studies 'a' and 'b', two trials each (weights kept), one artifact store for both,
    and a leftover checkpoint in each."""
    monkeypatch.setenv("HPO_KEEP_WEIGHTS", "all")
    journal = str(tmp_path / "studies.journal")
    store_dir = tmp_path / "shared-artifacts"
    target = resolve_storage(journal)
    for name in ("a", "b"):
        create_study(load_spec(write_spec(tmp_path, name, n_trials=2)), target, artifacts=str(store_dir))
        assert run_worker(name, target).stop_reason == "budget spent: 2 of 2 trials finished"
        _leave_a_checkpoint(journal, name, store_dir)
    return journal, store_dir


def _recorded(journal: str, name: str) -> set[str]:
    ids = set()
    for trial in _study(journal, name).get_trials(deepcopy=False):
        ids.update(trial.user_attrs.get(ARTIFACTS, {}).values())
        if CHECKPOINT in trial.user_attrs:
            ids.add(trial.user_attrs[CHECKPOINT])
    return ids


def _files(store_dir: Path) -> set[str]:
    return {p.name for p in store_dir.iterdir()}


def _mb(store_dir: Path, ids: set[str]) -> str:
    return f"{sum((store_dir / i).stat().st_size for i in ids) / 2**20:.2f} MB"


def _names(journal: str) -> list[str]:
    return sorted(s.study_name for s in optuna.get_all_study_summaries(open_storage(resolve_storage(journal))))


def test_delete_removes_exactly_the_studys_artifacts(studies):
    journal, store_dir = studies
    mine, theirs = _recorded(journal, "a"), _recorded(journal, "b")
    # Curves, confusion matrices and weights of both trials, and the checkpoint.
    assert len(mine) == 7 and len(theirs) == 7 and not mine & theirs
    assert _files(store_dir) == mine | theirs
    size = _mb(store_dir, mine)
    result = invoke("study", "delete", "a", "--yes", "--storage", journal)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"Deleted study 'a' from {journal}",
        f"Removed its artifacts: 7 files, {size}, from {store_dir} ({NOT_CHECKED})",
    ]
    assert _files(store_dir) == theirs  # b's files all stay
    assert _names(journal) == ["b"]


def test_keep_artifacts_keeps_them_and_says_where(studies):
    journal, store_dir = studies
    before = _files(store_dir)
    result = invoke("study", "delete", "a", "--yes", "--keep-artifacts", "--storage", journal)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"Deleted study 'a' from {journal}",
        f"Kept its artifacts: 7 files in {store_dir}",
    ]
    assert _files(store_dir) == before
    assert _names(journal) == ["b"]


def test_without_yes_nothing_is_deleted(studies):
    journal, store_dir = studies
    before = _files(store_dir)
    refused = invoke("study", "delete", "a", "--storage", journal)
    assert refused.exit_code == 2
    assert refused.stderr == ("Error: deleting study 'a' removes all its trials and their artifacts; "
                              "add --yes to confirm (a copy made with optuna.copy_study in another storage "
                              "shares these files: use --keep-artifacts)\n")
    kept = invoke("study", "delete", "a", "--keep-artifacts", "--storage", journal)
    assert kept.stderr == "Error: deleting study 'a' removes all its trials; add --yes to confirm\n"
    assert _files(store_dir) == before and _names(journal) == ["a", "b"]


def test_an_unreachable_store_deletes_nothing(studies, tmp_path):
    """The study's records are the only index of its files (random names): deleting it
    without them would leave them unfindable, so nothing is deleted until the store is back
    or --keep-artifacts says to leave them."""
    journal, store_dir = studies
    moved = tmp_path / "moved"
    shutil.move(store_dir, moved)
    result = invoke("study", "delete", "a", "--yes", "--storage", journal)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: cannot remove the artifacts of study 'a': {store_dir} does not exist (moved, deleted "
        "or not mounted?); nothing was deleted (add --keep-artifacts to delete the study alone)\n")
    assert _names(journal) == ["a", "b"] and not store_dir.exists()
    result = invoke("study", "delete", "a", "--yes", "--keep-artifacts", "--storage", journal)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == f"Kept its artifacts: 7 files in {store_dir}"
    assert _names(journal) == ["b"]


def test_files_already_gone_are_counted_apart(studies):
    journal, store_dir = studies
    mine = _recorded(journal, "a")
    gone = sorted(mine)[0]
    (store_dir / gone).unlink()
    size = _mb(store_dir, mine - {gone})
    result = invoke("study", "delete", "a", "--yes", "--storage", journal)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        f"Removed its artifacts: 6 files, {size}, from {store_dir} (1 recorded file was already gone; "
        f"{NOT_CHECKED})")
    assert _files(store_dir) == _recorded(journal, "b")


def test_files_a_copy_of_the_study_names_stay(studies):
    """optuna.copy_study copies the artifact records, not the files: the copy in the same
    storage names the same files, and deleting the original leaves them to it."""
    journal, store_dir = studies
    storage = open_storage(resolve_storage(journal))
    optuna.copy_study(from_study_name="a", from_storage=storage, to_storage=storage, to_study_name="a-copy")
    uploaded = {m.artifact_id for t in _study(journal, "a-copy").get_trials()
                for m in optuna.artifacts.get_all_artifact_meta(t, storage=storage)}
    assert len(uploaded) == 6  # the uploads; the checkpoint attribute is copied too
    before = _files(store_dir)
    result = invoke("study", "delete", "a", "--yes", "--storage", journal)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        f"Removed its artifacts: 0 files, 0.00 MB, from {store_dir} "
        "(7 files named by study 'a-copy' too were kept)")
    assert _files(store_dir) == before
    assert _names(journal) == ["a-copy", "b"]


def test_a_study_without_an_artifact_store(tmp_path, monkeypatch):
    """Studies made before artifacts were recorded: the study alone goes, and the line says so."""
    journal = str(tmp_path / "studies.journal")
    storage = open_storage(resolve_storage(journal))
    optuna.create_study(study_name="old", storage=storage)
    result = invoke("study", "delete", "old", "--yes", "--storage", journal)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"Deleted study 'old' from {journal}",
                                          "It recorded no artifact store: no files to remove"]


def test_a_store_failing_midway_keeps_the_study(studies, monkeypatch):
    """The files go first: a store that fails after some are gone keeps the study, whose
    records still name the rest, and running again finishes."""
    from optuna.artifacts import FileSystemArtifactStore

    journal, store_dir = studies
    mine = _recorded(journal, "a")
    remove = FileSystemArtifactStore.remove
    calls = []

    def flaky(self, artifact_id):
        calls.append(artifact_id)
        if len(calls) == 3:
            raise OSError("the share went away")
        remove(self, artifact_id)

    monkeypatch.setattr(FileSystemArtifactStore, "remove", flaky)
    result = invoke("study", "delete", "a", "--yes", "--storage", journal)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: cannot remove the artifacts of study 'a' from {store_dir} (OSError: the share went "
        "away); removed 2 of its 7 files, the study is kept (run again to finish, or add "
        "--keep-artifacts to delete the study alone)\n")
    assert _names(journal) == ["a", "b"] and len(_files(store_dir) & mine) == 5
    monkeypatch.setattr(FileSystemArtifactStore, "remove", remove)
    size = _mb(store_dir, _files(store_dir) & mine)
    again = invoke("study", "delete", "a", "--yes", "--storage", journal)
    assert again.stdout.splitlines()[1] == (
        f"Removed its artifacts: 5 files, {size}, from {store_dir} (2 recorded files were already gone; "
        f"{NOT_CHECKED})")
    assert _files(store_dir) == _recorded(journal, "b") and _names(journal) == ["b"]
