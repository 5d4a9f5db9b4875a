"""Which device a worker trains on.

``auto``, the default everywhere a device is chosen (``hpo worker``, ``hpo retrain``, the
quickstart, ``run_worker``), takes the machine's accelerator: CUDA if torch sees a GPU, else
Apple's MPS, else the CPU. A user with a GPU should not have to know a flag to use it.

``auto`` is resolved in the process that trains (each child of a pool resolves its own), and
only once the worker knows it has trials to run: asking torch costs its import, seconds on a
small machine. The name's syntax, though, is checked before anything else
(:func:`check_device_name`), so that a typo is refused before the storage is opened.
"""

from __future__ import annotations

import re

from hpo.errors import HpoError, UsageError

AUTO = "auto"
#: What ``--device`` accepts, for help texts and errors.
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"


def check_device_name(device: str) -> str:
    """Refuse what is not a device name at all (no torch needed); returns ``device``."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise UsageError(f"unknown device {device!r} (expected {DEVICE_NAMES})")
    return device


def check_device(device: str) -> str:
    """Fail early, in the user's terms, when an explicitly named device cannot be used."""
    if check_device_name(device) == AUTO:
        raise UsageError(f"device {AUTO!r} must be resolved first (hpo.worker.device.resolve_device)")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise HpoError(f"device {device} requested but CUDA is not available on this machine")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise HpoError(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    elif device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise HpoError("device mps requested but MPS (Apple's GPU) is not available on this machine")
    return device


def resolve_device(device: str) -> str:
    """The device to train on: ``auto`` as this machine's best (``cuda:0``, else ``mps``, else
    ``cpu``), any other name checked by :func:`check_device`. What is returned is what trials
    record (``hpo.study.attrs.DEVICE``)."""
    if check_device_name(device) != AUTO:
        return check_device(device)
    import torch

    if torch.cuda.is_available():
        # cuda:0 is the first GPU this process sees: a pool's --gpus child sees only its own.
        return "cuda:0"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def describe_device(device: str, *, cpu_threads: int) -> str:
    """The worker's one line about its device: ``cuda:0 (NVIDIA H200)``, ``cpu (2 threads)``."""
    if device.startswith("cuda"):
        import torch

        index = int(device.partition(":")[2] or 0)
        return f"{device} ({torch.cuda.get_device_name(index)})"
    if device == "mps":
        return "mps (Apple GPU)"
    return f"{device} ({cpu_threads} thread{'' if cpu_threads == 1 else 's'})"
