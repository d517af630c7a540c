"""The interleaving experiment's verdict from stored sessions (docs/architecture.md, "Online proof").

An interleaved session (``search_meta.interleaving = "team_draft"``) records each shown result's team
(``ShownResult.meta.team``: ``learned``, ``base``, or ``both`` for the rankings' common prefix, which credits
neither). Its clicks (events whose type has a positive weight in
``IMPROVEMENT_EVENT_WEIGHTS``; each object once) credit the team that showed the clicked object; the session is
a **win** for the learned ranking when it credits learned more, a **loss** when less, a **tie** when equally
(clicks on both); a session without clicks is counted but decides nothing. Over the decisive sessions: the win
rate with a 95 % Wilson interval and a two-sided exact sign test (H0: wins and losses equally likely).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

_OUTCOMES = """
WITH interleaved AS (
    SELECT id, date_trunc('day', received_at) AS day FROM clickstream_session
    WHERE received_at >= %(since)s AND search_meta ->> 'interleaving' = 'team_draft'
    ORDER BY received_at DESC LIMIT %(cap)s
), credited AS (
    SELECT i.id, i.day,
           count(DISTINCT e.object_id) FILTER (WHERE r.meta ->> 'team' = 'learned') AS learned,
           count(DISTINCT e.object_id) FILTER (WHERE r.meta ->> 'team' = 'base') AS base
    FROM interleaved i
    LEFT JOIN clickstream_event e ON e.session_id = i.id AND e.event_type = ANY(%(types)s)
    LEFT JOIN clickstream_shownresult r ON r.session_id = i.id AND r.object_id = e.object_id
    GROUP BY i.id, i.day
)
SELECT day, count(*), count(*) FILTER (WHERE learned > base), count(*) FILTER (WHERE learned < base),
       count(*) FILTER (WHERE learned = base AND learned > 0)
FROM credited GROUP BY day ORDER BY day
"""


_SESSION_OUTCOMES = """
WITH interleaved AS (
    SELECT id FROM clickstream_session
    WHERE left(session_id, length(%(prefix)s)) = %(prefix)s AND search_meta ->> 'interleaving' = 'team_draft'
    ORDER BY id LIMIT %(cap)s
), credited AS (
    SELECT i.id,
           count(DISTINCT e.object_id) FILTER (WHERE r.meta ->> 'team' = 'learned') AS learned,
           count(DISTINCT e.object_id) FILTER (WHERE r.meta ->> 'team' = 'base') AS base
    FROM interleaved i
    LEFT JOIN clickstream_event e ON e.session_id = i.id AND e.event_type = ANY(%(types)s)
    LEFT JOIN clickstream_shownresult r ON r.session_id = i.id AND r.object_id = e.object_id
    GROUP BY i.id
)
SELECT sign(learned - base)::int FROM credited ORDER BY id
"""


@dataclass(frozen=True)
class Tally:
    """Sessions and their outcomes over some period."""

    sessions: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, int, int, int]:
        """(sessions, wins, losses, ties)."""
        return self.sessions, self.wins, self.losses, self.ties


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the probability, with wins and losses equally likely, of a split at least
    as uneven as this one (1.0 with no decisive session)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**n)


def wilson_interval(successes: int, n: int, *, z: float = 1.959964) -> tuple[float, float] | None:
    """95 % Wilson score interval of a proportion; None with no observation."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def verdict(tally: Tally) -> dict:
    """A tally with its win rate (over decisive sessions), interval and sign-test p-value."""
    decisive = tally.wins + tally.losses
    interval = wilson_interval(tally.wins, decisive)
    return {
        "sessions": tally.sessions,
        "wins": tally.wins,
        "losses": tally.losses,
        "ties": tally.ties,
        "win_rate": tally.wins / decisive if decisive else None,
        "win_rate_ci95": list(interval) if interval else None,
        "p_value": sign_test_p(tally.wins, tally.losses),
    }


def credited_event_types() -> list[str]:
    """Event types that count as a click for the experiment (a positive learning weight)."""
    return sorted(name for name, weight in settings.IMPROVEMENT_EVENT_WEIGHTS.items() if weight > 0)


# The most interleaved sessions one verdict reads (the latest first): a bounded query whatever the traffic.
MAX_SESSIONS = 1_000_000


def daily_tallies(*, since: datetime, cap: int = MAX_SESSIONS) -> list[tuple[datetime, Tally]]:
    """Per day (UTC) since ``since``: the interleaved sessions (the latest ``cap`` of them) and their outcomes."""
    with connection.cursor() as cursor:
        cursor.execute(_OUTCOMES, {"since": since, "types": credited_event_types(), "cap": cap})
        return [(day, Tally(*map(int, counts))) for day, *counts in cursor.fetchall()]


def interleaving_report(*, since: datetime, cap: int = MAX_SESSIONS) -> dict:
    """The experiment since ``since`` (its latest ``cap`` sessions): the verdict overall and per day."""
    days = daily_tallies(since=since, cap=cap)
    total = sum((tally for _, tally in days), Tally())
    return {
        "since": since,
        **verdict(total),
        "days": [{"day": day.date(), **verdict(tally)} for day, tally in days],
    }


def guard_status() -> dict:
    """Whether the learned ranking loses significantly over the last ``STUDIO_INTERLEAVE_GUARD_DAYS``: at least
    ``STUDIO_INTERLEAVE_GUARD_MIN_SESSIONS`` decisive sessions, more losses than wins, p < ``…_GUARD_P``."""
    since = timezone.now() - timedelta(days=settings.STUDIO_INTERLEAVE_GUARD_DAYS)
    report = verdict(sum((tally for _, tally in daily_tallies(since=since)), Tally()))
    decisive = report["wins"] + report["losses"]
    losing = (
        decisive >= settings.STUDIO_INTERLEAVE_GUARD_MIN_SESSIONS
        and report["losses"] > report["wins"]
        and report["p_value"] < settings.STUDIO_INTERLEAVE_GUARD_P
    )
    return {"tripped": losing, "since": since, **report}


def session_outcomes(*, prefix: str = "", cap: int = MAX_SESSIONS) -> list[int]:
    """Each interleaved session whose id starts with ``prefix``, in the order registered: +1 a win for the
    learned ranking, −1 a loss, 0 a tie or no click (the evaluation's online harness)."""
    with connection.cursor() as cursor:
        cursor.execute(_SESSION_OUTCOMES, {"prefix": prefix, "types": credited_event_types(), "cap": cap})
        return [int(outcome) for (outcome,) in cursor.fetchall()]


def sessions_to_significance(outcomes: list[int], *, alpha: float = 0.05) -> int | None:
    """How many sessions, in order, until the sign test first gives p < ``alpha``; None if it never does."""
    wins = losses = 0
    for count, outcome in enumerate(outcomes, start=1):
        wins += outcome > 0
        losses += outcome < 0
        if outcome and sign_test_p(wins, losses) < alpha:
            return count
    return None
