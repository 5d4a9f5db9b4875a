"""Benchmarks are not tests: this only checks that each runs on a tiny setting and writes its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tiny(tmp_path: Path, script: str, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``benchmarks/SCRIPT --tiny ARGS --output FILE``; returns the process and the table."""
    output = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--tiny", *args, "--output", str(output)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result, output.read_text()


def journal_row(table: str) -> list[str]:
    (row,) = [line for line in table.splitlines() if line.startswith("| embedded journal |")]
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_data_path_benchmark_writes_its_table(tmp_path):
    result, table = run_tiny(tmp_path, "data_path.py")
    assert table.splitlines()[0] == "CNN 2×32 filters + FC 128:" and "\nMLP 2×256:\n" in table
    assert table.count("| path | median s/epoch | images/s |") == 2
    assert table.count("plain: torchvision FashionMNIST + DataLoader") == table.count("hpo: in-memory tensors") == 2
    assert table.count("Speed-up: **") == 2


def test_worker_scaling_benchmark_writes_its_tables(tmp_path, postgres_url):
    result, table = run_tiny(tmp_path, "worker_scaling.py", "--storage", postgres_url, "--calls", "3")
    assert "| workers | trials/s (median) | ideal trials/s | parallel efficiency |" in table
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")] == ["1", "2"]
    assert "| pruner | Optuna's cached storage (ms) | hpo's pruner view (ms) | ratio |" in table
    assert "| hyperband |" in table and "| median |" in table
    assert postgres_url.split("@")[0].split(":")[-1] not in table + result.stdout + result.stderr  # no password


def test_trial_startup_benchmark_writes_its_table(tmp_path):
    result, table = run_tiny(tmp_path, "trial_startup.py")
    assert "| storage | first trial (ms) | later trials, median (ms) | p90 (ms) | later trials | goal met |" in table
    cells = journal_row(table)
    assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[4] == "2" and cells[5] in ("yes", "no")


def test_trial_overhead_benchmark_writes_its_table(tmp_path):
    result, table = run_tiny(tmp_path, "trial_overhead.py")
    assert "| storage | finished trials | plain Optuna script (ms) | hpo worker (ms) | hpo / plain |" in table
    cells = journal_row(table)
    assert cells[1] == "30" and float(cells[2]) > 0 and float(cells[3]) > 0
