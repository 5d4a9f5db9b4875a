"""Pieces shared by the model families: activations and per-layer size lists.

The activation names are defined once here so that every family (and the spec's JSON
Schema, through the families' ``Literal`` fields) accepts exactly the same set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeVar, get_args

from pydantic import Field

if TYPE_CHECKING:
    from torch import nn

Activation = Literal["relu", "leaky_relu", "gelu", "elu", "selu", "tanh", "sigmoid"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)

# Units or channels of one layer. Wider than the widest common backbone layers (2048-5120) by
# far, yet small enough that torch can allocate the layer: 10**30 filters failed every trial.
MAX_WIDTH = 16384
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]

T = TypeVar("T")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module; torch is imported here so config modules stay torch-free."""
    from torch import nn

    # An explicit table, never getattr(nn, name): the name comes from user input.
    table = {
        "relu": nn.ReLU,
        "leaky_relu": nn.LeakyReLU,
        "gelu": nn.GELU,
        "elu": nn.ELU,
        "selu": nn.SELU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }
    try:
        return table[name]()
    except KeyError:
        from hpo.errors import UnknownNameError

        raise UnknownNameError("activation", name, table) from None


def check_sizes(
    value: int | list[int], count: int | None, value_key: str, count_key: str
) -> int | list[int]:
    """Field check for a layer size or per-layer list, reported under ``value_key``.

    ``count`` is None when the count key itself was invalid (pydantic already reports that).
    """
    for v in [value] if isinstance(value, int) else value:
        if v < 1:
            raise ValueError(f"every size must be at least 1 (got {v})")
    return check_per_layer(value, count, value_key, count_key)


def check_per_layer(value: T | list[T], count: int | None, value_key: str, count_key: str) -> T | list[T]:
    """Field check that a per-layer list (of any setting: sizes, kernels, paddings) has one value
    per layer; ``count`` is None when the count key itself was invalid."""
    if count is not None:
        per_layer(value, count, value_key, count_key)
    return value


def per_layer(value: T | list[T], count: int, value_key: str, count_key: str) -> list[T]:
    """Expand ``value`` to one entry per layer, so a search can tune one setting or one per layer
    (``repeat``): a single value applies to every layer.

    Raises ValueError on a length mismatch, naming both keys because either may be the one
    to change.
    """
    values = list(value) if isinstance(value, list) else [value] * count
    if len(values) != count:
        raise ValueError(f"{value_key} lists {len(values)} values but {count_key} is {count}")
    return values


def grown_sizes(first: int, growth: float, count: int) -> list[int]:
    """``count`` sizes starting at ``first``, each ``growth`` times the previous (rounded, >= 1).

    One number and one factor are easier to search than a list: 16 x 2.0 over 4 blocks is
    16, 32, 64, 128.
    """
    return [max(1, round(first * growth**i)) for i in range(count)]


def conv_out_size(size: int, kernel: int, stride: int, dilation: int, padding: int) -> int:
    """Output length of a convolution or pooling along one axis; ``padding`` is both sides."""
    return (size + padding - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding that makes the output ``ceil(size / stride)`` long.

    TensorFlow's rule; for stride 1 it is PyTorch's ``padding="same"``. Any odd pixel goes
    after, as both frameworks do.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2
