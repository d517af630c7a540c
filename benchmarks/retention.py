"""Clickstream retention today: the batched DELETE on 10M shown results, against dropping a table of the same rows.

Runs on its own: an embedded PostgreSQL under ``.studio/bench-retention`` (wiped per run, stopped at the end),
migrations, then a clickstream made inside PostgreSQL (``generate_series``, no client round trips):
``--sessions`` sessions (default 1,000,000; ``--quick`` 100,000) with 10 shown results each and a click on
15 % of them, each session holding a 384-d query vector; half were received past ``CLICKSTREAM_RETENTION_DAYS``.
It times ``clickstream.services.purge_expired_sessions`` (the hourly retention task's service: batches of
10,000 sessions in their own transactions) deleting that half, with the WAL it wrote and the tables' size
after it (a DELETE leaves dead rows for VACUUM; the files do not shrink). As the alternative that
docs/architecture.md ("Scale") designs — time partitions, retention by dropping the oldest — it then copies
the surviving shown results into a table of their own and times ``DROP TABLE`` of it.

    .venv/bin/python benchmarks/retention.py [--quick] [--sessions N]

Last line: ``{"shown_results", "deleted_shown_results", "delete_s", "delete_rows_per_s", "delete_wal_mb",
"drop_s", "delete_to_drop_ratio", ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: only benchmarks/ is on the path
    sys.path.insert(0, str(ROOT))
from benchmarks import _stack  # noqa: E402

DATA_DIR = ROOT / ".studio" / "bench-retention"
RESULTS_PER_SESSION = 10
CLICK_SHARE = 0.15
DIM = 384

_MAKE_SESSIONS = """
INSERT INTO clickstream_session (session_id, user_id, search_query, query_vector, search_meta, fingerprint,
    created_at, received_at, is_irrelevant, improvement_status, improvement_detail, attempts)
SELECT 's' || n, 'u' || (n %% 50000), 'query ' || (n %% 5000), %(vector)s::vector, '{}'::jsonb, md5(n::text),
       received, received, false, 'done', '', 1
FROM generate_series(1, %(sessions)s) AS n,
     LATERAL (SELECT now() - make_interval(days => CASE WHEN n %% 2 = 0 THEN %(old_days)s ELSE 1 END)
                     + make_interval(secs => n %% 86400)) AS t(received)
"""
_MAKE_SHOWN = """
INSERT INTO clickstream_shownresult (session_id, position, object_id, score, meta)
SELECT s.id, p, 'obj-' || ((s.id * 7 + p * 13) %% 100000), 0.5, '{}'::jsonb
FROM clickstream_session s, generate_series(0, %(per)s - 1) AS p
"""
_MAKE_EVENTS = """
INSERT INTO clickstream_event (session_id, event_id, object_id, event_type, created_at, received_at, meta)
SELECT s.id, 'e1', 'obj-' || ((s.id * 7) %% 100000), 'click', s.received_at, s.received_at, '{}'::jsonb
FROM clickstream_session s WHERE random() < %(share)s
"""
_SIZES = (
    "SELECT pg_total_relation_size('clickstream_session') + pg_total_relation_size('clickstream_shownresult')"
    " + pg_total_relation_size('clickstream_event')"
)


def build_clickstream(cursor, *, sessions: int, old_days: int) -> dict:
    """Sessions, shown results and events made server-side; returns the row counts."""
    vector = "[" + ",".join(["0.05"] * DIM) + "]"
    started = time.perf_counter()
    cursor.execute(_MAKE_SESSIONS, {"sessions": sessions, "vector": vector, "old_days": old_days})
    cursor.execute(_MAKE_SHOWN, {"per": RESULTS_PER_SESSION})
    cursor.execute(_MAKE_EVENTS, {"share": CLICK_SHARE})
    for table in ("clickstream_session", "clickstream_shownresult", "clickstream_event"):
        cursor.execute(f"VACUUM ANALYZE {table}")
    cursor.execute("SELECT (SELECT count(*) FROM clickstream_shownresult), (SELECT count(*) FROM clickstream_event)")
    shown, events = cursor.fetchone()
    return {"sessions": sessions, "shown_results": shown, "events": events, "build_s": time.perf_counter() - started}


def wal_position(cursor) -> int:
    cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    return int(cursor.fetchone()[0])


def time_retention(cursor, *, retention_days: int) -> dict:
    """The retention service over the expired half, batch by batch until nothing is left."""
    from clickstream import services

    wal_before, started = wal_position(cursor), time.perf_counter()
    totals = {"sessions": 0, "shown_results": 0, "events": 0, "batches": 0}
    while True:
        deleted = services.purge_expired_sessions(retention_days=retention_days, max_batches=10)
        for name in totals:
            totals[name] += deleted[name]
        if deleted["batches"] < 10:
            break
    seconds = time.perf_counter() - started
    return {**totals, "seconds": seconds, "wal_bytes": wal_position(cursor) - wal_before}


def time_partition_drop(cursor) -> dict:
    """The surviving shown results copied into a table of their own (a stand-in for one partition), then dropped."""
    cursor.execute("CREATE TABLE retention_partition AS SELECT * FROM clickstream_shownresult")
    cursor.execute("SELECT count(*) FROM retention_partition")
    rows = cursor.fetchone()[0]
    started = time.perf_counter()
    cursor.execute("DROP TABLE retention_partition")
    return {"rows": rows, "seconds": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 sessions (1M shown results)")
    parser.add_argument("--sessions", type=int, default=None)
    args = parser.parse_args()
    sessions = args.sessions or (100_000 if args.quick else 1_000_000)

    embedded = _stack.fresh_embedded_in_process(DATA_DIR)
    embedded.start_servers()
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        retention_days = settings.CLICKSTREAM_RETENTION_DAYS
        with connection.cursor() as cursor:
            print(f"making {sessions:,} sessions × {RESULTS_PER_SESSION} shown results …", file=sys.stderr, flush=True)
            built = build_clickstream(cursor, sessions=sessions, old_days=retention_days + 1)
            cursor.execute(_SIZES)
            bytes_before = cursor.fetchone()[0]
            print(f"  made in {built['build_s']:.0f} s; deleting the expired half …", file=sys.stderr, flush=True)
            deleted = time_retention(cursor, retention_days=retention_days)
            cursor.execute(_SIZES)
            bytes_after = cursor.fetchone()[0]
            dropped = time_partition_drop(cursor)
        result = {
            "sessions": sessions,
            "shown_results": built["shown_results"],
            "events": built["events"],
            "deleted_sessions": deleted["sessions"],
            "deleted_shown_results": deleted["shown_results"],
            "deleted_events": deleted["events"],
            "delete_batches": deleted["batches"],
            "delete_s": round(deleted["seconds"], 1),
            "delete_rows_per_s": round(deleted["shown_results"] / deleted["seconds"]),
            "delete_wal_mb": round(deleted["wal_bytes"] / 2**20, 1),
            "tables_mb_before": round(bytes_before / 2**20),
            "tables_mb_after_delete": round(bytes_after / 2**20),
            "drop_rows": dropped["rows"],
            "drop_s": round(dropped["seconds"], 3),
            "delete_to_drop_ratio": round(deleted["seconds"] / max(dropped["seconds"], 1e-6)),
            "build_s": round(built["build_s"], 1),
            "retention_days": retention_days,
        }
        print(json.dumps(result))
        return 0
    finally:
        embedded.stop_started()


if __name__ == "__main__":
    sys.exit(main())
