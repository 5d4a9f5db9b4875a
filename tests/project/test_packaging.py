"""The wheel, as users install it: only the package ``hpo`` at the top level (nothing named
``models`` to shadow a user's own), the example specs inside it, and ``hpo quickstart``
working from a fresh virtual environment outside the checkout.

No second download of torch and the rest: the wheel is installed with ``--no-deps``, and the
project environment's site-packages directory is made visible to the new environment by a
``.pth`` line. Such a line only appends the directory to sys.path; the ``.pth`` files inside
it (among them the editable install's, which would put the checkout on sys.path) are not
run, and the test checks that hpo comes from the new environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from hpo import __version__
from tests.specs import describe, hpo_env, spec_text, trial_states

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (ROOT / "search_spaces").iterdir() if p.suffix in (".yaml", ".json"))

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def outside_env(venv: Path) -> dict[str, str]:
    """hpo's test environment, minus whatever could lead back into the checkout."""
    env = hpo_env()
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"):
        env.pop(key, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    out = tmp_path_factory.mktemp("dist")
    built = run([uv, "build", "--wheel", "-o", str(out)], cwd=ROOT)  # hatchling: uv's cache or the index
    assert built.returncode == 0, describe([built])
    (path,) = out.glob("hpo-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment outside the checkout with the wheel installed, and the project
    environment's dependencies (torch, optuna, ...) visible after its own site-packages."""
    venv = tmp_path_factory.mktemp("outside") / "venv"
    created = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    assert created.returncode == 0, describe([created])
    python = venv / "bin" / "python"
    installed = run([shutil.which("uv") or "uv", "pip", "install", "--offline", "--no-deps",
                     "--python", str(python), str(wheel)], cwd=venv.parent)
    assert installed.returncode == 0, describe([installed])
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=venv.parent).stdout.strip())
    (site / "_hpo_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_wheel_holds_the_package_and_its_example_specs_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"hpo", f"hpo-{__version__}.dist-info"}, top
    assert not [n for n in names if n.startswith("models/")]
    assert "hpo/models/custom.py" in names and "hpo/cli/quickstart.py" in names
    assert len(EXAMPLES) >= 2 and "spec.schema.json" in EXAMPLES and "digits_cnn.yaml" in EXAMPLES
    with zipfile.ZipFile(wheel) as archive:
        for name in EXAMPLES:  # the checkout's files, unchanged
            assert archive.read(f"hpo/spec/examples/{name}") == (ROOT / "search_spaces" / name).read_bytes()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_quickstart_runs_from_the_installed_wheel(venv, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = outside_env(venv)
    probe = run([str(venv / "bin" / "python"), "-P", "-c", (
        "import importlib.util, json, sys, hpo; from importlib import resources; "
        "print(json.dumps({'hpo': hpo.__file__, 'path': sys.path, "
        "'models': importlib.util.find_spec('models') is not None, "
        "'spec': (resources.files('hpo.spec') / 'examples' / 'digits_cnn.yaml').is_file()}))")],
        cwd=work, env=env)
    assert probe.returncode == 0, describe([probe])
    found = json.loads(probe.stdout)
    assert Path(found["hpo"]).is_relative_to(venv), found["hpo"]
    deps = sysconfig.get_paths()["purelib"]
    leads_back = [p for p in found["path"] if p in ("", str(ROOT)) or (p.startswith(str(ROOT)) and p != deps)]
    assert not leads_back, found["path"]
    assert found["models"] is False, "something named models is importable from the installed wheel"
    assert found["spec"] is True

    journal = tmp_path / "quickstart.journal"
    started = time.monotonic()
    result = run([str(venv / "bin" / "hpo"), "quickstart", "--name", "wheel-quickstart",
                  "--storage", str(journal)], cwd=work, env=env, timeout=900)
    assert result.returncode == 0, describe([result])
    assert "Created study 'wheel-quickstart' from digits_cnn.yaml" in result.stdout
    assert "Finished in" in result.stdout and "Best val_accuracy:" in result.stdout, result.stdout
    print(f"quickstart from the wheel: {time.monotonic() - started:.0f} s")

    from hpo.spec import load_spec

    states = trial_states(journal, "wheel-quickstart")
    n_trials = load_spec(ROOT / "search_spaces" / "digits_cnn.yaml").budget.n_trials
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) >= n_trials, states
    assert states.get("COMPLETE", 0) >= 1 and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert sorted(p.name for p in work.iterdir()) == [], "quickstart wrote into its working directory"


def test_a_copy_of_the_models_folder_is_a_custom_model_source_for_the_installed_wheel(venv, tmp_path):
    """A user's project beside an installed hpo: the example folder copied in, a worker pool
    started there with ``--allow-module models --module-path .``; its children find
    ``models.example_net`` in the folder so named."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "models", project / "models", ignore=shutil.ignore_patterns("__pycache__"))
    spec = project / "sefire.yaml"
    spec.write_text(spec_text("wheel-sefire", n_trials=2).replace(
        "model: {name: mlp, n_layers: 1, width: 16, activation: relu}",
        "model: {name: custom, module: 'models.example_net:SEFireNet', kwargs: {width: 8, n_blocks: 1}}"))
    env, hpo = outside_env(venv), str(venv / "bin" / "hpo")
    journal = tmp_path / "studies.journal"
    created = run([hpo, "study", "create", str(spec), "--storage", str(journal)], cwd=project, env=env)
    assert created.returncode == 0, describe([created])
    result = run([hpo, "worker", "wheel-sefire", "--processes", "2", "--storage", str(journal),
                  "--allow-module", "models", "--module-path", "."], cwd=project, env=env)
    assert result.returncode == 0, describe([result])
    assert trial_states(journal, "wheel-sefire") == {"COMPLETE": 2}, describe([result])
