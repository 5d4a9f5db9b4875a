"""Workers through PgBouncer in transaction pooling mode, as README advises past ~45 workers.

A transaction-mode pooler gives each transaction whichever server connection is free, so
nothing may outlive a transaction on a connection: no server-side prepared statements
(psycopg 3 prepares a statement it has run 5 times: DuplicatePreparedStatement), no session
SET, advisory locks or LISTEN. hpo uses none of them (Optuna's row locks, hpo's claim tokens
and heartbeats all live inside one transaction), and psycopg 3 is told never to prepare
(hpo.storage.urls). The tests start a real PgBouncer (tests/pgbouncer.py) in front of the
session's PostgreSQL and run hpo's real worker loop in stand-in worker processes that train
nothing (tests/storage/stand_in_worker.py), so that 64 of them fit on 2 cores.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import psycopg
import pytest
from optuna.trial import TrialState

from hpo.errors import StorageError
from hpo.spec import load_spec
from hpo.storage.urls import engine_kwargs, open_storage, resolve_storage
from hpo.study.attrs import ARTIFACT_STORE, FAIL_REASON, RETRY_OF, WORKER
from hpo.study.studies import create_study
from tests.pgbouncer import PgBouncer

ROOT = Path(__file__).resolve().parents[2]
OBSERVER = "hpo-test-observer"  # the application_name of the test's own server connections
LEARNING_RATES = [0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05]
SPEC = """\
name: {name}
objective: {{metric: val_accuracy, direction: maximize}}
budget: {{n_trials: {n_trials}, max_retries: 2, heartbeat_interval: {heartbeat}, heartbeat_grace_period: {grace}}}
sampler: {{name: grid, seed: 0}}
pruner: {{name: none}}
data: {{name: digits}}
model: {{name: mlp, n_layers: 1, width: 16}}
train: {{epochs: {epochs}, batch_size: 128}}
search:
  train.lr: {{choices: {lrs}}}
  model.width: {{choices: {widths}}}
"""


def grid(n_widths: int) -> set[tuple[float, int]]:
    return set(itertools.product(LEARNING_RATES, range(8, 8 + n_widths)))


def make_study(url: str, work: Path, name: str, *, n_widths: int, epochs: int) -> int:
    """A grid study of len(LEARNING_RATES) x ``n_widths`` points, budget = the whole grid,
    without artifacts (the stand-in trains no model to draw or save); returns the budget."""
    n_trials = len(LEARNING_RATES) * n_widths
    path = work / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, n_trials=n_trials, epochs=epochs, lrs=LEARNING_RATES,
                                heartbeat=HEARTBEAT, grace=GRACE,
                                widths=list(range(8, 8 + n_widths))))
    study, _ = create_study(load_spec(path), resolve_storage(url))
    study.set_user_attr(ARTIFACT_STORE, None)
    return n_trials


class Workers:
    """``n`` stand-in workers forked by one process (tests/storage/stand_in_worker.py), each
    claiming a host of its own (node-RANK), so that only heartbeats can tell the others that
    one died."""

    def __init__(self, url: str, study: str, work: Path, n: int, *, epoch_seconds: float) -> None:
        self.log_dir = work / f"{study}-workers"
        self.log_dir.mkdir()
        env = dict(os.environ, HPO_STORAGE=url, HPO_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.storage.stand_in_worker", study, "--workers", str(n),
             "--epoch-seconds", str(epoch_seconds), "--log-dir", str(self.log_dir)],
            env=env, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def is_mine(self, pid: int) -> bool:
        """Whether ``pid`` is one of the workers (a child of the forking process)."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid
        except (OSError, ValueError, IndexError):
            return False

    def wait(self, timeout: float) -> dict[int, int]:
        """Each rank's exit status (negative: the signal that killed it)."""
        try:
            output, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the workers ran past {timeout:g} s\n{self.logs()}") from None
        assert self.proc.returncode == 0, output + self.logs()
        codes = json.loads((self.log_dir / "exit-codes.json").read_text())
        return {int(rank): code for rank, code in codes.items()}

    def kill(self) -> None:
        """SIGKILL the forking process and every worker it forked."""
        children = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if self.is_mine(pid)]
        for pid in [self.proc.pid, *children]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
                         for path in sorted(self.log_dir.glob("worker-*.log")))


class ConnectionPeak:
    """Polls ``pg_stat_activity`` on the server itself (not through PgBouncer) every 50 ms:
    the most client backends seen at once in ``dbname``, the observers' own left out."""

    def __init__(self, server, dbname: str) -> None:
        self.server, self.dbname = server, dbname
        self.peak = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            conn = self.server.connect("postgres", application_name=OBSERVER)
            # Each query its own transaction: within one, pg_stat_activity is a snapshot (and
            # psycopg2's `with conn` opens one even in autocommit mode).
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    while not self._stop.wait(0.05):
                        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                    "AND backend_type = 'client backend' AND application_name <> %s",
                                    (self.dbname, OBSERVER))
                        self.peak = max(self.peak, cur.fetchone()[0])
                        self.samples += 1
            finally:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def observer_url(server, dbname: str) -> str:
    """The test's own setup and reads go straight to the server, named so that the
    connection count leaves them out."""
    return f"{server.url_for(dbname)}?application_name={OBSERVER}"


def observer_storage(server, dbname: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(observer_url(server, dbname))


@contextlib.contextmanager
def fresh_database(server) -> Iterator[str]:
    name = f"t_pgbouncer_{uuid.uuid4().hex[:8]}"
    server.create_database(name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):  # cleanup only: the whole server goes at the end of the session
            server.drop_database(name)


# --------------------------------------------------------------------------- the engine


def test_psycopg3_connections_never_prepare_statements_and_psycopg2_ones_are_left_alone():
    pg3 = engine_kwargs("postgresql://hpo:secret@db:6432/hpo")
    assert pg3["connect_args"] == {"connect_timeout": 10, "prepare_threshold": None}
    assert engine_kwargs("postgresql+psycopg://hpo:secret@db/hpo")["connect_args"]["prepare_threshold"] is None
    # psycopg2 never prepares, and would refuse the option as an unknown libpq parameter.
    assert "prepare_threshold" not in engine_kwargs("postgresql+psycopg2://hpo:secret@db/hpo")["connect_args"]
    assert engine_kwargs("sqlite:///studies.db") == {}


def test_storages_open_and_work_through_a_pool_of_one_server_connection(postgres_server, postgres_url):
    # Two processes' connections, one server connection. Each psycopg 3 connection names its
    # first prepared statement "_pg3_0": if either prepared, the other's would clash. And
    # Optuna's schema check held a transaction open while it opened a second connection,
    # which waits for ever for the one server connection (here: until query_wait_timeout).
    optuna.storages.RDBStorage(postgres_url).engine.dispose()  # the tables, as `hpo study create` makes them
    with PgBouncer(postgres_server, pool_size=1, settings={"query_wait_timeout": 10}) as bouncer:
        url = bouncer.through(postgres_url)
        first, second = (open_storage(resolve_storage(url)) for _ in range(2))
        for i in range(12):  # well past psycopg's prepare_threshold of 5 executions
            first.create_new_study([optuna.study.StudyDirection.MINIMIZE], f"s{i}")
            second.get_all_studies()
        assert len(second.get_all_studies()) == 12
        for storage in (first, second):
            storage.engine.dispose()


def test_a_database_of_an_older_schema_is_still_refused_with_optunas_advice(postgres_server, postgres_url):
    optuna.storages.RDBStorage(postgres_url).engine.dispose()
    with postgres_server.connect(postgres_url.rsplit("/", 1)[1]) as conn, conn.cursor() as cur:
        cur.execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'")
    with pytest.raises(StorageError, match=r"is no longer compatible with the table schema \(set up by optuna "
                                           r".*\)\. Please execute `\$ optuna storage upgrade"):
        open_storage(resolve_storage(postgres_url))


def test_the_test_pgbouncer_pools_in_transaction_mode_and_writes_no_password(pgbouncer_server, pgbouncer_url,
                                                                             postgres_server):
    with psycopg.connect(pgbouncer_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    pools = [row for row in pgbouncer_server.show("POOLS") if row["database"] != "pgbouncer"]
    assert {row["pool_mode"] for row in pools} == {"transaction"}
    for path in pgbouncer_server.base_dir.iterdir():
        assert postgres_server.password not in path.read_text(errors="replace"), path


# --------------------------------------------------------------------------- workers


@pytest.mark.slow
@pytest.mark.subprocess
def test_four_workers_through_a_pool_of_two_finish_the_budget(postgres_server, tmp_path):
    # The report: with psycopg 3 preparing, every worker died with
    # DuplicatePreparedStatement ("internal error: StorageInternalError").
    with fresh_database(postgres_server) as dbname, PgBouncer(postgres_server, pool_size=2) as bouncer:
        url = bouncer.url_for(dbname)
        n_trials = make_study(observer_url(postgres_server, dbname), tmp_path, "four", n_widths=2, epochs=3)
        workers = Workers(url, "four", tmp_path, 4, epoch_seconds=0.05)
        codes = workers.wait(timeout=120)
        output = workers.logs()
        assert codes == dict.fromkeys(range(4), 0), output
        assert "DuplicatePreparedStatement" not in output and "Traceback" not in output, output
        storage = observer_storage(postgres_server, dbname)
        trials = optuna.load_study(study_name="four", storage=storage).get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert {(t.params["train.lr"], t.params["model.width"]) for t in finished} <= grid(2)
        assert len(finished) == n_trials
        storage.engine.dispose()


N_WORKERS = 64
N_WIDTHS = 16  # 8 x 16 = 128 grid points: two trials per worker
EPOCHS = 6
EPOCH_SECONDS = 2.0  # 12 s trials: the second wave still runs when the killed trial is swept
# Heartbeats every 2 s, a trial without one for 10 s is stale, sweeps every 5 s: the killed
# trial is swept at most 17 s after the kill. Much less, and on 2 busy cores a live worker's
# heartbeat, queued behind 127 other clients for one of 8 server connections, can be late.
HEARTBEAT, GRACE = 2, 10


@pytest.fixture(scope="module")
def pooled_run(postgres_server, pgbouncer_server, tmp_path_factory):
    """64 stand-in workers through the session's PgBouncer (a pool of 8 server connections)
    on a 128-point grid; one worker is killed with SIGKILL in the middle of its first trial."""
    work = tmp_path_factory.mktemp("pgbouncer-64")
    with fresh_database(postgres_server) as dbname:
        n_trials = make_study(observer_url(postgres_server, dbname), work, "many", n_widths=N_WIDTHS, epochs=EPOCHS)
        storage = observer_storage(postgres_server, dbname)
        study = optuna.load_study(study_name="many", storage=storage)
        started = time.monotonic()
        with ConnectionPeak(postgres_server, dbname) as peak:
            workers = Workers(pgbouncer_server.url_for(dbname), "many", work, N_WORKERS, epoch_seconds=EPOCH_SECONDS)
            try:
                victim = kill_a_training_worker(study, workers)
            except BaseException:
                workers.kill()
                raise
            codes = workers.wait(timeout=240)
        trials = study.get_trials(deepcopy=False)
        yield {"n_trials": n_trials, "trials": trials, "codes": codes, "victim": victim, "peak": peak,
               "logs": workers.logs(), "seconds": time.monotonic() - started}
        storage.engine.dispose()


def kill_a_training_worker(study: optuna.Study, workers: Workers) -> tuple[int, dict]:
    """SIGKILL the worker of the first trial seen training (an epoch reported);
    (the trial's number, its worker's identity: host, pid, rank)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get(WORKER) or {}
            if trial.intermediate_values and workers.is_mine(worker.get("pid", -1)):
                os.kill(worker["pid"], signal.SIGKILL)
                return trial.number, worker
        time.sleep(0.1)
    raise AssertionError("no trial was seen training")


def finished(trials) -> list:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.slow
@pytest.mark.subprocess
def test_64_workers_through_a_pool_of_8_finish_exactly_the_budget(pooled_run):
    run = pooled_run
    victim = run["victim"][1]["rank"]
    assert run["codes"] == {rank: -signal.SIGKILL if rank == victim else 0 for rank in range(N_WORKERS)}, run["logs"]
    assert len(finished(run["trials"])) == run["n_trials"]
    assert not [t.number for t in run["trials"] if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    numbers = [t.number for t in run["trials"]]
    assert sorted(numbers) == list(range(len(numbers)))  # none told twice, none skipped
    assert len({t._trial_id for t in run["trials"]}) == len(numbers)
    assert len({t.user_attrs[WORKER]["pid"] for t in finished(run["trials"])}) > N_WORKERS // 2


@pytest.mark.slow
@pytest.mark.subprocess
def test_64_workers_write_whole_grid_points_through_the_pool(pooled_run):
    # Each finished trial holds both of its parameters, a point of the grid: no write lost
    # or mixed up between the pooled connections. (Not "each point once": Optuna's grid
    # sampler picks among the points no trial has taken yet, and two of 64 workers asking at
    # the same moment can pick the same one; its docstring in hpo.spec.strategies says so.)
    trials = finished(pooled_run["trials"])
    assert all(set(t.params) == {"train.lr", "model.width"} for t in trials), [t.params for t in trials]
    assert {(t.params["train.lr"], t.params["model.width"]) for t in trials} <= grid(N_WIDTHS)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_killed_workers_trial_is_swept_by_heartbeat_through_the_pool_and_rerun(pooled_run):
    number, worker = pooled_run["victim"]
    trials = {t.number: t for t in pooled_run["trials"]}
    killed = trials[number]
    assert killed.state == TrialState.FAIL
    # Its worker claimed a host of its own: only the missing heartbeats could tell.
    assert worker["host"] == f"node-{worker['rank']}"
    assert killed.user_attrs[FAIL_REASON] == (
        f"worker process {worker['pid']} on {worker['host']} stopped sending heartbeats for over {GRACE} s")
    # Its retry ran it to the end (through the retries of the retry, should a busy moment
    # have delayed a live worker's heartbeats past the grace period too).
    (retry,) = [t for t in trials.values() if t.user_attrs.get(RETRY_OF) == number]
    while retry.state == TrialState.FAIL:
        (retry,) = [t for t in trials.values() if t.user_attrs.get(RETRY_OF) == retry.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs[WORKER]["pid"] != worker["pid"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_64_workers_never_hold_more_server_connections_than_the_pool(pooled_run, pgbouncer_server):
    peak = pooled_run["peak"]
    assert peak.error is None, peak.error
    assert peak.samples >= 100  # polled every 50 ms for the whole run
    assert 2 <= peak.peak <= pgbouncer_server.pool_size, (peak.peak, peak.samples)


@pytest.mark.slow
@pytest.mark.subprocess
def test_64_workers_log_no_errors_through_the_pool(pooled_run):
    output = pooled_run["logs"]
    for bad in ("Traceback", "Error", "heartbeat/sweep failed", "query_wait_timeout"):
        assert bad not in output, output
