"""Typed errors. The CLI turns each into one ``Error: ...`` line and an exit code.

Exit code 2 is for mistakes in what the user gave us (usage, spec, unknown names);
1 is for things that went wrong while running (storage unreachable, training failed).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HpoError(Exception):
    """Base class of every error the CLI reports without a traceback."""

    exit_code = 1


class UsageError(HpoError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class SpecError(UsageError):
    """A spec is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StorageError(HpoError):
    """The study storage could not be reached or used."""


class StudyNotFoundError(UsageError):
    """No study of that name exists in the storage."""


class TrainingError(HpoError):
    """A trial's training could not continue (NaN loss, bad combination of options)."""


class DivergedError(TrainingError):
    """The loss became NaN or infinite: this region of the search space does not train."""


class Preempted(HpoError):
    """Training stopped at a batch boundary because the worker was asked to stop (SIGTERM or
    SIGINT, named by ``by``); a checkpoint was saved where a store was given, so a retry
    resumes from there. Training does not know which signal it was: the worker says, with
    :meth:`by_signal`."""

    def __init__(self, epoch: int, batch: int, checkpointed: bool, *, by: str = "a stop request"):
        self.epoch, self.batch, self.checkpointed = epoch, batch, checkpointed
        untrained = (epoch, batch) == (1, 0)
        where = f"epoch {epoch}, batch {batch}" if batch else (
            "the start" if untrained else f"the end of epoch {epoch - 1}")
        saved = "checkpoint saved" if checkpointed else "nothing to save yet" if untrained else "no checkpoint store"
        super().__init__(f"stopped by {by} at {where} ({saved})")

    def by_signal(self, name: str | None) -> Preempted:
        """The same stop, naming the signal that asked for it (None: left as it is)."""
        return self if name is None else Preempted(self.epoch, self.batch, self.checkpointed, by=name)


class Aborted(KeyboardInterrupt):
    """A second stop signal: the worker leaves at once. Its exit code is the shell's for
    that signal, 128 + its number (130 for SIGINT, 143 for SIGTERM). A KeyboardInterrupt, so
    that it passes every ``except Exception`` on its way out; ``outcome`` says what became of
    the trial in progress, if any."""

    def __init__(self, signal_name: str, signal_number: int):
        self.signal_name = signal_name
        self.exit_code = 128 + signal_number
        self.outcome: str | None = None
        super().__init__(signal_name, signal_number)

    def __str__(self) -> str:
        message = f"aborted by a second {self.signal_name}"
        return f"{message}: {self.outcome}" if self.outcome else message


def close_matches(word: str, known: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(str(word), list(known), n=3, cutoff=0.6)


def unknown_name_message(kind: str, name: object, known: Iterable[str]) -> str:
    """``unknown optimizer 'adamm'; did you mean 'adam'? (known: adam, sgd)``."""
    known = sorted(known)
    message = f"unknown {kind} {name!r}"
    matches = close_matches(str(name), known)
    if matches:
        message += "; did you mean " + " or ".join(repr(m) for m in matches) + "?"
    return message + f" (known: {', '.join(known)})"


class UnknownNameError(UsageError, ValueError):
    """A registry was asked for a name it does not hold."""

    def __init__(self, kind: str, name: object, known: Iterable[str]):
        super().__init__(unknown_name_message(kind, name, known))
