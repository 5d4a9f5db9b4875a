"""``hpo dashboard`` in a real headless Chromium: trials, the intermediate-value plot, a
trial's PNG artifact and a worker's learning-curve SVG render. Screenshots are kept in $HPO_TEST_ARTIFACTS (default
.test-artifacts/ in the repository, which ignores itself) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.results.test_dashboard import Server, make_study

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_MISSING = "chromium not found: install Debian's chromium package (apt-get install chromium chromium-driver)"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(CHROMIUM_MISSING, pytrace=False)
        pytest.skip(CHROMIUM_MISSING)
    return path


def artifacts_dir() -> Path:
    configured = os.environ.get("HPO_TEST_ARTIFACTS")
    path = Path(configured) if configured else REPO / ".test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    if not configured:
        (path / ".gitignore").write_text("# test outputs (screenshots); never committed\n*\n")
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    chromium = chromium_path()
    study = make_study(tmp_path_factory.mktemp("browser"))
    server = Server(study, "--access-log")
    try:
        yield chromium, study, server, tmp_path_factory.mktemp("chromium-profile")
    finally:
        server.stop()


def chromium(binary: str, profile: Path, url: str, *args: str) -> str:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile}", "--virtual-time-budget=20000", *args, url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_study_page_shows_the_intermediate_value_plot(served):
    binary, study, server, profile = served
    url = f"{server.base}/dashboard/studies/{study.study_id}"
    dom = chromium(binary, profile, url, "--dump-dom")
    assert "Intermediate values" in dom
    assert dom.count("js-plotly-plot") >= 2 and "scatterlayer" in dom  # plots drawn with data
    for number in range(3):  # the intermediate-value plot's legend: one curve per trial
        assert f"trial #{number}" in dom
    # Tall enough to show the intermediate-value plot, below the history and timeline.
    chromium(binary, profile, url, f"--screenshot={artifacts_dir() / 'dashboard-study.png'}",
             "--window-size=1400,2600")


def test_a_workers_learning_curve_svg_is_served_and_drawn_by_the_browser(served, tmp_path):
    import optuna
    from PIL import Image

    from hpo.artifacts.images import SERIES

    binary, study, server, profile = served
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(study.journal)))
    trial = storage.get_all_trials(study.study_id)[0]  # run by the worker: its own curve
    src = f"/artifacts/{study.study_id}/{trial._trial_id}/{trial.user_attrs['artifacts']['learning_curve.svg']}"
    shot = tmp_path / "curve.png"
    chromium(binary, profile, server.base + src, f"--screenshot={shot}", "--window-size=640,400")
    image = Image.open(shot).convert("RGB")
    colours = {colour for _, colour in image.getcolors(image.width * image.height)}
    assert {colour for _, _, colour, _, _ in SERIES} <= colours  # every series' markers drawn
    shutil.copy(shot, artifacts_dir() / "learning-curve.png")


def test_the_trials_page_lists_the_trials_and_shows_the_png_artifact(served):
    binary, study, server, profile = served
    url = f"{server.base}/dashboard/studies/{study.study_id}/trials?numbers={study.trial_number}"
    dom = chromium(binary, profile, url, "--dump-dom")
    for number in range(3):
        assert f"Trial {number}" in dom
    src = f"/artifacts/{study.study_id}/{study.trial_id}/{study.artifact_id}"
    assert re.search(rf'<img[^>]*alt="curve.png"[^>]*src="{re.escape(src)}"', dom), dom[-3000:]

    shot = artifacts_dir() / "dashboard.png"
    shot.unlink(missing_ok=True)
    chromium(binary, profile, url, f"--screenshot={shot}", "--window-size=1400,1000")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    # The browser fetched the image itself, and the dashboard served it from the study's store.
    log = server.stop()
    assert re.search(rf'"GET {re.escape(src)} HTTP/1.1" 200', log), log[-3000:]
