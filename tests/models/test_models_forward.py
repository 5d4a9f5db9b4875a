"""Every registered model must build, run and train on every input shape users bring."""

import pytest
import torch

from hpo.errors import TrainingError
from hpo.models import (
    MODELS,
    CNNConfig,
    MLPConfig,
    PatchMLPConfig,
    SqueezeNetConfig,
    count_parameters,
    create_model,
    model_config_class,
)

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
# custom needs a user's module (tests/models/test_models_custom.py); torchvision builds a
# resnet18 by default, which takes 8x8 images too.
DEFAULT_BUILDABLE = [name for name in MODELS.names() if name != "custom"]


def _shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


@pytest.mark.parametrize("in_shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("name", DEFAULT_BUILDABLE)
def test_default_config_forward_and_backward(name, in_shape):
    torch.manual_seed(0)
    model = create_model(model_config_class(name)(), in_shape, num_classes=7)
    out = model(torch.randn(4, *in_shape))
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    trainable, total = count_parameters(model)
    assert 0 < trainable == total


VARIANTS = [
    MLPConfig(n_layers=3, width=[32, 16, 8], batch_norm=True, dropout=0.3, activation="gelu"),
    MLPConfig(n_layers=1, width=1, activation="sigmoid"),
    CNNConfig(n_blocks=4, filters=[8, 16, 32, 64]),  # 8x8: 8 -> 4 -> 2 -> 1 -> 1
    CNNConfig(n_blocks=8, filters=4, kernel_size=5, pool="avg"),
    CNNConfig(n_blocks=2, kernel_size=4, batch_norm=False, fc_width=0, dropout=0.5),  # even k
    CNNConfig(n_blocks=1, kernel_size=11, pool="none", activation="selu"),
    CNNConfig(n_blocks=3, kernel_size=1, activation="leaky_relu"),
    CNNConfig(n_blocks=4, filters=4, filters_growth=2.0, stride=2, pool="none"),  # same: 8-4-2-1-1
    CNNConfig(n_blocks=2, filters=8, kernel_size=2, padding="valid", pool_size=3, init="normal"),
    CNNConfig(n_blocks=3, filters=6, kernel_size=4, stride=2, dilation=2, padding="same"),
    CNNConfig(n_blocks=2, filters=6, kernel_size=5, padding=1, pool="avg", init_std=0.1),
    CNNConfig(n_blocks=3, filters=[4, 8, 8], kernel_size=[5, 3, 1], stride=[2, 1, 1],  # per block
              padding=["same", 1, "valid"], dilation=[2, 1, 1], pool=["max", "none", "avg"]),
    SqueezeNetConfig(n_fire=2, squeeze=4, expand=8, stem=8),
    SqueezeNetConfig(n_fire=4, squeeze=4, expand=8, stem=16, growth=2.0, se=True, residual=True),
    SqueezeNetConfig(n_fire=3, squeeze=[4, 6, 8], expand=[8, 8, 16], pool_every=1, stem_stride=2,
                     batch_norm=False, dropout=0.5, activation="elu", se=True, se_ratio=0.5),
    SqueezeNetConfig(n_fire=5, squeeze=4, expand=4, stem=8, stem_kernel=5, pool_every=0),
    PatchMLPConfig(patch_size=2, depth=2, hidden=16, token_mlp=8, channel_mlp=32),
    PatchMLPConfig(patch_size=1, depth=1, hidden=8, token_mlp=4, channel_mlp=8, dropout=0.2,
                   activation="relu", init="trunc_normal"),
    PatchMLPConfig(patch_size=2, depth=3, hidden=[16, 8, 8], token_mlp=8, channel_mlp=16, norm="batch",
                   residual=False),
    PatchMLPConfig(patch_size=4, depth=2, hidden=[8, 16], token_mlp=4, channel_mlp=8, norm="none"),
]


@pytest.mark.parametrize("in_shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("cfg", VARIANTS, ids=lambda c: c.name + str(VARIANTS.index(c)))
def test_variant_forward_and_backward(cfg, in_shape):
    torch.manual_seed(0)
    model = create_model(cfg, in_shape, num_classes=10)
    out = model(torch.randn(3, *in_shape))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    out.sum().backward()  # every parameter is reachable from the output
    assert all(p.grad is not None for p in model.parameters())


def test_default_models_learn_a_tiny_problem():
    """A few steps on one batch must lower the loss: the models train, not just run."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 4
    for name in ("cnn", "squeezenet", "patch_mlp"):
        model = create_model(model_config_class(name)(), (1, 8, 8), 4)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(15):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], (name, losses)


def test_cnn_keeps_spatial_size_with_even_kernels():
    cfg = CNNConfig(n_blocks=1, kernel_size=4, pool="none", fc_width=0)
    model = create_model(cfg, (1, 8, 8), 10)
    # 8 filters of 8x8 survive to the classifier only if the convolution preserved the size.
    assert model[-1].in_features == 32 * 8 * 8


@pytest.mark.parametrize(
    "kwargs,side",
    [
        ({"stride": 2}, 14),  # same: ceil(28 / 2)
        ({"stride": 3}, 10),  # same: ceil(28 / 3)
        ({"stride": 2, "kernel_size": 4}, 14),
        ({"padding": "valid", "kernel_size": 5}, 24),
        ({"padding": "valid", "kernel_size": 3, "dilation": 3}, 22),
        ({"padding": 2, "kernel_size": 3}, 30),
        ({"padding": 1, "kernel_size": 3, "stride": 2}, 14),
        ({"dilation": 2, "kernel_size": 4}, 28),  # same with uneven padding
    ],
)
def test_cnn_conv_output_sizes(kwargs, side):
    cfg = CNNConfig(n_blocks=1, filters=2, pool="none", fc_width=0, **kwargs)
    model = create_model(cfg, (1, 28, 28), 10)
    assert model[-1].in_features == 2 * side * side
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_cnn_pool_size_and_filters_growth():
    cfg = CNNConfig(n_blocks=3, filters=4, filters_growth=2.0, pool_size=3, fc_width=0)
    assert cfg.filters_per_block() == [4, 8, 16]
    model = create_model(cfg, (1, 28, 28), 10)  # 28 -> 9 -> 3 -> 1
    assert model[-1].in_features == 16 * 1 * 1
    assert CNNConfig(n_blocks=4, filters=10, filters_growth=1.5).filters_per_block() == [10, 15, 22, 34]
    assert CNNConfig(n_blocks=3, filters=2, filters_growth=0.25).filters_per_block() == [2, 1, 1]


def test_cnn_image_shrinking_below_one_pixel_is_a_clear_error():
    cfg = CNNConfig(n_blocks=4, stride=2, padding="valid", pool="none")  # 8 -> 3 -> 1 -> 0
    with pytest.raises(TrainingError) as exc:
        create_model(cfg, (1, 8, 8), 10)
    assert str(exc.value) == (
        "4 conv blocks shrink the 8x8 image below 1x1 (block 3: 1x1 -> 0x0 with kernel_size 3, "
        "stride 2, padding valid, dilation 1); use fewer n_blocks, stride 1, a smaller "
        "kernel_size or dilation, or padding same"
    )
    # The same config fits a bigger image (32 -> 15 -> 7 -> 3 -> 1), and padding same never
    # shrinks below 1x1 (8 -> 4 -> 2 -> 1 -> 1).
    assert create_model(cfg, (1, 32, 32), 10)(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    same = cfg.model_copy(update={"padding": "same"})
    assert create_model(same, (1, 8, 8), 10)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_cnn_pooling_never_shrinks_below_one_pixel():
    cfg = CNNConfig(n_blocks=3, filters=2, pool_size=4, fc_width=0)  # 8 -> 2 -> (skip) -> ...
    model = create_model(cfg, (1, 8, 8), 10)
    assert model[-1].in_features == 2 * 2 * 2


def test_squeezenet_widths_stages_se_and_residual():
    from hpo.models._fire_layers import Fire, SqueezeExcite

    cfg = SqueezeNetConfig(n_fire=5, squeeze=8, expand=16, growth=2.0, pool_every=2, stem=32,
                           se=True, residual=True)
    assert cfg.widths("squeeze") == [8, 8, 16, 16, 32]
    assert cfg.widths("expand") == [16, 16, 32, 32, 64]
    model = create_model(cfg, (3, 32, 32), 10)
    fires = [m for m in model if isinstance(m, Fire)]
    pools = [i for i, m in enumerate(model) if isinstance(m, torch.nn.MaxPool2d)]
    assert len(fires) == 5 and len(pools) == 2  # after modules 2 and 4, not after the last
    assert all(isinstance(f.se, SqueezeExcite) for f in fires)
    # The bypass applies only where the widths match: 32 -> 32, 32 -> 32, 32 -> 64 ...
    assert [f.residual for f in fires] == [True, True, False, True, False]
    assert fires[0].se.gate[1].out_channels == 8  # 32 channels x se_ratio 0.25
    assert model[-1].in_features == 128
    plain = create_model(SqueezeNetConfig(n_fire=2, pool_every=0), (1, 8, 8), 10)
    assert not any(isinstance(m, (SqueezeExcite, torch.nn.MaxPool2d)) for m in plain.modules())


def test_squeezenet_residual_output_is_input_plus_fire():
    from hpo.models._fire_layers import Fire

    torch.manual_seed(0)
    fire = Fire(16, 4, 8, batch_norm=False, activation="relu", se_ratio=None, residual=True)
    x = torch.randn(2, 16, 5, 5)
    s = fire.squeeze(x)
    expected = torch.cat([fire.expand1(s), fire.expand3(s)], dim=1) + x
    torch.testing.assert_close(fire(x), expected)


def test_patch_mlp_structure():
    from hpo.models._mixer_layers import MixerBlock

    cfg = PatchMLPConfig(patch_size=7, depth=3, hidden=24, token_mlp=5, channel_mlp=40)
    model = create_model(cfg, (1, 28, 28), 10)
    blocks = [m for m in model.modules() if isinstance(m, MixerBlock)]
    assert len(blocks) == 3
    assert blocks[0].token_mix[0].in_features == 16  # (28 / 7) ** 2 patches
    assert blocks[0].token_mix[0].out_features == 5
    assert blocks[0].channel_mix[0].out_features == 40
    assert model.head.in_features == 24
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules()) == 2 * 3 + 1


@pytest.mark.parametrize(
    "patch,shape,message",
    [
        (5, (1, 28, 28), "patch_size 5 does not divide the 28x28 image; use one of 1, 2, 4, 7, 14, 28"),
        (3, (3, 32, 32), "patch_size 3 does not divide the 32x32 image; use one of 1, 2, 4, 8, 16, 32"),
        (16, (1, 8, 8), "patch_size 16 does not divide the 8x8 image; use one of 1, 2, 4, 8"),
        (4, (3, 12, 18), "patch_size 4 does not divide the 12x18 image; use one of 1, 2, 3, 6"),
    ],
)
def test_patch_size_must_divide_the_image(patch, shape, message):
    with pytest.raises(TrainingError) as exc:
        create_model(PatchMLPConfig(patch_size=patch), shape, 10)
    assert str(exc.value) == message


def test_count_parameters_exact_and_frozen():
    model = create_model(MLPConfig(n_layers=2, width=[16, 8]), (1, 8, 8), 10)
    expected = (64 * 16 + 16) + (16 * 8 + 8) + (8 * 10 + 10)
    assert count_parameters(model) == (expected, expected)
    model[1].weight.requires_grad_(False)
    assert count_parameters(model) == (expected - 64 * 16, expected)


def test_bare_model_config_gets_family_defaults():
    from hpo.models import ModelConfig

    model = create_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    reference = create_model(MLPConfig(), (1, 8, 8), 10)
    assert count_parameters(model)[1] == count_parameters(reference)[1]


def _conv_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The output shape of every convolution in ``model`` for the input ``x``."""
    shapes: list[tuple[int, ...]] = []
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [c.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))) for c in convs]
    model(x)
    for hook in hooks:
        hook.remove()
    return shapes


def test_cnn_per_block_kernel_stride_padding_dilation_and_pool():
    cfg = CNNConfig(n_blocks=3, filters=[4, 8, 16], kernel_size=[3, 5, 1], stride=[1, 2, 1],
                    padding=["same", "valid", 0], dilation=[2, 1, 1], pool=["none", "max", "none"],
                    fc_width=0)
    model = create_model(cfg, (1, 28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(4, 1, 3, 3), (8, 4, 5, 5), (16, 8, 1, 1)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (1, 1)]
    assert [c.dilation for c in convs] == [(2, 2), (1, 1), (1, 1)]
    assert [c.padding for c in convs] == [(2, 2), (0, 0), (0, 0)]  # same with dilation 2: 2 a side
    # 28 (same) -> 28; valid k5 s2: (28 - 5) // 2 + 1 = 12, then max pool -> 6; 1x1 -> 6
    assert _conv_outputs(model, torch.randn(2, 1, 28, 28)) == [(2, 4, 28, 28), (2, 8, 12, 12), (2, 16, 6, 6)]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model) == 1
    assert model[-1].in_features == 16 * 6 * 6


def test_cnn_single_values_apply_to_every_block():
    cfg = CNNConfig(n_blocks=3, filters=4, kernel_size=5, stride=2, pool="none", fc_width=0)
    assert [(b.kernel_size, b.stride, b.padding, b.pool) for b in cfg.blocks()] == [(5, 2, "same", "none")] * 3
    model = create_model(cfg, (1, 28, 28), 10)
    assert _conv_outputs(model, torch.randn(1, 1, 28, 28)) == [(1, 4, 14, 14), (1, 4, 7, 7), (1, 4, 4, 4)]


def test_cnn_per_block_strides_below_one_pixel_name_the_block():
    cfg = CNNConfig(n_blocks=3, kernel_size=[3, 3, 5], stride=[1, 2, 4], padding="valid", pool="none")
    with pytest.raises(TrainingError) as exc:
        create_model(cfg, (1, 8, 8), 10)  # 8 -> 6 -> 2 -> 0
    assert str(exc.value) == (
        "3 conv blocks shrink the 8x8 image below 1x1 (block 3: 2x2 -> 0x0 with kernel_size 5, "
        "stride 4, padding valid, dilation 1); use fewer n_blocks, stride 1, a smaller "
        "kernel_size or dilation, or padding same"
    )
    # padding same never goes below 1x1, whatever the strides: 8 -> 8 -> 4 -> 1
    same = cfg.model_copy(update={"padding": "same"})
    assert _conv_outputs(create_model(same, (1, 8, 8), 10), torch.randn(2, 1, 8, 8))[-1] == (2, 32, 1, 1)


def test_patch_mlp_default_is_unchanged():
    """The default keeps today's layers, parameter names and count, so stored weights still load."""
    from hpo.models._mixer_layers import MixerBlock

    model = create_model(PatchMLPConfig(), (1, 28, 28), 10)
    tokens, dim, token_mlp, channel_mlp = (28 // 4) ** 2, 128, 64, 256
    block = (2 * 2 * dim + (tokens * token_mlp + token_mlp) + (token_mlp * tokens + tokens)
             + (dim * channel_mlp + channel_mlp) + (channel_mlp * dim + dim))
    expected = (1 * 4 * 4 * dim + dim) + 4 * block + 2 * dim + (dim * 10 + 10)
    assert count_parameters(model) == (expected, expected) == (294990, 294990)
    blocks = [m for m in model.modules() if isinstance(m, MixerBlock)]
    assert all(b.residual and b.channel_residual for b in blocks)
    assert {k for k in model.state_dict() if k.startswith("blocks.0.")} == {
        f"blocks.0.{part}.{p}" for part in ("norm1", "token_mix.0", "token_mix.3", "norm2",
                                             "channel_mix.0", "channel_mix.3") for p in ("weight", "bias")
    }


@pytest.mark.parametrize("norm,layer", [("layer", torch.nn.LayerNorm), ("batch", torch.nn.BatchNorm1d),
                                        ("none", None)])
def test_patch_mlp_norms(norm, layer):
    torch.manual_seed(0)
    cfg = PatchMLPConfig(patch_size=4, depth=2, hidden=16, token_mlp=8, channel_mlp=32, norm=norm)
    model = create_model(cfg, (1, 8, 8), 10)
    norms = [m for m in model.modules()
             if isinstance(m, torch.nn.LayerNorm | torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
    if layer is None:
        assert norms == []
    else:
        assert len(norms) == 2 * 2 + 1 and all(type(m) is layer for m in norms)
        assert all(m.normalized_shape == (16,) if norm == "layer" else m.num_features == 16 for m in norms)
    out = model(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


def test_patch_mlp_batch_norm_normalises_each_channel_over_batch_and_patches():
    from hpo.models._mixer_layers import TokenBatchNorm

    norm = TokenBatchNorm(6).train()
    x = torch.randn(4, 9, 6) * 5 + 3  # (batch, patches, channels)
    y = norm(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(dim=(0, 1)), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 1), unbiased=False), torch.ones(6), atol=1e-3, rtol=0)


@pytest.mark.parametrize("residual", [True, False])
def test_patch_mlp_residual_on_and_off(residual):
    from hpo.models._mixer_layers import MixerBlock

    torch.manual_seed(0)
    cfg = PatchMLPConfig(patch_size=2, depth=1, hidden=8, token_mlp=4, channel_mlp=16, residual=residual)
    [block] = [m for m in create_model(cfg, (1, 8, 8), 10).modules() if isinstance(m, MixerBlock)]
    x = torch.randn(2, 16, 8)  # (batch, 16 patches, 8 channels)
    mixed = block.token_mix(block.norm1(x).transpose(1, 2)).transpose(1, 2)
    if residual:
        mixed = mixed + x
    expected = block.channel_mix(block.norm2(mixed)) + (mixed if residual else 0)
    torch.testing.assert_close(block(x), expected)


def test_patch_mlp_hidden_widths_per_block():
    from hpo.models._mixer_layers import MixerBlock

    torch.manual_seed(0)
    cfg = PatchMLPConfig(patch_size=4, depth=5, hidden=[256, 128, 64, 32, 16], norm="batch")
    model = create_model(cfg, (1, 28, 28), 10)
    assert model.embed.out_channels == 256  # the first block's width
    blocks = [m for m in model.modules() if isinstance(m, MixerBlock)]
    ins = [b.channel_mix[0].in_features for b in blocks]
    outs = [b.channel_mix[-2].out_features for b in blocks]
    assert (ins, outs) == ([256, 256, 128, 64, 32], [256, 128, 64, 32, 16])
    assert [b.token_mix[0].in_features for b in blocks] == [49] * 5
    # The skip connection applies wherever the shapes allow: every token mix, and the channel
    # mix only of the first block, the one that keeps its width.
    assert [b.residual for b in blocks] == [True] * 5
    assert [b.channel_residual for b in blocks] == [True, False, False, False, False]
    assert [b.norm1.norm.num_features for b in blocks] == [256, 256, 128, 64, 32]
    assert model.head.in_features == 16 and model.norm.norm.num_features == 16
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
