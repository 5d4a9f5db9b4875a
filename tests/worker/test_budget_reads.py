"""The budget check after ask reuses the budget in force read by the one just before it."""

from __future__ import annotations

import optuna

from hpo.spec.model import Budget
from hpo.worker import budget as budget_module


def test_the_check_after_ask_reuses_the_read_before_it(monkeypatch):
    study = optuna.create_study(study_name="budget-reads", storage=optuna.storages.InMemoryStorage())
    reads = []
    original = budget_module.effective_budget
    monkeypatch.setattr(budget_module, "effective_budget", lambda s, b: reads.append(1) or original(s, b))
    spec_budget = Budget(n_trials=5)
    assert budget_module.budget_state(study, spec_budget).stop_reason is None  # before ask: read
    assert not budget_module.is_over_budget(study, 0, spec_budget)  # after it: reused
    assert len(reads) == 1
    monkeypatch.setattr(budget_module, "REUSE_FOR", -1.0)  # too old: read again
    assert not budget_module.is_over_budget(study, 0, spec_budget)
    assert len(reads) == 2
    assert budget_module.budget_state(study, spec_budget).stop_reason is None  # before each ask: always read
    assert len(reads) == 3
