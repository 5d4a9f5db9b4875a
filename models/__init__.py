"""Model families. Importing this package registers them all; it never imports torch."""

from models import backbone as _backbone  # noqa: F401  (registers "torchvision")
from models import cnn as _cnn  # noqa: F401  (registers "cnn")
from models import custom as _custom  # noqa: F401  (registers "custom")
from models import mlp as _mlp  # noqa: F401  (registers "mlp")
from models import patch_mlp as _patch_mlp  # noqa: F401  (registers "patch_mlp")
from models import squeezenet as _squeezenet  # noqa: F401  (registers "squeezenet")
from models.backbone import ARCHS, TorchvisionConfig
from models.cnn import CNNConfig
from models.custom import CustomConfig
from models.init import INITIALIZERS, apply_initializer
from models.layers import ACTIVATIONS, Activation
from models.mlp import MLPConfig
from models.patch_mlp import PatchMLPConfig
from models.registry import (
    MODELS,
    ModelConfig,
    ModelEntry,
    count_parameters,
    create_model,
    model_config_class,
    parse_model_config,
    register_model,
)
from models.squeezenet import SqueezeNetConfig

__all__ = [
    "ACTIVATIONS",
    "ARCHS",
    "INITIALIZERS",
    "MODELS",
    "Activation",
    "CNNConfig",
    "CustomConfig",
    "MLPConfig",
    "ModelConfig",
    "ModelEntry",
    "PatchMLPConfig",
    "SqueezeNetConfig",
    "TorchvisionConfig",
    "apply_initializer",
    "count_parameters",
    "create_model",
    "model_config_class",
    "parse_model_config",
    "register_model",
]
