"""Weight initialisers, a searchable hyperparameter (``model.init``).

Each entry re-initialises one weight tensor in place, given ``std`` (``model.init_std``; only
``normal`` and ``trunc_normal`` use it); ``apply_initializer`` walks the model, applies it to
Linear and Conv weights and zeroes their biases. ``default`` keeps PyTorch's own per-layer
initialisation untouched (biases included), so it is the true baseline.
Normalisation layers are never touched: their identity initialisation is what makes them work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hpo.registry import Registry

if TYPE_CHECKING:
    from torch import nn

# None marks ``default``: nothing to do.
INITIALIZERS = Registry[Callable[[Any, float], None] | None]("initialiser")
INITIALIZERS.add("default", None)


def _kaiming_normal(weight: Any, std: float) -> None:
    from torch import nn

    # Gain for ReLU, the default activation; the other activations still train well with it.
    nn.init.kaiming_normal_(weight, nonlinearity="relu")


def _kaiming_uniform(weight: Any, std: float) -> None:
    from torch import nn

    nn.init.kaiming_uniform_(weight, nonlinearity="relu")


def _xavier_normal(weight: Any, std: float) -> None:
    from torch import nn

    nn.init.xavier_normal_(weight)


def _xavier_uniform(weight: Any, std: float) -> None:
    from torch import nn

    nn.init.xavier_uniform_(weight)


def _normal(weight: Any, std: float) -> None:
    from torch import nn

    # The default std 0.02 is the GPT/BERT convention, small enough to keep activations tame.
    nn.init.normal_(weight, mean=0.0, std=std)


def _trunc_normal(weight: Any, std: float) -> None:
    from torch import nn

    # Cut at two standard deviations, as ViT and MLP-Mixer do: no rare huge weight.
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def _orthogonal(weight: Any, std: float) -> None:
    from torch import nn

    nn.init.orthogonal_(weight)


for _name, _fn in {
    "kaiming_normal": _kaiming_normal,
    "kaiming_uniform": _kaiming_uniform,
    "xavier_normal": _xavier_normal,
    "xavier_uniform": _xavier_uniform,
    "normal": _normal,
    "trunc_normal": _trunc_normal,
    "orthogonal": _orthogonal,
}.items():
    INITIALIZERS.add(_name, _fn)


DEFAULT_STD = 0.02  # the normal initialisers' std unless ``model.init_std`` says otherwise


def apply_initializer(model: nn.Module, name: str, std: float = DEFAULT_STD) -> nn.Module:
    """Re-initialise ``model``'s Linear and Conv layers in place; returns ``model``.

    Raises UnknownNameError for a name that is not registered.
    """
    init_weight = INITIALIZERS.get(name)
    if init_weight is None:
        return model
    import torch
    from torch import nn

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                if isinstance(module.weight, nn.parameter.UninitializedParameter):
                    continue  # a lazy layer of a custom model: shaped on its first batch
                init_weight(module.weight, std)
                if module.bias is not None:
                    module.bias.zero_()
    return model
