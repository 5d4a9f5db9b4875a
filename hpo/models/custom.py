"""A user's own ``nn.Module``, named by an explicit import path such as ``my_pkg.nets:SEFireNet``.

The spec never executes code: the path is only checked for its shape when the spec is
validated, and imported when a worker builds the model. Importing it runs that module, so
the spec alone never decides what is imported: a spec is read from the storage, and whoever
can write to the storage could name any module there (``os:system``, a file someone left in
the working directory). A module is imported only when the process's :class:`ModulePolicy`,
set on the worker's own machine (``--allow-module``/``HPO_ALLOW_MODULES``), allows it; the
default allows none. Folders are searched only when named (``--module-path``/
``HPO_MODULE_PATH``), after the installed packages; never the working directory implicitly.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from hpo.errors import UsageError
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


ALLOW_ENV = "HPO_ALLOW_MODULES"  # comma-separated module prefixes, e.g. models,my_pkg.nets
PATH_ENV = "HPO_MODULE_PATH"  # folders to search after the installed packages (os.pathsep)


class ModuleNotAllowedError(UsageError):
    """A spec names a custom model whose module this machine did not allow."""


@dataclass(frozen=True)
class ModulePolicy:
    """Which custom model modules this process may import, and from which extra folders.

    Set by the machine that runs the code (the worker's flags or environment), never by
    the spec: the spec comes from the storage, which others may be able to write to."""

    allowed: tuple[str, ...] = ()  # module prefixes, matched at dot boundaries
    paths: tuple[str, ...] = ()  # absolute folders, appended to sys.path while in force
    # Classes handed over in-process (hpo.run_worker(models=...)), by the import path a spec
    # names them with: nothing is imported for them, and only this process's caller can give
    # them (a notebook's own class, whose module ``__main__`` is no importable file).
    classes: tuple[tuple[str, type], ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ModulePolicy:
        return cls.of(environ.get(ALLOW_ENV, "").split(","),
                      environ.get(PATH_ENV, "").split(os.pathsep))

    @classmethod
    def of(cls, allowed: Iterable[str], paths: Iterable[str]) -> ModulePolicy:
        """From flags or the environment: prefixes may come comma-separated, blanks are
        dropped, folders are made absolute (a later chdir must not change what they mean)."""
        prefixes = [p.strip() for item in allowed for p in item.split(",") if p.strip()]
        bad = [p for p in prefixes if not _MODULE_NAME.match(p)]
        if bad:
            raise UsageError(f"--allow-module {bad[0]!r}: expected a module name such as "
                             "models or my_pkg.nets (comma-separated for several)")
        folders = [os.path.abspath(os.path.expanduser(p)) for p in paths if p.strip()]
        missing = [f for f in folders if not os.path.isdir(f)]
        if missing:
            raise UsageError(f"--module-path {missing[0]}: no such directory")
        return cls(tuple(dict.fromkeys(prefixes)), tuple(dict.fromkeys(folders)))

    @classmethod
    def given_or_env(cls, allowed: tuple[str, ...], paths: tuple[str, ...],
                     environ: Mapping[str, str]) -> ModulePolicy:
        """The flags' policy (``--allow-module``, ``--module-path``, or the API's arguments);
        each one not given falls back to its environment variable, read by ``from_env`` alone
        (as the pool's children read what ``as_env`` gave them), so that the variables mean
        the same wherever they are read."""
        env = cls() if allowed and paths else cls.from_env(environ)
        flags = cls.of(allowed, paths)
        return cls(flags.allowed or env.allowed, flags.paths or env.paths)

    def allows(self, module: str) -> bool:
        """``models`` allows ``models`` and ``models.example_net``, not ``modelsx``."""
        return any(module == p or module.startswith(p + ".") for p in self.allowed)

    def given(self, path: str) -> type | None:
        """The class handed over in-process for ``path`` (package.module:Class), if any."""
        return dict(self.classes).get(path)

    @classmethod
    def with_classes(cls, base: ModulePolicy, classes: Iterable[type] | Mapping[str, type]) -> ModulePolicy:
        """``base`` plus ``classes``: a mapping's keys are the import paths a spec names them
        by; a class alone goes by its own, ``module:QualName`` (``__main__:MyNet`` for a
        class defined in a notebook or a script)."""
        pairs = list(classes.items()) if isinstance(classes, Mapping) else [
            (f"{c.__module__}:{getattr(c, '__qualname__', '?')}", c) for c in classes]
        for path, value in pairs:
            if not isinstance(value, type):
                raise UsageError(f"models: {value!r} is not a class (give nn.Module subclasses)")
            if not IMPORT_PATH.match(path):
                raise UsageError(f"models: {value.__name__} would be named {path!r}, not an import "
                                 "path of the form package.module:Class; define it at the top level "
                                 "of its module, or give {'package.module:Class': cls}")
        return cls(base.allowed, base.paths, base.classes + tuple(pairs))

    def as_env(self) -> dict[str, str]:
        """The policy for child processes, which read it back with :meth:`from_env`."""
        return {ALLOW_ENV: ",".join(self.allowed), PATH_ENV: os.pathsep.join(self.paths)}


_MODULE_NAME = re.compile(rf"^{_IDENT}(\.{_IDENT})*$")
_policy = ModulePolicy()  # nothing allowed until the command that builds models says so


def module_policy() -> ModulePolicy:
    return _policy


@contextlib.contextmanager
def using_module_policy(policy: ModulePolicy) -> Iterator[ModulePolicy]:
    """Put ``policy`` in force for this process (and its folders at the END of sys.path, so
    that an installed package, hpo's own modules included, always wins over a file of the
    same name there); restored on exit."""
    global _policy
    previous, added = _policy, [p for p in policy.paths if p not in sys.path]
    _policy = policy
    sys.path.extend(added)
    importlib.invalidate_caches()
    try:
        yield policy
    finally:
        _policy = previous
        for folder in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def check_allowed(path: str) -> None:
    """Refuse ``path`` (package.module:Class) unless this machine allows its module; imports
    nothing, so it can run before any trial is created."""
    module_name = path.partition(":")[0]
    if _policy.given(path) is None and not _policy.allows(module_name):
        allowed = ", ".join(_policy.allowed) or "none"
        raise ModuleNotAllowedError(
            f"model.module {path!r}: module {module_name!r} is not allowed on this worker "
            f"(allowed: {allowed}); if it is your code, allow it with --allow-module "
            f"{module_name} or {ALLOW_ENV}={module_name}"
        )


def _import_class(path: str) -> type:
    from torch import nn

    from hpo.errors import TrainingError

    check_allowed(path)  # before anything of the module runs
    module_name, _, attr = path.partition(":")
    given = _policy.given(path)
    if given is not None:  # handed over in-process: nothing to import
        if not issubclass(given, nn.Module):
            raise TrainingError(f"model.module {path!r}: {given.__name__} is not an nn.Module subclass")
        return given
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TrainingError(
            f"model.module {path!r}: cannot import {module_name!r} ({exc}); on every worker, "
            f"install it, or name the folder that holds it with --module-path DIR or {PATH_ENV}"
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


def _signature(cls: type) -> inspect.Signature | None:
    try:
        return inspect.signature(cls)
    except (TypeError, ValueError):  # some C-implemented signatures cannot be read
        return None


def _constructor_kwargs(signature: inspect.Signature | None, kwargs: Mapping[str, Any],
                        in_shape: Any, num_classes: Any) -> dict[str, Any]:
    """``model.kwargs`` plus the data's ``in_shape`` and ``num_classes`` where the
    constructor names them (or takes ``**kwargs``)."""
    full = dict(kwargs)
    for key, value in (("in_shape", in_shape), ("num_classes", num_classes)):
        if signature is not None and _accepts(signature, key):
            full[key] = value
    return full


def check_custom_model(cfg: ModelConfig) -> None:
    """For a worker about to run trials (or a retrain): fail now, once, with exit 2, where
    every trial would fail alike: a module this machine does not allow (nothing imported),
    a name that is no ``nn.Module`` class, or ``model.kwargs`` its constructor does not take.
    Other families have nothing to check."""
    from hpo.errors import TrainingError

    if not isinstance(cfg, CustomConfig):
        return
    try:
        cls = _import_class(cfg.module)
    except TrainingError as exc:  # the spec's mistake, not a fault of this run
        raise UsageError(str(exc)) from exc
    signature = _signature(cls)
    if signature is None:
        return
    try:
        signature.bind(**_constructor_kwargs(signature, cfg.kwargs, (1, 1, 1), 2))
    except TypeError as exc:
        raise UsageError(
            f"model.module {cfg.module!r}: model.kwargs {dict(cfg.kwargs)} do not fit "
            f"{cls.__name__}{signature}: {exc}"
        ) from None


@register_model("custom", CustomConfig)
def build_custom(cfg: CustomConfig, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from torch import nn

    from hpo.errors import TrainingError

    cls = _import_class(cfg.module)
    kwargs = _constructor_kwargs(_signature(cls), cfg.kwargs, tuple(in_shape), num_classes)
    try:
        model = cls(**kwargs)
    except Exception as exc:
        raise TrainingError(
            f"model.module {cfg.module!r}: {cls.__name__}(**{kwargs}) raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):  # e.g. a __new__ that returns something else
        raise TrainingError(f"model.module {cfg.module!r}: {cls.__name__}(...) did not return an nn.Module")
    return model
