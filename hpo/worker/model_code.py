"""Which code a study makes this worker import, checked before its first trial.

The spec comes from the storage, and whoever can write to the storage can rewrite it: a
custom model's module is therefore imported only if this machine allows it (see
hpo.models.custom.ModulePolicy). A refusal, or a custom model that every trial would fail
to build alike, stops the worker (exit 2) before it creates or claims any trial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpo.errors import UsageError
from hpo.models.custom import (
    CustomConfig,
    ModulePolicy,
    check_allowed,
    check_custom_model,
    using_module_policy,
)

if TYPE_CHECKING:
    from hpo.spec.model import Spec

# The policy, for the commands above this layer (hpo.cli may not import hpo.models).
__all__ = ["ModulePolicy", "check_model_code", "custom_models", "using_module_policy"]


def custom_models(spec: Spec) -> list[CustomConfig]:
    """Every custom model a trial of ``spec`` can build: the fixed one, and one per module
    that ``search: model.module`` can choose (with the fixed kwargs, which no search reaches)."""
    fixed = spec.model if isinstance(spec.model, CustomConfig) else None
    configs = [fixed] if fixed is not None else []
    searched = spec.search.get("model.module")
    for choice in (searched.choices or []) if searched is not None else []:
        if isinstance(choice, str) and (fixed is None or choice != fixed.module):
            configs.append(_searched(choice, fixed.kwargs if fixed is not None else {}))
    return configs


def _searched(module: str, kwargs: dict[str, Any]) -> CustomConfig:
    from pydantic import ValidationError

    try:
        return CustomConfig(module=module, kwargs=kwargs)
    except ValidationError as exc:
        raise UsageError(f"search: model.module: {exc.errors()[0]['msg']}") from None


def check_model_code(spec: Spec) -> None:
    """Refuse (UsageError) what no trial of ``spec`` could build. Every module is checked
    against the allow-list before any is imported."""
    configs = custom_models(spec)
    for cfg in configs:
        check_allowed(cfg.module)
    for cfg in configs:
        check_custom_model(cfg)
