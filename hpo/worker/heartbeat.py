"""A worker's background thread: the running trial's heartbeat, and the periodic sweep.

Optuna beats hearts only inside ``study.optimize``; hpo asks and tells itself, so it runs
its own thread. It records the current trial's heartbeat every ``interval`` seconds (on a
database: the journal store has none) and, every ``sweep_every`` seconds, fails and retries
trials whose worker is gone (``hpo.worker.recovery``), so that dead trials are found while every
live worker is busy training, not only when one starts a new trial. Torch releases the GIL
in its kernels, so a long epoch does not starve the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hpo.worker.recovery import sweep_dead_trials

if TYPE_CHECKING:
    from optuna import Study

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, study: Study, *, max_retries: int, interval: float, grace_period: float | None,
                 sweep_every: float, on_swept: Callable[[int], None] | None = None):
        self.study = study
        self.max_retries = max_retries
        self.interval = interval
        self.grace_period = grace_period  # None: no heartbeats (journal store)
        self.sweep_every = sweep_every
        self.on_swept = on_swept
        self._trial_id: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpo-watchdog", daemon=True)
        self._last_sweep = time.monotonic()

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    @property
    def beats(self) -> bool:
        """Whether this watchdog records heartbeats (a database; the journal store has none)."""
        return self.grace_period is not None

    def beat_for(self, trial_id: int | None, *, first_recorded: bool = False) -> None:
        """The trial now running (None: between trials). Its first heartbeat is recorded now,
        unless it was already (``first_recorded``: with the trial's creation): a trial with
        no heartbeat at all is never judged stale by Optuna."""
        with self._lock:
            self._trial_id = trial_id
        if trial_id is not None and not first_recorded:
            self._beat(trial_id)

    def sweep(self) -> None:
        self._last_sweep = time.monotonic()
        for number in sweep_dead_trials(self.study, self.max_retries, grace_period=self.grace_period):
            if self.on_swept:
                self.on_swept(number)

    def _beat(self, trial_id: int) -> None:
        if self.grace_period is not None:
            from hpo.storage.optuna_internals import BaseHeartbeat, storage_of

            storage = storage_of(self.study)
            assert isinstance(storage, BaseHeartbeat)  # a grace period: a database, which has heartbeats
            storage.record_heartbeat(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self._lock:
                    trial_id = self._trial_id
                if trial_id is not None:
                    self._beat(trial_id)
                if time.monotonic() - self._last_sweep >= self.sweep_every:
                    self.sweep()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive a bad moment
                log.warning("heartbeat/sweep failed: %s", exc)
