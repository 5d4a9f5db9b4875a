"""The bridge from the training loop (which never imports optuna) to an Optuna trial."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from optuna import Study
    from optuna.study import StudyDirection
    from optuna.trial import Trial

    from hpo.training import EpochMetrics

# Seconds a reported value may wait before it is written: values of quicker epochs go out
# together (and the last ones with the trial's results).
WRITE_INTERVAL = 1.0


class TrialReporter:
    """Reports the objective once per epoch and asks the pruner; keeps the curves.

    Per-epoch only: every report and prune check is a storage round trip, and other
    workers' pruning decisions read every reported value, so per-batch reports would
    make the storage load grow with workers x batches.

    Values reach the storage at most ``WRITE_INTERVAL`` seconds after their epoch, several
    in one write, and the rest with the trial's results (``write``): with very short epochs
    (digits, small MLPs) one write per epoch was most of what a trial cost the service
    (BENCHMARKS.md, per-trial overhead). Nothing is lost by waiting: pruners never read another trial's values while it
    runs (the median rule reads finished trials, successive halving and Hyperband the rung
    attributes they write at once), this trial's own pruner gets them from here, and the
    dashboard is a second late.
    """

    def __init__(self, study: Study, trial: Trial, metric: str,
                 on_epoch: Callable[[EpochMetrics], None] | None = None,
                 on_batch: Callable[[int, int, int], None] | None = None):
        self.study = study
        self.on_batch = on_batch
        self.multi_objective = len(study.directions) > 1
        self.trial = trial
        self.metric = metric
        self.on_epoch = on_epoch
        self.history: list[EpochMetrics] = []
        # The trial's last epoch (train.epochs, once its config is sampled): the pruner is not
        # asked after it, since stopping a trial that has trained every epoch saves nothing and
        # throws its result away (successive halving's rungs, 2, 4, 8, 16, are often a
        # trial's last epoch).
        self.final_epoch: int | None = None
        self._unwritten: dict[int, float] = {}  # epoch -> value
        self._written_at = time.monotonic()

    def report(self, metrics: EpochMetrics) -> bool:
        self.history.append(metrics)
        if self.on_epoch:
            self.on_epoch(metrics)
        self.record(getattr(metrics, self.metric), metrics.epoch)
        if self.final_epoch is not None and metrics.epoch >= self.final_epoch:
            return False
        # What Trial.should_prune does, but the pruner reads the study through a cheap view
        # (see hpo.storage.proxies.PrunerView), at most WRITE_INTERVAL old: other trials'
        # news may wait as long as this one's does. Multi-objective trials: by the first.
        from hpo.storage.optuna_internals import latest_trial
        from hpo.storage.proxies import light_study

        judged = light_study(self.study, max_age=WRITE_INTERVAL)
        if self.multi_objective:  # the view stands in for the Study the pruner reads
            judged = cast("Study", FirstObjectiveView(judged))
        # The trial as Trial.should_prune passes it: its own copy (this worker wrote every
        # value), system attributes read from the storage only if the pruner asks.
        frozen = latest_trial(self.trial)
        return bool(self.study.pruner.prune(judged, frozen))

    def batch(self, epoch: int, done: int, total: int) -> None:
        """Live progress only (a few times a second): nothing reaches the storage."""
        if self.on_batch is not None:
            self.on_batch(epoch, done, total)

    def resumed(self, history: list[EpochMetrics]) -> None:
        """A retry resuming from a checkpoint: the epochs trained before the restart become
        this trial's curve too (values recorded, not judged again by the pruner)."""
        for metrics in history:
            self.history.append(metrics)
            self.record(getattr(metrics, self.metric), metrics.epoch)

    def record(self, value: float, epoch: int) -> None:
        """Store the first objective's value for ``epoch`` as the trial's intermediate value.

        What ``Trial.report`` does, written as described above. Optuna refuses ``report``
        and ``should_prune`` in multi-objective studies; hpo prunes on the first objective
        there, against a view of the study that has only the first direction."""
        from hpo.storage.optuna_internals import cached_frozen_trial

        value = float(value)
        cached_frozen_trial(self.trial).intermediate_values[epoch] = value  # as report keeps it
        self._unwritten[epoch] = value
        if time.monotonic() - self._written_at >= WRITE_INTERVAL:
            self.write()

    def write(self, user_attrs: dict[str, Any] | None = None) -> None:
        """Write the values not written yet, and ``user_attrs``, in one write."""
        from hpo.storage.writes import write_to_trial

        write_to_trial(self.trial, intermediate_values=self._unwritten, user_attrs=user_attrs)
        self._unwritten, self._written_at = {}, time.monotonic()

    def curves(self) -> dict[str, list[Any]]:  # train_accuracy may hold None (see EpochMetrics)
        return {
            "train_loss": [m.train_loss for m in self.history],
            "train_accuracy": [m.train_accuracy for m in self.history],
            "val_loss": [m.val_loss for m in self.history],
            "val_accuracy": [m.val_accuracy for m in self.history],
            "seconds": [round(m.seconds, 4) for m in self.history],
            "lr": [m.lr for m in self.history],
        }

    def grad_norms(self) -> dict[str, Any] | None:
        """The ``grad_norms`` attribute's value (train.record_gradients); None when off."""
        from hpo.study.attrs import GradNorms

        recorded = GradNorms.from_epochs(m.grad_norms for m in self.history)
        return recorded.as_attr() if recorded is not None else None


class FirstObjectiveView:
    """A multi-objective study as a pruner sees it: the first direction only."""

    def __init__(self, study: Study):
        self._study = study

    @property
    def direction(self) -> StudyDirection:
        return self._study.directions[0]

    @property
    def directions(self) -> list[StudyDirection]:
        return self._study.directions[:1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
