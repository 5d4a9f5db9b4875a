"""``hpo retrain``: train a chosen trial's configuration on train+validation, then test once.

After tuning, the validation split has done its job (choosing the configuration), so the final
model trains on train and validation together for the trial's full ``train.epochs``: no
pruning, and no early stopping (it would watch data the model trains on). Several seeds
(``train.seed + i``) say how much of the number is luck. The held-out test split is loaded
only with ``test=True``, exactly once, after all training.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hpo.errors import HpoError, UsageError
from hpo.results.outputs import make_output_dir
from hpo.study.attrs import StudyRecord, TrialRecord, retrain_key
from hpo.study.studies import LoadedStudy

if TYPE_CHECKING:
    from hpo.spec.trial_config import TrialConfig

Say = Callable[[str], None]


def choose_trial(loaded: LoadedStudy, number: int | None) -> TrialRecord:
    """Trial ``number``, or the best completed one (single-objective studies)."""
    from optuna.trial import TrialState

    study = loaded.study
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        found = [t for t in trials if t.number == number]
        if not found:
            raise UsageError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
        trial = TrialRecord.from_frozen(found[0])
        if trial.config is None:
            raise UsageError(f"trial {number} of {study.study_name!r} has no recorded config "
                             f"(state {trial.state_name}): it never started training")
        return trial
    if len(study.directions) > 1:
        raise UsageError(f"study {study.study_name!r} has several objectives, so no single best trial: "
                         "pick one of its Pareto-optimal trials with --trial N")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise HpoError(f"study {study.study_name!r} has no completed trial yet; "
                       "run workers first or pick a trial with --trial N")
    from hpo.results.summary import ranked_trials

    # The trial the dashboard, `hpo study best` and the report call best (Optuna's rule).
    return ranked_trials(study, trials)[0]


def _confirmed_pick(loaded: LoadedStudy, say: Say) -> int | None:
    """The trial ``hpo study confirm`` picked (the best mean over new seeds), said aloud:
    retrain's default once one is recorded, over the search's single-run best."""
    record = StudyRecord.from_attrs(loaded.study.user_attrs)
    pick = record.confirmed_trial
    if pick is not None:
        when = (record.confirmation or {}).get("timestamp")
        say(f"Default: trial {pick} is the pick of 'hpo study confirm' ({when}); --trial N retrains another")
    return pick


def _stored_config(study_name: str, number: int, stored: dict[str, Any]) -> TrialConfig:
    """The trial's recorded config, validated again: the storage may have been rewritten
    (the spec's sha256 does not cover a trial's attributes)."""
    from pydantic import ValidationError

    from hpo.spec.trial_config import TrialConfig

    try:
        return TrialConfig.from_json(stored)
    except (ValidationError, KeyError, TypeError) as exc:
        problems = ("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                    if isinstance(exc, ValidationError) else f"{type(exc).__name__}: {exc}")
        raise UsageError(f"trial {number} of {study_name!r}: its stored config is invalid: {problems}") from None


def _mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds; no std (None) for one seed, which has
    no spread to measure (a 0.0 would read as a perfectly steady result)."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def _spread(measured: dict[str, Any]) -> str:
    """``0.9500 ± 0.0020``, or ``0.9500`` alone for one seed."""
    return f"{measured['mean']:.4f}" + ("" if measured["std"] is None else f" ± {measured['std']:.4f}")


class _Progress:
    """Per-epoch lines for a retrain run (the loop's Reporter protocol)."""

    def __init__(self, say: Say, seed: int, epochs: int):
        self.say, self.seed, self.epochs = say, seed, epochs

    def report(self, metrics: Any) -> bool:
        if metrics.epoch == self.epochs or metrics.epoch % 5 == 0:
            self.say(f"  seed {self.seed}: epoch {metrics.epoch}/{self.epochs} "
                     f"train loss {metrics.train_loss:.4f} ({metrics.seconds:.1f} s)")
        return False


def retrain(
    loaded: LoadedStudy,
    *,
    trial_number: int | None = None,
    seeds: int = 1,
    test: bool = False,
    output: Path | None = None,
    device: str = "cpu",
    say: Say = print,
) -> dict[str, Any]:
    """Retrain, optionally test, write the files to ``output``; returns what metrics.json holds."""
    import torch

    from hpo.artifacts.trial_files import plot_confusion_matrix
    from hpo.models.custom import check_custom_model
    from hpo.training import data as data_module
    from hpo.training.loop import evaluate_model, train_final

    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    study = loaded.study
    trial = choose_trial(loaded, trial_number if trial_number is not None else _confirmed_pick(loaded, say))
    stored_config = cast("dict[str, Any]", trial.config)  # choose_trial: it has one
    config = _stored_config(study.study_name, trial.number, stored_config)
    check_custom_model(config.model)  # before any output or data: only code this machine allows
    data_cfg, model_cfg, train_cfg = config.data, config.model, config.train
    out = Path(output) if output else Path(f"retrain-{study.study_name}-{trial.number}")
    make_output_dir(out)

    splits = data_module.load_train_val(data_cfg, device)
    say(f"Retraining trial {trial.number} of {study.study_name} on train+validation "
        f"({len(splits.train)} images, {train_cfg.epochs} epochs, {seeds} seed(s)) on {device}")
    runs: list[tuple[dict[str, Any], torch.nn.Module]] = []
    for i in range(seeds):
        seed = train_cfg.seed + i
        cfg = train_cfg.model_copy(update={"seed": seed})
        started = time.monotonic()
        result = train_final(data_cfg, model_cfg, cfg, splits, device=device,
                             reporter=_Progress(say, seed, cfg.epochs))
        loss, acc, _, _ = evaluate_model(result.model, splits.train)
        weights = out / f"weights-seed{seed}.pt"
        torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, weights)
        run = {"seed": seed, "seconds": round(time.monotonic() - started, 2),
               "final_epoch_train_loss": result.history[-1].train_loss,
               "train_loss": loss, "train_accuracy": acc, "weights": weights.name}
        runs.append((run, result.model))
        say(f"Seed {seed} ({i + 1}/{seeds}): train+val accuracy {acc:.4f}, loss {loss:.4f} "
            f"in {run['seconds']:.1f} s -> {weights}")

    metrics: dict[str, Any] = {
        "study": study.study_name,
        "trial": trial.number,
        "trial_state": trial.state_name,
        "trial_values": trial.values,
        "seeds": [run["seed"] for run, _ in runs],
        "epochs": train_cfg.epochs,
        "device": device,
        "train_images": len(splits.train),
        "model": {"config": stored_config["model"], "in_shape": list(splits.in_shape),
                  "num_classes": splits.num_classes, "class_names": list(splits.class_names)},
        "train": {"accuracy": _mean_std([r["train_accuracy"] for r, _ in runs]),
                  "loss": _mean_std([r["train_loss"] for r, _ in runs])},
        "test_split_used": test,
        "test": None,
        "per_seed": [run for run, _ in runs],
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": stored_config,
    }
    if test:
        metrics["test"] = _test(data_module.load_test_split(data_cfg, device), runs, out,
                                evaluate_model, plot_confusion_matrix, say)
    else:
        say("The test split was not touched (add --test for the final number).")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    summary = {k: metrics[k] for k in ("seeds", "epochs", "train", "test", "test_split_used", "timestamp")}
    summary["output"] = str(out.resolve())
    study.set_user_attr(retrain_key(trial.number), summary)
    say(f"Wrote {out / 'metrics.json'}")
    return metrics


def _test(split: Any, runs: list[tuple[dict[str, Any], Any]], out: Path, evaluate: Any, plot: Any,
          say: Say) -> dict[str, Any]:
    """Every seed's model on the test split; confusion matrix and report of the first seed's."""
    from sklearn.metrics import classification_report

    first_targets: list[int] = []
    first_preds: list[int] = []
    for i, (run, model) in enumerate(runs):
        loss, acc, preds, targets = evaluate(model, split.test)
        run["test_loss"], run["test_accuracy"] = loss, acc
        if i == 0:
            first_preds, first_targets = preds, targets
    names = list(split.class_names)
    labels = list(range(len(names)))
    seed = runs[0][0]["seed"]
    plot(first_targets, first_preds, names, out / "confusion_matrix.png", title=f"test, seed {seed}")
    text = classification_report(first_targets, first_preds, labels=labels, target_names=names,
                                  digits=4, zero_division=0)
    (out / "classification_report.txt").write_text(f"Test split, seed {seed} model\n\n{text}")
    report = classification_report(first_targets, first_preds, labels=labels, target_names=names,
                                   output_dict=True, zero_division=0)
    (out / "classification_report.json").write_text(json.dumps(report, indent=2) + "\n")
    accuracy = _mean_std([r["test_accuracy"] for r, _ in runs])
    loss = _mean_std([r["test_loss"] for r, _ in runs])
    say(f"Test accuracy {_spread(accuracy)}, loss {_spread(loss)} over {len(runs)} seed(s) "
        f"({len(first_targets)} test images)")
    return {"accuracy": accuracy, "loss": loss, "images": len(first_targets),
            "report_seed": seed, "class_counts": split.class_counts["test"]}
