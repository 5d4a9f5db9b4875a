"""The torchvision family: supported archs, head swap, local-only pretrained weights, freezing."""

import logging
import math
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from hpo.errors import TrainingError
from hpo.models import ARCHS, FreezeConfig, TorchvisionConfig, count_parameters, create_model
from hpo.models._backbone_layers import Backbone, default_weights
from hpo.models.backbone import head_paths
from hpo.training import DataConfig, TrainConfig, train_model


def _build(in_shape=(3, 32, 32), num_classes=10, **kwargs) -> Backbone:
    return create_model(TorchvisionConfig(**kwargs), in_shape, num_classes)


def _saved_resnet18(path: Path, seed: int = 1234) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = torchvision.models.resnet18().state_dict()  # an ImageNet-shaped, 1000-class file
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_every_supported_arch_is_in_torchvisions_registry():
    available = set(torchvision.models.list_models(module=torchvision.models))
    assert set(ARCHS) <= available, sorted(set(ARCHS) - available)
    assert len(ARCHS) == len(set(ARCHS))
    for required in ("resnet18", "resnet34", "resnet50", "densenet121", "densenet169",
                     "densenet201", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                     "vgg16", *(f"efficientnet_b{i}" for i in range(8))):
        assert required in ARCHS


def test_every_supported_arch_has_a_head_rule_and_default_weights():
    for arch in ARCHS:
        head, _ = head_paths(arch)
        url, path = default_weights(arch)
        assert url.startswith("https://") and path.name == url.rsplit("/", 1)[1]


def test_arch_is_validated_without_torch_and_suggests_close_names():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as exc:
        TorchvisionConfig(arch="resnet19")
    assert exc.value.errors()[0]["loc"] == ("arch",)
    with pytest.raises(ValidationError):
        TorchvisionConfig(freeze=1.5)
    with pytest.raises(ValidationError, match="give null"):
        TorchvisionConfig(pretrained=" ")


# One arch per head layout, built on the meta device: no memory, no arithmetic.
HEAD_LAYOUTS = [
    ("alexnet", 64), ("convnext_tiny", 32), ("densenet121", 32), ("efficientnet_b0", 32),
    ("mnasnet0_5", 32), ("mobilenet_v2", 32), ("mobilenet_v3_small", 32), ("resnet18", 32),
    ("shufflenet_v2_x0_5", 32), ("squeezenet1_1", 32), ("swin_t", 32), ("vgg11", 32),
    ("vit_b_32", 224), ("wide_resnet50_2", 32), ("resnext50_32x4d", 32), ("googlenet", 32),
    ("inception_v3", 75),
]


@pytest.mark.parametrize("arch,side", HEAD_LAYOUTS, ids=[a for a, _ in HEAD_LAYOUTS])
def test_head_is_replaced_by_dropout_and_linear(arch, side):
    with torch.device("meta"):
        model = _build((3, side, side), 5, arch=arch, dropout=0.3)
        out = model(torch.empty(2, 3, side, side))
    assert out.shape == (2, 5)
    head = model.head
    assert isinstance(head[-1], nn.Linear) and head[-1].out_features == 5
    assert [m.p for m in head if isinstance(m, nn.Dropout)] == [0.3]
    _, old_dropout = head_paths(arch)
    if old_dropout:  # the arch's own dropout before the logits is gone: ours is the only one
        assert isinstance(model.net.get_submodule(old_dropout), nn.Identity)
    # freeze's blocks: every backbone parameter once, in module order, in several blocks.
    assert [n for block in model.blocks for n in block] == [n for n, _ in model.backbone_parameters()]
    assert len(model.blocks) >= 7


def test_regnet_head_on_cpu():
    # RegNet's constructor cannot run on the meta device; the smallest one is cheap on CPU.
    model = _build((3, 32, 32), 5, arch="regnet_x_400mf")
    assert isinstance(model.net.fc[1], nn.Linear) and model.net.fc[1].out_features == 5


@pytest.mark.parametrize("in_shape", [(3, 32, 32), (1, 64, 64)], ids=["3x32x32", "1x64x64"])
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "densenet121"])
def test_forward_and_backward(arch, in_shape):
    torch.manual_seed(0)
    model = _build(in_shape, 10, arch=arch, dropout=0.2)
    out = model(torch.randn(2, *in_shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_grayscale_is_repeated_to_three_channels():
    torch.manual_seed(0)
    model = _build((1, 32, 32), 4, arch="resnet18").eval()
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model(x), model.net(x.repeat(1, 3, 1, 1)))
    assert model.net.conv1.in_channels == 3


def test_other_channel_counts_are_rejected():
    with pytest.raises(TrainingError, match=r"^torchvision backbones take 1- or 3-channel images, "
                                            r"not 2-channel ones$"):
        _build((2, 32, 32), arch="resnet18")


def test_too_small_images_name_a_size_that_works():
    with pytest.raises(TrainingError) as exc:
        _build((3, 16, 16), arch="squeezenet1_1")
    assert re.fullmatch(r"squeezenet1_1 cannot take 16x16 images \(.+\); the smallest size tried "
                        r"that works is 32x32: set data.image_size to 32", str(exc.value))


def test_pretrained_file_loads_the_backbone_and_keeps_a_new_head(tmp_path, caplog):
    path = tmp_path / "weights" / "r18.pth"
    saved = _saved_resnet18(path)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="hpo.models._backbone_layers"):
        model = _build(arch="resnet18", pretrained=str(path), init="kaiming_normal")
    state = model.net.state_dict()
    backbone = [k for k in saved if not k.startswith("fc.")]
    assert backbone and all(torch.equal(state[k], saved[k]) for k in backbone)
    assert model.net.fc[1].weight.shape == (10, 512)  # a new 10-class head
    assert torch.count_nonzero(model.net.fc[1].bias) == 0  # init applied to the head only
    assert model.pretrained_info == {"path": str(path), "loaded": len(backbone),
                                     "skipped": ["fc.bias", "fc.weight"]}
    assert f"resnet18: loaded {len(backbone)} tensors from {path}; skipped the old head's " \
           "fc.bias, fc.weight" in caplog.text


def test_pretrained_grayscale_uses_the_rgb_filters(tmp_path):
    path = tmp_path / "r18.pth"
    saved = _saved_resnet18(path)
    model = _build((1, 64, 64), arch="resnet18", pretrained=str(path))
    assert torch.equal(model.net.conv1.weight, saved["conv1.weight"])


def test_pretrained_checkpoint_wrappers_and_prefixes(tmp_path):
    saved = _saved_resnet18(tmp_path / "plain.pth")
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in saved.items()}}, path)
    model = _build(arch="resnet18", pretrained=str(path))
    assert torch.equal(model.net.layer4[1].conv2.weight, saved["layer4.1.conv2.weight"])
    # A Backbone's own state dict (keys under net.) loads too, new head included in the skip.
    again = tmp_path / "again.pth"
    torch.save(model.state_dict(), again)
    reloaded = _build(arch="resnet18", pretrained=str(again))
    assert reloaded.pretrained_info["skipped"] == ["fc.1.bias", "fc.1.weight"]


def test_pretrained_densenet_old_key_names(tmp_path):
    torch.manual_seed(7)
    reference = torchvision.models.densenet121().state_dict()
    # torchvision's published densenet files spell norm1 as norm.1 (and so on).
    old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in reference.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    path = tmp_path / "densenet121.pth"
    torch.save(old, path)
    model = _build(arch="densenet121", pretrained=str(path))
    key = "features.denseblock1.denselayer1.norm1.weight"
    assert torch.equal(model.net.state_dict()[key], reference[key])


def test_missing_weights_file_names_the_path_and_the_url(tmp_path):
    path = tmp_path / "nowhere" / "r18.pth"
    with pytest.raises(TrainingError) as exc:
        _build(arch="resnet18", pretrained=str(path))
    assert str(exc.value) == (
        f"pretrained weights file {path} does not exist: nothing is downloaded, so put a "
        "resnet18 state dict there (the default resnet18 weights are "
        "https://download.pytorch.org/models/resnet18-f37072fd.pth)"
    )


def test_hub_looks_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert Path(torch.hub.get_dir()) == tmp_path / "hub"
    with pytest.raises(TrainingError) as exc:
        _build(arch="resnet18", pretrained="hub")
    assert str(exc.value) == (
        "pretrained weights for resnet18 are not in the torch hub cache: nothing is downloaded, "
        "so save https://download.pytorch.org/models/resnet18-f37072fd.pth as "
        f"{expected} (TORCH_HOME moves the cache)"
    )
    saved = _saved_resnet18(expected, seed=99)
    model = _build(arch="resnet18", pretrained="hub")
    assert torch.equal(model.net.conv1.weight, saved["conv1.weight"])
    assert model.pretrained_info["path"] == str(expected)


def test_weights_of_another_arch_are_rejected(tmp_path):
    path = tmp_path / "mnv3.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(TrainingError, match=rf"^{re.escape(str(path))} does not fit resnet18: "
                                            r"\d+ missing keys \(conv1.weight, .* more\); "
                                            r"\d+ unexpected keys \(features"):
        _build(arch="resnet18", pretrained=str(path))


def test_weights_of_another_size_are_rejected(tmp_path):
    path = tmp_path / "r18.pth"
    state = _saved_resnet18(path)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(TrainingError, match=r"does not fit resnet18: size mismatch for conv1.weight"):
        _build(arch="resnet18", pretrained=str(path))


def test_unreadable_weights_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(TrainingError, match=rf"^cannot read pretrained weights {re.escape(str(path))}: "):
        _build(arch="resnet18", pretrained=str(path))


def _frozen_flags(model: Backbone) -> list[bool]:
    return [not p.requires_grad for _, p in model.backbone_parameters()]


def test_freeze_nothing_everything_or_half_from_the_input_side():
    assert not any(_frozen_flags(_build(arch="resnet18", freeze=0.0)))

    head_only = _build(arch="resnet18", freeze=1.0)
    assert all(_frozen_flags(head_only))
    trainable, total = count_parameters(head_only)
    assert trainable == 512 * 10 + 10 and total > trainable
    assert all(p.requires_grad for p in head_only.head.parameters())

    half = _build(arch="resnet18", freeze=0.5)
    flags = _frozen_flags(half)
    assert flags == sorted(flags, reverse=True)  # a frozen prefix, then trainable tensors
    assert not half.net.conv1.weight.requires_grad and half.net.layer4[1].bn2.weight.requires_grad


def _numel(model: Backbone, prefixes: tuple[str, ...]) -> int:
    return sum(p.numel() for n, p in model.net.named_parameters() if n.startswith(prefixes))


def test_freeze_counts_blocks_by_default():
    # resnet18's blocks: the stem (conv1 + bn1) and layer1.0 ... layer4.1, nine in all.
    model = _build(arch="resnet18", freeze=0.5)
    assert [b[0] for b in model.blocks] == ["conv1.weight", *(f"layer{i}.{j}.conv1.weight"
                                                             for i in range(1, 5) for j in (0, 1))]
    assert model.blocks[0] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    # round(9 * 0.5) = 5 frozen: the stem, layer1 and layer2; layer3 on and the head train.
    trainable, total = count_parameters(model)
    assert total - trainable == _numel(model, ("conv1.", "bn1.", "layer1.", "layer2."))
    assert model.net.layer3[0].conv1.weight.requires_grad
    assert _build(arch="resnet18", freeze=FreezeConfig(fraction=0.5)).state_dict().keys() == \
        model.state_dict().keys()


def test_mobilenet_blocks_are_its_features():
    # features[0] ... features[18]: 0.9 of 19 rounds to 17 frozen, features[17:] and the head train.
    model = _build(arch="mobilenet_v2", freeze=0.9)
    assert len(model.blocks) == len(model.net.features) == 19
    trainable, total = count_parameters(model)
    assert trainable == _numel(model, ("features.17.", "features.18.", "classifier."))
    assert (trainable, total) == (898_890, 2_236_682)  # was 1,053,770 trainable counting tensors


def test_freeze_by_parameters_freezes_the_nearest_share_of_numbers():
    model = _build(arch="resnet18", freeze={"fraction": 0.3, "unit": "parameters"})
    params = model.backbone_parameters()
    flags = [not p.requires_grad for _, p in params]
    assert flags == sorted(flags, reverse=True)  # whole tensors from the input side
    sizes = [p.numel() for _, p in params]
    frozen, target = sum(p.numel() for _, p in params if not p.requires_grad), 0.3 * sum(sizes)
    k = sum(flags)
    # Neither one tensor fewer nor one more would come nearer to 30 % of the backbone.
    assert abs(frozen - target) <= abs(frozen - sizes[k - 1] - target)
    assert abs(frozen - target) <= abs(frozen + sizes[k] - target)
    assert 0.2 < frozen / sum(sizes) < 0.4
    assert all(p.requires_grad for p in model.head.parameters())


def test_freeze_accepts_a_fraction_or_a_mapping_only():
    from pydantic import ValidationError

    assert TorchvisionConfig(freeze=0.25).freeze == 0.25
    assert TorchvisionConfig(freeze={"fraction": 0.9, "unit": "parameters"}).freeze.unit == "parameters"
    for bad in ({"fraction": 0.5, "unit": "tensors"}, {"fraction": 2}, {"share": 0.5}, -0.1):
        with pytest.raises(ValidationError):
            TorchvisionConfig(freeze=bad)


def test_frozen_parts_get_no_gradient_and_frozen_batch_norm_stays_in_eval():
    torch.manual_seed(0)
    model = _build(arch="resnet18", freeze=0.5).train()
    assert not model.net.bn1.training and model.net.layer4[1].bn2.training
    running = model.net.bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert model.net.conv1.weight.grad is None and model.net.fc[1].weight.grad is not None
    assert torch.equal(model.net.bn1.running_mean, running)  # statistics stay as trained
    model.eval()
    assert not model.net.layer4[1].bn2.training


def test_inception_v3_needs_75_pixels():
    with pytest.raises(TrainingError, match=r"^inception_v3 cannot take 64x64 images \(.+\); the smallest "
                                            r"size tried that works is 75x75: set data.image_size to 75$"):
        _build((3, 64, 64), arch="inception_v3")


@pytest.mark.slow
def test_inception_v3_trains_through_the_epoch_loop():
    # Its training output would be (logits, aux logits); the aux head is off, so the loop's
    # loss gets plain logits.
    data = DataConfig(name="digits", image_size=75, train_fraction=0.02, val_fraction=0.05)
    model = TorchvisionConfig(arch="inception_v3", freeze=0.5, dropout=0.1)
    result = train_model(data, model, TrainConfig(epochs=1, batch_size=8))
    assert len(result.history) == 1 and math.isfinite(result.history[0].train_loss)
    assert 0 < result.params_trainable < result.params_total


def test_pretrained_inception_skips_the_auxiliary_head(tmp_path):
    torch.manual_seed(3)
    saved = torchvision.models.inception_v3(init_weights=False).state_dict()  # aux head included
    path = tmp_path / "inception.pth"
    torch.save(saved, path)
    model = _build((3, 75, 75), arch="inception_v3", pretrained=str(path))
    assert model.net.AuxLogits is None and model.net.transform_input  # as torchvision's own weights
    assert torch.equal(model.net.Mixed_7c.branch1x1.conv.weight, saved["Mixed_7c.branch1x1.conv.weight"])
    assert any(k.startswith("AuxLogits.") for k in model.pretrained_info["skipped"])


def test_init_applies_to_the_whole_model_without_pretrained_weights():
    model = _build(arch="resnet18", init="normal", init_std=0.5)
    assert abs(model.net.layer3[0].conv1.weight.std().item() - 0.5) < 0.05


def test_a_fraction_below_one_keeps_a_block_trainable_and_above_zero_freezes_one():
    # resnet18 has 9 blocks (the stem, then layer1.0 ... layer4.1): 0.95 of 9 rounds to 9 and
    # 0.05 to 0, which would freeze the whole backbone and nothing at all.
    def frozen_blocks(freeze):
        model = _build(arch="resnet18", freeze=freeze)
        params = dict(model.net.named_parameters())
        assert len(model.blocks) == 9
        return [all(not params[name].requires_grad for name in block) for block in model.blocks]

    assert frozen_blocks(0.95) == [True] * 8 + [False]
    assert frozen_blocks(0.05) == [True] + [False] * 8
    assert frozen_blocks(1.0) == [True] * 9
    assert frozen_blocks(0.0) == [False] * 9
    tensors = _build(arch="resnet18", freeze={"fraction": 0.999999, "unit": "parameters"}).backbone_parameters()
    assert [p.requires_grad for _, p in tensors].count(True) == 1  # the last tensor trains
