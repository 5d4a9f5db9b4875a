"""The torch side of the ``torchvision`` family: head swap, weight loading, freezing.

Imported by ``models.backbone``'s builder only (it needs torch and torchvision).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from itertools import chain
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from hpo.errors import TrainingError
from hpo.models.init import apply_initializer

log = logging.getLogger(__name__)

# Sizes tried, on the meta device, to tell a user which data.image_size would work.
_TRIAL_SIZES = (16, 32, 48, 64, 96, 128, 160, 224, 256, 299)


class Backbone(nn.Module):
    """A torchvision model (``net``) whose logits layer was replaced by ``net.<head_path>``.

    Grayscale images are repeated to three channels (a view, no copy) rather than adapting
    the first convolution, so pretrained RGB filters apply unchanged and every architecture
    is handled the same way. Batch-norm layers whose parameters are all frozen stay in
    eval mode while training, so a frozen part of the backbone computes exactly what it
    did when it was trained.
    """

    def __init__(self, net: nn.Module, in_channels: int, head_path: str):
        super().__init__()
        self.net = net
        self.gray = in_channels == 1
        self.head_path = head_path
        self.pretrained_info: dict[str, object] | None = None  # set when weights were loaded

    @property
    def head(self) -> nn.Module:
        return self.net.get_submodule(self.head_path)

    def backbone_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Every parameter outside the new head, in module order (input side first)."""
        prefix = self.head_path + "."
        return [(n, p) for n, p in self.net.named_parameters() if not n.startswith(prefix)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gray:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode:
            for module in self.net.modules():
                params = list(module.parameters(recurse=False))
                frozen = params and not any(p.requires_grad for p in params)
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and frozen:
                    module.eval()
        return self


def _new_head(old: nn.Module, dropout: float, num_classes: int) -> nn.Module:
    if isinstance(old, nn.Linear):
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(old.in_features, num_classes))
    # SqueezeNet: dropout, 1x1 conv to the classes, ReLU, global pool.
    conv = next(m for m in old.modules() if isinstance(m, nn.Conv2d))
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(conv.in_channels, num_classes),
    )


def _first_error_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _runs_at(net: nn.Module, size: tuple[int, int]) -> str | None:
    """None if ``net`` accepts 3 x size images, else why not; computed on the meta device,
    so it costs no memory and no arithmetic."""
    tensors = {
        name: torch.empty_like(t, device="meta")
        for name, t in chain(net.named_parameters(), net.named_buffers())
    }
    was_training = net.training
    net.eval()
    try:
        torch.func.functional_call(net, tensors, (torch.empty(2, 3, *size, device="meta"),))
        return None
    except Exception as exc:  # shape errors are RuntimeError; anything else: can't tell
        return _first_error_line(exc)
    finally:
        net.train(was_training)


def _check_input_size(arch: str, net: nn.Module, h: int, w: int) -> None:
    why = _runs_at(net, (h, w))
    if why is None:
        return
    working = next((s for s in _TRIAL_SIZES if _runs_at(net, (s, s)) is None), None)
    if working is None:
        return  # the meta device cannot run this model: the real forward pass will tell
    raise TrainingError(
        f"{arch} cannot take {h}x{w} images ({why}); the smallest size tried that works is "
        f"{working}x{working}: set data.image_size to {working}"
    )


def default_weights(arch: str) -> tuple[str, Path]:
    """(URL, hub cache path) of ``arch``'s default torchvision weights; downloads nothing."""
    from torchvision.models import get_model_weights

    url = get_model_weights(arch).DEFAULT.url
    filename = os.path.basename(urlparse(url).path)  # the name torch.hub saves it under
    return url, Path(torch.hub.get_dir()) / "checkpoints" / filename


def _weights_path(arch: str, pretrained: str) -> Path:
    url, hub_path = default_weights(arch)
    if pretrained == "hub":
        if not hub_path.is_file():
            raise TrainingError(
                f"pretrained weights for {arch} are not in the torch hub cache: nothing is "
                f"downloaded, so save {url} as {hub_path} (TORCH_HOME moves the cache)"
            )
        return hub_path
    path = Path(pretrained).expanduser().absolute()
    if not path.is_file():
        raise TrainingError(
            f"pretrained weights file {path} does not exist: nothing is downloaded, so put a "
            f"{arch} state dict there (the default {arch} weights are {url})"
        )
    return path


_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def read_state_dict(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: a bare one, or inside a checkpoint's ``state_dict``/``model``.

    Loaded with ``weights_only=True``: a weights file never runs code.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(
            f"cannot read pretrained weights {path}: {_first_error_line(exc)} (expected a state "
            "dict, as saved by torch.save(model.state_dict(), path))"
        ) from exc
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        obj = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), obj)
    if not isinstance(obj, Mapping) or not obj:
        raise TrainingError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    state = dict(obj)
    for prefix in ("module.", "net."):  # DataParallel, or a saved Backbone
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if arch.startswith("densenet"):
        # torchvision's own densenet files use old key names; it renames them the same way.
        state = {
            (m.group(1) + m.group(2) if (m := _DENSENET_OLD_KEY.match(k)) else k): v
            for k, v in state.items()
        }
    return state


def _load_pretrained(model: Backbone, arch: str, path: Path) -> None:
    """Load every backbone tensor from ``path``; only the old head's keys may be skipped."""
    prefix = model.head_path + "."
    state = read_state_dict(path, arch)
    skipped = sorted(k for k in state if k.startswith(prefix))
    wanted = {k: v for k, v in state.items() if k not in skipped}
    try:
        result = model.net.load_state_dict(wanted, strict=False)
    except RuntimeError as exc:  # shape mismatches
        sizes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise TrainingError(f"{path} does not fit {arch}: {'; '.join(sizes[:3]) or exc}") from exc
    missing = [k for k in result.missing_keys
               if not k.startswith(prefix) and not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", result.unexpected_keys)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {what} keys ({shown})")
        raise TrainingError(f"{path} does not fit {arch}: {'; '.join(parts)}")
    model.pretrained_info = {"path": str(path), "loaded": len(wanted), "skipped": skipped}
    log.info("%s: loaded %d tensors from %s; skipped the old head's %s",
             arch, len(wanted), path, ", ".join(skipped) or "nothing")


def freeze_backbone(model: Backbone, fraction: float) -> int:
    """Freeze the first ``fraction`` of the backbone's parameter tensors; returns how many."""
    params = model.backbone_parameters()
    count = math.floor(fraction * len(params) + 0.5)
    for _, p in params[:count]:
        p.requires_grad_(False)
    return count


def build_backbone(
    arch: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    *,
    head_path: str,
    old_dropout: str | None,
    dropout: float,
    pretrained: str | None,
    freeze: float,
    init: str,
    init_std: float,
    init_range: float,
) -> Backbone:
    from torchvision.models import get_model

    channels, h, w = in_shape
    if channels not in (1, 3):
        raise TrainingError(
            f"torchvision backbones take 1- or 3-channel images, not {channels}-channel ones"
        )
    path = _weights_path(arch, pretrained) if pretrained else None  # fail before building
    net = get_model(arch)  # random init: weights only ever come from a local file
    net.set_submodule(head_path, _new_head(net.get_submodule(head_path), dropout, num_classes))
    if old_dropout:
        net.set_submodule(old_dropout, nn.Identity())
    _check_input_size(arch, net, h, w)
    model = Backbone(net, channels, head_path)
    if path is not None:
        _load_pretrained(model, arch, path)
    freeze_backbone(model, freeze)
    # An initialiser must not overwrite loaded weights: then only the new head gets it.
    apply_initializer(model.head if path is not None else model, init, init_std, init_range=init_range)
    return model
