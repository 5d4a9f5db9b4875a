"""Shared CLI pieces: options defined once, output helpers, and error handling.

Command modules import only click and light hpo modules at the top: torch and optuna are
imported inside the commands, so ``hpo --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from hpo.errors import Aborted, HpoError
from hpo.results.text import fmt_value  # noqa: F401  (re-exported for the command modules)

storage_option = click.option(
    "--storage",
    metavar="URL",
    default=None,
    help="Study storage: a PostgreSQL URL (postgresql://USER:PASSWORD@HOST:5432/DB) or a "
    "journal file path. Defaults to $HPO_STORAGE, then ./hpo-studies.journal. Prefer "
    "$HPO_STORAGE for URLs with passwords: command lines are visible to other users.",
)


def _device_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from hpo.worker.device import check_device_name

    return check_device_name(value)  # a typo is refused before the storage is opened


def device_option(more_help: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--device``, default ``auto`` (hpo.worker.device), for the commands that train."""
    return click.option(
        "--device", default="auto", show_default=True, callback=_device_name,
        help="auto (CUDA if available, else MPS, else the CPU), cpu, cuda, cuda:N or mps." + more_help,
    )


def format_option(*choices: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--format", "fmt", type=click.Choice(choices), default=choices[0], show_default=True,
        help="Output format.",
    )


def hpo_invocation() -> str:
    """How the user runs hpo again from their shell, for hints printed as commands.

    Started by uv (it sets ``$UV`` for what it starts), the PATH seen here is uv's, not the
    shell's: in a project's ``.venv`` (``uv run``) that is ``uv run hpo``, with ``--project``
    when the working directory is outside the project (uv finds it from there upwards);
    elsewhere (``uvx``) this very interpreter with ``-m hpo``. Otherwise ``hpo`` when the PATH
    leads to this environment's script, else again ``-m hpo``, which works from anywhere."""
    import shlex
    import shutil
    from pathlib import Path

    by_module = f"{shlex.quote(sys.executable)} -m hpo"
    if os.environ.get("UV"):
        prefix = Path(sys.prefix)
        project = prefix.parent
        if prefix.name != ".venv" or not (project / "pyproject.toml").is_file():
            return by_module
        if Path.cwd().resolve().is_relative_to(project.resolve()):
            return "uv run hpo"
        return f"uv run --project {shlex.quote(str(project))} hpo"
    found = shutil.which("hpo")
    if found and Path(found).parent.resolve() == Path(sys.executable).parent.resolve():
        return "hpo"
    return by_module


def storage_target(option: str | None) -> Any:
    from hpo.storage.urls import resolve_storage

    target = resolve_storage(option)
    if target.is_default:
        click.echo(f"Using the embedded storage {target.display}", err=True)
    return target


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def print_yaml(data: Any) -> None:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]  # ruamel types it None
    yaml.dump(data, sys.stdout)


def console() -> Any:
    from rich.console import Console

    # Off a terminal rich assumes 80 columns and would cut study names short in pipes
    # and logs; a wide virtual line keeps tables whole.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def debug_enabled() -> bool:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool((root and (root.obj or {}).get("debug")) or os.environ.get("HPO_DEBUG"))


class OneLineUsageError(click.UsageError):
    """click's usage error shown the way hpo shows every error: one ``Error: ...`` line (with
    where to find help) instead of click's usage, hint and error lines."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {self.format_message()}{hint}", err=True)


def one_line(exc: click.UsageError) -> OneLineUsageError:
    # format_message, not message: a BadParameter composes "Invalid value for '--top': ...".
    return OneLineUsageError(exc.format_message(), exc.ctx)


class HpoGroup(click.Group):
    """A click group that turns HpoError into ``Error: ...`` lines and an exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:  # the root group's own options (hpo --bogus) are parsed here, outside invoke
            return super().parse_args(ctx, args)
        except (OneLineUsageError, click.exceptions.NoArgsIsHelpError):  # help stays help
            raise
        except click.UsageError as exc:
            raise one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (OneLineUsageError, click.exceptions.NoArgsIsHelpError):  # help stays help
            raise
        except click.UsageError as exc:  # a subcommand's arguments, an unknown subcommand
            raise one_line(exc) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except HpoError as exc:
            report_error(exc, exc.exit_code)
        except Aborted as exc:  # a worker's second stop signal: what became of its trial
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # a bug of ours: say so, and keep the traceback for --debug
            report_error(exc, 1, internal=True)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they were added, not sorted


def report_error(exc: BaseException, code: int, *, internal: bool = False) -> None:
    from hpo.storage.secrets import scrub

    if debug_enabled():
        click.echo(scrub(traceback.format_exc()), err=True)
    if internal:
        lines = [f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"]
    else:
        lines = str(exc).splitlines() or [type(exc).__name__]
    for line in lines:
        click.echo(f"Error: {scrub(line)}", err=True)
    sys.exit(code)
