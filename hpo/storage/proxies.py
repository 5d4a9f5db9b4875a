"""Storage wrappers: a worker that survives a PostgreSQL restart, and the cheap view of a study
that a pruner reads.

Optuna has neither: RDBStorage raises on the first statement the server could not answer
(``pool_pre_ping`` only revives connections that died while idle in the pool), and its
cached storage re-reads every running trial with all its intermediate values on each
``get_all_trials``, which every ``should_prune`` calls.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import StorageError
from hpo.storage.optuna_internals import (
    HeartbeatForwarding,
    created_trial,
    rdb_models,
    rdb_session,
    rdb_set_system_attr,
    rdb_trials_by_id,
    storage_of,
    trial_id_of,
    unwrap,
)
from hpo.storage.secrets import scrub
from hpo.study.attrs import CLAIM_TOKEN

if TYPE_CHECKING:
    from datetime import datetime

    from optuna import Study
    from optuna.distributions import BaseDistribution
    from optuna.storages import RDBStorage
    from optuna.study import StudyDirection

    from hpo.storage.optuna_internals import FrozenStudy

log = logging.getLogger(__name__)

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class DelegatingStorage(BaseStorage, HeartbeatForwarding):
    """Forwards every storage and heartbeat method to ``inner`` through ``_call``.

    Subclasses override ``_call`` (every method) or single methods. Written by hand because
    Optuna's storages are abstract base classes with no proxy of their own: below, each
    method of Optuna 5.0's ``BaseStorage`` (the heartbeat ones come from
    ``HeartbeatForwarding``). A method a later Optuna adds to ``BaseStorage`` runs its
    default, built on these; an abstract one stops the wrappers from being created.
    """

    def __init__(self, inner: BaseStorage):
        self._inner = inner

    @property
    def inner(self) -> BaseStorage:
        """The storage this one wraps (``hpo.storage.optuna_internals.unwrap`` goes down
        the layers through it)."""
        return self._inner

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # anything else an Optuna internal may look for
        if name == "_inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def get_heartbeat_interval(self) -> int | None:
        getter = getattr(self._inner, "get_heartbeat_interval", None)
        return getter() if getter else None

    # --- studies

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._call("create_new_study", directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._call("delete_study", study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call("set_study_user_attr", study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call("set_study_system_attr", study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call("get_study_id_from_name", study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call("get_study_name_from_id", study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call("get_study_directions", study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call("get_study_user_attrs", study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call("get_study_system_attrs", study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call("get_all_studies")

    # --- writing trials

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._call("create_new_trial", study_id, template_trial)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self._call("set_trial_param", trial_id, param_name, param_value_internal, distribution)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return self._call("set_trial_state_values", trial_id, state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._call("set_trial_intermediate_value", trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call("set_trial_user_attr", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call("set_trial_system_attr", trial_id, key, value)

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self._call("check_trial_is_updatable", trial_id, trial_state)

    def remove_session(self) -> None:
        self._call("remove_session")

    # --- reading trials

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call("get_trial", trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._call("get_all_trials", study_id, deepcopy, states)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self._call("get_n_trials", study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call("get_best_trial", study_id)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call("get_trial_id_from_study_id_trial_number", study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._call("get_trial_number_from_id", trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._call("get_trial_param", trial_id, param_name)

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        return self._call("get_trial_params", trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call("get_trial_user_attrs", trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call("get_trial_system_attrs", trial_id)


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
    is safe with these exceptions handled here:

    - a state change that did commit before the connection dropped (the retry finds the
      trial finished) counts as done;
    - claiming a queued trial (Optuna's ask moves it from WAITING to RUNNING) records a token
      of the call in the same transaction, so that the retry of a claim that committed finds
      its own token and the claim is the caller's (Optuna's call would answer False, and ask
      would leave the trial RUNNING with no one running it);
    - a trial created in a commit whose answer was lost is left RUNNING without a heartbeat
      (the retry creates another): ``heartbeat_stale_trial_ids`` counts a trial stale once
      it has been seen RUNNING without any heartbeat for longer than the grace period, so
      that the sweep fails it as it fails a trial whose worker died (Optuna's own check
      passes over trials without a heartbeat). hpo's worker records a trial's first
      heartbeat right after asking for it.
    """

    def __init__(self, inner: BaseStorage, display: str, *, give_up_after: float,
                 first_wait: float = 0.5, max_wait: float = 8.0):
        super().__init__(inner)
        self._display = display
        self.give_up_after = give_up_after
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.last_outage_end = float("-inf")  # monotonic time the last outage ended
        # study id -> {id of a trial seen RUNNING without a heartbeat: monotonic time first seen}
        self._unbeaten_since: dict[int, dict[int, float]] = {}

    @property
    def display(self) -> str:
        """The storage as messages name it (password-free)."""
        return self._display

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

    def _committed_state(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return self._inner.get_trial(trial_id).state == state

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        rdb = rdb_backend(self._inner)
        if state != TrialState.RUNNING or values is not None or rdb is None:
            return super().set_trial_state_values(trial_id, state, values)
        token = uuid.uuid4().hex  # one per call: its retries share it
        return self.retrying("claim of a queued trial", claim_queued_trial, rdb, trial_id, token)

    def heartbeat_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials (a heartbeat older than the grace period), and the trials
        this storage has seen RUNNING without any heartbeat for longer than it."""
        stale = super().heartbeat_stale_trial_ids(study_id)
        rdb = rdb_backend(self._inner)
        if rdb is None or rdb.heartbeat_interval is None:
            return stale
        unbeaten = self.retrying("running trials without a heartbeat", running_trials_without_heartbeat,
                                 rdb, study_id)
        now = time.monotonic()
        seen = self._unbeaten_since.get(study_id, {})
        since = {trial_id: seen.get(trial_id, now) for trial_id in unbeaten}
        self._unbeaten_since[study_id] = since
        # Optuna's default grace period (RDBStorage._get_stale_trial_ids) where none is set.
        grace = rdb.grace_period if rdb.grace_period is not None else 2 * rdb.heartbeat_interval
        return stale + sorted(trial_id for trial_id, first in since.items() if now - first > grace)


def claim_queued_trial(rdb: RDBStorage, trial_id: int, token: str) -> bool:
    """What ``rdb.set_trial_state_values(trial_id, RUNNING)`` does (Optuna 5.0.0: the trial's
    row locked, UpdateFinishedTrialError if it finished, False if it is not WAITING, else
    RUNNING from ``datetime.now()``), with ``token`` kept in the trial's system attributes in
    the same transaction. A trial RUNNING under ``token`` was claimed by an earlier attempt
    of this claim whose answer was lost: True."""
    from datetime import datetime

    models = rdb_models()
    with rdb_session(rdb) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        if trial.state != TrialState.WAITING:
            return _claim_token(session, trial_id) == token
        trial.state = TrialState.RUNNING
        trial.datetime_start = datetime.now()
        rdb_set_system_attr(rdb, session, trial_id, CLAIM_TOKEN, token)
    return True


def _claim_token(session: Any, trial_id: int) -> str | None:
    attr = rdb_models().TrialSystemAttributeModel
    stored = session.query(attr.value_json).filter(attr.trial_id == trial_id, attr.key == CLAIM_TOKEN).scalar()
    return None if stored is None else json.loads(stored)


def running_trials_without_heartbeat(rdb: RDBStorage, study_id: int) -> set[int]:
    """Ids of ``study_id``'s RUNNING trials that have no heartbeat recorded: one query."""
    from sqlalchemy import select

    models = rdb_models()
    trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    query = (
        select(trials.c.trial_id)
        .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING, beats.c.trial_id.is_(None))
    )
    with rdb_session(rdb) as session:
        return set(session.execute(query).scalars())


class OneReadPerTrial(DelegatingStorage):
    """While ``one_read()`` is active, ``get_all_trials`` answers every call from one read.

    Asking for a trial and sampling its parameters read the study's trials again and again:
    Optuna's samplers read them for each parameter sampled on its own (a repeated or
    conditional one), and on a database each read is several queries (the cached storage
    re-reads every running trial in full). A trial's sampling takes milliseconds, so one read
    serves it all (TPE leaves out the trial being sampled itself).

    The read belongs to the thread that opened ``one_read``: the worker's heartbeat thread
    shares this storage, and its sweep must neither see the trial's read nor find it gone
    half-way (with many workers a sweep overlapped an ask and failed on it).

    The next ``one_read`` of the same thread starts from the same read while no trial's state
    has changed through this storage since (a tell, a claim, a hand-back, a queued retry) and
    for at most ``KEEP_FOR`` seconds: the worker's ask and its sampling, milliseconds apart,
    share one read (the trial asked for is not in it, and TPE leaves it out anyway); the next
    ask, after the trial's tell, reads afresh.

    Optuna's ask reads the trial it has just created back from the database (seven
    statements): the trial a thread has just created without a template is answered from
    what the creation returned instead (nobody else has written to it yet).
    """

    KEEP_FOR = 1.0

    def __init__(self, inner: BaseStorage):
        super().__init__(inner)
        self._local = threading.local()  # .reads: study id -> trials, while one_read is active
        self._changes = 0  # trial state changes passed on, by any thread

    @contextlib.contextmanager
    def one_read(self) -> Iterator[None]:
        # (state changes seen, monotonic time, reads) when the last one's read began
        kept: tuple[int, float, dict[int, list[FrozenTrial]]] | None = getattr(self._local, "kept", None)
        if kept is None or kept[0] != self._changes or time.monotonic() - kept[1] > self.KEEP_FOR:
            kept = (self._changes, time.monotonic(), {})
        changes, started, reads = kept
        self._local.reads = reads
        try:
            yield
        finally:
            self._local.kept = (changes, started, reads)
            self._local.reads = None

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        self._changes += 1  # before: a read kept from now on is not reused
        return super().set_trial_state_values(trial_id, state, values)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None:  # a queued (or added) trial, not the one being asked for
            self._changes += 1
        trial_id = super().create_new_trial(study_id, template_trial)
        self._local.created = trial_id if template_trial is None else None
        return trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        if getattr(self._local, "created", None) == trial_id:
            self._local.created = None  # once: later reads see what was written since
            created = created_trial(self._inner, trial_id)
            if created is not None and created.state == TrialState.RUNNING:
                return copy.deepcopy(created)  # the caller's own copy (a Trial writes into it)
        return super().get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        reads: dict[int, list[FrozenTrial]] | None = getattr(self._local, "reads", None)
        if reads is None:
            return self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if study_id not in reads:
            reads[study_id] = self._inner.get_all_trials(study_id, deepcopy=False)
        trials = reads[study_id]
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else list(trials)


def one_read_of_the_study(storage: BaseStorage) -> contextlib.AbstractContextManager[None]:
    """``OneReadPerTrial.one_read`` of the layer under ``storage``'s wrappers, if it has one."""
    layer = unwrap(storage, OneReadPerTrial)
    return layer.one_read() if layer is not None else contextlib.nullcontext()


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

    ``max_age``: seconds for which a read is reused (0: read every time). What is kept is
    kept per study: a pruner reads the study it is given. ``shared``: what views of other
    ages have read (by study id), so that each finished trial is read once for all of them
    (the budget's view and the pruner's both read every trial that finishes).
    """

    def __init__(self, inner: BaseStorage, rdb: RDBStorage, *, max_age: float = 0.0,
                 shared: dict[int, _StudyReads] | None = None):
        super().__init__(inner)
        self._rdb = rdb  # the RDBStorage underneath, for the light query
        self.max_age = max_age
        self._studies: dict[int, _StudyReads] = {} if shared is None else shared
        self._last: dict[int, tuple[float, list[FrozenTrial]]] = {}  # this view's own: its age

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        reads = self._studies.setdefault(study_id, _StudyReads())
        read_at, trials = self._last.get(study_id, (-math.inf, []))
        if time.monotonic() - read_at >= self.max_age:
            trials = self._read(study_id, reads)
            self._last[study_id] = (time.monotonic(), trials)
        if states is not None:
            trials = [t for t in trials if t.state in states]
        if deepcopy:
            trials = copy.deepcopy(trials)
        return trials

    def _read(self, study_id: int, reads: _StudyReads) -> list[FrozenTrial]:
        changed = self._changed_trials(study_id, reads)
        # Trials seen unfinished before, and new ones, that have finished since: read in full
        # once (a second query, only when there are some). What finishes after the first
        # query stays pending and is read next time, unless the second query already saw it
        # finished (then it is not listed twice).
        done = {trial_id_of(t) for t in changed if t.state.is_finished()}
        if done:
            for trial in rdb_trials_by_id(self._rdb, study_id, done, FINISHED_STATES):
                reads.finished[trial_id_of(trial)] = trial
        unfinished = [t for t in changed if not t.state.is_finished() and trial_id_of(t) not in reads.finished]
        reads.pending = {trial_id_of(t) for t in unfinished}
        reads.watermark = max([reads.watermark, *(trial_id_of(t) for t in changed)])
        return sorted([*reads.finished.values(), *unfinished], key=lambda t: t.number)

    def _changed_trials(self, study_id: int, reads: _StudyReads) -> list[FrozenTrial]:
        """Unfinished trials, those seen unfinished before and new ones, light (state and
        system attributes only): one query, without the ORM (its objects cost more than the
        query)."""
        # Optuna's ORM models are internal; tests/storage/test_storage_proxy.py checks this
        # against the full read so an Optuna upgrade that changes them fails loudly.
        from sqlalchemy import or_, select

        models = rdb_models()
        trials, attrs = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
        which = [trials.c.state.in_((TrialState.RUNNING, TrialState.WAITING)),
                 trials.c.trial_id > reads.watermark]
        if reads.pending:
            which.append(trials.c.trial_id.in_(reads.pending))
        query = (
            select(trials.c.trial_id, trials.c.number, trials.c.state, trials.c.datetime_start,
                   attrs.c.key, attrs.c.value_json)
            .select_from(trials.outerjoin(attrs, attrs.c.trial_id == trials.c.trial_id))
            .where(trials.c.study_id == study_id, or_(*which))
        )
        with rdb_session(self._rdb) as session:
            rows = session.execute(query).all()
        light: dict[int, FrozenTrial] = {}
        for trial_id, number, state, started, key, value in rows:
            if trial_id not in light:
                light[trial_id] = _light_trial(trial_id, number, state, started)
            if key is not None:
                light[trial_id].system_attrs[key] = json.loads(value)
        return list(light.values())


@dataclass
class _StudyReads:
    """What a PrunerView has read of one study."""

    finished: dict[int, FrozenTrial] = field(default_factory=dict)  # by trial id: they never change
    pending: set[int] = field(default_factory=set)  # ids seen unfinished
    watermark: int = -1  # highest trial id seen


def _light_trial(trial_id: int, number: int, state: TrialState, started: datetime | None) -> FrozenTrial:
    return FrozenTrial(
        number=number,
        state=state,
        value=None,
        values=None,
        datetime_start=started,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=trial_id,
    )


def pruner_storage(storage: BaseStorage, *, max_age: float = 0.0,
                   shared: dict[int, _StudyReads] | None = None) -> BaseStorage:
    """A PrunerView of ``storage`` when it is a database (with the same reconnect policy);
    ``storage`` itself otherwise (the journal store replays only new log lines: cheap).
    ``shared`` as for PrunerView."""
    rdb = rdb_backend(storage)
    if rdb is None:
        return storage
    view = PrunerView(storage, rdb, max_age=max_age, shared=shared)
    if isinstance(storage, ReconnectingStorage):
        return ReconnectingStorage(view, storage.display, give_up_after=storage.give_up_after,
                                   first_wait=storage.first_wait, max_wait=storage.max_wait)
    return view


_light_studies: weakref.WeakKeyDictionary[Study, dict[float, Study]] = weakref.WeakKeyDictionary()
_light_reads: weakref.WeakKeyDictionary[Study, dict[int, _StudyReads]] = weakref.WeakKeyDictionary()


def light_study(study: Study, *, max_age: float = 0.0) -> Study:
    """``study`` over ``pruner_storage``: as the pruner (every epoch) and the budget check
    (every trial) read it; ``max_age`` as for PrunerView. One per study object and age, so
    that what the view has read is kept, and the views of one study object share the
    finished trials they have read (each is read once, not once per age)."""
    views = _light_studies.setdefault(study, {})
    if max_age not in views:
        storage = pruner_storage(storage_of(study), max_age=max_age,
                                 shared=_light_reads.setdefault(study, {}))
        if storage is storage_of(study):  # nothing to save on this storage
            return study
        import optuna

        views[max_age] = optuna.Study(study_name=study.study_name, storage=storage,
                                      sampler=study.sampler, pruner=study.pruner)
    return views[max_age]


def rdb_backend(storage: BaseStorage) -> RDBStorage | None:
    """The RDBStorage under ``storage``'s wrappers, or None (journal and others)."""
    from optuna.storages import RDBStorage

    return unwrap(storage, RDBStorage)
