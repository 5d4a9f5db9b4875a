"""Per-trial runtime settings: mixed precision, determinism, peak memory.

Each is a small object or context manager so the epoch loop reads the same on every device.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

from hpo.errors import TrainingError

# cuBLAS needs this (or ":16:8") for reproducible matmuls on CUDA >= 10.2; torch checks the
# variable whenever a cuBLAS op runs under use_deterministic_algorithms. The workspace size
# itself is read once per process, so set it in the worker's environment to be sure.
CUBLAS_DETERMINISTIC = ":4096:8"


@dataclass(frozen=True)
class Precision:
    """The precision a trial runs in, which may differ from the one asked for."""

    name: str  # fp32 | bf16 | fp16: what actually runs
    device_type: str
    dtype: torch.dtype | None  # autocast dtype; None for fp32

    def autocast(self) -> AbstractContextManager[object]:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """fp16 needs CUDA; bf16 needs CUDA with native bf16 (Ampere or later) or the CPU.
    Anything else falls back to fp32, and ``Precision.name`` says so."""
    kind = device.type
    if requested == "fp16" and kind == "cuda":
        return Precision("fp16", kind, torch.float16)
    if requested == "bf16" and kind == "cpu":
        return Precision("bf16", kind, torch.bfloat16)
    if (
        requested == "bf16"
        and kind == "cuda"
        and torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        return Precision("bf16", kind, torch.bfloat16)
    return Precision("fp32", kind, None)


def use_channels_last(requested: bool, device: torch.device) -> bool:
    """Whether a trial trains in NHWC (``train.channels_last``): only on CUDA, where cuDNN's
    NHWC kernels and tensor cores (above all in fp16/bf16) make it pay. Elsewhere the default
    layout is kept: on the CPU it measured no faster for the digits CNN, and the conversions
    each batch would be pure cost."""
    return requested and device.type == "cuda"


@contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the duration of one trial, then the previous settings.

    Shuffling, initialisation and augmentation are seeded either way; this also rules out
    nondeterministic kernels (atomics in CUDA reductions, cuDNN autotuning). An op with no
    deterministic CUDA kernel then raises, which fails the trial with a TrainingError.
    """
    if not enabled:
        yield
        return
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    cudnn = torch.backends.cudnn
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    except RuntimeError as e:
        found = re.search(r"(\S+) does not have a deterministic implementation", str(e))
        if found is None:
            raise
        raise TrainingError(
            f"train.deterministic is true, but {found.group(1)} (used by this model or loss) "
            f"has no deterministic implementation on {device.type}; set train.deterministic: "
            f"false for this model"
        ) from None
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        cudnn.deterministic, cudnn.benchmark = previous[2], previous[3]


class MemoryMeter:
    """Peak memory of a trial: CUDA's allocator peak since ``__init__``, or the process's
    peak resident set size elsewhere (which cannot be reset, so it spans the whole worker)."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            import resource
        except ImportError:  # Windows
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports KiB, macOS bytes.
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
