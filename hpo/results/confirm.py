"""``hpo study confirm``: is the search's winner better, or was it a lucky seed?

The best of many trials is partly luck: each trial ran once, with one seed, and the maximum of
many noisy values is biased upwards. Confirm trains the K best configurations (by the study's
objective, hpo's ranking) again with S new seeds (``train.seed + 1 … S``; the trial's own seed
is left out, its value is the biased one), on the same train/validation split (the split has
its own ``data.split_seed``), through the trial's own training path (``train_model``, early
stopping as configured, no pruning) and the worker's rule for the objective's value
(``objective_values``). It reports mean ± std per configuration, marks which differ from the
pick (the best mean) by more than noise, and records the pick in the study, where ``hpo
retrain`` finds it.

Nothing is written until every training is done: Ctrl-C leaves the study as it was.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from hpo.errors import HpoError, UsageError
from hpo.study.attrs import CONFIRMATION, TrialRecord
from hpo.study.studies import LoadedStudy

if TYPE_CHECKING:
    from hpo.spec.trial_config import TrialConfig

Say = Callable[[str], None]

# Two-sided Welch's t-test at the usual 5 %: a difference with p >= ALPHA is within noise.
TEST = "welch"
ALPHA = 0.05


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during the trainings: nothing was recorded. A KeyboardInterrupt, so that it
    passes every ``except Exception`` on its way out."""

    def __init__(self, done: int, total: int):
        self.done, self.total = done, total
        super().__init__(done, total)

    def __str__(self) -> str:
        return f"interrupted after {self.done} of {self.total} trainings: nothing recorded"


@dataclass
class Candidate:
    """One configuration (a trial's) and what its new seeds gave."""

    trial: int
    original: float  # its value in the search (one run, the trial's own seed)
    seeds: list[int]
    values: list[float] = field(default_factory=list)  # one per seed that trained
    failed: dict[str, str] = field(default_factory=dict)  # seed (as text: JSON keys) -> why
    p_value: float | None = None  # Welch's t-test against the pick; None on the pick itself
    within_noise: bool | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1), the spread of one more seed's value."""
        return statistics.stdev(self.values) if len(self.values) > 1 else math.nan

    def as_attr(self) -> dict[str, Any]:
        return {"trial": self.trial, "original": self.original, "seeds": self.seeds,
                "values": self.values, "mean": _finite(self.mean), "std": _finite(self.std), "n": self.n,
                "p_value": self.p_value, "within_noise": self.within_noise, "failed": self.failed}


@dataclass
class Confirmation:
    """What ``confirm`` found; ``as_attr()`` is the study attribute ``hpo:confirmation``."""

    study: str
    metric: str
    direction: str
    candidates: list[Candidate]  # in the search's order, best first
    pick: int
    trained_on: str
    timestamp: str
    notes: list[str] = field(default_factory=list)

    def as_attr(self) -> dict[str, Any]:
        return {"pick": self.pick, "metric": self.metric, "direction": self.direction,
                "test": TEST, "alpha": ALPHA, "trained_on": self.trained_on, "timestamp": self.timestamp,
                "candidates": [c.as_attr() for c in self.candidates]}

    @property
    def picked(self) -> Candidate:
        return next(c for c in self.candidates if c.trial == self.pick)

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(trial, original value, mean ± std, n, against the pick) per configuration, as the
        table prints them."""
        return [(str(c.trial), f"{c.original:.4f}", _mean_std(c), str(c.n), _verdict(c, self.pick))
                for c in self.candidates]

    def legend(self) -> list[str]:
        seeds = len(self.candidates[0].seeds)
        return [
            f"original: the trial's {self.metric} in the search (one run, its own train.seed); "
            f"mean ± std (sample std) and n: over {seeds} new seeds, train.seed + 1 … {seeds}, same split.",
            # Why Welch and not mean ± 2 standard errors: with 2-5 seeds the t distribution's
            # tails are far wider than the normal's (t(0.975, 2 df) = 4.3, not 2), so 2 SE would
            # call noise a difference; and configurations differ in how much their seeds vary
            # (a high learning rate varies more), which Welch's test does not assume away.
            f"vs pick: two-sided Welch's t-test against the pick (unequal variances; with this few "
            f"seeds, ±2 standard errors would call noise a difference); p >= {ALPHA}: within noise.",
        ]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON, and so every storage, has no NaN


def _mean_std(candidate: Candidate) -> str:
    if candidate.n < 2:  # seeds failed: no spread to show
        return f"{candidate.mean:.4f}" if candidate.n else "n/a"
    return f"{candidate.mean:.4f} ± {candidate.std:.4f}"


def _verdict(candidate: Candidate, pick: int) -> str:
    if candidate.failed:
        return f"{len(candidate.failed)} seed(s) failed: {next(iter(candidate.failed.values()))}"
    if candidate.trial == pick:
        return "pick"
    if candidate.p_value is None:
        return "n/a"
    return f"{'within noise' if candidate.within_noise else 'differs'} (p={candidate.p_value:.3f})"


def confirm(loaded: LoadedStudy, *, top: int = 3, seeds: int = 3, device: str = "cpu",
            say: Say = print) -> Confirmation:
    """Train the ``top`` best configurations with ``seeds`` new seeds each, compare, record."""
    from hpo.models.custom import check_custom_model
    from hpo.results.retrain import _stored_config

    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
    if seeds < 2:
        raise UsageError(f"--seeds must be at least 2 (a standard deviation needs two), got {seeds}")
    study = loaded.study
    trials = _top_trials(loaded, top, say)
    configs = [_stored_config(study.study_name, t.number, t.config or {}) for t in trials]
    for config in configs:  # before any training: only code this machine allows
        check_custom_model(config.model)
    objective = loaded.spec.objectives[0]
    candidates = [Candidate(t.number, cast(float, t.value), _new_seeds(c.train.seed, seeds))
                  for t, c in zip(trials, configs)]
    total = len(candidates) * seeds
    say(f"Confirming the top {len(candidates)} of {study.study_name} by {objective.metric} "
        f"({objective.direction}): {len(candidates)} × {seeds} seeds = {total} trainings on {device}, same split")
    started = time.monotonic()
    done = 0
    try:
        for candidate, config in zip(candidates, configs):
            for seed in candidate.seeds:
                _train_one(loaded, candidate, config, seed, device, say, f"[{done + 1}/{total}]")
                done += 1
    except KeyboardInterrupt:
        raise Interrupted(done, total) from None
    pick = _compare(candidates, maximize=objective.direction == "maximize")
    direction = cast(str, objective.direction)  # set by the spec's validation (the metric's natural one)
    confirmation = Confirmation(study.study_name, objective.metric, direction, candidates, pick,
                                device, datetime.now(UTC).isoformat(timespec="seconds"))
    study.set_user_attr(CONFIRMATION, confirmation.as_attr())  # one write, all or nothing
    say(f"Trained {total} models in {time.monotonic() - started:.1f} s")
    return confirmation


def _top_trials(loaded: LoadedStudy, top: int, say: Say) -> list[TrialRecord]:
    """The ``top`` best complete trials by hpo's ranking (what ``study best`` names first)."""
    from hpo.results.summary import ranked_trials

    study = loaded.study
    if len(study.directions) > 1:
        metrics = ", ".join(o.metric for o in loaded.spec.objectives)
        # One ranking is what a pick needs; a Pareto front has none, and which of its trials
        # is wanted is the user's trade-off, not noise: retrain that trial with several seeds.
        raise UsageError(f"study {study.study_name!r} has several objectives ({metrics}): confirm re-checks a "
                         f"ranking by one objective; retrain a Pareto-optimal trial with "
                         f"'hpo retrain {study.study_name} --trial N --seeds 3'")
    ranked = ranked_trials(study, study.get_trials(deepcopy=False))
    if not ranked:
        raise HpoError(f"study {study.study_name!r} has no completed trial yet; run workers first")
    if len(ranked) < top:
        say(f"Note: the study has {len(ranked)} completed trials, fewer than --top {top}: "
            f"confirming all {len(ranked)}")
    return ranked[:top]


def _new_seeds(seed: int, count: int) -> list[int]:
    """``seed + 1 … count``, wrapped into train.seed's range."""
    from hpo.training.config import MAX_SEED

    return [(seed + i) % (MAX_SEED + 1) for i in range(1, count + 1)]


def _train_one(loaded: LoadedStudy, candidate: Candidate, config: TrialConfig, seed: int, device: str,
               say: Say, step: str) -> None:
    """One seed of one configuration, as a worker trains a trial (no pruning, no checkpoints)."""
    from hpo.results.retrain import _Progress
    from hpo.training import train_model
    from hpo.worker.trial import objective_values

    objective = loaded.spec.objectives[0]
    train = config.train.model_copy()  # the stored config with only train.seed changed
    train.seed = seed
    started = time.monotonic()
    try:
        result = train_model(config.data, config.model, train, device=device,
                             reporter=_Progress(say, seed, train.epochs))
    except Exception as exc:  # noqa: BLE001 - one seed's failure, not the other trainings' (Ctrl-C is no Exception)
        reason = _seed_failure(exc, train.batch_size)
        candidate.failed[str(seed)] = reason
        say(f"{step} trial {candidate.trial}, seed {seed}: failed: {reason}")
        return
    value = objective_values([objective], result)[0]
    candidate.values.append(value)
    say(f"{step} trial {candidate.trial}, seed {seed}: {objective.metric} {value:.4f} "
        f"({len(result.history)} epochs, {time.monotonic() - started:.1f} s)")


def _seed_failure(exc: Exception, batch_size: int) -> str:
    """Why one seed's training failed, as a worker records a trial's (hpo.worker.trial): a
    diverged loss in the user's terms, out of memory with its batch size (its memory freed
    for the next training), anything else by its type. The configuration is then not
    reliable; the trainings already done are kept, not thrown away with a traceback."""
    from hpo.worker.trial import _free_device_memory, _is_out_of_memory, failure_reason

    if _is_out_of_memory(exc):
        _free_device_memory()
        return f"out of memory at batch_size={batch_size}"
    return failure_reason(exc)


def _compare(candidates: list[Candidate], *, maximize: bool) -> int:
    """The pick (best mean among configurations every seed of which trained), and each other
    one's p-value against it."""
    usable = [c for c in candidates if not c.failed]
    if not usable:
        raise HpoError("every configuration failed with some seed: nothing recorded")
    sign = -1.0 if maximize else 1.0
    # Ties on the mean: the steadier configuration, then the search's order.
    pick = min(usable, key=lambda c: (sign * c.mean, c.std, candidates.index(c)))
    for candidate in usable:
        if candidate is not pick:
            candidate.p_value = welch_p_value(pick.values, candidate.values)
            candidate.within_noise = candidate.p_value >= ALPHA
    return pick.trial


def welch_p_value(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (scipy) for equal means of ``a`` and ``b``.

    Seeds that all give the same value (a deterministic configuration, or accuracies on a
    small validation set) have no variance, and the t statistic is 0/0 or x/0: equal values
    are the same (p = 1), different ones clearly not (p = 0)."""
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)
