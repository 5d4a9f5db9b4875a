"""``hpo worker --processes K`` and ``--gpus IDS [--per-gpu K]``: local worker processes on
one study, supervised by the parent.

Separate processes rather than threads: training holds the GIL between kernels, and a
process per worker keeps a crash in one trial from taking the others down. Each child
gets its own rank (so its sampler seed differs) and its share of the cores as ``--threads``
(the pool knows its size: hpo.worker.threads); the
storage URL reaches it through the environment, never on a command line that other
users of the machine could read.

With ``--gpus`` each child sees only its own GPU (``CUDA_VISIBLE_DEVICES``) and trains on
``cuda:0``: libraries that allocate on the "current" device (cuDNN workspaces, NCCL, a
stray ``.cuda()``) then cannot touch another worker's GPU.

The parent supervises. A child that ends on its own terms is left alone: 0 (the study's
budget is spent, or its own ``--n-trials``/``--timeout``), 1 (``budget.max_failed_trials``
reached, or the storage failed), 2 (a usage error: restarting cannot help), 130 and 143
(aborted by a second SIGINT or SIGTERM). A child killed by a signal (the OOM killer, a segfault in a CUDA library)
or ending with any other code is restarted, after a short backoff, at most
``max_restarts`` times per slot. A restarted child gets a fresh rank (``rank + slot +
restarts * slots``): with the same rank a seeded sampler would propose again the very
params its predecessor already ran.

SIGINT, SIGTERM and SIGHUP are forwarded to every child (SIGHUP as SIGTERM); the children
run in their own process groups, so a Ctrl-C on the terminal (which signals the terminal's
foreground process group: the parent's) reaches each child once, from the parent; each child
then checkpoints and hands back its trial and exits 0 (hpo.worker.signals). The parent waits
``stop_grace`` seconds and kills what is still running. A second signal is forwarded too:
the children abort, handing their trials back from the last saved checkpoint, and what still
runs ``ABORT_GRACE`` seconds later is killed; a third kills at once. It exits when every
child is done, after one report line per child.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpo.errors import UsageError
from hpo.storage.urls import ENV_VAR, StorageTarget
from hpo.worker.device import AUTO, check_device_name

if TYPE_CHECKING:
    from hpo.worker.progress import PoolProgress

#: Exit codes that a worker chooses (see the module docstring): never restarted.
FINAL_CODES = frozenset({0, 1, 2, 130, 143})
#: Seconds a child has to abort (hand its trial back and exit) after a second stop signal.
ABORT_GRACE = 5.0
DEFAULT_MAX_RESTARTS = 3
MAX_BACKOFF = 30.0


# --------------------------------------------------------------------------- planning


def cuda_device_count() -> int:
    """GPUs torch sees in this process (torch imported only when ``--gpus`` is used)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_gpus(text: str, device_count: Callable[[], int] | None = None) -> list[int]:
    """``--gpus`` as torch device indices: ``all`` or a comma-separated list like ``0,1,3``.

    Raises UsageError (exit 2) for malformed lists, repeated ids, and ids this machine
    does not have. ``device_count`` defaults to :func:`cuda_device_count` (looked up at
    call time, so tests can stub it)."""
    count = device_count or (lambda: cuda_device_count())
    text = text.strip()
    if text.lower() == "all":
        n = count()
        if n <= 0:
            raise UsageError("--gpus all: no CUDA GPU is visible on this machine")
        return list(range(n))
    parts = [p.strip() for p in text.split(",")]
    if not text or any(not p.isdigit() for p in parts):
        raise UsageError(f"--gpus {text}: expected 'all' or GPU ids separated by commas, like 0,1,2,3")
    ids = [int(p) for p in parts]
    seen: set[int] = set()
    for gpu in ids:
        if gpu in seen:
            raise UsageError(f"--gpus {text}: GPU {gpu} is listed twice "
                             "(use --per-gpu K for K processes on each GPU)")
        seen.add(gpu)
    n = count()
    if n <= 0:
        raise UsageError(f"--gpus {text}: no CUDA GPU is visible on this machine")
    beyond = [gpu for gpu in ids if gpu >= n]
    if beyond:
        raise UsageError(f"--gpus {text}: no GPU {beyond[0]} on this machine; "
                         f"{n} GPU(s) are visible (ids 0-{n - 1})")
    return ids


#: What a child runs. Not ``python -m hpo``: that puts the working directory FIRST on sys.path,
#: so a user's ``hpo.py``, ``optuna.py`` or ``torch/`` there would be imported instead of ours.
#: ``-P`` (Python 3.11+) puts nothing there, and nothing is added: a custom model's module is
#: found only among the installed packages or in a folder named by ``--module-path`` (which
#: reaches the child, with the allow-list, through its environment), never implicitly in the
#: working directory (see hpo.models.custom).
CHILD_ENTRY = "from hpo.cli.main import main; main()"


@dataclass(frozen=True)
class Slot:
    """One supervised child: what it runs on, and how to start it with a given rank."""

    index: int
    rank: int  # the rank of its first start
    label: str  # "cpu" or "gpu N" (N as given to --gpus)
    device: str  # the --device inside the child
    env: Mapping[str, str]  # added to the parent's environment (never the storage URL)
    args: tuple[str, ...]  # ``hpo worker`` arguments other than --rank

    def command(self, rank: int | None = None) -> list[str]:
        return [sys.executable, "-P", "-c", CHILD_ENTRY, "worker", *self.args,
                "--rank", str(self.rank if rank is None else rank)]


def plan_slots(
    name: str,
    *,
    rank: int,
    processes: int = 1,
    gpus: Sequence[int] | None = None,
    per_gpu: int = 1,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str = AUTO,
    environ: Mapping[str, str] | None = None,
    reconnect_timeout: float | None = None,
    threads: int | None = None,
) -> list[Slot]:
    """The children to start: ``processes`` on ``device``, or ``per_gpu`` per GPU in ``gpus``
    (torch indices in this process). Ranks are consecutive from ``rank``, GPU by GPU.

    When this process itself sees a subset of the GPUs (``CUDA_VISIBLE_DEVICES`` set), GPU
    ``i`` is the i-th entry of that list, and the child is given that entry.

    Each child is given ``--threads``: ``threads`` (else ``HPO_THREADS``) or the cores ÷ the
    children, so that each keeps one count for its life whatever its siblings do."""
    from hpo.worker.threads import choose_threads

    environ = os.environ if environ is None else environ
    children = processes if gpus is None else len(gpus) * per_gpu
    common: list[str] = [name, "--progress-events",  # the parent shows them (PoolProgress)
                         "--threads", str(choose_threads(threads, workers=children))]
    if n_trials is not None:
        common += ["--n-trials", str(n_trials)]
    if timeout is not None:
        common += ["--timeout", str(timeout)]
    if reconnect_timeout is not None:
        common += ["--reconnect-timeout", str(reconnect_timeout)]
    if gpus is None:
        return [Slot(i, rank + i, "cpu" if device == "cpu" else device, device, {},
                     (*common, "--device", device)) for i in range(processes)]
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    physical = [v.strip() for v in visible.split(",")] if visible else None
    slots: list[Slot] = []
    for gpu in gpus:
        pinned = physical[gpu] if physical is not None and gpu < len(physical) else str(gpu)
        for _ in range(per_gpu):
            i = len(slots)
            slots.append(Slot(i, rank + i, f"gpu {gpu}", "cuda:0", {"CUDA_VISIBLE_DEVICES": pinned},
                              (*common, "--device", "cuda:0")))
    return slots


# --------------------------------------------------------------------------- supervising


Spawn = Callable[[list[str], dict[str, str]], Any]  # -> a Popen-like object


def spawn_child(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    # Its own process group: a terminal's Ctrl-C reaches the parent only, which forwards it
    # once (two SIGINTs would interrupt the child's recording of its interrupted trial).
    # Its stdout and stderr come to the parent, which shows them (progress events in its
    # table, other lines above it): a child writing to the terminal would break the table.
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, process_group=0,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", bufsize=1)


@dataclass
class ChildRecord:
    slot: Slot
    proc: Any = None
    restarts: int = 0
    ranks: list[int] = field(default_factory=list)
    code: int | None = None  # the last exit code (negative: killed by that signal)
    restart_at: float | None = None
    done: bool = False
    note: str = ""


def describe_code(code: int | None) -> str:
    if code is None:
        return "not started"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def report_line(child: ChildRecord) -> str:
    line = f"[worker {child.slot.rank}] {child.slot.label}: {describe_code(child.code)}"
    if child.restarts:
        plural = "s" if child.restarts != 1 else ""
        again = ", ".join(str(r) for r in child.ranks[1:])
        line += f" after {child.restarts} restart{plural} (as rank {again})"
    if child.note:
        line += f"; {child.note}"
    return line


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_pool(
    name: str,
    target: StorageTarget,
    *,
    processes: int = 1,
    rank: int,
    n_trials: int | None,
    timeout: float | None,
    device: str = AUTO,
    gpus: Sequence[int] | None = None,
    per_gpu: int = 1,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    backoff: float = 1.0,
    stop_grace: float = 30.0,
    spawn: Spawn | None = None,
    poll_interval: float = 0.1,
    reconnect_timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    quiet: bool = False,
    threads: int | None = None,
) -> int:
    """Start the planned children, supervise them (see the module docstring), print one
    line per child, and return the pool's exit code: 0 when every child ended with 0, else
    the worst child's code (a signal N counts as 128 + N). ``env``: added to each child's
    environment (the custom-model allow-list, see hpo.models.custom.ModulePolicy.as_env).
    ``quiet``: the children's lines, not a live table of them (hpo.worker.progress.PoolProgress).
    ``threads``: each child's CPU threads (default: the cores ÷ the children).

    A study with nothing left to run is answered here, once, without starting a child (each
    would import torch only to say so): one line, and the code a worker would exit with."""
    check_device_name(device)
    finished = _finished_study(name, target, reconnect_timeout)
    if finished is not None:
        return finished
    slots = plan_slots(name, rank=rank, processes=processes, gpus=gpus, per_gpu=per_gpu,
                       n_trials=n_trials, timeout=timeout, device=device,
                       reconnect_timeout=reconnect_timeout, threads=threads)
    from hpo.worker.progress import PoolProgress

    return supervise(slots, {ENV_VAR: target.url, **(env or {})}, max_restarts=max_restarts, backoff=backoff,
                     stop_grace=stop_grace, spawn=spawn or spawn_child, poll_interval=poll_interval,
                     show=PoolProgress(quiet=quiet))


def _finished_study(name: str, target: StorageTarget, reconnect_timeout: float | None) -> int | None:
    """None when the study has trials to run; else, once said why, the pool's exit code."""
    from hpo.worker.loop import nothing_to_do

    kwargs = {} if reconnect_timeout is None else {"reconnect_timeout": reconnect_timeout}
    finished = nothing_to_do(name, target, **kwargs)
    if finished is None:
        return None
    print(f"Workers not started: {finished.stop_reason}", flush=True)
    if finished.exit_code:
        _log(f"Error: {finished.stop_reason}")
    return finished.exit_code


def supervise(
    slots: Sequence[Slot],
    extra_env: Mapping[str, str],
    *,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    backoff: float = 1.0,
    stop_grace: float = 30.0,
    spawn: Spawn = spawn_child,
    poll_interval: float = 0.1,
    show: PoolProgress | None = None,
) -> int:
    """Run ``slots`` under a :class:`Supervisor` until every child is done; prints one line
    per child and returns the pool's exit code. ``show``: what the children's output goes
    through (default: their lines, prefixed with their rank)."""
    from hpo.worker.progress import PoolProgress

    supervisor = Supervisor(slots, extra_env, max_restarts=max_restarts, backoff=backoff,
                            stop_grace=stop_grace, spawn=spawn, show=show or PoolProgress(quiet=True))
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, supervisor.on_signal) for s in handled}
    try:
        supervisor.run(poll_interval)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if not supervisor.all_done():  # an error of ours: leave no orphans
            supervisor.kill_all()
        supervisor.output.finish()
    for child in supervisor.children:
        print(report_line(child), flush=True)
    return pool_exit_code([child.code for child in supervisor.children])


class Supervisor:
    """The parent's bookkeeping: start each child, restart the ones that crash (with backoff,
    under a new rank), forward a stop signal once, and kill what outlives the grace period."""

    def __init__(self, slots: Sequence[Slot], extra_env: Mapping[str, str], *, max_restarts: int,
                 backoff: float, stop_grace: float, spawn: Spawn, show: PoolProgress):
        self.children = [ChildRecord(slot) for slot in slots]
        self.output = ChildOutput(show)
        self.max_restarts = max_restarts
        self.backoff = backoff
        self.stop_grace = stop_grace
        self.spawn = spawn
        self.base_env = {**os.environ, **extra_env}
        self.base_env.pop("HPO_WORKER_RANK", None)  # --rank on the command line says it
        self.stopping = False
        self.deadline: float | None = None
        self.signals_received = 0
        self.killed = False

    def rank_of(self, child: ChildRecord, restarts: int) -> int:
        """Each restart takes a rank no other child has had, so its sampler seed differs."""
        return child.slot.rank + restarts * len(self.children)

    def run(self, poll_interval: float) -> None:
        for child in self.children:
            self.start(child)
        while not self.all_done():
            now = time.monotonic()
            for child in self.children:
                if not child.done:
                    self.check(child, now)
            self.output.show()
            if self.all_done():
                break
            if self.deadline is not None and not self.killed and now >= self.deadline:
                after = f"{self.stop_grace:g} s after the stop signal" if self.signals_received == 1 else (
                    f"{ABORT_GRACE:g} s after the second signal")
                _log(f"Workers still running {after}: killing them")
                self.kill_all()
            time.sleep(poll_interval)

    def all_done(self) -> bool:
        return all(child.done for child in self.children)

    def start(self, child: ChildRecord) -> None:
        child_rank = self.rank_of(child, child.restarts)
        child.ranks.append(child_rank)
        child.restart_at = None
        child.proc = self.spawn(child.slot.command(child_rank), {**self.base_env, **child.slot.env})
        self.output.follow(child.slot.index, child_rank, child.proc)

    def check(self, child: ChildRecord, now: float) -> None:
        """One look at a child: still running, ended (for good or to restart), or due to restart."""
        if child.proc is not None:
            code = child.proc.poll()
            if code is not None:
                child.proc, child.code = None, code
                self.ended(child, code, now)
        elif child.restart_at is not None:
            if self.stopping:
                child.done = True  # stopped before its restart
            elif now >= child.restart_at:
                self.start(child)

    def ended(self, child: ChildRecord, code: int, now: float) -> None:
        self.output.ended(child.slot.index, child.ranks[-1], describe_code(code))
        if self.stopping or code in FINAL_CODES:
            child.done = True
        elif child.restarts >= self.max_restarts:
            child.done = True
            child.note = f"not restarted: --max-restarts {self.max_restarts} used up"
            _log(report_line(child))
        else:
            child.restarts += 1
            wait = min(self.backoff * 2 ** (child.restarts - 1), MAX_BACKOFF)
            child.restart_at = now + wait
            _log(f"[worker {child.slot.rank}] {child.slot.label}: {describe_code(code)}; "
                 f"restarting in {wait:g} s as rank {self.rank_of(child, child.restarts)} "
                 f"(restart {child.restarts} of {self.max_restarts})")

    def running(self) -> list[Any]:
        return [child.proc for child in self.children if child.proc is not None and child.proc.poll() is None]

    def kill_all(self) -> None:
        self.killed = True
        for proc in self.running():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def on_signal(self, signum: int, _frame: Any) -> None:
        """Each signal is forwarded (SIGHUP as SIGTERM): the first starts the grace period, the
        second shortens it to ABORT_GRACE (the children abort), a third kills every child."""
        self.signals_received += 1
        now = time.monotonic()
        if self.signals_received == 1:
            self.stopping = True
            self.deadline = now + self.stop_grace
        elif self.signals_received == 2:
            _log(f"Second interrupt: the workers abort (handing their trials back); "
                 f"killed in {ABORT_GRACE:g} s if still running, or at a third interrupt")
            self.deadline = min(self.deadline or now, now + ABORT_GRACE)
        else:
            _log("Third interrupt: killing the workers")
            self.kill_all()
            return
        forward = signal.SIGTERM if signum == signal.SIGHUP else signum
        for proc in self.running():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(forward)


class ChildOutput:
    """The children's stdout and stderr, read line by line by one thread per stream and
    shown by the supervising thread (``show``, at each poll) through a PoolProgress: progress
    events update its table, other lines are passed on with the child's rank."""

    #: Seconds to wait, once every child is done, for the last lines of their streams (a
    #: process the child started may still hold them open).
    DRAIN_WAIT = 2.0

    def __init__(self, show: PoolProgress):
        self.view = show
        self.lines: queue.SimpleQueue[tuple[int, int, str, bool]] = queue.SimpleQueue()
        self.readers: list[threading.Thread] = []

    def follow(self, slot: int, rank: int, proc: Any) -> None:
        self.view.started(slot, rank)
        for stream, stderr in ((getattr(proc, "stdout", None), False), (getattr(proc, "stderr", None), True)):
            if stream is not None:  # a stand-in child (tests) has none
                reader = threading.Thread(target=self._read, args=(slot, rank, stream, stderr), daemon=True)
                reader.start()
                self.readers.append(reader)

    def _read(self, slot: int, rank: int, stream: Any, stderr: bool) -> None:
        with contextlib.suppress(OSError, ValueError):  # closed under us: nothing more to read
            for line in stream:
                self.lines.put((slot, rank, line.rstrip("\n"), stderr))

    def ended(self, slot: int, rank: int, how: str) -> None:
        self.show()  # its lines read so far first
        self.view.ended(slot, rank, how)

    def show(self) -> None:
        while True:
            try:
                slot, rank, line, stderr = self.lines.get_nowait()
            except queue.Empty:
                return
            self.view.line(slot, rank, line, stderr=stderr)

    def finish(self) -> None:
        """Show what is left to read, then end the live table (before the report lines)."""
        deadline = time.monotonic() + self.DRAIN_WAIT
        for reader in self.readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        self.show()
        self.view.close()


def pool_exit_code(codes: Sequence[int | None]) -> int:
    """0 when every child ended with 0; else the worst (signals as 128 + N)."""
    shell = [128 - c if c is not None and c < 0 else (c or 0) for c in codes]
    return max(shell, key=lambda code: (code != 0, code), default=0)
