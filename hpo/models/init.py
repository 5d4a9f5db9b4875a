"""Weight initialisers, a searchable hyperparameter (``model.init``).

Each entry re-initialises one weight tensor in place, given the scales of ``InitScale``: ``std``
(``model.init_std``; only ``normal`` and ``trunc_normal`` use it) and ``range``
(``model.init_range``; only ``uniform`` uses it); ``apply_initializer`` walks the model, applies
it to Linear and Conv weights and zeroes their biases. ``default`` keeps PyTorch's own per-layer
initialisation untouched (biases included), so it is the true baseline.
Normalisation layers are never touched: their identity initialisation is what makes them work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpo.registry import Registry

if TYPE_CHECKING:
    from torch import nn

DEFAULT_STD = 0.02  # the normal initialisers' std unless ``model.init_std`` says otherwise
# uniform's U(-range, range) unless ``model.init_range`` says otherwise: Keras' RandomUniform
# default, small enough that a deep sigmoid/tanh net shows its gradients vanishing.
DEFAULT_RANGE = 0.05


@dataclass(frozen=True)
class InitScale:
    """The scale keys of ``model.init``; each initialiser reads the one it uses, if any."""

    std: float = DEFAULT_STD  # normal, trunc_normal
    range: float = DEFAULT_RANGE  # uniform: weights drawn from U(-range, range)


# None marks ``default``: nothing to do.
INITIALIZERS = Registry[Callable[[Any, InitScale], None] | None]("initialiser")
INITIALIZERS.add("default", None)


def _kaiming_normal(weight: Any, scale: InitScale) -> None:
    from torch import nn

    # Gain for ReLU, the default activation; the other activations still train well with it.
    nn.init.kaiming_normal_(weight, nonlinearity="relu")


def _kaiming_uniform(weight: Any, scale: InitScale) -> None:
    from torch import nn

    nn.init.kaiming_uniform_(weight, nonlinearity="relu")


def _xavier_normal(weight: Any, scale: InitScale) -> None:
    from torch import nn

    nn.init.xavier_normal_(weight)


def _xavier_uniform(weight: Any, scale: InitScale) -> None:
    from torch import nn

    nn.init.xavier_uniform_(weight)


def _normal(weight: Any, scale: InitScale) -> None:
    from torch import nn

    # The default std 0.02 is the GPT/BERT convention, small enough to keep activations tame.
    nn.init.normal_(weight, mean=0.0, std=scale.std)


def _trunc_normal(weight: Any, scale: InitScale) -> None:
    from torch import nn

    # Cut at two standard deviations, as ViT and MLP-Mixer do: no rare huge weight.
    std = scale.std
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def _orthogonal(weight: Any, scale: InitScale) -> None:
    from torch import nn

    nn.init.orthogonal_(weight)


def _uniform(weight: Any, scale: InitScale) -> None:
    from torch import nn

    # A fixed range whatever the layer's fan-in: the classic set-up in which a deep sigmoid or
    # tanh net's gradients shrink layer by layer towards the input (model.init_range).
    nn.init.uniform_(weight, a=-scale.range, b=scale.range)


for _name, _fn in {
    "kaiming_normal": _kaiming_normal,
    "kaiming_uniform": _kaiming_uniform,
    "xavier_normal": _xavier_normal,
    "xavier_uniform": _xavier_uniform,
    "normal": _normal,
    "trunc_normal": _trunc_normal,
    "orthogonal": _orthogonal,
    "uniform": _uniform,
}.items():
    INITIALIZERS.add(_name, _fn)


def apply_initializer(
    model: nn.Module, name: str, std: float = DEFAULT_STD, *, init_range: float = DEFAULT_RANGE
) -> nn.Module:
    """Re-initialise ``model``'s Linear and Conv layers in place; returns ``model``.

    Raises UnknownNameError for a name that is not registered.
    """
    init_weight = INITIALIZERS.get(name)
    if init_weight is None:
        return model
    import torch
    from torch import nn

    scale = InitScale(std=std, range=init_range)
    with torch.no_grad():
        for _, module in weight_layers(model):
            if isinstance(module.weight, nn.parameter.UninitializedParameter):
                continue  # a lazy layer of a custom model: shaped on its first batch
            init_weight(module.weight, scale)
            if module.bias is not None:
                module.bias.zero_()
    return model


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Linear | nn.modules.conv._ConvNd]]:
    """(module path, module) of every Linear and Conv layer, in the order the model declares
    them: what an initialiser sets and what ``train.record_gradients`` watches."""
    from torch import nn

    # _ConvNd: the one base class of Conv1d/2d/3d and their transposed kinds.
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))]
