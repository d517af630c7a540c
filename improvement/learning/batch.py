"""The pure part of an improvement batch (no database): what each session teaches, the adjuster's
inputs, failure isolation around the adjuster, and the before → after ranking metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from improvement.learning.params import AdjusterParams, AdjustResult, ObjectVectors, SessionExample
from improvement.learning.totals import RunTotals
from improvement.selectors import BatchInputs
from studio.catalogue.personalization import StoredVectors

logger = logging.getLogger(__name__)

DONE = "done"
SKIPPED = "skipped"
FAILED = "failed"

NEGATIVE_POLICIES = ("all", "above_last_click", "none")


@dataclass(frozen=True)
class Verdict:
    """How a session ends: ``status`` (done | skipped | failed), a short ``reason`` code (for counts)
    and the ``detail`` written to ``Session.improvement_detail``."""

    status: str
    reason: str
    detail: str


def skipped(reason: str, detail: str) -> Verdict:
    """A session that teaches nothing."""
    return Verdict(SKIPPED, reason, detail)


def failed(reason: str, detail: str) -> Verdict:
    """A session that could not be used."""
    return Verdict(FAILED, reason, detail)


@dataclass
class Candidate:
    """A ready session that will teach once it has a query vector."""

    pk: int
    user_id: str
    text: str
    query: np.ndarray | None
    shown: list[tuple[int, str]]  # present shown objects: (0-based position, object_id), in shown order
    clicked: dict[str, float]  # object_id → event weight
    negatives: list[str]


def click_weights(events: Sequence[tuple[str, str]], event_weights: Mapping[str, float]) -> dict[str, float]:
    """Per object, the largest weight of its events whose type is listed (others are ignored).

    The largest, not the sum: clicking the same result twice does not teach twice as much.
    """
    weights: dict[str, float] = {}
    for object_id, event_type in events:
        weight = float(event_weights.get(event_type, 0.0))
        if weight > 0 and weight > weights.get(object_id, 0.0):
            weights[object_id] = weight
    return weights


def negatives_for(shown: Sequence[tuple[int, str]], clicked: Mapping[str, float], policy: str) -> list[str]:
    """Shown, unclicked objects pushed away: ``all`` of them, those ``above_last_click``, or ``none``."""
    if policy == "none":
        return []
    if policy == "above_last_click":
        last = max(position for position, object_id in shown if object_id in clicked)
        return [object_id for position, object_id in shown if position < last and object_id not in clicked]
    if policy == "all":
        return [object_id for _, object_id in shown if object_id not in clicked]
    raise ValueError(f"IMPROVEMENT_NEGATIVES must be one of {', '.join(NEGATIVE_POLICIES)}, got {policy!r}")


def plan_sessions(
    *,
    inputs: BatchInputs,
    present: Mapping[str, object],
    event_weights: Mapping[str, float],
    negatives_policy: str,
) -> tuple[dict[int, Verdict], list[Candidate]]:
    """Split claimed sessions into verdicts already known (skips) and candidates that will teach.

    ``present`` holds the object ids that still exist in the catalogue.
    """
    verdicts: dict[int, Verdict] = {}
    candidates: list[Candidate] = []
    for session in inputs.sessions:
        shown_all = inputs.shown.get(session.pk, [])
        if session.is_irrelevant:
            verdicts[session.pk] = skipped("irrelevant", "marked irrelevant: teaches nothing")
            continue
        shown_ids = {object_id for _, object_id in shown_all}
        weights = {
            oid: w
            for oid, w in click_weights(inputs.events.get(session.pk, []), event_weights).items()
            if oid in shown_ids
        }
        if not weights:
            verdicts[session.pk] = skipped(
                "no_click", f"no event of a weighted type ({', '.join(sorted(event_weights)) or 'none'})"
            )
            continue
        shown = [(position, oid) for position, oid in shown_all if oid in present]
        if not shown:
            verdicts[session.pk] = skipped("objects_gone", "every shown object was deleted from the catalogue")
            continue
        clicked = {oid: w for oid, w in weights.items() if oid in present}
        if not clicked:
            verdicts[session.pk] = skipped("clicked_objects_gone", "every clicked object was deleted")
            continue
        candidates.append(
            Candidate(
                pk=session.pk,
                user_id=session.user_id,
                text=session.search_query.strip(),
                query=session.query_vector,
                shown=shown,
                clicked=clicked,
                negatives=negatives_for(shown, clicked, negatives_policy),
            )
        )
    return verdicts, candidates


@dataclass
class Problem:
    """A batch laid out for the adjuster and for the metrics.

    "Keys" are the distinct (user, original) pairs of every shown object of the candidates; the
    adjuster sees only those clicked or pushed (``adjusted_keys``).
    """

    candidates: list[Candidate]
    keys: list[tuple[str, int]]
    object_ids: list[str]  # per key: the original's object_id
    start: list[np.ndarray]  # per key: the user's current copy, else the original
    original: list[np.ndarray]
    is_average: list[np.ndarray]
    adjusted_keys: list[int]  # adjuster object index → key index
    examples: list[SessionExample]  # one per candidate, in candidate order
    pair_session: np.ndarray  # per (candidate, shown object): candidate index
    pair_key: np.ndarray  # … key index
    pair_clicked: np.ndarray  # … bool
    pair_negative: np.ndarray  # … bool

    def adjuster_objects(self) -> list[ObjectVectors]:
        """The adjuster's ``objects``, in ``adjusted_keys`` order."""
        return [
            ObjectVectors(start=self.start[k], original=self.original[k], is_average=self.is_average[k])
            for k in self.adjusted_keys
        ]


def build_problem(
    *,
    candidates: Sequence[Candidate],
    originals: Mapping[str, StoredVectors],
    copies: Mapping[tuple[str, int], StoredVectors],
) -> Problem:
    """Lay out candidates (all with a query vector) as adjuster objects, examples and metric pairs."""
    key_index: dict[tuple[str, int], int] = {}
    keys: list[tuple[str, int]] = []
    object_ids: list[str] = []
    start: list[np.ndarray] = []
    original: list[np.ndarray] = []
    is_average: list[np.ndarray] = []
    adjusted_index: dict[int, int] = {}
    adjusted_keys: list[int] = []
    examples: list[SessionExample] = []
    pair_session: list[int] = []
    pair_key: list[int] = []
    pair_clicked: list[bool] = []
    pair_negative: list[bool] = []

    def key_of(user_id: str, object_id: str) -> int:
        source = originals[object_id]
        key = (user_id, source.pk)
        index = key_index.get(key)
        if index is None:
            index = key_index[key] = len(keys)
            keys.append(key)
            object_ids.append(object_id)
            copy = copies.get(key)
            # A copy learned from other parts (original re-upserted, copies kept) cannot continue.
            usable = copy is not None and copy.vectors.shape == source.vectors.shape
            start.append(copy.vectors if usable else source.vectors)
            original.append(source.vectors)
            is_average.append(source.is_average)
        return index

    def adjuster_index(key: int) -> int:
        index = adjusted_index.get(key)
        if index is None:
            index = adjusted_index[key] = len(adjusted_keys)
            adjusted_keys.append(key)
        return index

    for number, candidate in enumerate(candidates):
        position_of = {oid: position for position, oid in candidate.shown}
        negatives = set(candidate.negatives)
        for _position, oid in candidate.shown:
            pair_session.append(number)
            pair_key.append(key_of(candidate.user_id, oid))
            pair_clicked.append(oid in candidate.clicked)
            pair_negative.append(oid in negatives)
        clicked_ids = list(candidate.clicked)
        examples.append(
            SessionExample(
                query=candidate.query,
                clicked=[adjuster_index(key_of(candidate.user_id, oid)) for oid in clicked_ids],
                negatives=[adjuster_index(key_of(candidate.user_id, oid)) for oid in candidate.negatives],
                clicked_weights=[candidate.clicked[oid] for oid in clicked_ids],
                clicked_positions=[position_of[oid] for oid in clicked_ids],
                negative_positions=[position_of[oid] for oid in candidate.negatives],
            )
        )
    return Problem(
        candidates=list(candidates),
        keys=keys,
        object_ids=object_ids,
        start=start,
        original=original,
        is_average=is_average,
        adjusted_keys=adjusted_keys,
        examples=examples,
        pair_session=np.asarray(pair_session, dtype=np.int64),
        pair_key=np.asarray(pair_key, dtype=np.int64),
        pair_clicked=np.asarray(pair_clicked, dtype=bool),
        pair_negative=np.asarray(pair_negative, dtype=bool),
    )


AdjustFn = Callable[..., AdjustResult]


@dataclass
class IsolatedResult:
    """The adjuster's answer for the sessions that did not fail, and why the others did."""

    vectors: list[np.ndarray | None]  # per adjuster object; None: no surviving session touched it
    changed: list[bool]
    metrics: dict
    failures: dict[int, str] = field(default_factory=dict)  # example index → error text


def _subproblem(objects, examples, chosen: Sequence[int]):
    """The objects and examples of the chosen examples, re-indexed; returns (objects, examples, object map)."""
    mapping: dict[int, int] = {}
    sub_examples = []
    for e in chosen:
        example = examples[e]

        def remap(indices):
            out = []
            for i in indices:
                if i not in mapping:
                    mapping[i] = len(mapping)
                out.append(mapping[i])
            return out

        sub_examples.append(
            SessionExample(
                query=example.query,
                clicked=remap(example.clicked),
                negatives=remap(example.negatives),
                clicked_weights=example.clicked_weights,
                clicked_positions=example.clicked_positions,
                negative_positions=example.negative_positions,
            )
        )
    order = sorted(mapping, key=mapping.get)
    return [objects[i] for i in order], sub_examples, order


def _merge_metrics(parts: list[tuple[int, dict]]) -> dict:
    total = sum(weight for weight, _ in parts)
    merged: dict = {}
    for weight, metrics in parts:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                merged[name] = merged.get(name, 0.0) + float(value) * weight / max(total, 1)
    return merged


def adjust_isolating_failures(
    *,
    adjust: AdjustFn,
    objects: list[ObjectVectors],
    examples: list[SessionExample],
    users: Sequence[str],
    params: AdjusterParams,
    reraise: tuple[type[BaseException], ...] = (),
) -> IsolatedResult:
    """Run the adjuster over the whole batch; if it raises, find the sessions that make it raise.

    Users are independent (a parameter belongs to one (user, object)), so the batch is halved by
    user until the failing user is found; within that user each session is tried alone and the
    sessions that still raise fail, the others are adjusted together. A healthy batch costs one call.
    """
    try:
        result = adjust(objects=objects, sessions=examples, params=params)
        return IsolatedResult(
            vectors=list(result.vectors),
            changed=list(result.changed),
            metrics=result.metrics,
            # sessions the adjuster itself refused (non-finite input or output), if it reports any
            failures=dict(getattr(result, "failed_sessions", None) or {}),
        )
    except reraise:
        raise
    except Exception as exc:  # noqa: BLE001  any error of the adjuster is isolated to the sessions causing it
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("adjuster failed on %d sessions (%s); isolating", len(examples), error)
    vectors: list[np.ndarray | None] = [None] * len(objects)
    changed = [False] * len(objects)
    failures: dict[int, str] = {}
    parts: list[tuple[int, dict]] = []

    def solve(chosen: list[int]) -> None:
        sub_objects, sub_examples, order = _subproblem(objects, examples, chosen)
        result = adjust_isolating_failures(
            adjust=adjust,
            objects=sub_objects,
            examples=sub_examples,
            users=[users[e] for e in chosen],
            params=params,
            reraise=reraise,
        )
        for local, global_index in enumerate(order):
            if result.vectors[local] is not None:
                vectors[global_index] = result.vectors[local]
                changed[global_index] = result.changed[local]
        for local, message in result.failures.items():
            failures[chosen[local]] = message
        parts.append((len(chosen) - len(result.failures), result.metrics))

    distinct = sorted(set(users))
    if len(distinct) > 1:
        half = set(distinct[: len(distinct) // 2])
        solve([e for e in range(len(examples)) if users[e] in half])
        solve([e for e in range(len(examples)) if users[e] not in half])
    elif len(examples) > 1:
        healthy = []
        for e in range(len(examples)):
            alone, alone_examples, _ = _subproblem(objects, examples, [e])
            try:
                adjust(objects=alone, sessions=alone_examples, params=params)
                healthy.append(e)
            except reraise:
                raise
            except Exception as exc:  # noqa: BLE001
                failures[e] = f"adjuster error: {type(exc).__name__}: {exc}"
        if healthy:
            sub_objects, sub_examples, order = _subproblem(objects, examples, healthy)
            try:
                result = adjust(objects=sub_objects, sessions=sub_examples, params=params)
            except reraise:
                raise
            except Exception as exc:  # noqa: BLE001  fine alone, failing together: none can be trusted
                for e in healthy:
                    failures[e] = f"adjuster error together with this user's other sessions: {exc}"
            else:
                for local, global_index in enumerate(order):
                    vectors[global_index] = result.vectors[local]
                    changed[global_index] = result.changed[local]
                refused = dict(getattr(result, "failed_sessions", None) or {})
                for local, message in refused.items():
                    failures[healthy[local]] = message
                parts.append((len(healthy) - len(refused), result.metrics))
    else:
        failures[0] = f"adjuster error: {error}"
    return IsolatedResult(vectors=vectors, changed=changed, metrics=_merge_metrics(parts), failures=failures)


def similarities(
    *,
    queries: np.ndarray,
    pair_session: np.ndarray,
    pair_key: np.ndarray,
    key_vectors: Sequence[np.ndarray],
    metric: str,
    chunk: int = 32768,
) -> np.ndarray:
    """Per (session, object) pair, the object's similarity to the session's query: the best over its
    parts of cosine | dot | −euclidean, as search ranks (an object is as close as its closest part)."""
    if len(pair_session) == 0:
        return np.zeros(0, dtype=np.float32)
    counts = np.fromiter((len(v) for v in key_vectors), dtype=np.int64, count=len(key_vectors))
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    parts = np.concatenate(key_vectors).astype(np.float32, copy=False)
    queries = queries.astype(np.float32, copy=False)
    if metric == "cosine":
        parts = parts / np.maximum(np.linalg.norm(parts, axis=1, keepdims=True), 1e-12)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    per_pair = counts[pair_key]
    total = int(per_pair.sum())
    pair_starts = np.concatenate(([0], np.cumsum(per_pair)[:-1]))
    within = np.arange(total) - np.repeat(pair_starts, per_pair)
    part_rows = np.repeat(offsets[pair_key], per_pair) + within
    query_rows = np.repeat(pair_session, per_pair)
    scores = np.empty(total, dtype=np.float32)
    for begin in range(0, total, chunk):
        end = min(begin + chunk, total)
        q = queries[query_rows[begin:end]]
        p = parts[part_rows[begin:end]]
        dots = np.einsum("ij,ij->i", q, p)
        if metric == "euclid":
            squared = (q * q).sum(axis=1) + (p * p).sum(axis=1) - 2 * dots
            scores[begin:end] = -np.sqrt(np.maximum(squared, 0.0))
        else:
            scores[begin:end] = dots
    return np.maximum.reduceat(scores, pair_starts)


def ranking_totals(
    *,
    problem: Problem,
    queries: np.ndarray,
    after: Sequence[np.ndarray],
    used: np.ndarray,
    metric: str,
) -> RunTotals:
    """Sums for the run's metrics over the used candidates: 1-based rank of each clicked object among
    its session's shown objects before and after, and similarity changes of clicked and pushed objects."""
    totals = RunTotals()
    keep = used[problem.pair_session]
    if not keep.any():
        return totals
    pair_session = problem.pair_session[keep]
    pair_key = problem.pair_key[keep]
    clicked = problem.pair_clicked[keep]
    negative = problem.pair_negative[keep]
    before = similarities(
        queries=queries, pair_session=pair_session, pair_key=pair_key, key_vectors=problem.start, metric=metric
    )
    after_scores = similarities(
        queries=queries, pair_session=pair_session, pair_key=pair_key, key_vectors=after, metric=metric
    )
    # Pairs are grouped by session: lay them out as a (sessions × shown) matrix padded with -inf.
    sessions, first, sizes = np.unique(pair_session, return_index=True, return_counts=True)
    row = np.searchsorted(sessions, pair_session)
    column = np.arange(len(pair_session)) - first[row]
    for name, scores in (("before", before), ("after", after_scores)):
        grid = np.full((len(sessions), int(sizes.max())), -np.inf, dtype=np.float32)
        grid[row, column] = scores
        clicked_scores = scores[clicked]
        ranks = 1 + (grid[row[clicked]] > clicked_scores[:, None]).sum(axis=1)
        setattr(totals, f"clicked_rank_{name}", float(ranks.sum()))
    totals.clicked = float(clicked.sum())
    totals.clicked_similarity_change = float((after_scores[clicked] - before[clicked]).sum())
    totals.pushed = float(negative.sum())
    totals.pushed_similarity_change = float((after_scores[negative] - before[negative]).sum())
    return totals
