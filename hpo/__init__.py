"""hpo: hyperparameter optimisation for image classifiers, on Optuna.

The Python API (the same library the ``hpo`` command runs on)::

    import hpo

    hpo.create_study("search_spaces/digits_cnn.yaml", storage="studies.journal")
    hpo.run_worker("digits-cnn", storage="studies.journal")
    results = hpo.load_results("digits-cnn", storage="studies.journal")
    results.best.params, results.dataframe()
    model = hpo.load_model("digits-cnn", storage="studies.journal")

Names are imported on first use (PEP 562): ``import hpo`` loads neither torch nor optuna,
so ``hpo --help`` and a worker on a spent study stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpo import errors
    from hpo.api import (
        BestTrial,
        CreatedStudy,
        Preprocess,
        Results,
        TrainedModel,
        confirm,
        create_study,
        load_model,
        load_results,
        load_spec,
        run_worker,
    )
    from hpo.errors import HpoError, SpecError, StudyNotFoundError, UsageError

__all__ = [
    "load_spec", "create_study", "run_worker", "load_results", "load_model", "confirm",
    "BestTrial", "CreatedStudy", "Preprocess", "Results", "TrainedModel",
    "HpoError", "SpecError", "StudyNotFoundError", "UsageError", "errors", "__version__",
]

_ERRORS = ("HpoError", "SpecError", "StudyNotFoundError", "UsageError")


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("hpo")  # pyproject.toml's, the one version there is
    if name == "errors" or name in _ERRORS:
        import hpo.errors

        return hpo.errors if name == "errors" else getattr(hpo.errors, name)
    if name in __all__:
        import hpo.api

        return getattr(hpo.api, name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
