"""Precision, determinism, gradient clipping, channels-last, and what a trial measures."""

import os

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from hpo.errors import TrainingError
from hpo.models import CNNConfig, MLPConfig
from hpo.training import DataConfig, EpochMetrics, TrainConfig, train_model
from hpo.training.runtime import MemoryMeter, deterministic_mode, resolve_precision

DATA = DataConfig()
TINY = MLPConfig(n_layers=1, width=16)
CNN = CNNConfig(n_blocks=2, filters=[8, 16], dropout=0.1)


def curve(result):
    return [(m.train_loss, m.val_loss, m.val_accuracy, m.lr) for m in result.history]


def test_fp16_on_cpu_falls_back_to_fp32_and_says_so():
    fp16 = train_model(DATA, TINY, TrainConfig(epochs=2, precision="fp16"))
    fp32 = train_model(DATA, TINY, TrainConfig(epochs=2))
    assert fp16.precision == "fp32"
    assert curve(fp16) == curve(fp32)


def test_bf16_runs_on_cpu_under_autocast():
    cfg = TrainConfig(epochs=3, precision="bf16", lr=3e-3)
    result = train_model(DATA, TINY, cfg)
    assert result.precision == "bf16"
    assert curve(result) != curve(
        train_model(DATA, TINY, cfg.model_copy(update={"precision": "fp32"}))
    )
    assert result.history[-1].val_accuracy > 0.8


def test_precision_choice_per_device(monkeypatch):
    cuda, cpu, mps = torch.device("cuda"), torch.device("cpu"), torch.device("mps")
    assert resolve_precision("fp32", cuda).dtype is None
    fp16 = resolve_precision("fp16", cuda)
    assert (fp16.name, fp16.dtype, fp16.device_type) == ("fp16", torch.float16, "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("bf16", cuda).dtype == torch.bfloat16
    # A GPU without native bf16 (before Ampere) runs fp32 rather than slow emulation.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("bf16", cuda).name == "fp32"
    assert resolve_precision("bf16", cpu).dtype == torch.bfloat16
    assert resolve_precision("fp16", cpu).name == "fp32"
    assert resolve_precision("fp16", mps).name == "fp32"
    assert resolve_precision("fp32", cpu).scaler() is None
    assert resolve_precision("bf16", cpu).scaler() is None  # bf16 needs no loss scaling


def test_deterministic_runs_are_identical_and_the_flag_is_restored():
    data = DataConfig(augment="strong")
    cfg = TrainConfig(epochs=2, batch_size=97, deterministic=True, seed=3, schedule="cosine")

    class Check:
        def report(self, metrics: EpochMetrics) -> bool:
            assert torch.are_deterministic_algorithms_enabled()
            return False

    before = torch.are_deterministic_algorithms_enabled()
    a = train_model(data, CNN, cfg, reporter=Check())
    b = train_model(data, CNN, cfg)
    assert curve(a) == curve(b)
    assert torch.are_deterministic_algorithms_enabled() == before
    c = train_model(data, CNN, cfg.model_copy(update={"seed": 4}))
    assert curve(a) != curve(c)


def test_a_missing_deterministic_kernel_fails_the_trial_in_our_words(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # restored after the test
    message = (
        "adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but "
        "you set 'torch.use_deterministic_algorithms(True)'. You can turn off determinism ..."
    )
    with pytest.raises(TrainingError) as caught, deterministic_mode(True, torch.device("cuda")):
        raise RuntimeError(message)
    assert str(caught.value) == (
        "train.deterministic is true, but adaptive_avg_pool2d_backward_cuda (used by this model "
        "or loss) has no deterministic implementation on cuda; set train.deterministic: false "
        "for this model"
    )
    assert not torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # cuBLAS's reproducible setting
    with (
        pytest.raises(RuntimeError, match="unrelated"),
        deterministic_mode(True, torch.device("cpu")),
    ):
        raise RuntimeError("unrelated")


def grad_norms_at_each_step(cfg: TrainConfig) -> list[float]:
    norms: list[float] = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(
            float(
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            )
        )

    handle = register_optimizer_step_pre_hook(hook)
    try:
        train_model(DATA, TINY, cfg)
    finally:
        handle.remove()
    return norms


def test_grad_clip_bounds_the_gradient_norm_the_optimiser_sees():
    cfg = TrainConfig(epochs=1, batch_size=64, optimizer="sgd", lr=0.05)
    unclipped = grad_norms_at_each_step(cfg)
    clipped = grad_norms_at_each_step(cfg.model_copy(update={"grad_clip": 0.1}))
    assert max(unclipped) > 0.5  # so the clip below has work to do
    assert len(clipped) == len(unclipped) == 17
    assert max(clipped) <= 0.1 * (1 + 1e-4)
    assert min(clipped) > 0.099  # clipped to the bound, not zeroed


def test_channels_last_trains_the_same_model(monkeypatch):
    # NHWC is used on CUDA only: forced here, to check the layout changes nothing but speed.
    monkeypatch.setattr("hpo.training.loop.use_channels_last", lambda requested, device: requested)
    cfg = TrainConfig(epochs=2, batch_size=97)
    nchw = train_model(DATA, CNN, cfg)
    nhwc = train_model(DATA, CNN, cfg.model_copy(update={"channels_last": True}))
    assert [m.val_loss for m in nhwc.history] == pytest.approx(
        [m.val_loss for m in nchw.history], rel=1e-3
    )


def test_peak_memory_and_throughput_are_measured():
    result = train_model(DATA, TINY, TrainConfig(epochs=2))
    assert result.peak_memory_mb is not None and 10 < result.peak_memory_mb < 1e6
    assert result.images_per_second > 0
    # A process's peak RSS only grows.
    assert MemoryMeter(torch.device("cpu")).peak_mb() >= result.peak_memory_mb
