"""The training loss: cross-entropy with optional label smoothing and class weights.

Only the training loss changes; ``val_loss`` stays plain cross-entropy, so trials that search
``train.label_smoothing`` or ``train.class_weights`` are still scored on the same scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hpo.errors import TrainingError


class Loss:
    """``loss(logits, y)``: the mean cross-entropy over the batch, weighted by class when
    asked. An object rather than a closure so that the trial can record the class weights
    it actually applied (``class_weights``), not what the config asked for."""

    def __init__(self, weight: torch.Tensor | None, label_smoothing: float):
        self.weight = weight
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=self.weight, label_smoothing=self.label_smoothing)

    @property
    def class_weights(self) -> list[float] | None:
        """The weight of each class (by label) in the training loss; None when unweighted."""
        return None if self.weight is None else [float(w) for w in self.weight.cpu().tolist()]


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``n_samples / (n_classes * count_c)`` per class, as scikit-learn computes it."""
    from sklearn.utils.class_weight import compute_class_weight

    y = labels.detach().cpu().numpy()
    try:
        weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=y)
    except ValueError as e:  # a class with no training example has no finite weight
        raise TrainingError(f"train.class_weights balanced: {e}") from None
    return torch.as_tensor(weights, dtype=torch.float32)


def make_loss(
    labels: torch.Tensor,
    num_classes: int,
    device: torch.device,
    *,
    label_smoothing: float,
    class_weights: str,
) -> Loss:
    """``loss(logits, y)``, the mean over the batch (weighted by class when asked).

    ``labels``: the training split's, which balanced class weights are counted from.
    """
    weight = None
    if class_weights == "balanced":
        weight = balanced_class_weights(labels, num_classes).to(device)
    return Loss(weight, label_smoothing)
