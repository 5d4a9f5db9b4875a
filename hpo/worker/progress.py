"""What a worker says while it works: its start-up steps and how long each took, a line
naming each trial's searched values, live progress (trial, epoch N/M, a batch bar, the latest
and the best value, ETA) on a terminal or in a notebook, and one plain line per trial in a
log (``--quiet``, or any output that is not a terminal: a file, ``nohup``, a pipe).

The worker loop reports through a ``Progress`` callback ``(event, data)``
(hpo.worker.trial.Progress). Events and their data:

- ``preparing``: ``{"step"}`` when a start-up step begins, ``{"step", "done", "seconds"}``
  when it ends (``done``: what it found, e.g. "loading digits (1,437 training images)")
- ``chosen_device``: ``{"resolved", "description"}``
- ``trial_start``: ``{"trial", "params", "epochs", "metric", "direction"}`` once sampled
- ``batch``: ``{"trial", "epoch", "batch", "batches"}``, a few times a second at most
- ``epoch``: ``{"trial", "metrics": EpochMetrics, "metric"}``
- ``swept``: ``{"trial"}``; ``trial_end``: ``{"outcome": TrialOutcome}``

:class:`WorkerProgress` shows one worker's events. A pool's children (hpo.worker.pool) send
theirs to the parent as JSON lines on their stdout (:class:`EventLines`), and the parent
shows every child in one table (:class:`PoolProgress`). Both read the events in their
plain, JSON-able form (:func:`plain`), so a child's line and a worker's own read alike.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from hpo.worker.trial import TrialOutcome

#: What starts a progress event's line on a pool child's stdout (anything else is passed on).
EVENT_KEY = "hpo_event"


# --------------------------------------------------------------------------- texts


def describe(outcome: TrialOutcome) -> str:
    """The line that says how a trial ended."""
    from hpo.worker.trial import Outcome

    if outcome.state == Outcome.FAIL:
        return f"trial {outcome.number} failed after {outcome.epochs} epochs: {outcome.reason}"
    if outcome.state == Outcome.PREEMPTED:
        return (f"trial {outcome.number} {outcome.reason}; handed back to be resumed by the next "
                "worker (up to budget.max_retries)")
    if outcome.state == Outcome.STEERED:
        return (f"trial {outcome.number} stopped after {outcome.epochs} epochs: {outcome.reason} "
                "(recorded as pruned with the worst value, so the sampler avoids this region)")
    pruned = outcome.state == Outcome.PRUNED
    verb = "pruned at epoch" if pruned else "complete after"
    return (f"trial {outcome.number} {verb} {outcome.epochs}" + ("" if pruned else " epochs")
            + f": {outcome.value:.4f} ({outcome.seconds:.1f} s)")


def describe_params(params: dict[str, Any]) -> str:
    """A trial's searched values, short: ``train.lr=0.0031, model.filters=[32, 64]``. The
    values of a ``repeat`` key (``model.filters[0]``, ``model.filters[1]``) read as one list."""
    grouped: dict[str, Any] = {}
    for name, value in params.items():
        base, bracket, _ = name.partition("[")
        if bracket and name.endswith("]"):
            grouped.setdefault(base, []).append(value)
        else:
            grouped[name] = value
    return ", ".join(f"{name}={_short(value)}" for name, value in grouped.items())


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, float):
        return format(value, ".3g").replace("e-0", "e-").replace("e+0", "e")
    return str(value)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def plain(event: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """An event's data as plain JSON-able values (None: not an event shown)."""
    if event in ("preparing", "batch", "swept"):
        return dict(data)
    if event == "chosen_device":
        return {"description": data["description"]}
    if event == "trial_start":
        return {"trial": data["trial"], "params": describe_params(data.get("params", {})),
                "epochs": data.get("epochs", 0), "metric": data.get("metric", ""),
                "direction": data.get("direction", "maximize")}
    if event == "epoch":
        metrics = data["metrics"]
        return {"trial": data["trial"], "epoch": metrics.epoch,
                "value": float(getattr(metrics, data["metric"])), "metric": data["metric"]}
    if event == "trial_end":
        outcome = data["outcome"]
        return {"trial": outcome.number, "line": describe(outcome), "value": outcome.value}
    return None


# --------------------------------------------------------------------------- one worker's state


@dataclass
class WorkerRow:
    """What one worker is doing, as shown: updated from plain events (:meth:`apply`)."""

    doing: str = "starting"  # outside a trial: the start-up step, or what it waits for
    trial: int | None = None
    params: str = ""
    epoch: int = 0  # the epoch being trained (1-based), or the last one finished
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    latest: float | None = None
    best: float | None = None
    metric: str = ""
    maximize: bool = True
    trial_started: float = 0.0
    epochs_done: int = 0
    first_epoch: int | None = None  # the first this worker trained (a resumed trial's is later)

    def apply(self, event: str, data: dict[str, Any], *, one_line: bool = False,
              now: float | None = None) -> list[str]:
        """Take one plain event in; returns the lines it says. ``one_line`` (plain mode): no
        line at a trial's start, and its end line names the values instead."""
        now = time.monotonic() if now is None else now
        if event == "preparing":
            if "done" not in data:
                self.doing = f"{data['step']}…"
                return []
            self.doing = "asking for a trial"
            return [f"{data['done']}… {data['seconds']:.1f} s"]
        if event == "chosen_device":
            return [f"Device: {data['description']}"]
        if event == "swept":
            return [f"trial {data['trial']} was left running by a worker that is gone: marked failed "
                    "and retried from its last checkpoint (up to budget.max_retries)"]
        if event == "trial_start":
            self._start(data, now)
            if one_line:
                return []
            return [f"trial {data['trial']}: {data['params']}" if data["params"] else f"trial {data['trial']}"]
        if event == "batch":
            self.epoch, self.batch, self.batches = data["epoch"], data["batch"], data["batches"]
            if self.first_epoch is None:
                self.first_epoch = self.epoch
        elif event == "epoch":
            self._epoch_end(data)
        elif event == "trial_end":
            # A trial whose sampling failed never started: the values are another trial's.
            params = self.params if self.trial == data["trial"] else ""
            self.trial, self.params, self.doing = None, "", "asking for the next trial"
            line = data["line"]
            return [f"{line} | {params}" if one_line and params else line]
        return []

    def _start(self, data: dict[str, Any], now: float) -> None:
        self.trial, self.params, self.epochs = data["trial"], data["params"], data["epochs"]
        self.metric, self.maximize = data["metric"], data["direction"] != "minimize"
        self.epoch = self.batch = self.batches = self.epochs_done = 0
        self.latest, self.trial_started, self.first_epoch = None, now, None

    def _epoch_end(self, data: dict[str, Any]) -> None:
        self.epoch = self.epochs_done = data["epoch"]
        self.batch = self.batches  # the bar full until the next epoch's first batch
        value = data["value"]
        self.latest, self.metric = value, data["metric"]
        if value != value:  # NaN: no better than anything
            return
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best = value

    def eta(self, now: float) -> float | None:
        """Seconds left in this trial at this worker's pace so far (None before the first
        batch): a trial resumed from a checkpoint is timed from the epoch it resumed at."""
        if self.trial is None or not self.epochs or self.first_epoch is None:
            return None
        if self.epoch > self.epochs_done and self.batches:  # mid-epoch
            position = self.epoch - 1 + self.batch / self.batches
        else:
            position = float(self.epochs_done)
        done_here = position - (self.first_epoch - 1)
        if done_here <= 0:
            return None
        return (now - self.trial_started) * (self.epochs - position) / done_here

    def fields(self, now: float) -> dict[str, str]:
        """The texts of its columns in the live display."""
        if self.trial is None:
            return {"doing": self.doing, "epoch": "", "latest": "", "best": self._best(), "eta": ""}
        eta = self.eta(now)
        latest = f"{self.metric} {self.latest:.4f}" if self.latest is not None else ""
        return {"doing": f"trial {self.trial}", "epoch": f"epoch {max(self.epoch, 1)}/{self.epochs}",
                "latest": latest, "best": self._best(), "eta": f"ETA {_duration(eta)}" if eta is not None else ""}

    def _best(self) -> str:
        return f"best {self.best:.4f}" if self.best is not None else ""


# --------------------------------------------------------------------------- rendering


def _live_capable(console: Console) -> bool:
    """A terminal, or a notebook that can update an output in place (rich needs ipywidgets
    there, an optional extra: ``pip install 'hpo[notebook]'``; without it, plain lines)."""
    if console.is_jupyter:
        from importlib.util import find_spec

        return find_spec("ipywidgets") is not None
    return console.is_terminal and not console.is_dumb_terminal


class _Board:
    """rows shown as a rich Progress (a live table: one task per worker), started on first use."""

    def __init__(self, console: Console, *, with_rank: bool):
        self.console, self.with_rank = console, with_rank
        self.progress: RichProgress | None = None
        self.tasks: dict[int, TaskID] = {}

    def _started(self) -> RichProgress:
        if self.progress is None:
            from rich.progress import BarColumn, Progress, TextColumn

            texts = ["who"] if self.with_rank else []
            texts += ["doing", "epoch"]
            columns: list[Any] = [TextColumn(f"{{task.fields[{name}]}}", markup=False) for name in texts]
            columns.append(BarColumn())
            columns += [TextColumn(f"{{task.fields[{name}]}}", markup=False) for name in ("latest", "best", "eta")]
            self.progress = Progress(*columns, console=self.console, transient=True, refresh_per_second=4)
            self.progress.start()
        return self.progress

    def show(self, key: int, who: str, row: WorkerRow, *, refresh: bool = False) -> None:
        progress = self._started()
        now = time.monotonic()
        fields: dict[str, Any] = {"who": who, **row.fields(now)}
        if row.trial is not None:
            total, completed = row.batches or None, row.batch
        else:  # a pulsing bar while a start-up step runs, an empty one otherwise
            total, completed = (None if row.doing.endswith("…") else 1), 0
        if key not in self.tasks:
            self.tasks[key] = progress.add_task("", total=total, completed=completed, **fields)
        else:
            progress.update(self.tasks[key], total=total, completed=completed, **fields)
        if refresh:
            progress.refresh()

    def print(self, line: str) -> None:
        from rich.text import Text

        self.console.print(Text(line), soft_wrap=True)  # above the live rows, not through them

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _write(stream: IO[str], line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


# What a write raises once nobody reads: OSError (BrokenPipeError: `| head` exited or a log
# collector died; EIO: the terminal closed) or ValueError (the stream itself was closed).
_GONE = (OSError, ValueError)


def progress_console(**options: Any) -> Console:
    """A rich Console for progress (``options`` as Console's) that raises BrokenPipeError
    when its reader is gone, where rich's own exits the process (``on_broken_pipe``, meant
    to be overridden): a worker whose progress nobody reads keeps training."""
    from rich.console import Console

    class _ProgressConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    return _ProgressConsole(**options)


def _release(stream: IO[str] | None, exc: BaseException) -> None:
    """After a broken pipe, point ``stream``'s descriptor at os.devnull, so that later writes
    to it (the worker's last lines, the interpreter's flush at exit) succeed unseen rather
    than fail again (Python's advice in the signal module's note on SIGPIPE)."""
    if stream is None or not isinstance(exc, BrokenPipeError):
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except _GONE:  # no descriptor (a StringIO) or none left: nothing to keep from failing
        pass


class _Quiet:
    """Output that goes quiet for the rest of the run once its reader is gone: progress is
    for a person watching, and a trial must not fail because nobody is."""

    gone = False

    def _attempt(self, show: Callable[[], None], stream: IO[str] | None) -> None:
        if self.gone:
            return
        try:
            show()
        except _GONE as exc:
            self.gone = True
            _release(stream, exc)
            self._went_quiet()

    def _went_quiet(self) -> None:
        """Stop whatever still writes (a live display's refresh thread)."""


class WorkerProgress(_Quiet):
    """The ``Progress`` callback of one worker: live progress where the output can show it
    (a terminal, a notebook), else one plain line per trial; the start-up steps either way.
    Once nobody reads the output (a closed pipe or terminal), it goes quiet.

    ``quiet``: plain lines even on a terminal. ``console``: where it all goes (default:
    stdout; stderr is left to errors, one ``Error:`` line); see ``progress_console``.
    ``rank``: prefixes "[worker N] "."""

    def __init__(self, *, quiet: bool = False, console: Console | None = None, rank: int | None = None):
        self.console = console or progress_console(highlight=False)
        self.live = not quiet and _live_capable(self.console)
        self.prefix = f"[worker {rank}] " if rank is not None else ""
        self.row = WorkerRow()
        self.board = _Board(self.console, with_rank=False) if self.live else None
        self.status: Any = None  # the spinner of a start-up step (live mode)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        message = plain(event, data)
        if message is None or self.gone:
            return
        lines = self.row.apply(event, message, one_line=self.board is None)
        self._attempt(lambda: self._show(event, message, lines), self.console.file)

    def _show(self, event: str, message: dict[str, Any], lines: list[str]) -> None:
        if self.board is None:
            self._plain(lines)
            return
        self._step(event, message)
        for line in lines:
            self.board.print(self.prefix + line)
        if event in ("trial_start", "batch", "epoch", "trial_end"):  # trial_end: "asking for the next trial"
            self.board.show(0, "", self.row, refresh=event != "batch")  # a batch waits for rich's refresh (4/s)

    def _plain(self, lines: list[str]) -> None:
        for line in lines:
            _write(self.console.file, self.prefix + line)

    def _step(self, event: str, message: dict[str, Any]) -> None:
        """A spinner while a start-up step runs (before any trial: nothing else is live)."""
        if event != "preparing":
            return
        if "done" not in message and self.board is not None and self.board.progress is None:
            if self.status is None:
                self.status = self.console.status(self.prefix + self.row.doing)
                self.status.start()
            else:
                self.status.update(self.prefix + self.row.doing)
        elif self.status is not None:
            self.status.stop()
            self.status = None

    def close(self) -> None:
        self._attempt(self._stop, self.console.file)

    def _stop(self) -> None:
        if self.status is not None:
            status, self.status = self.status, None
            status.stop()
        if self.board is not None:
            self.board.close()

    def _went_quiet(self) -> None:
        self.console.quiet = True  # rich renders nothing more, its refresh thread included
        with contextlib.suppress(*_GONE):
            self._stop()


#: The name hpo.api knows it by.
TrialProgress = WorkerProgress


class EventLines:
    """A pool child's ``Progress`` callback: each event as one JSON line on stdout, for the
    parent to show. A parent that is gone (a closed pipe) ends the lines, not the child."""

    def __init__(self, stream: IO[str] | None = None, *, rank: int | None = None):
        self.stream = stream
        self.prefix = f"[worker {rank}] " if rank is not None else ""
        self.broken = False

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        message = plain(event, data)
        if message is None or self.broken:
            return
        stream = self.stream or sys.stdout
        try:
            _write(stream, json.dumps({EVENT_KEY: event, **message}, separators=(",", ":")))
        except _GONE as exc:
            self.broken = True
            _release(stream, exc)

    def close(self) -> None:
        return None


def read_event(line: str) -> tuple[str, dict[str, Any]] | None:
    """A child's progress event from one of its stdout lines; None for any other line."""
    if not line.startswith('{"' + EVENT_KEY + '"'):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    return str(message.pop(EVENT_KEY)), message


class PoolProgress(_Quiet):
    """A pool parent's view of its children: one live table (a row per child: rank, trial,
    epoch N/M, batch bar, latest value, best, ETA) on a terminal or in a notebook, else each
    child's lines prefixed with its rank. Fed one child's stdout line at a time (:meth:`line`).
    Once nobody reads the output, it goes quiet (the children keep working)."""

    def __init__(self, *, quiet: bool = False, console: Console | None = None):
        self.given = console
        self.console = console or progress_console(highlight=False)
        self.live = not quiet and _live_capable(self.console)
        self.rows: dict[int, WorkerRow] = {}
        self.board = _Board(self.console, with_rank=True) if self.live else None

    def line(self, slot: int, rank: int, text: str, *, stderr: bool = False) -> None:
        """One line a child wrote (``stderr``: on its stderr): an event, or text passed on."""
        prefix = f"[worker {rank}] "
        event = None if stderr else read_event(text)
        if event is None:
            if stderr and not text.startswith("[worker "):
                text = prefix + text
            self._attempt(lambda: self._say(text, stderr=stderr), self._stream(stderr))
            return
        name, message = event
        row = self.rows.setdefault(slot, WorkerRow())
        try:
            lines = row.apply(name, message, one_line=self.board is None)
        except (KeyError, TypeError, ValueError):
            return  # a line that only looks like an event: nothing to show
        self._attempt(lambda: self._show(slot, rank, row, lines, refresh=name != "batch"), self.console.file)

    def _show(self, slot: int, rank: int, row: WorkerRow, lines: list[str], *, refresh: bool) -> None:
        prefix = f"[worker {rank}] "
        if self.board is not None:
            for said in lines:
                self.board.print(prefix + said)
            self.board.show(slot, f"[worker {rank}]", row, refresh=refresh)
            return
        for said in lines:
            self._say(prefix + said, stderr=False)

    def started(self, slot: int, rank: int) -> None:
        """A child (re)started in ``slot``: its row starts afresh (its best so far kept)."""
        row = self.rows.setdefault(slot, WorkerRow())
        row.trial, row.doing = None, "starting"
        self._show_row(slot, rank, row)

    def ended(self, slot: int, rank: int, how: str) -> None:
        """A child ended (``how``: "exit 0", "killed by SIGKILL"): its row says so."""
        row = self.rows.setdefault(slot, WorkerRow())
        row.trial, row.doing = None, how
        self._show_row(slot, rank, row)

    def _show_row(self, slot: int, rank: int, row: WorkerRow) -> None:
        board = self.board
        if board is not None:
            self._attempt(lambda: board.show(slot, f"[worker {rank}]", row, refresh=True), self.console.file)

    def _stream(self, stderr: bool) -> IO[str]:
        return sys.stderr if stderr and self.board is None and self.given is None else self.console.file

    def _say(self, text: str, *, stderr: bool) -> None:
        if self.board is not None:
            self.board.print(text)
        else:
            _write(self._stream(stderr), text)

    def close(self) -> None:
        board = self.board
        if board is not None:
            self._attempt(board.close, self.console.file)

    def _went_quiet(self) -> None:
        self.console.quiet = True
        if self.board is not None:
            with contextlib.suppress(*_GONE):
                self.board.close()
