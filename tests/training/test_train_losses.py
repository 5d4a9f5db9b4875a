"""The training loss: label smoothing and balanced class weights; val_loss stays plain."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from hpo.errors import TrainingError
from hpo.models import MLPConfig, create_model
from hpo.training import DataConfig, TrainConfig, train_model
from hpo.training.data import load_splits
from hpo.training.factories import loss_from_config
from hpo.training.losses import balanced_class_weights, make_loss

DATA = DataConfig()
TINY = MLPConfig(n_layers=1, width=16)
CPU = torch.device("cpu")


def test_label_smoothing_is_torchs_and_changes_the_loss():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 5, generator=gen)
    y = torch.randint(0, 5, (32,), generator=gen)
    labels = torch.arange(5)
    plain = loss_from_config(TrainConfig(), labels, 5, CPU)(logits, y)
    smooth = make_loss(labels, 5, CPU, label_smoothing=0.2, class_weights="none")(logits, y)
    assert torch.equal(plain, F.cross_entropy(logits, y))
    assert torch.equal(smooth, F.cross_entropy(logits, y, label_smoothing=0.2))
    assert not torch.isclose(plain, smooth)


def test_balanced_weights_are_sklearns_on_imbalanced_labels():
    labels = torch.tensor([0] * 12 + [1] * 3 + [2] * 6 + [3] * 1)
    weights = balanced_class_weights(labels, 4)
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels.numpy())
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx(expected.tolist())
    # n_samples / (n_classes * count_c), by hand: the rare class weighs most.
    assert weights.tolist() == pytest.approx([22 / (4 * 12), 22 / (4 * 3), 22 / (4 * 6), 22 / 4])


def test_balanced_weights_reach_the_loss():
    labels = torch.tensor([0] * 9 + [1])
    logits = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))
    loss = loss_from_config(TrainConfig(class_weights="balanced"), labels, 2, CPU)(logits, labels)
    weight = torch.tensor([10 / 18, 10 / 2])
    assert torch.allclose(loss, F.cross_entropy(logits, labels, weight=weight))
    assert not torch.allclose(loss, F.cross_entropy(logits, labels))


def test_a_class_missing_from_the_training_labels_is_a_training_error():
    with pytest.raises(TrainingError, match="train.class_weights balanced"):
        balanced_class_weights(torch.tensor([0, 0, 2]), 3)


@pytest.mark.parametrize(
    "train",
    [
        {},
        {"label_smoothing": 0.3},
        {"class_weights": "balanced"},
        {"label_smoothing": 0.1, "class_weights": "balanced"},
    ],
)
def test_train_loss_is_the_configured_loss_and_val_loss_stays_plain(train):
    # One batch holding every training image and an lr too small to move a float32 weight:
    # the recorded losses are those of the freshly initialised model, computable here.
    cfg = TrainConfig(epochs=1, batch_size=4096, optimizer="sgd", momentum=0.0, lr=1e-30, **train)
    result = train_model(DATA, TINY, cfg)
    splits = load_splits(DATA)
    torch.manual_seed(cfg.seed)
    net = create_model(TINY, splits.in_shape, splits.num_classes)
    ((xt, yt),) = splits.train.batches(4096)
    ((xv, yv),) = splits.val.batches(4096)
    with torch.no_grad():
        weight = (
            balanced_class_weights(yt, splits.num_classes)
            if cfg.class_weights == "balanced"
            else None
        )
        expected_train = F.cross_entropy(
            net(xt), yt, weight=weight, label_smoothing=cfg.label_smoothing
        )
        plain_train = F.cross_entropy(net(xt), yt)
        expected_val = F.cross_entropy(net(xv), yv)
    [epoch] = result.history
    assert epoch.train_loss == pytest.approx(expected_train.item(), rel=1e-5)
    assert epoch.val_loss == pytest.approx(expected_val.item(), rel=1e-5)
    # ... and the options made a difference to it.
    assert (epoch.train_loss == pytest.approx(plain_train.item(), rel=1e-4)) == (not train)
