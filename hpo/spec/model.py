"""The validated spec: pydantic models for the top level and for searched parameters.

The keys inside ``data``, ``model`` and ``train`` are defined next to the code that uses
them (``hpo.training.config`` and each family in ``hpo.models``); this module composes them,
so each default lives in exactly one place. The JSON Schema of the spec is generated
from these models (see ``hpo.spec.schema``).
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

import hpo.models  # noqa: F401  (registers every model family before the Spec is built)
from hpo.models.registry import MODELS, ModelConfig
from hpo.spec.strategies import PrunerOptions, SamplerOptions, SuccessiveHalvingOptions, TPEOptions
from hpo.training.config import DataConfig, TrainConfig

# Reported every epoch (the first objective must be one: it drives the pruner).
EPOCH_METRICS = ("val_accuracy", "val_loss", "train_loss")
# Known once a trial has trained: for the further objectives of a multi-objective study.
TRIAL_METRICS = ("params", "peak_memory_mb", "seconds_per_epoch", "images_per_second")
NATURAL_DIRECTION = {
    "val_accuracy": "maximize", "val_loss": "minimize", "train_loss": "minimize",
    "params": "minimize", "peak_memory_mb": "minimize", "seconds_per_epoch": "minimize",
    "images_per_second": "maximize",
}
STUDY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"

Scalar = str | int | float | bool | None
# A searched choice: a scalar, or a list such as a list of augmentation steps (given to
# Optuna as its label, see choice_label: Optuna's categorical choices must be scalars).
Choice = Scalar | list[Any]


class _Strict(BaseModel):
    # Finite floats only, as in every config section (hpo.training.config.FINITE).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Objective(_Strict):
    """What a trial is scored by; reported every epoch so the pruner can act on it."""

    metric: Literal[
        "val_accuracy", "val_loss", "train_loss",
        "params", "peak_memory_mb", "seconds_per_epoch", "images_per_second",
    ] = Field("val_accuracy", description="per-epoch metrics first; the others only as further objectives")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="defaults to maximize for accuracy, minimize for losses"
    )

    @model_validator(mode="after")
    def _natural_direction(self) -> Objective:
        if self.direction is None:
            self.direction = NATURAL_DIRECTION[self.metric]  # type: ignore[assignment]
        return self


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*"
                       r"(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"45s"``, ``"30m"``, ``"6h"``, ``"1h30m"`` or ``"2d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90, '45s', '30m', '6h' or '1h30m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match or not any(match.groups()):
            raise ValueError("expected a duration such as 90, '45s', '30m', '6h' or '1h30m'")
        days, hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


# budget.n_trials as a share of a finite search space: "20%", "12.5%".
SHARE_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*%\s*$"

# The default failure budget of a study without n_trials (only its timeout ends it).
FAILED_TRIALS_WITHOUT_N_TRIALS = 100


class Budget(_Strict):
    """Limits for the whole study, shared by every worker on every machine."""

    # A share of a finite space ("20%") is resolved to a count before this model sees it
    # (hpo.spec.finite_checks); the schema tells editors it may be written.
    n_trials: Annotated[
        int | None,
        WithJsonSchema({"anyOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": SHARE_PATTERN},
            {"type": "null"},
        ]}),
    ] = Field(100, ge=1, description="finished (complete or pruned) trials, or a share of a finite "
              "search space such as '20%'")
    timeout: Annotated[
        float | None,
        WithJsonSchema({"anyOf": [
            {"type": "number", "exclusiveMinimum": 0},
            {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?[dhms]\s*)+$"},
            {"type": "null"},
        ]}),
    ] = Field(None, description="seconds, or a duration like '30m', '6h', '1h30m'; counted from the first trial")
    max_failed_trials: int | None = Field(
        None, ge=1, description="stop every worker once this many trials have failed (default: "
        f"n_trials, or {FAILED_TRIALS_WITHOUT_N_TRIALS} without it)"
    )
    max_consecutive_failures: int = Field(
        5, ge=1, description="stop every worker once this many trials in a row (by trial number) "
        "have failed with the same reason"
    )
    max_retries: int = Field(
        2, ge=0, description="retries of a trial whose worker died or was stopped (same "
        "parameters, resumed from its last checkpoint)"
    )
    checkpoint_interval: float = Field(
        10, ge=0, description="a running trial saves a checkpoint at the end of an epoch once this "
        "many seconds have passed since its last one (0: every epoch), so a retry repeats at most "
        "that much training; SIGTERM always saves"
    )
    heartbeat_interval: float = Field(
        10, gt=0, le=3600, description="seconds between a running trial's heartbeats (PostgreSQL; at most "
        "an hour)"
    )
    heartbeat_grace_period: float = Field(
        60, gt=0, le=86400, description="a trial whose heartbeat is older than this many seconds (at most "
        "a day) has lost "
        "its worker; also how often (half of it) workers look for such trials"
    )

    @property
    def failed_trials_allowed(self) -> int:
        """``max_failed_trials``, or by default as many failures as trials to finish. Failed
        trials do not count towards ``n_trials``, so without a bound a study whose trials all
        fail never ends. (None, not a number, in the spec: specs stored before this default
        existed keep their hash.)"""
        if self.max_failed_trials is not None:
            return self.max_failed_trials
        return self.n_trials if self.n_trials is not None else FAILED_TRIALS_WITHOUT_N_TRIALS

    @model_validator(mode="after")
    def _grace_above_interval(self) -> Budget:
        if self.heartbeat_grace_period < 2 * self.heartbeat_interval:
            raise ValueError(
                f"heartbeat_grace_period ({self.heartbeat_grace_period:g} s) must be at least twice "
                f"heartbeat_interval ({self.heartbeat_interval:g} s): one late heartbeat must not "
                "fail a live trial"
            )
        return self

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)


class SearchParam(_Strict):
    """One searched value. Shapes follow Optuna's distributions."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Choice] | None = Field(
        None, description="values to choose from; a list choice (e.g. of augmentation steps) "
        "is shown by its label, such as hflip+rotation"
    )
    type: Literal["int", "float", "categorical"] | None = Field(
        None, description="int when both bounds are integers, unless given"
    )
    when: dict[str, Scalar | list[Scalar]] | None = Field(
        None, description="sample only when every listed path has (one of) the given value(s)"
    )
    repeat: str | None = Field(
        None, description="an integer path, e.g. model.n_blocks: one value per block, as a list"
    )

    def kind(self) -> str:
        if self.type:
            return self.type
        if self.choices is not None:
            return "categorical"
        bounds = (self.low, self.high)
        if all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            return "int"
        return "float"

    def labels(self) -> list[Scalar]:
        """The choices as Optuna gets them: scalars as they are, lists as readable labels."""
        return [choice_label(c) for c in self.choices or []]

    def choice_index(self, value: Any) -> int | None:
        """Which choice ``value`` is: the choice as written, or its label (same type, so that
        ``1`` is not ``true``); None when it is neither."""
        for index, (choice, label) in enumerate(zip(self.choices or [], self.labels())):
            if any(type(value) is type(c) and value == c for c in (choice, label)):
                return index
        return None

    def condition(self) -> dict[str, list[Scalar]]:
        """``when`` with every value as a list of accepted values."""
        return {
            path: list(value) if isinstance(value, list) else [value]
            for path, value in (self.when or {}).items()
        }


def choice_label(value: Any) -> Scalar:
    """A choice as Optuna stores it and the dashboard shows it: a scalar as it is; a list as
    its items joined by ``+`` (``[]`` is ``none``); a ``{name: ..., key: value}`` item as
    ``name(key=value,...)``. Two choices with one label are the same choice to Optuna, so
    validation refuses them as repeats (``[]`` and ``none`` mean the same)."""
    if not isinstance(value, list):
        return value
    return "+".join(_item_label(item) for item in value) or "none"


def _item_label(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        rest = ",".join(f"{k}={_item_label(v)}" for k, v in item.items() if k != "name")
        return f"{item['name']}({rest})" if rest else item["name"]
    return json.dumps(item, separators=(",", ":"), default=str)


def model_config_union() -> Any:
    """A union of every registered model family's config, told apart by ``name``."""
    configs = tuple(MODELS.get(name).config for name in MODELS.names())
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[configs], Field(discriminator="name")]  # noqa: UP007


if TYPE_CHECKING:
    ModelSection = ModelConfig  # what code reads: the keys every family shares
else:
    # What pydantic validates: exactly one family, chosen by ``name``. Importing hpo.models
    # (above) registered them all.
    ModelSection = model_config_union()


class Spec(_Strict):
    """A study: what to train, how to search it, and the budget."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="hpo study spec")

    name: str | None = Field(
        None, pattern=STUDY_NAME_PATTERN, description="study name; `--name` overrides it"
    )
    objective: Objective | list[Objective] = Field(
        Objective(), description="one objective, or a list for multi-objective (pruned on the first)"
    )
    budget: Budget = Budget()
    sampler: Annotated[SamplerOptions, Field(discriminator="name")] = TPEOptions()
    pruner: Annotated[PrunerOptions, Field(discriminator="name")] = SuccessiveHalvingOptions()
    data: DataConfig = DataConfig()
    model: ModelSection
    train: TrainConfig = TrainConfig()
    search: dict[str, SearchParam] = Field(
        default_factory=dict,
        description="dotted paths into data/model/train mapped to distributions",
    )
    enqueue: list[dict[str, Scalar | list[Any]]] = Field(
        default_factory=list,
        description="(partial) parameter sets the study evaluates first, once, when it is created; "
        "the sampler fills in the keys a set leaves out",
    )

    @property
    def objectives(self) -> list[Objective]:
        """Always a list, the first the one pruned on: one entry for a single objective.

        ``objective`` keeps the shape the YAML had, so that the stored spec (and its hash)
        reads back exactly as written."""
        return list(self.objective) if isinstance(self.objective, list) else [self.objective]

    @model_validator(mode="before")
    @classmethod
    def _default_strategy_names(cls, data: Any) -> Any:
        # A sampler or pruner without a name is the default one with those options
        # (``sampler: {seed: 0}``). A multi-objective study's default pruner stays the
        # median rule: the replay benchmark that chose successive halving measured
        # single-objective studies only.
        if not isinstance(data, dict):
            return data
        defaults = {"sampler": "tpe", "pruner": default_pruner(data)}
        for key, name in defaults.items():
            section = data.get(key, {})
            if isinstance(section, dict) and "name" not in section:
                data = {**data, key: {"name": name, **section}}
        return data


def default_pruner(raw: dict[str, Any]) -> str:
    """``successive_halving``, or ``median`` for a multi-objective spec (see Spec)."""
    return "median" if isinstance(raw.get("objective"), list) else "successive_halving"
