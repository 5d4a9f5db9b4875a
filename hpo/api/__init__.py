"""hpo's Python API: the library the ``hpo`` command runs on, for scripts and notebooks.

- ``studies``: ``load_spec``, ``create_study``, ``run_worker`` (in this process);
- ``results``: ``load_results`` -> ``Results`` (best trial, trials, the export's frame, report);
  ``confirm`` (``hpo study confirm``: the best configurations again with new seeds);
- ``models``: ``load_model`` -> ``TrainedModel`` (the module in eval mode and its preprocessing).

``import hpo`` reaches these lazily (hpo/__init__.py), so the command line stays fast.
"""

from hpo.api.models import Preprocess, TrainedModel, load_model
from hpo.api.results import BestTrial, Results, confirm, load_results
from hpo.api.studies import CreatedStudy, create_study, load_spec, run_worker

__all__ = [
    "BestTrial", "CreatedStudy", "Preprocess", "Results", "TrainedModel",
    "confirm", "create_study", "load_model", "load_results", "load_spec", "run_worker",
]
