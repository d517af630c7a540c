"""A running run's heartbeat: the proof that the worker holding its claims is alive.

While a run executes, a thread of the process running it writes ``heartbeat_at`` into the run's row
every sixth of ``IMPROVEMENT_WORKER_GRACE_SECONDS``. When that process dies (``kill -9``, OOM, a lost
machine) the heartbeat stops; the reaper (``claims.reap_expired_leases``, also run by every claim)
then gives the run's sessions back and fails the run after the grace period, without waiting for the
claims' lease (docs/architecture.md, "The claim/lease protocol").
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

_BEAT = "UPDATE improvement_improvementrun SET heartbeat_at = clock_timestamp() WHERE id = %s AND status = 'running'"


def worker_identity() -> str:
    """This process as the holder of a run's claims: host and pid."""
    return f"{socket.gethostname()} pid {os.getpid()}"[:200]


def beat_interval() -> float:
    """Seconds between two heartbeats: a sixth of the grace period, at least one second."""
    return max(1.0, settings.IMPROVEMENT_WORKER_GRACE_SECONDS / 6)


def beat_once(*, run_id: int) -> None:
    """Record that the run's worker is alive now (on the calling thread's connection)."""
    with connection.cursor() as cursor:
        cursor.execute(_BEAT, [run_id])


def _beat_until(stop: threading.Event, run_id: int) -> None:
    try:
        while not stop.wait(beat_interval()):
            try:
                beat_once(run_id=run_id)
            except Exception:  # noqa: BLE001  a missed beat is retried; the run itself reports real outages
                logger.warning("run %s: heartbeat failed", run_id, exc_info=True)
    finally:
        connection.close()  # this thread's own connection


@contextmanager
def heartbeat(*, run_id: int):
    """Beat for ``run_id`` on a background thread while the block runs."""
    stop = threading.Event()
    thread = threading.Thread(target=_beat_until, args=(stop, run_id), name=f"run-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
