"""The model registry: ``@register_model(name, ConfigClass)`` and ``create_model(cfg, ...)``.

Each family declares a pydantic config (validated when the spec is, without torch) and a
builder that imports torch only when called, so ``hpo --help`` and spec checks stay fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hpo.errors import unknown_name_message
from hpo.models.init import DEFAULT_RANGE, DEFAULT_STD, INITIALIZERS, apply_initializer
from hpo.registry import Registry

if TYPE_CHECKING:
    from torch import nn


class ModelConfig(BaseModel):
    """Keys every model family accepts; families subclass it and narrow ``name``."""

    # Finite floats only: an .inf dropout or std fails every trial.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    init: str = "default"  # weight initialiser of Linear and Conv layers (hpo.models.init)
    init_std: float = Field(DEFAULT_STD, gt=0, le=1)  # std of the normal and trunc_normal inits
    # uniform: weights drawn from U(-init_range, init_range). Up to 10: past that a sigmoid or
    # tanh saturates on every input, and a ReLU net's activations overflow.
    init_range: float = Field(DEFAULT_RANGE, gt=0, le=10)

    @field_validator("init")
    @classmethod
    def _known_initializer(cls, v: str) -> str:
        if v not in INITIALIZERS:
            raise ValueError(unknown_name_message("initialiser", v, INITIALIZERS.names()))
        return v


Builder = Callable[[Any, tuple[int, int, int], int], "nn.Module"]


@dataclass(frozen=True)
class ModelEntry:
    config: type[ModelConfig]
    build: Builder
    # The builder applies ``cfg.init`` itself, e.g. only to the new head of a pretrained
    # backbone, whose weights an initialiser must not overwrite.
    initialises: bool = False


MODELS = Registry[ModelEntry]("model")


def register_model(
    name: str, config: type[ModelConfig], *, initialises: bool = False
) -> Callable[[Builder], Builder]:
    """Register ``build(cfg, in_shape, num_classes) -> nn.Module`` under ``name``.

    The config's default ``name`` must equal the registered name, so that ``config()``
    and ``model_config_class(name)`` can never disagree. ``initialises``: the builder
    applies ``cfg.init`` itself, so ``create_model`` does not.
    """
    default = config.model_fields["name"].default
    if default != name:
        raise ValueError(f"{config.__name__}.name defaults to {default!r}, not {name!r}")

    def decorator(build: Builder) -> Builder:
        MODELS.add(name, ModelEntry(config=config, build=build, initialises=initialises))
        return build

    return decorator


def model_config_class(name: str) -> type[ModelConfig]:
    """The config class of a model family; raises UnknownNameError for unknown names."""
    return MODELS.get(name).config


def parse_model_config(data: Mapping[str, Any]) -> ModelConfig:
    """Validate a ``model:`` mapping with its family's config class (chosen by ``name``)."""
    if "name" not in data:
        raise ValueError(f"a model needs a name (known: {', '.join(MODELS.names())})")
    return model_config_class(data["name"]).model_validate(dict(data))


# False while ``create_model(..., read_pretrained=False)`` builds. A context variable rather
# than a builder argument, so that every family's builder keeps the one signature; only the
# backbones that read pretrained files ask (``reads_pretrained``).
_READ_PRETRAINED: ContextVar[bool] = ContextVar("hpo_read_pretrained", default=True)


def reads_pretrained() -> bool:
    """Whether a builder should read ``pretrained`` weights files (see ``create_model``)."""
    return _READ_PRETRAINED.get()


def create_model(cfg: ModelConfig, in_shape: tuple[int, int, int], num_classes: int, *,
                 read_pretrained: bool = True) -> nn.Module:
    """Build the model ``cfg`` describes for inputs of ``in_shape`` (C, H, W), then initialise.

    A bare ``ModelConfig`` is re-validated as its family's config, so defaults still apply.
    ``read_pretrained=False``: the caller loads a whole state dict next (a trained model
    loaded back), so a backbone is built as its pretrained weights would run it (e.g.
    GoogLeNet's input transform) without reading their file, which this machine need not have.
    """
    entry = MODELS.get(cfg.name)
    if not isinstance(cfg, entry.config):
        cfg = entry.config.model_validate(cfg.model_dump(exclude_unset=True))
    token = _READ_PRETRAINED.set(read_pretrained)
    try:
        model = entry.build(cfg, tuple(in_shape), num_classes)  # type: ignore[arg-type]  # a list from JSON too
    finally:
        _READ_PRETRAINED.reset(token)
    if entry.initialises:
        return model
    return apply_initializer(model, cfg.init, cfg.init_std, init_range=cfg.init_range)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; they differ once a backbone is frozen."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
