"""Hundreds of ``hpo`` workers on one PostgreSQL study through PgBouncer (issue 16): finished
trials per second, p50/p99 of ``ask``, ``tell``, the prune check and the budget checks, and
the server connections they need, for 1, 16, 64 and 256 workers.

Every worker runs hpo's real loop (``hpo.worker.loop.run_worker``) with a stand-in trainer
that sleeps ``--epoch-seconds`` per epoch and reports each epoch (so a prune check per epoch);
no worker imports torch (each checks ``sys.modules`` at its end). The timings are taken
around hpo's own calls, which are left as they are: ``optuna.Study.ask`` and hpo's ``tell``
(``hpo.storage.optuna_internals.tell``: Optuna's ``Study.tell`` without its read-back),
the pruner's ``prune`` (wrapped on the pruner hpo builds), and the budget checks before
(``budget_state``) and after (``is_over_budget``, the trial number check) each ask.

The workers are forked from one launcher process that has imported everything (and frozen
its objects with ``gc.freeze``), so that they share its pages: a worker started on its own
holds ~45 MB of its own after its imports, which 256 times is more than this benchmark may
use. Each worker reports its memory (PSS and private) at its end; before each setting the
benchmark checks that the workers fit in ``--memory-mb`` (by the last setting's largest worker)
and runs as many as fit otherwise, saying so.

What separates "the service is the bottleneck" from "the cores are saturated": CPU seconds
per finished trial of the workers, of PostgreSQL and of PgBouncer; the server's own time per
trial (``pg_stat_database.active_time``) and its busiest statements (``pg_stat_statements``);
backends waiting on a lock (polled); time clients waited for a pooled server connection
(PgBouncer's ``total_wait_time``); and how busy the machine's cores were.

    uv run python -m benchmarks.many_workers                 # 1, 16, 64, 256 workers
    uv run python -m benchmarks.many_workers --workers 1,16  # a quicker look
    uv run python -m benchmarks.many_workers --tiny          # a smoke run (the test suite's)

It starts a throwaway PostgreSQL server (tests/postgres.py) and a transaction-mode PgBouncer
in front of it (tests/pgbouncer.py). Prints Markdown tables (and writes them with --output).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = """\
name: {name}
objective: {{metric: val_accuracy, direction: maximize}}
budget: {{n_trials: {n_trials}}}
pruner: {{name: median, n_startup_trials: 2}}
data: {{name: digits}}
model: {{name: mlp, n_layers: 1, width: 16}}
train: {{epochs: {epochs}, batch_size: 128}}
search:
  train.lr: {{low: 1.0e-4, high: 1.0e-1, log: true}}
  model.width: {{low: 8, high: 128, log: true}}
"""
TIMED = ("ask", "tell", "prune", "budget", "number_check")
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- the workers

def launcher(args: argparse.Namespace) -> None:
    """Import what a worker needs once, then fork ``args.workers`` workers and wait for them."""
    import gc

    import optuna

    from hpo.storage.optuna_internals import unwrap
    from hpo.storage.urls import open_storage, resolve_storage

    warm_up_worker()
    # The database's driver, dialect and Optuna's schema check (alembic) too; then no
    # connection is left open for the workers to inherit.
    rdb = unwrap(open_storage(resolve_storage(os.environ["HPO_STORAGE"])), optuna.storages.RDBStorage)
    assert rdb is not None, "the benchmark runs on PostgreSQL"
    rdb.engine.dispose()
    gc.collect()
    gc.freeze()  # the workers' collections then leave the shared objects' pages alone
    work = Path(args.work)
    pids = []
    for rank in range(args.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = worker(args, rank, work)
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    sys.exit(1 if any(codes) else 0)


def warm_up_worker() -> None:
    """One trial on a throwaway journal file: every module a trial loads is loaded before the
    fork, so that the workers share them."""
    from benchmarks.common import stand_in_trainer
    from hpo.spec import load_spec
    from hpo.storage.urls import resolve_storage
    from hpo.study.attrs import ARTIFACT_STORE as STORE_ATTR
    from hpo.study.studies import create_study
    from hpo.worker.loop import run_worker

    with tempfile.TemporaryDirectory() as tmp:
        spec, journal = Path(tmp) / "spec.yaml", resolve_storage(str(Path(tmp) / "warm-up.journal"))
        spec.write_text(SPEC.format(name="warm-up", n_trials=1, epochs=2))
        study, _ = create_study(load_spec(spec), journal)
        study.set_user_attr(STORE_ATTR, None)
        run_worker("warm-up", journal, device="cpu", trainer=stand_in_trainer(0.0))


def worker(args: argparse.Namespace, rank: int, work: Path) -> int:
    """One worker: hpo's loop with timings around its calls; writes what it measured."""
    from benchmarks.common import stand_in_trainer
    from hpo.storage.urls import resolve_storage
    from hpo.worker.loop import run_worker

    samples: dict[str, list[float]] = {key: [] for key in TIMED}
    _instrument(samples)
    at_fork = _own_memory_kb()
    (work / f"ready{rank}").touch()
    while not (work / "go").exists():
        time.sleep(0.02)
    cpu_at_go = _cpu_seconds()
    # --worker-timeout: no trial starts after it (the one running finishes), so that a setting
    # the machine cannot carry still ends with its finished trials measured.
    report = run_worker(args.study, resolve_storage(os.environ["HPO_STORAGE"]), rank=rank, device="cpu",
                        timeout=args.worker_timeout, trainer=stand_in_trainer(args.epoch_seconds))
    result = {"exit_code": report.exit_code, "trials": len(report.outcomes), "samples": samples,
              "cpu_seconds": _cpu_seconds() - cpu_at_go, "torch_loaded": "torch" in sys.modules,
              "memory_kb": _own_memory_kb(), "memory_at_fork_kb": at_fork}
    (work / f"result{rank}.json").write_text(json.dumps(result))
    return report.exit_code


def _instrument(samples: dict[str, list[float]]) -> None:
    """Time hpo's calls where they are made, without changing them."""
    import optuna

    import hpo.spec.strategies as strategies
    import hpo.storage.optuna_internals as internals
    import hpo.worker.loop as loop

    def timed(function: Any, key: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                samples[key].append(time.perf_counter() - started)
        return call

    optuna.Study.ask = timed(optuna.Study.ask, "ask")  # type: ignore[method-assign]
    # hpo's tell (Study.tell without its read-back), which its callers import when they call it.
    internals.tell = timed(internals.tell, "tell")
    loop.budget_state = timed(loop.budget_state, "budget")
    loop.is_over_budget = timed(loop.is_over_budget, "number_check")
    build_pruner = strategies.build_pruner

    def timed_pruner(*args: Any, **kwargs: Any) -> Any:
        pruner = build_pruner(*args, **kwargs)
        pruner.prune = timed(pruner.prune, "prune")  # the instance's own: what TrialReporter calls
        return pruner

    strategies.build_pruner = timed_pruner


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _own_memory_kb() -> dict[str, int]:
    """This process's memory: PSS (its share of shared pages), private (its own) and peak RSS."""
    memory = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Private_Clean", "Private_Dirty"):
                memory[key] = int(rest.split()[0])
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                memory["VmHWM"] = int(line.split()[1])
    return memory


# ---------------------------------------------------------------------------- observing the servers

def process_cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU of ``pid`` (and of its children: those reaped and those alive)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks: float = int(fields[11]) + int(fields[12])  # utime, stime
    if with_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped children
        from tests.postgres import _children_of

        ticks += sum(process_cpu_seconds(child) * CLOCK_TICK for child in _children_of(pid))
    return ticks / CLOCK_TICK


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def memory_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


@dataclass
class Poll:
    """What a thread sees of the servers while a setting runs, every ``interval`` seconds."""

    server: Any
    bouncer: Any
    database: str
    interval: float = 0.1
    peak_connections: int = 0
    peak_lock_waits: int = 0
    lock_wait_samples: list[int] = field(default_factory=list)
    peak_clients_waiting: int = 0
    low_memory: bool = False
    pooler_polls_missed: int = 0
    min_memory_mb: float = 2048

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poll:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = self.server.connect("postgres")  # directly on PostgreSQL, not through the pooler
        conn.autocommit = True
        ticks = 0
        try:
            with conn.cursor() as cur:
                while not self._stop.wait(self.interval):
                    cur.execute("SELECT count(*), count(*) FILTER (WHERE wait_event_type = 'Lock') "
                                "FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
                                (self.database,))
                    connections, lock_waits = cur.fetchone()
                    self.peak_connections = max(self.peak_connections, connections)
                    self.peak_lock_waits = max(self.peak_lock_waits, lock_waits)
                    self.lock_wait_samples.append(lock_waits)
                    ticks += 1
                    if self.bouncer is not None and ticks % 5 == 0:
                        self._poll_pooler()
                    if memory_available_mb() < self.min_memory_mb:
                        self.low_memory = True
        finally:
            conn.close()


    def _poll_pooler(self) -> None:
        import psycopg2  # type: ignore[import-untyped]

        try:  # a login to the admin console may time out on a saturated machine: skip that poll
            rows = self.bouncer.show("POOLS")
        except psycopg2.OperationalError:
            self.pooler_polls_missed += 1
            return
        waiting = sum(int(row["cl_waiting"]) for row in rows if row["database"] == self.database)
        self.peak_clients_waiting = max(self.peak_clients_waiting, waiting)


def server_counters(server: Any, bouncer: Any, database: str) -> dict[str, float]:
    """Cumulative counters read before and after a setting: their difference is its share."""
    conn = server.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT active_time, xact_commit FROM pg_stat_database WHERE datname = %s", (database,))
            active_ms, commits = cur.fetchone()
    finally:
        conn.close()
    counters = {"db_active_ms": float(active_ms or 0), "commits": float(commits),
                "postgres_cpu": process_cpu_seconds(server.pid, with_children=True),
                "pool_wait_us": 0.0, "pooler_cpu": 0.0, "logins": 0.0}
    if bouncer is not None:
        counters["logins"] = float(client_logins(bouncer, database))
        counters["pool_wait_us"] = float(sum(int(row["total_wait_time"]) for row in bouncer.show("STATS")
                                             if row["database"] == database))
        counters["pooler_cpu"] = process_cpu_seconds(bouncer._proc.pid)
    counters["busy_ticks"], counters["all_ticks"] = map(float, machine_busy_ticks())
    return counters


def client_logins(bouncer: Any, database: str) -> int:
    """Client logins to ``database`` PgBouncer has seen so far (a line each in its log): a worker
    that opens and closes connections pays a TCP and SCRAM handshake for each, on the
    pooler's single thread."""
    with contextlib.suppress(OSError), open(bouncer.log_path, errors="replace") as log:
        return sum("login attempt" in line and f"db={database} " in line for line in log)
    return 0


def top_statements(server: Any, database: str, limit: int) -> list[tuple[float, int, float, str]]:
    """(total ms, calls, ms per call, query) of the busiest statements since the last reset."""
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT total_exec_time, calls, mean_exec_time, query FROM pg_stat_statements "
                        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) "
                        "ORDER BY total_exec_time DESC LIMIT %s", (database, limit))
            return [(float(t), int(c), float(m), " ".join(q.split())) for t, c, m, q in cur.fetchall()]
    finally:
        conn.close()


def statement_calls(server: Any, database: str) -> int:
    """Statements the server ran in ``database`` since the last reset (pg_stat_statements;
    BEGIN and COMMIT included, the pooler's and the observers' own too: a few)."""
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)", (database,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def reset_statements(server: Any, database: str) -> None:
    conn = server.connect(database)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_statements_reset()")
    finally:
        conn.close()


# ---------------------------------------------------------------------------- one setting

@dataclass
class Setting:
    workers: int
    requested: int
    finished: int
    span: float
    timings: dict[str, list[float]]
    cpu_workers: float
    counters: dict[str, float]
    poll: Poll
    memory_kb: list[dict[str, int]]
    torch_loaded: int
    statements: list[tuple[float, int, float, str]]

    @property
    def rate(self) -> float:
        return self.finished / self.span

    def per_trial_ms(self, key: str, scale: float = 1000.0) -> float:
        return self.counters[key] * scale / self.finished


def run_setting(server: Any, bouncer: Any, database: str, url: str, n_workers: int, requested: int,
                args: argparse.Namespace, work: Path) -> Setting:
    import optuna

    from hpo.spec import load_spec
    from hpo.storage.urls import resolve_storage
    from hpo.study.attrs import ARTIFACT_STORE as STORE_ATTR
    from hpo.study.studies import create_study

    name = f"many-{n_workers}-{time.monotonic_ns()}"
    folder = work / name
    folder.mkdir()
    spec_path = folder / "spec.yaml"
    spec_path.write_text(SPEC.format(name=name, n_trials=n_workers * args.trials_per_worker, epochs=args.epochs))
    direct = server.url_for(database)
    study, _ = create_study(load_spec(spec_path), resolve_storage(direct))
    study.set_user_attr(STORE_ATTR, None)  # no pictures or checkpoints: they would time the disk
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, HPO_STORAGE=url, HPO_THREADS="1", PYTHONPATH=pythonpath)
    launcher_proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.many_workers", "--launcher", "--study", name, "--workers",
         str(n_workers), "--work", str(folder), "--epoch-seconds", str(args.epoch_seconds),
         "--worker-timeout", str(args.worker_timeout)],
        env=env, cwd=folder, start_new_session=True)
    try:
        _wait_ready(launcher_proc, folder, n_workers)
        reset_statements(server, database)
        before = server_counters(server, bouncer, database)
        with Poll(server, bouncer, database, min_memory_mb=args.min_free_mb) as poll:
            (folder / "go").touch()
            while launcher_proc.poll() is None:
                if poll.low_memory:
                    raise SystemExit(f"less than {args.min_free_mb} MB of memory left: stopped {n_workers} workers")
                time.sleep(0.2)
        after = server_counters(server, bouncer, database)
        statements = top_statements(server, database, args.statements)
        after["statements"] = float(statement_calls(server, database))
        before["statements"] = 0.0  # reset before the setting
    finally:
        if launcher_proc.poll() is None:
            os.killpg(launcher_proc.pid, 9)
            launcher_proc.wait()
    if launcher_proc.returncode:
        raise SystemExit(f"{n_workers} workers: the launcher exited with {launcher_proc.returncode}")
    results = [json.loads((folder / f"result{rank}.json").read_text()) for rank in range(n_workers)]
    storage = optuna.storages.RDBStorage(direct)
    trials = [t for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
              if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    storage.engine.dispose()
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    span = (max(ends) - min(starts)).total_seconds()
    timings = {key: [s for r in results for s in r["samples"][key]] for key in TIMED}
    return Setting(n_workers, requested, len(trials), span, timings, sum(r["cpu_seconds"] for r in results),
                   {key: after[key] - before[key] for key in after}, poll, [r["memory_kb"] for r in results],
                   sum(r["torch_loaded"] for r in results), statements)


def _wait_ready(proc: subprocess.Popen, folder: Path, n_workers: int) -> None:
    while sum(1 for _ in folder.glob("ready*")) < n_workers:
        if proc.poll() is not None:
            raise SystemExit(f"the launcher exited before its workers started: {proc.returncode}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------- the tables

def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def fits(requested: int, last: Setting | None, limit_mb: float) -> int:
    """How many workers fit in ``limit_mb``: what they share (the launcher's pages, counted
    once) and, for each, the largest private memory of the last setting's workers plus a fifth."""
    if last is None:
        return requested
    shared_mb = max(m["VmHWM"] for m in last.memory_kb) / 1024
    per_worker_mb = max(m["Private_Clean"] + m["Private_Dirty"] for m in last.memory_kb) / 1024 * 1.2
    return max(1, min(requested, int((limit_mb - shared_mb) / per_worker_mb)))


def tables(settings: list[Setting], args: argparse.Namespace, pool_size: int | None) -> str:
    from benchmarks.common import machine

    one = settings[0]
    one_connections = one.poll.peak_connections
    trial_seconds = args.epochs * args.epoch_seconds
    pooler = f"PgBouncer (transaction mode, {pool_size} server connections)" if pool_size else "no pooler"
    lines = [
        f"Workers on one PostgreSQL study through {pooler}: trials of {args.epochs} epochs x "
        f"{args.epoch_seconds:g} s (stand-in trainer, no torch), {args.trials_per_worker} trials per worker, "
        f"TPE + median rule (a check per epoch). Machine: {machine()}.",
        "",
        "| workers | trials/s | x 1 worker | ideal trials/s | ask p50/p99 (ms) | tell p50/p99 (ms) "
        "| prune check p50/p99 (ms) | budget p50/p99 (ms) | number check p50/p99 (ms) "
        "| server connections (peak) | x 1 worker |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in settings:
        cells = [f"{percentile(s.timings[k], 0.5) * 1000:.1f} / {percentile(s.timings[k], 0.99) * 1000:.1f}"
                 for k in TIMED]
        workers = str(s.workers) if s.workers == s.requested else f"{s.workers} (of {s.requested}: memory)"
        lines.append(f"| {workers} | {s.rate:.2f} | {s.rate / one.rate:.1f} | {s.workers / trial_seconds:.1f} | "
                     + " | ".join(cells)
                     + f" | {s.poll.peak_connections} | {s.poll.peak_connections / max(1, one_connections):.1f} |")
    lines += [
        "",
        "Where the time goes, per finished trial (CPU seconds from /proc and getrusage; the server's own "
        "time from pg_stat_database.active_time; pooled-connection waits from PgBouncer's total_wait_time; "
        "backends waiting on a lock polled from pg_stat_activity every 0.1 s):",
        "",
        "| workers | finished | CPU ms: workers | PostgreSQL | PgBouncer | DB active ms | statements | commits "
        "| client logins | pool wait ms | lock waits mean/peak | clients waiting (peak) | cores busy "
        "| worker PSS / private MB | torch loaded |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in settings:
        busy = s.counters["busy_ticks"] / s.counters["all_ticks"] if s.counters["all_ticks"] else 0.0
        pss = statistics.median(m["Pss"] for m in s.memory_kb) / 1024
        private = statistics.median(m["Private_Clean"] + m["Private_Dirty"] for m in s.memory_kb) / 1024
        waits = s.poll.lock_wait_samples or [0]
        lines.append(
            f"| {s.workers} | {s.finished} | {s.cpu_workers * 1000 / s.finished:.0f} "
            f"| {s.per_trial_ms('postgres_cpu'):.0f} | {s.per_trial_ms('pooler_cpu'):.0f} "
            f"| {s.per_trial_ms('db_active_ms', 1):.1f} | {s.counters['statements'] / s.finished:.0f} "
            f"| {s.counters['commits'] / s.finished:.0f} "
            f"| {s.counters['logins']:.0f} | {s.per_trial_ms('pool_wait_us', 0.001):.1f} "
            f"| {statistics.mean(waits):.1f} / {s.poll.peak_lock_waits} "
            f"| {s.poll.peak_clients_waiting} | {busy:.0%} | {pss:.0f} / {private:.0f} | {s.torch_loaded} |")
    last = settings[-1]
    if last.statements:
        lines += ["", f"Busiest statements with {last.workers} workers (pg_stat_statements):", "",
                  "| total ms | calls | ms per call | statement |", "|---:|---:|---:|---|"]
        for total, calls, mean, query in last.statements:
            lines.append(f"| {total:.0f} | {calls} | {mean:.2f} | `{query[:160].replace('|', '/')}` |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main

def run(args: argparse.Namespace) -> str:
    from tests.pgbouncer import PgBouncer
    from tests.postgres import PostgresServer

    counts = [int(n) for n in args.workers.split(",")]
    database = "bench"
    settings: list[Setting] = []
    pg_settings = {"shared_preload_libraries": "pg_stat_statements", "max_connections": 300}
    with PostgresServer(settings=pg_settings) as server, tempfile.TemporaryDirectory() as tmp:
        server.create_database(database)
        conn = server.connect(database)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION pg_stat_statements")
        conn.close()
        bouncer_context = (PgBouncer(server, pool_size=args.pool_size, max_client_conn=4 * max(counts) + 50)
                           if args.pool_size else contextlib.nullcontext())
        with bouncer_context as bouncer:
            url = bouncer.url_for(database) if bouncer is not None else server.url_for(database)
            for requested in counts:
                n = fits(requested, settings[-1] if settings else None, args.memory_mb)
                setting = run_setting(server, bouncer, database, url, n, requested, args, Path(tmp))
                settings.append(setting)
                print(tables(settings, args, args.pool_size), flush=True)  # so far: a long run shows its rows
    return tables(settings, args, args.pool_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="1 and 4 workers, short trials")
    parser.add_argument("--workers", default="1,16,64,256", help="comma-separated worker counts")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--epoch-seconds", type=float, default=0.5)
    parser.add_argument("--trials-per-worker", type=int, default=3)
    parser.add_argument("--worker-timeout", type=float, default=240,
                        help="seconds after which a worker starts no new trial (run_worker's timeout)")
    parser.add_argument("--pool-size", type=int, default=16,
                        help="PgBouncer's server connections (0: no pooler, straight to PostgreSQL)")
    parser.add_argument("--memory-mb", type=float, default=9000, help="what the workers together may use")
    parser.add_argument("--min-free-mb", type=float, default=2048,
                        help="stop when the machine has less memory available than this")
    parser.add_argument("--statements", type=int, default=8, help="busiest statements listed (largest setting)")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    # The launcher process this script starts:
    parser.add_argument("--launcher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--study", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.launcher:
        args.workers = int(args.workers)
        launcher(args)
        return
    if args.tiny:
        args.workers, args.epochs, args.epoch_seconds, args.trials_per_worker = "1,4", 3, 0.05, 2
    from benchmarks.common import write_table
    from hpo.study.studies import quiet_optuna

    quiet_optuna()
    write_table(run(args), args.output)


if __name__ == "__main__":
    main()
