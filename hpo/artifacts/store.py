"""Where a study's artifacts (plots, weights, confusion matrices) live, recorded in the study.

Optuna's artifact API stores the files; it does not record which store a study used, so
``hpo study create`` writes the location into the study and every worker, report and the
dashboard opens the same store from there.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.errors import HpoError, UsageError
from hpo.storage.urls import StorageTarget
from hpo.study.attrs import (
    ARTIFACT_STORE,
    ARTIFACTS,
    CHECKPOINT,
    CHECKPOINT_SUPERSEDED,
    RESUME_FROM,
    StudyRecord,
)

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


# -- a deleted study's files ---------------------------------------------------------------
#
# Optuna's stores are flat (one file per artifact id, random names; checkpoints are named by
# trial number, not study): a study's files are known only from its records. So they are
# listed from the study before it is deleted, and a store that cannot be reached stops the
# deletion, since afterwards nothing would say which files were the study's.


@dataclass(frozen=True)
class StudyArtifacts:
    """The files a study's records name in its artifact store."""

    location: dict[str, str] | None  # None: the study recorded no store (made before artifacts)
    ids: frozenset[str]  # this study's alone: removed with it
    shared: dict[str, frozenset[str]]  # other study -> the files it names too (a copy): kept

    @property
    def where(self) -> str:
        return describe(self.location) if self.location else "no artifact store"

    @property
    def n_shared(self) -> int:
        return len(frozenset().union(*self.shared.values())) if self.shared else 0


@dataclass(frozen=True)
class RemovedArtifacts:
    files: int
    bytes: int
    missing: int  # recorded, but no longer in the store (removed by hand, a lost upload)


def recorded_artifact_ids(study: Study) -> set[str]:
    """Every file of ``study``'s store that its records name: Optuna's uploads (curves,
    confusion matrices, weights, anything uploaded through the dashboard), listed by
    Optuna's API for the study and each trial, hpo's ``artifacts`` attribute beside them, and
    the checkpoints, which hpo writes without an upload record (hpo.worker.checkpoints)."""
    from optuna.artifacts import get_all_artifact_meta

    from hpo.storage.optuna_internals import storage_of

    storage = storage_of(study)
    ids = {meta.artifact_id for meta in get_all_artifact_meta(study)}
    for trial in study.get_trials(deepcopy=False):
        ids.update(meta.artifact_id for meta in get_all_artifact_meta(trial, storage=storage))
        ids.update(_attr_ids(trial.user_attrs))
    return ids


def _attr_ids(attrs: dict[str, Any]) -> set[str]:
    files = attrs.get(ARTIFACTS)
    named = list(files.values()) if isinstance(files, dict) else []
    named += [attrs.get(key) for key in (CHECKPOINT, CHECKPOINT_SUPERSEDED, RESUME_FROM)]
    return {value for value in named if isinstance(value, str) and value}


def study_artifacts(study: Study, others: Iterable[Study]) -> StudyArtifacts:
    """What deleting ``study`` may remove. ``others``: the storage's other studies; a file
    one of them names too (``optuna.copy_study`` copies the records, not the files) stays.
    A copy in another storage is not among ``others``: its files are removed (no manifest
    of copies is kept; ``hpo study delete`` warns, --keep-artifacts keeps them)."""
    location = study_location(study)
    if location is None:
        return StudyArtifacts(None, frozenset(), {})
    ids = recorded_artifact_ids(study)
    shared: dict[str, frozenset[str]] = {}
    for other in others:
        if study_location(other) == location:
            common = ids & recorded_artifact_ids(other)
            if common:
                shared[other.study_name] = frozenset(common)
    kept = frozenset().union(*shared.values()) if shared else frozenset()
    return StudyArtifacts(location, frozenset(ids - kept), shared)


def _reachable(location: dict[str, str], study_name: str) -> ArtifactStore:
    """The open store, or an HpoError saying why not, before anything is deleted. Unlike
    ``open_store``, never creates a missing directory: it may be a share not mounted."""
    if location["kind"] == "file" and not Path(location["path"]).is_dir():
        why = f"{location['path']} does not exist (moved, deleted or not mounted?)"
    else:
        try:
            return open_store(location)
        except HpoError as exc:
            why = str(exc)
    raise HpoError(f"cannot remove the artifacts of study {study_name!r}: {why}; nothing was deleted "
                   "(add --keep-artifacts to delete the study alone)")


def remove_artifacts(artifacts: StudyArtifacts, study_name: str) -> RemovedArtifacts:
    """Remove the study's own files, measuring each first; files already gone are counted
    apart. Raises before removing anything when the store cannot be reached, and stops at
    the first error after (the caller then keeps the study: running again finishes)."""
    assert artifacts.location is not None
    removed = size = missing = 0
    if not artifacts.ids:
        return RemovedArtifacts(0, 0, 0)
    store = _reachable(artifacts.location, study_name)
    for artifact_id in sorted(artifacts.ids):
        try:
            found = _size(store, artifacts.location, artifact_id)
            if found is not None:
                store.remove(artifact_id)
        except Exception as exc:  # an S3 outage, missing credentials, a read-only share
            done = f"removed {removed} of its {len(artifacts.ids)} files" if removed else "nothing was deleted"
            raise HpoError(f"cannot remove the artifacts of study {study_name!r} from {describe(artifacts.location)} "
                           f"({type(exc).__name__}: {exc}); {done}, the study is kept (run again to finish, "
                           "or add --keep-artifacts to delete the study alone)") from exc
        if found is None:
            missing += 1
        else:
            removed, size = removed + 1, size + found
    return RemovedArtifacts(removed, size, missing)


def _size(store: ArtifactStore, location: dict[str, str], artifact_id: str) -> int | None:
    """Bytes of one stored file, None if it is not there. Optuna's stores have no size call:
    a stat for a directory, a HEAD request for S3 (not a download)."""
    if location["kind"] == "file":
        base = Path(location["path"]).resolve()
        path = (base / artifact_id).resolve()
        if base not in path.parents:  # an id that points outside the store is not its file
            return None
        return path.stat().st_size if path.is_file() else None
    s3: Any = store  # a Boto3ArtifactStore: its client and bucket are public attributes
    try:
        head = s3.client.head_object(Bucket=s3.bucket, Key=artifact_id)
    except s3.client.exceptions.ClientError as exc:  # botocore's, as every boto3 client names it
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return None
        raise
    return int(head["ContentLength"])
