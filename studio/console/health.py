"""Health report: database, pgvector, broker, Celery workers, pending sessions."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection

from improvement.selectors import ready_session_count


def check_database() -> dict:
    """Database reachability, the PostgreSQL server version and the pgvector extension version."""
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('server_version'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
            )
            postgres, pgvector = cursor.fetchone()
    except Exception as exc:  # noqa: BLE001  health reports, it does not raise
        return {"ok": False, "error": str(exc).splitlines()[0]}
    return {
        "ok": pgvector is not None,
        "postgresql": postgres.split()[0],
        "pgvector": pgvector,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        **({} if pgvector else {"error": "pgvector extension is not installed"}),
    }


def check_broker() -> dict:
    """Whether the Celery broker accepts a connection."""
    from studio.config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": str(exc).splitlines()[0]}
    return {"ok": True}


def check_workers() -> dict:
    """Celery workers that sent a heartbeat recently."""
    from studio.config.heartbeat import live_workers

    try:
        workers = live_workers()
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "workers": [], "error": str(exc).splitlines()[0]}
    return {"ok": bool(workers), "workers": workers}


PENDING_COUNT_CAP = 100_000


def pending_sessions() -> int | None:
    """Sessions waiting for improvement, counted up to ``PENDING_COUNT_CAP`` + 1 (so a backlog of
    millions costs health no more than a bounded partial-index scan); None if it cannot be read."""
    try:
        return ready_session_count(limit=PENDING_COUNT_CAP + 1)
    except Exception:  # noqa: BLE001
        return None


def check_interleaving() -> dict | None:
    """The interleaving guard (``clickstream.experiments.guard_status``) while the experiment runs; None when
    ``STUDIO_INTERLEAVE_FRACTION`` is 0. A tripped guard is a warning: search still answers."""
    if settings.STUDIO_INTERLEAVE_FRACTION <= 0:
        return None
    from clickstream.experiments import guard_status

    try:
        guard = guard_status()
    except Exception as exc:  # noqa: BLE001  health reports, it does not raise
        return {"ok": False, "error": str(exc).splitlines()[0]}
    from studio.catalogue.ranking_switch import learned_ranking_on

    keys = ("sessions", "wins", "losses", "ties", "win_rate", "p_value")
    report = {"ok": not guard["tripped"], **{key: guard[key] for key in keys}, "learned_ranking": learned_ranking_on()}
    if guard["tripped"]:
        report["warning"] = "the learned ranking loses the interleaving experiment significantly"
    return report


def health_report() -> tuple[bool, dict]:
    """(healthy, report). Healthy means the database and broker answer; workers are reported."""
    database = check_database()
    broker = check_broker()
    workers = check_workers()
    pending = pending_sessions() if database["ok"] else None
    report = {
        "status": "ok" if database["ok"] and broker["ok"] else "degraded",
        "database": database,
        "broker": broker,
        "workers": workers,
        "pending_sessions": min(pending, PENDING_COUNT_CAP) if pending is not None else None,
        "pending_sessions_capped": pending is not None and pending > PENDING_COUNT_CAP,
        "interleaving": check_interleaving() if database["ok"] else None,
        "metric": settings.STUDIO_METRIC,
        "embedding_dim": settings.STUDIO_EMBEDDING_DIM,
    }
    return database["ok"] and broker["ok"], report
