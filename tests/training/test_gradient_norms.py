"""``train.record_gradients``: one gradient norm per Linear/Conv layer per epoch, on digits.

The vanishing-gradient set-up (an 8-unit x 6-layer sigmoid MLP, weights from U(-0.05, 0.05))
is the spec users write to watch gradients shrink towards the input; its norms fall by
orders of magnitude layer by layer, far beyond what a seed could change.
"""

from __future__ import annotations

import math

import pytest
from torch import nn

from hpo.models import CNNConfig, MLPConfig, create_model
from hpo.spec import load_spec, spec_to_json
from hpo.training import DataConfig, TrainConfig, train_model

DATA = DataConfig()
VANISHING = MLPConfig(n_layers=6, width=8, activation="sigmoid", init="uniform", init_range=0.05)

VANISHING_SPEC = """\
name: vanishing
objective: {metric: val_accuracy, direction: maximize}
budget: {n_trials: 1}
sampler: {name: random, seed: 0}
pruner: {name: none}
data: {name: digits}
model: {name: mlp, n_layers: 6, width: 8, activation: sigmoid, init: uniform, init_range: 0.05}
train: {epochs: 2, batch_size: 64, optimizer: adam, lr: 1.0e-3, record_gradients: true}
"""


def _layer_names(model_cfg, in_shape=(1, 8, 8), num_classes=10) -> list[str]:
    """What the loop should record: every Linear/Conv module of the built model, in order."""
    net = create_model(model_cfg, in_shape, num_classes)
    return [name for name, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_off_by_default_records_nothing():
    assert TrainConfig().record_gradients is False
    result = train_model(DATA, MLPConfig(n_layers=1, width=16), TrainConfig(epochs=2))
    assert [m.grad_norms for m in result.history] == [None, None]


def test_one_positive_finite_norm_per_layer_per_epoch():
    result = train_model(DATA, VANISHING, TrainConfig(epochs=3, record_gradients=True))
    names = _layer_names(VANISHING)
    assert len(names) == 7  # 6 hidden layers and the output layer
    assert len(result.history) == 3
    for metrics in result.history:
        assert metrics.grad_norms is not None
        assert list(metrics.grad_norms) == names  # input layer first
        assert all(math.isfinite(v) and v > 0 for v in metrics.grad_norms.values()), metrics.grad_norms


def test_uniform_init_with_sigmoid_makes_gradients_vanish_towards_the_input():
    result = train_model(DATA, VANISHING, TrainConfig(epochs=2, record_gradients=True))
    for metrics in result.history:
        assert metrics.grad_norms is not None
        norms = list(metrics.grad_norms.values())
        # Each sigmoid layer multiplies the backward signal by at most 0.25 x |W| (|W| <= 0.4
        # here): the norms rise layer by layer towards the output, by orders of magnitude.
        assert norms == sorted(norms), norms
        assert norms[0] < 1e-4 * norms[-1], norms


def test_recording_only_watches():
    # Same seed, same curve: the norms are read between backward and the step, nothing else.
    model = MLPConfig(n_layers=2, width=32)
    plain = train_model(DATA, model, TrainConfig(epochs=2, grad_clip=1.0)).history
    watched = train_model(DATA, model, TrainConfig(epochs=2, grad_clip=1.0, record_gradients=True)).history
    assert [(m.train_loss, m.val_loss) for m in watched] == [(m.train_loss, m.val_loss) for m in plain]


def test_the_vanishing_spec_validates_and_trains(tmp_path):
    path = tmp_path / "vanishing.yaml"
    path.write_text(VANISHING_SPEC)
    spec = load_spec(path)
    assert spec.model == VANISHING
    assert spec.train.record_gradients is True
    result = train_model(spec.data, spec.model, spec.train)
    assert len(result.history) == 2
    assert all(m.grad_norms is not None and len(m.grad_norms) == 7 for m in result.history)


def test_conv_layers_are_recorded_too():
    cnn = CNNConfig(n_blocks=1, filters=4, fc_width=8)
    result = train_model(DATA, cnn, TrainConfig(epochs=1, record_gradients=True))
    norms = result.history[0].grad_norms
    assert norms is not None and list(norms) == _layer_names(cnn)
    net = create_model(cnn, (1, 8, 8), 10)
    assert any(isinstance(net.get_submodule(name), nn.Conv2d) for name in norms)
    assert all(math.isfinite(v) and v > 0 for v in norms.values())


def test_norms_are_taken_before_clipping():
    # Clipping to a tiny total norm leaves what backpropagation delivered on record.
    base = TrainConfig(epochs=1, record_gradients=True, optimizer="sgd", lr=1e-9)
    clipped = train_model(DATA, VANISHING, base.model_copy(update={"grad_clip": 1e-12})).history[0]
    free = train_model(DATA, VANISHING, base).history[0]
    assert clipped.grad_norms is not None and free.grad_norms is not None
    # lr 1e-9: both runs' weights barely move, so their gradients agree to many digits.
    for name, value in free.grad_norms.items():
        assert clipped.grad_norms[name] == pytest.approx(value, rel=1e-3)
        assert value > 1e-11


def test_bf16_records_finite_norms():
    result = train_model(DATA, MLPConfig(n_layers=2, width=16), TrainConfig(epochs=1, precision="bf16",
                                                                          record_gradients=True))
    norms = result.history[0].grad_norms
    assert norms is not None and len(norms) == 3
    assert all(math.isfinite(v) and v > 0 for v in norms.values())


def test_a_spec_that_leaves_it_off_is_stored_as_before(tmp_path):
    # Studies created before the key existed hold specs without it; `study create --if-exists
    # reuse` compares their hashes, so the default stays out of the stored JSON.
    path = tmp_path / "plain.yaml"
    path.write_text(VANISHING_SPEC.replace(", record_gradients: true", "").replace(", init_range: 0.05", ""))
    stored = spec_to_json(load_spec(path))
    assert "record_gradients" not in stored["train"]
    assert "init_range" not in stored["model"]
    assert stored["model"]["init"] == "uniform"
    path.write_text(VANISHING_SPEC.replace("init_range: 0.05", "init_range: 0.1"))
    stored = spec_to_json(load_spec(path))
    assert stored["train"]["record_gradients"] is True and stored["model"]["init_range"] == 0.1


def test_a_resumed_run_keeps_the_norms_of_the_epochs_before_its_restart():
    from hpo.errors import Preempted
    from tests.training.test_training_checkpoint import InMemory, stop_after

    train = TrainConfig(epochs=3, batch_size=128, record_gradients=True)
    reference = train_model(DATA, VANISHING, train).history
    store = InMemory()
    # Asked once before each epoch and after every batch: 1 + 9 batches (digits' 1,078
    # training images in 128s) is epoch 1; the 12th call stops 1 batch into epoch 2.
    with pytest.raises(Preempted):
        train_model(DATA, VANISHING, train, checkpoints=store, stop_requested=stop_after(12))
    assert (store.saves[-1]["epoch"], store.saves[-1]["batch"]) == (1, 1)
    resumed = train_model(DATA, VANISHING, train, checkpoints=store).history
    assert [m.epoch for m in resumed] == [1, 2, 3]
    assert resumed[0].grad_norms == reference[0].grad_norms  # from the checkpoint, as recorded
    # Epoch 2 averages the batches trained after the restart: close to, not exactly, the
    # uninterrupted run's mean; epoch 3 is whole again.
    assert resumed[1].grad_norms is not None and reference[1].grad_norms is not None
    for name, value in reference[1].grad_norms.items():
        assert resumed[1].grad_norms[name] == pytest.approx(value, rel=0.5)
    assert resumed[2].grad_norms == reference[2].grad_norms


class _RowLSTM(nn.Module):
    """Reads an image row by row: an LSTM and nothing else (no Linear, no Conv layer)."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        channels, _height, width = in_shape
        self.lstm = nn.LSTM(channels * width, num_classes, batch_first=True)

    def forward(self, x):
        rows = x.permute(0, 2, 1, 3).flatten(2)  # (batch, height, channels * width)
        out, _ = self.lstm(rows)
        return out[:, -1]


def test_a_model_without_linear_or_conv_layers_records_nothing():
    from hpo.models import CustomConfig
    from hpo.models.custom import ModulePolicy, using_module_policy

    with using_module_policy(ModulePolicy(classes=(("gradnets.rows:RowLSTM", _RowLSTM),))):
        result = train_model(DATA, CustomConfig(module="gradnets.rows:RowLSTM"),
                             TrainConfig(epochs=2, record_gradients=True))
    assert [m.grad_norms for m in result.history] == [None, None]
    assert all(math.isfinite(m.train_loss) for m in result.history)
