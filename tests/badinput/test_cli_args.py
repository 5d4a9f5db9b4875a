"""Bad command-line arguments: unknown studies, out-of-range numbers, output paths that
cannot be written as asked, storage paths that are not journals, unknown options.

Each case runs in-process on a journal holding one study (``demo``) and a few other files;
the whole folder is snapshot before and after, so a refused command changed nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from tests.badinput import assert_refused, snapshot, within_bounds
from tests.specs import write_spec


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A journal with study ``demo``, and files of the wrong kind beside it."""
    root = tmp_path_factory.mktemp("cli-args")
    journal = root / "studies.journal"
    created = CliRunner().invoke(cli, ["study", "create", str(write_spec(root, "demo")),
                                       "--storage", str(journal)])
    assert created.exit_code == 0, created.output
    (root / "a-dir").mkdir()
    (root / "report.md").write_text("an existing file\n")
    (root / "notes.yaml").write_text("name: not a journal\n")
    (root / "blob.bin").write_bytes(bytes(range(256)) * 64)
    (root / "empty.journal").write_bytes(b"")
    lines = journal.read_bytes().splitlines(keepends=True)
    (root / "corrupt.journal").write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))
    return root


@pytest.fixture
def hpo(folder: Path, monkeypatch: pytest.MonkeyPatch):
    """``hpo ARGS`` in ``folder`` on its journal (unless ARGS name a storage), checking that
    it stays within bounds and leaves every file as it was."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("HPO_STORAGE", str(folder / "studies.journal"))

    def invoke(*args: str):
        before = snapshot(folder)
        with within_bounds(seconds=60, megabytes=300):
            result = CliRunner().invoke(cli, list(args))
        assert snapshot(folder) == before, f"hpo {' '.join(args)} changed files\n{result.output}"
        return result

    return invoke


# -- studies and numbers ------------------------------------------------------------------


def test_an_unknown_study_names_the_known_ones(hpo):
    assert_refused(hpo("study", "show", "dmeo"), says=["no study named 'dmeo'", "studies: demo"])


@pytest.mark.parametrize("top, says", [
    ("-1", "-1 is not in the range x>=1"),
    ("0", "0 is not in the range x>=1"),
    ("abc", "'abc' is not a valid integer"),
])
def test_show_top_must_be_a_positive_integer(hpo, top, says):
    assert_refused(hpo("study", "show", "demo", "--top", top), says=["--top", says])


def test_report_top_must_be_positive(hpo, folder):
    assert_refused(hpo("study", "report", "demo", "--output", str(folder / "r"), "--top", "0"),
                   says=["--top", "0 is not in the range x>=1"])


@pytest.mark.parametrize("args, says", [
    (("--processes", "0"), "0 is not in the range x>=1"),
    (("--processes", "-1"), "-1 is not in the range x>=1"),
    (("--n-trials", "-5"), "-5 is not in the range x>=1"),
    (("--timeout", "-1"), "-1.0 is not in the range x>0"),
    (("--timeout", "soon"), "'soon' is not a valid float"),
    (("--gpus", "zero,one"), "--gpus"),
])
def test_worker_numbers_out_of_range(hpo, args, says):
    assert_refused(hpo("worker", "demo", *args), says=says)


def test_an_unknown_option_is_one_line(hpo):
    assert_refused(hpo("study", "show", "demo", "--bogus"), says="No such option '--bogus'")


def test_an_unknown_top_level_option_is_one_line(hpo):
    assert_refused(hpo("--bogus", "study", "list"), says="No such option '--bogus'")


def test_an_unknown_command_is_one_line(hpo):
    assert_refused(hpo("study", "shwo", "demo"), says="No such command 'shwo'")


def test_a_missing_argument_is_one_line(hpo):
    assert_refused(hpo("study", "show"), says="Missing argument 'NAME'")


def test_a_group_without_its_command_still_shows_its_help(hpo):
    result = hpo("study")
    assert "Usage: " in result.output and "Commands:" in result.output and "Error" not in result.output


# -- output paths ---------------------------------------------------------------------------


def test_export_into_a_missing_folder_creates_nothing(hpo, folder):
    target = folder / "missing" / "deeper" / "x.csv"
    assert_refused(hpo("study", "export", "demo", "--output", str(target)),
                   says=[str(target.parent), "does not exist"])
    assert not (folder / "missing").exists()


def test_export_onto_a_directory(hpo, folder):
    assert_refused(hpo("study", "export", "demo", "--output", str(folder / "a-dir")),
                   says=[str(folder / "a-dir"), "is a directory"])


def test_export_onto_a_directory_named_like_a_file(hpo, folder):
    (folder / "a-dir.csv").mkdir()
    try:
        assert_refused(hpo("study", "export", "demo", "--output", str(folder / "a-dir.csv")),
                       says=[str(folder / "a-dir.csv"), "is a directory"])
    finally:
        (folder / "a-dir.csv").rmdir()


def test_export_below_a_file(hpo, folder):
    target = folder / "report.md" / "x.csv"
    assert_refused(hpo("study", "export", "demo", "--output", str(target)),
                   says=[str(folder / "report.md"), "is not a directory"])


def test_export_with_an_unknown_suffix(hpo, folder):
    assert_refused(hpo("study", "export", "demo", "--output", str(folder / "x.xlsx")),
                   says="unknown format '.xlsx'")


def test_report_onto_an_existing_file(hpo, folder):
    assert_refused(hpo("study", "report", "demo", "--output", str(folder / "report.md")),
                   says=[str(folder / "report.md"), "is a file"])


def test_report_into_a_missing_folder_creates_nothing(hpo, folder):
    target = folder / "missing" / "report"
    assert_refused(hpo("study", "report", "demo", "--output", str(target)),
                   says=[str(target.parent), "does not exist"])
    assert not (folder / "missing").exists()


def test_retrain_onto_an_existing_file(hpo, folder):
    assert_refused(hpo("retrain", "demo", "--output", str(folder / "report.md")),
                   says=[str(folder / "report.md"), "is a file"])


def test_retrain_into_a_missing_folder_creates_nothing(hpo, folder):
    target = folder / "missing" / "retrain"
    assert_refused(hpo("retrain", "demo", "--output", str(target)),
                   says=[str(target.parent), "does not exist"])
    assert not (folder / "missing").exists()


# -- storage paths --------------------------------------------------------------------------


def test_a_misspelt_journal_is_an_error_with_the_close_match(hpo, folder):
    typo = folder / "studies.jounral"
    assert_refused(hpo("study", "list", "--storage", str(typo)),
                   says=[str(typo), "does not exist", "did you mean", "studies.journal"])
    assert not typo.exists()


def test_a_missing_journal_for_show_names_it(hpo, folder):
    missing = folder / "elsewhere" / "x.journal"
    assert_refused(hpo("study", "show", "demo", "--storage", str(missing)),
                   says=[str(missing), "does not exist"])
    assert not missing.parent.exists()


@pytest.mark.parametrize("name", ["notes.yaml", "blob.bin"])
@pytest.mark.parametrize("command", [("study", "list"), ("study", "show", "demo"),
                                     ("worker", "demo")])
def test_a_file_that_is_not_a_journal(hpo, folder, name, command):
    assert_refused(hpo(*command, "--storage", str(folder / name)),
                   says=[str(folder / name), "is not an Optuna journal file"])


def test_creating_a_study_in_a_file_that_is_not_a_journal(hpo, folder):
    spec = write_spec(folder / "a-dir", "other")
    try:
        assert_refused(hpo("study", "create", str(spec), "--storage", str(folder / "notes.yaml")),
                       says=[str(folder / "notes.yaml"), "is not an Optuna journal file"])
    finally:
        spec.unlink()


def test_a_directory_as_storage(hpo, folder):
    assert_refused(hpo("study", "list", "--storage", str(folder / "a-dir")),
                   says=[str(folder / "a-dir"), "is a directory"])


def test_an_empty_journal_holds_no_studies(hpo, folder):
    """Documented safe behaviour: Optuna itself starts a journal as an empty file."""
    result = hpo("study", "list", "--storage", str(folder / "empty.journal"))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "No studies.\n", "")


def test_a_journal_with_a_corrupt_line_names_the_line(hpo, folder):
    assert_refused(hpo("study", "list", "--storage", str(folder / "corrupt.journal")),
                   says=[str(folder / "corrupt.journal"), "line 2"], exit_code=1)
