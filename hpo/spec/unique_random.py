"""``sampler: {name: random, unique: true}``: random search that runs no configuration twice.

Optuna's RandomSampler draws each parameter on its own, so a small space repeats itself (in
a model-family comparison of 4 configurations, the same one ran 3 times out of 4). Its
GridSampler does not repeat, but takes one product of lists: no ``when`` conditions, no
``repeat`` counts. This sampler is handed every configuration of the finite space
(``hpo.spec.finite``), picks one at random among those no trial of the study has (finished,
failed or running, whichever worker ran it), and answers each ``suggest`` of the trial from
it. Imported only when such a sampler is built: optuna is loaded at the top.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

Configuration = frozenset[tuple[str, Any]]


class UniqueRandomSampler(optuna.samplers.RandomSampler):
    """Each trial gets an unused configuration, chosen at random.

    Two workers asking at once both see the other's new trial without parameters yet, so
    picking among the unused ones alone would let them pick the same. Instead every worker
    shuffles the configurations into one order (seeded with the spec's seed, or the study's
    name without one) and trial number ``n`` takes the ``n``-th: trial numbers are unique
    across workers. Only when that one is used (a retry or a queued trial took it) does the
    trial pick among the unused ones, seeded per worker.

    The configuration is chosen at the trial's first suggestion, among those that agree
    with what the trial already has (a queued trial's given values), and chosen again if a
    later given value disagrees. Once every configuration has been used (only possible if
    trials failed, or the budget was extended: the spec's n_trials is at most the space's
    size), configurations repeat, chosen at random, with a warning. A value the chosen
    configuration lacks is drawn as plain random sampling draws it.
    """

    def __init__(self, configurations: Sequence[dict[str, Any]], *, seed: int | None = None,
                 order_seed: int | None = None,
                 all_trials: Callable[[Study], Sequence[FrozenTrial]] | None = None) -> None:
        super().__init__(seed=seed)
        self._order_seed = order_seed
        self._order: list[int] | None = None
        self._configurations: list[Configuration] = [frozenset(c.items()) for c in configurations]
        self._all_trials = all_trials or (lambda study: study.get_trials(deepcopy=False))
        self._chosen: dict[int, Configuration] = {}  # by trial number: this worker's trials
        self._warned = False

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        given = frozenset(trial.params.items())
        chosen = self._chosen.get(trial.number)
        if chosen is None or not given <= chosen:
            chosen = self._chosen[trial.number] = self._pick(study, trial.number, given)
        values = dict(chosen)
        if param_name in values:
            return values[param_name]
        return super().sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._chosen.pop(trial.number, None)

    def _pick(self, study: Study, number: int, given: Configuration) -> Configuration:
        """An unused configuration that agrees with ``given``; a used one if none is left."""
        # Every trial's params, running ones too: read through the storage (past the
        # Hyperband pruner's per-bracket view) when the worker says how.
        used = {frozenset(t.params.items()) for t in self._all_trials(study) if t.number != number}
        if self._configurations:
            slot = self._configurations[self._shared_order(study)[number % len(self._configurations)]]
            if slot not in used and given <= slot:
                return slot
        agreeing = [c for c in self._configurations if given <= c]
        unused = [c for c in agreeing if c not in used]
        if not unused and agreeing and not self._warned:
            self._warned = True
            warnings.warn("unique random sampling: every configuration of the search space has been "
                          "used; configurations now repeat", stacklevel=2)
        pool = unused or agreeing
        if not pool:
            return frozenset()  # given values outside the space: plain random for the rest
        return pool[int(self._rng.rng.randint(len(pool)))]

    def _shared_order(self, study: Study) -> list[int]:
        """The configurations' indices in the order every worker of ``study`` shuffles them."""
        if self._order is None:
            seed = self._order_seed if self._order_seed is not None else zlib.crc32(study.study_name.encode())
            self._order = [int(i) for i in numpy.random.RandomState(seed).permutation(len(self._configurations))]
        return self._order
