"""Which device a worker trains on, pinned on a machine without a GPU: ``--device auto`` (the
default) with torch's CUDA and MPS answers stubbed, the line the worker prints, what trials
record, what pool children are given, and the per-device choices of the epoch loop (mixed
precision, the fp16 loss scaler, channels-last)."""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.errors import HpoError, UsageError
from hpo.training.runtime import resolve_precision, use_channels_last
from hpo.worker import pool
from hpo.worker.device import check_device, check_device_name, describe_device, resolve_device
from tests.specs import trials_of, worker_lines, write_spec


@pytest.fixture
def machine(monkeypatch):
    """Stub what torch sees: ``machine(cuda=2)``, ``machine(mps=True)``, ``machine()`` (CPU)."""

    def have(cuda: int = 0, mps: bool = False, name: str = "NVIDIA H200") -> None:
        stub(torch.cuda, "is_available", lambda: cuda > 0)
        stub(torch.cuda, "device_count", lambda: cuda)
        stub(torch.cuda, "get_device_name", lambda index=0: f"{name} #{index}")
        stub(torch.backends.mps, "is_available", lambda: mps)

    def stub(owner, name, answer) -> None:
        # functools.wraps: torch's optimisers look for the original through __wrapped__.
        monkeypatch.setattr(owner, name, functools.wraps(getattr(owner, name))(answer))

    return have


@pytest.mark.parametrize(("cuda", "mps", "chosen"), [
    (1, False, "cuda:0"),
    (4, True, "cuda:0"),  # CUDA before MPS; the first GPU this process sees
    (0, True, "mps"),
    (0, False, "cpu"),
])
def test_auto_takes_cuda_then_mps_then_the_cpu(machine, cuda, mps, chosen):
    machine(cuda=cuda, mps=mps)
    assert resolve_device("auto") == chosen


def test_a_named_device_is_checked_not_replaced(machine):
    machine(cuda=2, mps=True)
    assert [resolve_device(d) for d in ("cpu", "cuda", "cuda:1", "mps")] == ["cpu", "cuda", "cuda:1", "mps"]
    with pytest.raises(HpoError, match=r"^device cuda:2 requested but only 2 GPU\(s\) are visible$"):
        resolve_device("cuda:2")
    machine()
    with pytest.raises(HpoError, match="^device cuda requested but CUDA is not available on this machine$"):
        resolve_device("cuda")
    with pytest.raises(HpoError, match=r"^device mps requested but MPS \(Apple's GPU\) is not available"):
        resolve_device("mps")
    with pytest.raises(UsageError, match="must be resolved first"):
        check_device("auto")


@pytest.mark.parametrize("name", ["gpu", "cuda0", "CPU", "cuda:", "auto:0", ""])
def test_a_device_name_is_refused_without_asking_torch(machine, monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("torch was asked"))
    with pytest.raises(UsageError) as refused:
        check_device_name(name)
    assert str(refused.value) == f"unknown device {name!r} (expected auto, cpu, cuda, cuda:N or mps)"


def test_the_device_line(machine):
    machine(cuda=1)
    assert describe_device("cuda:0", cpu_threads=8) == "cuda:0 (NVIDIA H200 #0)"
    assert describe_device("mps", cpu_threads=8) == "mps (Apple GPU)"
    assert describe_device("cpu", cpu_threads=2) == "cpu (2 threads)"
    assert describe_device("cpu", cpu_threads=1) == "cpu (1 thread)"


# ----------------------------------------------------------------------------- the CLI


def test_help_shows_auto_as_the_default():
    for command in ("worker", "retrain"):
        text = CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output
        line = next(line for line in text.splitlines() if "--device" in line)
        assert "auto (CUDA if available, else MPS, else the CPU)" in text
        assert re.search(r"\[default:\s+auto\]", text), text
        assert line.split()[0] == "--device"


@pytest.mark.parametrize("command", [
    ["worker", "study"], ["retrain", "study"], ["worker", "study", "--processes", "2"]])
def test_a_bad_device_is_refused_before_the_storage_is_looked_at(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    result = CliRunner().invoke(cli, [*command, "--device", "gpu"])
    assert result.exit_code == 2, result.output
    assert result.output == "Error: unknown device 'gpu' (expected auto, cpu, cuda, cuda:N or mps)\n"
    assert not any(Path().iterdir())  # nothing created


@pytest.fixture
def tiny_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    monkeypatch.setenv("HPO_THREADS", "1")
    created = CliRunner().invoke(cli, ["study", "create", str(write_spec(tmp_path, "tiny", n_trials=1))])
    assert created.exit_code == 0, created.output


def test_the_worker_prints_and_records_the_device_it_chose(tiny_study, machine):
    machine()  # no GPU here: auto is the CPU, whatever this machine has
    result = CliRunner().invoke(cli, ["worker", "tiny", "--quiet"])
    assert result.exit_code == 0, result.output
    assert worker_lines(result.stdout)[0] == "Device: cpu (1 thread)"  # HPO_THREADS=1
    (trial,) = trials_of("tiny")
    assert trial.user_attrs["device"] == "cpu"  # what ran, never "auto"


def test_the_worker_records_the_resolved_gpu(tiny_study, machine, monkeypatch):
    """On a (stubbed) GPU machine, ``auto`` reaches the training and the trial as ``cuda:0``."""
    import hpo.training
    from hpo.storage.urls import resolve_storage
    from hpo.worker.loop import run_worker

    machine(cuda=1)
    trained_on = []

    def train_model(data, model, train, *, device, **kwargs):
        trained_on.append(device)
        raise RuntimeError("no real GPU here")

    monkeypatch.setattr(hpo.training, "train_model", train_model)
    monkeypatch.setattr("hpo.worker.loop._warm_up", lambda *args: None)  # it would train
    events = []
    report = run_worker("tiny", resolve_storage(None), n_trials=1, progress=lambda e, d: events.append((e, d)))
    assert trained_on == ["cuda:0"]
    chosen = [(e, d) for e, d in events if e == "chosen_device"]  # after the preparing steps
    assert chosen == [("chosen_device", {"resolved": "cuda:0", "description": "cuda:0 (NVIDIA H200 #0)"})]
    (trial,) = trials_of("tiny")
    assert trial.user_attrs["device"] == "cuda:0"
    assert [o.state for o in report.outcomes] == ["fail"]


# ----------------------------------------------------------------------------- pool children


def test_pool_children_resolve_auto_each_and_gpu_children_get_cuda_0():
    slots = pool.plan_slots("s", rank=0, processes=2, environ={})
    assert [s.command()[s.command().index("--device") + 1] for s in slots] == ["auto", "auto"]
    gpu_slots = pool.plan_slots("s", rank=0, gpus=[0, 1], per_gpu=2, environ={})
    assert [(s.device, dict(s.env)) for s in gpu_slots] == [
        ("cuda:0", {"CUDA_VISIBLE_DEVICES": "0"}), ("cuda:0", {"CUDA_VISIBLE_DEVICES": "0"}),
        ("cuda:0", {"CUDA_VISIBLE_DEVICES": "1"}), ("cuda:0", {"CUDA_VISIBLE_DEVICES": "1"})]


# ----------------------------------------------------------------------------- the epoch loop


def test_fp16_gets_a_loss_scaler_on_cuda_and_nothing_else_does():
    cuda, cpu, mps = torch.device("cuda"), torch.device("cpu"), torch.device("mps")
    with warnings.catch_warnings():  # no CUDA here: torch warns that the scaler is disabled
        warnings.simplefilter("ignore")
        scaler = resolve_precision("fp16", cuda).scaler()
    assert isinstance(scaler, torch.amp.GradScaler)
    assert resolve_precision("fp16", cuda).dtype == torch.float16
    for requested in ("fp32", "bf16", "fp16"):
        for device in (cpu, mps):
            assert resolve_precision(requested, device).scaler() is None


def test_channels_last_only_on_cuda():
    assert use_channels_last(True, torch.device("cuda:0"))
    assert not use_channels_last(True, torch.device("cpu"))
    assert not use_channels_last(True, torch.device("mps"))
    assert not use_channels_last(False, torch.device("cuda:0"))
