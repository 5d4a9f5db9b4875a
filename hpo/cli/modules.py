"""``--allow-module`` and ``--module-path``: which custom model code this machine runs.

For the commands that build models from a stored study (``hpo worker``, ``hpo retrain``).
The study's spec comes from the storage, which others may be able to write to; what code
is imported is decided here, on the machine that runs it. Default: no custom module at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from hpo.worker.model_code import ModulePolicy

F = TypeVar("F", bound=Callable[..., Any])

# The names hpo.models.custom reads (ModulePolicy.from_env), spelt here too because
# `hpo --help` must not import the model package; a test keeps the two equal.
ALLOW_ENV = "HPO_ALLOW_MODULES"
PATH_ENV = "HPO_MODULE_PATH"


def module_options(command: F) -> F:
    command = click.option(
        "--module-path", "module_paths", multiple=True, metavar="DIR",
        help=f"A folder to import allowed custom models from, searched after the installed "
        f"packages (repeatable; default: ${PATH_ENV}, folders separated by '{os.pathsep}'). "
        "The working directory is never searched unless named here.")(command)
    return click.option(
        "--allow-module", "allow_modules", multiple=True, metavar="PREFIX",
        help=f"Let custom models (model: {{name: custom}}) import modules under PREFIX, e.g. "
        f"models or my_pkg.nets (repeatable or comma-separated; default: ${ALLOW_ENV}, else "
        "none). The stored spec names the module; only this machine decides whether it runs.")(command)


def module_policy(allow_modules: tuple[str, ...], module_paths: tuple[str, ...]) -> ModulePolicy:
    """The flags' policy; each flag not given falls back to its environment variable, read by
    ``ModulePolicy.from_env`` alone (as the pool's children read what ``as_env`` gave them),
    so that the variables mean the same wherever they are read."""
    from hpo.worker.model_code import ModulePolicy

    return ModulePolicy.given_or_env(allow_modules, module_paths, os.environ)
