"""Checkpoints: a run stopped at a batch or an epoch boundary and resumed from its saved
state trains exactly as a run that was never stopped (CPU, one seed)."""

from __future__ import annotations

import pytest
import torch

from hpo.errors import Preempted
from hpo.models import CNNConfig
from hpo.training import DataConfig, TrainConfig, train_model
from hpo.training.checkpoint import from_bytes, to_bytes

DATA = DataConfig(name="digits", augment="light")
MODEL = CNNConfig(n_blocks=1, filters=8, dropout=0.2, batch_norm=True)


class InMemory:
    """Checkpoints kept as bytes, as the artifact store keeps them. ``every_epoch=False``: no
    save is ever due after an epoch (a ``budget.checkpoint_interval`` longer than the run)."""

    def __init__(self, every_epoch: bool = True) -> None:
        self.every_epoch = every_epoch
        self.data: bytes | None = None
        self.saves: list[dict] = []

    def load(self):
        return None if self.data is None else from_bytes(self.data)

    def due(self) -> bool:
        return self.every_epoch

    def save(self, state):
        self.data = to_bytes(state)
        self.saves.append(state["position"])


def stop_after(calls: int):
    seen = {"n": 0}

    def stop() -> bool:
        seen["n"] += 1
        return seen["n"] >= calls

    return stop


@pytest.mark.parametrize("train", [
    TrainConfig(epochs=4, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine", warmup_epochs=1,
                seed=3),
    TrainConfig(epochs=4, batch_size=64, optimizer="adamw", lr=3e-3, schedule="plateau", plateau_patience=1, seed=4,
                early_stopping={"patience": 3, "metric": "val_loss"}),
    TrainConfig(epochs=4, batch_size=64, optimizer="rmsprop", lr=1e-3, schedule="one_cycle", seed=5),
], ids=["sgd-cosine-warmup", "adamw-plateau-early-stopping", "rmsprop-one-cycle"])
@pytest.mark.parametrize("boundary", [False, True], ids=["mid-epoch", "epoch-boundary"])
@pytest.mark.parametrize("every_epoch", [True, False], ids=["saves-every-epoch", "no-save-due"])
def test_a_resumed_run_equals_an_uninterrupted_one(train, boundary, every_epoch):
    """A stop request saves where the run is, whether or not a save was due."""
    calls = {"n": 0}

    def never() -> bool:  # asked once before each epoch and after every batch
        calls["n"] += 1
        return False

    reference = train_model(DATA, MODEL, train, stop_requested=never)
    batches = calls["n"] // len(reference.history) - 1
    # Stop 5 batches into epoch 2, or when epoch 2 is about to start.
    stop_at = 1 + batches + (1 if boundary else 1 + 5)
    store = InMemory(every_epoch)
    with pytest.raises(Preempted) as stopped:
        train_model(DATA, MODEL, train, checkpoints=store, stop_requested=stop_after(stop_at))
    assert stopped.value.checkpointed
    # After epoch 1 if due, and at a stop mid-epoch 2; a stop between epochs saves only if
    # the end of epoch 1 was not saved already.
    assert len(store.saves) == (2 if every_epoch and not boundary else 1)
    position = store.saves[-1]
    assert (position["epoch"], position["batch"]) == ((1, 0) if boundary else (1, 5))
    assert len(position["losses"]) == position["batch"]
    resumed = train_model(DATA, MODEL, train, checkpoints=store)
    assert [m.val_loss for m in resumed.history] == [m.val_loss for m in reference.history]
    assert [m.train_loss for m in resumed.history] == [m.train_loss for m in reference.history]
    for ours, theirs in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
        assert torch.equal(ours, theirs)


def test_every_finished_epoch_is_saved_except_the_last():
    store = InMemory()
    result = train_model(DATA, MODEL, TrainConfig(epochs=3, batch_size=128, seed=0), checkpoints=store)
    assert len(result.history) == 3
    assert store.saves == [{"epoch": e, "batch": 0, "losses": [], "sizes": [], "seconds": 0.0, "correct": 0}
                           for e in (1, 2)]


def test_stopping_without_a_store_still_stops_at_the_next_batch():
    with pytest.raises(Preempted, match=r"^stopped by a stop request at epoch 1, batch 1 \(no checkpoint store\)$"):
        train_model(DATA, MODEL, TrainConfig(epochs=3, batch_size=128, seed=0), stop_requested=stop_after(2))


def test_a_stop_before_the_first_epoch_saves_nothing():
    store = InMemory(every_epoch=False)
    with pytest.raises(Preempted, match=r"^stopped by a stop request at the start \(nothing to save yet\)$"):
        train_model(DATA, MODEL, TrainConfig(epochs=3, batch_size=128, seed=0), checkpoints=store,
                    stop_requested=stop_after(1))
    assert store.saves == []


def test_a_checkpoint_loads_without_running_code():
    store = InMemory()
    train_model(DATA, MODEL, TrainConfig(epochs=2, batch_size=128, seed=0), checkpoints=store)
    state = torch.load(__import__("io").BytesIO(store.data), weights_only=True)
    assert state["position"]["epoch"] == 1 and state["format"] == 1
