"""hpo.load_model on the machine that loads, not the one that trained: a backbone built from
pretrained weights loads without that file (the stored weights replace every parameter), and
what the weights cannot tell (a trial that never kept any, a damaged retrain folder) is one
HpoError line."""

from __future__ import annotations

import json

import optuna
import pytest
import torch
import torchvision

import hpo
from hpo.models.registry import create_model, parse_model_config
from hpo.study.attrs import CONFIG
from tests.specs import spec_text


def _retrain_folder(folder, model: dict, in_shape=(1, 32, 32), *, read_pretrained: bool = True):
    """A folder as ``hpo retrain`` writes it: metrics.json and one seed's weights, of a model
    built (and saved) here, while its pretrained file (if any) still exists."""
    config = {"data": {"name": "digits", "image_size": in_shape[1]}, "model": model,
              "train": {"epochs": 1}}
    torch.manual_seed(0)
    skip = {} if read_pretrained else {"read_pretrained": False}
    module = create_model(parse_model_config(model), in_shape, 10, **skip).eval()
    torch.save(module.state_dict(), folder / "weights-seed0.pt")
    metrics = {"per_seed": [{"seed": 0, "weights": "weights-seed0.pt"}], "config": config,
               "model": {"in_shape": list(in_shape), "num_classes": 10}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return module


def test_a_backbone_trained_from_a_pretrained_file_loads_without_it(tmp_path):
    pretrained = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), pretrained)
    trained = _retrain_folder(tmp_path, {"name": "torchvision", "arch": "resnet18", "pretrained": str(pretrained)})
    pretrained.unlink()  # the loading machine has only the trained weights
    loaded = hpo.load_model(tmp_path)
    images = torch.rand(2, 1, 32, 32) * 16
    with torch.no_grad():
        expected = trained(loaded.preprocess(images))
    assert torch.equal(loaded.logits(images), expected)


def test_a_pretrained_googlenet_loads_with_the_input_transform_its_weights_need(tmp_path):
    # hub: the file would be in the torch hub cache of the training machine; not here.
    _retrain_folder(tmp_path, {"name": "torchvision", "arch": "googlenet", "pretrained": "hub"},
                    read_pretrained=False)
    loaded = hpo.load_model(tmp_path)
    assert loaded.module.net.transform_input  # as it trained: torchvision's rule for its weights


def test_a_pretrained_timm_backbone_loads_without_the_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    trained = _retrain_folder(tmp_path, {"name": "timm", "arch": "resnet18", "pretrained": "hub"},
                              read_pretrained=False)
    loaded = hpo.load_model(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.module.state_dict().values(),
                                                 trained.state_dict().values(), strict=True))


def test_a_retrain_folder_without_weights_is_one_line(tmp_path):
    _retrain_folder(tmp_path, {"name": "mlp", "width": 8})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    del metrics["per_seed"][0]["weights"]
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(hpo.UsageError) as caught:
        hpo.load_model(tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'metrics.json'}: not a metrics.json written by hpo retrain "
                                 "(KeyError: 'weights')")


@pytest.mark.parametrize(("state", "why"), [(optuna.trial.TrialState.FAIL, "it failed"),
                                            (optuna.trial.TrialState.PRUNED, "it was pruned"),
                                            (optuna.trial.TrialState.COMPLETE, "none were saved")])
def test_a_trial_without_weights_says_why(tmp_path, state, why):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("unfinished"))
    study = hpo.create_study(spec, storage=tmp_path / "s.journal").study
    config = {"data": {"name": "digits"}, "model": {"name": "mlp"}, "train": {"epochs": 1}}
    value = 0.5 if state == optuna.trial.TrialState.COMPLETE else None
    study.add_trial(optuna.trial.create_trial(state=state, value=value, user_attrs={CONFIG: config}))
    with pytest.raises(hpo.HpoError) as caught:
        hpo.load_model("unfinished", trial=0, storage=tmp_path / "s.journal")
    assert str(caught.value) == (f"trial 0 of 'unfinished' has no stored weights ({why}); retrain it "
                                 "(hpo retrain unfinished --trial 0) and load the folder that writes")
