"""The torch side of the ``torchvision`` and ``timm`` families: head swap, weight loading,
freezing by blocks.

Imported by their builders only (it needs torch; torchvision and timm are imported inside).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from itertools import accumulate, chain
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from torch import nn

from hpo.errors import TrainingError
from hpo.models.init import apply_initializer
from hpo.models.registry import reads_pretrained

log = logging.getLogger(__name__)

# Sizes tried, on the meta device, to tell a user which data.image_size would work
# (75: Inception v3's smallest).
_TRIAL_SIZES = (16, 32, 48, 64, 75, 96, 128, 160, 224, 256, 299)
# Layers that join the conv or linear layer before them in one block (see Layout.blocks).
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


class Backbone(nn.Module):
    """A torchvision or timm model (``net``) with a new logits layer at ``net.<head_path>``.

    torchvision: grayscale images are repeated to three channels (a view, no copy) rather
    than adapting the first convolution, so pretrained RGB filters apply unchanged and every
    architecture is handled the same way. timm builds its first convolution for the channels
    given (``expand_gray=False``) and adapts pretrained RGB filters itself. Batch-norm layers
    whose parameters are all frozen stay in eval mode while training, so a frozen part of the
    backbone computes exactly what it did when it was trained.

    ``blocks``: the backbone's parameter names, block by block from the input side (the
    head's are in none); what ``freeze`` counts.
    """

    def __init__(
        self, net: nn.Module, in_channels: int, head_path: str, *,
        blocks: list[list[str]], expand_gray: bool = True,
    ):
        super().__init__()
        self.net = net
        self.gray = expand_gray and in_channels == 1
        self.head_path = head_path
        self.blocks = blocks
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


def _runs_at(net: nn.Module, size: tuple[int, int], channels: int = 3) -> str | None:
    """None if ``net`` accepts channels x size images, else why not; computed on the meta
    device, so it costs no memory and no arithmetic."""
    tensors = {
        name: torch.empty_like(t, device="meta")
        for name, t in chain(net.named_parameters(), net.named_buffers())
    }
    was_training = net.training
    net.eval()
    try:
        torch.func.functional_call(net, tensors, (torch.empty(2, channels, *size, device="meta"),))
        return None
    except Exception as exc:  # shape errors are RuntimeError; anything else: can't tell
        return _first_error_line(exc)
    finally:
        net.train(was_training)


def _check_input_size(arch: str, net: nn.Module, h: int, w: int, channels: int = 3) -> None:
    why = _runs_at(net, (h, w), channels)
    if why is None:
        return
    working = next((s for s in _TRIAL_SIZES if _runs_at(net, (s, s), channels) is None), None)
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

    Loaded with ``weights_only=True`` (or as safetensors, the Hugging Face hub's format): a
    weights file never runs code.
    """
    obj: object
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(path)
        else:
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


def _load_pretrained(model: Backbone, arch: str, path: Path, unused: tuple[str, ...] = ()) -> None:
    """Load every backbone tensor from ``path``; only the old head's keys (and those starting
    with ``unused``, parts the model was built without) may be skipped."""
    prefix = model.head_path + "."
    state = read_state_dict(path, arch)
    skipped = sorted(k for k in state if k.startswith((prefix, *unused)))
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


def pattern_blocks(net: nn.Module, pattern: str | None, head_path: str) -> list[list[str]]:
    """``net``'s parameter names outside the head, in blocks as ``Layout.blocks`` says.

    Written here rather than with timm's ``group_parameters``: that would import timm (a
    second or more) for every torchvision model, and its groups are ordered by numbers in
    the names, where these follow the module order.
    """
    matcher = re.compile(pattern) if pattern else None
    norms = {name for name, m in net.named_modules() if isinstance(m, _NORMS)}
    blocks: list[list[str]] = []
    last_key = loose = None  # loose: the last layer outside the pattern's blocks
    for name, _ in net.named_parameters():
        if name.startswith(head_path + "."):
            continue
        module = name.rpartition(".")[0]
        found = matcher.match(name) if matcher else None
        if found:
            key, loose = "=" + found.group(0), None
        elif not (module in norms and loose is not None):
            key = loose = module
        else:
            key = loose
        if key != last_key:
            blocks.append([])
            last_key = key
        blocks[-1].append(name)
    return blocks


def frozen_names(
    blocks: list[list[str]], sizes: Mapping[str, int], fraction: float,
    unit: Literal["blocks", "parameters"],
) -> list[str]:
    """The parameter names ``freeze`` freezes: the first ``fraction`` of the blocks (rounded
    to the nearest), or of the parameters (``sizes``: numbers per name), then the input-side
    tensors whose total is nearest to that share. A fraction between 0 and 1 freezes at
    least one block (tensor) and leaves at least one trainable, so that rounding never turns
    ``freeze: 0.9`` of 5 blocks into a frozen backbone, nor ``0.1`` of 3 into none frozen;
    a backbone of one block stays trainable."""
    if unit == "blocks":
        count = _partial(math.floor(fraction * len(blocks) + 0.5), fraction, len(blocks))
        return [name for block in blocks[:count] for name in block]
    names = [name for block in blocks for name in block]
    totals = [0, *accumulate(sizes[name] for name in names)]
    target = fraction * totals[-1]
    count = min(range(len(totals)), key=lambda k: abs(totals[k] - target))
    return names[:_partial(count, fraction, len(names))]


def _partial(count: int, fraction: float, total: int) -> int:
    """``count`` of ``total`` units, kept off 0 and ``total`` unless ``fraction`` is."""
    if fraction > 0:
        count = max(count, 1)
    if fraction < 1:
        count = min(count, total - 1)
    return max(count, 0)


def freeze_backbone(model: Backbone, fraction: float, unit: Literal["blocks", "parameters"] = "blocks") -> int:
    """Freeze the first ``fraction`` of the backbone (``unit``: blocks or parameters, from the
    input side); the head always trains. Returns how many tensors were frozen."""
    params = dict(model.net.named_parameters())
    names = frozen_names(model.blocks, {n: p.numel() for n, p in params.items()}, fraction, unit)
    for name in names:
        params[name].requires_grad_(False)
    return len(names)


def build_backbone(
    arch: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    *,
    head_path: str,
    old_dropout: str | None,
    blocks: str | None,
    kwargs: Mapping[str, object],
    unused_keys: tuple[str, ...],
    dropout: float,
    pretrained: str | None,
    freeze: float,
    freeze_unit: Literal["blocks", "parameters"],
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
    # Read (and fail on a missing file) before building; not when a trained model's own
    # weights will replace every parameter (create_model's read_pretrained=False).
    path = _weights_path(arch, pretrained) if pretrained and reads_pretrained() else None
    if pretrained and "aux_logits" in kwargs:
        # As torchvision does for its own GoogLeNet/Inception weights: they expect inputs
        # normalised as (x - 0.5) / 0.5, which transform_input makes of ImageNet-normalised ones.
        kwargs = {**kwargs, "transform_input": True}
    net = get_model(arch, **kwargs)  # random init: weights only ever come from a local file
    net.set_submodule(head_path, _new_head(net.get_submodule(head_path), dropout, num_classes))
    if old_dropout:
        net.set_submodule(old_dropout, nn.Identity())
    _check_input_size(arch, net, h, w)
    model = Backbone(net, channels, head_path, blocks=pattern_blocks(net, blocks, head_path))
    if path is not None:
        _load_pretrained(model, arch, path, unused_keys)
    freeze_backbone(model, freeze, freeze_unit)
    # An initialiser must not overwrite loaded weights: then only the new head gets it.
    apply_initializer(model.head if path is not None else model, init, init_std, init_range=init_range)
    return model


def _timm_hub_file(arch: str) -> Path:
    """The file of timm's default ``arch`` weights in the Hugging Face cache; downloads nothing."""
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    repo = cfg.hf_hub_id if cfg is not None else None
    if cfg is None or not repo:
        raise TrainingError(
            f"timm has no Hugging Face weights for {arch}: give model.pretrained the path of a "
            "state-dict file"
        )
    # The file names timm's own loader tries, in its order.
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
    cache_dir = constants.HF_HUB_CACHE  # read now: tests and users may move it
    for filename in names:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    raise TrainingError(
        f"pretrained weights for timm {arch} are not in the Hugging Face cache {cache_dir}: "
        f"nothing is downloaded, so fetch them where there is internet (hf download {repo} "
        f"{names[0]}) and copy that cache here (HF_HOME moves it), or give model.pretrained "
        "the path of a state-dict file"
    )


def _timm_weights_path(arch: str, pretrained: str) -> Path:
    if pretrained == "hub":
        return _timm_hub_file(arch)
    path = Path(pretrained).expanduser().absolute()
    if not path.is_file():
        raise TrainingError(
            f"pretrained weights file {path} does not exist: nothing is downloaded, so put a "
            f"timm {arch} state dict there (torch.save(model.state_dict(), path), or the "
            "model.safetensors of its Hugging Face repository)"
        )
    return path


def _create_timm(arch: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor] | None,
                 path: Path | None) -> Any:
    """``timm.create_model``, loading ``state`` through timm's own pretrained path (its
    checkpoint filters, first-conv channel adaptation and head dropping), never the network."""
    import timm

    try:
        if state is None:
            return timm.create_model(arch, **kwargs)
        return timm.create_model(
            arch, pretrained=True, pretrained_cfg_overlay={"state_dict": dict(state)}, **kwargs
        )
    except TypeError as exc:  # a few models (VLM image encoders) lack in_chans or drop_rate
        raise TrainingError(
            f"timm {arch} cannot be built as a classifier here: {_first_error_line(exc)}"
        ) from exc
    except RuntimeError as exc:  # shape mismatches, first convs it cannot adapt
        if path is None:
            raise
        sizes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise TrainingError(
            f"{path} does not fit timm {arch}: {'; '.join(sizes[:3]) or _first_error_line(exc)}"
        ) from exc


def _head_path(arch: str, net: Any) -> str:
    """The path of timm's classifier in ``net``; one head only."""
    if not hasattr(net, "get_classifier"):  # image encoders of vision-language models
        raise TrainingError(f"timm {arch} has no classifier head: it is not a classification model")
    head = net.get_classifier()
    path = next((name for name, m in net.named_modules() if m is head), None)
    if path is None:  # distilled models (efficientformer, swiftformer) return two heads
        raise TrainingError(
            f"timm {arch} has {len(head) if isinstance(head, tuple) else 'no'} classifier heads, "
            "not one: hpo's timm family takes models with a single head"
        )
    return path


def _check_timm_weights(net: nn.Module, head_path: str, state: Mapping[str, torch.Tensor],
                        arch: str, path: Path) -> None:
    """timm loads non-strictly once it drops the old head, so a file of another model would
    load nothing and say nothing: every backbone parameter and persistent buffer (a batch
    norm's running statistics, which pretrained features depend on) must be in the file.
    ``num_batches_tracked`` is left out: files saved by older torch versions lack it, and it
    only matters to a batch norm without momentum."""
    missing = [n for n in net.state_dict() if not n.startswith(head_path + ".")
               and not n.endswith(".num_batches_tracked") and n not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise TrainingError(f"{path} does not fit timm {arch}: {len(missing)} missing keys ({shown})")


def timm_blocks(net: Any, head_path: str) -> list[list[str]]:
    """timm's own blocks (``group_matcher(coarse=False)``, as layer-wise learning-rate decay
    uses them), in order, without the head's parameters."""
    from timm.models import group_parameters

    if not hasattr(net, "group_matcher"):
        return pattern_blocks(net, None, head_path)
    groups = group_parameters(net, net.group_matcher(coarse=False))
    blocks = [[n for n in names if not n.startswith(head_path + ".")] for _, names in sorted(groups.items())]
    return [block for block in blocks if block]


def build_timm_backbone(
    arch: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    *,
    dropout: float,
    pretrained: str | None,
    freeze: float,
    freeze_unit: Literal["blocks", "parameters"],
    init: str,
    init_std: float,
    init_range: float,
) -> Backbone:
    from timm.models import get_pretrained_cfg

    channels, h, w = in_shape
    # As for torchvision: read before building, unless a trained model's weights follow.
    path = _timm_weights_path(arch, pretrained) if pretrained and reads_pretrained() else None
    state = read_state_dict(path, arch) if path is not None else None
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": channels, "drop_rate": dropout}
    cfg = get_pretrained_cfg(arch)
    if cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = (h, w)  # ViT-like: position embeddings for this size
    net = _create_timm(arch, kwargs, state, path)
    head_path = _head_path(arch, net)
    if state is not None and path is not None:
        _check_timm_weights(net, head_path, state, arch, path)
        if cfg is not None and cfg.num_classes == num_classes:
            net.reset_classifier(num_classes)  # timm kept the file's head: a new one all the same
    _check_input_size(arch, net, h, w, channels)
    model = Backbone(net, channels, head_path, blocks=timm_blocks(net, head_path), expand_gray=False)
    if state is not None:
        skipped = sorted(k for k in state if k.startswith(head_path + "."))
        model.pretrained_info = {"path": str(path), "loaded": len(state) - len(skipped), "skipped": skipped}
        log.info("timm %s: loaded %d tensors from %s; skipped the old head's %s",
                 arch, len(state) - len(skipped), path, ", ".join(skipped) or "nothing")
    freeze_backbone(model, freeze, freeze_unit)
    # An initialiser must not overwrite loaded weights: then only the new head gets it.
    apply_initializer(model.head if path is not None else model, init, init_std, init_range=init_range)
    return model
