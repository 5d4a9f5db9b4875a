"""``image_folder``: a user's own images, one sub-folder per class.

Layouts: ``PATH/<class>/*.png`` (split here, stratified and seeded), or ``PATH/train/<class>``
with optional ``PATH/val`` (or ``valid``, ``validation``) and ``PATH/test`` used as given;
whatever split is missing is carved out of train.

Every file is checked up front, so a bad file costs a line in a log rather than a crashed
trial hours later: PIL's ``verify`` (headers, PNG checksums) and then a full decode (which
catches truncated JPEGs and PNGs that ``verify`` lets through). Unreadable files are skipped
and returned with the reason, as are images claiming more pixels than PIL's
``MAX_IMAGE_PIXELS`` (decompression bombs), before any is decoded. Links are followed, but
each real folder and file is listed once (a symlink loop would list a class's images dozens
of times, in train and validation alike); the paths left out are logged. Images are
resized to ``image_size`` squares (default 64) while decoding, since their sizes differ.
Small folders are then held decoded as one uint8 array; big ones (over
``MAX_IN_MEMORY_BYTES`` decoded, or ``data.in_memory: false``) keep paths and are decoded
again each epoch by DataLoader workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from hpo.errors import TrainingError
from hpo.training.raw import Part, RawDataset

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 64
MAX_IN_MEMORY_BYTES = 2 * 1024**3  # decoded uint8 pixels; above this, stream from disk
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp"
)
SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}

T = TypeVar("T")


def decode_image(path: str, size: int, channels: int) -> np.ndarray:
    """uint8 (channels, size, size): the one decoding used for checks, memory and streaming."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft(img.mode, (size, size))  # decode at a reduced scale, still >= size
        resized = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        a = np.asarray(resized, dtype=np.uint8)
    return a[None].copy() if channels == 1 else np.ascontiguousarray(a.transpose(2, 0, 1))


class ImageTooLarge(ValueError):
    """An image claims more pixels than PIL's MAX_IMAGE_PIXELS (a decompression bomb)."""


def _header(path: str) -> str:
    """The image's mode, after PIL's structural check; raises for a file PIL cannot read."""
    from PIL import Image

    with Image.open(path) as img:
        _refuse_bomb(img, Image.MAX_IMAGE_PIXELS)
        mode = img.mode
        img.verify()
    return mode


def _refuse_bomb(img: Any, limit: int | None) -> None:
    """PIL refuses images over twice ``limit`` pixels but only warns below that, and decoding
    allocates the whole image (a 100-byte PNG claiming 10000x10000 pixels: 400 MB, in up to
    32 threads at once). JPEGs are exempt: they are decoded at a reduced scale (``draft``)."""
    width, height = img.size
    if limit and img.format != "JPEG" and width * height > limit:
        raise ImageTooLarge(f"claims {width}x{height} pixels, over PIL's MAX_IMAGE_PIXELS of {limit} "
                            "(a decompression bomb?)")


def _parallel(fn: Callable[[str], T], paths: Sequence[str]) -> list[T | Exception]:
    """``fn`` over ``paths`` in threads (PIL releases the GIL while decoding); errors returned."""

    def safe(p: str) -> T | Exception:
        try:
            return fn(p)
        except Exception as e:  # any failure means "unreadable": corrupt, truncated, not an image
            return e

    workers = min(32, os.cpu_count() or 1)
    if len(paths) < 64 or workers == 1:
        return [safe(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(safe, paths))


class _Seen:
    """Every folder and file listed so far, by identity (device, inode): a symlink loop
    (``a/loop -> .``), a link back up the tree, a class or split linked to another, or a
    symlinked or hard-linked image would otherwise list the same file many times, under
    several labels, or in both train and validation. ``repeats``: path -> what it repeats."""

    def __init__(self) -> None:
        self._first: dict[tuple[int, int], str] = {}
        self.repeats: dict[str, str] = {}

    def first_visit(self, path: str) -> bool:
        """True the first time ``path``'s file or folder is met; a path that cannot be
        stat-ed (a broken link) counts as new, to be reported unreadable later."""
        try:
            st = os.stat(path)
        except OSError:
            return True
        first = self._first.setdefault((st.st_dev, st.st_ino), path)
        if first != path:
            self.repeats[path] = first
        return first == path


def _images_in(folder: str, seen: _Seen) -> list[str]:
    """Image files under the class folder ``folder`` (claimed in ``seen`` already), following
    links to folders but listing each real folder and file once (see ``_Seen``)."""
    if folder in seen.repeats:  # the class folder itself leads to one listed before
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in sorted(dirnames)
                       if not d.startswith(".") and seen.first_visit(os.path.join(dirpath, d))]
        out += [
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
            and seen.first_visit(os.path.join(dirpath, f))
        ]
    return out


def _log_repeats(path: str, repeats: dict[str, str]) -> None:
    if repeats:
        shown = [f"  {p} (same as {first})" for p, first in list(repeats.items())[:20]]
        more = [f"  ... and {len(repeats) - 20} more"] if len(repeats) > 20 else []
        log.warning("%s: left out %d path(s) that lead to files or folders already listed "
                    "(symlink loops, links or hard links), so each image counts once:\n%s",
                    path, len(repeats), "\n".join(shown + more))


def _subdirs(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _layout(path: str) -> dict[str, str]:
    """split -> folder of class folders."""
    if not os.path.isdir(path):
        raise TrainingError(
            f"data.path {path!r} is not a directory (expected one sub-folder per class)"
        )
    subdirs = _subdirs(path)
    found = {
        split: next((d for d in subdirs if d.lower() in names), None)
        for split, names in SPLIT_DIRS.items()
    }
    if found["train"] is None:
        if found["val"] or found["test"]:
            raise TrainingError(f"{path} has {found['val'] or found['test']}/ but no train/ folder")
        return {"train": path}
    others = [d for d in subdirs if d not in found.values()]
    if others:
        raise TrainingError(
            f"{path} mixes split folders (train/ ...) with other folders ({', '.join(others)}); "
            "use either train/ val/ test/ holding class folders, or class folders only"
        )
    return {s: os.path.join(path, d) for s, d in found.items() if d is not None}


def _scan(path: str) -> tuple[tuple[str, ...], dict[str, tuple[list[str], list[int]]]]:
    """Class names (from train/) and, per split, the image paths and labels."""
    layout = _layout(path)
    class_names = tuple(_subdirs(layout["train"]))
    if len(class_names) < 2:
        raise TrainingError(
            f"{layout['train']} holds {len(class_names)} class folder(s); "
            "an image_folder needs one sub-folder per class, at least 2"
        )
    files: dict[str, tuple[list[str], list[int]]] = {}
    # Across splits and classes (an image belongs to one of each); the folders themselves
    # first, so that a link inside one class to another class's folder, or up to the root,
    # is a repeat wherever the walk meets it.
    seen = _Seen()
    for folder in [path, *layout.values()]:
        seen.first_visit(folder)
    for folder in layout.values():
        for name in class_names:
            seen.first_visit(os.path.join(folder, name))
    for split, folder in layout.items():
        extra = sorted(set(_subdirs(folder)) - set(class_names))
        if extra:
            raise TrainingError(f"{folder} has classes that train/ lacks: {', '.join(extra)}")
        paths, labels = [], []
        for label, name in enumerate(class_names):
            class_folder = os.path.join(folder, name)
            found = _images_in(class_folder, seen)
            if not found and split == "train":
                raise TrainingError(f"class folder {class_folder} holds no images" + _own(class_folder, seen))
            paths += found
            labels += [label] * len(found)
        linked = [folder, *(os.path.join(folder, name) for name in class_names)]
        if not paths and split != "train" and any(f in seen.repeats for f in linked):
            raise TrainingError(f"{folder} holds only images already listed under {layout['train']} "
                                "(links to the same files): a split needs images of its own")
        files[split] = (paths, labels)
    _log_repeats(path, seen.repeats)
    return class_names, files


def _own(class_folder: str, seen: _Seen) -> str:
    """Why a class folder that leads to images holds none: they were listed already."""
    first = seen.repeats.get(class_folder)
    return f" of its own (it leads to {first}, already listed)" if first else ""


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {e}".strip().rstrip(":")


def _channels(paths: Sequence[str], skipped: dict[str, str]) -> int:
    """1 when every readable image is grayscale, else 3; files PIL cannot read go to ``skipped``."""
    modes = _parallel(_header, paths)
    for p, m in zip(paths, modes):
        if isinstance(m, Exception):
            skipped[p] = _reason(m)
    good_modes = [m for m in modes if not isinstance(m, Exception)]
    return 1 if good_modes and all(m in _GRAY_MODES for m in good_modes) else 3


def _decode_all(
    paths: Sequence[str], size: int, channels: int, in_memory: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """(pixels, per path: None | pixel sums | the error). In memory, image i of ``paths`` is
    written into row i of one preallocated array, so the pixels are held once; streamed, only
    each image's sums are kept, for the statistics."""
    row = {p: i for i, p in enumerate(paths)}
    pixels = np.empty((len(paths) if in_memory else 0, channels, size, size), dtype=np.uint8)

    def decode(p: str) -> Any:
        a = decode_image(p, size, channels)
        if in_memory:
            pixels[row[p]] = a
            return None
        x = a.reshape(channels, -1).astype(np.float64) / 255
        return np.stack([x.sum(axis=1), np.square(x).sum(axis=1)])  # (2, C)

    return pixels, dict(zip(paths, _parallel(decode, paths)))


def load_folder(*, path: str | None, image_size: int | None, in_memory: bool | None) -> RawDataset:
    """The folder's images, decoded and checked once; see the module's docstring."""
    if not path:
        raise TrainingError("image_folder needs data.path: the directory of class folders")
    size = image_size or DEFAULT_IMAGE_SIZE
    class_names, files = _scan(path)
    all_paths = [p for paths, _ in files.values() for p in paths]
    skipped: dict[str, str] = {}
    channels = _channels(all_paths, skipped)
    n_ok = len(all_paths) - len(skipped)
    if in_memory is None:
        in_memory = n_ok * channels * size * size <= MAX_IN_MEMORY_BYTES

    todo = [p for p in all_paths if p not in skipped]
    pixels, results = _decode_all(todo, size, channels, in_memory)
    for p, r in results.items():
        if isinstance(r, Exception):
            skipped[p] = _reason(r)
    row = {p: i for i, p in enumerate(todo)}

    parts = {}
    for split, (paths, labels) in files.items():
        keep = [i for i, p in enumerate(paths) if p not in skipped]
        y = np.asarray([labels[i] for i in keep], dtype=np.int64)
        kept = [paths[i] for i in keep]
        if in_memory:
            parts[split] = Part(pixels[[row[p] for p in kept]], y)
        else:
            sums = np.stack([results[p] for p in kept]) if kept else np.zeros((0, 2, channels))
            parts[split] = Part(np.asarray(kept, dtype=object), y, pixel_sums=sums)
        counts = np.bincount(y, minlength=len(class_names)).tolist()
        log.info("%s %s: %d images, per class %s", path, split, len(y), dict(zip(class_names, counts)))
    return RawDataset(
        parts=parts,
        class_names=class_names,
        shape=(channels, size, size),
        scale=255.0,
        skipped=skipped,
    )
