"""Closing what a one-shot call opened: a study's database connections.

An RDBStorage keeps a pool of connections open for as long as its engine lives, which for a
notebook that loads one study after another on PostgreSQL is until the kernel stops: each
call's pool stays, and the server's connection slots run out. Disposing the engine closes
the pooled connections; SQLAlchemy opens new ones if the study is used again, so a study
handed back to the caller still works after ``close_connections``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna import Study


def close_connections(study: Study) -> None:
    """Close the pooled database connections of ``study``'s storage (nothing for a journal
    file, which holds none)."""
    from optuna.storages import RDBStorage

    from hpo.storage.optuna_internals import storage_of, unwrap

    rdb = unwrap(storage_of(study), RDBStorage)
    if rdb is not None:
        rdb.engine.dispose()
