"""Improvement runs: claim settled sessions under a lease, adjust per-user vectors, write them, reap.

A run loops over batches until no ready session is left (or its time budget is spent):

1. **claim** (one short transaction): take the claimers' advisory lock, reap expired leases, pick up
   to ``IMPROVEMENT_BATCH_SIZE`` ready sessions of users that no other run is processing, mark them
   ``processing`` with one lease for the whole batch, and record an attempt per session;
2. **read** everything the batch needs in bulk (sessions, shown results, events, originals, the
   users' current copies), embed missing query vectors in one call;
3. **adjust** with the torch adjuster (``improvement.adjuster``), isolating sessions that make it fail;
4. **write** (one transaction): fence on the lease, upsert the copies (``studio.personalization``),
   finish the sessions and their attempts, add the batch to the run's counts and metrics.

Why whole users: two runs must never adjust the same (user, object) at once, or the later write
would silently drop what the earlier one learned. Claimers are serialized by a transaction-scoped
advisory lock (a claim takes milliseconds), and a claimer skips every user that has a session in
``processing``; so while a batch holds any session of a user, no other run gets that user.

Why a fencing token: a run may stall past its lease (GC, a slow disk, a paused VM); the reaper
then returns its sessions and another run may claim them. The batch's ``lease_until`` (identical
for all of its sessions, unique per claim) is compared under row locks in the write transaction:
if any session is no longer ``processing`` with that lease, or the lease has run out, the whole
batch's writes roll back (``LeaseLost``) and nothing is written twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from improvement import adjuster, batch, selectors
from improvement.adjuster import AdjusterParams
from improvement.models import AttemptOutcome, ImprovementAttempt, ImprovementRun, RunStatus, RunTrigger
from studio import embedding, personalization

logger = logging.getLogger(__name__)

# Key of the advisory lock that serializes claimers (any constant; all workers share it).
CLAIM_LOCK_KEY = 0x57D10_1A1

# Errors worth retrying later: the database or the broker went away.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)

# Fraction of IMPROVEMENT_TIME_LIMIT_SECONDS after which a run stops claiming new batches, so that
# it ends by itself before Celery's soft limit interrupts it.
TIME_BUDGET_FRACTION = 0.8


class LeaseLost(Exception):
    """The batch's lease is no longer ours: its writes were rolled back."""


@dataclass
class Claim:
    """Sessions claimed together by one run, under one lease (also the fencing token)."""

    run_id: int
    session_pks: list[int]
    users: dict[int, str]  # session pk → user_id
    lease_until: datetime
    claimed_at: datetime


@dataclass
class BatchReport:
    """What one batch did."""

    claimed: int
    used: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed_reasons: dict[str, int] = field(default_factory=dict)
    objects_personalized: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


# --- parameters ---------------------------------------------------------------------------------


def adjuster_params(**overrides) -> AdjusterParams:
    """The adjuster's parameters from settings (``IMPROVEMENT_*``, ``STUDIO_METRIC``)."""
    return AdjusterParams.from_settings(**overrides)


def run_parameters(params: AdjusterParams) -> dict:
    """Everything that shapes a run, as recorded on it."""
    return {
        **dataclasses.asdict(params),
        "negatives": settings.IMPROVEMENT_NEGATIVES,
        "event_weights": dict(settings.IMPROVEMENT_EVENT_WEIGHTS),
        "batch_size": settings.IMPROVEMENT_BATCH_SIZE,
        "settle_seconds": settings.IMPROVEMENT_SETTLE_SECONDS,
        "lease_seconds": settings.IMPROVEMENT_LEASE_SECONDS,
        "max_attempts": settings.IMPROVEMENT_MAX_ATTEMPTS,
    }


# --- starting runs ------------------------------------------------------------------------------


def create_run(*, trigger: str, task_id: str = "") -> ImprovementRun:
    """A queued run (not started)."""
    return ImprovementRun.objects.create(trigger=trigger, task_id=task_id, status=RunStatus.QUEUED)


def enqueue_run(*, trigger: str) -> ImprovementRun:
    """Create a queued run and send it to a Celery worker once this transaction commits."""
    from improvement.tasks import improve

    run = create_run(trigger=trigger)
    transaction.on_commit(lambda: improve.delay(run_id=run.pk))
    return run


class BrokerUnavailable(Exception):
    """The broker refused a run's task: the run is recorded failed, not left queued forever."""


def queue_run(*, trigger: str) -> ImprovementRun:
    """Create a run and hand it to a Celery worker now (call outside a transaction: the task is sent
    on commit). Raises BrokerUnavailable, with the run marked failed, when the broker refuses it."""
    from kombu.exceptions import OperationalError as BrokerOperationalError

    run = None
    try:
        with transaction.atomic():
            run = enqueue_run(trigger=trigger)
    except (BrokerOperationalError, ConnectionError) as exc:
        if run is None:
            raise
        # The run committed, but its task was never queued: no worker would ever start it.
        finish_run(run_id=run.pk, status=RunStatus.FAILED, error=f"could not be queued: {exc}")
        raise BrokerUnavailable(str(exc)) from exc
    return run


def run_for_beat(*, task_id: str) -> ImprovementRun | None:
    """The run of a beat-started task: the one this task created before (a retry), else a new one,
    or None when there is nothing to do (no ready session, no expired lease), so an idle service
    does not fill the runs list with empty runs every interval."""
    existing = selectors.run_for_task(task_id=task_id)
    if existing is not None:
        return existing
    received_before = timezone.now() - timedelta(seconds=settings.IMPROVEMENT_SETTLE_SECONDS)
    if not selectors.ready_session_exists(received_before=received_before) and not selectors.expired_lease_exists():
        return None
    return create_run(trigger=RunTrigger.BEAT, task_id=task_id)


# --- reaping, claiming, releasing ---------------------------------------------------------------

_REAP = """
WITH expired AS (
    SELECT id FROM clickstream_session
    WHERE improvement_status = 'processing' AND lease_until < clock_timestamp()
    ORDER BY lease_until
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED  -- a row locked by a batch's write transaction is being finished: leave it
), reaped AS (
    UPDATE clickstream_session s SET
        attempts = s.attempts + 1,
        lease_until = NULL,
        improvement_status = CASE WHEN s.attempts + 1 >= %(max)s THEN 'failed' ELSE 'pending' END,
        improvement_detail = CASE WHEN s.attempts + 1 >= %(max)s
            THEN 'lease expired ' || (s.attempts + 1) || ' times (worker lost or run too slow); given up'
            ELSE 'lease expired (attempt ' || (s.attempts + 1) || '); back in the queue' END
    FROM expired WHERE s.id = expired.id
    RETURNING s.id, s.improvement_status
), closed AS (
    UPDATE improvement_improvementattempt a
    SET outcome = 'expired', finished_at = clock_timestamp(), detail = 'lease expired; the reaper gave it back'
    FROM reaped WHERE a.session_id = reaped.id AND a.outcome = 'processing'
)
SELECT count(*) FILTER (WHERE improvement_status = 'pending'),
       count(*) FILTER (WHERE improvement_status = 'failed')
FROM reaped
"""


def reap_expired_leases(*, limit: int = 10_000) -> dict[str, int]:
    """Return sessions whose lease ran out to ``pending`` (``attempts`` + 1), or fail them once they
    reach ``IMPROVEMENT_MAX_ATTEMPTS``; their open attempts become ``expired``. Also fails runs left
    ``running`` by a worker that died. Returns ``{"returned": n, "failed": m, "runs_failed": k}``."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_REAP, {"limit": limit, "max": settings.IMPROVEMENT_MAX_ATTEMPTS})
        returned, failed_count = cursor.fetchone()
    return {"returned": int(returned), "failed": int(failed_count), "runs_failed": _fail_lost_runs()}


def _fail_lost_runs() -> int:
    # A running run whose task would have been redelivered long ago (visibility timeout) is lost.
    limit = settings.IMPROVEMENT_TIME_LIMIT_SECONDS
    stale_before = timezone.now() - timedelta(seconds=3 * limit + 120)
    return ImprovementRun.objects.filter(status=RunStatus.RUNNING, started_at__lt=stale_before).update(
        status=RunStatus.FAILED,
        finished_at=timezone.now(),
        error="lost: the worker running it stopped before it finished (its sessions were reaped)",
    )


_CLAIM = """
WITH busy AS (
    -- users another run is processing right now (expired leases were reaped just before)
    SELECT DISTINCT user_id FROM clickstream_session
    WHERE improvement_status = 'processing' AND user_id IS NOT NULL
), picked AS (
    SELECT id FROM clickstream_session
    WHERE improvement_status = 'pending' AND user_id IS NOT NULL AND received_at < %(before)s
      AND (%(user)s::text IS NULL OR user_id = %(user)s)
      AND (attempts > 0 AND attempts + 1 >= %(max_attempts)s) = %(last_attempt)s
      AND user_id NOT IN (SELECT user_id FROM busy)
    ORDER BY received_at
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
), claimed AS (
    UPDATE clickstream_session s SET improvement_status = 'processing', lease_until = %(lease)s
    FROM picked WHERE s.id = picked.id
    RETURNING s.id, s.user_id
), recorded AS (
    INSERT INTO improvement_improvementattempt (session_id, user_id, run_id, claimed_at, lease_until, outcome, detail)
    SELECT id, user_id, %(run)s, %(now)s, %(lease)s, 'processing', '' FROM claimed
)
SELECT id, user_id FROM claimed ORDER BY id
"""


def claim_batch(
    *,
    run_id: int,
    received_before: datetime,
    batch_size: int | None = None,
    lease_seconds: int | None = None,
    user_id: str | None = None,
) -> Claim | None:
    """Claim up to ``batch_size`` ready sessions of users no other run holds; None when none is ready.
    ``user_id`` limits the claim to that user's sessions (the demo page's "Improve now").

    See the module docstring for why claimers are serialized and users are claimed whole.
    """
    batch_size = batch_size or settings.IMPROVEMENT_BATCH_SIZE
    lease_seconds = lease_seconds if lease_seconds is not None else settings.IMPROVEMENT_LEASE_SECONDS
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CLAIM_LOCK_KEY])
        cursor.execute(_REAP, {"limit": 10_000, "max": settings.IMPROVEMENT_MAX_ATTEMPTS})
        # clock_timestamp() read once, under the lock: claims are serialized, so every claim's
        # lease_until differs from every other's and can serve as its fencing token.
        cursor.execute(
            "SELECT clock_timestamp(), clock_timestamp() + make_interval(secs => %s)", [float(lease_seconds)]
        )
        now, lease_until = cursor.fetchone()
        params = {
            "before": received_before,
            "lease": lease_until,
            "run": run_id,
            "now": now,
            "user": user_id,
            "max_attempts": settings.IMPROVEMENT_MAX_ATTEMPTS,
        }
        # A session given back after a crash may be what crashed its batch. Its first retries go with a
        # batch again (one crash costs one redo, and the redone batch learns exactly what the lost one
        # would have); on its last attempt it is claimed alone, so a poison session fails by itself
        # after IMPROVEMENT_MAX_ATTEMPTS and its batch-mates are learned.
        cursor.execute(_CLAIM, {**params, "last_attempt": True, "limit": 1})
        rows = cursor.fetchall()
        if not rows:
            cursor.execute(_CLAIM, {**params, "last_attempt": False, "limit": batch_size})
            rows = cursor.fetchall()
    if not rows:
        return None
    return Claim(
        run_id=run_id,
        session_pks=[int(pk) for pk, _ in rows],
        users={int(pk): user for pk, user in rows},
        lease_until=lease_until,
        claimed_at=now,
    )


_RELEASE = """
WITH released AS (
    UPDATE clickstream_session s SET
        attempts = s.attempts + 1,
        lease_until = NULL,
        improvement_status = CASE WHEN s.attempts + 1 >= %(max)s THEN 'failed' ELSE 'pending' END,
        improvement_detail = %(reason)s
    FROM unnest(%(ids)s::bigint[], %(leases)s::timestamptz[]) AS own(id, lease_until)
    WHERE s.id = own.id AND s.improvement_status = 'processing' AND s.lease_until = own.lease_until
    RETURNING s.id
)
UPDATE improvement_improvementattempt a
SET outcome = 'released', finished_at = clock_timestamp(), detail = %(reason)s
FROM released WHERE a.session_id = released.id AND a.run_id = %(run)s AND a.outcome = 'processing'
"""


def release_claim(*, claim: Claim, reason: str) -> int:
    """Give a claim's sessions back (``pending``, ``attempts`` + 1, or failed at the maximum) when its
    run cannot finish it (time limit, error). Fenced: only sessions still under this claim's lease."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _RELEASE,
            {
                "ids": claim.session_pks,
                "leases": [claim.lease_until] * len(claim.session_pks),
                "max": settings.IMPROVEMENT_MAX_ATTEMPTS,
                "reason": reason[:1000],
                "run": claim.run_id,
            },
        )
        return cursor.rowcount


def release_run_claims(*, run_id: int, reason: str) -> int:
    """Give back whatever an earlier try of this run still holds (a retried task starts with this)."""
    open_attempts = list(
        ImprovementAttempt.objects.filter(run_id=run_id, outcome=AttemptOutcome.PROCESSING).values_list(
            "session_id", "lease_until"
        )
    )
    if not open_attempts:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _RELEASE,
            {
                "ids": [pk for pk, _ in open_attempts],
                "leases": [lease for _, lease in open_attempts],
                "max": settings.IMPROVEMENT_MAX_ATTEMPTS,
                "reason": reason,
                "run": run_id,
            },
        )
        released = cursor.rowcount
    # Attempts whose session is gone or was reaped meanwhile are closed too.
    ImprovementAttempt.objects.filter(run_id=run_id, outcome=AttemptOutcome.PROCESSING).update(
        outcome=AttemptOutcome.RELEASED, finished_at=timezone.now(), detail=reason
    )
    return released


# --- one batch ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector during a batch: a batch holds ~10⁶ small objects (rows,
    tuples, lists), and every full collection would walk them all, costing seconds per batch.
    Our batch objects form no reference cycles; reference counting frees them as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _query_problems(candidates: list[batch.Candidate], verdicts: dict[int, batch.Verdict], metric: str) -> None:
    for candidate in candidates:
        query = candidate.query
        if query is None:
            continue
        if not np.isfinite(query).all():
            verdicts[candidate.pk] = batch.failed("bad_query_vector", "query vector is not finite")
        elif metric == "cosine" and float(np.linalg.norm(query)) == 0.0:
            verdicts[candidate.pk] = batch.failed("bad_query_vector", "query vector has zero length (cosine)")


def _embed_missing(candidates: list[batch.Candidate], verdicts: dict[int, batch.Verdict]) -> dict[int, np.ndarray]:
    """Embed the queries of candidates registered without a vector, in one call."""
    missing = [c for c in candidates if c.query is None]
    for candidate in missing:
        if not candidate.text:
            verdicts[candidate.pk] = batch.failed("no_query", "no query vector and no query text to embed")
    with_text = [c for c in missing if c.text]
    if not with_text:
        return {}
    texts = sorted({c.text for c in with_text})
    try:
        vectors = embedding.embed_texts(texts)
    except embedding.EmbedderUnavailable:
        for candidate in with_text:
            verdicts[candidate.pk] = batch.failed(
                "no_query", "no query vector, and the embedder is off (STUDIO_EMBEDDER=none) to embed its text"
            )
        return {}
    by_text = dict(zip(texts, vectors, strict=True))
    embedded = {}
    for candidate in with_text:
        candidate.query = by_text[candidate.text]
        embedded[candidate.pk] = candidate.query
    return embedded


def _store_query_vectors(vectors: dict[int, np.ndarray]) -> None:
    from clickstream.services import set_query_vectors

    set_query_vectors(vectors={pk: vector.tolist() for pk, vector in vectors.items()})


_FENCE = """
SELECT id, (improvement_status = 'processing' AND lease_until = %(lease)s AND lease_until > clock_timestamp())
FROM clickstream_session WHERE id = ANY(%(ids)s::bigint[])
ORDER BY id
FOR NO KEY UPDATE  -- not FOR UPDATE: event inserts (FK checks take FOR KEY SHARE) must not wait on a batch
"""

_FINISH_SESSIONS = """
UPDATE clickstream_session s
SET improvement_status = v.status, improvement_detail = v.detail, lease_until = NULL, improved_at = %(now)s
FROM unnest(%(ids)s::bigint[], %(status)s::text[], %(detail)s::text[]) AS v(id, status, detail)
WHERE s.id = v.id
"""

_FINISH_ATTEMPTS = """
UPDATE improvement_improvementattempt a
SET outcome = v.status, detail = v.detail, finished_at = %(now)s
FROM unnest(%(ids)s::bigint[], %(status)s::text[], %(detail)s::text[]) AS v(id, status, detail)
WHERE a.session_id = v.id AND a.run_id = %(run)s AND a.outcome = 'processing'
"""


def _fence(cursor, claim: Claim) -> set[int]:
    """Lock the claim's sessions; raise LeaseLost unless every one still holds our lease. Returns the
    sessions that still exist (a user deleted meanwhile takes their sessions with them)."""
    cursor.execute(_FENCE, {"lease": claim.lease_until, "ids": claim.session_pks})
    rows = cursor.fetchall()
    lost = [pk for pk, ours in rows if not ours]
    if lost:
        raise LeaseLost(f"{len(lost)} of {len(claim.session_pks)} sessions are no longer under this batch's lease")
    return {int(pk) for pk, _ in rows}


def process_claim(
    *, claim: Claim, params: AdjusterParams, adjust: batch.AdjustFn | None = None, claim_seconds: float = 0.0
) -> BatchReport:
    """Read, adjust and write one claimed batch; raises LeaseLost (nothing written) if the lease is gone."""
    adjust = adjust or adjuster.adjust
    seconds: dict[str, float] = {"claim": claim_seconds}
    started = time.perf_counter()
    inputs = selectors.batch_inputs(session_pks=claim.session_pks)
    object_ids = sorted({object_id for rows in inputs.shown.values() for _, object_id in rows})
    originals = personalization.original_vectors(object_ids=object_ids)
    verdicts, candidates = batch.plan_sessions(
        inputs=inputs,
        present=originals,
        event_weights=settings.IMPROVEMENT_EVENT_WEIGHTS,
        negatives_policy=settings.IMPROVEMENT_NEGATIVES,
    )
    seconds["load"] = time.perf_counter() - started

    mark = time.perf_counter()
    embedded = _embed_missing(candidates, verdicts)
    _query_problems(candidates, verdicts, params.metric)
    candidates = [c for c in candidates if c.pk not in verdicts]
    seconds["embed"] = time.perf_counter() - mark

    mark = time.perf_counter()
    keys = sorted({(c.user_id, originals[oid].pk) for c in candidates for _, oid in c.shown})
    copies = personalization.user_copy_vectors(keys=keys)
    problem = batch.build_problem(candidates=candidates, originals=originals, copies=copies)
    seconds["load"] += time.perf_counter() - mark

    mark = time.perf_counter()
    objects = problem.adjuster_objects()
    if problem.examples:
        result = batch.adjust_isolating_failures(
            adjust=adjust,
            objects=objects,
            examples=problem.examples,
            users=[c.user_id for c in candidates],
            params=params,
            reraise=(SoftTimeLimitExceeded,),
        )
    else:
        result = batch.IsolatedResult(vectors=[], changed=[], metrics={})
    seconds["adjust"] = time.perf_counter() - mark

    mark = time.perf_counter()
    # A non-finite vector (an extreme learning rate) fails every session that touched it.
    diverged = {i for i, vector in enumerate(result.vectors) if vector is not None and not np.isfinite(vector).all()}
    used = np.zeros(len(candidates), dtype=bool)
    for number, (candidate, example) in enumerate(zip(candidates, problem.examples, strict=True)):
        touched = set(example.clicked) | set(example.negatives)
        if number in result.failures:
            verdicts[candidate.pk] = batch.failed("adjuster_error", result.failures[number][:1000])
        elif touched & diverged:
            verdicts[candidate.pk] = batch.failed(
                "diverged", "the adjuster produced non-finite vectors (lower IMPROVEMENT_LR)"
            )
        else:
            used[number] = True
            verdicts[candidate.pk] = batch.Verdict(
                batch.DONE, "used", f"learned from {len(example.clicked)} click(s), {len(example.negatives)} pushed"
            )
    # Written: what the used sessions moved. Failed sessions were left out of the vectors returned
    # (isolated or retrained without them); an object only they touched keeps its stored vector.
    taught: set[int] = set()
    for number, example in enumerate(problem.examples):
        if used[number]:
            taught.update(example.clicked)
            taught.update(example.negatives)
    written_objects = [
        i
        for i, vector in enumerate(result.vectors)
        if vector is not None and result.changed[i] and i in taught and i not in diverged
    ]
    after = list(problem.start)
    for i in written_objects:
        after[problem.adjusted_keys[i]] = np.asarray(result.vectors[i], dtype=np.float32)
    queries = (
        np.stack([c.query for c in candidates]).astype(np.float32)
        if candidates
        else np.zeros((0, settings.STUDIO_EMBEDDING_DIM), dtype=np.float32)
    )
    totals = batch.ranking_totals(problem=problem, queries=queries, after=after, used=used, metric=params.metric)
    seconds["metrics"] = time.perf_counter() - mark

    mark = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        present = _fence(cursor, claim)
        vanished = [pk for pk in claim.session_pks if pk not in present]
        gone_users = {claim.users[pk] for pk in vanished}
        writes = []
        for i in written_objects:
            key = problem.keys[problem.adjusted_keys[i]]
            if key[0] in gone_users:
                continue  # the user was deleted during the run: learn nothing for them
            k = problem.adjusted_keys[i]
            writes.append(
                personalization.CopyWrite(
                    user_id=key[0],
                    original_pk=key[1],
                    original_object_id=problem.object_ids[k],
                    vectors=after[k],
                    original_vectors=problem.original[k],
                    is_average=problem.is_average[k],
                )
            )
        stored_vectors = {pk: v for pk, v in embedded.items() if pk in present}
        if stored_vectors:
            _store_query_vectors(stored_vectors)
        report = personalization.write_copies(copies=writes, run_id=claim.run_id)
        finals = [(pk, verdicts[pk]) for pk in claim.session_pks if pk in present]
        now = timezone.now()
        values = {
            "ids": [pk for pk, _ in finals],
            "status": [v.status for _, v in finals],
            "detail": [v.detail for _, v in finals],
            "now": now,
            "run": claim.run_id,
        }
        cursor.execute(_FINISH_SESSIONS, values)
        values["ids"] += vanished
        values["status"] += [AttemptOutcome.FAILED] * len(vanished)
        values["detail"] += ["session deleted during the run"] * len(vanished)
        cursor.execute(_FINISH_ATTEMPTS, values)

        counted = Counter((v.status, v.reason) for _, v in finals)
        batch_report = BatchReport(
            claimed=len(claim.session_pks),
            used=counted[(batch.DONE, "used")],
            failed=sum(n for (status, _), n in counted.items() if status == batch.FAILED) + len(vanished),
            skipped={reason: n for (status, reason), n in counted.items() if status == batch.SKIPPED},
            failed_reasons={reason: n for (status, reason), n in counted.items() if status == batch.FAILED},
            objects_personalized=len(writes),
            seconds=seconds,
        )
        if vanished:
            batch_report.failed_reasons["session_deleted"] = len(vanished)
        seconds["write"] = time.perf_counter() - mark
        _record_batch(
            run_id=claim.run_id,
            report=batch_report,
            totals=totals,
            drifts=report.drifts,
            adjuster_metrics=result.metrics,
            adjusted_sessions=int(used.sum()),
        )
    return batch_report


# --- run bookkeeping ----------------------------------------------------------------------------


def _empty_totals() -> dict:
    return {
        "clicked": 0.0,
        "clicked_rank_before": 0.0,
        "clicked_rank_after": 0.0,
        "clicked_similarity_change": 0.0,
        "pushed": 0.0,
        "pushed_similarity_change": 0.0,
        "adjusted_sessions": 0,
        "loss_before": 0.0,
        "loss_after": 0.0,
        "drift_histogram": [0] * (len(batch.DRIFT_EDGES) - 1),
        "drift_max": 0.0,
        "failed_reasons": {},
        "lease_lost_batches": 0,
        "released_batches": 0,
        "seconds": {},
    }


def summarize(totals: dict) -> dict:
    """The run's headline metrics from its running totals."""
    summary: dict = {}
    clicked = totals.get("clicked", 0)
    if clicked:
        summary["clicked_rank_before"] = round(totals["clicked_rank_before"] / clicked, 4)
        summary["clicked_rank_after"] = round(totals["clicked_rank_after"] / clicked, 4)
        summary["clicked_similarity_change"] = totals["clicked_similarity_change"] / clicked
    if totals.get("pushed"):
        summary["pushed_similarity_change"] = totals["pushed_similarity_change"] / totals["pushed"]
    if totals.get("adjusted_sessions"):
        summary["loss_before"] = totals["loss_before"] / totals["adjusted_sessions"]
        summary["loss_after"] = totals["loss_after"] / totals["adjusted_sessions"]
    summary.update(batch.drift_percentiles(totals.get("drift_histogram", []), totals.get("drift_max", 0.0)))
    if totals.get("failed_reasons"):
        summary["failed_by_reason"] = dict(totals["failed_reasons"])
    for name in ("lease_lost_batches", "released_batches"):
        if totals.get(name):
            summary[name] = totals[name]
    summary["seconds"] = {name: round(value, 4) for name, value in totals.get("seconds", {}).items()}
    return summary


def _record_batch(
    *,
    run_id: int,
    report: BatchReport,
    totals: dict,
    drifts: np.ndarray,
    adjuster_metrics: dict,
    adjusted_sessions: int,
) -> None:
    """Add a batch to its run (inside the batch's write transaction)."""
    run = ImprovementRun.objects.select_for_update().get(pk=run_id)
    run_totals = {**_empty_totals(), **run.metrics.get("totals", {})}
    for name, value in totals.items():
        run_totals[name] += value
    run_totals["adjusted_sessions"] += adjusted_sessions
    for name in ("loss_before", "loss_after"):
        value = adjuster_metrics.get(name)
        if isinstance(value, (int, float)) and np.isfinite(value):
            run_totals[name] += float(value) * adjusted_sessions
    histogram = np.asarray(run_totals["drift_histogram"]) + np.asarray(batch.drift_histogram(drifts))
    run_totals["drift_histogram"] = histogram.astype(int).tolist()
    if len(drifts):
        run_totals["drift_max"] = max(run_totals["drift_max"], float(np.max(drifts)))
    for reason, count in report.failed_reasons.items():
        run_totals["failed_reasons"][reason] = run_totals["failed_reasons"].get(reason, 0) + count
    for stage, value in report.seconds.items():
        run_totals["seconds"][stage] = run_totals["seconds"].get(stage, 0.0) + value
    run.claimed += report.claimed
    run.used += report.used
    run.failed += report.failed
    run.objects_personalized += report.objects_personalized
    run.batches += 1
    skipped = dict(run.skipped)
    for reason, count in report.skipped.items():
        skipped[reason] = skipped.get(reason, 0) + count
    run.skipped = skipped
    run.metrics = {**summarize(run_totals), "totals": run_totals}
    run.save(update_fields=["claimed", "used", "failed", "objects_personalized", "batches", "skipped", "metrics"])


def _count_on_run(run_id: int, name: str) -> None:
    with transaction.atomic():
        run = ImprovementRun.objects.select_for_update().get(pk=run_id)
        totals = {**_empty_totals(), **run.metrics.get("totals", {})}
        totals[name] += 1
        run.metrics = {**summarize(totals), "totals": totals}
        run.save(update_fields=["metrics"])


def _begin_run(run_id: int, params: AdjusterParams, scope: dict | None = None) -> bool:
    """Mark a run running (first try or a retry); False if it already finished. ``scope`` records
    what a narrowed run overrode (settle time, user) beside its parameters."""
    with transaction.atomic():
        run = ImprovementRun.objects.select_for_update().get(pk=run_id)
        if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            return False
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or timezone.now()
        run.parameters = {**run_parameters(params), **(scope or {})}
        run.save(update_fields=["status", "started_at", "parameters"])
    return True


def finish_run(*, run_id: int, status: str, error: str = "") -> ImprovementRun:
    """Close a run: status, finish time, duration, sessions per second, error text."""
    with transaction.atomic():
        run = ImprovementRun.objects.select_for_update().get(pk=run_id)
        now = timezone.now()
        run.status = status
        run.finished_at = now
        run.error = error[:10_000]
        if run.started_at:
            run.duration_seconds = max((now - run.started_at).total_seconds(), 1e-6)
            run.sessions_per_second = run.claimed / run.duration_seconds
        run.save(update_fields=["status", "finished_at", "error", "duration_seconds", "sessions_per_second"])
    return run


def execute_run(
    *,
    run_id: int,
    progress: Callable[[BatchReport], None] | None = None,
    adjust: batch.AdjustFn | None = None,
    settle_seconds: int | None = None,
    user_id: str | None = None,
) -> ImprovementRun:
    """Run an improvement run to its end, in this process (the task, ``manage.py improve`` and the
    evaluation call it). Idempotent: a finished run is returned as it is; a retried one first gives
    back what its earlier try still held, and never repeats a committed batch.

    ``settle_seconds`` (default ``IMPROVEMENT_SETTLE_SECONDS``) and ``user_id`` (default: every user)
    narrow a run; the demo page's "Improve now" uses both (0 s, its user), recorded on the run.

    Transient errors (database or broker gone) propagate with the run left ``running`` so that the
    caller may retry; any other error fails the run and propagates.
    """
    params = adjuster_params()
    settle = settings.IMPROVEMENT_SETTLE_SECONDS if settle_seconds is None else settle_seconds
    scope = {"settle_seconds": settle, **({"user_id": user_id} if user_id is not None else {})}
    if not _begin_run(run_id, params, scope):
        return ImprovementRun.objects.get(pk=run_id)
    release_run_claims(run_id=run_id, reason="its run was restarted before finishing it; back in the queue")
    started = time.perf_counter()
    budget = settings.IMPROVEMENT_TIME_LIMIT_SECONDS * TIME_BUDGET_FRACTION
    received_before = timezone.now() - timedelta(seconds=settle)
    note = ""
    try:
        while True:
            if time.perf_counter() - started > budget:
                note = "stopped claiming at the time budget; the rest waits for the next run"
                break
            mark = time.perf_counter()
            claim = claim_batch(run_id=run_id, received_before=received_before, user_id=user_id)
            if claim is None:
                break
            try:
                with _gc_paused():
                    report = process_claim(
                        claim=claim, params=params, adjust=adjust, claim_seconds=time.perf_counter() - mark
                    )
            except LeaseLost as exc:
                logger.warning("run %s: batch of %d sessions dropped: %s", run_id, len(claim.session_pks), exc)
                _count_on_run(run_id, "lease_lost_batches")
                continue
            except BaseException as exc:
                _release_quietly(claim, exc)
                raise
            if progress is not None:
                progress(report)
    except TRANSIENT_ERRORS:
        raise
    except SoftTimeLimitExceeded:
        return finish_run(run_id=run_id, status=RunStatus.SUCCEEDED, error="stopped at the soft time limit")
    except Exception as exc:
        logger.exception("run %s failed", run_id)
        finish_run(run_id=run_id, status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        raise
    return finish_run(run_id=run_id, status=RunStatus.SUCCEEDED, error=note)


def _release_quietly(claim: Claim, exc: BaseException) -> None:
    """Give a batch back after an error; if the database is gone too, its lease expires instead."""
    try:
        release_claim(claim=claim, reason=f"its run stopped: {type(exc).__name__}: {exc}"[:1000])
        _count_on_run(claim.run_id, "released_batches")
    except Exception:  # noqa: BLE001  the reaper returns the batch when its lease runs out
        logger.warning("run %s: could not give back a batch; its lease will expire", claim.run_id, exc_info=True)


# --- users --------------------------------------------------------------------------------------


@transaction.atomic
def forget_user(*, user_id: str) -> dict[str, int]:
    """Delete everything studio knows about a user: clickstream rows, attempts, personalized copies.

    Sessions go first (their rows are locked), so a batch writing this user's copies right now
    either commits before (and its copies are deleted here) or finds the sessions gone and writes
    nothing for this user.
    """
    from clickstream.services import forget_user as forget_clickstream_user

    # Attempts go with their sessions (ON DELETE CASCADE, migration 0004): count them first to report them.
    attempts = ImprovementAttempt.objects.filter(user_id=user_id).count()
    counts = dict(forget_clickstream_user(user_id=user_id))
    counts["improvement_attempts"] = attempts + ImprovementAttempt.objects.filter(user_id=user_id).delete()[0]
    counts.update(personalization.delete_user_copies(user_id=user_id))
    # A run narrowed to this user (the demo's "Improve now") names them in its parameters.
    narrowed = list(ImprovementRun.objects.filter(parameters__user_id=user_id))
    for run in narrowed:
        run.parameters.pop("user_id", None)
    ImprovementRun.objects.bulk_update(narrowed, ["parameters"])
    counts["improvement_runs_redacted"] = len(narrowed)
    return counts
