"""Storage wrappers: a worker that survives a PostgreSQL restart, and the cheap view of a study
that a pruner reads.

Optuna has neither: RDBStorage raises on the first statement the server could not answer
(``pool_pre_ping`` only revives connections that died while idle in the pool), and its
cached storage re-reads every running trial with all its intermediate values on each
``get_all_trials``, which every ``should_prune`` calls.
"""

from __future__ import annotations

import abc
import inspect
import logging
import time
import weakref
from collections.abc import Callable, Container
from typing import Any

from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import StorageError
from hpo.storage import scrub

log = logging.getLogger("hpo.storage")

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class DelegatingStorage(BaseStorage, BaseHeartbeat):
    """Forwards every storage and heartbeat method to ``inner`` through ``_call``.

    Subclasses override ``_call`` (every method) or single methods. Written by hand because
    Optuna's storages are abstract base classes with no proxy of their own.
    """

    def __init__(self, inner: BaseStorage):
        self._inner = inner

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # anything else an Optuna internal may look for
        if name == "_inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def get_heartbeat_interval(self) -> int | None:
        getter = getattr(self._inner, "get_heartbeat_interval", None)
        return getter() if getter else None


def _forwarder(name: str) -> Callable[..., Any]:
    def forward(self: DelegatingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    forward.__name__ = name
    return forward


_FORWARDED = sorted(
    {name for name, _ in inspect.getmembers(BaseStorage, inspect.isfunction) if not name.startswith("__")}
    | {"record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_stale_trial_callback"}
)
for _name in _FORWARDED:
    setattr(DelegatingStorage, _name, _forwarder(_name))
abc.update_abstractmethods(DelegatingStorage)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database could not be reached."""
    import sqlalchemy.exc as sa

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if getattr(seen, "connection_invalidated", False):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class ReconnectingStorage(DelegatingStorage):
    """Retries a storage call while the database is unreachable, with exponential backoff
    from ``first_wait`` to ``max_wait`` seconds, for at most ``give_up_after`` seconds in all;
    then raises StorageError.

    Each call is one or more transactions that either committed or did not, so repeating it
    is safe with two exceptions handled here: a state change that did commit before the
    connection dropped (the retry finds the trial finished) counts as done; a trial created
    in a commit whose answer was lost is left running without a heartbeat (a window of
    milliseconds during a server restart; ``hpo study show`` lists it).
    """

    def __init__(self, inner: BaseStorage, display: str, *, give_up_after: float,
                 first_wait: float = 0.5, max_wait: float = 8.0):
        super().__init__(inner)
        self._display = display
        self.give_up_after = give_up_after
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.last_outage_end = float("-inf")  # monotonic time the last outage ended

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.retrying(name, getattr(self._inner, name), *args, **kwargs)

    def retrying(self, name: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)``, retried as described above (``name`` for messages)."""
        from optuna.exceptions import UpdateFinishedTrialError

        started = time.monotonic()
        wait = self.first_wait
        retried = False
        while True:
            try:
                result = method(*args, **kwargs)
            except UpdateFinishedTrialError:
                if retried and name == "set_trial_state_values" and self._committed_state(*args, **kwargs):
                    return True
                raise
            except Exception as exc:  # noqa: BLE001 - only connection errors are retried
                if not is_connection_error(exc):
                    raise
                waited = time.monotonic() - started
                if waited + wait > self.give_up_after:
                    raise StorageError(
                        f"lost the connection to {self._display} for {waited:.0f} s and gave up "
                        f"(after {self.give_up_after:g} s): {_reason(exc)}"
                    ) from None
                log.warning("storage %s unreachable (%s); retrying in %.1f s", self._display, _reason(exc), wait)
                time.sleep(wait)
                wait = min(wait * 2, self.max_wait)
                retried = True
                continue
            if retried:
                self.last_outage_end = time.monotonic()
                log.warning("storage %s reachable again after %.1f s", self._display, time.monotonic() - started)
            return result

    def _committed_state(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        return self._inner.get_trial(trial_id).state == state


def _reason(exc: BaseException) -> str:
    """The first line of the driver's message, password-free."""
    seen: BaseException | None = exc
    while seen is not None and seen.__cause__ is not None:
        seen = seen.__cause__
    text = scrub(str(getattr(seen, "orig", None) or seen)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PrunerView(DelegatingStorage):
    """The storage as a pruner sees it: ``get_all_trials`` without running trials' curves.

    Optuna's pruners read finished trials' intermediate values (median, percentile) and every
    trial's rung attributes (successive halving, Hyperband), never a running trial's curve;
    the global budget needs finished trials' attributes and the others' states only.
    Optuna's cached storage nevertheless re-reads each running trial with all its reported
    values on every call: 64 running trials x 100 epochs is 6,400 rows per ``should_prune``,
    per worker, per epoch. Here finished trials are read once and kept (they never change) and
    running trials come from one light query of their system attributes.
    """

    def __init__(self, inner: BaseStorage, rdb: Any):
        super().__init__(inner)
        self._rdb = rdb  # the RDBStorage underneath, for the light query
        self._finished: dict[int, FrozenTrial] = {}
        self._pending: set[int] = set()  # ids seen unfinished
        self._watermark = -1  # highest trial id seen

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        unfinished = self._unfinished_trials(study_id)  # before the finished ones: see below
        # A trial that finishes between the two reads is pending (seen unfinished) or above the
        # watermark, so the second read catches it.
        for trial in self._rdb._get_trials(study_id, FINISHED_STATES, self._pending, self._watermark):
            self._finished[trial._trial_id] = trial
        self._pending = {t._trial_id for t in unfinished}
        ids = [*self._finished, *self._pending]
        self._watermark = max([self._watermark, *ids])
        trials = sorted([*self._finished.values(), *unfinished], key=lambda t: t.number)
        if states is not None:
            trials = [t for t in trials if t.state in states]
        if deepcopy:
            import copy

            trials = copy.deepcopy(trials)
        return trials

    def _unfinished_trials(self, study_id: int) -> list[FrozenTrial]:
        # Optuna's ORM models are internal; tests/test_pruner_view.py checks this against
        # the full read so an Optuna upgrade that changes them fails loudly.
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy import orm

        with _create_scoped_session(self._rdb.scoped_session) as session:
            rows = (
                session.query(models.TrialModel)
                .options(orm.selectinload(models.TrialModel.system_attributes))
                .filter(models.TrialModel.study_id == study_id,
                        models.TrialModel.state.in_((TrialState.RUNNING, TrialState.WAITING)))
                .all()
            )
            return [_light_trial(row) for row in rows]


def _light_trial(row: Any) -> FrozenTrial:
    import json

    return FrozenTrial(
        number=row.number,
        state=row.state,
        value=None,
        values=None,
        datetime_start=row.datetime_start,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={a.key: json.loads(a.value_json) for a in row.system_attributes},
        intermediate_values={},
        trial_id=row.trial_id,
    )


def pruner_storage(storage: Any) -> Any:
    """A PrunerView of ``storage`` when it is a database (with the same reconnect policy);
    ``storage`` itself otherwise (the journal store replays only new log lines: cheap)."""
    rdb = rdb_backend(storage)
    if rdb is None:
        return storage
    view = PrunerView(storage, rdb)
    if isinstance(storage, ReconnectingStorage):
        return ReconnectingStorage(view, storage._display, give_up_after=storage.give_up_after,
                                   first_wait=storage.first_wait, max_wait=storage.max_wait)
    return view


_light_studies: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def light_study(study: Any) -> Any:
    """``study`` over ``pruner_storage``: as the pruner (every epoch) and the budget check
    (every trial) read it. One per study object, so what the view has read is kept."""
    if study not in _light_studies:
        storage = pruner_storage(study._storage)
        if storage is study._storage:  # nothing to save on this storage
            return study
        import optuna

        _light_studies[study] = optuna.Study(study_name=study.study_name, storage=storage,
                                             sampler=study.sampler, pruner=study.pruner)
    return _light_studies[study]


def rdb_backend(storage: Any) -> Any | None:
    """The RDBStorage under ``storage``'s wrappers, or None (journal and others)."""
    from optuna.storages import RDBStorage

    while storage is not None and not isinstance(storage, RDBStorage):
        storage = getattr(storage, "_inner", None) or getattr(storage, "_backend", None)
    return storage
