"""Several ``hpo worker`` processes on one study in a real PostgreSQL, then the reports.

Four workers, started together as four users on four machines would start them (each with
``HPO_STORAGE`` and nothing else), share the study's global budget exactly; ``hpo study
show``, ``best`` and ``list`` then report what they did, and the spec that ``best --format
yaml`` prints creates a new study as it is.
"""

from __future__ import annotations

import contextlib
import json
import uuid

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from hpo.cli.main import cli
from hpo.spec import load_spec
from hpo.spec.trial_config import TrialConfig
from hpo.storage.urls import ENV_VAR, open_storage, resolve_storage
from hpo.study.attrs import OVER_BUDGET as OVER_BUDGET_ATTR
from hpo.study.attrs import SPEC as SPEC_ATTR
from tests.specs import describe, hpo_env, run_hpo, start_hpo, wait_all, write_spec

STUDY = "pg-digits"
N_WORKERS = 4
N_TRIALS = 16
EPOCHS = 2


def invoke(url: str, *args: str):
    """``hpo ARGS`` in-process, with the storage given as a user would: in $HPO_STORAGE."""
    result = CliRunner().invoke(cli, list(args), env={ENV_VAR: url, "HPO_DEBUG": None})
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run(postgres_server, tmp_path_factory):
    """A study in a fresh database of the session's server, run by 4 worker processes."""
    if not postgres_server.is_running:  # an earlier fault test left it down
        postgres_server.start()
    dbname = f"t_workers_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(dbname)
    root = tmp_path_factory.mktemp("pg-workers")
    env = hpo_env(storage=url)
    spec = write_spec(root, STUDY, n_trials=N_TRIALS, epochs=EPOCHS, sampler="random", pruner="median")
    created = run_hpo("study", "create", str(spec), env=env, cwd=root)
    assert created.returncode == 0, describe([created])

    workers = [start_hpo("worker", STUDY, "--quiet", env=env, cwd=root) for _ in range(N_WORKERS)]
    results = wait_all(workers)
    storage = open_storage(resolve_storage(url))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    yield url, root, results, study
    storage.engine.dispose()
    with contextlib.suppress(Exception):  # cleanup only: the whole server goes at the end of the session
        postgres_server.drop_database(dbname)


def finished(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


@pytest.mark.slow
@pytest.mark.subprocess
def test_every_worker_exits_0(run):
    _, _, results, _ = run
    assert [r.returncode for r in results] == [0] * N_WORKERS, describe(results)
    for result in results:
        assert "Traceback" not in result.stderr and "Error" not in result.stderr, describe(results)
        assert "budget spent" in result.stdout, describe(results)


@pytest.mark.slow
@pytest.mark.subprocess
def test_workers_finish_exactly_the_budget(run):
    _, _, results, study = run
    trials = study.get_trials(deepcopy=False)
    assert len(finished(study)) == N_TRIALS, describe(results)
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), numbers
    assert sorted(numbers) == list(range(len(numbers)))
    # Failures are only race hand-backs, never trials that ran.
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert trial.user_attrs.get(OVER_BUDGET_ATTR) is True, trial.user_attrs
    # Every worker took part.
    assert len({t.user_attrs["worker"]["pid"] for t in finished(study)}) > 1


@pytest.mark.slow
@pytest.mark.subprocess
def test_workers_do_not_run_the_same_params_twice(run):
    # The learning rate is drawn from a continuous range: two equal draws are not chance,
    # they are workers with the same sampler seed proposing the same sequence. Workers
    # started one by one (no --processes) must still get different seeds.
    _, _, _, study = run
    draws = [tuple(sorted(t.params.items())) for t in finished(study)]
    repeated = {d for d in draws if draws.count(d) > 1}
    assert not repeated, f"{len(repeated)} param sets were run more than once: {sorted(repeated)}"


@pytest.mark.slow
@pytest.mark.subprocess
def test_study_show_reports_the_run(run):
    url, _, _, study = run
    summary = json.loads(invoke(url, "study", "show", STUDY, "--format", "json").stdout)
    states = summary["states"]
    assert states["complete"] + states["pruned"] == N_TRIALS
    assert states["running"] == states["waiting"] == 0
    assert states["fail"] == 0  # hand-backs are not failures
    assert summary["budget"]["n_trials"] == N_TRIALS
    assert (summary["name"], summary["metric"], summary["direction"]) == (STUDY, "val_accuracy", "maximize")

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    top = max(complete, key=lambda t: t.value)
    assert summary["best"]["value"] == pytest.approx(top.value)
    # Equal values are ranked by validation loss (hpo.results.summary), so any of the tied trials.
    tied = {t.number: t for t in complete if t.value == top.value}
    assert summary["best"]["number"] in tied
    assert summary["best"]["params"] == pytest.approx(tied[summary["best"]["number"]].params)
    values = [row["value"] for row in summary["top"]]
    assert values == sorted(values, reverse=True) and len(values) == min(5, len(complete))
    assert summary["epochs"]["without_pruning"] == N_TRIALS * EPOCHS
    assert summary["epochs"]["trained"] == sum(t.user_attrs["epochs_trained"] for t in finished(study))
    assert len(summary["pruned"]) == states["pruned"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_study_best_reports_params_and_the_full_config(run):
    url, _, _, study = run
    best = json.loads(invoke(url, "study", "best", STUDY, "--format", "json").stdout)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert best["value"] == pytest.approx(max(t.value for t in complete))
    trial = study.trials[best["number"]]
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(best["value"])
    assert best["params"] == pytest.approx(trial.params) and "train.lr" in best["params"]
    config = best["config"]
    assert set(config) == {"data", "model", "train"}
    assert config == trial.user_attrs["config"]
    assert config["train"]["lr"] == pytest.approx(best["params"]["train.lr"])
    assert config["data"]["name"] == "digits" and config["model"]["name"] == "mlp"
    assert config["train"]["epochs"] == EPOCHS and config["train"]["batch_size"] == 128


@pytest.mark.slow
@pytest.mark.subprocess
def test_study_list_shows_the_study_with_its_trials(run):
    url, _, _, study = run
    rows = json.loads(invoke(url, "study", "list", "--format", "json").stdout)
    assert [row["name"] for row in rows] == [STUDY]
    row = rows[0]
    assert row["complete"] + row["pruned"] == N_TRIALS
    assert row["running"] == row["waiting"] == 0
    assert row["budget_trials"] == N_TRIALS
    assert row["metric"] == "val_accuracy" and row["direction"] == "maximize"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert row["best_value"] == pytest.approx(max(t.value for t in complete))


@pytest.mark.slow
@pytest.mark.subprocess
def test_study_list_table_shows_whole_study_names_when_piped(run):
    # The name is what every other command takes: a table that cuts it short ("pg-di…")
    # in a log or a pipe (no terminal, 80 columns) leaves the user guessing.
    url, _, _, _ = run
    result = CliRunner().invoke(cli, ["study", "list"], env={ENV_VAR: url, "COLUMNS": None})
    assert result.exit_code == 0, result.output
    assert STUDY in result.stdout, result.stdout


@pytest.mark.slow
@pytest.mark.subprocess
def test_best_as_yaml_is_a_spec_that_creates_a_study(run):
    url, root, _, study = run
    text = invoke(url, "study", "best", STUDY, "--format", "yaml").stdout
    path = root / "best.yaml"
    path.write_text(text)
    rerun = load_spec(path)  # validates as a spec on its own

    created = invoke(url, "study", "create", str(path), "--name", "pg-digits-rerun")
    assert created.stdout.startswith("Created study 'pg-digits-rerun' in postgresql://hpo:***@")
    stored = optuna.load_study(study_name="pg-digits-rerun", storage=study._storage).user_attrs[SPEC_ATTR]
    best = json.loads(invoke(url, "study", "best", STUDY, "--format", "json").stdout)
    # The new study trains exactly the best configuration, once.
    assert stored["search"] == {} and stored["budget"]["n_trials"] == 1
    # (the stored form leaves keys added later out at their defaults: compare what they mean)
    assert TrialConfig.from_json(stored) == TrialConfig.from_json(best["config"])
    assert rerun.train.lr == pytest.approx(best["params"]["train.lr"])
    rows = json.loads(invoke(url, "study", "list", "--format", "json").stdout)
    assert {row["name"] for row in rows} == {STUDY, "pg-digits-rerun"}


def test_list_and_show_agree_about_hand_backs(postgres_url, tmp_path):
    # A trial handed back unrun (the budget race) is not a failure: `show` leaves it out,
    # and `list` must tell the same story.
    from hpo.worker.loop import _hand_back

    spec = write_spec(tmp_path, "handback", n_trials=1)
    invoke(postgres_url, "study", "create", str(spec))
    storage = open_storage(resolve_storage(postgres_url))
    study = optuna.load_study(study_name="handback", storage=storage)
    _hand_back(study, study.ask())
    shown = json.loads(invoke(postgres_url, "study", "show", "handback", "--format", "json").stdout)
    listed = json.loads(invoke(postgres_url, "study", "list", "--format", "json").stdout)[0]
    assert shown["states"]["fail"] == 0
    assert {k: listed[k] for k in shown["states"]} == shown["states"]
    assert listed["trials"] == sum(shown["states"].values())
    storage.engine.dispose()
