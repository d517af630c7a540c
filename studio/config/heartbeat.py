"""Celery worker heartbeat, read by ``GET /api/v1/health``.

A started worker writes ``{hostname: unix time}`` into the shared cache every
``HEARTBEAT_SECONDS``; health reports the workers seen within ``HEARTBEAT_STALE_SECONDS``.
"""

from __future__ import annotations

import threading
import time

from celery.signals import worker_ready, worker_shutdown

HEARTBEAT_SECONDS = 5
HEARTBEAT_STALE_SECONDS = 30
_CACHE_KEY = "celery-worker-heartbeats"
_stop = threading.Event()


def beat_once(hostname: str) -> None:
    """Record that ``hostname`` is alive now."""
    from django.core.cache import cache

    beats = cache.get(_CACHE_KEY) or {}
    now = time.time()
    beats = {name: ts for name, ts in beats.items() if now - ts < HEARTBEAT_STALE_SECONDS}
    beats[hostname] = now
    cache.set(_CACHE_KEY, beats, timeout=HEARTBEAT_STALE_SECONDS * 4)


def live_workers() -> list[str]:
    """Hostnames of workers that sent a heartbeat recently."""
    from django.core.cache import cache

    now = time.time()
    return sorted(name for name, ts in (cache.get(_CACHE_KEY) or {}).items() if now - ts < HEARTBEAT_STALE_SECONDS)


def _loop(hostname: str) -> None:
    while not _stop.is_set():
        try:
            beat_once(hostname)
        except Exception:  # noqa: BLE001, S110  a missing cache must not kill the worker
            pass
        _stop.wait(HEARTBEAT_SECONDS)


@worker_ready.connect
def _start_heartbeat(sender=None, **kwargs) -> None:
    hostname = getattr(sender, "hostname", "worker")
    threading.Thread(target=_loop, args=(hostname,), name="studio-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _stop_heartbeat(**kwargs) -> None:
    _stop.set()
