"""The ``data:`` and ``train:`` sections of a spec, validated without importing torch.

Defaults live here and nowhere else. Validator messages are written to follow ``key: ``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hpo.errors import unknown_name_message
from hpo.training.augment import AugmentSpec
from hpo.training.datasets import DATASETS
from hpo.training.optim import OPTIMIZERS
from hpo.training.schedules import SCHEDULES

# numpy's generators take seeds in [0, 2**32); a worker adds its rank to sampler.seed (wrapping
# round 2**32, see hpo.spec.strategies), and retraining adds 0..K-1 to train.seed.
MAX_SEED = 2**31 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
MAX_EPOCHS = 10_000  # also bounds every count of epochs (warm-up, patience, pruning rungs)
MAX_BATCH_SIZE = 2**20

# Every float of a config is finite: torch and Optuna take .inf and .nan, and each trial then
# fails (lr, grad_clip) or a worker's thread dies (a heartbeat every .inf seconds).
FINITE = ConfigDict(extra="forbid", allow_inf_nan=False)


DEFAULT_FRACTION = 0.2  # data.val_fraction and data.test_fraction
SPLIT_SIZES = ("val", "test")  # the splits sized by <split>_fraction or <split>_per_class
# A searched count per class takes the place of its split's fraction: the fixed config a trial
# starts from holds the fraction's default, which the user did not choose (hpo.spec.space).
SEARCHED_REPLACES = {f"data.{split}_per_class": f"data.{split}_fraction" for split in SPLIT_SIZES}
# Where and how the data is read, not which examples: two configs differing only here train
# on the same data (a warm start from a laptop's study to a cluster's compares the rest).
READ_ONLY_KEYS = ("data.root", "data.download", "data.num_workers", "data.in_memory")


def _official_test_sets() -> frozenset[str]:
    """The datasets whose source has its own test set (torchvision's); imported only when a
    spec sets test_per_class, so validation stays free of numpy otherwise."""
    from hpo.training.torchvision_data import SOURCES

    return frozenset(SOURCES)


def one_of(names: list[str]) -> dict[str, JsonValue]:
    """The JSON Schema's ``enum`` of a registry's names, so that editors complete them."""
    values: list[JsonValue] = list(names)
    return {"enum": values}

class DataConfig(BaseModel):
    model_config = FINITE

    name: str = "digits"
    # torchvision datasets: the directory holding <Dataset>/raw or cifar-*-batches-py;
    # None means $HPO_DATA_ROOT, else "data" (relative to the worker's working directory).
    root: str | None = None
    download: bool = False  # torchvision datasets: fetch into root when missing
    path: str | None = None  # image_folder: directory of class folders (or train/ val/ test/)
    # A subset of classes: the first N, or a list of names or indices (in the order given);
    # labels are renumbered 0..k-1 in that order.
    classes: int | list[int | str] | None = Field(None, union_mode="left_to_right")
    # Of the training pool: the whole dataset when it has no official test split (digits,
    # folders), the official training set otherwise. Stratified, seeded by split_seed.
    # None where val_per_class sizes the split instead (set so when only that one is given).
    val_fraction: float | None = Field(DEFAULT_FRACTION, gt=0, lt=1)
    # Held out, never seen while tuning; only for datasets without an official test split.
    test_fraction: float | None = Field(DEFAULT_FRACTION, gt=0, lt=1)
    # Instead of the fraction: exactly this many examples of every class (the test split is
    # carved first, then validation; each class keeps at least one to train on).
    val_per_class: int | None = Field(None, ge=1)
    test_per_class: int | None = Field(None, ge=1)  # not for datasets with an official test set
    # Keep only this stratified share of what is left for training (after validation and
    # test are carved off), for quick tuning on a large dataset; validation stays whole.
    train_fraction: float = Field(1.0, gt=0, le=1)
    split_seed: Seed = 0  # separate from train.seed so every trial sees the same split
    # Side of the square images the model sees; None keeps the stored size (64 for folders).
    image_size: int | None = Field(None, ge=4, le=4096)
    # image_folder: decode once into memory (true), stream from disk through DataLoader
    # workers (false), or decide by size (null: in memory up to 2 GiB decoded).
    in_memory: bool | None = None
    num_workers: int = Field(2, ge=0, le=64)  # DataLoader worker processes for streamed folders
    # Training batches only, on the device: a preset (none | light | strong), one transform's
    # name, or a list of names and {name: ..., <param>: ...}; see hpo.training.augment.
    augment: AugmentSpec = "none"

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(unknown_name_message("dataset", v, DATASETS.names()))
        return v

    @field_validator("classes")
    @classmethod
    def _class_subset(cls, v: int | list[int | str] | None) -> int | list[int | str] | None:
        # The spec's error formatter appends the value received, so messages omit it.
        if isinstance(v, int):
            if v < 2:
                raise ValueError("a classifier needs at least 2 classes")
        elif v is not None:
            if len(v) < 2:
                raise ValueError("a classifier needs at least 2 classes")
            if len(set(map(str, v))) < len(v):
                raise ValueError("a class is listed more than once")
            if any(isinstance(c, int) and c < 0 for c in v):
                raise ValueError("class indices start at 0")
        return v

    @model_validator(mode="before")
    @classmethod
    def _count_replaces_default_fraction(cls, raw: Any) -> Any:
        # A count per class given alone replaces the fraction's default. Done on the input, as
        # only there is "not given" told from "given 0.2"; a config's dump (what a trial
        # records) then says None, so it validates again.
        if isinstance(raw, dict):
            for split in SPLIT_SIZES:
                if raw.get(f"{split}_per_class") is not None and f"{split}_fraction" not in raw:
                    raw = {**raw, f"{split}_fraction": None}
        return raw

    @field_validator("val_per_class", "test_per_class")
    @classmethod
    def _count_or_fraction(cls, v: int | None, info: ValidationInfo) -> int | None:
        split = info.field_name.removesuffix("_per_class") if info.field_name else ""
        fraction = info.data.get(f"{split}_fraction")
        if v is not None and fraction is not None:
            raise ValueError(f"give either {split}_per_class or {split}_fraction ({fraction}), not both")
        if v is not None and split == "test" and info.data.get("name") in _official_test_sets():
            raise ValueError(
                f"{info.data['name']} has an official test set, which is used whole; test_per_class "
                "is for datasets without one (digits, image folders without test/)"
            )
        return v

    @model_validator(mode="after")
    def _default_fractions(self) -> DataConfig:
        # Neither form given (a fraction written as null): the default fraction.
        if self.val_fraction is None and self.val_per_class is None:
            self.val_fraction = DEFAULT_FRACTION
        if self.test_fraction is None and self.test_per_class is None:
            self.test_fraction = DEFAULT_FRACTION
        return self

    @model_validator(mode="after")
    def _room_to_train(self) -> DataConfig:
        # Counts per class are checked against each class when the dataset is split.
        if self.val_fraction is None or self.test_fraction is None:
            return self
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be below 1 to leave data to train on "
                f"(got {self.val_fraction} + {self.test_fraction})"
            )
        return self

    @model_validator(mode="after")
    def _path_for_folders(self) -> DataConfig:
        if self.name == "image_folder" and not self.path:
            raise ValueError("name image_folder needs path: the directory of class folders")
        if self.name != "image_folder" and self.path is not None:
            raise ValueError(f"path is only used by name: image_folder (got name {self.name!r})")
        return self


class EarlyStoppingConfig(BaseModel):
    model_config = FINITE

    patience: int = Field(ge=1, le=MAX_EPOCHS)  # epochs without improvement of `metric` before stopping
    min_delta: float = Field(0.0, ge=0)  # improvement must exceed this to reset patience
    # What must keep improving; accuracy must rise, loss must fall.
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"


class TrainConfig(BaseModel):
    model_config = FINITE

    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE)
    optimizer: str = Field("adam", json_schema_extra=one_of(OPTIMIZERS.names()))  # see optim.py
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # used by sgd and rmsprop
    nesterov: bool = False  # sgd only; needs momentum > 0
    weight_decay: float = Field(0.0, ge=0)
    seed: Seed = 0  # model initialisation, shuffling, dropout, augmentation
    early_stopping: EarlyStoppingConfig | None = None
    # Learning-rate schedule: none | step | cosine | one_cycle | plateau. Stepped every
    # batch (plateau: every epoch, on plateau_metric); it starts after the warm-up.
    schedule: str = Field("none", json_schema_extra=one_of(SCHEDULES.names()))
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)  # linear ramp up to lr, batch by batch; one_cycle: its rise
    step_size: int = Field(10, ge=1, le=MAX_EPOCHS)  # step: epochs between lr decays
    gamma: float = Field(0.1, gt=0, lt=1)  # step and plateau: the lr is multiplied by this
    min_lr: float = Field(0.0, ge=0)  # cosine: the lr it anneals to by the end; plateau: floor
    plateau_patience: int = Field(2, ge=1, le=MAX_EPOCHS)  # plateau: epochs without improvement before a decay
    plateau_metric: Literal["val_loss", "val_accuracy"] = "val_loss"  # plateau: what must improve
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # training loss only; val_loss is plain
    # balanced: class c weighs n_samples / (n_classes * count_c) in the training loss
    class_weights: Literal["none", "balanced"] = "none"
    grad_clip: float | None = Field(None, gt=0)  # max L2 norm of all gradients together
    # Per-epoch L2 norm of each Linear/Conv weight's gradient (mean over the epoch's batches),
    # kept with the trial's curves (hpo.study.attrs.GRAD_NORMS) and plotted by the report.
    record_gradients: bool = False
    # Autocast dtype. fp16 (with loss scaling) needs CUDA and falls back to fp32 elsewhere;
    # bf16 runs on CUDA (when supported) and CPU. The precision used is in the result.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False  # NHWC memory format on CUDA (ignored elsewhere); speeds up conv nets in fp16/bf16
    # torch.use_deterministic_algorithms(True) and deterministic cuDNN for this trial: slower,
    # and ops without a deterministic CUDA kernel fail the trial.
    deterministic: bool = False

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        if v not in OPTIMIZERS:
            raise ValueError(unknown_name_message("optimizer", v, OPTIMIZERS.names()))
        return v

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, v: str) -> str:
        if v not in SCHEDULES:
            raise ValueError(unknown_name_message("schedule", v, SCHEDULES.names()))
        return v
