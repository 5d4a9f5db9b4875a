"""Model configs validate without torch and explain what to change."""

import pytest
from pydantic import ValidationError

from hpo.errors import UnknownNameError
from hpo.models import (
    ACTIVATIONS,
    MODELS,
    CNNConfig,
    CustomConfig,
    MLPConfig,
    ModelConfig,
    PatchMLPConfig,
    SqueezeNetConfig,
    TorchvisionConfig,
    model_config_class,
    parse_model_config,
    register_model,
)
from hpo.models.layers import MAX_WIDTH, make_activation


def _messages(exc: pytest.ExceptionInfo) -> list[str]:
    return [e["msg"] for e in exc.value.errors()]


def test_width_list_length_must_match_n_layers():
    with pytest.raises(ValidationError) as exc:
        MLPConfig(n_layers=2, width=[8, 8, 8])
    [error] = exc.value.errors()
    assert error["loc"] == ("width",)
    assert error["msg"] == "Value error, width lists 3 values but n_layers is 2"
    assert MLPConfig(n_layers=3, width=[8, 4, 2]).widths() == [8, 4, 2]
    assert MLPConfig(n_layers=3, width=5).widths() == [5, 5, 5]


def test_filters_list_length_must_match_n_blocks():
    with pytest.raises(ValidationError) as exc:
        CNNConfig(n_blocks=3, filters=[16, 32])
    [error] = exc.value.errors()
    assert error["loc"] == ("filters",)
    assert error["msg"] == "Value error, filters lists 2 values but n_blocks is 3"
    assert CNNConfig(n_blocks=3, filters=16).filters_per_block() == [16, 16, 16]


@pytest.mark.parametrize("cls,key", [(MLPConfig, "width"), (CNNConfig, "filters"), (SqueezeNetConfig, "expand")])
@pytest.mark.parametrize("size, rule", [(0, "greater_than_equal"), (MAX_WIDTH + 1, "less_than_equal")])
def test_sizes_are_bounded_one_by_one_and_in_lists(cls, key, size, rule):
    for value, loc in ((size, (key, "constrained-int")), ([4, size], (key, "list[constrained-int]", 1))):
        with pytest.raises(ValidationError) as exc:
            cls(**{key: value})
        assert (loc, rule) in {(e["loc"], e["type"]) for e in exc.value.errors()}


def test_unknown_initialiser_suggests_close_match():
    with pytest.raises(ValidationError) as exc:
        CNNConfig(init="xavier_norml")
    [error] = exc.value.errors()
    assert error["loc"] == ("init",)
    assert "unknown initialiser 'xavier_norml'; did you mean 'xavier_normal'" in error["msg"]
    assert "(known: default, kaiming_normal," in error["msg"]


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (MLPConfig, {"n_layers": 0}),
        (MLPConfig, {"n_layers": 17}),
        (MLPConfig, {"dropout": 1.0}),
        (MLPConfig, {"activation": "swish"}),
        (MLPConfig, {"name": "cnn"}),
        (MLPConfig, {"depth": 3}),  # extra keys are typos, not silently ignored
        (CNNConfig, {"kernel_size": 12}),
        (CNNConfig, {"pool": "min"}),
        (CNNConfig, {"fc_width": -1}),
        (CNNConfig, {"n_blocks": 9}),
        (CNNConfig, {"stride": 0}),
        (CNNConfig, {"padding": "full"}),
        (CNNConfig, {"padding": -1}),
        (CNNConfig, {"dilation": 0}),
        (CNNConfig, {"pool_size": 1}),
        (CNNConfig, {"filters_growth": 0}),
        (SqueezeNetConfig, {"n_fire": 0}),
        (SqueezeNetConfig, {"se_ratio": 0}),
        (SqueezeNetConfig, {"squeeze": [4, 4], "n_fire": 3}),
        (SqueezeNetConfig, {"expand": 0}),
        (SqueezeNetConfig, {"pool_every": -1}),
        (PatchMLPConfig, {"patch_size": 0}),
        (PatchMLPConfig, {"depth": 0}),
        (PatchMLPConfig, {"hidden": 0}),
        (PatchMLPConfig, {"dropout": 1}),
        (TorchvisionConfig, {"arch": "resnet"}),
        (TorchvisionConfig, {"freeze": -0.1}),
        (TorchvisionConfig, {"pretrained": ""}),
        (ModelConfig, {"name": "mlp", "init_std": 0}),
        (MLPConfig, {"init_std": -1}),
    ],
)
def test_out_of_range_values_rejected(cls, kwargs):
    with pytest.raises(ValidationError):
        cls(**kwargs)


def test_model_config_class_and_parse():
    assert model_config_class("mlp") is MLPConfig
    assert model_config_class("cnn") is CNNConfig
    assert model_config_class("squeezenet") is SqueezeNetConfig
    assert model_config_class("patch_mlp") is PatchMLPConfig
    assert model_config_class("torchvision") is TorchvisionConfig
    assert model_config_class("custom") is CustomConfig
    cfg = parse_model_config({"name": "cnn", "n_blocks": 3, "filters": [8, 16, 32]})
    assert isinstance(cfg, CNNConfig) and cfg.filters_per_block() == [8, 16, 32]
    with pytest.raises(UnknownNameError, match=r"unknown model 'mpl'; did you mean 'mlp'\?"):
        model_config_class("mpl")
    with pytest.raises(ValueError, match="a model needs a name"):
        parse_model_config({"n_blocks": 3})


def test_registry_rejects_duplicates_and_mismatched_names():
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp", MLPConfig)(lambda cfg, shape, n: None)
    with pytest.raises(ValueError, match="defaults to 'mlp', not 'other'"):
        register_model("other", MLPConfig)
    assert MODELS.names() == ["cnn", "custom", "mlp", "patch_mlp", "squeezenet", "timm", "torchvision"]


def test_base_config_forbids_extra_keys():
    with pytest.raises(ValidationError):
        ModelConfig(name="mlp", widht=3)


def test_every_activation_builds():
    import torch

    for name in ACTIVATIONS:
        assert make_activation(name)(torch.zeros(2)).shape == (2,)
    with pytest.raises(UnknownNameError, match="did you mean 'relu'"):
        make_activation("rellu")


def test_invalid_count_reported_once_not_twice():
    with pytest.raises(ValidationError) as exc:
        MLPConfig(n_layers=0, width=[8, 8])
    assert [e["loc"] for e in exc.value.errors()] == [("n_layers",)]


def test_filters_growth_needs_a_single_filters_count():
    with pytest.raises(ValidationError) as exc:
        CNNConfig(n_blocks=2, filters=[8, 16], filters_growth=2.0)
    [error] = exc.value.errors()
    assert error["loc"] == ("filters_growth",)
    assert error["msg"] == ("Value error, filters_growth 2.0 grows a single filters count, but "
                            "filters is a list; give one count or set filters_growth to 1")
    assert CNNConfig(n_blocks=2, filters=[8, 16], filters_growth=1).filters_per_block() == [8, 16]


def test_squeezenet_width_lists_match_n_fire_and_exclude_growth():
    with pytest.raises(ValidationError) as exc:
        SqueezeNetConfig(n_fire=3, expand=[8, 8])
    assert exc.value.errors()[0]["msg"] == "Value error, expand lists 2 values but n_fire is 3"
    with pytest.raises(ValidationError) as exc:
        SqueezeNetConfig(n_fire=2, squeeze=[4, 4], expand=[8, 8], growth=2)
    assert exc.value.errors()[0]["msg"] == (
        "Value error, growth 2.0 grows single widths, but squeeze and expand are lists; "
        "give one width or set growth to 1"
    )
    with pytest.raises(ValidationError, match="but squeeze is a list"):
        SqueezeNetConfig(n_fire=4, squeeze=[1, 2, 3, 4], expand=6, growth=1.5)
    assert SqueezeNetConfig(n_fire=3, expand=6, growth=1.5, pool_every=1).widths("expand") == [6, 9, 14]


def test_padding_accepts_same_valid_or_pixels():
    assert CNNConfig(padding="valid").padding == "valid"
    assert CNNConfig(padding=2).padding == 2
    # Strict mode, as the spec validates: a YAML integer stays an integer.
    assert CNNConfig.model_validate({"padding": 0}, strict=True).padding == 0


def test_every_family_validates_in_strict_mode_with_yaml_types():
    """The spec validates with strict=True: YAML ints for floats, lists, nulls must pass."""
    for data in (
        {"name": "cnn", "filters_growth": 2, "padding": "same", "stride": 2},
        {"name": "squeezenet", "squeeze": [4, 8], "expand": 16, "n_fire": 2, "se": True, "se_ratio": 1},
        {"name": "patch_mlp", "patch_size": 7, "dropout": 0},
        {"name": "torchvision", "arch": "efficientnet_b3", "pretrained": None, "freeze": 1},
        {"name": "torchvision", "arch": "vgg16", "pretrained": "hub", "freeze": 0.5},
        {"name": "torchvision", "freeze": {"fraction": 1, "unit": "parameters"}},
        {"name": "timm", "arch": "xception41", "pretrained": "hub", "freeze": 1, "dropout": 0},
        {"name": "custom", "module": "my_pkg.nets:SEFireNet", "kwargs": {"width": [1, 2]}},
        {"name": "mlp", "init": "normal", "init_std": 1},
    ):
        model_config_class(data["name"]).model_validate(data, strict=True)


def test_every_field_is_documented_with_a_default_where_it_can_have_one():
    """Spec keys come straight from these classes: each needs a default (custom's module aside)."""
    for name in MODELS.names():
        config = model_config_class(name)
        required = [k for k, f in config.model_fields.items() if f.is_required()]
        assert required == (["module"] if name == "custom" else []), name


@pytest.mark.parametrize("key,values", [("kernel_size", [3, 5]), ("stride", [1, 2]), ("padding", ["same", 1]),
                                        ("dilation", [1, 2]), ("pool", ["max", "none"])])
def test_cnn_per_block_lists_must_match_n_blocks(key, values):
    with pytest.raises(ValidationError) as exc:
        CNNConfig(n_blocks=3, **{key: values})
    [error] = exc.value.errors()
    assert error["loc"] == (key,)
    assert error["msg"] == f"Value error, {key} lists 2 values but n_blocks is 3"
    cfg = CNNConfig.model_validate({"name": "cnn", "n_blocks": 2, key: values}, strict=True)
    assert [getattr(block, key) for block in cfg.blocks()] == values


@pytest.mark.parametrize("key,bad", [("kernel_size", 12), ("stride", 5), ("padding", "full"), ("padding", 17),
                                     ("dilation", 0), ("pool", "min")])
def test_cnn_per_block_values_are_checked_one_by_one(key, bad):
    with pytest.raises(ValidationError) as exc:
        CNNConfig(n_blocks=2, **{key: [bad, bad]})
    assert all(e["loc"][0] == key for e in exc.value.errors())


def test_patch_mlp_hidden_list_norm_and_residual():
    with pytest.raises(ValidationError) as exc:
        PatchMLPConfig(depth=3, hidden=[64, 32])
    [error] = exc.value.errors()
    assert error["loc"] == ("hidden",)
    assert error["msg"] == "Value error, hidden lists 2 values but depth is 3"
    assert PatchMLPConfig(depth=2, hidden=[64, 32]).widths() == [64, 32]
    assert PatchMLPConfig(depth=3, hidden=48).widths() == [48, 48, 48]
    defaults = PatchMLPConfig()
    assert (defaults.hidden, defaults.norm, defaults.residual) == (128, "layer", True)
    with pytest.raises(ValidationError):
        PatchMLPConfig(norm="group")
    with pytest.raises(ValidationError):
        PatchMLPConfig(depth=2, hidden=[64, 0])
    PatchMLPConfig.model_validate({"name": "patch_mlp", "depth": 2, "hidden": [8, 4], "norm": "none",
                                   "residual": False}, strict=True)
