"""Personalized nearest-neighbour search over the catalogue (docs/architecture.md, "Search").

``search_objects`` is the selector that ranks; ``search_and_track`` embeds a text query, ranks,
and registers the session through ``clickstream.services`` when asked to.

Ranking. An object's distance is the smallest distance over its parts under ``STUDIO_METRIC``
(cosine ``<=>``: 1 − cos; dot ``<#>``: −q·p; euclid ``<->``: L2). Originals come from the HNSW
index on ``studio_objectpart`` (``hnsw.ef_search`` set for this transaction only), and the page's
originals are re-scored exactly over all of their parts; for a user, every one of that user's
personalized copies is scored exactly (B-tree on ``user_id``, then the part index) and stands in
for its original, whose index candidate is dropped. A payload filter matching few objects is
answered by an exact scan of just those; otherwise the filter applies inside the index scan, which
pgvector 0.8's iterative scan (``hnsw.iterative_scan = relaxed_order``) continues until the page is full.
Copies are dropped from the scan's ``ef_search`` rows, and inside the scan only when they hid too many
(``_rank``); an exact scan is the last resort.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg
from django.conf import settings
from django.db import connection, transaction

from clickstream import services as clickstream_services  # catalogue → clickstream (docs/architecture.md)
from studio.catalogue import embedding, interleaving, ranking_switch
from studio.catalogue import shared as shared_tier
from studio.core import db
from studio.core.errors import DomainError
from studio.core.vectors import vector_literal

METRIC_OPERATORS = {"cosine": "<=>", "dot": "<#>", "euclid": "<->"}

# pgvector caps hnsw.ef_search at 1000. It sizes the scan's candidate list (recall); with the iterative
# scan, the number of rows returned is no longer bounded by it.
MAX_EF_SEARCH = 1000
# A filter matching few objects is answered by scoring exactly those objects; otherwise the index
# candidates are filtered, which needs ef_search ≈ 1.5 × need × objects / matches. Measured on
# 100k × 384 (benchmarks/search.py --filters): an exact scan costs ~0.025 ms per matching object and
# the filtered index path ~0.155 ms per unit of ef_search, so exact wins while
# matches² < ~9 × need × objects (~3,000 matches for a page of 10 out of 100k).
EXACT_FILTER_COST_RATIO = 9.0
EXACT_FILTER_MIN_MATCHES = 500  # below this an exact scan is always cheap
MAX_OFFSET = 1000
MAX_LIMIT = 100
MAX_FILTER_KEYS = 32
# How long the planner's row estimates are reused before they are read again.
_ESTIMATE_TTL_SECONDS = 300.0


@dataclass(frozen=True)
class SearchHit:
    """One ranked result. ``object_id`` is the original's id even when a personalized copy ranked it."""

    rank: int
    object_id: str
    distance: float
    score: float
    payload: dict
    personalized: bool
    shared: bool = False  # the shared tier's offset for this query moved it
    team: str | None = None  # interleaved searches: which ranking put it here (``interleaving``)


@dataclass
class SearchResult:
    """A page of hits and what produced it (recorded as the session's ``search_meta``)."""

    hits: list[SearchHit]
    meta: dict = field(default_factory=dict)


def score_from_distance(distance: float, *, metric: str | None = None) -> float:
    """The similarity shown to clients: cos for cosine, q·p for dot, −L2 for euclid."""
    metric = metric or settings.STUDIO_METRIC
    return 1.0 - distance if metric == "cosine" else -distance


_estimate_cache: tuple[float, int, int] | None = None  # (read at monotonic time, objects, parts)


def _catalogue_estimate() -> tuple[int, int]:
    """(originals, parts) from the planner's row estimates: instant, cached per process for a while."""
    global _estimate_cache
    now = time.monotonic()
    if _estimate_cache is None or now - _estimate_cache[0] >= _ESTIMATE_TTL_SECONDS:
        objects = db.estimated_row_count(table="studio_object")
        parts = db.estimated_row_count(table="studio_objectpart")
        _estimate_cache = (now, objects, parts)
    return _estimate_cache[1], _estimate_cache[2]


def _parts_per_object() -> float:
    """Average parts per original (at least 1), for sizing the index fetch."""
    objects, parts = _catalogue_estimate()
    return min(max(parts / objects, 1.0), float(settings.STUDIO_MAX_PARTS_PER_OBJECT)) if objects else 1.0


def initial_ef_search(*, need: int) -> int:
    """The first index fetch for a page ending at ``need``: at least STUDIO_EF_SEARCH and 2 × need, and
    enough rows that multi-part objects still fill the page (2 × parts-per-object × need)."""
    wanted = math.ceil(2 * need * _parts_per_object())
    return min(MAX_EF_SEARCH, max(settings.STUDIO_EF_SEARCH, 2 * need, wanted))


def exact_filter_threshold(*, need: int) -> int:
    """The most filter matches for which an exact scan of them beats filtering index candidates."""
    objects, _parts = _catalogue_estimate()
    return max(EXACT_FILTER_MIN_MATCHES, int(math.sqrt(EXACT_FILTER_COST_RATIO * need * objects)))


def _count_matching(*, filter_json: str, cap: int) -> int:
    """How many originals match the filter, counting no further than ``cap``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM studio_object WHERE payload @> %s::jsonb LIMIT %s) AS matching",
            [filter_json, cap],
        )
        return int(cursor.fetchone()[0])


# relaxed_order: rows may come slightly out of order between the scan's batches; every consumer re-sorts.
_SET_EF_SEARCH = (
    "SELECT set_config('hnsw.ef_search', %(ef_search)s, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)"
)


def _ranking_sql(
    *, op: str, personalized: bool, filtered: bool, exact: bool, shared: bool = False, in_scan: bool | None = None
) -> str:
    """The ranking statement. Only fixed fragments and the metric's operator are formatted in;
    every value (vector, user, filter, limits, the shared tier's query) is a bound parameter."""
    mine, not_copied = _copies_fragment(op=op, personalized=personalized, filtered=filtered)
    in_scan = filtered if in_scan is None else in_scan
    candidates, rescored = _candidates_fragment(
        op=op, filtered=filtered, exact=exact, not_copied=not_copied, in_scan=in_scan
    )
    offsets, promoted, shifted = _shared_fragment(op=op, shared=shared, filtered=filtered)
    return f"""
        WITH {mine}{offsets}{candidates}
        ranked AS (
            SELECT oid, d, false AS personalized FROM cand
            UNION ALL
            SELECT oid, d, true AS personalized FROM mine{promoted}
        ),
        top AS MATERIALIZED (
            {shifted} ORDER BY d, oid LIMIT %(need)s
        ),
        page AS ({rescored}),
        counts AS (
            SELECT (SELECT count(*) FROM ann) AS ann_parts,
                   (SELECT count(*) FROM cand) AS original_candidates,
                   (SELECT count(*) FROM mine) AS personalized_count
        )
        SELECT s.ann_parts, s.original_candidates, s.personalized_count,
               o.object_id, t.d, t.personalized, o.payload, t.off
        FROM counts s
        LEFT JOIN page t ON true
        LEFT JOIN studio_object o ON o.id = t.oid
        ORDER BY t.d, t.oid
    """


def _copies_fragment(*, op: str, personalized: bool, filtered: bool) -> tuple[str, str]:
    """The ``mine`` CTE (this user's copies, each at its best part) and the "original not copied" test."""
    if not personalized:
        return (
            """
        mine AS (SELECT NULL::bigint AS oid, NULL::float8 AS d WHERE false),""",
            "true",
        )
    # Per copy, its best part through the part index: cost follows this user's copies, not everyone's
    # (a hash join would scan every user's parts). Under cosine, copies are scored in halfvec against the query
    # scaled to unit length (cosine is scale-free; unit components sit well inside half precision's range; folded
    # once per statement) instead of casting each copy to vector. Dot and euclid need the query's own scale,
    # which may not fit half precision: they cast.
    distance = (
        f"pp.vector {op} l2_normalize(%(q)s::vector)::halfvec"
        if op == "<=>"
        else f"pp.vector::vector {op} %(q)s::vector"
    )
    mine = f"""
        mine AS MATERIALIZED (
            SELECT po.original_id AS oid, best.d
            FROM studio_personalizedobject po
            {"JOIN studio_object mo ON mo.id = po.original_id AND mo.payload @> %(filter)s::jsonb" if filtered else ""}
            CROSS JOIN LATERAL (
                SELECT min({distance}) AS d
                FROM studio_personalizedpart pp WHERE pp.personalized_id = po.id
            ) AS best
            WHERE po.user_id = %(user_id)s AND best.d IS NOT NULL
        ),"""
    # NOT IN over the materialized copies is a hashed lookup filtering inside the index scan; NOT EXISTS planned
    # as an anti join rescanned all of them per index row (10 ms at 1,000 copies). ``mine.oid`` is never NULL.
    return mine, "{col} NOT IN (SELECT oid FROM mine)"


def _shared_fragment(*, op: str, shared: bool, filtered: bool) -> tuple[str, str, str]:
    """The shared tier's ``offsets`` CTE, the candidates it promotes (ranked even when the index would not
    return them), and the ``top`` selection with each object's offset subtracted from its distance."""
    if not shared:
        return "", "", "SELECT oid, d, personalized, NULL::float8 AS off FROM ranked"
    offsets = f"""
        offsets AS MATERIALIZED ({shared_tier.offsets_sql(borrow=shared_tier.borrowing_on())}),"""
    promoted = f"""
            UNION ALL
            SELECT s.oid, (SELECT min(p.vector {op} %(q)s::vector) FROM studio_objectpart p WHERE p.object_id = s.oid),
                   false
            FROM offsets s
            {"JOIN studio_object so ON so.id = s.oid AND so.payload @> %(filter)s::jsonb" if filtered else ""}
            WHERE s.off > 0 AND NOT EXISTS (SELECT 1 FROM cand c WHERE c.oid = s.oid)
              AND NOT EXISTS (SELECT 1 FROM mine m WHERE m.oid = s.oid)"""
    shifted = """SELECT r.oid, r.d - coalesce(s.off, 0) AS d, r.personalized, s.off
            FROM ranked r LEFT JOIN offsets s ON s.oid = r.oid WHERE r.d IS NOT NULL"""
    return offsets, promoted, shifted


def _candidates_fragment(*, op: str, filtered: bool, exact: bool, not_copied: str, in_scan: bool) -> tuple[str, str]:
    """The ``ann`` and ``cand`` CTEs (originals' candidates) and the page's re-scoring query. ``in_scan``: the
    filter and "not copied" test run inside the index scan (which the iterative scan continues until enough rows
    pass) rather than on its ``ef_search`` rows afterwards (cheaper when few candidates are hidden)."""
    if exact:
        candidates = f"""
        ann AS (SELECT NULL::bigint AS oid WHERE false),
        cand AS MATERIALIZED (
            SELECT p.object_id AS oid, min(p.vector {op} %(q)s::vector) AS d
            FROM studio_object o JOIN studio_objectpart p ON p.object_id = o.id
            WHERE {"o.payload @> %(filter)s::jsonb AND" if filtered else ""} {not_copied.format(col="o.id")}
            GROUP BY p.object_id
        ),"""
        # every part of every candidate was scored: the distances are already exact
        return candidates, "SELECT oid, d, personalized, off FROM top"
    join = "JOIN studio_object fo ON fo.id = {col}" if filtered else ""
    where = f"WHERE {'fo.payload @> %(filter)s::jsonb AND' if filtered else ''} {not_copied}"
    scan, after = (where.format(col="p.object_id"), "") if in_scan else ("", where.format(col="a.oid"))
    candidates = f"""
        ann AS MATERIALIZED (
            SELECT p.object_id AS oid, p.vector {op} %(q)s::vector AS d
            FROM studio_objectpart p {join.format(col="p.object_id") if in_scan else ""}
            {scan}
            ORDER BY p.vector {op} %(q)s::vector
            LIMIT %(parts)s
        ),
        cand AS MATERIALIZED (
            SELECT a.oid, min(a.d) AS d FROM ann a {"" if in_scan else join.format(col="a.oid")}
            {after}
            GROUP BY a.oid
        ),"""
    # The page's originals are re-scored over ALL their parts (the index may have returned only some
    # of a multi-part object's parts), so that every distance shown is exact: need lookups, not ef.
    rescored = f"""
            SELECT t.oid, t.personalized, t.off,
                   CASE WHEN t.personalized THEN t.d
                        ELSE (SELECT min(p.vector {op} %(q)s::vector) FROM studio_objectpart p
                              WHERE p.object_id = t.oid) - coalesce(t.off, 0)
                   END AS d
            FROM top t"""
    return candidates, rescored


def _run_ranking(*, sql: str, params: dict, ef_search: int | None) -> list[tuple]:
    """Run one ranking statement with ``hnsw.ef_search`` set for its transaction only (never the session).

    With client-side binding (Django's default for psycopg 3) the setting and the ranking travel as one
    multi-statement query, which PostgreSQL runs as one transaction (implicit in autocommit, or the
    caller's): ``set_config(…, true)`` holds for the ranking and is gone after it, in one round trip
    instead of four (BEGIN, SET, SELECT, COMMIT). Otherwise an explicit transaction does the same.
    """
    if ef_search is None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    params = {**params, "ef_search": str(ef_search)}
    with connection.cursor() as cursor:
        if isinstance(cursor.cursor, psycopg.ClientCursor):
            cursor.execute(_SET_EF_SEARCH + "; " + sql, params)
            cursor.nextset()
            return cursor.fetchall()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SET_EF_SEARCH, params)
        cursor.execute(sql, params)
        return cursor.fetchall()


def search_objects(
    *,
    query_vector: Sequence[float],
    user_id: str | None = None,
    limit: int = 10,
    offset: int = 0,
    filter: dict | None = None,
    exact: bool = False,
    query_text: str | None = None,
) -> SearchResult:
    """Rank the catalogue for ``query_vector`` as ``user_id`` sees it; the page ``offset … offset+limit``.

    ``query_vector`` must already be validated (``studio.core.vectors.validate_vector``). ``filter`` is
    equality on top-level payload keys. ``exact=True`` scans everything (no index): the reference
    ranking for tests and benchmarks. ``query_text`` keys the shared tier: its offsets for that
    (normalized) query shift the distances, for every user and anonymous search alike.
    """
    if not ranking_switch.learned_ranking_on():  # switched off (the interleaving guard): originals only
        user_id, query_text = None, None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be in 1..{MAX_LIMIT}")
    if not 0 <= offset <= MAX_OFFSET:
        raise ValueError(f"offset must be in 0..{MAX_OFFSET}")
    metric = settings.STUDIO_METRIC
    ranking = _Ranking(
        op=METRIC_OPERATORS[metric],
        need=offset + limit,
        personalized=bool(user_id),
        filtered=bool(filter),
        exact=exact,
        params={"q": vector_literal(query_vector), "user_id": user_id, "need": offset + limit},
        meta={"metric": metric, "limit": limit, "offset": offset, "filter": filter or {}},
    )
    shared_query = shared_tier.normalize_query(query_text) if shared_tier.shared_tier_on() else ""
    if shared_query:
        ranking.shared = True
        ranking.params.update(shared_tier.offset_params(query=shared_query))
        _shift_query(ranking, query_vector=query_vector)
    if filter:
        _plan_filter(ranking, filter)
    rows = _rank(ranking)
    return SearchResult(hits=_page_hits(rows, offset=offset, limit=limit, metric=metric), meta=ranking.meta)


def _shift_query(ranking: _Ranking, *, query_vector: Sequence[float]) -> None:
    """Rank for the query as the shared tier moved it (``shared_tier.shifted_query``), if it did; the meta says
    how far (the cosine distance between the two)."""
    metric = ranking.meta["metric"]
    moved = shared_tier.shifted_query(query_vector=query_vector, params=ranking.params, op=ranking.op, metric=metric)
    if moved is None:
        return
    ranking.params["q"] = vector_literal(moved)
    original = np.asarray(query_vector, dtype=np.float64)
    cosine = float(moved @ original / (np.linalg.norm(moved) * np.linalg.norm(original)))
    ranking.meta["shared_query_shift"] = round(1.0 - cosine, 6)


@dataclass
class _Ranking:
    """One search's ranking plan and what its attempts found (``meta`` is returned with the hits)."""

    op: str
    need: int  # offset + limit: rows the page needs ranked
    personalized: bool
    filtered: bool
    exact: bool
    params: dict
    meta: dict
    ef_search: int | None = None
    attempts: int = 0
    shared: bool = False  # the shared tier applies (a text query, the tier on)
    in_scan: bool = False  # filter and "not copied" inside the (iterative) index scan


def _plan_filter(ranking: _Ranking, filter: dict) -> None:
    """Bind the filter; a filter matching few objects is ranked exactly (cheaper than filtering the index's)."""
    ranking.params["filter"] = json.dumps(filter, sort_keys=True)
    if ranking.exact:
        return
    threshold = exact_filter_threshold(need=ranking.need)
    matching = _count_matching(filter_json=ranking.params["filter"], cap=threshold + 1)
    ranking.meta["filter_matches_at_least"] = matching
    ranking.exact = matching <= threshold


def _rank(ranking: _Ranking) -> list[tuple]:
    """Rank through the index. A payload filter runs inside the iterative scan from the start; a user's copies
    are first dropped from the scan's ``ef_search`` rows (cheaper) and, when they hid too many, inside the scan
    on a second attempt. Scan exactly when the index still gave too few originals (a catalogue smaller than the
    page, or a scan that hit ``hnsw.max_scan_tuples`` before enough rows passed)."""
    ranking.in_scan = ranking.filtered
    rows = _attempt(ranking)
    short = not ranking.exact and rows[0][1] < ranking.need
    if short and not ranking.in_scan and rows[0][0] >= ranking.params["parts"]:  # else the index ran out of rows
        ranking.in_scan = True
        rows = _attempt(ranking)
    if not ranking.exact and rows[0][1] < ranking.need:
        ranking.exact = True
        rows = _attempt(ranking)
    ann_parts, original_candidates, personalized_count = rows[0][0], rows[0][1], rows[0][2]
    ranking.meta.update(
        {
            "ef_search": ranking.ef_search,
            "exact": ranking.exact,
            "attempts": ranking.attempts,
            "filtered_in_scan": ranking.in_scan and not ranking.exact,
            "ann_parts": ann_parts,
            "original_candidates": original_candidates,
            "personalized_count": personalized_count,
        }
    )
    return rows


def _attempt(ranking: _Ranking) -> list[tuple]:
    """One ranking statement for the plan as it stands."""
    ranking.attempts += 1
    if not ranking.exact and ranking.ef_search is None:
        ranking.ef_search = initial_ef_search(need=ranking.need)
    ranking.params["parts"] = ranking.ef_search
    sql = _ranking_sql(
        op=ranking.op,
        personalized=ranking.personalized,
        filtered=ranking.filtered,
        exact=ranking.exact,
        shared=ranking.shared,
        in_scan=ranking.in_scan,
    )
    return _run_ranking(sql=sql, params=ranking.params, ef_search=None if ranking.exact else ranking.ef_search)


def _page_hits(rows: list[tuple], *, offset: int, limit: int, metric: str) -> list[SearchHit]:
    """The page's hits from the ranking rows (a lone counts row means nothing ranked)."""
    ranked = [row[3:] for row in rows if row[3] is not None]
    return [
        SearchHit(
            rank=offset + position + 1,
            object_id=object_id,
            distance=float(distance),
            score=score_from_distance(float(distance), metric=metric),
            payload=_as_dict(payload),
            personalized=bool(is_personalized),
            shared=shift is not None,
        )
        for position, (object_id, distance, is_personalized, payload, shift) in enumerate(
            ranked[offset : offset + limit]
        )
    ]


def _as_dict(payload: object) -> dict:
    if isinstance(payload, str):  # a driver that does not decode jsonb
        return json.loads(payload)
    return payload if isinstance(payload, dict) else {}


@dataclass
class SearchOutcome:
    """What the search endpoint returns: the session id (None when untracked and none given) and the hits."""

    session_id: str | None
    hits: list[SearchHit]
    meta: dict


class EmbedderDisabled(DomainError):
    """A text query arrived but ``STUDIO_EMBEDDER=none`` (HTTP 400 naming ``query``)."""

    code = "embedder_disabled"

    def __init__(self):
        super().__init__("STUDIO_EMBEDDER=none: send query_vector instead of query.", field="query")


# The session's fields that the search request calls otherwise.
_SESSION_FIELD_NAMES = {"search_query": "query"}


def search_and_track(
    *,
    query: str | None = None,
    query_vector: Sequence[float] | None = None,
    user_id: str | None = None,
    limit: int = 10,
    offset: int = 0,
    filter: dict | None = None,
    session_id: str | None = None,
    track: bool = True,
) -> SearchOutcome:
    """Embed ``query`` (unless a vector is given), rank, and with ``track`` register the session.

    The session holds the query text, the query vector and the shown results in the order
    returned with their scores; ``clickstream.services.SessionConflict`` propagates untouched
    (nothing is registered then).
    """
    given_vector = query_vector is not None
    if not given_vector:
        if not embedding.embedder_enabled():
            raise EmbedderDisabled()
        query_vector = embedding.embed_text(query or "").tolist()
    result = search_objects(
        query_vector=query_vector, user_id=user_id, limit=limit, offset=offset, filter=filter, query_text=query
    )
    result.meta["query_source"] = "vector" if given_vector else "text"
    if not track:
        return SearchOutcome(session_id=session_id, hits=result.hits, meta=result.meta)
    session_id = session_id or uuid.uuid4().hex
    # Only a first page that learning could have changed (a user's copies, a query's shared tier) is interleaved.
    learning_shows = (user_id or query) and ranking_switch.learned_ranking_on()
    if offset == 0 and learning_shows and interleaving.interleaved(session_id=session_id):
        _interleave_with_base(result, session_id=session_id, query_vector=query_vector, limit=limit, filter=filter)
    try:
        _register(session_id=session_id, user_id=user_id, query=query, query_vector=query_vector, result=result)
    except clickstream_services.SessionInvalid as exc:
        raise exc.renamed(_SESSION_FIELD_NAMES) from None
    return SearchOutcome(session_id=session_id, hits=result.hits, meta=result.meta)


def _interleave_with_base(result: SearchResult, *, session_id: str, query_vector, limit: int, filter) -> None:
    """Replace the learned page by its team draft with the base ranking (originals only, no shared tier)."""
    base = search_objects(query_vector=query_vector, user_id=None, limit=limit, filter=filter)
    result.hits = interleaving.interleave_hits(result.hits, base.hits, limit=limit, seed=session_id)
    result.meta["interleaving"] = "team_draft"


def _register(*, session_id: str, user_id: str | None, query: str | None, query_vector, result) -> None:
    """Register the search as a session: query, vector and the shown results in order, with their scores."""
    clickstream_services.register_session(
        session_id=session_id,
        user_id=user_id,
        search_query=query or "",
        query_vector=list(query_vector),
        results=[
            clickstream_services.ShownResultInput(
                object_id=hit.object_id,
                score=hit.score,
                meta={
                    "rank": hit.rank,
                    "distance": hit.distance,
                    "personalized": hit.personalized,
                    "shared": hit.shared,
                    **({"team": hit.team} if hit.team else {}),
                },
            )
            for hit in result.hits
        ],
        search_meta=result.meta,
    )
