"""The bridge from the training loop (which never imports optuna) to an Optuna trial."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo.training import EpochMetrics


class TrialReporter:
    """Reports the objective once per epoch and asks the pruner; keeps the curves.

    Per-epoch only: every report and prune check is a storage round trip, and other
    workers' pruning decisions read every reported value, so per-batch reports would
    make the storage load grow with workers x batches.
    """

    def __init__(self, study: Any, trial: Any, metric: str,
                 on_epoch: Callable[[EpochMetrics], None] | None = None):
        self.study = study
        self.multi_objective = len(study.directions) > 1
        self.trial = trial
        self.metric = metric
        self.on_epoch = on_epoch
        self.history: list[EpochMetrics] = []

    def report(self, metrics: EpochMetrics) -> bool:
        self.history.append(metrics)
        if self.on_epoch:
            self.on_epoch(metrics)
        self.record(getattr(metrics, self.metric), metrics.epoch)
        # What Trial.should_prune does, but the pruner reads the study through a cheap view
        # (see hpo.storage_proxy.PrunerView) and judges multi-objective trials by the first.
        judged = pruner_study(self.study)
        if self.multi_objective:
            judged = FirstObjectiveView(judged)
        frozen = self.study._storage.get_trial(self.trial._trial_id)
        return bool(self.study.pruner.prune(judged, frozen))

    def resumed(self, history: list[EpochMetrics]) -> None:
        """A retry resuming from a checkpoint: the epochs trained before the restart become
        this trial's curve too (values recorded, not judged again by the pruner)."""
        for metrics in history:
            self.history.append(metrics)
            self.record(getattr(metrics, self.metric), metrics.epoch)

    def record(self, value: float, epoch: int) -> None:
        """Store the first objective's value for ``epoch`` as the trial's intermediate value.

        Optuna refuses ``report``/``should_prune`` in multi-objective studies. hpo prunes on
        the first objective there: the value goes to the storage directly (so curves and the
        dashboard show it) and the pruner judges the trial against a view of the study that
        has only the first direction."""
        if self.multi_objective:
            self.study._storage.set_trial_intermediate_value(self.trial._trial_id, epoch, value)
        else:
            self.trial.report(value, epoch)

    def curves(self) -> dict[str, list[float]]:
        return {
            "train_loss": [m.train_loss for m in self.history],
            "val_loss": [m.val_loss for m in self.history],
            "val_accuracy": [m.val_accuracy for m in self.history],
            "seconds": [round(m.seconds, 4) for m in self.history],
            "lr": [m.lr for m in self.history],
        }


_pruner_studies: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def pruner_study(study: Any) -> Any:
    """``study`` as its pruner should read it: over ``hpo.storage_proxy.pruner_storage``.
    One per study object, so that what the view has read is kept from trial to trial."""
    from hpo.storage_proxy import pruner_storage

    if study not in _pruner_studies:
        storage = pruner_storage(study._storage)
        if storage is study._storage:  # nothing to save on this storage
            return study
        import optuna

        _pruner_studies[study] = optuna.Study(study_name=study.study_name, storage=storage,
                                              sampler=study.sampler, pruner=study.pruner)
    return _pruner_studies[study]


class FirstObjectiveView:
    """A multi-objective study as a pruner sees it: the first direction only."""

    def __init__(self, study: Any):
        self._study = study

    @property
    def direction(self) -> Any:
        return self._study.directions[0]

    @property
    def directions(self) -> list[Any]:
        return self._study.directions[:1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
