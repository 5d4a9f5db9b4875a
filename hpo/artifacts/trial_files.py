"""Per-trial files in the study's artifact store: learning curve, confusion matrix, weights.

Uploaded by the worker just before it tells a trial's outcome (Optuna refuses artifact
metadata on finished trials). Which files a trial has is recorded in its ``artifacts`` user
attribute (file name -> artifact id), so reports and the dashboard find them without listing
the store. Nothing here may fail a trial: errors become a warning and ``artifact_error``.

Weights are the bulk of a store; ``$HPO_KEEP_WEIGHTS`` says whose to keep:
``all``, ``none`` or ``best:K`` (default ``best:3``: a completed trial's weights are uploaded
only if it is among the K best completed trials so far; earlier uploads are not deleted).
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import UsageError
from hpo.study.attrs import ARTIFACT_ERROR, ARTIFACTS, MODEL_IO, WEIGHTS_MB, WEIGHTS_SKIPPED

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import Trial
    from torch import nn

    from hpo.spec.model import Spec
    from hpo.storage.optuna_internals import ArtifactStore

log = logging.getLogger(__name__)

KEEP_ENV = "HPO_KEEP_WEIGHTS"
DEFAULT_KEEP = "best:3"
CURVE_FILE = "learning_curve.svg"
CONFUSION_FILE = "confusion_matrix.png"
WEIGHTS_FILE = "weights.pt"


def keep_policy(value: str | None = None) -> tuple[str, int]:
    """``all`` | ``none`` | ``best:K`` (K >= 1) -> (kind, K); from ``$HPO_KEEP_WEIGHTS``."""
    raw = (value if value is not None else os.environ.get(KEEP_ENV) or DEFAULT_KEEP).strip().lower()
    if raw in ("all", "none"):
        return raw, 0
    match = re.fullmatch(r"best:(\d+)", raw)
    if match and int(match.group(1)) >= 1:
        return "best", int(match.group(1))
    raise UsageError(f"{KEEP_ENV}={raw!r} is not a weights policy (expected all, none or best:K with K >= 1)")


def save_trial_artifacts(
    study: Study, trial: Trial, history: Sequence[Any], result: Any = None, *, spec: Spec | None = None
) -> dict[str, Any]:
    """Upload what a finished trial has; never raises. Returns the user attributes that
    describe it (``artifacts``: {file name: artifact id}, ``weights_mb``, ``model_io``,
    ``weights_skipped``, ``artifact_error``), for the caller to write with the trial's
    other results in one go.

    ``history``: its EpochMetrics (a failed trial passes what it reached). ``result``: the
    TrainingResult when training returned; confusion matrix and weights only if not pruned
    (the weights need ``spec`` then).
    """
    attrs: dict[str, Any] = {}
    uploaded: dict[str, str] = {}
    try:
        from hpo.artifacts.store import study_store

        store = study_store(study)
        if store is None or not history:  # a study from before artifacts, or nothing to plot
            return attrs
        with tempfile.TemporaryDirectory(prefix="hpo-artifacts-") as tmp:
            for path, mimetype in _trial_files(study, trial, history, result, spec, Path(tmp), attrs):
                uploaded[path.name] = _upload(store, path, trial, mimetype)
    except Exception as exc:  # a full disk or an S3 outage must not cost the trial
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("trial %s: artifacts not saved: %s", trial.number, reason)
        attrs[ARTIFACT_ERROR] = reason[:1000]
    if uploaded:
        attrs[ARTIFACTS] = uploaded
    return attrs


def _trial_files(study: Study, trial: Trial, history: Sequence[Any], result: Any, spec: Spec | None,
                 folder: Path, attrs: dict[str, Any]) -> list[tuple[Path, str]]:
    """The trial's files, written in ``folder``, as (path, mimetype); what describes the
    weights, kept or not, goes into ``attrs``."""
    from hpo.artifacts.images import draw_learning_curve

    curve = draw_learning_curve(history, folder / CURVE_FILE, title=f"trial {trial.number}")
    files = [(curve, "image/svg+xml")]
    complete = result is not None and not result.pruned
    if complete and result.val_predictions is not None:
        path = plot_confusion_matrix(result.val_targets, result.val_predictions, result.class_names,
                                     folder / CONFUSION_FILE, title=f"trial {trial.number}, validation")
        files.append((path, "image/png"))
    if complete and result.model is not None:
        keep, why = _keep_weights(study, trial, history, spec)
        if keep:
            path = _save_weights(result.model, folder / WEIGHTS_FILE)
            attrs[WEIGHTS_MB] = round(path.stat().st_size / 2**20, 3)
            attrs[MODEL_IO] = {"in_shape": list(result.in_shape), "num_classes": len(result.class_names)}
            files.append((path, "application/octet-stream"))
        else:
            attrs[WEIGHTS_SKIPPED] = why
    return files


def _upload(store: ArtifactStore, path: Path, trial: Trial, mimetype: str) -> str:
    from optuna.artifacts import upload_artifact

    return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype=mimetype)


# -- which weights to keep ----------------------------------------------------------------


def _objective(spec: Spec, study: Study) -> tuple[str, bool]:
    """(metric, maximize) of the first objective, the per-epoch one: what ``best:K`` ranks by."""
    objectives = spec.objectives
    maximize = study.directions[0].name.lower() == "maximize"
    return str(objectives[0].metric), maximize


def _keep_weights(study: Study, trial: Trial, history: Sequence[Any], spec: Spec | None) -> tuple[bool, str]:
    kind, k = keep_policy()
    if kind != "best":
        return kind == "all", f"{KEEP_ENV}={kind}"
    assert spec is not None, "best:K ranks by the spec's objective: the worker passes it with a result"
    from optuna.trial import TrialState

    metric, maximize = _objective(spec, study)
    sign = 1.0 if maximize else -1.0
    values = [sign * getattr(m, metric) for m in history if math.isfinite(getattr(m, metric))]
    if not values:
        return False, "no finite objective value"
    mine = max(values)
    from hpo.storage.proxies import light_study

    completed = light_study(study).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    others = [sign * t.values[0] for t in completed if t.number != trial.number and t.values]
    better = sum(v > mine for v in others)
    if better < k:
        return True, ""
    return False, f"not among the best {k} completed trials when it finished ({KEEP_ENV}=best:{k})"


def _save_weights(model: nn.Module, path: Path) -> Path:
    import torch

    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


# -- plots ---------------------------------------------------------------------------------


def plot_confusion_matrix(
    targets: Sequence[int], predictions: Sequence[int], class_names: Sequence[str], path: Path, *, title: str = ""
) -> Path:
    """Counts (scikit-learn's), true label by row; numbers in the cells up to 20 classes."""
    from sklearn.metrics import confusion_matrix

    from hpo.artifacts.images import draw_confusion_matrix

    n = len(class_names) or max(max(targets, default=0), max(predictions, default=0)) + 1
    names = list(class_names) or [str(i) for i in range(n)]
    counts = confusion_matrix(targets, predictions, labels=list(range(n))).tolist()
    return draw_confusion_matrix(counts, names, path, title=title)
