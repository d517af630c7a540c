"""One claimed batch, in stages: load → plan → adjust → decide → write.

``process_claim`` is the sequence, in two halves: ``load_claim`` (read, plan, embed: no writes, so a run
may do it for the next batch in a second thread) and ``finish_claim`` (adjust, decide, write). Each stage
is a function of the ``LoadedBatch`` it fills in. Only the
write stage writes, in one transaction fenced on the claim's lease (``claims.fence``): a batch
whose lease was lost writes nothing. The pure parts (what a session teaches, failure isolation,
ranking metrics) are ``improvement.learning.batch``; the torch adjuster is imported at the first
batch that has something to adjust.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from improvement import selectors
from improvement.learning import batch as learning
from improvement.learning.params import AdjusterParams
from improvement.learning.totals import RunTotals, drift_histogram
from improvement.models import AttemptOutcome
from improvement.services.claims import Claim, fence
from improvement.services.metrics import BatchReport, record_batch
from studio.catalogue import embedding, personalization, shared
from studio.core.vectors import vector_literal

AdjustFn = learning.AdjustFn


def torch_adjuster() -> AdjustFn:
    """The torch adjuster (``improvement.learning.adjuster.adjust``), imported at the first call."""
    from improvement.learning import adjuster

    return adjuster.adjust


@contextlib.contextmanager
def gc_paused():
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


class StageClock:
    """Seconds spent per stage: ``with clock("load"): …`` adds the block's time to ``load``."""

    def __init__(self, **already: float):
        self.seconds: dict[str, float] = dict(already)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


@dataclass
class LoadedBatch:
    """What the stages of one batch hand each other (after ``load_claim``: everything read, nothing written)."""

    claim: Claim
    params: AdjusterParams
    clock: StageClock = field(default_factory=StageClock)
    originals: dict[str, personalization.StoredVectors] = field(default_factory=dict)
    verdicts: dict[int, learning.Verdict] = field(default_factory=dict)  # session pk → how it ends
    candidates: list[learning.Candidate] = field(default_factory=list)  # users' sessions that may teach
    anonymous: list[learning.Candidate] = field(default_factory=list)  # anonymous ones: the shared tier only
    embedded: dict[int, np.ndarray] = field(default_factory=dict)  # session pk → query embedded now
    problem: learning.Problem | None = None
    result: learning.IsolatedResult | None = None
    used: np.ndarray | None = None  # per candidate: taught this batch
    written: list[int] = field(default_factory=list)  # adjuster objects whose vectors are written
    after: list[np.ndarray] = field(default_factory=list)  # per key: vectors after the batch
    totals: RunTotals = field(default_factory=RunTotals)


def process_claim(
    *, claim: Claim, params: AdjusterParams, adjust: AdjustFn | None = None, claim_seconds: float = 0.0
) -> BatchReport:
    """Read, adjust and write one claimed batch; raises LeaseLost (nothing written) if the lease is gone."""
    return finish_claim(work=load_claim(claim=claim, params=params, claim_seconds=claim_seconds), adjust=adjust)


def load_claim(*, claim: Claim, params: AdjusterParams, claim_seconds: float = 0.0) -> LoadedBatch:
    """Read everything one claimed batch needs and lay it out for the adjuster; writes nothing."""
    work = LoadedBatch(claim=claim, params=params, clock=StageClock(claim=claim_seconds))
    with work.clock("load"):
        _load_and_plan(work)
    with work.clock("embed"):
        _embed_queries(work)
    with work.clock("load"):
        _build_problem(work)
    return work


def finish_claim(*, work: LoadedBatch, adjust: AdjustFn | None = None) -> BatchReport:
    """Adjust, decide and write a loaded batch; raises LeaseLost (nothing written) if the lease is gone."""
    if adjust is None and work.problem.examples:
        adjust = torch_adjuster()  # imported at the first batch with something to adjust, outside its timing
    with work.clock("adjust"):
        _adjust(work, adjust)
    with work.clock("metrics"):
        _decide(work)
    return _write(work)


# --- load and plan ------------------------------------------------------------------------------


def _load_and_plan(work: LoadedBatch) -> None:
    """Read the sessions, their results and events and the originals; decide which sessions may teach."""
    inputs = selectors.batch_inputs(session_pks=work.claim.session_pks)
    object_ids = sorted({object_id for rows in inputs.shown.values() for _, object_id in rows})
    work.originals = personalization.original_vectors(object_ids=object_ids)
    work.verdicts, work.candidates = learning.plan_sessions(
        inputs=inputs,
        present=work.originals,
        event_weights=settings.IMPROVEMENT_EVENT_WEIGHTS,
        negatives_policy=settings.IMPROVEMENT_NEGATIVES,
    )
    work.anonymous = [c for c in work.candidates if c.user_id is None]
    work.candidates = [c for c in work.candidates if c.user_id is not None]
    for candidate in work.anonymous:
        work.verdicts[candidate.pk] = _anonymous_verdict(candidate)


def _anonymous_verdict(candidate: learning.Candidate) -> learning.Verdict:
    """An anonymous session teaches the shared tier (its query text, its clicks), or nothing."""
    if not shared.shared_tier_on():
        return learning.skipped("anonymous", "anonymous, and the shared tier is off (IMPROVEMENT_SHARED_WEIGHT=0)")
    if not shared.normalize_query(candidate.text):
        return learning.skipped("anonymous_without_text", "anonymous with no query text: nothing to share")
    return learning.Verdict(learning.DONE, "shared", f"taught the shared tier {len(candidate.clicked)} click(s)")


def _embed_queries(work: LoadedBatch) -> None:
    """Embed the queries registered without a vector (one call), then drop candidates whose query is unusable."""
    work.embedded = _embed_missing(work.candidates, work.verdicts)
    for candidate in work.candidates:
        problem = _query_problem(candidate.query, work.params.metric)
        if problem:
            work.verdicts[candidate.pk] = learning.failed("bad_query_vector", problem)
    work.candidates = [c for c in work.candidates if c.pk not in work.verdicts]


def _query_problem(query: np.ndarray | None, metric: str) -> str:
    if query is None:
        return ""
    if not np.isfinite(query).all():
        return "query vector is not finite"
    if metric == "cosine" and float(np.linalg.norm(query)) == 0.0:
        return "query vector has zero length (cosine)"
    return ""


def _embed_missing(
    candidates: list[learning.Candidate], verdicts: dict[int, learning.Verdict]
) -> dict[int, np.ndarray]:
    """Embed the queries of candidates registered without a vector, in one call."""
    missing = [c for c in candidates if c.query is None]
    for candidate in missing:
        if not candidate.text:
            verdicts[candidate.pk] = learning.failed("no_query", "no query vector and no query text to embed")
    with_text = [c for c in missing if c.text]
    if not with_text:
        return {}
    texts = sorted({c.text for c in with_text})
    try:
        by_text = dict(zip(texts, embedding.embed_texts(texts), strict=True))
    except embedding.EmbedderUnavailable:
        detail = "no query vector, and the embedder is off (STUDIO_EMBEDDER=none) to embed its text"
        verdicts.update({c.pk: learning.failed("no_query", detail) for c in with_text})
        return {}
    for candidate in with_text:
        candidate.query = by_text[candidate.text]
    return {c.pk: c.query for c in with_text}


def _build_problem(work: LoadedBatch) -> None:
    """Read the users' current copies of every shown object and lay the batch out for the adjuster."""
    keys = sorted({(c.user_id, work.originals[oid].pk) for c in work.candidates for _, oid in c.shown})
    copies = _decayed(personalization.user_copy_vectors(keys=keys), work.originals)
    params = work.params
    work.problem = learning.build_problem(
        candidates=work.candidates,
        originals=work.originals,
        copies=copies,
        next_skipped=params.rule == "pairwise" and params.pair_next_weight > 0,
    )


def _decayed(copies: dict, originals: dict) -> dict:
    """The copies relaxed toward their originals by the time since they were last taught (the half-life)."""
    half_life, now = settings.IMPROVEMENT_HALF_LIFE_DAYS, timezone.now()
    by_pk = {stored.pk: stored for stored in originals.values()}
    for (_user, original_pk), copy in copies.items():
        factor = personalization.decay_factor(taught_at=copy.taught_at, now=now, half_life_days=half_life)
        original = by_pk.get(original_pk)
        if factor < 1.0 and original is not None and original.vectors.shape == copy.vectors.shape:
            copy.vectors = (original.vectors + factor * (copy.vectors - original.vectors)).astype(np.float32)
    return copies


# --- adjust and decide --------------------------------------------------------------------------


def _adjust(work: LoadedBatch, adjust: AdjustFn | None) -> None:
    """Run the adjuster over the batch, isolating the sessions that make it fail."""
    problem = work.problem
    if not problem.examples:
        work.result = learning.IsolatedResult(vectors=[], changed=[], metrics={})
        return
    work.result = learning.adjust_isolating_failures(
        adjust=adjust,
        objects=problem.adjuster_objects(),
        examples=problem.examples,
        users=[c.user_id for c in work.candidates],
        params=work.params,
        reraise=(SoftTimeLimitExceeded,),
    )


def _decide(work: LoadedBatch) -> None:
    """Each candidate's verdict, the vectors to write, and the batch's ranking totals."""
    vectors = work.result.vectors
    # A non-finite vector (an extreme learning rate) fails every session that touched it.
    diverged = {i for i, vector in enumerate(vectors) if vector is not None and not np.isfinite(vector).all()}
    work.used = _candidate_verdicts(work, diverged)
    # Written: what the used sessions moved. Failed sessions were left out of the vectors returned
    # (isolated or retrained without them); an object only they touched keeps its stored vector.
    taught = {i for n, e in enumerate(work.problem.examples) if work.used[n] for i in e.referenced_objects()}
    changed, keep = work.result.changed, taught - diverged  # the set once, not once per vector
    work.written = [i for i, v in enumerate(vectors) if v is not None and changed[i] and i in keep]
    work.after = list(work.problem.start)
    for i in work.written:
        work.after[work.problem.adjusted_keys[i]] = np.asarray(vectors[i], dtype=np.float32)
    work.totals = learning.ranking_totals(
        problem=work.problem, queries=_query_matrix(work), after=work.after, used=work.used, metric=work.params.metric
    )


def _candidate_verdicts(work: LoadedBatch, diverged: set[int]) -> np.ndarray:
    """Set each candidate's verdict after the adjuster; returns which candidates were used."""
    used = np.zeros(len(work.candidates), dtype=bool)
    failures = work.result.failures
    for number, (candidate, example) in enumerate(zip(work.candidates, work.problem.examples, strict=True)):
        if number in failures:
            work.verdicts[candidate.pk] = learning.failed("adjuster_error", failures[number][:1000])
        elif set(example.referenced_objects()) & diverged:
            detail = "the adjuster produced non-finite vectors (lower IMPROVEMENT_LR)"
            work.verdicts[candidate.pk] = learning.failed("diverged", detail)
        else:
            used[number] = True
            detail = f"learned from {len(example.clicked)} click(s), {len(example.negatives)} pushed"
            work.verdicts[candidate.pk] = learning.Verdict(learning.DONE, "used", detail)
    return used


def _query_matrix(work: LoadedBatch) -> np.ndarray:
    if not work.candidates:
        return np.zeros((0, settings.STUDIO_EMBEDDING_DIM), dtype=np.float32)
    return np.stack([c.query for c in work.candidates]).astype(np.float32)


# --- write --------------------------------------------------------------------------------------

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


def _write(work: LoadedBatch) -> BatchReport:
    """One transaction, fenced on the lease: copies, embedded queries, sessions and attempts, run counts."""
    claim = work.claim
    with transaction.atomic(), connection.cursor() as cursor:
        with work.clock("write"):
            present = fence(cursor, claim)
            vanished = [pk for pk in claim.session_pks if pk not in present]
            replaced = personalization.changed_originals(cursor, versions=_original_versions(work))
            gone = {claim.users[pk] for pk in vanished} - {None}
            writes = _copy_writes(work, gone_users=gone, replaced=replaced)
            stored = {pk: v.tolist() for pk, v in work.embedded.items() if pk in present}
            if stored:
                from clickstream.services import set_query_vectors

                set_query_vectors(vectors=stored)
            written = personalization.write_copies(copies=writes, run_id=claim.run_id)
            teachers = _shared_teachers(work, present=present, gone_users=gone)
            pk_of = {object_id: stored.pk for object_id, stored in work.originals.items()}
            shared.record_votes(
                votes=_shared_votes(teachers, pk_of=pk_of), query_vectors=_shared_query_vectors(teachers)
            )
            personalization.evict_beyond_cap(
                user_ids=[w.user_id for w in writes], cap=settings.IMPROVEMENT_MAX_COPIES_PER_USER
            )
            finals = [(pk, work.verdicts[pk]) for pk in claim.session_pks if pk in present]
            _finish_sessions(cursor, claim=claim, finals=finals, vanished=vanished)
        report = _report(claim, finals, vanished=vanished, personalized=len(writes), seconds=work.clock.seconds)
        record_batch(run_id=claim.run_id, report=report, totals=_batch_totals(work, report, written.drifts))
    return report


def _original_versions(work: LoadedBatch) -> dict[int, object]:
    """The ``updated_at`` of every original whose copy this batch would write, as read at load."""
    problem = work.problem
    keys = (problem.keys[problem.adjusted_keys[i]] for i in work.written)
    by_pk = {stored.pk: stored.version for stored in work.originals.values()}
    return {pk: by_pk[pk] for _user, pk in keys}


def _copy_writes(work: LoadedBatch, *, gone_users: set[str], replaced: set[int]) -> list[personalization.CopyWrite]:
    """The copies to write; none for a user deleted during the run (they are to be forgotten), none learned
    from an original that was re-upserted or deleted since the batch read it (its vectors are not ours)."""
    problem = work.problem
    writes = []
    for k in (problem.adjusted_keys[i] for i in work.written):
        user_id, original_pk = problem.keys[k]
        if user_id in gone_users or original_pk in replaced:
            continue
        writes.append(
            personalization.CopyWrite(
                user_id=user_id,
                original_pk=original_pk,
                original_object_id=problem.object_ids[k],
                vectors=work.after[k],
                original_vectors=problem.original[k],
                is_average=problem.is_average[k],
            )
        )
    return writes


def _shared_teachers(work: LoadedBatch, *, present: set[int], gone_users: set) -> list[learning.Candidate]:
    """The sessions that teach the shared tier in this batch: every one that taught (users' and anonymous
    ones) with a query text, still present and not of a user deleted during the run; none with the tier off."""
    if not shared.shared_tier_on():
        return []
    return [
        c
        for c in (*work.candidates, *work.anonymous)
        if c.pk in present
        and c.user_id not in gone_users
        and work.verdicts[c.pk].status == learning.DONE
        and shared.normalize_query(c.text)
    ]


def _shared_votes(teachers: list[learning.Candidate], *, pk_of: dict) -> dict:
    """The shared tier's votes of these sessions (one per voter, query and object)."""
    evidence = [
        shared.SessionEvidence(
            voter=shared.voter_of(user_id=c.user_id, session_pk=c.pk),
            query=shared.normalize_query(c.text),
            clicked=[pk_of[oid] for oid in c.clicked],
            skipped=[pk_of[oid] for oid in c.negatives],
        )
        for c in teachers
    ]
    return shared.votes_from_sessions(evidence, skip_weight=settings.IMPROVEMENT_SHARED_SKIP_WEIGHT)


def _shared_query_vectors(teachers: list[learning.Candidate]) -> dict[str, str]:
    """Per normalized query, the vector of a session that taught it (the last one with a usable vector)."""
    return {
        shared.normalize_query(c.text): vector_literal(c.query)
        for c in teachers
        if c.query is not None and not _query_problem(c.query, "cosine")  # similarity needs a finite, non-zero vector
    }


def _finish_sessions(cursor, *, claim: Claim, finals: list, vanished: list[int]) -> None:
    """Close the sessions with their verdicts and their attempts (a vanished session's attempt fails)."""
    values = {
        "ids": [pk for pk, _ in finals],
        "status": [v.status for _, v in finals],
        "detail": [v.detail for _, v in finals],
        "now": timezone.now(),
        "run": claim.run_id,
    }
    cursor.execute(_FINISH_SESSIONS, values)
    values["ids"] += vanished
    values["status"] += [AttemptOutcome.FAILED] * len(vanished)
    values["detail"] += ["session deleted during the run"] * len(vanished)
    cursor.execute(_FINISH_ATTEMPTS, values)


def _report(claim: Claim, finals: list, *, vanished: list[int], personalized: int, seconds: dict) -> BatchReport:
    counted = Counter((v.status, v.reason) for _, v in finals)
    failed_reasons = {reason: n for (status, reason), n in counted.items() if status == learning.FAILED}
    if vanished:
        failed_reasons["session_deleted"] = len(vanished)
    return BatchReport(
        claimed=len(claim.session_pks),
        used=counted[(learning.DONE, "used")],
        failed=sum(failed_reasons.values()),
        skipped={reason: n for (status, reason), n in counted.items() if status == learning.SKIPPED},
        failed_reasons=failed_reasons,
        objects_personalized=personalized,
        seconds=seconds,
    )


def _batch_totals(work: LoadedBatch, report: BatchReport, drifts: np.ndarray) -> RunTotals:
    """The batch's contribution to its run's totals: ranking sums, losses, drifts, failures, stage times."""
    totals = work.totals
    totals.adjusted_sessions = int(work.used.sum())
    for name in ("loss_before", "loss_after"):
        value = work.result.metrics.get(name)
        if isinstance(value, (int, float)) and np.isfinite(value):
            setattr(totals, name, float(value) * totals.adjusted_sessions)
    totals.drift_histogram = drift_histogram(drifts)
    totals.drift_max = float(np.max(drifts)) if len(drifts) else 0.0
    totals.failed_reasons = dict(report.failed_reasons)
    totals.seconds = dict(report.seconds)
    return totals
