"""Every use hpo makes of Optuna's private names, each behind one small function.

Optuna has no public way to do some of what hpo needs: a trial's storage key, a study's
storage, a trial's own copy of itself (which ``report`` and ``set_user_attr`` keep up to
date), several writes in one transaction or one journal append, the heartbeat bookkeeping of
ask/tell workers, a light query of the trials table, a new trial created in one round trip
(``OneTripTrialCreation``), a tell without its read-back, a queued trial's parameters. Each
function below says which Optuna version its body was checked against (in the installed
source) and the public behaviour it mirrors, so that an Optuna upgrade is checked here and
nowhere else. The tests named in the docstrings compare the results with Optuna's own calls;
tests/architecture/test_optuna_boundary.py keeps every other module of hpo off Optuna's
private names.

Optuna's private modules are imported inside the functions, as their callers did before
(or, for annotations only, under ``TYPE_CHECKING``): importing this module costs what
``optuna.storages`` costs.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import json
import random
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from optuna.storages import RDBStorage

# Optuna 5.0.0: the base class of storages with heartbeats (RDBStorage, _CachedStorage);
# ``optuna.storages.fail_stale_trials`` and ``Study.optimize`` test for it. hpo's storage
# wrappers derive from it so that Optuna sees a database's heartbeats through them.
from optuna.storages._heartbeat import BaseHeartbeat

if TYPE_CHECKING:
    from optuna import Study

    # Optuna 5.0.0, for hpo's annotations: the protocol of artifact stores
    # (FileSystemArtifactStore, Boto3ArtifactStore, ...), public only as the type of
    # ``upload_artifact``'s store.
    from optuna.artifacts._protocol import ArtifactStore as ArtifactStore
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage, JournalStorage

    # Optuna 5.0.0, for hpo's annotations: what ``BaseStorage.get_all_studies`` returns.
    from optuna.study._frozen import FrozenStudy as FrozenStudy
    from optuna.trial import FrozenTrial, Trial, TrialState
    from sqlalchemy.orm import Session

_Layer = TypeVar("_Layer")

__all__ = [
    "BaseHeartbeat",
    "HeartbeatForwarding",
    "cached_frozen_trial",
    "cached_storage",
    "created_trial",
    "inner_layer",
    "JournalBatch",
    "OneTripTrialCreation",
    "journal_batch",
    "journal_batches",
    "latest_trial",
    "queued_params",
    "rdb_models",
    "rdb_session",
    "check_schema_version",
    "rdb_set_intermediate_value",
    "rdb_set_param",
    "rdb_set_system_attr",
    "rdb_set_user_attr",
    "rdb_trials_by_id",
    "seed_sampler_rng",
    "set_trial_system_attr",
    "stale_trial_ids",
    "storage_of",
    "study_id_of",
    "tell",
    "trial_id_of",
    "trial_storage",
    "trial_start_writes",
    "trial_storage_as",
    "unwrap",
]


class HeartbeatForwarding(BaseHeartbeat):
    """BaseHeartbeat's methods for a storage wrapper, each forwarded through the wrapper's
    ``_call`` (``__getattr__`` would not do: they are defined on the base class).
    ``get_heartbeat_interval`` is left to the wrapper itself (it answers None for storages
    without heartbeats).

    Optuna 5.0.0: BaseHeartbeat's abstract methods (storages/_heartbeat.py)."""

    @abc.abstractmethod
    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``name(*args, **kwargs)`` of the storage under the wrapper."""

    def record_heartbeat(self, trial_id: int) -> None:
        self._call("record_heartbeat", trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.heartbeat_stale_trial_ids(study_id)

    def heartbeat_stale_trial_ids(self, study_id: int) -> list[int]:
        """What ``_get_stale_trial_ids`` answers (``stale_trial_ids`` and Optuna's
        ``fail_stale_trials`` ask it): the storage underneath's stale trials; a wrapper may
        add those it knows of."""
        return self._call("_get_stale_trial_ids", study_id)

    def get_heartbeat_stale_trial_callback(self) -> Callable[[Study, FrozenTrial], None] | None:
        return self._call("get_heartbeat_stale_trial_callback")


# --- Studies and trials --------------------------------------------------------------------

def trial_id_of(trial: Trial | FrozenTrial) -> int:
    """The storage's key of ``trial`` (an ``optuna.Trial`` or a ``FrozenTrial``): what every
    ``BaseStorage.*trial*`` method takes. ``trial.number`` is unique within a study only.

    Optuna 5.0.0: ``Trial.__init__`` and ``FrozenTrial.__init__`` keep it as ``_trial_id``
    (trial/_trial.py, trial/_frozen.py); Optuna's own callers (``Study.tell``,
    ``fail_stale_trials``) read it there."""
    return trial._trial_id


def study_id_of(study: Study | FrozenStudy) -> int:
    """The storage's key of ``study`` (an ``optuna.Study`` or a ``FrozenStudy`` from
    ``get_all_studies``): what ``BaseStorage.get_all_trials`` and kin take.

    Optuna 5.0.0: kept as ``_study_id`` (study/study.py, study/_frozen.py); the public way,
    ``storage.get_study_id_from_name(study.study_name)``, costs a query."""
    return study._study_id


def storage_of(study: Study) -> BaseStorage:
    """The storage ``study`` reads and writes: what was passed to ``load_study`` /
    ``create_study`` (an RDBStorage or a URL comes back wrapped in ``_CachedStorage``).

    Optuna 5.0.0: ``Study.__init__`` keeps ``storages.get_storage(storage)`` as ``_storage``;
    ``Trial.__init__`` starts from it too."""
    return study._storage


def every_trial(study: Study) -> list[FrozenTrial]:
    """Every trial of ``study``, not copied, even where ``study`` is the Hyperband pruner's
    view of one bracket, whose ``get_trials`` leaves the other brackets' trials out (what a
    sampler that must avoid every trial's parameters is handed).

    Optuna 5.0.0: the bracket study (pruners/_hyperband.py) keeps the study's ``_storage``
    and ``_study_id``; Optuna's own GridSampler reads the storage this way for this reason."""
    return study._storage.get_all_trials(study._study_id, deepcopy=False)


def trial_storage(trial: Trial) -> BaseStorage:
    """The storage ``trial``'s own methods (``suggest_*``, ``report``, ``set_user_attr``)
    call: ``storage_of(trial.study)`` unless ``trial_storage_as`` replaced it.

    Optuna 5.0.0: ``Trial.storage``, set in ``Trial.__init__``; undocumented."""
    return trial.storage


@contextlib.contextmanager
def trial_storage_as(trial: Trial, storage: BaseStorage) -> Iterator[None]:
    """While active, ``trial``'s own methods call ``storage`` instead of its study's storage
    (reads through the study are unchanged).

    Optuna 5.0.0: every ``Trial`` method goes through ``self.storage`` (trial/_trial.py), so
    replacing that attribute redirects them; ``trial_storage`` reads it back."""
    original = trial.storage
    trial.storage = storage
    try:
        yield
    finally:
        trial.storage = original


def cached_frozen_trial(trial: Trial) -> FrozenTrial:
    """``trial``'s own copy of itself, a FrozenTrial: what ``Trial.params``, ``user_attrs``
    and ``should_prune`` read. Whoever writes to the trial around ``Trial``'s methods updates
    it as they do (``report`` sets ``intermediate_values[step]``, ``set_user_attr`` sets
    ``user_attrs[key]``), so that the trial reads what was written without a storage read.

    Optuna 5.0.0: ``Trial._cached_frozen_trial``, read once in ``Trial.__init__``."""
    return trial._cached_frozen_trial


def latest_trial(trial: Trial) -> FrozenTrial:
    """The FrozenTrial that ``Trial.should_prune`` hands the pruner: a shallow copy of
    ``cached_frozen_trial(trial)`` whose system attributes are read from the storage only if
    the pruner looks at them.

    Optuna 5.0.0: ``Trial._get_latest_trial`` (trial/_trial.py), called by ``should_prune``."""
    return trial._get_latest_trial()


def tell(study: Study, trial: Trial, values: float | Sequence[float] | None = None, *,
         state: TrialState | None = None) -> None:
    """``study.tell(trial, values, state=state)``, without reading the finished trial back.

    Optuna 5.0.0: ``Study.tell`` is ``_tell_with_warning(study, trial, values, state,
    skip_if_finished)`` (study/_tell.py), then ``copy.deepcopy(_get_frozen_trial(study,
    trial))`` for its return value: the whole trial read again from the database (a
    transaction of six statements) for a value hpo's callers never use. The checks, the
    sampler's ``after_trial`` and the state change are Optuna's own.
    tests/storage/test_read_reuse.py compares the stored trial with ``Study.tell``'s."""
    from optuna.study._tell import _tell_with_warning

    _tell_with_warning(study=study, trial=trial, value_or_values=values, state=state, skip_if_finished=False)


def queued_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The parameters a queued trial (``Study.enqueue_trial``: a user's, or hpo's retry) was
    queued with, which its ``suggest_*`` calls return; None for a trial that was not queued
    (its sampler chooses them). A trial taken from the queue has them here before any is
    written as a parameter.

    Optuna 5.0.0: ``Study.enqueue_trial`` keeps them in the system attribute
    ``fixed_params``, which ``Trial.__init__`` reads (trial/_trial.py) and the grid sampler
    tests for (samplers/_grid.py)."""
    fixed = trial.system_attrs.get(_OPTUNA_FIXED_PARAMS)
    return dict(fixed) if isinstance(fixed, dict) else None


# Optuna 5.0.0's own system attribute key (Study.enqueue_trial), not one of hpo's (those are
# declared in hpo.study.attrs).
_OPTUNA_FIXED_PARAMS = "fixed_params"


def set_trial_system_attr(study: Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Write a system attribute of ``trial`` from inside a sampler, which is handed the
    study and a FrozenTrial (no ``Trial`` with its ``set_system_attr``) and must write before
    the trial's parameters are all suggested (hpo.spec.unique_random marks its choice).

    Optuna 5.0.0: ``GridSampler.before_trial`` (samplers/_grid.py) writes its ``grid_id``
    this way, ``study._storage.set_trial_system_attr(trial._trial_id, ...)``; the Hyperband
    pruner's per-bracket study keeps the study's ``_storage``."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def seed_sampler_rng(sampler: Any, seed: int | None) -> None:
    """Seed the random state ``sampler`` (a RandomSampler or GridSampler) draws from with
    ``seed`` (None: fresh entropy), leaving what its constructor did with its own seed alone:
    the grid's order is shuffled with the spec's seed, the pick among unvisited points with
    this one (hpo.spec.strategies' shared grid).

    Optuna 5.0.0: both keep a ``LazyRandomState`` as ``_rng`` (samplers/_lazy_random_state.py)
    and draw from ``_rng.rng``, a ``numpy.random.RandomState``; the public ``reseed_rng()``
    does ``_rng.rng.seed()``, this the same with a seed."""
    sampler._rng.rng.seed(seed)


# --- Heartbeats ----------------------------------------------------------------------------

def stale_trial_ids(storage: BaseHeartbeat, study_id: int) -> list[int]:
    """Ids of ``study_id``'s RUNNING trials whose last heartbeat is older than the storage's
    grace period (2 x the heartbeat interval if unset); ``storage`` must have heartbeats
    (``get_heartbeat_interval()`` not None). Called through hpo's wrappers, so that the
    reconnecting layer retries it.

    Optuna 5.0.0: ``BaseHeartbeat._get_stale_trial_ids``, which
    ``optuna.storages.fail_stale_trials`` calls before failing those trials."""
    return storage._get_stale_trial_ids(study_id)


# --- The layers of a storage ---------------------------------------------------------------

def cached_storage(rdb: RDBStorage) -> BaseStorage:
    """``rdb`` (an RDBStorage) as ``optuna.load_study(storage=rdb)`` would wrap it: the cache
    that keeps finished trials in memory and re-reads only unfinished ones.

    Optuna 5.0.0: ``optuna.storages.get_storage`` wraps an RDBStorage in ``_CachedStorage``."""
    from optuna.storages import _CachedStorage

    return _CachedStorage(rdb)


def created_trial(storage: BaseStorage, trial_id: int) -> FrozenTrial | None:
    """What ``storage``, Optuna's cache, kept of a trial it has just created (the FrozenTrial
    the database returned for the new row: number, RUNNING, start time, nothing else yet);
    None for another storage or a trial it does not hold.

    Optuna 5.0.0: ``_CachedStorage.create_new_trial`` adds ``RDBStorage._create_new_trial``'s
    FrozenTrial to ``_studies[study_id].trials[number]``, found through
    ``_trial_id_to_study_id_and_number``; its ``get_trial`` reads running trials afresh."""
    from optuna.storages import _CachedStorage

    if not isinstance(storage, _CachedStorage):
        return None
    with storage._lock:
        where = storage._trial_id_to_study_id_and_number.get(trial_id)
        return None if where is None else storage._studies[where[0]].trials.get(where[1])


def inner_layer(storage: BaseStorage) -> BaseStorage | None:
    """The storage directly under ``storage``, or None: hpo's wrappers
    (``hpo.storage.proxies.DelegatingStorage``) name theirs ``inner``; Optuna's cache keeps
    its RDBStorage as ``_backend``. Optuna's other storages wrap none.

    Optuna 5.0.0: ``_CachedStorage.__init__(backend)`` keeps ``self._backend = backend``."""
    from optuna.storages import _CachedStorage

    if isinstance(storage, _CachedStorage):
        return storage._backend
    return getattr(storage, "inner", None)


def unwrap(storage: BaseStorage, kind: type[_Layer]) -> _Layer | None:
    """The first layer of ``storage`` (itself included) that is a ``kind``, going down
    through hpo's wrappers and Optuna's cache (``inner_layer``); None if there is none.
    A few attribute reads: cheap enough for every write."""
    layer: BaseStorage | None = storage
    while layer is not None:
        if isinstance(layer, kind):
            return layer
        layer = inner_layer(layer)
    return None


# --- RDBStorage ----------------------------------------------------------------------------

def rdb_models() -> ModuleType:
    """The module of RDBStorage's SQLAlchemy models (``TrialModel``, ``TrialParamModel``,
    ``TrialUserAttributeModel``, ...), for queries and writes Optuna has no call for.

    Optuna 5.0.0: ``optuna.storages._rdb.models``, schema version v3.2.0.a; the tests of
    hpo.storage.proxies and hpo.storage.writes compare hpo's queries with Optuna's calls."""
    from optuna.storages._rdb import models

    return models


def rdb_session(rdb: RDBStorage, ignore_integrity_error: bool = False) -> contextlib.AbstractContextManager[Session]:
    """A session of ``rdb``'s database as each RDBStorage method opens one: committed when
    the block ends; rolled back on an error, SQLAlchemy's raised as StorageInternalError
    (an IntegrityError ignored with ``ignore_integrity_error``).

    Optuna 5.0.0: ``optuna.storages._rdb.storage._create_scoped_session(rdb.scoped_session,
    ignore_integrity_error)``."""
    from optuna.storages._rdb.storage import _create_scoped_session

    return _create_scoped_session(rdb.scoped_session, ignore_integrity_error)


def check_schema_version(rdb: RDBStorage) -> None:
    """What ``RDBStorage(url)`` checks unless ``skip_compatibility_check`` (Optuna 5.0.0:
    ``_VersionManager.check_table_schema_compatibility``, the same RuntimeError), with one
    connection at a time. Optuna's own check reads the version row in a session and, that
    transaction still open, the alembic revision on a second connection: behind a pooler in
    transaction mode, as many workers opening their storage at once as the pool has server
    connections would each hold one and wait for another, until PgBouncer's
    ``query_wait_timeout`` (120 s) fails them all. Checked by
    tests/storage/test_pgbouncer.py."""
    import optuna
    from optuna.storages._rdb import models

    manager = rdb._version_manager
    current = manager.get_current_version()
    if current == manager.get_head_version():
        return
    with rdb_session(rdb) as session:
        info = models.VersionInfoModel.find(session)
        library = info.library_version if info is not None else "unknown"
    if current in manager.get_all_versions():
        advice = "Please execute `$ optuna storage upgrade --storage $STORAGE_URL` for upgrading the storage."
    else:
        advice = "Please try updating optuna to the latest version by `$ pip install -U optuna`."
    raise RuntimeError(f"The runtime optuna version {optuna.__version__} is no longer compatible with the "
                       f"table schema (set up by optuna {library}). {advice}")


def rdb_trials_by_id(rdb: RDBStorage, study_id: int, trial_ids: set[int],
                     states: Container[TrialState] | None) -> list[FrozenTrial]:
    """The FrozenTrials of ``study_id`` with these ids (non-empty) and one of ``states``,
    read in full (params, values, attributes, intermediate values) in one go, as
    ``get_all_trials`` reads them.

    Optuna 5.0.0: ``RDBStorage._get_trials(study_id, states, included_trial_ids,
    trial_id_greater_than)`` returns the trials with an id above the last argument or among
    the included ones: with ``max(trial_ids)`` there, exactly these."""
    return rdb._get_trials(study_id, states, trial_ids, max(trial_ids))


def rdb_set_param(rdb: RDBStorage, session: Session, trial_id: int, name: str, value: float,
                  distribution: BaseDistribution) -> None:
    """``RDBStorage.set_trial_param`` inside ``session`` (committed with it): the same checks
    (trial updatable, distribution compatible with the study's earlier ones).

    Optuna 5.0.0: ``RDBStorage._set_trial_param_without_commit``."""
    rdb._set_trial_param_without_commit(session, trial_id, name, value, distribution)


def rdb_set_intermediate_value(rdb: RDBStorage, session: Session, trial_id: int, step: int,
                               value: float) -> None:
    """``RDBStorage.set_trial_intermediate_value`` inside ``session`` (committed with it).

    Optuna 5.0.0: ``RDBStorage._set_trial_intermediate_value_without_commit``."""
    rdb._set_trial_intermediate_value_without_commit(session, trial_id, step, value)


def rdb_set_system_attr(rdb: RDBStorage, session: Session, trial_id: int, key: str, value: Any) -> None:
    """``RDBStorage.set_trial_system_attr`` inside ``session`` (committed with it).

    Optuna 5.0.0: ``RDBStorage._set_trial_attr_without_commit`` with
    ``models.TrialSystemAttributeModel``."""
    rdb._set_trial_attr_without_commit(session, rdb_models().TrialSystemAttributeModel, trial_id, key, value)


def rdb_set_user_attr(rdb: RDBStorage, session: Session, trial_id: int, key: str, value: Any) -> None:
    """``RDBStorage.set_trial_user_attr`` inside ``session`` (committed with it).

    Optuna 5.0.0: ``RDBStorage._set_trial_attr_without_commit`` with
    ``models.TrialUserAttributeModel``."""
    rdb._set_trial_attr_without_commit(session, rdb_models().TrialUserAttributeModel, trial_id, key, value)


# --- Creating trials in one round trip -----------------------------------------------------

class _StartWrites(threading.local):
    """What the next trial this thread creates is created with (``trial_start_writes``), and
    the id of the last trial created with it."""

    user_attrs: dict[str, Any] | None = None
    heartbeat: bool = False
    created: int | None = None


class OneTripTrialCreation(RDBStorage):
    """An RDBStorage that creates a new trial (no template: what ``Study.ask`` creates) on
    PostgreSQL with psycopg 3 in one round trip to the database, instead of five.

    Optuna 5.0.0: ``RDBStorage._create_new_trial(study_id, None)`` (storages/_rdb/storage.py),
    which ``_CachedStorage.create_new_trial`` calls (and keeps the FrozenTrial it returns),
    takes the study's row lock (``SELECT ... FROM studies ... FOR UPDATE``), inserts the trial,
    counts the study's earlier trials for its number and updates it, and commits: five round
    trips with the lock held over four of them. Every worker's ask waits for that lock, and
    its holder waits for a CPU between its statements: with 64 workers on 2 cores the lock
    was waited for 206 ms per trial on average. Here the same statements run as one
    multi-statement query (PostgreSQL runs it as one implicit transaction): the lock is held
    for the server's own few statements only. Each statement of a multi-statement query takes
    a new snapshot (READ COMMITTED), so the count, after the lock statement, sees every trial
    committed by the lock's earlier holders: the numbers stay unique and consecutive, also
    with Optuna's own creations (queued trials, other processes) beside these, which take
    the same lock. The FrozenTrial returned is Optuna's (number, RUNNING, the start time as
    Optuna's model reads it back), with the user attributes of ``trial_start_writes``.

    A template trial (``enqueue_trial``, ``add_trial``), another database or driver (psycopg2
    has no multi-statement results) goes to Optuna's method. Like Optuna's, a creation that
    fails inside the database is tried again up to five times after a random pause of up to
    2 s (deadlocks), then raised as StorageInternalError. Checked by
    tests/storage/test_trial_creation.py against Optuna's own call."""

    MAX_TRIES = 5  # Optuna 5.0.0's MAX_RETRIES in _create_new_trial

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_writes = _StartWrites()

    def __setstate__(self, state: dict[Any, Any]) -> None:  # unpickled: a thread-local of its own
        super().__setstate__(state)
        self._start_writes = _StartWrites()

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if template_trial is not None or not self._in_one_trip():
            return super()._create_new_trial(study_id, template_trial)
        from optuna.exceptions import StorageInternalError

        for tries in range(1, self.MAX_TRIES + 1):
            try:
                return self._create_in_one_trip(study_id)
            except StorageInternalError:
                if tries == self.MAX_TRIES:
                    raise
                time.sleep(random.random() * 2.0)
        raise AssertionError("unreachable")

    def _in_one_trip(self) -> bool:
        return self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg"

    def _create_in_one_trip(self, study_id: int) -> FrozenTrial:
        import sqlalchemy.exc
        from optuna.exceptions import StorageInternalError
        from optuna.storages._rdb.models import NOT_FOUND_MSG
        from optuna.trial import FrozenTrial, TrialState

        writes = self._start_writes
        attrs, heartbeat = dict(writes.user_attrs or {}), writes.heartbeat
        # Optuna's model stores datetime.now() as naive UTC and reads it back as local time.
        utc = datetime.now().astimezone(UTC).replace(tzinfo=None)
        try:
            # Autocommit: the driver sends no BEGIN, and the server commits the query's
            # implicit transaction at its end (or rolls all of it back on an error).
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                query = _one_trip_creation(connection.connection.driver_connection, study_id, utc, attrs, heartbeat)
                result = connection.exec_driver_sql(query)
                cursor = result.cursor  # the driver's: the lock statement's result, then the insert's
                row = cursor.fetchone() if cursor.nextset() else None
                result.close()
        except sqlalchemy.exc.SQLAlchemyError as exc:  # as Optuna's _create_scoped_session raises it
            raise StorageInternalError(f"An exception is raised during the commit. {exc!r}") from exc
        if row is None:
            raise KeyError(NOT_FOUND_MSG)  # no such study: what find_or_raise_by_id raises
        trial_id, number = row
        if attrs or heartbeat:
            writes.created = trial_id
        started = utc.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)
        return FrozenTrial(number=number, state=TrialState.RUNNING, value=None, values=None,
                           datetime_start=started, datetime_complete=None, params={}, distributions={},
                           user_attrs=attrs, system_attrs={}, intermediate_values={}, trial_id=trial_id)


def _one_trip_creation(driver_connection: Any, study_id: int, utc: datetime, attrs: dict[str, Any],
                       heartbeat: bool) -> str:
    """The statements of ``OneTripTrialCreation``: the lock, then one statement that inserts
    the trial (and its heartbeat, its user attributes) and returns its id and number. The
    values are quoted by psycopg for ``driver_connection`` (a multi-statement query takes no
    parameters): ``trial_start_writes`` hands it JSON of the worker's own making, ints and a
    time."""
    from psycopg import sql

    models = rdb_models()
    template = ("SELECT 1 FROM {studies} WHERE study_id = {study} FOR UPDATE;\n"
                "WITH created AS (INSERT INTO {trials} (number, study_id, state, datetime_start) "
                "SELECT (SELECT count(*) FROM {trials} WHERE study_id = {study}), study_id, "
                "CAST('RUNNING' AS {state}), {started} FROM {studies} WHERE study_id = {study} "
                "RETURNING trial_id, number)")
    if heartbeat:  # as RDBStorage.record_heartbeat inserts a trial's first one
        template += (", beat AS (INSERT INTO {beats} (trial_id, heartbeat) "
                     "SELECT trial_id, CURRENT_TIMESTAMP FROM created)")
    if attrs:  # as RDBStorage.set_trial_user_attr stores each (value_json: json.dumps)
        template += (", attrs AS (INSERT INTO {attrs} (trial_id, key, value_json) "
                     "SELECT trial_id, a.key, a.value_json FROM created, (VALUES {rows}) AS a(key, value_json))")
    template += " SELECT trial_id, number FROM created"
    rows = sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(key), sql.Literal(json.dumps(value)))
                              for key, value in attrs.items())
    query = sql.SQL(template).format(  # the template: the constants above, no input
        studies=sql.Identifier(models.StudyModel.__tablename__),
        trials=sql.Identifier(models.TrialModel.__tablename__),
        beats=sql.Identifier(models.TrialHeartbeatModel.__tablename__),
        attrs=sql.Identifier(models.TrialUserAttributeModel.__tablename__),
        state=sql.Identifier(models.TrialModel.__table__.c.state.type.name),
        study=sql.Literal(int(study_id)), started=sql.Literal(utc), rows=rows)
    return query.as_string(driver_connection)


@contextlib.contextmanager
def trial_start_writes(storage: BaseStorage, *, user_attrs: dict[str, Any],
                       heartbeat: bool) -> Iterator[Callable[[int], bool]]:
    """While active, a trial that this thread creates through ``storage`` in one trip
    (``OneTripTrialCreation``) is created with ``user_attrs`` and (``heartbeat``) its first
    heartbeat, in the same transaction: a worker's first writes to its trial then cost no
    transactions of their own. Yields a test: whether the trial of a given id was created
    so (False for a trial claimed from the queue, or created another way: its caller then
    writes them itself)."""
    layer = unwrap(storage, OneTripTrialCreation)
    if layer is None:
        yield lambda trial_id: False
        return
    writes = layer._start_writes
    writes.user_attrs, writes.heartbeat, writes.created = user_attrs, heartbeat, None
    try:
        yield lambda trial_id: writes.created == trial_id
    finally:
        writes.user_attrs, writes.heartbeat = None, False


# --- JournalStorage ------------------------------------------------------------------------

def journal_batches(journal: JournalStorage) -> bool:
    """Whether ``journal_batch`` can write to ``journal``: its log is a file under Optuna's
    file lock (``JournalFileBackend``, what hpo opens); another backend (Redis) is written
    one call per item.

    Optuna 5.0.0: ``JournalStorage._backend``; ``JournalFileBackend._lock``, the
    ``BaseJournalFileLock`` its ``append_logs`` holds while it appends."""
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import BaseJournalFileLock

    backend = journal._backend
    return isinstance(backend, JournalFileBackend) and isinstance(backend._lock, BaseJournalFileLock)


class JournalBatch:
    """Log lines for one trial, each replayed on a probe of the journal before it is kept, so
    that a line Optuna's own call would refuse raises that call's error here, before anything
    is written (``journal_batch`` then appends the lines kept before it).

    Optuna 5.0.0: ``JournalStorageReplayResult.apply_logs`` raises for a line of this worker
    that fails (trial missing or finished, a distribution that clashes with the study's);
    its steps for ``SET_TRIAL_PARAM``, ``SET_TRIAL_INTERMEDIATE_VALUE`` and
    ``SET_TRIAL_USER_ATTR`` replace ``_trials[trial_id]`` with a changed copy and only read the
    rest, so a shallow copy of the replay result with a dict of trials of its own replays them
    without touching the journal's. Fields: what Optuna's ``set_trial_*`` logs."""

    def __init__(self, journal: JournalStorage, trial_id: int):
        replayed = journal._replay_result
        self._probe = copy.copy(replayed)
        self._probe._trials = dict(replayed._trials)
        self._fields = {"worker_id": replayed.worker_id, "trial_id": trial_id}
        self.lines: list[dict[str, Any]] = []

    def add(self, operation: str, fields: dict[str, Any]) -> None:
        """Keep the line ``operation`` (a ``JournalOperation`` name) with ``fields``, or raise
        Optuna's error for it."""
        line = self._line(operation, fields)
        self._probe.apply_logs([line])
        self.lines.append(line)

    def _line(self, operation: str, fields: dict[str, Any]) -> dict[str, Any]:
        from optuna.storages.journal._storage import JournalOperation

        return {"op_code": JournalOperation[operation], **self._fields, **fields}


@contextlib.contextmanager
def journal_batch(journal: JournalStorage, trial_id: int) -> Iterator[JournalBatch]:
    """A ``JournalBatch`` for trial ``trial_id`` of ``journal`` (``journal_batches`` true),
    checked against the log as it stands while the file is locked: no other process appends
    between the check and this append, so what is checked is what every reader replays. The
    lines kept are appended in one go (one fsync) when the block ends, also when it raised
    (Optuna's calls before the failing one are stored), and the journal replays them, so that
    reads see the writes; a line refused is never written, so nothing replays it later.

    Optuna 5.0.0: each ``JournalStorage.set_trial_*`` takes ``_thread_lock``, appends its
    line with ``_backend.append_logs`` (which takes the file lock around the write) and
    ``_sync_with_backend``; here the file lock is taken first, around the sync and the
    append, and ``append_logs`` is handed a lock already held (under ``_thread_lock``, which
    every use of the backend by this JournalStorage holds). tests/storage/test_trial_writes.py
    compares the results with Optuna's calls."""
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import get_lock_file

    backend = journal._backend
    assert isinstance(backend, JournalFileBackend), "journal_batches(journal) is false"
    with journal._thread_lock:
        try:
            with get_lock_file(backend._lock):
                journal._sync_with_backend()
                batch = JournalBatch(journal, trial_id)
                try:
                    yield batch
                finally:
                    if batch.lines:
                        _append_holding_the_lock(backend, batch.lines)
        finally:
            journal._sync_with_backend()


class _LockHeld:
    """A ``BaseJournalFileLock`` stand-in for one this process holds already."""

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


def _append_holding_the_lock(backend: Any, lines: list[dict[str, Any]]) -> None:
    """``backend.append_logs(lines)`` while the caller holds ``backend``'s file lock (the lock is
    not re-entrant: taking it again would wait for its own holder)."""
    held = backend._lock
    backend._lock = _LockHeld()
    try:
        backend.append_logs(lines)
    finally:
        backend._lock = held
