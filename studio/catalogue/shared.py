"""The shared tier: what everyone's clicks on a query teach everyone who runs it (docs/architecture.md,
"The shared tier").

State, in three tables: ``SharedVote`` (per normalized query, object and voter: a vote in [-1, 1]),
``SharedEvidence`` (per query and object: the sum of its votes and how many distinct voters cast them)
and ``SharedQuery`` (per query: its distinct voters). The last two are derived from the votes, always
recomputed from them for what changed, so forgetting a voter leaves exactly the state of a history
without them. Search turns evidence into a bounded score offset (``offset_sql``):

    offset(q, o) = clamp(weight · max_offset · evidence(q, o) / (voters(q) + 1), ±max_offset) · 0.5^(age / half-life)

applied only where at least ``IMPROVEMENT_SHARED_MIN_USERS`` distinct voters taught (q, o), so nobody
can read one user's clicks off the shared ranking. A text query the tier has not seen verbatim borrows the
offsets of the most similar query it has (cosine ≥ ``IMPROVEMENT_SHARED_BORROW_SIMILARITY``), scaled by that
similarity: "space adventures" learns from "space adventure". Each query keeps the vector of a session that
taught it for this. Writers of one query are serialized by a
transaction-scoped advisory lock per query: two runs never update the same (query, object) at once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

MAX_QUERY_CHARS = 500  # longer texts are not queries anyone repeats: they teach only their user
_LOCK_CLASS = 7_401  # advisory lock namespace of the shared tier's writers


def normalize_query(text: str | None) -> str:
    """The shared tier's key of a query text: lowercased, trimmed, whitespace collapsed ("" = none)."""
    normalized = " ".join((text or "").lower().split())
    return normalized if len(normalized) <= MAX_QUERY_CHARS else ""


def voter_of(*, user_id: str | None, session_pk: int) -> str:
    """Who casts a session's votes: its user, or the session itself when anonymous."""
    return user_id if user_id else f"session:{session_pk}"


@dataclass(frozen=True)
class SessionEvidence:
    """What one session says about a query's results: the objects clicked, and those skipped above a click."""

    voter: str
    query: str  # normalized
    clicked: Sequence[int]  # object pks
    skipped: Sequence[int]


def votes_from_sessions(
    sessions: Iterable[SessionEvidence], *, skip_weight: float
) -> dict[tuple[str, int, str], float]:
    """One vote per (query, object, voter): the mean over the voter's sessions that said something about the
    object (+1 clicked, −``skip_weight`` skipped above a click), so a thousand identical sessions weigh as one."""
    said: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for session in sessions:
        if not session.query:
            continue
        for pk in session.clicked:
            said[(session.query, int(pk), session.voter)].append(1.0)
        for pk in session.skipped:
            said[(session.query, int(pk), session.voter)].append(-skip_weight)
    return {key: sum(values) / len(values) for key, values in said.items() if any(values)}


_LOCK_QUERIES = """
SELECT pg_advisory_xact_lock(%(lock_class)s, k)
FROM (SELECT DISTINCT hashtext(q) AS k FROM unnest(%(queries)s::text[]) AS q ORDER BY 1) AS keys
"""

_UPSERT_VOTES = """
INSERT INTO studio_sharedvote AS v (query, object_id, voter, vote, updated_at)
SELECT k.query, k.object_id, k.voter, greatest(-1.0, least(1.0, k.vote)), %(now)s
FROM unnest(%(queries)s::text[], %(objects)s::bigint[], %(voters)s::text[], %(votes)s::float8[])
    AS k(query, object_id, voter, vote)
JOIN studio_object o ON o.id = k.object_id  -- an object deleted meanwhile takes no vote
ORDER BY k.query, k.object_id, k.voter
ON CONFLICT (query, object_id, voter) DO UPDATE SET
    -- the earlier vote decays with the half-life, the new one adds; a voter's weight stays within ±1
    vote = greatest(-1.0, least(1.0,
        v.vote * power(0.5, greatest(extract(epoch FROM EXCLUDED.updated_at - v.updated_at), 0) / %(half_life)s)
        + EXCLUDED.vote)),
    updated_at = EXCLUDED.updated_at
"""

_REFRESH_EVIDENCE = """
WITH touched AS (
    SELECT DISTINCT query, object_id FROM unnest(%(queries)s::text[], %(objects)s::bigint[]) AS t(query, object_id)
), agg AS (
    SELECT v.query, v.object_id, sum(v.vote) AS evidence, count(*) AS users, max(v.updated_at) AS updated_at
    FROM studio_sharedvote v JOIN touched t ON t.query = v.query AND t.object_id = v.object_id
    GROUP BY v.query, v.object_id
), gone AS (
    DELETE FROM studio_sharedevidence e USING touched t
    WHERE e.query = t.query AND e.object_id = t.object_id
      AND NOT EXISTS (SELECT 1 FROM agg a WHERE a.query = t.query AND a.object_id = t.object_id)
)
INSERT INTO studio_sharedevidence (query, object_id, evidence, users, updated_at)
SELECT query, object_id, evidence, users, updated_at FROM agg
ON CONFLICT (query, object_id) DO UPDATE SET
    evidence = EXCLUDED.evidence, users = EXCLUDED.users, updated_at = EXCLUDED.updated_at
"""

_REFRESH_QUERIES = """
WITH touched AS (SELECT DISTINCT q AS query FROM unnest(%(queries)s::text[]) AS q),
agg AS (
    SELECT v.query, count(DISTINCT v.voter) AS voters, max(v.updated_at) AS updated_at
    FROM studio_sharedvote v JOIN touched t ON t.query = v.query GROUP BY v.query
), gone AS (
    DELETE FROM studio_sharedquery s USING touched t
    WHERE s.query = t.query AND NOT EXISTS (SELECT 1 FROM agg a WHERE a.query = t.query)
)
INSERT INTO studio_sharedquery (query, voters, updated_at) SELECT query, voters, updated_at FROM agg
ON CONFLICT (query) DO UPDATE SET voters = EXCLUDED.voters, updated_at = EXCLUDED.updated_at
"""


def _half_life_seconds() -> float:
    days = settings.IMPROVEMENT_HALF_LIFE_DAYS
    return days * 86400.0 if days > 0 else float("inf")


_SET_QUERY_VECTORS = """
UPDATE studio_sharedquery s SET vector = k.vector::vector
FROM unnest(%(queries)s::text[], %(vectors)s::text[]) AS k(query, vector)
WHERE s.query = k.query AND s.vector IS NULL
"""


def record_votes(*, votes: dict[tuple[str, int, str], float], query_vectors: dict[str, str] | None = None) -> int:
    """Add these votes (``votes_from_sessions``) and refresh what derives from them; in the caller's
    transaction (an improvement batch's write). ``query_vectors`` (normalized query → vector literal, from
    sessions that taught it) gives a query that has none its vector, for borrowing. Returns how many
    (query, object, voter) votes were cast."""
    if not votes:
        return 0
    keys = sorted(votes)
    queries = [q for q, _, _ in keys]
    objects = [o for _, o, _ in keys]
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_QUERIES, {"lock_class": _LOCK_CLASS, "queries": queries})
        cursor.execute(
            _UPSERT_VOTES,
            {
                "queries": queries,
                "objects": objects,
                "voters": [v for _, _, v in keys],
                "votes": [votes[k] for k in keys],
                "now": timezone.now(),
                "half_life": _half_life_seconds(),
            },
        )
        _refresh(cursor, queries=queries, objects=objects)
        if query_vectors:
            named = sorted(query_vectors)
            cursor.execute(_SET_QUERY_VECTORS, {"queries": named, "vectors": [query_vectors[q] for q in named]})
    return len(keys)


def _refresh(cursor, *, queries: list[str], objects: list[int]) -> None:
    """Recompute the evidence of these (query, object) pairs and the voters of these queries from the votes."""
    cursor.execute(_REFRESH_EVIDENCE, {"queries": queries, "objects": objects})
    cursor.execute(_REFRESH_QUERIES, {"queries": queries})


def forget_voter(*, voter: str) -> int:
    """Remove a voter's every vote and recompute what they touched: the shared state is then the state of a
    history without them. Returns the votes removed. Atomic with the caller's transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT query, object_id FROM studio_sharedvote WHERE voter = %s ORDER BY 1, 2", [voter])
        touched = cursor.fetchall()
        if not touched:
            return 0
        queries = [q for q, _ in touched]
        cursor.execute(_LOCK_QUERIES, {"lock_class": _LOCK_CLASS, "queries": queries})
        cursor.execute("DELETE FROM studio_sharedvote WHERE voter = %s", [voter])
        removed = cursor.rowcount
        _refresh(cursor, queries=queries, objects=[o for _, o in touched])
    return removed


def reset_query(*, query: str) -> int:
    """Forget everything the shared tier learned for one normalized query; returns the votes removed."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_QUERIES, {"lock_class": _LOCK_CLASS, "queries": [query]})
        cursor.execute("DELETE FROM studio_sharedvote WHERE query = %s", [query])
        removed = cursor.rowcount
        cursor.execute("DELETE FROM studio_sharedevidence WHERE query = %s", [query])
        cursor.execute("DELETE FROM studio_sharedquery WHERE query = %s", [query])
    return removed


def shared_tier_on() -> bool:
    """Whether search applies the shared tier (``IMPROVEMENT_SHARED_WEIGHT`` > 0)."""
    return settings.IMPROVEMENT_SHARED_WEIGHT > 0


def borrowing_on() -> bool:
    """Whether a text query not seen verbatim borrows a similar query's offsets
    (``IMPROVEMENT_SHARED_BORROW_SIMILARITY`` set)."""
    return settings.IMPROVEMENT_SHARED_BORROW_SIMILARITY is not None


# Whose offsets a search applies, and at what weight: the query itself, at 1.
_EXACT_KEY = "SELECT %(shared_query)s::text AS query, 1.0::float8 AS w"
# With borrowing: the query itself when enough voters taught it; else the most similar query enough voters
# taught (through the HNSW index on the queries' vectors) at or above the similarity, scaled by it. "Enough" is
# IMPROVEMENT_SHARED_MIN_USERS for both, so one user's sessions on a text never switch it from borrowing to
# its own (empty) offsets: nobody can tell from a ranking that someone ran a query. NaN (a zero vector) never passes.
_KNOWN = "SELECT 1 FROM studio_sharedquery WHERE query = %(shared_query)s AND voters >= %(shared_min_users)s"
_BORROWED_KEY = f"""
    SELECT query, w FROM (
        SELECT %(shared_query)s::text AS query, 1.0::float8 AS w WHERE EXISTS ({_KNOWN})
        UNION ALL
        (SELECT query, 1.0 - (vector <=> %(q)s::vector) FROM studio_sharedquery
         WHERE vector IS NOT NULL AND voters >= %(shared_min_users)s AND NOT EXISTS ({_KNOWN})
         ORDER BY vector <=> %(q)s::vector LIMIT 1)
    ) AS k WHERE k.w <> 'NaN'::float8 AND k.w >= %(shared_borrow)s
"""


_AGE_SECONDS = "greatest(extract(epoch FROM now() - e.updated_at), 0)"
# The query shift's weights age in whole days: a shift that moved with every second would move every distance
# of the page a little between two searches and could reorder near-ties although nobody taught anything.
_AGE_WHOLE_DAYS = f"floor({_AGE_SECONDS} / 86400) * 86400"


def offsets_sql(*, borrow: bool, whole_days: bool = False) -> str:
    """The offsets of one query, as search applies them (bound parameters: ``offset_params`` and, to borrow,
    the query vector ``q``). ``whole_days``: their age counted in whole days (the query shift's weights)."""
    key = _BORROWED_KEY if borrow else _EXACT_KEY
    return f"""
    SELECT e.object_id AS oid,
           k.w * greatest(-%(shared_max)s, least(%(shared_max)s,
               %(shared_weight)s * %(shared_max)s * e.evidence / (sq.voters + 1)))
           * power(0.5, {_AGE_WHOLE_DAYS if whole_days else _AGE_SECONDS} / %(shared_half_life)s) AS off
    FROM ({key}) AS k
    JOIN studio_sharedevidence e ON e.query = k.query
    JOIN studio_sharedquery sq ON sq.query = k.query
    WHERE e.users >= %(shared_min_users)s AND e.evidence <> 0
"""


def _shift_rows_sql(*, op: str) -> str:
    """Each offset of the query (ages in whole days) with its object's part nearest to the query, by object."""
    return f"""
    WITH offsets AS ({offsets_sql(borrow=borrowing_on(), whole_days=True)})
    SELECT s.off, (SELECT p.vector::text FROM studio_objectpart p WHERE p.object_id = s.oid
                   ORDER BY p.vector {op} %(q)s::vector, p.id LIMIT 1)
    FROM offsets s ORDER BY s.oid
"""


def shifted_query(*, query_vector: Sequence[float], params: dict, op: str, metric: str) -> np.ndarray | None:
    """The query moved toward what its shared offsets promote and away from what they demote (a Rocchio step
    learned from everyone's clicks), or None when the shift is off or the query has no offsets:

        q' = q + shift · Σ_o w_o (v_o − q) / max(1, Σ_o |w_o|),   w_o = offset(q, o) / max_offset ∈ [−1, 1]

    ``v_o`` is the object's part nearest to the query. Under cosine and dot the step is taken between unit
    vectors and the result keeps the query's length; under euclid, between the vectors themselves. Derived from
    the offsets alone, it inherits their minimum of users, their decay and their exact forgetting."""
    shift = float(settings.IMPROVEMENT_SHARED_QUERY_SHIFT)
    if shift <= 0:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_shift_rows_sql(op=op), params)
        rows = [(float(off), vector) for off, vector in cursor.fetchall() if off and vector is not None]
    query = np.asarray(query_vector, dtype=np.float64)
    if not rows or not np.any(query):  # nothing taught, or a zero query (dot) that has no direction to keep
        return None
    weights = np.array([off for off, _ in rows]) / float(settings.IMPROVEMENT_SHARED_MAX_OFFSET)
    objects = np.array([json.loads(vector) for _, vector in rows], dtype=np.float64)
    unit = metric != "euclid"
    if unit:
        length = np.linalg.norm(query)
        query, objects = query / length, objects / np.maximum(np.linalg.norm(objects, axis=1, keepdims=True), 1e-30)
    moved = query + shift * (weights @ (objects - query)) / max(1.0, float(np.abs(weights).sum()))
    size = np.linalg.norm(moved)
    if not np.isfinite(size) or size < 1e-9:  # promoted objects opposite the query cancel it: leave it be
        return None
    return moved / size * length if unit else moved


_QUERY_OFFSETS = f"""
    WITH applied AS ({offsets_sql(borrow=False)})
    SELECT o.object_id, coalesce(a.off, 0), e.evidence, e.users, e.updated_at
    FROM studio_sharedevidence e JOIN studio_object o ON o.id = e.object_id
    LEFT JOIN applied a ON a.oid = e.object_id
    WHERE e.query = %(shared_query)s
    ORDER BY coalesce(a.off, 0) DESC, e.evidence DESC LIMIT %(limit)s
"""


@dataclass(frozen=True)
class QueryOffset:
    """One object of a query's shared tier as the admin shows it: the offset search applies now (0 until
    enough distinct users taught it), the summed evidence, the distinct users, when it was last taught."""

    object_id: str
    offset: float
    evidence: float
    users: int
    updated_at: object


def query_offsets(*, query: str, limit: int = 100) -> list[QueryOffset]:
    """A query's shared-tier objects, largest offset first (bounded: ``limit`` rows)."""
    with connection.cursor() as cursor:
        cursor.execute(_QUERY_OFFSETS, {**offset_params(query=query), "limit": limit})
        return [QueryOffset(*row) for row in cursor.fetchall()]


def offset_params(*, query: str) -> dict:
    """The bound parameters of ``offsets_sql`` for a normalized query."""
    return {
        "shared_query": query,
        "shared_weight": float(settings.IMPROVEMENT_SHARED_WEIGHT),
        "shared_max": float(settings.IMPROVEMENT_SHARED_MAX_OFFSET),
        "shared_min_users": int(settings.IMPROVEMENT_SHARED_MIN_USERS),
        "shared_half_life": _half_life_seconds(),
        "shared_borrow": settings.IMPROVEMENT_SHARED_BORROW_SIMILARITY or 1.0,
    }


_DERIVED_EVIDENCE = "SELECT query, object_id, round(evidence::numeric, 9), users FROM studio_sharedevidence"
_DERIVED_QUERIES = "SELECT query, voters FROM studio_sharedquery"
_RECOMPUTED_EVIDENCE = (
    "SELECT query, object_id, round(sum(vote)::numeric, 9), count(*) FROM studio_sharedvote GROUP BY 1, 2"
)
_RECOMPUTED_QUERIES = "SELECT query, count(DISTINCT voter) FROM studio_sharedvote GROUP BY 1"


def _row_sets(*statements: str) -> tuple[set, ...]:
    """Each statement's rows as a set (the statements are this module's constants)."""
    with connection.cursor() as cursor:
        out = []
        for statement in statements:
            cursor.execute(statement)
            out.append(set(cursor.fetchall()))
        return tuple(out)


def derived_matches_votes() -> bool:
    """Whether the evidence and voter counts equal a full recomputation from the votes (what every refresh keeps)."""
    return _row_sets(_DERIVED_EVIDENCE, _DERIVED_QUERIES) == _row_sets(_RECOMPUTED_EVIDENCE, _RECOMPUTED_QUERIES)


def forget_is_exact(*, voter: str) -> bool:
    """The ``forget_exact`` check: after forgetting ``voter`` (rolled back afterwards) no vote of theirs is left
    and the shared state equals the one recomputed from everyone else's votes alone."""
    with transaction.atomic():
        forget_voter(voter=voter)
        with connection.cursor() as cursor:
            cursor.execute("SELECT NOT EXISTS (SELECT 1 FROM studio_sharedvote WHERE voter = %s)", [voter])
            gone = bool(cursor.fetchone()[0])
        exact = gone and derived_matches_votes()
        transaction.set_rollback(True)
    return exact
