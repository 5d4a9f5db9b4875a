"""One trial's resolved configuration: the fixed spec with the sampled values applied.

Validated once, when it is resolved (or read back from a trial by ``hpo retrain``), then
passed as is to training; ``to_json`` is what a trial records as its ``config`` attribute,
so that any trial can be re-run from what it stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpo.models.registry import ModelConfig, parse_model_config
from hpo.spec.paths import SECTIONS
from hpo.training.config import DataConfig, TrainConfig


@dataclass(frozen=True)
class TrialConfig:
    """The three validated sections. Frozen shallowly: the sections are pydantic models that
    training reads and never changes (a changed copy is made with ``model_copy``)."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    @classmethod
    def from_json(cls, sections: Mapping[str, Any]) -> TrialConfig:
        """Validate each section (filling defaults); raises pydantic's ValidationError."""
        return cls(
            data=DataConfig.model_validate(sections["data"]),
            model=parse_model_config(sections["model"]),
            train=TrainConfig.model_validate(sections["train"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {section: getattr(self, section).model_dump(mode="json") for section in SECTIONS}
