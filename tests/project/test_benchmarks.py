"""Benchmarks are not tests: this only checks that each runs on a tiny setting and writes its table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_tiny(tmp_path: Path, module: str, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``python -m benchmarks.MODULE --tiny ARGS --output FILE`` (as the README says, but in a
    scratch directory, with the repository on PYTHONPATH); returns the process and the table."""
    output = tmp_path / "table.md"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--tiny", *args, "--output", str(output)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result, output.read_text()


def journal_row(table: str) -> list[str]:
    (row,) = [line for line in table.splitlines() if line.startswith("| embedded journal |")]
    return [cell.strip() for cell in row.strip("|").split("|")]


@pytest.mark.slow
@pytest.mark.subprocess
def test_data_path_benchmark_writes_its_table(tmp_path):
    result, table = run_tiny(tmp_path, "data_path")
    assert table.splitlines()[0] == "CNN 2×32 filters + FC 128:" and "\nMLP 2×256:\n" in table
    assert "\ndigits CNN 2×32 filters + FC 64:\n" in table
    assert table.count("| path | median s/epoch | images/s |") == 3
    assert table.count("plain: torchvision FashionMNIST + DataLoader") == 2
    assert table.count("plain: Dataset over scikit-learn's digits") == 1
    assert table.count("hpo: in-memory tensors") == table.count("Speed-up: **") == 3


@pytest.mark.slow
@pytest.mark.subprocess
def test_worker_scaling_benchmark_writes_its_tables(tmp_path, postgres_url):
    result, table = run_tiny(tmp_path, "worker_scaling", "--storage", postgres_url, "--calls", "3")
    assert ("| workers | trials/s (median) | ideal trials/s | parallel efficiency | vs workers x 1 worker's rate "
            "| per-worker spans: efficiency | most trials in one worker |") in table
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()
            if line.startswith(("| 1 |", "| 2 |"))]
    assert [row[0] for row in rows] == ["1", "2"] and rows[0][4] == "100%"
    assert all(row[3].endswith("%") and row[5].endswith("%") and 2 <= int(row[6]) <= 4 for row in rows)
    assert "| pruner | Optuna's cached storage (ms) | hpo's pruner view (ms) | ratio |" in table
    assert "| hyperband |" in table and "| median |" in table
    assert postgres_url.split("@")[0].split(":")[-1] not in table + result.stdout + result.stderr  # no password


@pytest.mark.slow
@pytest.mark.subprocess
def test_trial_startup_benchmark_writes_its_table(tmp_path):
    result, table = run_tiny(tmp_path, "trial_startup")
    assert "| storage | first trial (ms) | later trials, median (ms) | p90 (ms) | later trials | goal met |" in table
    cells = journal_row(table)
    assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[4] == "2" and cells[5] in ("yes", "no")


@pytest.mark.slow
@pytest.mark.subprocess
def test_trial_overhead_benchmark_writes_its_table(tmp_path):
    result, table = run_tiny(tmp_path, "trial_overhead")
    assert "| storage | finished trials | plain Optuna script (ms) | hpo worker (ms) | hpo / plain |" in table
    cells = journal_row(table)
    assert cells[1] == "30" and float(cells[2]) > 0 and float(cells[3]) > 0



def test_trial_overhead_sides_propose_the_same_points(tmp_path):
    """The comparison rests on it: with the same history and seed, TPE's work is identical."""
    import optuna

    from benchmarks import trial_overhead
    from hpo.study.studies import quiet_optuna

    quiet_optuna()
    plain = trial_overhead.plain_side(str(tmp_path / "plain.journal"), "plain", 12)
    ours = trial_overhead.hpo_side(str(tmp_path / "hpo.journal"), tmp_path, "hpo", 12)
    for _ in range(2):  # two turns: each side starts a new sampler per turn
        plain(3)
        ours(3)

    def proposed(path: Path, name: str) -> list[dict]:
        trials = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path)))).trials
        return [t.params for t in trials[12:]]

    points = proposed(tmp_path / "plain.journal", "plain")
    assert len(points) == 6 and len({p["train.lr"] for p in points}) == 6
    assert proposed(tmp_path / "hpo.journal", "hpo") == points

def markdown_rows(table: str, header: str) -> list[list[str]]:
    """The cells of each row of the Markdown table that starts with ``header``."""
    block = table.split(header + "\n", 1)[1].split("\n\n", 1)[0]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in block.splitlines()[1:]]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("space", ["cnn", "mlp"])
def test_search_efficiency_benchmark_writes_its_tables(tmp_path, space):
    result, table = run_tiny(tmp_path, "search_efficiency", "--space", space)
    assert table.startswith(f"Search efficiency at equal compute: digits {space.upper()} space (")
    value = r"(none|∞|\d+(\.\d+)?)"
    median_range = re.compile(rf"{value}( \({value}–{value}\))?")
    for unit in ("E", "T"):
        rows = markdown_rows(table, "| strategy | trials run | trials pruned | " + " | ".join(
            f"best val acc at {share} {unit}" for share in ("1/8", "1/4", "1/2", "all")) + " |")
        assert [row[0] for row in rows] == ["random", "default", "tpe"]
        assert all(float(row[1]) >= 1 and float(row[2]) >= 0 for row in rows)
        assert all(median_range.fullmatch(cell) for row in rows for cell in row[3:])
    rows = markdown_rows(table, "| strategy | target | seeds reaching | epochs | seconds |")
    assert [row[0] for row in rows] == ["random", "random", "default", "default", "tpe", "tpe"]
    assert all(re.fullmatch(r"[0-2]/2", row[2]) and median_range.fullmatch(row[3]) and median_range.fullmatch(row[4])
               for row in rows)
    rows = markdown_rows(table, "| strategy | best val acc | test acc |")
    assert [row[0] for row in rows] == ["random", "default", "tpe"]
    assert all(median_range.fullmatch(row[1]) and median_range.fullmatch(row[2]) for row in rows)
    rows = markdown_rows(table, "| strategy | per seed | median | goal met |")
    assert [row[0] for row in rows] == ["default", "tpe"]
    assert all(len(row[1].split(", ")) == 2 and row[3] in ("met", "not met") for row in rows)


@pytest.mark.slow
@pytest.mark.subprocess
def test_worker_start_benchmark_writes_its_tables(tmp_path):
    result, table = run_tiny(tmp_path, "worker_start")
    rows = markdown_rows(table, "| command | median (s) | range (s) | peak memory (MB) | runs | goal met |")
    assert [row[0] for row in rows] == ["hpo worker NAME", "hpo worker NAME --processes 2"]
    assert all(float(row[1]) > 0 and float(row[3]) > 0 and row[4] == "2" and row[5] in ("yes", "no")
               for row in rows)
    cold, warm = markdown_rows(table, "| dataset cache | to the Device: line, median (s) | "
                                      "to the first epoch, median (s) | range (s) | "
                                      "CPU time to the first epoch, median (s) | "
                                      "to its value in the storage, median (s) | runs | goal met |")
    assert [cold[0], warm[0]] == ["cold (the first worker on this data)", "warm (a worker started again)"]
    assert all(0 < float(row[1]) < float(row[2]) <= float(row[5]) and float(row[4]) > 0 and row[6] == "1"
               for row in (cold, warm))
    assert cold[7] == "-" and warm[7] in ("yes", "no")  # the goal is for a warm dataset cache


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.subprocess
def test_many_workers_benchmark_writes_its_tables(tmp_path):
    """1 and 4 workers through its own PgBouncer: every trial finishes, no worker loads torch,
    and the server connections are polled (at least one per worker, at most the pool's 16)."""
    result, table = run_tiny(tmp_path, "many_workers")
    rows = markdown_rows(table, "| workers | trials/s | x 1 worker | ideal trials/s | ask p50/p99 (ms) "
                                "| tell p50/p99 (ms) | prune check p50/p99 (ms) | budget p50/p99 (ms) "
                                "| number check p50/p99 (ms) | server connections (peak) | x 1 worker |")
    assert [row[0] for row in rows] == ["1", "4"]
    assert all(float(row[1]) > 0 and re.fullmatch(r"\d+\.\d / \d+\.\d", row[4]) for row in rows)
    assert 1 <= int(rows[0][9]) <= int(rows[1][9]) <= 16
    rows = markdown_rows(table, "| workers | finished | CPU ms: workers | PostgreSQL | PgBouncer | DB active ms "
                                "| statements | commits | client logins | pool wait ms | lock waits mean/peak "
                                "| clients waiting (peak) "
                                "| cores busy | worker PSS / private MB | torch loaded |")
    assert [(row[0], row[1], row[-1]) for row in rows] == [("1", "2", "0"), ("4", "8", "0")]
    assert "Busiest statements with 4 workers (pg_stat_statements):" in table


@pytest.mark.slow
@pytest.mark.subprocess
def test_progress_overhead_benchmark_writes_its_table(tmp_path):
    result, table = run_tiny(tmp_path, "progress_overhead")
    assert table.splitlines()[0].startswith("Live progress overhead (")
    ratio = re.search(r"^\| ratio \| (\d+\.\d{3}) \|$", table, re.M)
    assert ratio is not None and float(ratio.group(1)) > 0, table
    assert re.search(r"^\| batches per epoch / reported to the display \| ~\d+ / [1-9]\d* \|$", table, re.M), table


@pytest.mark.slow
@pytest.mark.subprocess
def test_warm_start_benchmark_writes_its_table(tmp_path):
    result, table = run_tiny(tmp_path, "warm_start")
    rows = markdown_rows(table, "| start | trials to reach the parent's best, per seed | median | seeds reaching |")
    assert [row[0] for row in rows] == ["warm", "warm, --top 0", "cold"]
    assert all(re.fullmatch(r"not reached|[12]", row[1]) and re.fullmatch(r"not reached|[12]", row[2])
               and re.fullmatch(r"[01]/1", row[3]) for row in rows)
    assert "The warm studies were given 3 of the parent's trials for the sampler" in table


@pytest.mark.slow
@pytest.mark.subprocess
def test_timing_stability_benchmark_writes_its_tables(tmp_path):
    result, table = run_tiny(tmp_path, "timing_stability")
    rows = markdown_rows(table, "| setting | trial | other workers | cpu_threads | s/epoch | images/s |")
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (setting, str(trial), str(trial % 2)) for setting in ("before", "after") for trial in range(4)]
    assert all(int(row[3]) >= 1 and float(row[4]) > 0 and float(row[5]) > 0 for row in rows)
    after = {row[3] for row in rows if row[0] == "after"}
    assert len(after) == 1  # one count for the worker's life, whoever else runs
    summary = markdown_rows(table, "| setting | median s/epoch | largest deviation | within ±20 % |")
    assert [row[0] for row in summary] == ["before", "after"]
    assert all(row[2].endswith("%") and row[3] in ("yes", "no") for row in summary)
