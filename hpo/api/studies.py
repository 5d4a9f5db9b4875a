"""Specs, studies and workers from Python: what ``hpo study create`` and ``hpo worker`` do."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

from hpo.errors import UsageError
from hpo.storage.urls import DEFAULT_RECONNECT_TIMEOUT, StorageTarget

if TYPE_CHECKING:
    from optuna import Study
    from torch import nn

    from hpo.models.custom import ModulePolicy
    from hpo.results.warm_start import WarmStart
    from hpo.spec.model import Spec
    from hpo.spec.overrides import Overrides
    from hpo.worker.loop import WorkerReport
    from hpo.worker.progress import WorkerProgress
    from hpo.worker.trial import Progress

# A storage as the API takes it: a PostgreSQL (or sqlite) URL, a journal file path, or None
# for the CLI's default ($HPO_STORAGE, else ./hpo-studies.journal).
Storage: TypeAlias = "str | os.PathLike[str] | StorageTarget | None"
# Custom model classes handed over in-process: the classes (named ``module:QualName``, so a
# notebook's own class is ``__main__:MyNet``), or {import path the spec uses: class}.
Models: TypeAlias = "Iterable[type[nn.Module]] | Mapping[str, type[nn.Module]]"


def storage_target(storage: Storage) -> StorageTarget:
    """The storage the CLI would open for ``--storage storage``."""
    from hpo.storage.urls import resolve_storage

    if isinstance(storage, StorageTarget):
        return storage
    return resolve_storage(os.fspath(storage) if storage is not None else None)


def load_spec(path: str | os.PathLike[str], *, name: str | None = None,
              overrides: Overrides | None = None) -> Spec:
    """Read and validate the spec file at ``path``; raises ``SpecError`` listing every problem
    (file, line, key, value, what is accepted), as ``hpo study create`` prints them.

    ``name`` replaces the spec's name. ``overrides`` put values over the file's before it is
    validated: ``{"train.lr": 0.01, "budget.n_trials": 20}``, or ``["train.lr=0.01"]`` as
    ``--set`` takes them (one such string alone is one override)."""
    from hpo.spec import load_spec as read_spec

    return read_spec(Path(path), name=name, overrides=overrides or ())


@dataclass(frozen=True)
class CreatedStudy:
    """What ``create_study`` made (or found, with ``if_exists="reuse"``)."""

    name: str
    created: bool  # False: an existing study with the identical spec was reused
    storage: str  # where, safe to print (no password)
    artifacts: str | None  # where the trials' files go (a folder or s3://...)
    spec: Spec
    study: Study  # the Optuna study itself
    # What a reuse changed (a budget-only difference), or why a warm start was not repeated.
    notes: list[str] = field(default_factory=list)
    warm_start: WarmStart | None = None  # what warm_start= took from the other study


def create_study(spec: Spec | str | os.PathLike[str], storage: Storage = None, *,
                 name: str | None = None, overrides: Overrides | None = None,
                 if_exists: Literal["fail", "reuse"] = "fail",
                 artifacts: str | os.PathLike[str] | None = None,
                 warm_start: str | None = None, top: int = 3) -> CreatedStudy:
    """Create the study for ``spec`` (a spec file, or a ``Spec`` from ``load_spec``), as
    ``hpo study create`` does; the study carries the validated spec, so workers need only
    its name and the storage.

    ``if_exists``: ``"fail"`` raises ``UsageError`` when the study exists; ``"reuse"`` keeps
    it when its stored spec is identical. ``artifacts``: a folder or ``s3://BUCKET`` for the
    trials' files (default: ``hpo-artifacts`` beside the journal file). ``warm_start``: a
    study in the same storage to start from (its best ``top`` configurations run first, its
    finished trials that fit the space are added for the sampler; hpo.results.warm_start)."""
    from hpo.artifacts.store import describe, study_location
    from hpo.storage.closing import close_connections
    from hpo.study.studies import create_study as create

    if if_exists not in ("fail", "reuse"):
        raise UsageError(f"if_exists={if_exists!r}: expected 'fail' or 'reuse'")
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec, name=name, overrides=overrides)
    elif name is not None or overrides:
        raise UsageError("name= and overrides= apply to a spec file; for a loaded Spec, "
                         "pass them to hpo.load_spec instead")
    if spec.name is None:
        raise UsageError("the study needs a name: add 'name:' to the spec or pass name=")
    target = storage_target(storage)
    notes: list[str] = []
    where = os.fspath(artifacts) if artifacts is not None else None
    report = None
    if warm_start is not None:
        from hpo.results.warm_start import create_warm_started

        study, created, report = create_warm_started(spec, target, parent=warm_start, top=top,
                                                     if_exists=if_exists, artifacts=where, notes=notes)
    else:
        study, created = create(spec, target, if_exists=if_exists, artifacts=where, notes=notes)
    location = study_location(study)
    close_connections(study)  # a one-shot call; the study reconnects if it is used again
    return CreatedStudy(spec.name, created, target.display, describe(location) if location else None,
                        spec, study, notes, report)


def random_rank() -> int:
    """A rank for a worker started without one: workers started by hand with one spec share
    its seed, and a random rank keeps them from proposing identical trials."""
    return random.SystemRandom().randrange(1000, 1_000_000)


def module_policy(models: Models | None = None, allow_modules: Iterable[str] = (),
                  module_paths: Iterable[str] = ()) -> ModulePolicy:
    """Which custom model code this process may run: ``allow_modules`` and ``module_paths``
    as ``--allow-module``/``--module-path`` (each falling back to its environment variable),
    plus the classes handed over in ``models``."""
    from hpo.worker.model_code import ModulePolicy

    base = ModulePolicy.given_or_env(tuple(allow_modules), tuple(module_paths), os.environ)
    return ModulePolicy.with_classes(base, models) if models else base


def run_worker(name: str, storage: Storage = None, *, n_trials: int | None = None,
               timeout: float | None = None, device: str = "auto",
               progress: bool | Progress = True, rank: int | None = None,
               models: Models | None = None, allow_modules: Iterable[str] = (),
               module_paths: Iterable[str] = (), sole_worker: bool = False,
               reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
               threads: int | None = None) -> WorkerReport:
    """Run trials of study ``name`` in this process until the study's budget (or
    ``n_trials``/``timeout`` seconds of this worker) is spent, as ``hpo worker`` does; other
    workers, anywhere, may run the same study at the same time.

    ``device``: ``"auto"`` (CUDA, else MPS, else the CPU), ``"cpu"``, ``"cuda:N"``, ``"mps"``.
    ``progress``: True shows live progress (a notebook's output cell, a terminal) or one line
    per trial (a log); False shows nothing; or a callable ``(event, data)``.
    ``models``: custom model classes for ``model: {name: custom, module: ...}``, e.g.
    ``[MyNet]`` for a class defined in the notebook (a spec then names ``__main__:MyNet``).
    ``sole_worker``: no other worker runs this study now, so trials left running were left
    by workers that are gone (a recycled notebook runtime): they are failed and retried from
    their last checkpoint before the first trial.
    ``threads``: torch's CPU threads, kept for all the worker's trials (default: ``HPO_THREADS``,
    else the cores ÷ the hpo workers running on this machine when it starts).

    Returns the ``WorkerReport``: ``outcomes`` (one per trial), ``stop_reason``, and
    ``exit_code`` (what ``hpo worker`` would exit with: 1 when the failure budget stopped
    the study). Ctrl-C (a notebook's interrupt) stops at the next batch and hands the trial
    back from a checkpoint."""
    from hpo.worker.loop import run_worker as work
    from hpo.worker.model_code import using_module_policy

    if n_trials is not None and n_trials < 1:
        raise UsageError(f"n_trials={n_trials}: expected at least 1 (or None for the study's budget)")
    if timeout is not None and not timeout > 0:
        raise UsageError(f"timeout={timeout}: expected seconds > 0 (or None)")
    policy = module_policy(models, allow_modules, module_paths)
    if progress is not True and progress is not False and not callable(progress):
        raise UsageError(f"progress={progress!r}: expected True, False or a callable (event, data)")
    target = storage_target(storage)
    # progress=True: hpo worker's own display, live in a notebook or on a terminal (rich), one
    # plain line per trial in a log; closed here, as made here (a caller's callable is its own).
    made = _worker_progress(rank) if progress is True else None
    show = made if made is not None else progress if callable(progress) else None
    try:
        if sole_worker:
            _sweep_left_running(name, target, show)
        with using_module_policy(policy):
            return work(name, target, n_trials=n_trials, timeout=timeout, device=device,
                        rank=random_rank() if rank is None else rank, progress=show,
                        reconnect_timeout=reconnect_timeout, threads=threads)
    finally:
        if made is not None:
            made.close()


def _worker_progress(rank: int | None) -> WorkerProgress:
    from hpo.worker.progress import WorkerProgress

    return WorkerProgress(rank=rank)


SOLE_WORKER_REASON = ("left running by a worker that is gone (a worker started with "
                      "sole_worker=True found it: no other worker runs this study)")


def _sweep_left_running(name: str, target: StorageTarget, show: Progress | None) -> None:
    from hpo.study.studies import load_study
    from hpo.worker.recovery import fail_left_running

    loaded = load_study(name, target)
    for number in fail_left_running(loaded.study, loaded.spec.budget.max_retries, SOLE_WORKER_REASON):
        if show is not None:
            show("swept", {"trial": number})

