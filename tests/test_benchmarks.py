"""Benchmarks are not tests: this only checks that each runs on a tiny setting and writes its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_data_path_benchmark_writes_its_table(tmp_path):
    output = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data_path.py"), "--tiny", "--output", str(output)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    table = output.read_text()
    assert table.splitlines()[0] == "| path | median s/epoch | images/s |"
    assert "plain: torchvision FashionMNIST + DataLoader" in table and "hpo: in-memory tensors" in table
    assert "Speed-up: **" in table
