"""Transfer learning with any timm model (``model.name: timm``), with a new head.

``arch`` is checked against ``timm_models.txt``, a snapshot of ``timm.list_models()`` read
lazily from the package, because importing timm takes seconds and validating a spec must stay
instant; a test keeps the snapshot equal to the installed timm's list (rewrite it with
``python -c "import timm; print(*timm.list_models(), sep=chr(10))" > hpo/models/timm_models.txt``
after upgrading timm). The model is built by ``timm.create_model``: ``num_classes`` gives it a
new head, ``drop_rate`` the dropout in front of it, ``in_chans`` a first convolution for the
images' channels (timm adapts pretrained RGB filters to it).

Nothing is ever downloaded: ``pretrained`` names a local file, or ``hub`` for the file of
timm's default weights in the Hugging Face cache; a missing file is an error that says where
to put it.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from hpo.errors import close_matches
from hpo.models.backbone import Freeze, check_pretrained, freeze_parts
from hpo.models.registry import ModelConfig, register_model

if TYPE_CHECKING:
    from torch import nn


@cache
def timm_names() -> frozenset[str]:
    """Every model name of the timm this package was released with (one read, then cached)."""
    text = files("hpo.models").joinpath("timm_models.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def unknown_timm_message(name: str) -> str:
    """One line for a name timm does not know; its 1300+ names are too many to list."""
    message = f"unknown timm model {name!r}"
    matches = close_matches(name, sorted(timm_names()))
    if matches:
        message += "; did you mean " + " or ".join(repr(m) for m in matches) + "?"
    return message + f" (one of the {len(timm_names())} names timm.list_models() gives)"


class TimmConfig(ModelConfig):
    name: Literal["timm"] = "timm"
    arch: str = "resnet18"  # a timm model name (hpo/models/timm_models.txt)
    # null: random init; hub: timm's default weights from the Hugging Face cache;
    # otherwise the path of a local state-dict file. Never downloaded.
    pretrained: str | None = None
    # share of the backbone frozen, from the input side: a fraction of timm's blocks, or
    # {fraction: 0.9, unit: parameters} (FreezeConfig)
    freeze: Freeze = 0.0
    dropout: float = Field(0.0, ge=0, lt=1)  # before the new linear head (timm's drop_rate)

    _not_blank = field_validator("pretrained")(check_pretrained)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        if v not in timm_names():
            raise ValueError(unknown_timm_message(v))
        return v


@register_model("timm", TimmConfig, initialises=True)
def build_timm(cfg: TimmConfig, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from hpo.models._backbone_layers import build_timm_backbone

    fraction, unit = freeze_parts(cfg.freeze)
    return build_timm_backbone(
        cfg.arch, in_shape, num_classes, dropout=cfg.dropout, pretrained=cfg.pretrained,
        freeze=fraction, freeze_unit=unit, init=cfg.init, init_std=cfg.init_std,
        init_range=cfg.init_range,
    )
