"""Workers through PgBouncer in transaction pooling mode (tests/pgbouncer.py starts one)."""

from __future__ import annotations

import psycopg


def test_the_test_pgbouncer_pools_in_transaction_mode_and_writes_no_password(pgbouncer_server, pgbouncer_url,
                                                                             postgres_server):
    with psycopg.connect(pgbouncer_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    pools = [row for row in pgbouncer_server.show("POOLS") if row["database"] != "pgbouncer"]
    assert {row["pool_mode"] for row in pools} == {"transaction"}
    for path in pgbouncer_server.base_dir.iterdir():
        assert postgres_server.password not in path.read_text(errors="replace"), path
