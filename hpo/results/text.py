"""How numbers look in tables, reports and terminal output (one place for both)."""

from __future__ import annotations

from typing import Any

from hpo.study.attrs import CURVES, DEVICE, IMAGES_PER_SECOND, PARAMS_TOTAL, PARAMS_TRAINABLE, SECONDS_PER_EPOCH


def fmt_value(value: Any) -> str:
    """``-`` for missing values, 4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_count(value: Any) -> str:
    """An integer count with thousands separators (``1,234,567``); ``-`` when missing."""
    return "-" if value is None else f"{int(value):,}"


def fmt_fixed(value: Any, decimals: int) -> str:
    """A number with ``decimals`` fixed decimals, so that a column's points line up; ``-``
    when missing or not finite."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return "-"
    return f"{float(value):,.{decimals}f}"


def seeds_std(measured: dict[str, Any]) -> float | None:
    """The std of a retrain's mean over seeds (``{"mean", "std", "values"}``); None for one
    seed, also as older versions stored it (0.0)."""
    std = measured.get("std")
    if std is None or len(measured.get("values") or []) == 1:
        return None
    return float(std)


def fmt_mean_std(mean: float, std: float | None) -> str:
    """``0.9500 ± 0.0020``; ``0.9500 (1 seed)`` without a std: one seed has no spread, and a
    ``± 0.0000`` would read as a perfectly steady result."""
    return f"{mean:.4f} (1 seed)" if std is None else f"{mean:.4f} ± {std:.4f}"


def _named(values: dict[str, Any], fmt: str) -> str:
    return "  ".join(f"{name} {format(value, fmt)}" for name, value in values.items())


def trial_lines(shown: dict[str, Any]) -> list[str]:
    """``hpo study show NAME --trial N`` as text, from ``hpo.results.summary.trial_summary``."""
    value = "" if shown["value"] is None else f", value {fmt_value(shown['value'])}"
    lines = [f"Trial {shown['number']}: {shown['state']}{value}",
             f"Model: {shown['model'] or '-'}; parameters {fmt_count(shown[PARAMS_TOTAL])} total, "
             f"{fmt_count(shown[PARAMS_TRAINABLE])} trainable",
             f"Speed: {fmt_fixed(shown[SECONDS_PER_EPOCH], 2)} s/epoch, "
             f"{fmt_fixed(shown[IMAGES_PER_SECOND], 0)} images/s on {shown[DEVICE] or '-'}"]
    if shown["params"]:
        lines.append("Params: " + ", ".join(f"{k}={fmt_value(v)}" for k, v in shown["params"].items()))
    lines += _epoch_lines(shown[CURVES])
    counts = shown["class_counts"]
    if counts:
        lines.append("Class counts:")
        lines += [f"  {split} ({sum(c.values()):,}): {_named(c, 'd')}" for split, c in counts.items()]
        if "test" not in counts:
            lines.append("  test: not read while tuning (hpo retrain --test counts it)")
    else:
        lines.append("Class counts: not recorded")
    weights, setting = shown["class_weights"], shown["class_weights_setting"]
    lines.append(f"Class weights ({setting}): {_named(weights, '.3f')}" if weights
                 else f"Class weights: none (train.class_weights {setting})")
    test = shown["test_accuracy"]
    if test:
        lines.append(f"Retrain test accuracy: {fmt_mean_std(test['mean'], seeds_std(test))}")
    return lines


def _epoch_lines(curves: dict[str, list[Any]]) -> list[str]:
    """One line per epoch: train and validation loss and accuracy."""
    keys = (("train_loss", "train loss"), ("train_accuracy", "train acc"),
            ("val_loss", "val loss"), ("val_accuracy", "val acc"))
    epochs = len(curves.get("val_loss") or curves.get("train_loss") or [])
    if not epochs:
        return ["Epochs: none trained"]
    lines = ["Epochs:", f"  {'epoch':>5}  " + "  ".join(f"{label:>10}" for _, label in keys)]
    for e in range(epochs):
        cells = []
        for key, _ in keys:
            series = curves.get(key) or []
            cells.append(fmt_fixed(series[e] if e < len(series) else None, 4))
        lines.append(f"  {e + 1:>5}  " + "  ".join(f"{c:>10}" for c in cells))
    return lines
