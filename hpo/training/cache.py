"""An on-disk cache of a dataset's prepared tuning splits, so that a worker started again on
the same data reads a few arrays instead of importing scikit-learn, parsing the source files
and splitting them again.

What is cached: the train and validation pixels (in the source's dtype, before resizing and
augmentation, which the batch sources apply on the device) and labels, the class names and
the training split's statistics. Never the test split: tuning cannot reach it from here.

Where: ``$HPO_CACHE_DIR/splits``, else ``$XDG_CACHE_HOME/hpo/splits``, else
``~/.cache/hpo/splits`` (the XDG rule; platformdirs would say the same on Linux, and is not a
dependency for two lines). ``HPO_CACHE_DIR=`` (set, empty) turns the cache off.

One file per data config: its name is a hash of what chooses the examples (dataset name,
loader arguments with ``root`` made absolute, classes, fractions, split seed), and its
content records the rest of what decides them: the source files' paths, sizes, mtimes and
ctimes, the versions of scikit-learn (the split), torchvision (parsing) and numpy, a digest
of hpo's own data code and the format version. An entry whose record differs is replaced by
the next write under the same name, so changing the files or upgrading keeps one file per
config. Only datasets whose source files are known here are cached (digits and torchvision's);
image folders are not (thousands of files to check, and streamed ones are not in memory).

Writes go to a temporary file in the same folder and are renamed over the entry
(``os.replace``), so concurrent workers read the old entry or the new one, never half of one;
an unreadable entry (truncated, foreign, a failed CRC) is ignored and rewritten. Arrays are
read with ``allow_pickle=False``: a cache file never runs code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from hpo.training.torchvision_data import SOURCES

__all__ = ["CACHE_DIR_ENV", "Entry", "Prepared", "cache_dir", "entry"]

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "HPO_CACHE_DIR"
# Bump when the file's layout or the meaning of its arrays changes.
FORMAT_VERSION = 1
SPLITS = ("train", "val")
# torchvision's base_folder of each CIFAR class (tests check them against torchvision).
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# The modules whose code decides what a cached entry holds; a change to any of them (an
# edited checkout, not only a new release) makes every entry stale.
_CODE = ("cache.py", "data.py", "datasets.py", "raw.py", "torchvision_data.py")
# A temporary file this old was left by a killed writer (a write takes seconds at most).
_STALE_TEMP_S = 3600.0


@dataclass(frozen=True, eq=False)
class Prepared:
    """A dataset's tuning splits as the batch sources take them: what a worker needs from the
    source, without the source."""

    x: dict[str, np.ndarray]  # "train", "val": (N, C, H, W) in the source's dtype
    y: dict[str, np.ndarray]  # int64 (N,), labels after the class subset's renumbering
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the training split's pixels scaled to [0, 1]
    std: tuple[float, ...]
    shape: tuple[int, int, int]  # (C, H, W) of one stored image
    scale: float  # stored value of a white pixel
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable files: path -> reason

    def class_counts(self, split: str) -> list[int]:
        return np.bincount(self.y[split], minlength=len(self.class_names)).tolist()


def cache_dir() -> Path | None:
    """The cache's folder, or None when ``$HPO_CACHE_DIR`` is set to nothing (turned off)."""
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen is not None:
        return Path(chosen).expanduser() if chosen else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hpo"


def entry(name: str, loader_kwargs: dict[str, Any], selection: dict[str, Any]) -> Entry | None:
    """The cache entry of dataset ``name`` read with ``loader_kwargs`` (``root`` absolute) and
    split by ``selection`` (classes, fractions, seed); None when the cache is off or the
    dataset's source files are not known here."""
    folder = cache_dir()
    if folder is None or _source_files(name, loader_kwargs) is None:
        return None
    config = {"name": name, "loader": loader_kwargs, "selection": selection}
    digest = hashlib.sha256(_canonical(config).encode()).hexdigest()[:24]
    stem = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{digest}"
    return Entry(folder / "splits" / f"{stem}.npz", config)


@dataclass(frozen=True)
class Entry:
    path: Path
    config: dict[str, Any]

    def identity(self) -> dict[str, Any]:
        """Everything that decides the entry's content, as it is now on this machine."""
        files = _source_files(self.config["name"], self.config["loader"]) or []
        return {
            **self.config,
            "files": [_file_identity(f) for f in files],
            "libraries": _versions(),
            "code": _code_digest(),
            "format": FORMAT_VERSION,
        }

    def read(self) -> Prepared | None:
        """The cached splits, or None when there are none, they are stale, or unreadable."""
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"][()]))
                if meta.get("identity") != json.loads(_canonical(self.identity())):
                    log.info("dataset cache %s is stale: it is rewritten", self.path)
                    return None
                prepared = _from_arrays(meta, {k: z[k] for k in z.files if k != "meta"})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            log.warning("ignoring unreadable dataset cache %s (%s): it is rewritten", self.path, e)
            return None
        log.debug("dataset splits read from %s", self.path)
        return prepared

    def write(self, prepared: Prepared) -> None:
        """Store ``prepared`` atomically; a cache that cannot be written is only a warning."""
        meta = {
            "identity": self.identity(),
            "class_names": list(prepared.class_names),
            "mean": list(prepared.mean),
            "std": list(prepared.std),
            "shape": list(prepared.shape),
            "scale": prepared.scale,
            "skipped": prepared.skipped,
        }
        arrays = {f"{s}_{a}": (prepared.x if a == "x" else prepared.y)[s] for s in SPLITS for a in "xy"}
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(self.path)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=np.array(_canonical(meta)), **arrays)  # type: ignore[arg-type]
            # No fsync: an entry lost to a crash reads as unreadable and is rewritten.
            os.replace(tmp, self.path)
        except OSError as e:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            log.warning("cannot write the dataset cache %s (%s); %s= turns it off",
                        self.path, e, CACHE_DIR_ENV)


def _from_arrays(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Prepared:
    """The entry's content, checked for the shapes the batch sources rely on (ValueError)."""
    shape = tuple(int(v) for v in meta["shape"])
    class_names = tuple(str(n) for n in meta["class_names"])
    x = {s: arrays[f"{s}_x"] for s in SPLITS}
    y = {s: arrays[f"{s}_y"] for s in SPLITS}
    for s in SPLITS:
        if x[s].ndim != 4 or x[s].shape[1:] != shape or y[s].shape != (len(x[s]),):
            raise ValueError(f"{s} arrays of shapes {x[s].shape} and {y[s].shape}")
        if y[s].dtype != np.int64 or len(y[s]) == 0 or y[s].min() < 0 or y[s].max() >= len(class_names):
            raise ValueError(f"{s} labels outside 0..{len(class_names) - 1}")
    if len(meta["mean"]) != shape[0] or len(meta["std"]) != shape[0]:
        raise ValueError("statistics of another number of channels")
    return Prepared(
        x=x, y=y, class_names=class_names,
        mean=tuple(float(v) for v in meta["mean"]), std=tuple(float(v) for v in meta["std"]),
        shape=(shape[0], shape[1], shape[2]), scale=float(meta["scale"]),
        skipped={str(k): str(v) for k, v in meta["skipped"].items()},
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _source_files(name: str, loader_kwargs: dict[str, Any]) -> list[str] | None:
    """The files dataset ``name`` is read from (those there now), or None: not known here."""
    if name == "digits":
        spec = find_spec("sklearn")  # its location, without importing it
        if spec is None or not spec.submodule_search_locations:
            return None
        return [os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")]
    if name in SOURCES:
        source = SOURCES[name]
        sub = source.cls_name if source.family == "mnist" else CIFAR_FOLDERS[name]
        folder = os.path.join(loader_kwargs["root"], sub)  # MNIST's raw/ and processed/ alike
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs)
    return None


def _file_identity(path: str) -> list[Any]:
    """Path, size, mtime and ctime: a changed, replaced or restored file differs in one."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


@functools.cache
def _versions() -> dict[str, str | None]:
    def installed(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {"numpy": np.__version__, "scikit-learn": installed("scikit-learn"),
            "torchvision": installed("torchvision")}


@functools.cache
def _code_digest() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for module in _CODE:
        h.update((here / module).read_bytes())
    return h.hexdigest()


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of this entry left by writers killed mid-write (bounded disk use)."""
    cutoff = time.time() - _STALE_TEMP_S
    for tmp in path.parent.glob(f".{path.stem}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
