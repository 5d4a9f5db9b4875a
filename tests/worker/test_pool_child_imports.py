"""``hpo worker --processes K`` among the user's own files: the children never import a file
of the working directory in place of hpo's own modules or its dependencies (``python -m hpo``
would: it puts the working directory first on sys.path), and never a custom model's module
from it unless told: with ``--allow-module models --module-path .`` the project's
``models.nets:Net`` is found (after the installed packages), and so is the example in the
repository's ``models/`` folder; without ``--module-path`` it is not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.specs import TINY_NET_SOURCE, describe, hpo_env, run_hpo, spec_text, trial_states

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[2]

# Each would break the worker if imported: the user's modules that share a name with hpo, with
# a dependency of hpo, or with the package ``models`` that the spec names (a package beats a
# module of the same name in one directory, so models.py is never the one meant).
SHADOWS = {
    "hpo.py": "raise SystemExit('the working directory hpo.py ran instead of hpo')\n",
    "optuna.py": "raise ImportError('the working directory optuna.py was imported')\n",
    "torch.py": "raise ImportError('the working directory torch.py was imported')\n",
    "models.py": "raise ImportError('the working directory models.py was imported')\n",
}

# Which processes imported this module (the pool's children, not the parent).
NETS = """
import os
from pathlib import Path

Path(__file__).with_name(f"imported-by-{os.getpid()}").touch()
""" + TINY_NET_SOURCE


def hpo_script() -> list[str]:
    """``hpo`` as a user runs it: the console script beside this interpreter (which, unlike
    ``python -m hpo``, does not search the working directory first)."""
    script = Path(sys.executable).with_name("hpo")
    return [str(script)] if script.is_file() else [sys.executable, "-P", "-m", "hpo"]


ALLOW_MODELS = ("--allow-module", "models", "--module-path", ".")


def run_pool_in(cwd: Path, name: str, journal: Path, processes: int = 2,
                modules: tuple[str, ...] = ALLOW_MODELS):
    import subprocess

    return subprocess.run([*hpo_script(), "worker", name, "--processes", str(processes),
                           "--storage", str(journal), *modules], cwd=cwd, env=hpo_env(),
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def shadowed_project(tmp_path: Path) -> tuple[Path, str, Path]:
    """A project folder full of shadows plus models/shadow_nets.py, and a created study that
    names models.shadow_nets:TinyNet."""
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    for filename, text in SHADOWS.items():
        (project / filename).write_text(text)
    (project / "models" / "__init__.py").write_text("")
    (project / "models" / "shadow_nets.py").write_text(NETS)
    name, journal = "shadowed", tmp_path / "studies.journal"
    spec = tmp_path / "shadowed.yaml"
    spec.write_text(spec_text(name, n_trials=4).replace(
        "model: {name: mlp, n_layers: 1, width: 16, activation: relu}",
        "model: {name: custom, module: 'models.shadow_nets:TinyNet', kwargs: {width: 8}}"))
    created = run_hpo("study", "create", str(spec), "--storage", str(journal), cwd=tmp_path)
    assert created.returncode == 0, describe([created])
    return project, name, journal


def test_processes_never_import_the_working_directorys_shadows_but_find_its_models(tmp_path):
    project, name, journal = shadowed_project(tmp_path)

    result = run_pool_in(project, name, journal)

    assert result.returncode == 0, describe([result])
    assert "working directory" not in result.stdout + result.stderr, describe([result])
    assert result.stdout.count(": exit 0") == 2, describe([result])
    assert trial_states(journal, name) == {"COMPLETE": 4}, describe([result])
    assert list((project / "models").glob("imported-by-*")), "the project's models package was not used"


def test_the_example_custom_model_trains_from_the_repository_root(tmp_path):
    """models/example_net.py, with models/digits_sefire.yaml cut to two one-epoch trials."""
    yaml = YAML(typ="safe")
    spec = yaml.load((ROOT / "models" / "digits_sefire.yaml").read_text())
    assert spec["model"] == {**spec["model"], "name": "custom", "module": "models.example_net:SEFireNet"}
    spec["budget"] = {"n_trials": 2, "max_failed_trials": 1}
    spec["train"]["epochs"] = 1
    name, journal = spec["name"], tmp_path / "studies.journal"
    spec_file = tmp_path / "sefire.yaml"
    spec_file.write_text(json.dumps(spec))  # JSON is YAML
    created = run_hpo("study", "create", str(spec_file), "--storage", str(journal), cwd=tmp_path)
    assert created.returncode == 0, describe([created])

    result = run_pool_in(ROOT, name, journal)

    assert result.returncode == 0, describe([result])
    assert trial_states(journal, name) == {"COMPLETE": 2}, describe([result])


def test_without_module_path_the_working_directory_is_not_searched(tmp_path):
    """Allowed, but in no folder the worker was given: every child stops before any trial."""
    project, name, journal = shadowed_project(tmp_path)

    result = run_pool_in(project, name, journal, modules=("--allow-module", "models"))

    assert result.returncode == 2, describe([result])
    assert result.stdout.count(": exit 2") == 2, describe([result])
    assert "cannot import 'models.shadow_nets'" in result.stderr, describe([result])
    assert "--module-path DIR or HPO_MODULE_PATH" in result.stderr, describe([result])
    assert trial_states(journal, name) == {}, describe([result])
    assert not list((project / "models").glob("imported-by-*"))
