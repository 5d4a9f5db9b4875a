"""Model families. Importing this package registers them all; it never imports torch."""

from hpo.models import backbone as _backbone  # noqa: F401  (registers "torchvision")
from hpo.models import cnn as _cnn  # noqa: F401  (registers "cnn")
from hpo.models import custom as _custom  # noqa: F401  (registers "custom")
from hpo.models import mlp as _mlp  # noqa: F401  (registers "mlp")
from hpo.models import patch_mlp as _patch_mlp  # noqa: F401  (registers "patch_mlp")
from hpo.models import squeezenet as _squeezenet  # noqa: F401  (registers "squeezenet")
from hpo.models import timm_backbone as _timm_backbone  # noqa: F401  (registers "timm")
from hpo.models.backbone import ARCHS, FreezeConfig, TorchvisionConfig
from hpo.models.cnn import CNNConfig
from hpo.models.custom import CustomConfig
from hpo.models.init import INITIALIZERS, apply_initializer
from hpo.models.layers import ACTIVATIONS, Activation
from hpo.models.mlp import MLPConfig
from hpo.models.patch_mlp import PatchMLPConfig
from hpo.models.registry import (
    MODELS,
    ModelConfig,
    ModelEntry,
    count_parameters,
    create_model,
    model_config_class,
    parse_model_config,
    register_model,
)
from hpo.models.squeezenet import SqueezeNetConfig
from hpo.models.timm_backbone import TimmConfig

__all__ = [
    "ACTIVATIONS",
    "ARCHS",
    "INITIALIZERS",
    "MODELS",
    "Activation",
    "CNNConfig",
    "CustomConfig",
    "FreezeConfig",
    "MLPConfig",
    "ModelConfig",
    "ModelEntry",
    "PatchMLPConfig",
    "SqueezeNetConfig",
    "TimmConfig",
    "TorchvisionConfig",
    "apply_initializer",
    "count_parameters",
    "create_model",
    "model_config_class",
    "parse_model_config",
    "register_model",
]
