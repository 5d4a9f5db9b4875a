"""The README's Python example, run exactly as printed: extracted from README.md and run in a
fresh folder that holds only the spec it names, as a user who copied it would."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.specs import describe, hpo_env

ROOT = Path(__file__).resolve().parents[2]


def readme_python_blocks() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## From Python or a notebook", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", section, re.M | re.S)


def test_the_section_has_the_example_and_the_colab_recipe():
    blocks = readme_python_blocks()
    assert len(blocks) == 2
    example, colab = blocks
    for call in ("hpo.create_study(", "hpo.run_worker(", "hpo.load_results(", ".dataframe()", ".report(",
                 "hpo.load_model("):
        assert call in example, call
    assert "drive.mount" in colab and "sole_worker=True" in colab and 'if_exists="reuse"' in colab


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_readme_example_runs_as_printed(tmp_path):
    example = readme_python_blocks()[0]
    (tmp_path / "search_spaces").mkdir()
    shutil.copy(ROOT / "search_spaces" / "digits_cnn.yaml", tmp_path / "search_spaces")
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=hpo_env(), capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, describe([done])
    lines = done.stdout.splitlines()
    best, predicted = lines[-2], lines[-1]
    assert re.fullmatch(r"\d+ 0\.\d+ \{'train\.batch_size': .*\}", best), best
    assert re.fullmatch(r"tensor\(\[[\d, ]+\]\) \[0 1 2 3 4 5 6 7\]", predicted), predicted
    assert sum(line.startswith("trial ") for line in lines) == 4  # a line per trial: 4 trials
    assert (tmp_path / "studies.journal").is_file() and (tmp_path / "hpo-artifacts").is_dir()
    assert (tmp_path / "report" / "report.html").is_file() and (tmp_path / "report" / "report.md").is_file()
