"""Where a command writes its results: the one check every ``--output`` goes through.

A typo in a folder name must not scatter results into a new tree of directories, and a file
where a folder is wanted (or the other way round) must be one clear error before any work is
done, not an ``IsADirectoryError`` after the study was read or a model trained.
"""

from __future__ import annotations

import os
from pathlib import Path

from hpo.errors import UsageError


def _check_parent(path: Path) -> None:
    """``path``'s folder exists, is a folder, and can be written: it is never created."""
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"cannot write {path}: the folder {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {path}: no permission to write in {parent}")


def check_output_file(path: Path) -> Path:
    """``path`` can be written as one file: not a directory, in a folder that exists."""
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a directory (give a file name inside it, or another name)")
    _check_parent(path)
    return path


def check_output_dir(path: Path) -> Path:
    """``path`` can hold a command's files: an existing directory, or a new one whose
    parent exists (only the last level is created, by ``make_output_dir``)."""
    if path.is_dir():
        return path
    if path.exists():
        raise UsageError(f"cannot write into {path}: it is a file, not a directory (give a directory)")
    _check_parent(path)
    return path


def make_output_dir(path: Path) -> Path:
    """``check_output_dir``, then create the directory if it is new."""
    check_output_dir(path).mkdir(exist_ok=True)
    return path
