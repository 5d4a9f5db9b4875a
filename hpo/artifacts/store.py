"""Where a study's artifacts (plots, weights, confusion matrices) live, recorded in the study.

Optuna's artifact API stores the files; it does not record which store a study used, so
``hpo study create`` writes the location into the study and every worker, report and the
dashboard opens the same store from there.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from hpo.errors import HpoError, UsageError
from hpo.storage.urls import StorageTarget
from hpo.study.attrs import ARTIFACT_STORE, StudyRecord

if TYPE_CHECKING:
    from optuna import Study

    from hpo.storage.optuna_internals import ArtifactStore

DEFAULT_DIR = "hpo-artifacts"

_stores: weakref.WeakKeyDictionary[Study, ArtifactStore | None] = weakref.WeakKeyDictionary()  # study -> its store


def parse_location(location: str) -> dict[str, str]:
    """``s3://bucket/prefix`` or a directory (made absolute, so other processes agree)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://"):].partition("/")
        if not bucket:
            raise UsageError(f"artifact location {location!r} names no bucket (expected s3://BUCKET[/PREFIX])")
        return {"kind": "s3", "bucket": bucket, "prefix": prefix}
    if "://" in location:
        raise UsageError(f"unsupported artifact location {location!r} (expected a directory or s3://BUCKET)")
    return {"kind": "file", "path": str(Path(location).expanduser().resolve())}


def default_location(target: StorageTarget) -> dict[str, str]:
    """Beside the journal file for the embedded store; else in the current directory.

    With PostgreSQL and several machines, give ``--artifacts`` a shared directory or S3.
    """
    base = Path(target.url).expanduser().resolve().parent if target.kind == "journal" else Path.cwd()
    return {"kind": "file", "path": str(base / DEFAULT_DIR)}


def describe(location: dict[str, str]) -> str:
    if location["kind"] == "s3":
        return f"s3://{location['bucket']}/{location['prefix']}".rstrip("/")
    return location["path"]


def record_store(study: Study, location: dict[str, str]) -> None:
    study.set_user_attr(ARTIFACT_STORE, location)
    _stores.pop(study, None)


def study_location(study: Study) -> dict[str, str] | None:
    return StudyRecord.from_attrs(study.user_attrs).artifact_store


def open_store(location: dict[str, str]) -> ArtifactStore:
    """The Optuna artifact store for a recorded location."""
    from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore

    if location["kind"] == "file":
        os.makedirs(location["path"], exist_ok=True)
        return FileSystemArtifactStore(location["path"])
    try:
        import boto3  # noqa: F401  (optional: only S3 users need it)
    except ImportError:
        raise HpoError("the study's artifacts are on S3, which needs boto3: uv pip install boto3") from None
    return Boto3ArtifactStore(location["bucket"])


def study_store(study: Study) -> ArtifactStore | None:
    """The store recorded in ``study``, or None for studies created without one. Read once
    per study object: the location never changes, and every trial of a worker needs it."""
    if study not in _stores:
        location = study_location(study)
        _stores[study] = open_store(location) if location else None
    return _stores[study]
