"""Tiny helpers for tests that run real studies: specs small enough that a trial takes well
under a second (digits, a 1x16 MLP, an epoch or two), and the CLI run as a subprocess.

Subprocesses run ``python -m hpo`` with this interpreter, so they use the project's
environment whether or not the ``hpo`` script is on PATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# The source of a custom model module for tests: a one-hidden-layer MLP, ``TinyNet``, taking
# what hpo passes a custom model (in_shape, num_classes) and one keyword of its own.
TINY_NET_SOURCE = """
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_shape, num_classes, width=8):
        super().__init__()
        c, h, w = in_shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(),
                                 nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)
"""

# Each worker process imports torch (seconds on a small machine): leave room for several
# starting at once on two cores.
WORKER_TIMEOUT = 300


def spec_text(
    name: str,
    *,
    n_trials: int = 4,
    epochs: int = 1,
    pruner: str = "none",
    sampler: str = "random",
    seed: int | None = 0,
    max_failed_trials: int | None = None,
    search: Mapping[str, str] | None = None,
) -> str:
    """YAML text of a tiny digits + MLP spec. ``search`` maps dotted paths to flow-style
    YAML distributions; by default only the learning rate is searched (a continuous
    range, so two trials with equal params are a bug, not chance)."""
    search = search if search is not None else {"train.lr": "{low: 1.0e-4, high: 1.0e-1, log: true}"}
    budget = f"n_trials: {n_trials}"
    if max_failed_trials is not None:
        budget += f", max_failed_trials: {max_failed_trials}"
    seed_text = "null" if seed is None else str(seed)
    lines = [
        f"name: {name}",
        "objective: {metric: val_accuracy, direction: maximize}",
        f"budget: {{{budget}}}",
        f"sampler: {{name: {sampler}, seed: {seed_text}}}",
        f"pruner: {{name: {pruner}}}",
        "data: {name: digits, val_fraction: 0.2, test_fraction: 0.2, split_seed: 0}",
        "model: {name: mlp, n_layers: 1, width: 16, activation: relu}",
        f"train: {{epochs: {epochs}, batch_size: 128, optimizer: adam, lr: 1.0e-3, seed: 0}}",
        "search:" + ("" if search else " {}"),
    ]
    lines += [f"  {path}: {dist}" for path, dist in search.items()]
    return "\n".join(lines) + "\n"


def write_spec(directory: Path, name: str, **options: Any) -> Path:
    """Write ``spec_text(name, **options)`` to ``directory/<name>.yaml`` and return the path."""
    path = Path(directory) / f"{name}.yaml"
    path.write_text(spec_text(name, **options))
    return path


def hpo_env(storage: str | None = None, **extra: str) -> dict[str, str]:
    """The test's environment for an ``hpo`` subprocess: one torch thread per process,
    ``HPO_STORAGE`` set to ``storage`` (or removed when None), and no debug switch, worker
    rank or custom-model allow-list inherited from the shell running the tests."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HPO_STORAGE", "HPO_DEBUG", "HPO_WORKER_RANK", "HPO_ALLOW_MODULES",
                        "HPO_MODULE_PATH")}
    env["HPO_THREADS"] = "1"
    env["HPO_CACHE_DIR"] = os.environ["HPO_CACHE_DIR"]  # the session's (conftest.py), not ~/.cache/hpo
    if storage is not None:
        env["HPO_STORAGE"] = storage
    env.update(extra)
    return env


def hpo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo", *args]


def run_hpo(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = WORKER_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``hpo ARGS`` to completion; stdout and stderr are captured separately."""
    return subprocess.run(
        hpo_command(*args), env=dict(env) if env is not None else hpo_env(), cwd=cwd,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def start_hpo(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | str | None = None
) -> subprocess.Popen[str]:
    """Start ``hpo ARGS`` without waiting (for workers that must run at the same time)."""
    return subprocess.Popen(
        hpo_command(*args), env=dict(env) if env is not None else hpo_env(), cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )


def wait_all(
    processes: Sequence[subprocess.Popen[str]], timeout: float = WORKER_TIMEOUT
) -> list[subprocess.CompletedProcess[str]]:
    """Wait for every process; kill the lot if one outlives ``timeout`` (then fail)."""
    results = []
    try:
        for proc in processes:
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
        for proc in processes:
            proc.communicate()
        raise AssertionError(f"an hpo process ran longer than {timeout} s") from None
    return results


def describe(results: Sequence[subprocess.CompletedProcess[str]]) -> str:
    """Every process's exit code and output, for assertion messages."""
    return "\n".join(
        f"--- {' '.join(map(str, r.args[2:]))} -> {r.returncode}\n"
        f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        for r in results
    )


def worker_lines(stdout: str) -> list[str]:
    """A worker's stdout without its start-up lines ("importing torch… 2.1 s", from
    hpo.worker.progress): the Device line, one line per trial, and the last line."""
    import re

    return [line for line in stdout.splitlines() if not re.search(r"… \d+\.\d s$", line)]


def trial_states(storage: str | Path, name: str) -> dict[str, int]:
    """How many of the study's trials are in each state (``{"COMPLETE": 4}``), leaving out
    trials two workers raced for and handed back unrun (hpo.worker.budget): they never ran."""
    from collections import Counter

    import optuna

    from hpo.storage.urls import open_storage, resolve_storage
    from hpo.study.attrs import OVER_BUDGET

    study = optuna.load_study(study_name=name, storage=open_storage(resolve_storage(str(storage))))
    return dict(Counter(trial.state.name for trial in study.get_trials(deepcopy=False)
                        if not trial.user_attrs.get(OVER_BUDGET)))


def trials_of(name: str, storage: str | None = None) -> list[Any]:
    """The study's trials as Optuna's FrozenTrials, read through hpo (``storage`` None: the
    one the CLI would use, from $HPO_STORAGE)."""
    from hpo.storage.urls import resolve_storage
    from hpo.study.studies import load_study

    return load_study(name, resolve_storage(storage)).study.get_trials(deepcopy=False)


def run_cli_study(root: Path, name: str, text: str) -> str:
    """Create study ``name`` from spec ``text`` in a journal under ``root`` (artifacts in
    root/artifacts) and run one quiet worker on it through the CLI, in-process; the journal's
    path."""
    from click.testing import CliRunner

    from hpo.cli.main import cli

    journal = str(root / f"{name}.journal")
    (root / f"{name}.yaml").write_text(text)
    created = CliRunner().invoke(cli, ["study", "create", str(root / f"{name}.yaml"), "--storage", journal,
                                       "--artifacts", str(root / "artifacts")])
    assert created.exit_code == 0, created.output
    worked = CliRunner().invoke(cli, ["worker", name, "--rank", "0", "--storage", journal, "--quiet"])
    assert worked.exit_code == 0, worked.output
    return journal
