"""Relevance judgments from stored clicks, for Quepid, OpenSearch's Search Relevance Workbench or
``manage.py evaluate`` (docs/architecture.md, "Online proof").

Per (query, object), over sessions with a query text received since a moment: how often it was **shown**, how
often **examined** (shown at or above the session's lowest click: the cascade assumption, under which a user
scans down to their last click and no further), how often **clicked**. The relevance estimate is the examined
click-through rate with a Beta(1, 1) prior, ``(clicks + 1) / (examined + 2)`` — a cascade-model attractiveness.
Why not COEC: COEC divides clicks by position-expected clicks learned from the same traffic, which needs enough
traffic per position to be stable; the cascade estimate needs nothing but the sessions themselves and never
credits a result the user did not reach. Sessions without any click examine nothing and so judge nothing.
The 0–3 grade cuts the estimate at ``GRADE_CUTS``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from clickstream.experiments import credited_event_types

GRADE_CUTS = (0.2, 0.4, 0.6)  # estimate below 0.2 → 0, below 0.4 → 1, below 0.6 → 2, else 3

_JUDGMENTS = """
WITH picked AS (
    SELECT id, lower(regexp_replace(btrim(search_query), '\\s+', ' ', 'g')) AS query FROM clickstream_session
    WHERE received_at >= %(since)s AND btrim(search_query) <> ''
), clicked AS (
    SELECT DISTINCT e.session_id, e.object_id FROM clickstream_event e
    WHERE e.session_id IN (SELECT id FROM picked) AND e.event_type = ANY(%(types)s)
), shown AS (
    SELECT p.query, r.session_id, r.object_id, r.position, (c.object_id IS NOT NULL) AS is_clicked
    FROM picked p JOIN clickstream_shownresult r ON r.session_id = p.id
    LEFT JOIN clicked c ON c.session_id = r.session_id AND c.object_id = r.object_id
), deepest AS (
    SELECT session_id, max(position) AS position FROM shown WHERE is_clicked GROUP BY session_id
)
SELECT s.query, s.object_id, count(*), count(*) FILTER (WHERE s.position <= d.position),
       count(*) FILTER (WHERE s.is_clicked)
FROM shown s LEFT JOIN deepest d ON d.session_id = s.session_id
GROUP BY s.query, s.object_id HAVING count(*) >= %(min_sessions)s
ORDER BY s.query, s.object_id
"""


@dataclass(frozen=True)
class Judgment:
    """One (query, object): sessions shown, examined and clicked, the estimate and its 0–3 grade."""

    query: str
    object_id: str
    shown: int
    examined: int
    clicks: int

    @property
    def estimate(self) -> float:
        """Cascade attractiveness with a Beta(1, 1) prior."""
        return (self.clicks + 1) / (self.examined + 2)

    @property
    def grade(self) -> int:
        """0–3 from the estimate (``GRADE_CUTS``); a result never examined is 0."""
        if self.examined == 0:
            return 0
        return sum(self.estimate >= cut for cut in GRADE_CUTS)

    def as_dict(self) -> dict:
        """Every field, the estimate rounded to 6 decimals."""
        return {
            "query": self.query,
            "docid": self.object_id,
            "shown": self.shown,
            "examined": self.examined,
            "clicks": self.clicks,
            "estimate": round(self.estimate, 6),
            "rating": self.grade,
        }


def judgments(*, since: datetime, min_sessions: int = 1, chunk: int = 2000) -> Iterator[Judgment]:
    """The judgments since ``since`` for pairs shown in at least ``min_sessions`` sessions, by query then
    object, streamed from a server-side cursor (an export of any size holds one chunk in memory)."""
    with connection.chunked_cursor() as cursor:
        cursor.execute(_JUDGMENTS, {"since": since, "types": credited_event_types(), "min_sessions": min_sessions})
        while rows := cursor.fetchmany(chunk):
            for query, object_id, shown, examined, clicks in rows:
                yield Judgment(query, object_id, int(shown), int(examined), int(clicks))
