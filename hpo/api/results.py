"""A study's results from Python: the best trial, every trial, the export's frame, the report.

The same functions as ``hpo study best|export|report``, so the API, the CLI, the report and
the dashboard's links name the same best trial (hpo.results.summary.ranked_trials) and the
same columns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.api.studies import Models, Storage, storage_target

if TYPE_CHECKING:
    import pandas as pd
    from optuna import Study

    from hpo.api.models import TrainedModel
    from hpo.results.confirm import Confirmation
    from hpo.results.report import ReportResult
    from hpo.spec.model import Spec
    from hpo.study.attrs import TrialRecord
    from hpo.study.studies import LoadedStudy


@dataclass(frozen=True)
class BestTrial:
    """A best trial (or one of a multi-objective study's Pareto front)."""

    number: int
    metric: str  # the first objective's metric
    value: float  # its value of that metric
    values: list[float]  # one per objective
    params: dict[str, Any]  # the sampled parameters
    config: dict[str, Any]  # the full resolved config: {"data": ..., "model": ..., "train": ...}
    spec: dict[str, Any]  # a spec that re-runs exactly this configuration (hpo study best --format yaml)

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> BestTrial:
        from hpo.study.attrs import CONFIG

        return cls(entry["number"], entry["metric"], entry["value"], entry["values"],
                   entry["params"], entry[CONFIG], entry["spec"])


class Results:
    """The results of one study. Each property reads the storage again, so a study that
    workers are still running shows its latest trials. ``close()`` (or a ``with`` block)
    closes its database connections; reading again afterwards opens new ones."""

    def __init__(self, loaded: LoadedStudy, storage: str):
        self._loaded = loaded
        self.storage = storage  # where, safe to print

    @property
    def name(self) -> str:
        return self._loaded.study.study_name

    @property
    def spec(self) -> Spec:
        return self._loaded.spec

    @property
    def study(self) -> Study:
        """The Optuna study, for anything Optuna itself offers (plots, ``trials_dataframe``)."""
        return self._loaded.study

    @property
    def best(self) -> BestTrial:
        """The best completed trial, as ``hpo study best`` and the dashboard name it (of
        equal values the first, Optuna's rule); raises ``HpoError`` while none has completed,
        and ``UsageError`` for a multi-objective study (see ``pareto``)."""
        from hpo.errors import UsageError

        if len(self.spec.objectives) > 1:
            raise UsageError(f"study {self.name!r} has several objectives, so no single best trial: "
                             "use .pareto (its Pareto-optimal trials)")
        return BestTrial.from_entry(self._best_entries()[0])

    @property
    def pareto(self) -> list[BestTrial]:
        """The trials no other beats on every objective (the best trial alone for one)."""
        return [BestTrial.from_entry(e) for e in self._best_entries()]

    def _best_entries(self) -> list[dict[str, Any]]:
        from hpo.results.summary import best_trials

        return best_trials(self._loaded)

    @property
    def trials(self) -> list[TrialRecord]:
        """Every trial (the budget race's unrun hand-backs left out), in number order."""
        from hpo.study.attrs import trial_records
        from hpo.study.studies import visible_trials

        return trial_records(visible_trials(self.study.get_trials(deepcopy=False)))

    def dataframe(self) -> pd.DataFrame:
        """One row per trial, the columns of ``hpo study export`` (``params_*`` as Optuna
        names them, ``total_params``, timings, memory, flattened attributes such as
        ``config.train.lr``, curves as lists; nullable ``Int64`` where a trial lacks a value)."""
        from hpo.results.export import trials_frame

        return trials_frame(self.study)

    def summary(self, top: int = 5) -> dict[str, Any]:
        """What ``hpo study show --format json`` prints."""
        from hpo.results.summary import study_summary

        return study_summary(self._loaded, top=top)

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write the frame to ``path`` (.csv, .json or .parquet); returns the row count."""
        from hpo.results.export import export_format, export_study
        from hpo.results.outputs import check_output_file

        output = Path(path)
        check_output_file(output)
        export_format(output)
        return export_study(self._loaded, output)

    def report(self, directory: str | os.PathLike[str], *, top: int = 5) -> ReportResult:
        """Write report.md, report.html and the figures into ``directory`` (created if new;
        its parent must exist); returns their paths and any notes."""
        from hpo.results.outputs import check_output_dir
        from hpo.results.report import write_report

        output = check_output_dir(Path(directory))
        return write_report(self._loaded, output, top=top)

    def load_model(self, trial: int | None = None, *, device: str = "cpu",
                   models: Models | None = None) -> TrainedModel:
        """``hpo.load_model`` for a trial of this study (default: the best)."""
        from hpo.api.models import model_of_trial

        return model_of_trial(self._loaded, trial, device=device, models=models)

    def close(self) -> None:
        """Close the study's database connections (a notebook looping over studies on
        PostgreSQL would otherwise keep one pool per study); nothing for a journal file."""
        from hpo.storage.closing import close_connections

        close_connections(self.study)

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Results({self.name!r} in {self.storage})"


def load_results(name: str, storage: Storage = None) -> Results:
    """The results of study ``name`` (``StudyNotFoundError`` names the studies there).
    Reads only: nothing is created in the storage."""
    from hpo.study.studies import load_study

    target = storage_target(storage)
    return Results(load_study(name, target), target.display)


def confirm(name: str, storage: Storage = None, *, top: int = 3, seeds: int = 3, device: str = "auto",
            models: Models | None = None, allow_modules: Iterable[str] = (), module_paths: Iterable[str] = (),
            say: Callable[[str], None] | None = print) -> Confirmation:
    """``hpo study confirm``: train the ``top`` best configurations of study ``name`` again with
    ``seeds`` new seeds each (same split), compare their means (Welch's t-test against the best
    mean), and record the pick in the study, where ``hpo retrain`` finds it. ``say`` gets the
    progress lines (None: quiet); ``models``, ``allow_modules``, ``module_paths`` as for
    ``run_worker``. Returns the ``Confirmation`` (``.pick``, ``.candidates``, ``.rows()``)."""
    from hpo.api.studies import module_policy
    from hpo.results.confirm import confirm as run_confirm
    from hpo.storage.closing import close_connections
    from hpo.study.studies import load_study
    from hpo.worker.device import resolve_device
    from hpo.worker.model_code import using_module_policy

    policy = module_policy(models, allow_modules, module_paths)
    loaded = load_study(name, storage_target(storage))
    try:
        with using_module_policy(policy):
            return run_confirm(loaded, top=top, seeds=seeds, device=resolve_device(device),
                               say=say if say is not None else (lambda _line: None))
    finally:
        close_connections(loaded.study)  # a one-shot call
