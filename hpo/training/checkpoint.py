"""Everything a trial needs to continue where it stopped: model, optimiser, schedule, loss
scaler, random generators, epoch (and batch, when stopped mid-epoch), curves and early
stopping, as one ``torch.save``-able dict of tensors and plain values.

The training loop never knows where checkpoints live: it gets a ``Checkpoints`` (the worker
keeps them in the study's artifact store) and a ``stop_requested`` callable.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Protocol

import torch

from hpo.training.metrics import EpochMetrics

FORMAT = 1


class Checkpoints(Protocol):
    def load(self) -> dict[str, Any] | None:
        """The last saved state, or None."""
        ...

    def due(self) -> bool:
        """Whether to save at the end of this epoch (a stop request saves regardless)."""
        ...

    def save(self, state: dict[str, Any]) -> None: ...


@dataclasses.dataclass
class Position:
    """Where a trial resumes: after ``epoch`` whole epochs and ``batch`` batches of the next."""

    epoch: int = 0
    batch: int = 0
    losses: list[float] = dataclasses.field(default_factory=list)  # of those batches
    sizes: list[int] = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # spent on them
    correct: int = 0  # of their images classified right (train accuracy); 0 in older checkpoints


@dataclasses.dataclass
class Progress:
    """The loop's own bookkeeping across epochs."""

    history: list[EpochMetrics]
    images: int = 0
    train_seconds: float = 0.0
    early_stopping: tuple[float, int] | None = None  # (best, epochs without improvement)


def snapshot(run: Any, *, shuffle_state: torch.Tensor, position: Position, progress: Progress) -> dict[str, Any]:
    """The state to save. ``shuffle_state``: the shuffling generator as it was at the start of
    the epoch being resumed (its permutation is drawn again and the done batches skipped)."""
    return {
        "format": FORMAT,
        "position": dataclasses.asdict(position),
        "model": run.net.state_dict(),
        "optimizer": run.opt.state_dict(),
        "schedule": run.schedule.state_dict(),
        "scaler": None if run.scaler is None else run.scaler.state_dict(),
        "augment": None if run.augment is None else run.augment.state_dict(),
        "shuffle_rng": shuffle_state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "history": [dataclasses.asdict(m) for m in progress.history],
        "images": progress.images,
        "train_seconds": progress.train_seconds,
        "early_stopping": None if progress.early_stopping is None else list(progress.early_stopping),
    }


def restore(run: Any, shuffle: torch.Generator, state: dict[str, Any]) -> tuple[Position, Progress]:
    """Put ``run`` and the shuffling generator back as ``state`` says."""
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r} is not {FORMAT}")
    run.net.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["schedule"])
    if run.scaler is not None and state["scaler"] is not None:
        run.scaler.load_state_dict(state["scaler"])
    if run.augment is not None and state["augment"] is not None:
        run.augment.load_state_dict(state["augment"])
    shuffle.set_state(state["shuffle_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    early = state["early_stopping"]
    progress = Progress(
        history=[EpochMetrics(**m) for m in state["history"]],
        images=state["images"],
        train_seconds=state["train_seconds"],
        early_stopping=None if early is None else (float(early[0]), int(early[1])),
    )
    return Position(**state["position"]), progress


def to_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict[str, Any]:
    # weights_only: a checkpoint read from a shared store runs no code when loaded.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
