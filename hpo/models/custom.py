"""A user's own ``nn.Module``, named by an explicit import path such as ``my_pkg.nets:SEFireNet``.

The spec never executes code: the path is only checked for its shape when the spec is
validated, and imported when a worker builds the model. Importing it runs the user's own
module, exactly as ``python -c "import my_pkg.nets"`` would; nothing else is ever looked up.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from hpo.models.registry import ModelConfig, register_model

if TYPE_CHECKING:
    from torch import nn

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}$")
_FROM_DATA = ("in_shape", "num_classes")


class CustomConfig(ModelConfig):
    name: Literal["custom"] = "custom"
    module: str  # required: package.module:Class of an nn.Module subclass the worker can import
    kwargs: dict[str, Any] = Field(default_factory=dict)  # constructor keyword arguments

    @field_validator("module")
    @classmethod
    def _import_path(cls, v: str) -> str:
        if not IMPORT_PATH.match(v):
            raise ValueError(
                f"{v!r} is not an import path of the form package.module:Class "
                "(e.g. my_pkg.nets:SEFireNet)"
            )
        return v

    @field_validator("kwargs")
    @classmethod
    def _no_data_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        clash = [k for k in _FROM_DATA if k in v]
        if clash:
            raise ValueError(f"{' and '.join(clash)} come from the data; remove them from kwargs")
        return v


def _import_module(name: str) -> Any:
    """Import ``name``; failing that, retry with the working directory searched last.

    The ``hpo`` console script, unlike ``python -m``, does not put the working directory on
    ``sys.path``, yet a user running a worker from their project expects its packages to be
    found. Appended, not prepended: an installed package of the same name still wins.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        cwd = os.getcwd()
        if cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        importlib.invalidate_caches()
        return importlib.import_module(name)


def _import_class(path: str) -> type:
    from torch import nn

    from hpo.errors import TrainingError

    module_name, _, attr = path.partition(":")
    try:
        module = _import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TrainingError(
            f"model.module {path!r}: cannot import {module_name!r} ({exc}); on every worker, "
            "install it, start the worker in the directory that holds it, or add that directory "
            "to PYTHONPATH"
        ) from None
    except Exception as exc:  # the user's module raised while importing
        raise TrainingError(
            f"model.module {path!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    # The one attribute the user named explicitly, as ``from module import Class`` would.
    cls = module.__dict__.get(attr)
    if cls is None:
        candidates = sorted(
            k for k, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, nn.Module) and not k.startswith("_")
        )
        raise TrainingError(
            f"model.module {path!r}: {module_name!r} has no attribute {attr!r}"
            + (f" (its nn.Module classes: {', '.join(candidates)})" if candidates else "")
        )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TrainingError(
            f"model.module {path!r}: {attr} is not an nn.Module subclass (got {cls!r})"
        )
    return cls


def _accepts(signature: inspect.Signature, name: str) -> bool:
    params = signature.parameters.values()
    return name in signature.parameters or any(p.kind is p.VAR_KEYWORD for p in params)


@register_model("custom", CustomConfig)
def build_custom(cfg: CustomConfig, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from torch import nn

    from hpo.errors import TrainingError

    cls = _import_class(cfg.module)
    kwargs = dict(cfg.kwargs)
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # some C-implemented signatures cannot be read
        signature = inspect.Signature()
    for key, value in (("in_shape", tuple(in_shape)), ("num_classes", num_classes)):
        if _accepts(signature, key):
            kwargs[key] = value
    try:
        model = cls(**kwargs)
    except Exception as exc:
        raise TrainingError(
            f"model.module {cfg.module!r}: {cls.__name__}(**{kwargs}) raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):  # e.g. a __new__ that returns something else
        raise TrainingError(f"model.module {cfg.module!r}: {cls.__name__}(...) did not return an nn.Module")
    return model
