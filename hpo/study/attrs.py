"""The one schema of what hpo keeps in a study's and a trial's user attributes.

Every key hpo writes is declared here, once, with what it holds; every other module names
it through these constants, and reads a trial back through ``TrialRecord`` (a study through
``StudyRecord``) rather than indexing ``user_attrs``. The key strings are a stored format:
studies written by earlier versions must still read, so a value here never changes (a new
meaning gets a new key). tests/architecture/test_attribute_keys.py fails on a key spelt as
a string anywhere else in hpo.

System attributes: hpo writes and reads two, ``CLAIM_TOKEN`` and ``UNIQUE_CONFIGURATION``.
Optuna keeps its own there (``fixed_params`` of an enqueued retry, the pruners' rung values, ``failed_trial``/
``retry_history`` of its ``RetryFailedTrialCallback``, which hpo does not use: it retries
through ``retry_of`` below); hpo.storage.proxies copies them whole for the pruners and never
looks inside.

Imported by every layer that writes attributes (the artifacts too, below the study layer),
so it imports nothing from hpo, and neither optuna nor torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from optuna.trial import FrozenTrial, TrialState

# --- trial user attributes ----------------------------------------------------------------

# Who runs it, written right after ``ask`` (hpo.worker.loop), read by the sweep for dead
# workers (hpo.worker.recovery): {"host": host name, "pid": process id, "rank": worker rank},
# see ``WorkerIdentity``.
WORKER = "worker"

# What it runs: written with the sampled parameters in one write, before training.
CONFIG = "config"  # the resolved config, {"data": {...}, "model": {...}, "train": {...}}
SEED = "seed"  # int: train.seed of that config
DEVICE = "device"  # str: the device the worker trained on (cpu, cuda:N, mps)
CPU_THREADS = "cpu_threads"  # int: torch's intra-op threads in the worker process
VERSIONS = "versions"  # {"hpo", "optuna", "torch", "python"}: version strings of the worker

# What it measured: written with the result (a completed or a pruned trial).
PARAMS_TOTAL = "params_total"  # int: the model's parameter count
PARAMS_TRAINABLE = "params_trainable"  # int: the parameters not frozen (transfer learning)
SECONDS_PER_EPOCH = "seconds_per_epoch"  # float: mean seconds per epoch, 4 decimals
IMAGES_PER_SECOND = "images_per_second"  # float: training images per second, 1 decimal
# float | None: peak device memory in MB (on CPU the worker process's peak resident set,
# which spans its earlier trials), 1 decimal; None where the platform cannot tell.
PEAK_MEMORY_MB = "peak_memory_mb"
PRECISION = "precision"  # str: what ran, fp32, bf16 or fp16
# {"class_counts": {split: [count per label]}, "class_names": [name per label],
# "class_weights": [the training loss's weight per label] or None (unweighted),
# "skipped_images": int, "skipped_examples": {path: why}}: what the data side found and the
# loss applied (class_names and class_weights since they were recorded); see
# ``TrialRecord.class_counts`` and ``TrialRecord.class_weights``.
DATA_REPORT = "data"
STOPPED_EARLY = "stopped_early"  # bool: train.early_stopping ended the trial
STARTUP_SECONDS = "startup_seconds"  # float: from ask to the first optimiser step
# int: epochs trained (any ending: also on a failed, steered or preempted trial).
EPOCHS_TRAINED = "epochs_trained"
# {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "lr"}: one value
# per epoch trained, named as the fields of hpo.training.EpochMetrics (written whenever an
# epoch was trained; train_accuracy since it was recorded, None for an epoch without one).
CURVES = "curves"
# train.record_gradients: {"layers": [module path, input layer first], "norms": [[one per
# layer] per epoch]}, each the mean over the epoch's batches of the L2 norm of that layer's
# weight gradient (hpo.training.EpochMetrics.grad_norms), epochs as in ``curves``; see
# ``GradNorms``. Written with the curves, only when recorded.
GRAD_NORMS = "grad_norms"

# How it ended, when not simply completed.
# str: why it failed, diverged, ran out of memory or was handed back; on a pruned trial it
# means the worker steered away (diverged, out of memory), not the pruner.
FAIL_REASON = "fail_reason"
TRACEBACK = "traceback"  # str: the last 4000 characters of an unexpected error's traceback
PRUNED_AT_EPOCH = "pruned_at_epoch"  # int: the last epoch of a pruned or steered trial
# True: handed back unrun, another worker took the study's last n_trials slot first; such
# trials are left out of every count and listing (hpo.study.studies.visible_trials).
OVER_BUDGET = "over_budget"

# Faults: retries of trials whose worker died or was stopped, and their checkpoints.
RETRIES = "retries"  # int, on a retry: how many retries led to it (the first retry has 1)
RETRY_OF = "retry_of"  # int, on a retry: the number of the trial it retries
RETRIED = "retried"  # True on a failed trial whose retry was enqueued: no failure of its config
CHECKPOINT = "checkpoint"  # str: the artifact id of the trial's latest checkpoint
RESUME_FROM = "resume_from"  # str, on a retry: the checkpoint artifact it starts from
# str | None: the checkpoint file the latest save replaced, removed right after it; a retry
# inherits it in case its worker died in between.
CHECKPOINT_SUPERSEDED = "checkpoint_superseded"
# Where a retry resumed: {"checkpoint": artifact id, "epoch": E, "batch": B}, see ``ResumedFrom``.
RESUMED_FROM = "resumed_from"

# The trial's files in the study's artifact store (hpo.artifacts.trial_files).
ARTIFACTS = "artifacts"  # {file name: artifact id}
ARTIFACT_ERROR = "artifact_error"  # str: why the files were not saved (at most 1000 characters)
WEIGHTS_MB = "weights_mb"  # float: the size of the uploaded weights.pt
MODEL_IO = "model_io"  # {"in_shape": [C, H, W], "num_classes": int}: to rebuild the model for its weights
WEIGHTS_SKIPPED = "weights_skipped"  # str: why the weights were not kept ($HPO_KEEP_WEIGHTS)

# {"study": name, "trial": number}: a finished trial of another study, added by a warm start
# (hpo.results.warm_start) so that the sampler models it. It was not run in this study: it
# counts towards none of the budget's limits, and readers can tell it apart.
WARM_START = "warm_started_from"

# --- trial system attributes --------------------------------------------------------------

# str: a random token of the call that moved a queued trial from WAITING to RUNNING, written
# in the same transaction (hpo.storage.proxies.ReconnectingStorage), so that the call's retry
# after a lost answer knows the claim it finds is its own.
CLAIM_TOKEN = "hpo_claim_token"

# int: which configuration of the finite space (an index into hpo.spec.finite.configurations
# of the stored spec) the unique random sampler chose for the trial, written when it chose it
# (hpo.spec.unique_random): a running trial with only some of its parameters written yet
# already holds it, so that another worker does not choose it too.
UNIQUE_CONFIGURATION = "hpo_unique_configuration"

# --- study user attributes ----------------------------------------------------------------

SPEC = "hpo:spec"  # the validated spec, as JSON data (hpo.spec.spec_to_json)
SPEC_SHA256 = "hpo:spec_sha256"  # str: sha256 of that JSON; create --if-exists reuse compares it
# float: epoch seconds when the first worker started budget.timeout's clock (storages
# disagree on time zones, so not a datetime).
BUDGET_STARTED_AT = "hpo:budget_started_at"
ARTIFACT_STORE = "hpo:artifact_store"  # {"kind": "file", "path"} or {"kind": "s3", "bucket", "prefix"}
# One per retrained trial, the latest retrain's summary: {"seeds", "epochs", "train", "test",
# "test_split_used", "timestamp", "output"}. A template: the key is ``retrain_key(number)``.
RETRAIN = "hpo:retrain:{trial}"
# {"n_trials": int | None, "timeout": float | None}: the budget limits in force since
# ``hpo study extend`` (or a reuse whose spec differed only in them), in place of the stored
# spec's, which stays as created so that its sha256 still verifies it.
BUDGET_EXTENSION = "hpo:budget_extension"
# The latest ``hpo study confirm`` (hpo.results.confirm), written once when all its trainings
# are done: {"pick": trial number (the best mean; what ``hpo retrain`` trains by default),
# "metric", "direction", "test": "welch", "alpha", "trained_on": the device, "timestamp",
# "candidates": [{"trial", "original" (its value in the search), "seeds", "values" (one per
# seed), "mean", "std", "n", "p_value" and "within_noise" (against the pick; None on the
# pick), "failed": {seed: why}}, ...] best of the search first}.
CONFIRMATION = "hpo:confirmation"

TRIAL_KEYS = (
    WORKER, CONFIG, SEED, DEVICE, CPU_THREADS, VERSIONS,
    PARAMS_TOTAL, PARAMS_TRAINABLE, SECONDS_PER_EPOCH, IMAGES_PER_SECOND, PEAK_MEMORY_MB,
    PRECISION, DATA_REPORT, STOPPED_EARLY, STARTUP_SECONDS, EPOCHS_TRAINED, CURVES, GRAD_NORMS,
    FAIL_REASON, TRACEBACK, PRUNED_AT_EPOCH, OVER_BUDGET,
    RETRIES, RETRY_OF, RETRIED, CHECKPOINT, RESUME_FROM, CHECKPOINT_SUPERSEDED, RESUMED_FROM,
    ARTIFACTS, ARTIFACT_ERROR, WEIGHTS_MB, MODEL_IO, WEIGHTS_SKIPPED, WARM_START, CLAIM_TOKEN,
    UNIQUE_CONFIGURATION,
)
STUDY_KEYS = (SPEC, SPEC_SHA256, BUDGET_STARTED_AT, ARTIFACT_STORE, RETRAIN, BUDGET_EXTENSION,
              CONFIRMATION)

_RETRAIN_PREFIX = RETRAIN.partition("{")[0]


def retrain_key(number: int) -> str:
    """The study attribute that holds the latest retrain of trial ``number``."""
    return RETRAIN.format(trial=number)


# --- values with a shape of their own -----------------------------------------------------


@dataclass(frozen=True)
class WorkerIdentity:
    """The ``worker`` attribute: which process on which host runs the trial."""

    host: Any = None
    pid: Any = None
    rank: Any = None

    def as_attr(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "rank": self.rank}

    @classmethod
    def from_attr(cls, value: Any) -> WorkerIdentity | None:
        if not value:
            return None
        return cls(value.get("host"), value.get("pid"), value.get("rank"))


@dataclass(frozen=True)
class ResumedFrom:
    """The ``resumed_from`` attribute: the checkpoint a retry resumed from, and its position."""

    checkpoint: Any = None
    epoch: Any = None
    batch: Any = None

    def as_attr(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "epoch": self.epoch, "batch": self.batch}

    @classmethod
    def from_attr(cls, value: Any) -> ResumedFrom | None:
        if not value:
            return None
        return cls(value.get("checkpoint"), value.get("epoch"), value.get("batch"))


@dataclass(frozen=True)
class GradNorms:
    """The ``grad_norms`` attribute: per-epoch, per-layer gradient norms.

    Layers are a list, not an object's keys, so that their order (input first) survives any
    JSON store. ``norms[e][i]`` is layer ``layers[i]`` in the (e+1)-th epoch trained; None
    where an epoch did not record that layer or had no finite step for it (fp16 overflow).
    """

    layers: list[str]
    norms: list[list[float | None]]

    def as_attr(self) -> dict[str, Any]:
        return {"layers": self.layers, "norms": self.norms}

    @classmethod
    def from_attr(cls, value: Any) -> GradNorms | None:
        if not value:
            return None
        return cls(list(value.get("layers") or []), [list(row) for row in value.get("norms") or []])

    @classmethod
    def from_epochs(cls, epochs: Iterable[Mapping[str, float] | None]) -> GradNorms | None:
        """From each epoch's ``{layer: norm}`` (None: not recorded); None when no epoch has one.
        Norms keep 4 significant digits: what a plot or a comparison needs, a small attribute."""
        rows = list(epochs)
        layers: list[str] = []
        for row in rows:
            layers += [name for name in row or {} if name not in layers]
        if not layers:
            return None
        return cls(layers, [[_significant(row.get(name)) if row else None for name in layers] for row in rows])

    def per_layer(self) -> dict[str, list[float | None]]:
        """Layer -> its norm in each epoch trained, input layer first."""
        return {name: [row[i] if i < len(row) else None for row in self.norms]
                for i, name in enumerate(self.layers)}


def _significant(value: float | None) -> float | None:
    # NaN (no finite step) is the only value unequal to itself; JSON has no NaN, so None.
    return None if value is None or value != value else float(f"{value:.4g}")


# --- readers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """One trial as hpo's readers (show, best, export, report, retrain) see it.

    Fields hold what is stored, as stored (no coercion: a study from an older version reads
    the same), None where the trial has no such attribute. ``user_attrs`` keeps all of them,
    for the export and for keys this version does not know.
    """

    number: int
    state: TrialState
    values: list[float] | None
    params: dict[str, Any]
    datetime_start: datetime | None
    datetime_complete: datetime | None
    user_attrs: Mapping[str, Any] = field(repr=False)
    # who ran it and what
    worker: WorkerIdentity | None = None
    config: dict[str, Any] | None = None
    seed: int | None = None
    device: str | None = None
    cpu_threads: int | None = None
    versions: dict[str, str] | None = None
    # what it measured
    params_total: int | None = None
    params_trainable: int | None = None
    seconds_per_epoch: float | None = None
    images_per_second: float | None = None
    peak_memory_mb: float | None = None
    precision: str | None = None
    data_report: dict[str, Any] | None = None
    stopped_early: bool | None = None
    startup_seconds: float | None = None
    epochs_trained: int | None = None
    curves: Mapping[str, list[Any]] = field(default_factory=dict, repr=False)
    grad_norms: GradNorms | None = field(default=None, repr=False)  # train.record_gradients
    # how it ended
    fail_reason: str | None = None
    traceback: str | None = field(default=None, repr=False)
    pruned_at_epoch: int | None = None
    over_budget: bool = False
    # retries and checkpoints
    retries: int = 0
    retry_of: int | None = None
    retried: bool = False
    checkpoint: str | None = None
    resume_from: str | None = None
    checkpoint_superseded: str | None = None
    resumed_from: ResumedFrom | None = None
    # files
    artifacts: Mapping[str, str] = field(default_factory=dict)
    artifact_error: str | None = None
    weights_mb: float | None = None
    model_io: dict[str, Any] | None = None
    weights_skipped: str | None = None
    warm_start: dict[str, Any] | None = None  # {"study", "trial"}: added by a warm start, not run here

    @classmethod
    def from_frozen(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        return cls(
            number=trial.number,
            state=trial.state,
            values=trial.values,
            params=dict(trial.params),
            datetime_start=trial.datetime_start,
            datetime_complete=trial.datetime_complete,
            user_attrs=attrs,
            worker=WorkerIdentity.from_attr(attrs.get(WORKER)),
            config=attrs.get(CONFIG),
            seed=attrs.get(SEED),
            device=attrs.get(DEVICE),
            cpu_threads=attrs.get(CPU_THREADS),
            versions=attrs.get(VERSIONS),
            params_total=attrs.get(PARAMS_TOTAL),
            params_trainable=attrs.get(PARAMS_TRAINABLE),
            seconds_per_epoch=attrs.get(SECONDS_PER_EPOCH),
            images_per_second=attrs.get(IMAGES_PER_SECOND),
            peak_memory_mb=attrs.get(PEAK_MEMORY_MB),
            precision=attrs.get(PRECISION),
            data_report=attrs.get(DATA_REPORT),
            stopped_early=attrs.get(STOPPED_EARLY),
            startup_seconds=attrs.get(STARTUP_SECONDS),
            epochs_trained=attrs.get(EPOCHS_TRAINED),
            curves=attrs.get(CURVES) or {},
            grad_norms=GradNorms.from_attr(attrs.get(GRAD_NORMS)),
            fail_reason=attrs.get(FAIL_REASON),
            traceback=attrs.get(TRACEBACK),
            pruned_at_epoch=attrs.get(PRUNED_AT_EPOCH),
            over_budget=bool(attrs.get(OVER_BUDGET)),
            retries=attrs.get(RETRIES, 0),
            retry_of=attrs.get(RETRY_OF),
            retried=bool(attrs.get(RETRIED)),
            checkpoint=attrs.get(CHECKPOINT),
            resume_from=attrs.get(RESUME_FROM),
            checkpoint_superseded=attrs.get(CHECKPOINT_SUPERSEDED),
            resumed_from=ResumedFrom.from_attr(attrs.get(RESUMED_FROM)),
            artifacts=attrs.get(ARTIFACTS) or {},
            artifact_error=attrs.get(ARTIFACT_ERROR),
            weights_mb=attrs.get(WEIGHTS_MB),
            model_io=attrs.get(MODEL_IO),
            weights_skipped=attrs.get(WEIGHTS_SKIPPED),
            warm_start=attrs.get(WARM_START),
        )

    @property
    def value(self) -> float | None:
        """The first objective's value (the only one, usually); None when unfinished."""
        return self.values[0] if self.values else None

    @property
    def state_name(self) -> str:
        """``complete``, ``pruned``, ``fail``, ``running`` or ``waiting``."""
        return self.state.name.lower()

    @property
    def duration(self) -> timedelta | None:
        if self.datetime_start is None or self.datetime_complete is None:
            return None
        return self.datetime_complete - self.datetime_start

    def curve(self, name: str) -> list[float]:
        """One per-epoch curve (``val_loss``, ``val_accuracy``, ...), missing epochs left out."""
        return [v for v in self.curves.get(name) or [] if v is not None]

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Split -> class name -> images of that class in the split (the data report's counts
        by label, named; labels stand in for names a trial recorded none for)."""
        report = self.data_report or {}
        counts = report.get("class_counts") or {}
        return {split: dict(zip(_class_names(report, len(per_label)), per_label))
                for split, per_label in counts.items()}

    def class_weights(self) -> dict[str, float] | None:
        """Class name -> its weight in the training loss, as applied; None when the loss was
        unweighted (train.class_weights none) or the trial predates the record."""
        report = self.data_report or {}
        weights = report.get("class_weights")
        if not weights:
            return None
        return dict(zip(_class_names(report, len(weights)), weights))

    @property
    def best_val_accuracy(self) -> float | None:
        accuracy = self.curve("val_accuracy")
        return max(accuracy) if accuracy else None


def _class_names(report: Mapping[str, Any], count: int) -> list[str]:
    names = list(report.get("class_names") or [])
    return names if len(names) == count else [str(label) for label in range(count)]


def trial_records(trials: Iterable[FrozenTrial | TrialRecord]) -> list[TrialRecord]:
    """FrozenTrials (or records already) as TrialRecords."""
    return [t if isinstance(t, TrialRecord) else TrialRecord.from_frozen(t) for t in trials]


@dataclass(frozen=True)
class StudyRecord:
    """A study's hpo attributes."""

    spec: dict[str, Any] | None = None
    spec_sha256: str | None = None
    budget_started_at: float | None = None
    artifact_store: dict[str, str] | None = None
    retrains: Mapping[int, dict[str, Any]] = field(default_factory=dict)  # trial number -> summary
    budget_extension: dict[str, Any] | None = None
    confirmation: dict[str, Any] | None = None  # the latest ``hpo study confirm``

    @property
    def confirmed_trial(self) -> int | None:
        """The trial ``hpo study confirm`` picked (what ``hpo retrain`` trains by default)."""
        pick = (self.confirmation or {}).get("pick")
        return pick if isinstance(pick, int) else None

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StudyRecord:
        """From a study's user attributes (``study.user_attrs``, a FrozenStudy's, or the
        storage's ``get_study_user_attrs``)."""
        retrains = {int(key[len(_RETRAIN_PREFIX):]): value for key, value in attrs.items()
                    if key.startswith(_RETRAIN_PREFIX) and key[len(_RETRAIN_PREFIX):].isdigit()}
        return cls(
            spec=attrs.get(SPEC),
            spec_sha256=attrs.get(SPEC_SHA256),
            budget_started_at=attrs.get(BUDGET_STARTED_AT),
            artifact_store=attrs.get(ARTIFACT_STORE),
            retrains=retrains,
            budget_extension=attrs.get(BUDGET_EXTENSION),
            confirmation=attrs.get(CONFIRMATION),
        )
