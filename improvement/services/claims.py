"""Claims and leases: how a run takes settled sessions, holds them, gives them back, and how the
reaper returns what a lost worker held (docs/architecture.md, "The claim/lease protocol").

A run loops over batches until no ready session is left (or its time budget is spent):

1. **claim** (one short transaction): take the claimers' advisory lock, reap expired leases, pick up
   to ``IMPROVEMENT_BATCH_SIZE`` ready sessions of users that no other run is processing, mark them
   ``processing`` with one lease for the whole batch, and record an attempt per session;
2. **read** everything the batch needs in bulk (sessions, shown results, events, originals, the
   users' current copies), embed missing query vectors in one call;
3. **adjust** with the torch adjuster (``improvement.learning.adjuster``), isolating sessions that make it fail;
4. **write** (one transaction): fence on the lease, upsert the copies (``studio.catalogue.personalization``),
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

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from improvement.models import AttemptOutcome, ImprovementAttempt, ImprovementRun, RunStatus
from improvement.selectors import READY_SESSION_SQL

# Key of the advisory lock that serializes claimers (any constant; all workers share it).
CLAIM_LOCK_KEY = 0x57D10_1A1


class LeaseLost(Exception):
    """The batch's lease is no longer ours: its writes were rolled back."""


@dataclass
class Claim:
    """Sessions claimed together by one run, under one lease (also the fencing token)."""

    run_id: int
    session_pks: list[int]
    users: dict[int, str | None]  # session pk → user_id (None: anonymous, teaches the shared tier only)
    lease_until: datetime
    claimed_at: datetime
    retried: bool = False  # holds a session given back after a crash: it may be what crashed


# Claims whose lease ran out, and claims of runs whose worker went silent (no heartbeat for the grace
# period: killed, OOM, a lost machine), which go back without waiting for their lease.
_REAP = """
WITH expired AS (
    -- driven by the few sessions in processing (a partial index), never by the attempts' history
    SELECT s.id FROM clickstream_session s
    WHERE s.improvement_status = 'processing'
      AND (s.lease_until < clock_timestamp() OR EXISTS (
          -- its open claim belongs to a run that ended, or whose worker is silent past the grace period
          SELECT 1 FROM improvement_improvementattempt a JOIN improvement_improvementrun r ON r.id = a.run_id
          WHERE a.session_id = s.id AND a.outcome = 'processing'
            AND (r.status IN ('succeeded', 'failed')
                 OR (r.status = 'running' AND r.heartbeat_at < clock_timestamp() - make_interval(secs => %(grace)s)))))
    ORDER BY s.lease_until
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED  -- a row locked by a batch's write transaction is being finished: leave it
), reaped AS (
    UPDATE clickstream_session s SET
        attempts = s.attempts + 1,
        lease_until = NULL,
        improvement_status = CASE WHEN s.attempts + 1 >= %(max)s THEN 'failed' ELSE 'pending' END,
        improvement_detail = CASE WHEN s.attempts + 1 >= %(max)s
            THEN 'claim lost ' || (s.attempts + 1) || ' times (worker lost or run too slow); given up'
            ELSE 'claim lost: lease expired or its worker went silent (attempt ' || (s.attempts + 1)
                 || '); back in the queue' END
    FROM expired WHERE s.id = expired.id
    RETURNING s.id, s.improvement_status
), closed AS (
    UPDATE improvement_improvementattempt a
    SET outcome = 'expired', finished_at = clock_timestamp(),
        detail = 'lease expired or its worker went silent; the reaper gave it back'
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
        cursor.execute(_REAP, reap_params(limit=limit))
        returned, failed_count = cursor.fetchone()
    return {"returned": int(returned), "failed": int(failed_count), "runs_failed": fail_lost_runs()}


def reap_params(*, limit: int) -> dict:
    """The reaper statement's parameters."""
    return {
        "limit": limit,
        "max": settings.IMPROVEMENT_MAX_ATTEMPTS,
        "grace": float(settings.IMPROVEMENT_WORKER_GRACE_SECONDS),
    }


def fail_lost_runs() -> int:
    """Fail running runs that are lost: their worker went silent for the grace period, or (runs from before
    heartbeats) their task would have been redelivered long ago (visibility timeout)."""
    now = timezone.now()
    silent = Q(heartbeat_at__lt=now - timedelta(seconds=settings.IMPROVEMENT_WORKER_GRACE_SECONDS))
    redelivered_long_ago = now - timedelta(seconds=3 * settings.IMPROVEMENT_TIME_LIMIT_SECONDS + 120)
    ancient = Q(heartbeat_at__isnull=True, started_at__lt=redelivered_long_ago)
    return ImprovementRun.objects.filter(silent | ancient, status=RunStatus.RUNNING).update(
        status=RunStatus.FAILED,
        finished_at=now,
        error="lost: its worker stopped before it finished (no heartbeat); its sessions went back to the queue",
    )


_CLAIM = f"""
WITH busy AS (
    -- users another run is processing right now (expired leases were reaped just before)
    SELECT DISTINCT user_id FROM clickstream_session
    WHERE improvement_status = 'processing' AND user_id IS NOT NULL
), picked AS (
    SELECT id, attempts FROM clickstream_session
    WHERE {READY_SESSION_SQL}
      AND (%(user)s::text IS NULL OR user_id = %(user)s)
      AND (%(fresh_only)s OR (attempts > 0 AND attempts + 1 >= %(max_attempts)s) = %(last_attempt)s)
      AND (user_id IS NULL OR user_id NOT IN (SELECT user_id FROM busy))
    ORDER BY received_at
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
), claimed AS (
    UPDATE clickstream_session s SET improvement_status = 'processing', lease_until = %(lease)s
    FROM picked WHERE s.id = picked.id
      -- fresh_only: nothing, if a session given back after a crash is next in line (see _claim_rows)
      AND NOT (%(fresh_only)s AND EXISTS (SELECT 1 FROM picked WHERE attempts > 0))
    RETURNING s.id, s.user_id, s.attempts
), recorded AS (
    INSERT INTO improvement_improvementattempt (session_id, user_id, run_id, claimed_at, lease_until, outcome, detail)
    SELECT id, coalesce(user_id, ''), %(run)s, %(now)s, %(lease)s, 'processing', '' FROM claimed
)
SELECT id, user_id, attempts FROM claimed ORDER BY id
"""


def claim_batch(
    *,
    run_id: int,
    received_before: datetime,
    batch_size: int | None = None,
    lease_seconds: int | None = None,
    user_id: str | None = None,
    fresh_only: bool = False,
) -> Claim | None:
    """Claim up to ``batch_size`` ready sessions of users no other run holds; None when none is ready.
    ``user_id`` limits the claim to that user's sessions (the demo page's "Improve now"). ``fresh_only``
    (a claim made while another batch of the run is in flight): None as well when a session given back
    after a crash is next in line, so that such sessions are claimed only with nothing else in flight.

    See the module docstring for why claimers are serialized and users are claimed whole.
    """
    lease_seconds = lease_seconds if lease_seconds is not None else settings.IMPROVEMENT_LEASE_SECONDS
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CLAIM_LOCK_KEY])
        cursor.execute(_REAP, reap_params(limit=10_000))
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
            "fresh_only": fresh_only,
        }
        rows = _claim_rows(cursor, params, batch_size or settings.IMPROVEMENT_BATCH_SIZE)
    if not rows:
        return None
    pks = [int(pk) for pk, _, _ in rows]
    return Claim(
        run_id=run_id,
        session_pks=pks,
        users=dict(zip(pks, (u for _, u, _ in rows), strict=True)),
        lease_until=lease_until,
        claimed_at=now,
        retried=any(attempts > 0 for _, _, attempts in rows),
    )


def _claim_rows(cursor, params: dict, batch_size: int) -> list[tuple[int, str, int]]:
    # A session given back after a crash may be what crashed its batch. Its first retries go with a
    # batch again (one crash costs one redo, and the redone batch learns exactly what the lost one
    # would have); on its last attempt it is claimed alone, so a poison session fails by itself
    # after IMPROVEMENT_MAX_ATTEMPTS and its batch-mates are learned. A claim made while another batch
    # is in flight (fresh_only) takes none of them: a crash then would also cost that batch an attempt.
    rows = []
    if not params["fresh_only"]:
        cursor.execute(_CLAIM, {**params, "last_attempt": True, "limit": 1})
        rows = cursor.fetchall()
    if not rows:
        cursor.execute(_CLAIM, {**params, "last_attempt": False, "limit": batch_size})
        rows = cursor.fetchall()
    return rows


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
    leases = [claim.lease_until] * len(claim.session_pks)
    return _release(run_id=claim.run_id, session_pks=claim.session_pks, leases=leases, reason=reason[:1000])


def release_run_claims(*, run_id: int, reason: str) -> int:
    """Give back whatever an earlier try of this run still holds (a retried task starts with this)."""
    open_attempts = ImprovementAttempt.objects.filter(run_id=run_id, outcome=AttemptOutcome.PROCESSING)
    held = list(open_attempts.values_list("session_id", "lease_until"))
    if not held:
        return 0
    released = _release(
        run_id=run_id, session_pks=[pk for pk, _ in held], leases=[lease for _, lease in held], reason=reason
    )
    # Attempts whose session is gone or was reaped meanwhile are closed too.
    open_attempts.update(outcome=AttemptOutcome.RELEASED, finished_at=timezone.now(), detail=reason)
    return released


def _release(*, run_id: int, session_pks: list[int], leases: list[datetime], reason: str) -> int:
    values = {"ids": session_pks, "leases": leases, "max": settings.IMPROVEMENT_MAX_ATTEMPTS, "reason": reason}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_RELEASE, {**values, "run": run_id})
        return cursor.rowcount


_FENCE = """
SELECT id, (improvement_status = 'processing' AND lease_until = %(lease)s AND lease_until > clock_timestamp())
FROM clickstream_session WHERE id = ANY(%(ids)s::bigint[])
ORDER BY id
FOR NO KEY UPDATE  -- not FOR UPDATE: event inserts (FK checks take FOR KEY SHARE) must not wait on a batch
"""


def fence(cursor, claim: Claim) -> set[int]:
    """Lock the claim's sessions; raise LeaseLost unless every one still holds our lease. Returns the
    sessions that still exist (a user deleted meanwhile takes their sessions with them)."""
    cursor.execute(_FENCE, {"lease": claim.lease_until, "ids": claim.session_pks})
    rows = cursor.fetchall()
    lost = [pk for pk, ours in rows if not ours]
    if lost:
        raise LeaseLost(f"{len(lost)} of {len(claim.session_pks)} sessions are no longer under this batch's lease")
    return {int(pk) for pk, _ in rows}
