"""``hpo worker NAME``: pull trials from a study until its budget is spent."""

from __future__ import annotations

import sys

import click

from hpo.cli.common import device_option, storage_option, storage_target
from hpo.cli.modules import module_options, module_policy
from hpo.storage.urls import DEFAULT_RECONNECT_TIMEOUT


@click.command()
@click.argument("name")
@storage_option
@click.option("--n-trials", type=click.IntRange(min=1), default=None,
              help="Stop this worker (each process) after N trials; the study's budget still applies.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Stop this worker from starting trials after SECONDS.")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run K worker processes on this machine.")
@device_option(" The worker prints the one it chose; each trial records it.")
@click.option("--gpus", default=None, metavar="IDS|all",
              help="One worker process per GPU (e.g. 0,1,2,3, or all), each pinned to its GPU "
              "(CUDA_VISIBLE_DEVICES) and supervised.")
@click.option("--per-gpu", type=click.IntRange(min=1), default=None, metavar="K",
              help="With --gpus: K worker processes on each GPU (for small models). Default: 1.")
@click.option("--threads", type=click.IntRange(min=1), default=None, envvar="HPO_THREADS", metavar="N",
              help="PyTorch CPU threads of each worker process, kept for its whole life so that "
              "its trials' timings compare (each trial records cpu_threads). Default: "
              "$HPO_THREADS, else the cores this process may use ÷ the processes of --processes "
              "or --gpus, or ÷ the hpo workers running on this machine when this one starts.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True,
              help="With --processes or --gpus: restart a process that crashed or was killed "
              "at most this many times.")
@click.option("--reconnect-timeout", type=click.FloatRange(min=0), default=DEFAULT_RECONNECT_TIMEOUT,
              show_default=True,
              metavar="SECONDS", help="How long to wait (with backoff) for an unreachable "
              "database before giving up; 0 fails at once.")
@click.option("--quiet", is_flag=True, help="One line per trial instead of live progress (as when "
              "the output is not a terminal).")
@click.option("--progress-events", is_flag=True, hidden=True,
              help="Progress as JSON lines on stdout, for a pool's parent (hpo.worker.pool).")
@click.option("--rank", type=click.IntRange(min=0), default=None, envvar="HPO_WORKER_RANK",
              help="Offsets the sampler seed (seed + rank) so that workers propose different "
              "trials; --processes numbers its processes from it. Default: $HPO_WORKER_RANK, "
              "else a random rank.")
@module_options
def worker(name: str, storage: str | None, n_trials: int | None, timeout: float | None,
           processes: int, device: str, gpus: str | None, per_gpu: int | None, threads: int | None,
           max_restarts: int,
           reconnect_timeout: float, quiet: bool, progress_events: bool, rank: int | None,
           allow_modules: tuple[str, ...], module_paths: tuple[str, ...]) -> None:
    """Run trials of study NAME until the study's budget is spent (then exit 0).

    Start as many workers as you like, on as many machines, against the same storage.
    SIGTERM or Ctrl-C stops a worker at the next batch: its trial is checkpointed and handed
    back to be resumed by any worker, and the worker exits 0; a second one aborts at once
    (exit 130 for Ctrl-C), handing the trial back from its last checkpoint.

    A custom model's module is imported only if allowed here (--allow-module); the stored
    spec alone never decides what code runs.

    Example: hpo worker digits-cnn --processes 2, or --gpus all
    """
    gpu_ids = _gpu_ids(gpus, per_gpu, processes)
    target = storage_target(storage)
    policy = module_policy(allow_modules, module_paths)
    show_rank = rank is not None or processes > 1
    if rank is None:  # give ranks explicitly for reproducible seeds
        from hpo.api.studies import random_rank

        rank = random_rank()
    if processes > 1 or gpu_ids is not None:
        from hpo.worker.pool import run_pool

        sys.exit(run_pool(name, target, processes=processes, rank=rank, n_trials=n_trials,
                          timeout=timeout, device=device, gpus=gpu_ids, per_gpu=per_gpu or 1,
                          max_restarts=max_restarts, reconnect_timeout=reconnect_timeout,
                          env=policy.as_env(), quiet=quiet, threads=threads))

    from hpo.api.studies import run_worker
    from hpo.worker.progress import EventLines, WorkerProgress
    from hpo.worker.trial import Outcome

    shown_rank = rank if show_rank else None
    show = EventLines(rank=shown_rank) if progress_events else WorkerProgress(quiet=quiet, rank=shown_rank)
    try:
        report = run_worker(name, target, n_trials=n_trials, timeout=timeout, device=device, rank=rank,
                            progress=show, allow_modules=allow_modules, module_paths=module_paths,
                            reconnect_timeout=reconnect_timeout, threads=threads)
    finally:
        show.close()
    outcomes = report.outcomes
    counts = {state: sum(o.state == state for o in outcomes) for state in Outcome}
    pruned = counts[Outcome.PRUNED] + counts[Outcome.STEERED]  # steered: closed as pruned
    handed_back = f", {counts[Outcome.PREEMPTED]} handed back" if counts[Outcome.PREEMPTED] else ""
    click.echo(f"{show.prefix}Worker done: {len(outcomes)} trials ({counts[Outcome.COMPLETE]} complete, "
               f"{pruned} pruned, {counts[Outcome.FAIL]} failed{handed_back}); {report.stop_reason}")
    if report.exit_code:
        click.echo(f"Error: {report.stop_reason}", err=True)
        sys.exit(report.exit_code)


def _gpu_ids(gpus: str | None, per_gpu: int | None, processes: int) -> list[int] | None:
    """Check how --gpus combines with the other options, then resolve it (None: no --gpus)."""
    from hpo.errors import UsageError

    if gpus is None:
        if per_gpu is not None:
            raise UsageError("--per-gpu needs --gpus (on the CPU, use --processes K)")
        return None
    ctx = click.get_current_context()
    if ctx.get_parameter_source("device") not in (None, click.core.ParameterSource.DEFAULT):
        raise UsageError("--gpus and --device cannot be combined: --gpus runs each process "
                         "on its own GPU (as cuda:0 inside it)")
    if processes > 1:
        raise UsageError("--gpus and --processes cannot be combined: use --per-gpu K for "
                         "K processes on each GPU")
    from hpo.worker.pool import parse_gpus

    return parse_gpus(gpus)
