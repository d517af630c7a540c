"""Whether search uses learned ranking (``RankingSwitch``): read on every search, so cached in-process briefly."""

from __future__ import annotations

import threading
import time

from studio.catalogue.models import RankingSwitch

CACHE_SECONDS = 5.0  # a switch reaches every web process within this
_cache: dict[str, tuple[float, bool]] = {}
_lock = threading.Lock()


def learned_ranking_on() -> bool:
    """The latest switch's state (on when none was ever written), at most ``CACHE_SECONDS`` old."""
    now = time.monotonic()
    cached = _cache.get("state")
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    latest = RankingSwitch.objects.order_by("-changed_at", "-pk").values_list("learned_ranking", flat=True).first()
    state = True if latest is None else bool(latest)
    with _lock:
        _cache["state"] = (now, state)
    return state


def switch_learned_ranking(*, on: bool, by: str, reason: str = "") -> RankingSwitch:
    """Record a change of the switch (this process sees it at once, the others within ``CACHE_SECONDS``)."""
    change = RankingSwitch.objects.create(learned_ranking=on, changed_by=by[:150], reason=reason)
    forget_cached_state()
    return change


def forget_cached_state() -> None:
    """Drop this process's cached state (the next search reads the table)."""
    with _lock:
        _cache.clear()
