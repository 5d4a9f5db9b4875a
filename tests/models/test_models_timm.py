"""The timm family: any timm name, a new head, local-only pretrained weights, timm's blocks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from pydantic import ValidationError

from hpo.errors import SpecError, TrainingError
from hpo.models import FreezeConfig, TimmConfig, count_parameters, create_model
from hpo.models._backbone_layers import Backbone
from hpo.models.timm_backbone import timm_names
from hpo.spec import load_spec


def _build(arch: str, in_shape=(3, 32, 32), num_classes=10, **kwargs) -> Backbone:
    return create_model(TimmConfig(arch=arch, **kwargs), in_shape, num_classes)


def _saved(arch: str, path: Path, seed: int = 1234) -> dict[str, torch.Tensor]:
    """An ImageNet-shaped (3-channel, 1000-class) file, as torch.save(model.state_dict()) writes it."""
    torch.manual_seed(seed)
    state = timm.create_model(arch).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_the_committed_name_list_is_the_installed_timms():
    text = (Path(__file__).parents[2] / "hpo" / "models" / "timm_models.txt").read_text()
    assert text.splitlines() == timm.list_models()
    assert timm_names() == frozenset(timm.list_models())


@pytest.mark.subprocess
def test_validating_a_timm_spec_imports_neither_timm_nor_torch(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nmodel: {name: timm, arch: efficientnet_b0, pretrained: hub, freeze: 0.5}\n")
    code = (
        "import sys\n"
        "from hpo.spec import load_spec\n"
        f"spec = load_spec({str(spec)!r})\n"
        "assert spec.model.arch == 'efficientnet_b0'\n"
        "heavy = sorted(m for m in ('timm', 'torch', 'torchvision') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_is_one_spec_error_line_with_close_matches(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nmodel:\n  name: timm\n  arch: efficientnet_b00\n")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert exc.value.problems == [
        f"{path}:4: model.arch: unknown timm model 'efficientnet_b00'; did you mean "
        "'efficientnet_b0' or 'efficientnet_b8' or 'efficientnet_b7'? "
        f"(one of the {len(timm.list_models())} names timm.list_models() gives)"
    ]


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="unknown timm model 'xception'; did you mean"):
        TimmConfig(arch="xception")
    with pytest.raises(ValidationError, match="give null"):
        TimmConfig(pretrained="")
    with pytest.raises(ValidationError):
        TimmConfig(freeze={"fraction": 0.5, "unit": "layers"})
    assert TimmConfig(freeze={"fraction": 0.5, "unit": "parameters"}).freeze == FreezeConfig(
        fraction=0.5, unit="parameters")


# The smallest members of the families named in issue 15, plus a fixed-size ViT (img_size).
SAMPLE = ["xception41", "inception_next_atto", "inception_v3", "efficientnet_b0", "test_vit"]
SIDES = {"inception_v3": 75}


@pytest.mark.slow
@pytest.mark.parametrize("arch", SAMPLE)
def test_pretrained_file_grayscale_ten_classes_forward_and_backward(arch, tmp_path):
    path = tmp_path / f"{arch}.pth"
    saved = _saved(arch, path)
    side = SIDES.get(arch, 32)
    torch.manual_seed(0)
    model = _build(arch, (1, side, side), 10, pretrained=str(path), dropout=0.25, init="normal")
    # A new 10-class head with dropout in front; the rest of the file loaded.
    head = model.head
    assert head.weight.shape[0] == 10
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert dropouts == [0.25] or getattr(model.net, "drop_rate", None) == 0.25  # module or F.dropout
    assert model.pretrained_info["skipped"] == sorted(f"{model.head_path}.{k}" for k in ("bias", "weight"))
    state = model.net.state_dict()
    first_conv = model.net.pretrained_cfg["first_conv"] + ".weight"
    for key, value in saved.items():
        if key == first_conv:  # timm adapted the RGB filters to one channel: their sum
            assert state[key].shape[1] == 1
            torch.testing.assert_close(state[key], value.sum(dim=1, keepdim=True))
        elif not key.startswith(model.head_path + ".") and "pos_embed" not in key:
            assert torch.equal(state[key], value), key
    # init reached the new head only (normal(0, 0.02) zeroes biases).
    assert torch.count_nonzero(head.bias) == 0
    out = model(torch.randn(2, 1, side, side))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", ["mobilenetv3_small_050", "test_vit", "test_efficientnet"])
def test_random_init_forward(arch):
    model = _build(arch, (3, 32, 32), 7)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert not model.gray  # timm builds the first conv for the channels given


def test_models_with_two_heads_are_refused_in_one_line():
    with torch.device("meta"), pytest.raises(TrainingError) as exc:
        _build("efficientformer_l1", (3, 64, 64))
    assert str(exc.value) == ("timm efficientformer_l1 has 2 classifier heads, not one: hpo's timm "
                              "family takes models with a single head")


def test_hub_reads_the_hugging_face_cache_and_never_downloads(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    repo = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    with pytest.raises(TrainingError) as exc:
        _build("test_resnet", pretrained="hub")
    assert str(exc.value) == (
        f"pretrained weights for timm test_resnet are not in the Hugging Face cache {cache}: "
        f"nothing is downloaded, so fetch them where there is internet (hf download {repo} "
        "model.safetensors) and copy that cache here (HF_HOME moves it), or give "
        "model.pretrained the path of a state-dict file"
    )
    # The cache's own layout: refs/main names the snapshot holding the file.
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    snapshot = folder / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    torch.manual_seed(5)
    saved = timm.create_model("test_resnet").state_dict()
    save_file(saved, snapshot / "model.safetensors")
    model = _build("test_resnet", pretrained="hub")
    assert torch.equal(model.net.conv1[0].weight, saved["conv1.0.weight"])
    assert model.pretrained_info["path"] == str(snapshot / "model.safetensors")


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "w.pth"
    with pytest.raises(TrainingError) as exc:
        _build("test_resnet", pretrained=str(path))
    assert str(exc.value) == (
        f"pretrained weights file {path} does not exist: nothing is downloaded, so put a timm "
        "test_resnet state dict there (torch.save(model.state_dict(), path), or the "
        "model.safetensors of its Hugging Face repository)"
    )


def test_weights_of_another_model_are_rejected(tmp_path):
    path = tmp_path / "vit.pth"
    _saved("test_vit", path)
    with pytest.raises(TrainingError, match=r"^.*vit.pth does not fit timm test_resnet: \d+ missing keys \(conv1"):
        _build("test_resnet", pretrained=str(path))


def test_a_thousand_class_head_is_new_all_the_same(tmp_path):
    path = tmp_path / "r.pth"
    saved = _saved("test_resnet", path)
    model = _build("test_resnet", num_classes=1000, pretrained=str(path))
    assert not torch.equal(model.net.fc.weight, saved["fc.weight"])
    assert torch.equal(model.net.layer4[0].conv1.weight, saved["layer4.0.conv1.weight"])


def _frozen_numel(model: Backbone, prefixes: tuple[str, ...]) -> int:
    return sum(p.numel() for n, p in model.net.named_parameters() if n.startswith(prefixes))


def test_freeze_counts_timms_own_blocks():
    # timm's resnet18 blocks: the stem (conv1, bn1) and layer1.0 ... layer4.1, nine in all.
    model = _build("resnet18", freeze=0.5)
    assert [b[0] for b in model.blocks] == ["conv1.weight", *(f"layer{i}.{j}.conv1.weight"
                                                             for i in range(1, 5) for j in (0, 1))]
    # round(9 * 0.5) = 5 blocks: stem, layer1, layer2; layer3 on trains, and so does the head.
    trainable, total = count_parameters(model)
    assert total - trainable == _frozen_numel(model, ("conv1.", "bn1.", "layer1.", "layer2."))
    assert model.net.layer3[0].conv1.weight.requires_grad and model.net.fc.weight.requires_grad
    head_only = _build("resnet18", freeze=1.0)
    assert count_parameters(head_only)[0] == 512 * 10 + 10


def test_block_counting_follows_the_group_matcher():
    model = _build("efficientnet_b0", freeze=1.0)
    # conv_stem + bn1, then each of blocks.i.j; timm's matcher puts conv_head + bn2 in the
    # last one.
    assert model.blocks[0] == ["conv_stem.weight", "bn1.weight", "bn1.bias"]
    assert sum(len(stage) for stage in model.net.blocks) == len(model.blocks) - 1
    assert model.blocks[-1][0].startswith("blocks.6.0.")
    assert model.blocks[-1][-3:] == ["conv_head.weight", "bn2.weight", "bn2.bias"]
    assert [n for n, p in model.net.named_parameters() if p.requires_grad] == [
        "classifier.weight", "classifier.bias"]


def test_resolved_config_round_trips_through_json():
    cfg = TimmConfig(arch="resnet18", freeze={"fraction": 0.9, "unit": "parameters"})
    again = TimmConfig.model_validate(json.loads(cfg.model_dump_json()))
    assert again == cfg


def test_a_file_without_the_running_statistics_is_rejected(tmp_path):
    # Parameters alone would load a backbone whose batch norms normalise with 0 and 1.
    path = tmp_path / "r.pth"
    saved = _saved("test_resnet", path)
    stripped = {k: v for k, v in saved.items() if not k.endswith(("running_mean", "running_var"))}
    assert len(stripped) < len(saved)
    torch.save(stripped, path)
    with pytest.raises(TrainingError, match=r"r.pth does not fit timm test_resnet: \d+ missing keys \(.*running_mean"):
        _build("test_resnet", pretrained=str(path))
    # num_batches_tracked alone may be missing (files of older torch versions lack it).
    torch.save({k: v for k, v in saved.items() if not k.endswith("num_batches_tracked")}, path)
    model = _build("test_resnet", pretrained=str(path))
    name = next(k for k in saved if k.endswith("running_mean") and not k.startswith("fc."))
    assert torch.equal(model.net.state_dict()[name], saved[name])
