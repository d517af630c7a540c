"""Click analytics for the dashboard, over the latest ``WINDOW_SESSIONS`` sessions only (the ``received_at``
index picks them): a page load never scans a big table, whatever its size.

A click is an event whose type has a positive learning weight, each object once per session
(``clickstream.experiments.credited_event_types``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from clickstream.experiments import credited_event_types

WINDOW_SESSIONS = 20_000
POSITIONS = 20
TOP_QUERIES = 10

_WINDOW = """
recent AS (SELECT id, search_query FROM clickstream_session ORDER BY received_at DESC LIMIT %(window)s),
clicked AS (
    SELECT DISTINCT session_id, object_id FROM clickstream_event
    WHERE session_id IN (SELECT id FROM recent) AND event_type = ANY(%(types)s)
)"""

_BY_POSITION = f"""
WITH {_WINDOW}
SELECT r.position, count(*), count(c.object_id),
       count(c.object_id) FILTER (WHERE r.meta ->> 'personalized' = 'true'),
       count(c.object_id) FILTER (
           WHERE r.meta ->> 'shared' = 'true' AND r.meta ->> 'personalized' IS DISTINCT FROM 'true')
FROM clickstream_shownresult r JOIN recent s ON s.id = r.session_id
LEFT JOIN clicked c ON c.session_id = r.session_id AND c.object_id = r.object_id
WHERE r.position < %(positions)s
GROUP BY r.position ORDER BY r.position
"""

_SESSIONS = f"""
WITH {_WINDOW}
SELECT lower(regexp_replace(btrim(s.search_query), '\\s+', ' ', 'g')) AS query, count(*),
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM clicked c WHERE c.session_id = s.id))
FROM recent s GROUP BY 1 ORDER BY count(*) DESC
"""


@dataclass(frozen=True)
class PositionStats:
    """Results shown at one position (0-based) and the clicks on them, by what ranked them."""

    position: int
    shown: int
    clicks: int
    personalized_clicks: int  # ranked by the user's copy
    shared_clicks: int  # moved by the shared tier (and not a copy)

    @property
    def ctr(self) -> float:
        """Clicks per result shown at this position."""
        return self.clicks / self.shown if self.shown else 0.0


@dataclass(frozen=True)
class QueryStats:
    """One normalized query: its sessions and the share with at least one click."""

    query: str
    sessions: int
    clicked_sessions: int

    @property
    def ctr(self) -> float:
        """Sessions with a click per session."""
        return self.clicked_sessions / self.sessions if self.sessions else 0.0


@dataclass(frozen=True)
class ClickAnalytics:
    """What the dashboard shows of the latest sessions."""

    sessions: int
    abandoned: int  # sessions without a click
    positions: list[PositionStats]
    top_queries: list[QueryStats]

    @property
    def clicks(self) -> int:
        """Clicks at the positions counted."""
        return sum(p.clicks for p in self.positions)

    @property
    def clicks_by_source(self) -> dict[str, int]:
        """Clicks on results a user's copy ranked, the shared tier moved, or neither (the originals)."""
        personalized = sum(p.personalized_clicks for p in self.positions)
        shared = sum(p.shared_clicks for p in self.positions)
        return {"personalized": personalized, "shared": shared, "original": self.clicks - personalized - shared}


def click_analytics(*, window: int = WINDOW_SESSIONS) -> ClickAnalytics:
    """Click-through by position, abandonment, clicks by source and the top queries of the latest sessions."""
    params = {"window": window, "types": credited_event_types(), "positions": POSITIONS}
    with connection.cursor() as cursor:
        cursor.execute(_BY_POSITION, params)
        positions = [PositionStats(*map(int, row)) for row in cursor.fetchall()]
        cursor.execute(_SESSIONS, params)
        queries = [QueryStats(query or "", int(n), int(clicked)) for query, n, clicked in cursor.fetchall()]
    sessions = sum(q.sessions for q in queries)
    abandoned = sessions - sum(q.clicked_sessions for q in queries)
    top = [q for q in queries if q.query][:TOP_QUERIES]
    return ClickAnalytics(sessions=sessions, abandoned=abandoned, positions=positions, top_queries=top)
