"""From ``data:`` config to batch sources, once per worker process.

Build order: load the source (cached per loader arguments) -> keep the chosen classes and
renumber them -> split (stratified, seeded by ``data.split_seed`` only, so every trial of a
study on any worker trains and validates on the same images) -> per-channel statistics of the
training split -> batch sources on the device. Official test sets are the test split; sources
without one have it carved off the pool first. The test split is only reachable through
``load_test_split``: tuning never sees it.

A worker's fixed dataset (``load_splits(..., disk_cache=True)``) goes through the on-disk
cache of prepared splits (``hpo.training.cache``): a worker started again on the same data
reads the train and validation arrays instead of loading and splitting the source again.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hpo.errors import TrainingError, close_matches
from hpo.training import cache
from hpo.training.batches import BatchSource, LoaderBatches, TensorBatches
from hpo.training.config import DataConfig
from hpo.training.datasets import DATASETS, resolve_root
from hpo.training.raw import RawDataset

__all__ = ["BatchSource", "Splits", "TestSplit", "load_splits", "load_test_split", "load_train_val"]

log = logging.getLogger(__name__)

# Keys that change what a batch looks like after it leaves the source (applied by the loop),
# not which images are loaded; configs differing only in them share one cached Splits.
_NOT_IN_CACHE_KEY = frozenset({"augment"})


@dataclass(frozen=True, eq=False)
class Splits:
    """What tuning may see: train and validation batch sources on the device."""

    train: BatchSource
    val: BatchSource | None  # None only from load_train_val (retraining: no validation)
    in_shape: tuple[int, int, int]  # (C, H, W) of a batch's images, after resizing
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the training split's pixels scaled to [0, 1]
    std: tuple[float, ...]
    class_counts: dict[str, list[int]]  # {"train": [...], "val": [...]}, by new label
    skipped: dict[str, str]  # unreadable image files left out: path -> reason


@dataclass(frozen=True, eq=False)
class TestSplit:
    """The held-out images, normalised with the *train* split's statistics like the others."""

    test: BatchSource
    in_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    class_counts: dict[str, list[int]]  # {"test": [...]}


# -- loading -------------------------------------------------------------------------------


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


RawKey = tuple[str, tuple[tuple[str, Any], ...], str]


def raw_key(cfg: DataConfig) -> RawKey:
    """(name, loader keyword arguments, cwd): the arguments a loader declares, read from
    ``cfg``; the working directory because ``root`` and ``path`` may be relative to it."""
    loader = DATASETS.get(cfg.name)
    kwargs = {}
    for p in inspect.signature(loader).parameters:
        kwargs[p] = resolve_root(cfg.root) if p == "root" else _hashable(getattr(cfg, p))
    return cfg.name, tuple(sorted(kwargs.items())), os.getcwd()


@functools.cache
def _raw(key: RawKey) -> RawDataset:
    name, kwargs, _ = key
    raw = DATASETS.get(name)(**dict(kwargs))
    if raw.skipped:
        log.warning(
            "%s: skipped %d unreadable image file(s):\n%s",
            dict(kwargs).get("path") or name,
            len(raw.skipped),
            "\n".join(f"  {p}: {why}" for p, why in raw.skipped.items()),
        )
    return raw


def source_keys(name: str) -> frozenset[str]:
    """The data keys that choose which files dataset ``name`` reads: ``name`` and its loader's
    arguments (``root``, ``download``, ``path``, ...). The other keys only select, split,
    resize or augment what was read."""
    return frozenset({"name", *inspect.signature(DATASETS.get(name)).parameters})


def load_source(cfg: DataConfig) -> None:
    """Read the dataset's files (cached, as ``load_splits`` reads them) without splitting them."""
    _raw(raw_key(cfg))


def select_classes(class_names: tuple[str, ...], classes: Any) -> list[int]:
    """Old label of each kept class, in new-label order (``data.classes``)."""
    n = len(class_names)
    if classes is None:
        return list(range(n))
    if isinstance(classes, int):
        if classes > n:
            raise TrainingError(f"data.classes is {classes} but the dataset has only {n} classes")
        return list(range(classes))
    out = []
    for c in classes:
        if isinstance(c, int):
            if c >= n:
                raise TrainingError(
                    f"data.classes: index {c} is out of range; "
                    f"the dataset has {n} classes (0..{n - 1})"
                )
            out.append(c)
        elif c in class_names:
            out.append(class_names.index(c))
        else:
            matches = close_matches(c, class_names)
            hint = f"; did you mean {' or '.join(map(repr, matches))}?" if matches else ""
            shown = ", ".join(class_names[:20]) + (", ..." if n > 20 else "")
            raise TrainingError(f"data.classes: no class named {c!r}{hint} (classes: {shown})")
    if len(set(out)) < len(out):
        raise TrainingError(f"data.classes names a class twice (by name and index?): {classes}")
    return out


# -- splitting -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Plan:
    """Which examples of which source part form each split, and the statistics; no pixels."""

    raw: RawDataset
    splits: dict[str, tuple[str, np.ndarray]]  # split -> (part, sorted read-only indices)
    label_map: np.ndarray  # old label -> new label, -1 for classes left out
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def labels(self, split: str) -> np.ndarray:
        part, idx = self.splits[split]
        return self.label_map[self.raw.parts[part].y[idx]]

    def class_counts(self, split: str) -> list[int]:
        return np.bincount(self.labels(split), minlength=len(self.class_names)).tolist()


def _carve(
    name: str, idx: np.ndarray, y: np.ndarray, size: float | int, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, carved): a stratified, seeded share of ``idx`` (fraction, or count if int)."""
    from sklearn.model_selection import train_test_split

    try:
        rest, carved = train_test_split(idx, test_size=size, stratify=y[idx], random_state=seed)
    except ValueError as e:  # e.g. a split too small to hold every class once
        counts = np.bincount(y[idx])
        counts = counts[counts > 0].tolist()
        shown = f" (examples per class: {counts})" if len(counts) <= 20 else ""
        raise TrainingError(
            f"cannot split dataset {name!r} into a {what} split: {e}{shown}"
        ) from None
    return rest, carved


def _carve_per_class(idx: np.ndarray, y: np.ndarray, count: int, seed: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(rest, carved): exactly ``count`` examples of each class of ``idx``, seeded.

    Hand-written because scikit-learn's stratified splitters take a total size and round each
    class's share of it; a count per class is a seeded permutation of each class's indices.
    ``seed`` is (split_seed, the split's own number), so that test and validation draw apart.
    """
    rng = np.random.default_rng(seed)
    carved = np.concatenate([rng.permutation(np.sort(idx[y[idx] == c]))[:count] for c in np.unique(y[idx])])
    return np.setdiff1d(idx, carved), carved


def _check_per_class(name: str, class_names: tuple[str, ...], idx: np.ndarray, y: np.ndarray,
                     counts: dict[str, int], after: str = "") -> None:
    """A ``TrainingError`` naming the smallest class of ``idx`` with too few examples for the
    ``counts`` per class still to be carved (``data.`` key -> count) and one left to train."""
    have = np.bincount(y[idx], minlength=len(class_names))
    need = sum(counts.values()) + 1
    short = np.flatnonzero(have < need)
    if len(short) == 0:
        return
    c = short[np.argmin(have[short])]
    terms = " + ".join(f"data.{key}: {n}" for key, n in counts.items())
    more = f" ({len(short) - 1} more classes too small)" if len(short) > 1 else ""
    raise TrainingError(f"dataset {name!r}: class {class_names[c]!r} has {have[c]} images{after}, "
                        f"too few for {terms} + 1 to train (needs {need}){more}")


def _own_split(name: str, raw: RawDataset, part: str, per_class: int | None) -> None:
    """A count per class cannot size a split the source already has (an official test set,
    a folder's test/ or val/): that split is used whole, as the fraction is ignored there."""
    if per_class is not None:
        what = {"val": "validation", "test": "test"}[part]
        raise TrainingError(
            f"data.{part}_per_class: dataset {name!r} has its own {what} split "
            f"({len(raw.parts[part].y)} images), which is used whole; {part}_per_class is for "
            "datasets without one"
        )


def _stats(
    raw: RawDataset, part: str, idx: np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the training images, pixels scaled to [0, 1]."""
    p = raw.parts[part]
    c = raw.shape[0]
    if p.file_backed:
        sums = p.pixel_sums[idx].sum(axis=0)  # (2, C)
        count = len(idx) * raw.shape[1] * raw.shape[2]
        s, sq = sums[0], sums[1]
    else:
        s, sq = np.zeros(c), np.zeros(c)
        for start in range(0, len(idx), 2048):  # float64 sums in chunks: bounded memory
            chunk = p.x[idx[start : start + 2048]].astype(np.float64) / raw.scale
            s += chunk.sum(axis=(0, 2, 3))
            sq += np.square(chunk).sum(axis=(0, 2, 3))
        count = len(idx) * p.x.shape[2] * p.x.shape[3]
    mean = s / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 0))
    std = np.where(std > 1e-6, std, 1.0)  # a constant channel: centre it, do not blow it up
    return tuple(float(m) for m in mean), tuple(float(v) for v in std)


@functools.cache
def plan(key: RawKey, classes: Any, val_fraction: float | None, test_fraction: float | None, seed: int,
         train_fraction: float = 1.0, val_per_class: int | None = None,
         test_per_class: int | None = None) -> Plan:
    """Class subset, splits and statistics of one source; cached, shared by every config
    that differs only in image size, workers or augmentation. Validation and test are each
    sized by a fraction or by a count per class (``DataConfig`` gives one of the two)."""
    raw = _raw(key)
    name = key[0]
    kept = select_classes(raw.class_names, classes)
    names = tuple(raw.class_names[i] for i in kept)
    label_map = np.full(len(raw.class_names), -1, dtype=np.int64)
    label_map[kept] = np.arange(len(kept))

    def pool(part: str) -> np.ndarray:
        return np.flatnonzero(label_map[raw.parts[part].y] >= 0)

    def new_y(part: str) -> np.ndarray:
        return label_map[raw.parts[part].y]

    splits: dict[str, tuple[str, np.ndarray]] = {}
    train = pool("train")
    y = new_y("train")
    n = len(train)
    # Validation's count per class, when it is carved from this pool too: the test split
    # must leave room for it.
    val_count = {"val_per_class": val_per_class} if val_per_class is not None and "val" not in raw.parts else {}
    if "test" in raw.parts:
        _own_split(name, raw, "test", test_per_class)
        splits["test"] = ("test", pool("test"))
    elif test_per_class is not None:
        _check_per_class(name, names, train, y, {"test_per_class": test_per_class, **val_count})
        train, test = _carve_per_class(train, y, test_per_class, (seed, 1))
        splits["test"] = ("train", test)
    else:
        train, test = _carve(name, train, y, _given(test_fraction), seed, "test")
        splits["test"] = ("train", test)
    if "val" in raw.parts:
        _own_split(name, raw, "val", val_per_class)
        splits["val"] = ("val", pool("val"))
    elif val_per_class is not None:
        after = " left after data.test_fraction" if splits["test"][0] == "train" and test_per_class is None else ""
        _check_per_class(name, names, train, y, val_count, after)
        train, val = _carve_per_class(train, y, val_per_class, (seed, 2))
        splits["val"] = ("train", val)
    else:
        # val_fraction is of the whole pool, so the train share does not depend on test's.
        train, val = _carve(name, train, y, max(1, round(_given(val_fraction) * n)), seed, "validation")
        splits["val"] = ("train", val)
    if train_fraction < 1:
        _, train = _carve(name, train, y, train_fraction, seed, "training subset (data.train_fraction)")
    splits["train"] = ("train", train)
    for split, (part, idx) in list(splits.items()):
        idx = np.sort(idx)
        idx.setflags(write=False)  # cached and shared: nobody may shuffle them in place
        splits[split] = (part, idx)
        if len(idx) == 0:
            raise TrainingError(f"dataset {name!r} has no {split} examples of the chosen classes")
    mean, std = _stats(raw, *splits["train"])
    return Plan(raw, splits, label_map, names, mean, std)


def _given(fraction: float | None) -> float:
    # DataConfig sets a split's fraction wherever it sets no count per class for it.
    assert fraction is not None, "a split sized by neither a fraction nor a count per class"
    return fraction


PlanArgs = tuple[RawKey, Any, float | None, float | None, int, float, int | None, int | None]


def _plan_args(cfg: DataConfig) -> PlanArgs:
    return (raw_key(cfg), _hashable(cfg.classes), cfg.val_fraction, cfg.test_fraction,
            cfg.split_seed, cfg.train_fraction, cfg.val_per_class, cfg.test_per_class)


def _plan_for(cfg: DataConfig) -> Plan:
    return plan(*_plan_args(cfg))


# -- prepared tuning splits (in memory, on-disk cache) -------------------------------------

_PREPARED: dict[PlanArgs, cache.Prepared | None] = {}


def _prepared_for(cfg: DataConfig, disk_cache: bool) -> cache.Prepared | None:
    """The train and validation arrays of an in-memory dataset, once per process (shared by
    configs that differ only in image size, workers or augmentation); None for a source
    streamed from disk. With ``disk_cache``, read from the on-disk cache when it holds them,
    else computed and written there."""
    args = _plan_args(cfg)
    if args not in _PREPARED:
        found = _disk_entry(args) if disk_cache else None
        prepared = found.read() if found is not None else None
        if prepared is None:
            prepared = _prepare(plan(*args))
            if found is not None and prepared is not None:
                found.write(prepared)
        _PREPARED[args] = prepared
    return _PREPARED[args]


def _disk_entry(args: PlanArgs) -> cache.Entry | None:
    (name, kwargs, cwd), classes, val_fraction, test_fraction, seed, train_fraction, val_pc, test_pc = args
    # An absolute root: the same files from any working directory share one entry.
    loader = {k: os.path.abspath(os.path.join(cwd, v)) if k == "root" else v for k, v in kwargs}
    selection = {"classes": classes, "val_fraction": val_fraction, "test_fraction": test_fraction,
                 "split_seed": seed, "train_fraction": train_fraction,
                 "val_per_class": val_pc, "test_per_class": test_pc}
    return cache.entry(name, loader, selection)


def _prepare(p: Plan) -> cache.Prepared | None:
    parts = {s: p.raw.parts[p.splits[s][0]] for s in cache.SPLITS}
    if any(part.file_backed for part in parts.values()):
        return None
    return cache.Prepared(
        x={s: np.ascontiguousarray(parts[s].x[p.splits[s][1]]) for s in cache.SPLITS},
        y={s: p.labels(s) for s in cache.SPLITS},
        class_names=p.class_names, mean=p.mean, std=p.std, shape=p.raw.shape,
        scale=float(p.raw.scale), skipped=dict(p.raw.skipped),
    )


# -- batch sources -------------------------------------------------------------------------


def _in_shape(cfg: DataConfig, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    c, h, w = shape
    return (c, cfg.image_size, cfg.image_size) if cfg.image_size else (c, h, w)


def _source(p: Plan, split: str, cfg: DataConfig, device: torch.device) -> BatchSource:
    part_name, idx = p.splits[split]
    part = p.raw.parts[part_name]
    labels = torch.from_numpy(p.labels(split))
    if part.file_backed:
        c, h, _ = p.raw.shape
        return LoaderBatches(
            part.x[idx],
            labels,
            image_size=h,
            channels=c,
            mean=p.mean,
            std=p.std,
            device=device,
            num_workers=cfg.num_workers,
        )
    x, y = _tensors(p, split, device)
    return TensorBatches(x, y, mean=p.mean, std=p.std, scale=p.raw.scale, image_size=_resize(cfg))


def _resize(cfg: DataConfig) -> tuple[int, int] | None:
    return (cfg.image_size, cfg.image_size) if cfg.image_size else None


def _tensors(p: Plan, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's pixels (in the source's dtype) and new labels, on ``device``."""
    part_name, idx = p.splits[split]
    x = torch.from_numpy(np.ascontiguousarray(p.raw.parts[part_name].x[idx])).to(device)
    return x, torch.from_numpy(p.labels(split)).to(device)


@functools.cache
def _device_tensors(
    pr: cache.Prepared, split: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # Keyed by the prepared splits, not the whole config: configs that differ only in
    # image_size or num_workers share one copy of the pixels on the device.
    return torch.from_numpy(pr.x[split]).to(device), torch.from_numpy(pr.y[split]).to(device)


def cache_key(cfg: DataConfig, device: str | torch.device) -> tuple[str, RawKey, str]:
    """Every data key except augmentation, what they resolve to here, and the device."""
    fields = cfg.model_dump(exclude=set(_NOT_IN_CACHE_KEY))
    return json.dumps(fields, sort_keys=True, default=str), raw_key(cfg), str(torch.device(device))


_SPLITS: dict[tuple[str, RawKey, str], Splits] = {}


def load_splits(cfg: DataConfig, device: str | torch.device = "cpu", *,
                disk_cache: bool = False) -> Splits:
    """Train and validation batch sources on ``device``; cached, so a worker loads them once.

    ``disk_cache``: read the prepared splits from the on-disk cache (``hpo.training.cache``),
    or write them there; for a worker's fixed dataset, so that the cache holds one entry per
    dataset a worker was started on, not one per trial of a searched ``data.*`` key.
    """
    key = cache_key(cfg, device)
    if key not in _SPLITS:
        dev = torch.device(device)
        prepared = _prepared_for(cfg, disk_cache)
        if prepared is None:
            _SPLITS[key] = _streamed_splits(cfg, _plan_for(cfg), dev)
        else:
            _SPLITS[key] = _in_memory_splits(cfg, prepared, dev)
    return _SPLITS[key]


def _in_memory_splits(cfg: DataConfig, pr: cache.Prepared, dev: torch.device) -> Splits:
    sources = {}
    for split in cache.SPLITS:
        x, y = _device_tensors(pr, split, dev)
        sources[split] = TensorBatches(x, y, mean=pr.mean, std=pr.std, scale=pr.scale,
                                       image_size=_resize(cfg))
    return Splits(
        train=sources["train"],
        val=sources["val"],
        in_shape=_in_shape(cfg, pr.shape),
        num_classes=len(pr.class_names),
        class_names=pr.class_names,
        mean=pr.mean,
        std=pr.std,
        class_counts={s: pr.class_counts(s) for s in cache.SPLITS},
        skipped=dict(pr.skipped),
    )


def _streamed_splits(cfg: DataConfig, p: Plan, dev: torch.device) -> Splits:
    return Splits(
        train=_source(p, "train", cfg, dev),
        val=_source(p, "val", cfg, dev),
        in_shape=_in_shape(cfg, p.raw.shape),
        num_classes=len(p.class_names),
        class_names=p.class_names,
        mean=p.mean,
        std=p.std,
        class_counts={s: p.class_counts(s) for s in ("train", "val")},
        skipped=dict(p.raw.skipped),
    )


def load_train_val(cfg: DataConfig, device: str | torch.device = "cpu") -> Splits:
    """Train and validation together as one training source, for retraining a chosen config.

    Normalised with the train split's statistics, as in tuning; ``val`` is None. Not cached:
    a retrain loads it once.
    """
    dev = torch.device(device)
    p = _plan_for(cfg)
    parts = [p.raw.parts[p.splits[s][0]] for s in ("train", "val")]
    labels = torch.from_numpy(np.concatenate([p.labels("train"), p.labels("val")]))
    if all(part.file_backed for part in parts):
        c, h, _ = p.raw.shape
        paths = np.concatenate([part.x[p.splits[s][1]] for part, s in zip(parts, ("train", "val"))])
        source: BatchSource = LoaderBatches(
            paths, labels, image_size=h, channels=c, mean=p.mean, std=p.std, device=dev,
            num_workers=cfg.num_workers,
        )
    elif not any(part.file_backed for part in parts):
        x = torch.cat([_tensors(p, s, dev)[0] for s in ("train", "val")])
        size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
        source = TensorBatches(x, labels.to(dev), mean=p.mean, std=p.std, scale=p.raw.scale, image_size=size)
    else:
        raise TrainingError(f"dataset {cfg.name!r}: cannot join a file-backed and an in-memory split")
    counts = [a + b for a, b in zip(p.class_counts("train"), p.class_counts("val"))]
    return Splits(
        train=source,
        val=None,
        in_shape=_in_shape(cfg, p.raw.shape),
        num_classes=len(p.class_names),
        class_names=p.class_names,
        mean=p.mean,
        std=p.std,
        class_counts={"train+val": counts},
        skipped=dict(p.raw.skipped),
    )


def load_test_split(cfg: DataConfig, device: str | torch.device = "cpu") -> TestSplit:
    """The held-out test images, for the final number after tuning.

    Deliberately separate from ``load_splits`` (and its pixels not cached) so that nothing on
    the tuning path can reach the test set by accident.
    """
    p = _plan_for(cfg)
    return TestSplit(
        test=_source(p, "test", cfg, torch.device(device)),
        in_shape=_in_shape(cfg, p.raw.shape),
        num_classes=len(p.class_names),
        class_names=p.class_names,
        class_counts={"test": p.class_counts("test")},
    )



@dataclass(frozen=True)
class InputFormat:
    """What a model trained on a ``data:`` config was fed: images of ``in_shape`` (C, H, W),
    pixels divided by ``scale`` (the stored value of white: 255, or 16 for digits), then
    normalised per channel with the *training* split's ``mean`` and ``std``. For using a
    trained model outside hpo (``hpo.load_model``)."""

    in_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float


def input_format(cfg: DataConfig) -> InputFormat:
    """The input format of models trained on ``cfg``, from the same (cached) split plan as
    tuning: the statistics are those the trials normalised with."""
    p = _plan_for(cfg)
    return InputFormat(_in_shape(cfg, p.raw.shape), p.class_names, p.mean, p.std, float(p.raw.scale))
