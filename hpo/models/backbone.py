"""Transfer learning: a torchvision classification backbone with a new head.

``arch`` is checked against ``ARCHS``, a static tuple (so validating a spec needs no torch);
a test keeps it inside ``torchvision.models.list_models()``. The model is built through
torchvision's own registry (``get_model``), never by looking a name up in a module.

Nothing is ever downloaded: ``pretrained`` names a local file, or ``hub`` for the file
torch's hub cache would hold; a missing file is an error that says where to put it.
Resizing inputs is the data side's job (``data.image_size``), not the model's.

``freeze`` (shared with the ``timm`` family) counts blocks by default: see ``FreezeConfig``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hpo.models.registry import ModelConfig, register_model

if TYPE_CHECKING:
    from torch import nn

# Left out: maxvit_t and vit_h_14 (fixed input sizes whose default weights need other sizes).
Arch = Literal[
    "alexnet",
    "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
    "googlenet", "inception_v3",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf",
    "regnet_x_8gf", "regnet_x_16gf", "regnet_x_32gf",
    "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf",
    "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "squeezenet1_0", "squeezenet1_1",
    "swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32",
    "wide_resnet50_2", "wide_resnet101_2",
]
ARCHS: tuple[str, ...] = get_args(Arch)

class Layout(NamedTuple):
    """Where a family's parts are, by parameter and module path."""

    prefix: str  # of the arch names it covers
    head: str  # the ImageNet logits layer
    dropout: str | None  # a dropout right before it
    # What ``freeze`` counts as one block: a parameter whose name starts with a match of this
    # pattern belongs to the block that the matched text names; any other parameter belongs to
    # its own layer, and a norm layer to the layer before it (a conv and its batch norm are one).
    # So ResNet's blocks are its stem (conv1 + bn1) and every layerN.M, MobileNet's every
    # features[i], EfficientNet's its stem, every MBConv and its last conv, VGG's every conv.
    blocks: str | None


# The logits layer becomes ``Sequential(Dropout(dropout), Linear(features, num_classes))``; the
# old dropout becomes Identity, so ``dropout`` is the only one in front of the head.
_STAGES = r"features\.(?:[1357]\.\d+|\d+)\."  # ConvNeXt and Swin: stages at odd indices
LAYOUTS: tuple[Layout, ...] = (
    Layout("alexnet", "classifier.6", None, None),
    Layout("convnext", "classifier.2", None, _STAGES),
    Layout("densenet", "classifier", None, r"features\.(?:denseblock\d+\.denselayer\d+|transition\d+)\."),
    Layout("efficientnet", "classifier.1", "classifier.0", r"features\.\d+\.\d+\.(?=block\.)"),
    Layout("googlenet", "fc", "dropout", r"(?:conv\d|inception\w+)\."),
    Layout("inception_v3", "fc", "dropout", r"(?:Conv2d_\w+|Mixed_\w+)\."),
    Layout("mnasnet", "classifier.1", "classifier.0", r"layers\.\d+\.\d+\."),
    Layout("mobilenet_v2", "classifier.1", "classifier.0", r"features\.\d+\."),
    Layout("mobilenet_v3", "classifier.3", "classifier.2", r"features\.\d+\."),
    Layout("regnet", "fc", None, r"stem\.|trunk_output\.block\d+\.block\d+-\d+\."),
    Layout("resnet", "fc", None, r"layer\d+\.\d+\."),
    Layout("resnext", "fc", None, r"layer\d+\.\d+\."),
    Layout("shufflenet", "fc", None, r"stage\d+\.\d+\."),
    # A 1x1-conv head: becomes pool, flatten, dropout, linear.
    Layout("squeezenet", "classifier", None, r"features\.\d+\."),
    Layout("swin", "head", None, _STAGES),
    Layout("vgg", "classifier.6", "classifier.5", None),
    Layout("vit", "heads.head", None, r"encoder\.layers\.encoder_layer_\d+\."),
    Layout("wide_resnet", "fc", None, r"layer\d+\.\d+\."),
)

# Constructor arguments beyond torchvision's defaults. GoogLeNet and Inception v3 return
# (logits, auxiliary logits) while training, which the epoch loop's loss cannot take: their
# auxiliary heads are switched off (as torchvision does after loading its own weights), so
# they return the main logits only. init_weights=True keeps torchvision's own initialisation
# without its warning about a changing default.
ARCH_KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
# Keys of a weights file that the model built here has no place for: the auxiliary heads.
UNUSED_KEYS: dict[str, tuple[str, ...]] = {
    "googlenet": ("aux1.", "aux2."),
    "inception_v3": ("AuxLogits.",),
}


def layout(arch: str) -> Layout:
    """The ``Layout`` of a supported ``arch``."""
    for rule in LAYOUTS:
        if arch.startswith(rule.prefix):
            return rule
    raise ValueError(f"no layout rule for {arch!r}")


def head_paths(arch: str) -> tuple[str, str | None]:
    """(head path, path of the dropout before it) for a supported ``arch``."""
    rule = layout(arch)
    return rule.head, rule.dropout


FreezeUnit = Literal["blocks", "parameters"]


class FreezeConfig(BaseModel):
    """How much of a pretrained backbone stays frozen, counted from the input side.

    ``blocks`` (the default) counts the backbone's blocks, as the family defines them (timm:
    its own ``group_matcher`` blocks, those of layer-wise learning-rate decay; torchvision:
    ``Layout.blocks``); ``parameters`` counts parameters (numbers, not tensors), freezing
    the whole tensors from the input side whose total is nearest to the fraction. The new
    head always trains.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    fraction: float = Field(0.0, ge=0, le=1)
    unit: FreezeUnit = "blocks"


# A plain number is a fraction of blocks: ``freeze: 0.5`` = ``{fraction: 0.5, unit: blocks}``.
Freeze = Annotated[float, Field(ge=0, le=1)] | FreezeConfig


def freeze_parts(freeze: float | FreezeConfig) -> tuple[float, FreezeUnit]:
    """(fraction, unit) of a ``freeze`` value in either spelling."""
    if isinstance(freeze, FreezeConfig):
        return freeze.fraction, freeze.unit
    return float(freeze), "blocks"


def check_pretrained(v: str | None) -> str | None:
    """``pretrained`` is null, ``hub`` or a path: never blank."""
    if v is not None and not v.strip():
        raise ValueError("give null (random init), hub, or the path of a weights file")
    return v


class TorchvisionConfig(ModelConfig):
    name: Literal["torchvision"] = "torchvision"
    arch: Arch = "resnet18"  # torchvision classification backbone (models.backbone.ARCHS)
    # null: random init; hub: torch.hub.get_dir()/checkpoints/<file of the default weights' URL>;
    # otherwise the path of a local state-dict file. Never downloaded.
    pretrained: str | None = None
    # share of the backbone frozen, from the input side: a fraction of blocks, or
    # {fraction: 0.9, unit: parameters} (FreezeConfig)
    freeze: Freeze = 0.0
    dropout: float = Field(0.0, ge=0, lt=1)  # before the new linear head

    _not_blank = field_validator("pretrained")(check_pretrained)


@register_model("torchvision", TorchvisionConfig, initialises=True)
def build_torchvision(cfg: TorchvisionConfig, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from hpo.models._backbone_layers import build_backbone

    rule = layout(cfg.arch)
    fraction, unit = freeze_parts(cfg.freeze)
    return build_backbone(
        cfg.arch, in_shape, num_classes, head_path=rule.head, old_dropout=rule.dropout,
        blocks=rule.blocks, kwargs=ARCH_KWARGS.get(cfg.arch, {}),
        unused_keys=UNUSED_KEYS.get(cfg.arch, ()), dropout=cfg.dropout,
        pretrained=cfg.pretrained, freeze=fraction, freeze_unit=unit,
        init=cfg.init, init_std=cfg.init_std, init_range=cfg.init_range,
    )
