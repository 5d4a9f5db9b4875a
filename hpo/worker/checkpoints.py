"""Where a trial's checkpoints live: the study's artifact store (a shared directory or S3,
recorded in the study), so that a retry on any machine can resume from them.

Each save is a new artifact, and the trial's ``checkpoint`` attribute is pointed at it only
once it is written: a worker killed mid-write leaves the previous checkpoint in force, never
a truncated one. The previous file is then removed; the last one is removed when the trial
finishes for good (a retry removes its predecessor's).
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from hpo.storage.writes import write_to_trial
from hpo.study.attrs import CHECKPOINT, CHECKPOINT_SUPERSEDED, RESUME_FROM, RESUMED_FROM, ResumedFrom

if TYPE_CHECKING:
    from optuna.trial import Trial

    from hpo.storage.optuna_internals import ArtifactStore

log = logging.getLogger(__name__)


class TrialCheckpoints:
    """The ``Checkpoints`` of one trial (see ``hpo.training.checkpoint``).

    ``interval``: seconds since the trial started or last saved before an epoch's end saves
    again (``budget.checkpoint_interval``; 0: every epoch). A save costs a copy of model and
    optimiser to the store, a large share of a small model's epoch (BENCHMARKS.md), while a
    retry after a crash repeats at most ``interval`` seconds of training.
    """

    def __init__(self, store: ArtifactStore, trial: Trial, *, interval: float = 0.0):
        self.store = store
        self.trial = trial
        self.interval = interval
        self.resume_from: str | None = trial.user_attrs.get(RESUME_FROM)
        self.current: str | None = None
        self._saved_at = time.monotonic()
        # A retry: the file its predecessor had just replaced when it died, if it was killed
        # before removing it; nothing needs it.
        self._remove(trial.user_attrs.get(CHECKPOINT_SUPERSEDED))

    def due(self) -> bool:
        return time.monotonic() - self._saved_at >= self.interval

    def load(self) -> dict[str, Any] | None:
        if not self.resume_from:
            return None
        from optuna.artifacts.exceptions import ArtifactNotFound

        from hpo.training.checkpoint import from_bytes  # torch: imported only where checkpoints are kept

        try:
            with self.store.open_reader(self.resume_from) as reader:
                state = from_bytes(reader.read())
        except ArtifactNotFound:
            log.warning("trial %d: checkpoint %s is gone; starting from the first epoch",
                        self.trial.number, self.resume_from)
            return None
        position = state["position"]
        resumed = ResumedFrom(self.resume_from, position["epoch"], position["batch"])
        self.trial.set_user_attr(RESUMED_FROM, resumed.as_attr())
        return state

    def save(self, state: dict[str, Any]) -> None:
        position = state["position"]
        artifact_id = (f"checkpoint-{self.trial.number}-e{position['epoch']}b{position['batch']}-"
                       f"{uuid.uuid4().hex[:8]}.pt")
        from hpo.training.checkpoint import to_bytes

        self.store.write(artifact_id, io.BytesIO(to_bytes(state)))
        self._saved_at = time.monotonic()
        previous, self.current = self.current or self.resume_from, artifact_id
        # The new file and the one it replaces, in one write: a worker killed before it removes
        # the old file leaves its name to the retry (hpo.worker.recovery), which removes it.
        attrs = {CHECKPOINT: artifact_id, CHECKPOINT_SUPERSEDED: previous}
        write_to_trial(self.trial, user_attrs=attrs)
        self.resume_from = None  # superseded: this trial's own checkpoint is the one to resume
        self._remove(previous)

    def discard(self) -> None:
        """The trial is over for good: its checkpoints are no longer needed."""
        self._remove(self.current)
        self._remove(self.resume_from)
        self.current = self.resume_from = None

    def _remove(self, artifact_id: str | None) -> None:
        if not artifact_id:
            return
        try:
            self.store.remove(artifact_id)
        except Exception as exc:  # noqa: BLE001 - a leftover file is no reason to fail a trial
            log.debug("could not remove checkpoint %s: %s", artifact_id, exc)
