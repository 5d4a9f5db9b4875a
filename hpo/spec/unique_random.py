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

import math
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from hpo.storage.optuna_internals import queued_params, set_trial_system_attr
from hpo.study.attrs import UNIQUE_CONFIGURATION

Configuration = frozenset[tuple[str, Any]]


class UniqueRandomSampler(optuna.samplers.RandomSampler):
    """Each trial gets an unused configuration, chosen at random.

    Two workers asking at once both see the other's new trial without parameters yet, so
    picking among the unused ones alone would let them pick the same. Instead every worker
    shuffles the configurations into one order (seeded with the spec's seed, or the study's
    name without one) and trial number ``n`` takes the ``n``-th: trial numbers are unique
    across workers. Only when that one is used (a retry or a queued trial took it) does the
    trial pick among the unused ones, with a random state of its own process: workers on
    separate machines are all rank 0, so a stream seeded with the spec's seed would be one
    stream for all of them. The pick is recorded in the trial (system attribute
    ``UNIQUE_CONFIGURATION``) before its first parameter is written, and a running trial's
    recorded pick counts as used: its parameters are written one suggestion at a time.

    The configuration is chosen at the trial's first suggestion, among those that agree
    with what the trial already has: its written parameters and, for a queued trial, the
    values it was queued with (Optuna hands those to ``suggest`` only at each key's turn), or
    failing that with its written parameters alone (a queued value the space never asks for,
    such as a width queued with a CNN). Once every configuration has been used (only possible
    if trials failed, or the budget was extended: the spec's n_trials is at most the space's
    size), configurations repeat, chosen at random, with a warning. A value the chosen
    configuration lacks is drawn as plain random sampling draws it.

    Values are compared as ``_canonical`` writes them: a float to 12 significant digits, so
    that a queued or warm-started ``0.3`` is the stepped value Optuna samples
    as ``2 * 0.1 + 0.1`` (0.30000000000000004).
    """

    def __init__(self, configurations: Sequence[dict[str, Any]], *, seed: int | None = None,
                 order_seed: int | None = None,
                 all_trials: Callable[[Study], Sequence[FrozenTrial]] | None = None) -> None:
        super().__init__(seed=seed)
        self._order_seed = order_seed
        self._order: list[int] | None = None
        self._configurations = [dict(c) for c in configurations]
        self._keys: list[Configuration] = [_canonical(c) for c in configurations]
        self._index = {key: i for i, key in enumerate(self._keys)}
        self._all_trials = all_trials or (lambda study: study.get_trials(deepcopy=False))
        self._chosen: dict[int, int | None] = {}  # by trial number: this worker's trials
        # The fallback pick's own random state, from fresh entropy: per process (see above).
        self._fallback = numpy.random.default_rng()
        self._warned = False

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        written = _canonical(trial.params)
        chosen = self._chosen.get(trial.number)
        if trial.number not in self._chosen or not written <= self._key(chosen):
            given = written | _canonical(queued_params(trial) or {})
            chosen = self._chosen[trial.number] = self._pick(study, trial.number, written, given)
            if chosen is not None:
                set_trial_system_attr(study, trial, UNIQUE_CONFIGURATION, chosen)
        values = self._configurations[chosen] if chosen is not None else {}
        if param_name in values:
            return values[param_name]
        return super().sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._chosen.pop(trial.number, None)

    def _key(self, index: int | None) -> Configuration:
        return self._keys[index] if index is not None else frozenset()

    def _pick(self, study: Study, number: int, written: Configuration, given: Configuration) -> int | None:
        """The index of an unused configuration that agrees with ``given`` (else with
        ``written``); a used one if none is left; None if none agrees."""
        used = self._used(study, number)
        if self._keys:
            slot = self._shared_order(study)[number % len(self._keys)]
            if slot not in used and given <= self._keys[slot]:
                return slot
        agreeing = ([i for i, c in enumerate(self._keys) if given <= c]
                    or [i for i, c in enumerate(self._keys) if written <= c])
        unused = [i for i in agreeing if i not in used]
        if not unused and agreeing and not self._warned:
            self._warned = True
            warnings.warn("unique random sampling: every configuration of the search space has been "
                          "used; configurations now repeat", stacklevel=2)
        pool = unused or agreeing
        if not pool:
            return None  # given values outside the space: plain random for the rest
        return pool[int(self._fallback.integers(len(pool)))]

    def _used(self, study: Study, number: int) -> set[int]:
        """The configurations other trials have: finished, failed or running, by their
        parameters, and a running one's by its recorded pick too (its parameters are written
        one at a time). Every trial is read through the storage (past the Hyperband pruner's
        per-bracket view) when the worker says how."""
        used: set[int] = set()
        for t in self._all_trials(study):
            if t.number == number:
                continue
            index = self._index.get(_canonical(t.params))
            if index is not None:
                used.add(index)
            marked = t.system_attrs.get(UNIQUE_CONFIGURATION) if t.state == TrialState.RUNNING else None
            if isinstance(marked, int) and 0 <= marked < len(self._keys):
                used.add(marked)
        return used

    def _shared_order(self, study: Study) -> list[int]:
        """The configurations' indices in the order every worker of ``study`` shuffles them."""
        if self._order is None:
            seed = self._order_seed if self._order_seed is not None else zlib.crc32(study.study_name.encode())
            self._order = [int(i) for i in numpy.random.RandomState(seed).permutation(len(self._keys))]
        return self._order


def _canonical(params: Mapping[str, Any]) -> Configuration:
    """``params`` as configurations are compared: a float to 12 significant digits, so that
    two spellings of one stepped value (``0.3`` queued, ``k * step + low`` sampled) are one value. Steps finer
    than that relative to the value are not told apart (no search space has them)."""
    return frozenset((name, _canonical_value(value)) for name, value in params.items())


def _canonical_value(value: Any) -> Any:
    if isinstance(value, list):  # hpo queues a list choice by its label (hpo.spec.enqueue): a
        return repr(value)  # list is none of the configurations, but must not break the set
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.12g}")
    return value
