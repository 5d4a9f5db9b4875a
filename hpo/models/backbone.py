"""Transfer learning: a torchvision classification backbone with a new head.

``arch`` is checked against ``ARCHS``, a static tuple (so validating a spec needs no torch);
a test keeps it inside ``torchvision.models.list_models()``. The model is built through
torchvision's own registry (``get_model``), never by looking a name up in a module.

Nothing is ever downloaded: ``pretrained`` names a local file, or ``hub`` for the file
torch's hub cache would hold; a missing file is an error that says where to put it.
Resizing inputs is the data side's job (``data.image_size``), not the model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from pydantic import Field, field_validator

from hpo.models.registry import ModelConfig, register_model

if TYPE_CHECKING:
    from torch import nn

# Left out: googlenet and inception_v3 (their training output is a tuple with auxiliary
# logits), maxvit_t and vit_h_14 (fixed input sizes whose default weights need other sizes).
Arch = Literal[
    "alexnet",
    "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
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

# Family prefix -> (path of the ImageNet logits layer, path of a dropout right before it).
# That layer becomes ``Sequential(Dropout(dropout), Linear(features, num_classes))``; the old
# dropout becomes Identity, so ``dropout`` is the only one in front of the head.
HEADS: tuple[tuple[str, str, str | None], ...] = (
    ("alexnet", "classifier.6", None),
    ("convnext", "classifier.2", None),
    ("densenet", "classifier", None),
    ("efficientnet", "classifier.1", "classifier.0"),
    ("mnasnet", "classifier.1", "classifier.0"),
    ("mobilenet_v2", "classifier.1", "classifier.0"),
    ("mobilenet_v3", "classifier.3", "classifier.2"),
    ("regnet", "fc", None),
    ("resnet", "fc", None),
    ("resnext", "fc", None),
    ("shufflenet", "fc", None),
    ("squeezenet", "classifier", None),  # a 1x1-conv head: becomes pool, flatten, dropout, linear
    ("swin", "head", None),
    ("vgg", "classifier.6", "classifier.5"),
    ("vit", "heads.head", None),
    ("wide_resnet", "fc", None),
)


def head_paths(arch: str) -> tuple[str, str | None]:
    """(head path, path of the dropout before it) for a supported ``arch``."""
    for prefix, head, dropout in HEADS:
        if arch.startswith(prefix):
            return head, dropout
    raise ValueError(f"no head rule for {arch!r}")


class TorchvisionConfig(ModelConfig):
    name: Literal["torchvision"] = "torchvision"
    arch: Arch = "resnet18"  # torchvision classification backbone (models.backbone.ARCHS)
    # null: random init; hub: torch.hub.get_dir()/checkpoints/<file of the default weights' URL>;
    # otherwise the path of a local state-dict file. Never downloaded.
    pretrained: str | None = None
    freeze: float = Field(0.0, ge=0, le=1)  # share of backbone tensors frozen, from the input side
    dropout: float = Field(0.0, ge=0, lt=1)  # before the new linear head

    @field_validator("pretrained")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("give null (random init), hub, or the path of a weights file")
        return v


@register_model("torchvision", TorchvisionConfig, initialises=True)
def build_torchvision(cfg: TorchvisionConfig, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    from hpo.models._backbone_layers import build_backbone

    head, dropout_path = head_paths(cfg.arch)
    return build_backbone(
        cfg.arch, in_shape, num_classes, head_path=head, old_dropout=dropout_path,
        dropout=cfg.dropout, pretrained=cfg.pretrained, freeze=cfg.freeze,
        init=cfg.init, init_std=cfg.init_std, init_range=cfg.init_range,
    )
