"""Unique random sampling with several real workers on one study: no configuration twice.

Two ``run_worker`` loops in threads share one journal file, train with a stand-in (no torch)
and are pruned by Hyperband, whose per-bracket view of the study would hide the other
brackets' trials from the sampler if it read them through the study it is handed.
"""

from __future__ import annotations

import threading

import optuna
from optuna.trial import TrialState

from benchmarks.common import stand_in_trainer
from hpo.spec import load_spec
from hpo.storage.urls import resolve_storage
from hpo.study.studies import create_study
from hpo.worker.loop import run_worker
from tests.spec.test_unique_random import FAMILIES


def test_two_workers_run_each_configuration_of_a_conditional_space_once(tmp_path):
    path = tmp_path / "families.yaml"
    path.write_text(FAMILIES.format(n_trials="100%", sampler="{name: random, unique: true, seed: 0}")
                    .replace("pruner: {name: none}", "pruner: {name: hyperband, min_resource: 1, max_resource: 2}")
                    .replace("epochs: 1", "epochs: 2"))
    spec = load_spec(path)
    assert spec.budget.n_trials == 12
    journal = str(tmp_path / "studies.journal")
    create_study(spec, resolve_storage(journal), artifacts=str(tmp_path / "artifacts"))

    reports = {}

    def work(rank: int) -> None:
        reports[rank] = run_worker("families", resolve_storage(journal), rank=rank, device="cpu",
                                   trainer=stand_in_trainer(0.02))  # short epochs: trials interleave

    threads = [threading.Thread(target=work, args=(rank,)) for rank in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert {r.exit_code for r in reports.values()} == {0}, reports
    assert all(r.outcomes for r in reports.values())  # both workers ran trials

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    trials = optuna.load_study(study_name="families", storage=storage).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    configurations = {tuple(sorted(t.params.items())) for t in finished}
    assert len(finished) == len(configurations) == 12
