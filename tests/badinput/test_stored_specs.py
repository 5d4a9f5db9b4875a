"""Rewritten database rows: what anyone with write access to the storage could change in a
study, and what a worker (or ``hpo retrain``) then does.

Each case ends as every bad-input case does (one ``Error:`` line naming the problem, exit 2,
no traceback), before any trial is created or claimed, and without importing a module the
worker's machine did not allow: the refused modules leave a marker file when imported.

The cases tamper with the study as an attacker would, through the storage itself (Optuna's
API on the journal file). "Rehashed" cases also rewrite the stored sha256 to match, as a
determined attacker would: the hash only catches corruption and careless edits; the
allow-list is what keeps foreign code out.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch  # noqa: F401  (imported once here, so that no case's memory bound pays for it)
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.spec import spec_sha256
from hpo.study.attrs import CONFIG, SPEC, SPEC_SHA256
from tests.badinput import assert_refused, snapshot, within_bounds
from tests.specs import TINY_NET_SOURCE, spec_text

NAME = "tampered"

# Imported only if a worker lets it be: the marker says it was.
EVIL = textwrap.dedent('''
    from pathlib import Path

    Path(__file__).with_name("IMPORTED-" + __name__).touch()

    from torch import nn


    class Net(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            self.fc = nn.LazyLinear(2)
''')

# A module the tests allow: a class whose kwargs are checked, and things that are no class.
NETS = TINY_NET_SOURCE + """

Net = TinyNet


def make_net(**kwargs):
    return Net(**kwargs)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path holding the modules: importable, so only the allow-list stops them."""
    folder = tmp_path / "site"
    folder.mkdir()
    for name in ("evil_nets", "modelsx"):
        (folder / f"{name}.py").write_text(EVIL)
    (folder / "ok_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(folder))
    for var in ("HPO_ALLOW_MODULES", "HPO_MODULE_PATH", "HPO_STORAGE"):
        monkeypatch.delenv(var, raising=False)
    import sys

    yield folder
    for name in ("evil_nets", "modelsx", "ok_nets"):
        sys.modules.pop(name, None)


@pytest.fixture
def journal(tmp_path) -> Path:
    """A study created the normal way (a digits MLP), before anyone tampers with it."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(NAME, n_trials=2))
    path = tmp_path / "studies.journal"
    created = CliRunner().invoke(cli, ["study", "create", str(spec), "--storage", str(path)])
    assert created.exit_code == 0, created.output
    return path


def _study(journal: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=NAME, storage=storage)


def tamper(journal: Path, edit: Callable[[dict[str, Any]], Any], *, rehash: bool = True) -> None:
    """Rewrite the stored spec with ``edit`` (and, ``rehash``, its sha256 to match)."""
    study = _study(journal)
    data = study.user_attrs[SPEC]
    data = edit(data) or data
    study.set_user_attr(SPEC, data)
    if rehash:
        study.set_user_attr(SPEC_SHA256, spec_sha256(data))


def custom(module: str, **kwargs: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["model"] = {"name": "custom", "module": module, "kwargs": kwargs}
    return edit


def run_worker(journal: Path, *args: str) -> Any:
    before = snapshot(journal)
    with within_bounds(seconds=60, megabytes=200):
        result = CliRunner().invoke(cli, ["worker", NAME, "--storage", str(journal), "--n-trials", "1",
                                          "--quiet", *args])
    assert _study(journal).get_trials() == [], "a trial was created or claimed"
    assert snapshot(journal) == before, "the worker wrote to the storage"
    return result


def assert_not_imported(site: Path) -> None:
    assert sorted(p.name for p in site.glob("IMPORTED-*")) == []


def test_a_spec_changed_behind_its_hash_is_refused(journal, site):
    tamper(journal, lambda data: data["budget"].update(n_trials=1000), rehash=False)
    result = run_worker(journal)
    assert_refused(result, says=[f"study {NAME!r}", "stored spec does not match its sha256",
                                 "changed after 'hpo study create'"])


def test_a_custom_model_the_worker_did_not_allow_is_never_imported(journal, site):
    tamper(journal, custom("evil_nets:Net"))
    result = run_worker(journal)
    assert_refused(result, says=["model.module 'evil_nets:Net'", "'evil_nets' is not allowed",
                                 "--allow-module evil_nets", "HPO_ALLOW_MODULES"])
    assert_not_imported(site)


def test_an_allowed_prefix_matches_at_dot_boundaries_only(journal, site):
    tamper(journal, custom("modelsx:Net"))
    result = run_worker(journal, "--allow-module", "models")
    assert_refused(result, says=["model.module 'modelsx:Net'", "'modelsx' is not allowed"])
    assert_not_imported(site)


def test_modules_already_imported_are_no_exception(journal, site):
    """``os`` is loaded in every Python, so importing it costs nothing: still refused."""
    tamper(journal, custom("os:system"))
    assert_refused(run_worker(journal), says="'os' is not allowed")


def test_a_searched_module_is_checked_for_every_choice(journal, site):
    def edit(data: dict[str, Any]) -> None:
        custom("ok_nets:Net")(data)
        data["search"]["model.module"] = {"choices": ["ok_nets:Net", "evil_nets:Net"]}
    tamper(journal, edit)
    result = run_worker(journal, "--allow-module", "ok_nets")
    assert_refused(result, says="model.module 'evil_nets:Net': module 'evil_nets' is not allowed")
    assert_not_imported(site)


@pytest.mark.parametrize("module", ["../evil_nets:Net", "/tmp/evil_nets.py:Net", "evil_nets..x:Net",
                                    "evil_nets:Net.__init__"])
def test_a_module_path_that_is_no_import_path_is_refused(journal, site, module):
    tamper(journal, custom(module))
    result = run_worker(journal, "--allow-module", "evil_nets")
    assert_refused(result, says=[f"study {NAME!r}", "stored spec is invalid",
                                 f"{module!r} is not an import path"])
    assert_not_imported(site)


def test_a_name_that_is_not_a_class_is_refused_before_any_trial(journal, site):
    tamper(journal, custom("ok_nets:make_net"))
    result = run_worker(journal, "--allow-module", "ok_nets")
    assert_refused(result, says="model.module 'ok_nets:make_net': make_net is not an nn.Module subclass")


def test_kwargs_the_class_does_not_take_are_refused_before_any_trial(journal, site):
    tamper(journal, custom("ok_nets:Net", depth=3))
    result = run_worker(journal, "--allow-module", "ok_nets")
    assert_refused(result, says=["model.module 'ok_nets:Net'", "model.kwargs {'depth': 3}",
                                 "unexpected keyword argument 'depth'"])


def test_a_stored_spec_that_is_not_a_json_object_is_refused(journal, site):
    tamper(journal, lambda data: "{not json", rehash=True)
    result = run_worker(journal)
    assert_refused(result, says=[f"study {NAME!r}", "stored spec is not a JSON object"])


@pytest.mark.parametrize("key,says", [(SPEC, "has no hpo spec"), (SPEC_SHA256, "has no sha256")])
def test_a_missing_spec_attribute_is_refused(journal, site, key, says):
    study = _study(journal)
    # Optuna cannot delete a user attribute; null is what a rewritten row would leave.
    study.set_user_attr(key, None)
    assert_refused(run_worker(journal), says=[f"study {NAME!r}", says])


def test_allowed_and_on_the_module_path_the_custom_model_trains(journal, tmp_path, site, monkeypatch):
    """The same rewrite, allowed by the worker's own machine: then the model is the user's."""
    monkeypatch.syspath_prepend(str(tmp_path))  # not the folder: --module-path names it
    models = tmp_path / "project" / "mynets"
    models.mkdir(parents=True)
    (models / "__init__.py").write_text("")
    (models / "tiny.py").write_text(NETS)
    tamper(journal, custom("mynets.tiny:Net", width=4))
    result = CliRunner().invoke(cli, ["worker", NAME, "--storage", str(journal), "--n-trials", "1", "--quiet",
                                      "--allow-module", "mynets", "--module-path", str(tmp_path / "project")])
    import sys

    sys.modules.pop("mynets.tiny", None)
    sys.modules.pop("mynets", None)
    assert result.exit_code == 0, result.output + (result.stderr or "")
    [trial] = _study(journal).get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs[CONFIG]["model"]["module"] == "mynets.tiny:Net"


def test_retrain_never_imports_a_module_a_trial_config_was_rewritten_to(journal, tmp_path, site):
    """retrain builds the model from the trial's stored config, which the spec's hash does
    not cover: the allow-list still does."""
    study = _study(journal)
    spec = study.user_attrs[SPEC]
    config = {"data": spec["data"], "train": spec["train"],
              "model": {"name": "custom", "module": "evil_nets:Net", "kwargs": {}}}
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={CONFIG: config}))
    before = snapshot(journal)
    out = tmp_path / "retrained"
    with within_bounds(seconds=60, megabytes=200):
        result = CliRunner().invoke(cli, ["retrain", NAME, "--storage", str(journal), "--output", str(out)])
    assert_refused(result, says=["model.module 'evil_nets:Net'", "'evil_nets' is not allowed",
                                 "--allow-module evil_nets"])
    assert_not_imported(site)
    assert not out.exists()
    assert snapshot(journal) == before


def test_the_allow_list_also_comes_from_the_environment(journal, site):
    """HPO_ALLOW_MODULES (comma-separated) as --allow-module; here still not the refused one."""
    tamper(journal, custom("evil_nets:Net"))
    before = snapshot(journal)
    result = CliRunner().invoke(cli, ["worker", NAME, "--storage", str(journal), "--quiet"],
                                env={"HPO_ALLOW_MODULES": "ok_nets,models"})
    assert_refused(result, says="(allowed: ok_nets, models)")
    assert_not_imported(site)
    assert snapshot(journal) == before


def test_the_cli_and_the_model_layer_read_the_same_variables():
    """The pool hands the policy to its children through the environment
    (ModulePolicy.as_env); each child's CLI reads it back under these names."""
    from hpo.cli import modules
    from hpo.models import custom as model_code

    assert (modules.ALLOW_ENV, modules.PATH_ENV) == (model_code.ALLOW_ENV, model_code.PATH_ENV)


def test_retrain_refuses_a_trial_config_rewritten_to_no_import_path(journal, tmp_path, site):
    study = _study(journal)
    spec = study.user_attrs[SPEC]
    config = {"data": spec["data"], "train": spec["train"],
              "model": {"name": "custom", "module": "../evil_nets:Net", "kwargs": {}}}
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={CONFIG: config}))
    out = tmp_path / "retrained"
    with within_bounds(seconds=60, megabytes=200):
        result = CliRunner().invoke(cli, ["retrain", NAME, "--storage", str(journal), "--output", str(out),
                                          "--allow-module", "evil_nets"])
    assert_refused(result, says=["trial 0", "stored config is invalid", "'../evil_nets:Net' is not an import path"])
    assert_not_imported(site)
    assert not out.exists()
