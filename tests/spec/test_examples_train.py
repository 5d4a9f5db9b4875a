"""The example specs of search_spaces/ train, as written, through the real worker path.

Each example whose data can be faked offline is created with ``hpo study create`` and run by
``hpo worker`` for one trial, on a tiny file of its dataset's own format (FashionMNIST's IDX
files, an image folder of PNG/JPEG files) and with ``--set`` overrides that only shrink it
(one epoch, a few images per class, small images): the sampler, the spec's model, optimiser,
splits, class weights and early stopping are the example's own. The digits examples train in
test_spec_valid.py. The CIFAR-100 backbones need the dataset and ImageNet-sized models, too
slow to train on a CPU in a test: each backbone an example names is built instead, randomly
initialised, on the meta device (no memory, no arithmetic), for the input size and classes
the example gives it, and run forward there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hpo.cli.main import cli
from hpo.spec import load_spec
from hpo.spec.space import fixed_config, resolve
from tests.specs import trials_of
from tests.training.test_data_folder import make_folder
from tests.training.test_data_torchvision import write_mnist

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "search_spaces"
TINY_FOLDER = {"ant": 12, "bee": 12, "cat": 6}  # imbalanced, like the folder the example is for

# The overrides that make each example tiny, and where noted pick its first trial from its own
# space (enqueue); nothing else of it changes.
ONE_EPOCH = ["train.epochs=1"]
TRAINED: dict[str, list[str]] = {
    "fashion_mnist_mlp.yaml": ONE_EPOCH,
    "fashion_mnist_cnn.yaml": ONE_EPOCH,
    # The first trial enqueued (a point of the example's own space), so that the branch the
    # experiment is about trains: SE-Fire with its gate on; the CNN with a kernel and stride
    # per layer under Nesterov SGD.
    "fashion_mnist_squeezenet.yaml": [*ONE_EPOCH, "enqueue=[{model.name: squeezenet, model.se: true}]"],
    "fashion_mnist_talos_scan.yaml": [*ONE_EPOCH, "enqueue=[{model.name: cnn, model.n_blocks: 2, "
                                      "model.kernel_size: [5, 3], model.stride: [2, 1], train.optimizer: sgd}]"],
    # Epochs are a grid axis there: the grid keeps its shape with 1-3 epochs.
    "fashion_mnist_patch_mlp.yaml": ["search.train.epochs.choices=[1, 2, 3]"],
    # One augmentation step on, the other off: each follows its own searched switch.
    "image_folder_imbalanced.yaml": [*ONE_EPOCH, "data.image_size=16", "data.val_per_class=2",
                                     "data.test_per_class=2", "enqueue=[{data.augment.rotation.enabled: true, "
                                     "data.augment.hflip.enabled: false}]"],
}
NOT_TRAINED = {"cifar100_transfer.yaml", "cifar100_timm_backbones.yaml",  # built below instead
               "digits_cnn.yaml", "digits_mlp.yaml"}  # trained in test_spec_valid.py


def test_every_example_is_trained_or_built_somewhere():
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == TRAINED.keys() | NOT_TRAINED


def _fake_data(name: str, tmp_path: Path) -> list[str]:
    """Write the example's dataset under tmp_path (the worker's directory); the overrides
    that point the example at it."""
    if name.startswith("fashion_mnist"):
        write_mnist(str(tmp_path / "data"), "FashionMNIST", n_train=200, n_test=20)  # data.root: data
        return []
    folder = tmp_path / "images"
    make_folder(str(folder), counts=TINY_FOLDER, corrupt=False)
    return [f"data.path={folder}"]


def _run_one_trial(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Create the example's study (embedded journal in tmp_path) and run one trial with
    ``hpo worker``; the trial, as Optuna's FrozenTrial."""
    monkeypatch.chdir(tmp_path)
    for variable in ("HPO_STORAGE", "HPO_DATA_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HPO_THREADS", "1")
    overrides = [*TRAINED[name], *_fake_data(name, tmp_path)]
    runner = CliRunner()
    created = runner.invoke(cli, ["study", "create", str(EXAMPLES / name),
                                  *(arg for o in overrides for arg in ("--set", o))])
    assert created.exit_code == 0, created.output
    spec = load_spec(EXAMPLES / name, overrides=overrides)
    result = runner.invoke(cli, ["worker", spec.name, "--n-trials", "1", "--rank", "0"])
    assert result.exit_code == 0, result.output
    [trial] = trials_of(spec.name)
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    # Its parameters are the example's own searched keys (a repeated key per block: key[i]).
    assert {key.split("[")[0] for key in trial.params} <= set(spec.search)
    return trial


def _balanced_per_class_splits(trial: Any) -> None:
    data = trial.user_attrs["data"]
    assert data["class_counts"] == {"train": [n - 4 for n in TINY_FOLDER.values()], "val": [2, 2, 2]}
    assert data["class_weights"] is not None and data["class_weights"][2] > data["class_weights"][0]  # cat is rarer
    config = trial.user_attrs["config"]["data"]
    assert (config["val_fraction"], config["test_fraction"], config["test_per_class"]) == (None, None, 2)
    # Each augmentation step is switched on or off by its own searched key.
    steps = {step["name"]: step.get("enabled", True) for step in config["augment"]}
    assert steps == {"rotation": True, "hflip": False}
    assert (trial.params["data.augment.rotation.enabled"], trial.params["data.augment.hflip.enabled"]) == (True, False)


def _batch_norm_narrowing_patch_mlp(trial: Any) -> None:
    model = trial.user_attrs["config"]["model"]
    assert (model["norm"], model["hidden"], model["depth"]) == ("batch", [256, 128, 64, 32, 16], 5)
    assert set(trial.params) == {"train.batch_size", "train.lr", "train.epochs"}


def _se_fire(trial: Any) -> None:
    model = trial.user_attrs["config"]["model"]
    assert (model["name"], model["se"]) == ("squeezenet", True)
    assert model["se_ratio"] == trial.params["model.se_ratio"]  # searched only with the gate on


def _per_layer_cnn_with_nesterov_sgd(trial: Any) -> None:
    config = trial.user_attrs["config"]
    assert (config["model"]["kernel_size"], config["model"]["stride"]) == ([5, 3], [2, 1])
    train = config["train"]
    assert (train["optimizer"], train["nesterov"], train["momentum"]) == ("sgd", True, 0.9)
    assert train["early_stopping"] == {"patience": 3, "min_delta": 0.001, "metric": "val_loss"}
    spec = load_spec(EXAMPLES / "fashion_mnist_talos_scan.yaml")
    assert (spec.sampler.name, spec.sampler.unique, spec.budget.n_trials) == ("random", True, 353)  # 20 % of 1764


# What else each example's trial must show (beyond completing its epochs).
CHECKS = {
    "image_folder_imbalanced.yaml": _balanced_per_class_splits,
    "fashion_mnist_patch_mlp.yaml": _batch_norm_narrowing_patch_mlp,
    "fashion_mnist_squeezenet.yaml": _se_fire,
    "fashion_mnist_talos_scan.yaml": _per_layer_cnn_with_nesterov_sgd,
}


@pytest.mark.parametrize("name", sorted(TRAINED), ids=str)
def test_example_trains_one_trial_through_a_worker(name, tmp_path, monkeypatch):
    trial = _run_one_trial(name, tmp_path, monkeypatch)
    assert trial.user_attrs["config"]["train"]["epochs"] <= 3
    assert len(trial.intermediate_values) == trial.user_attrs["config"]["train"]["epochs"]
    CHECKS.get(name, lambda trial: None)(trial)


# -- the CIFAR-100 backbones: built on the meta device ------------------------------------


def _backbones(name: str) -> list[dict[str, Any]]:
    """The (arch, input size, freeze) settings the example gives its trials: each arch of the
    enqueued comparison where it has one (at its first freeze), else every searched arch at
    the smallest searched size and the largest searched freeze."""
    spec = load_spec(EXAMPLES / name)
    if spec.enqueue:  # one freeze fraction per arch is enough to build it
        return list({entry["model.arch"]: dict(entry) for entry in reversed(spec.enqueue)}.values())
    sizes, freezes = spec.search["data.image_size"].choices, spec.search["model.freeze"].choices
    assert sizes is not None and freezes is not None
    return [{"model.arch": arch, "data.image_size": min(sizes), "model.freeze": max(freezes)}
            for arch in spec.search["model.arch"].choices or []]


CIFAR_BACKBONES = [(name, settings) for name in ("cifar100_transfer.yaml", "cifar100_timm_backbones.yaml")
                   for settings in _backbones(name)]


@pytest.mark.parametrize(("name", "settings"), CIFAR_BACKBONES,
                         ids=[f"{n.split('.')[0]}-{s['model.arch']}" for n, s in CIFAR_BACKBONES])
def test_each_cifar100_backbone_builds_for_its_input_size(name, settings):
    import torch

    from hpo.models.registry import count_parameters, create_model

    spec = load_spec(EXAMPLES / name)
    fixed = fixed_config(spec)
    fixed["model"]["pretrained"] = None  # random init: no weights file needed
    config = resolve(fixed, settings)
    size, classes = config.data.image_size, config.data.classes
    assert size is not None and classes == 80
    with torch.device("meta"):
        model = create_model(config.model, (3, size, size), classes)
        logits = model(torch.empty(2, 3, size, size))
    assert tuple(logits.shape) == (2, classes)
    trainable, total = count_parameters(model)
    assert 0 < trainable < total  # frozen blocks, a trained head
    if spec.model.pretrained == "hub":  # the weights the example reads exist to be put in the cache
        assert _hub_weights(config.model.name, config.model.arch), f"{config.model.arch} has no default weights"


def _hub_weights(family: str, arch: str) -> str | None:
    """Where ``pretrained: hub`` reads ``arch``'s default weights from: a Hugging Face repository
    (timm) or a URL (torchvision); None when there are none."""
    if family == "timm":
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(arch)
        return cfg.hf_hub_id if cfg is not None else None
    from hpo.models._backbone_layers import default_weights

    return default_weights(arch)[0]


def test_the_timm_comparison_gives_each_backbone_its_own_input_size():
    from timm.models import get_pretrained_cfg

    for entry in load_spec(EXAMPLES / "cifar100_timm_backbones.yaml").enqueue:
        cfg = get_pretrained_cfg(entry["model.arch"])
        assert cfg is not None and cfg.input_size[1] == entry["data.image_size"], entry
