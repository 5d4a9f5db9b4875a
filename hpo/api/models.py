"""A trained model back from a study's trial (its stored weights) or from ``hpo retrain``'s
output folder: the ``nn.Module`` in eval mode, plus how its inputs were prepared."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.api.studies import Models, Storage, module_policy, storage_target
from hpo.errors import HpoError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from hpo.study.attrs import TrialRecord
    from hpo.study.studies import LoadedStudy

# The metrics.json hpo retrain writes into its output folder.
RETRAIN_METRICS = "metrics.json"


@dataclass(frozen=True)
class Preprocess:
    """What the trials did to every batch before the model saw it, as a callable: images
    (N, C, H, W) or one (C, H, W) (for one channel also (N, H, W) or (H, W)), as a tensor
    or a NumPy array, in the dataset's own pixel values (0..255, or 0..16 for digits) ->
    a float tensor of ``in_shape`` (resized bilinearly if need be), divided by ``scale``
    and normalised with the training split's ``mean`` and ``std``."""

    in_shape: tuple[int, int, int]  # (C, H, W) the model takes
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float

    def __call__(self, images: torch.Tensor | np.ndarray, device: Any = "cpu") -> torch.Tensor:
        import torch

        from hpo.training.batches import TensorBatches

        x = torch.as_tensor(images)
        channels = self.in_shape[0]
        if x.ndim == 2 or (x.ndim == 3 and channels == 1):
            x = x.unsqueeze(-3)  # (H, W) -> (1, H, W); (N, H, W) -> (N, 1, H, W)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != channels:
            raise UsageError(f"images of shape {tuple(torch.as_tensor(images).shape)}: the model takes "
                             f"{channels}-channel images, as (N, {channels}, H, W) or ({channels}, H, W)")
        x = x.to(device)
        # The trials' own batch preparation (hpo.training.batches), so that the two never differ.
        source = TensorBatches(x, torch.zeros(len(x), dtype=torch.int64), mean=self.mean, std=self.std,
                               scale=self.scale, image_size=self.in_shape[1:])
        return next(iter(source.batches(len(x))))[0]


@dataclass(frozen=True)
class TrainedModel:
    """A trained model: ``module`` (the ``nn.Module``, in eval mode) and ``preprocess``
    (raw images -> the model's input). ``predict`` and ``logits`` do both in one call."""

    module: nn.Module
    preprocess: Preprocess
    class_names: tuple[str, ...]  # index -> name, in the model's output order
    config: dict[str, Any]  # the resolved config it was trained with
    source: str  # where it came from: "study 'x', trial 3" or the retrain folder

    def logits(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        import torch

        device = next(iter(self.module.parameters())).device
        with torch.no_grad():
            return self.module(self.preprocess(images, device))

    def predict(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The predicted class index of each image (``class_names[i]`` names it)."""
        return self.logits(images).argmax(dim=1)


def load_model(source: str | os.PathLike[str], trial: int | None = None, storage: Storage = None, *,
               device: str = "cpu", models: Models | None = None) -> TrainedModel:
    """The trained model of a study's trial, or of an ``hpo retrain`` output folder.

    ``source``: a study name (``trial``: its number, default the best trial; ``storage`` as
    for ``load_results``), or the folder ``hpo retrain`` wrote (its first seed's weights; then
    no ``trial`` or ``storage``). A trial has weights when ``$HPO_KEEP_WEIGHTS`` kept them
    (default: the best 3 when each finished). ``models``: custom model classes, as for
    ``run_worker``; a custom module can also be allowed with ``$HPO_ALLOW_MODULES``."""
    from hpo.worker.device import check_device_name

    check_device_name(device)  # a typo is refused before anything is read
    folder = Path(source)
    if (folder / RETRAIN_METRICS).is_file():
        if trial is not None or storage is not None:
            raise UsageError(f"{folder} is a retrain folder: it holds one model, so trial= and "
                             "storage= do not apply")
        return model_of_folder(folder, device=device, models=models)
    from hpo.storage.closing import close_connections
    from hpo.study.studies import load_study

    loaded = load_study(os.fspath(source), storage_target(storage))
    try:
        return model_of_trial(loaded, trial, device=device, models=models)
    finally:
        close_connections(loaded.study)  # a one-shot call: its connections are not kept


def model_of_trial(loaded: LoadedStudy, number: int | None, *, device: str = "cpu",
                   models: Models | None = None) -> TrainedModel:
    """Trial ``number``'s (or the best trial's) stored weights, in the model they fit."""
    import tempfile

    from hpo.results.retrain import choose_trial

    study = loaded.study
    trial = choose_trial(loaded, number)
    weights = trial.artifacts.get(_weights_file())
    if weights is None:
        why = trial.weights_skipped or _UNFINISHED.get(trial.state_name) or trial.artifact_error or "none were saved"
        raise HpoError(f"trial {trial.number} of {study.study_name!r} has no stored weights ({why}); "
                       f"retrain it (hpo retrain {study.study_name} --trial {trial.number}) and "
                       "load the folder that writes")
    with tempfile.TemporaryDirectory(prefix="hpo-weights-") as tmp:
        path = Path(tmp) / "weights.pt"
        _download(study, weights, path)
        return _build(trial.config or {}, path, _model_io(trial), device, models,
                      f"study {study.study_name!r}, trial {trial.number}")


# Why a trial that did not complete has no weights (only a completed trial keeps them).
_UNFINISHED = {"fail": "it failed", "pruned": "it was pruned", "running": "it is still running",
               "waiting": "it has not run yet"}


def model_of_folder(folder: Path, *, device: str = "cpu", models: Models | None = None) -> TrainedModel:
    """The first seed's model of an ``hpo retrain`` output folder."""
    import json

    try:
        metrics = json.loads((folder / RETRAIN_METRICS).read_text())
        run = metrics["per_seed"][0]
        model = metrics["model"]
        io = (tuple(model["in_shape"]), int(model["num_classes"]))
        config = metrics["config"]
        weights, seed = folder / str(run["weights"]), run.get("seed")
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UsageError(f"{folder / RETRAIN_METRICS}: not a metrics.json written by hpo retrain "
                         f"({type(exc).__name__}: {exc})") from None
    return _build(config, weights, io, device, models, f"{folder} (seed {seed})")


def _weights_file() -> str:
    from hpo.artifacts.trial_files import WEIGHTS_FILE

    return WEIGHTS_FILE


def _model_io(trial: TrialRecord) -> tuple[tuple[int, ...], int]:
    io = trial.model_io or {}
    if "in_shape" not in io or "num_classes" not in io:
        raise HpoError(f"trial {trial.number}'s weights have no recorded model_io (in_shape, num_classes)")
    return tuple(io["in_shape"]), int(io["num_classes"])


def _download(study: Any, artifact_id: str, path: Path) -> None:
    from optuna.artifacts import download_artifact

    from hpo.artifacts.store import study_store

    store = study_store(study)
    if store is None:
        raise HpoError(f"study {study.study_name!r} records no artifact store")
    download_artifact(artifact_store=store, artifact_id=artifact_id, file_path=str(path))


def _build(config: dict[str, Any], weights: Path, io: tuple[Sequence[int], int], device: str,
           models: Models | None, source: str) -> TrainedModel:
    """The model of ``config`` with ``weights`` loaded, on ``device``, in eval mode."""
    import torch

    from hpo.models.registry import create_model
    from hpo.spec.trial_config import TrialConfig
    from hpo.training.data import input_format
    from hpo.worker.device import resolve_device
    from hpo.worker.model_code import using_module_policy

    resolved = TrialConfig.from_json(config)
    in_shape = (int(io[0][0]), int(io[0][1]), int(io[0][2]))
    with using_module_policy(module_policy(models)):
        # The weights replace every parameter: no pretrained file is needed to load them.
        module = create_model(resolved.model, in_shape, io[1], read_pretrained=False)
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    module.to(resolve_device(device)).eval()
    fmt = input_format(resolved.data)
    return TrainedModel(module, Preprocess(in_shape, fmt.mean, fmt.std, fmt.scale), fmt.class_names,
                        config, source)
