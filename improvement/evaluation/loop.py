"""The evaluation loop: per arm, simulated users search, sessions are registered, clicks are recorded,
improvement runs follow, and everyone searches again — all through the real services, in-process.

One arm replays everything from a clean state (no personalized copies, no clickstream rows) with the
same seed; the random numbers of every click decision are drawn from a generator seeded by
(seed, round, user, query), so arms differ only in what they learned (common random numbers).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from tqdm import tqdm

from clickstream import services as clickstream_services
from clickstream.validation import parse_event_item
from improvement.evaluation import catalogue
from improvement.evaluation.clicks import make_click_model
from improvement.evaluation.datasets import EvalDataset, SimUser
from improvement.evaluation.metrics import SCORING_DEPTH, score_ranking
from improvement.selectors import ready_session_exists
from studio.catalogue import search
from studio.catalogue import shared as shared_checks
from studio.core.validation import ItemError

logger = logging.getLogger(__name__)

SHOWN_RESULTS = 10  # what a simulated user sees of a training search
EVENTS_BATCH = 1000
PROBE_USER = "eval-probe"

ARM_NAMES = ("no_feedback", "embedding_studio", "studio_v1", "studio_personal", "studio", "oracle")
# Arms that are worse on purpose, run only when asked for (the online harness's guard test).
ADVERSARIAL_ARMS = ("click_spam", "click_spam_unbounded")
ALL_ARMS = ARM_NAMES + ADVERSARIAL_ARMS
SPAM_VOTERS = 10  # click_spam: bots per training query and round
SPAM_USER = "spam-bot"
UNBOUNDED_OFFSET = 0.5  # click_spam_unbounded's shared-tier bound: a first page spans about 0.08 in cosine
# Arms whose learning is private to the user who clicked (no shared tier): nobody else's ranking may move.
PRIVATE_ARMS = ("embedding_studio", "studio_v1", "studio_personal")


@dataclass(frozen=True)
class Arm:
    """One way of running the loop: whether improvement runs, with which setting overrides, and the
    position bias of the simulated clicks (``click_eta`` None: the evaluation's η), and how many click-spam
    bots post sessions for every training query each round (``spam_voters``; 0: none)."""

    name: str
    improve: bool = True
    overrides: dict = field(default_factory=dict)
    click_eta: float | None = None
    spam_voters: int = 0


# Embedding Studio's shipped defaults: lr 0.1, 10 iterations, every shown-unclicked object a negative, no rails.
EMBEDDING_STUDIO_OVERRIDES = {
    "IMPROVEMENT_LR": 0.1,
    "IMPROVEMENT_ITERATIONS": 10,
    "IMPROVEMENT_NEGATIVES": "all",
    "IMPROVEMENT_MAX_DRIFT": None,
    "IMPROVEMENT_RENORMALIZE": False,
    "IMPROVEMENT_POSITION_BIAS_ETA": 0.0,
    "IMPROVEMENT_RULE": "seed",
    "IMPROVEMENT_SHARED_WEIGHT": 0.0,
}
# The first version's defaults: the seed rule (AdamW, cubic loss) with its tuned settings, no shared tier.
STUDIO_V1_OVERRIDES = {
    "IMPROVEMENT_RULE": "seed",
    "IMPROVEMENT_LR": 1e-3,
    "IMPROVEMENT_ITERATIONS": 10,
    "IMPROVEMENT_NEGATIVES": "above_last_click",
    "IMPROVEMENT_WEIGHT_DECAY": 0.01,
    "IMPROVEMENT_SOFTMIN_TEMPERATURE": 0.05,
    "IMPROVEMENT_POSITION_BIAS_ETA": 0.0,
    "IMPROVEMENT_MAX_DRIFT": 0.05,
    "IMPROVEMENT_RENORMALIZE": True,
    "IMPROVEMENT_SHARED_WEIGHT": 0.0,
}


def standard_arms(names: Sequence[str] = ARM_NAMES, *, studio_overrides: dict | None = None) -> list[Arm]:
    """The arms of the evaluation (docs/architecture.md). ``studio_overrides`` replace settings for the
    studio and oracle arms (sweep)."""
    studio_overrides = dict(studio_overrides or {})
    catalogue_of_arms = {
        "no_feedback": Arm("no_feedback", improve=False),
        "embedding_studio": Arm("embedding_studio", overrides=EMBEDDING_STUDIO_OVERRIDES),
        "studio_v1": Arm("studio_v1", overrides=STUDIO_V1_OVERRIDES),
        # The v2 per-user rule alone: the studio settings with the shared tier off.
        "studio_personal": Arm("studio_personal", overrides={**studio_overrides, "IMPROVEMENT_SHARED_WEIGHT": 0.0}),
        "studio": Arm("studio", overrides=studio_overrides),
        # The studio settings, trained on clicks without position bias: what unbiased feedback could reach.
        "oracle": Arm("oracle", overrides=studio_overrides, click_eta=0.0),
        # The studio settings under attack: bots click what nobody should want (worse on purpose).
        "click_spam": Arm("click_spam", overrides=studio_overrides, spam_voters=SPAM_VOTERS),
        # The same attack with the shared tier's bound lifted far past a first page's spread (a misconfiguration).
        "click_spam_unbounded": Arm(
            "click_spam_unbounded",
            overrides={**studio_overrides, "IMPROVEMENT_SHARED_MAX_OFFSET": UNBOUNDED_OFFSET},
            spam_voters=SPAM_VOTERS,
        ),
    }
    unknown = [n for n in names if n not in catalogue_of_arms]
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}: choose from {', '.join(ALL_ARMS)}")
    if "no_feedback" not in names:
        names = ["no_feedback", *names]  # every delta is measured against it
    return [catalogue_of_arms[n] for n in ALL_ARMS if n in names]


def arm_parameters(arm: Arm) -> dict:
    """The improvement settings an arm runs with (settings merged with its overrides)."""
    if not arm.improve:
        return {}
    keys = (
        "IMPROVEMENT_RULE",
        "IMPROVEMENT_LR",
        "IMPROVEMENT_ITERATIONS",
        "IMPROVEMENT_NEGATIVES",
        "IMPROVEMENT_WEIGHT_DECAY",
        "IMPROVEMENT_SOFTMIN_TEMPERATURE",
        "IMPROVEMENT_POSITION_BIAS_ETA",
        "IMPROVEMENT_MAX_DRIFT",
        "IMPROVEMENT_RENORMALIZE",
        "IMPROVEMENT_SEED",
        "IMPROVEMENT_PAIR_TEMPERATURE",
        "IMPROVEMENT_PAIR_MARGIN",
        "IMPROVEMENT_PAIR_NEXT_WEIGHT",
        "IMPROVEMENT_SHARED_WEIGHT",
        "IMPROVEMENT_SHARED_MAX_OFFSET",
        "IMPROVEMENT_SHARED_MIN_USERS",
        "IMPROVEMENT_SHARED_SKIP_WEIGHT",
        "IMPROVEMENT_SHARED_BORROW_SIMILARITY",
        "IMPROVEMENT_SHARED_QUERY_SHIFT",
    )
    values = {key: getattr(settings, key) for key in keys}
    values.update(arm.overrides)
    return {key.removeprefix("IMPROVEMENT_").lower(): value for key, value in values.items()}


Ranking = tuple[list[str], list[float]]  # object ids best first, their distances


@dataclass
class ArmOutcome:
    """Everything measured for one arm; scored later, together with the other arms."""

    name: str
    parameters: dict
    rankings: dict[str, dict[tuple[int, int], Ranking]]  # view -> (user index, query index) -> ranking
    curve: list[float]  # seen NDCG@10 after 0, 1, …, R improvement rounds
    clicked: dict[int, set[str]]  # user index -> objects clicked (any query, any round)
    skipped: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))  # shown above a click, unclicked
    clicks: int = 0  # simulated clicks
    events_recorded: int = 0  # clicks sent through the clickstream service (registered sessions only)
    sessions: int = 0
    timings: dict = field(default_factory=lambda: defaultdict(float))  # seconds per phase
    runs: list[dict] = field(default_factory=list)
    guards: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class LoopContext:
    """The loaded data set, its embedded queries and the run's options."""

    dataset: EvalDataset
    query_vectors: dict[str, list[float]]
    rounds: int
    click_model: str
    eta: float
    seed: int
    progress: bool = True
    improve: Callable[[dict], list[dict]] | None = None  # replaced in tests only if ever needed


def prepare(dataset: EvalDataset, *, progress: bool = True) -> dict[str, list[float]]:
    """Load the catalogue into the current database (embeddings cached) and embed every query once."""
    vectors = catalogue.object_vectors(dataset, progress=progress)
    catalogue.load_catalogue(dataset, vectors, progress=progress)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE studio_object")
        cursor.execute("ANALYZE studio_objectpart")
    # The selector sizes its index fetch (ef_search) from catalogue estimates cached per process; a new
    # database (the sweep makes one per data set) must not inherit the previous one's, or ef_search
    # changes when the cache expires mid-arm and rankings move for no reason (the guards then fail).
    if hasattr(search, "_estimate_cache"):
        search._estimate_cache = None
    return {qid: vector.astype(np.float64).tolist() for qid, vector in catalogue.query_vectors(dataset).items()}


def reset_state() -> None:
    """Forget everything a previous arm learned or recorded: copies, clickstream rows, runs."""
    with connection.cursor() as cursor:
        # CASCADE also empties whatever refers to these tables (e.g. the runs' per-session attempts).
        cursor.execute(
            "TRUNCATE clickstream_event, clickstream_shownresult, clickstream_session, "
            "studio_personalizedpart, studio_personalizedobject, improvement_improvementrun, "
            "studio_sharedvote, studio_sharedevidence, studio_sharedquery CASCADE"
        )


def rank(
    *, query_vector: list[float], user_id: str | None, query_text: str | None = None, depth: int = SCORING_DEPTH
) -> Ranking:
    """A user's ranking through the search selector (no session registered); the text keys the shared tier."""
    result = search.search_objects(query_vector=query_vector, user_id=user_id, limit=depth, query_text=query_text)
    return [hit.object_id for hit in result.hits], [round(hit.distance, 6) for hit in result.hits]


def run_improvement(overrides: dict) -> list[dict]:
    """One improvement run, in this process, through the same service the Celery task calls
    (``improvement.services.execute_run``), with the arm's settings overrides and settle time 0.
    The run claims batch after batch until no ready session is left."""
    from improvement import services as improvement_services
    from improvement.models import RunTrigger

    with override_settings(IMPROVEMENT_SETTLE_SECONDS=0, **overrides):
        run = improvement_services.create_run(trigger=RunTrigger.EVALUATION)
        run = improvement_services.execute_run(run_id=run.pk)
    if ready_session_exists():  # settle time 0 in the evaluation: any ready session was left unclaimed
        raise RuntimeError(f"improvement run {run.pk} left ready sessions unclaimed ({run.error or run.status})")
    return [
        {
            "id": run.pk,
            "status": run.status,
            "claimed": run.claimed,
            "used": run.used,
            "skipped": run.skipped,
            "failed": run.failed,
            "objects_personalized": run.objects_personalized,
            "seconds": run.duration_seconds,
        }
    ]


def _record_events(events: list[dict]) -> int:
    """Send click events through the clickstream service, as the batched events endpoint does."""
    accepted = 0
    now = timezone.now()
    for start in range(0, len(events), EVENTS_BATCH):
        parsed = []
        for index, raw in enumerate(events[start : start + EVENTS_BATCH]):
            item = parse_event_item(raw, index=index, now=now, session_id=None)
            if isinstance(item, ItemError):
                raise RuntimeError(f"simulated event refused: {item.message}")
            parsed.append(item)
        outcome = clickstream_services.record_events(events=parsed, now=now)
        if outcome.rejected:
            raise RuntimeError(f"simulated events refused: {outcome.rejected[:3]}")
        accepted += outcome.accepted
    return accepted


def _training_round(
    ctx: LoopContext, arm: Arm, round_index: int, outcome: ArmOutcome, shown_cache: dict, bar
) -> dict[tuple[int, int], Ranking]:
    """Every user runs their training queries once (sessions registered), clicks are simulated and sent.

    Returns what each simulated user was shown, per (user index, query index). An arm without
    improvement cannot change any ranking, so it searches (and registers) in its first round only and
    shows the same results afterwards (``shown_cache``): the clicks still differ by round."""
    eta = ctx.eta if arm.click_eta is None else arm.click_eta
    model = make_click_model("pbm" if arm.click_eta is not None else ctx.click_model, eta=eta)
    events: list[dict] = []
    shown: dict[tuple[int, int], Ranking] = {}
    for user_index, user in _population(ctx.dataset):
        for query_index, (qid, relevance) in enumerate(user.train):
            key = (user_index, query_index)
            session_id = f"{arm.name}-r{round_index}-{user.user_id}-q{query_index}"
            registered = key not in shown_cache
            hits = _shown_hits(ctx, arm, qid, user, key, session_id, outcome, shown_cache)
            bar.update(1)
            shown[key] = ([hit.object_id for hit in hits], [round(hit.distance, 6) for hit in hits])
            if not user.clicks:
                continue
            rng = np.random.default_rng([ctx.seed, round_index, user_index, query_index])
            grades = [relevance.get(hit.object_id, 0) for hit in hits]
            # Only a session registered this round is sent its clicks.
            events += _clicks(model, grades, rng, hits, outcome, user_index, session_id if registered else None)
    outcome.events_recorded += _record_events(events + _spam_sessions(ctx, arm, round_index))
    return shown


def _spam_sessions(ctx: LoopContext, arm: Arm, round_index: int) -> list[dict]:
    """Click spam: for every training query, ``arm.spam_voters`` bots post the anonymous first page through
    the ingestion service, as a client would (so their sessions are never interleaved), and click its deepest
    result that no simulated user finds relevant; every result above it becomes a skip. Returns their clicks."""
    clicks: list[dict] = []
    if not arm.spam_voters:
        return clicks
    for qid, relevant in _training_queries(ctx.dataset).items():
        text, vector = ctx.dataset.queries[qid], ctx.query_vectors[qid]
        shown, _ = rank(query_vector=vector, user_id=None, query_text=text, depth=SHOWN_RESULTS)
        junk = [object_id for object_id in shown if object_id not in relevant]
        if not junk:
            continue
        for bot in range(arm.spam_voters):
            session_id = f"spam-{arm.name}-r{round_index}-{bot}-{qid}"
            clickstream_services.register_session(
                session_id=session_id,
                user_id=f"{SPAM_USER}-{bot}",
                search_query=text,
                query_vector=vector,
                results=[clickstream_services.ShownResultInput(object_id=o, score=None) for o in shown],
            )
            clicks.append({"session_id": session_id, "event_id": "click", "object_id": junk[-1]})
    return clicks


def _training_queries(dataset: EvalDataset) -> dict[str, set[str]]:
    """Every query some simulated user trains on, with the objects any of them finds relevant."""
    relevant: dict[str, set[str]] = defaultdict(set)
    for user in dataset.users:
        for qid, relevance in user.train:
            relevant[qid] |= {object_id for object_id, grade in relevance.items() if grade > 0}
    return dict(relevant)


def _population(dataset: EvalDataset) -> list[tuple[int, SimUser]]:
    """Who searches in a training round: the users (index ≥ 0), then the bystanders (index < 0)."""
    population: list[tuple[int, SimUser]] = list(enumerate(dataset.users))
    population += [(-1 - n, user) for n, user in enumerate(dataset.bystanders)]
    return population


def _shown_hits(
    ctx: LoopContext,
    arm: Arm,
    qid: str,
    user: SimUser,
    key: tuple[int, int],
    session_id: str,
    outcome: ArmOutcome,
    shown_cache: dict,
) -> list:
    """What the user is shown for ``qid``: a tracked search (a new session), or what they were shown before."""
    if key in shown_cache:
        return shown_cache[key]
    hits = search.search_and_track(
        query=ctx.dataset.queries[qid],
        query_vector=ctx.query_vectors[qid],
        user_id=user.user_id,
        limit=SHOWN_RESULTS,
        session_id=session_id,
    ).hits
    outcome.sessions += 1
    if not arm.improve:
        shown_cache[key] = hits
    return hits


def _clicks(
    model, grades: list[int], rng, hits: list, outcome: ArmOutcome, user_index: int, session_id: str | None
) -> list[dict]:
    """The simulated clicks on ``hits``, counted in ``outcome``; their events for ``session_id`` (None: none)."""
    events = []
    positions = list(model.clicks(grades, rng))
    for position in positions:
        object_id = hits[position].object_id
        outcome.clicked[user_index].add(object_id)
        outcome.clicks += 1
        if session_id is not None:
            events.append({"session_id": session_id, "event_id": f"click-{position}", "object_id": object_id})
    clicked_here = {hits[p].object_id for p in positions}
    for hit in hits[: max(positions, default=-1)]:
        if hit.object_id not in clicked_here:
            outcome.skipped[user_index].add(hit.object_id)
    return events


def _evaluate_view(
    ctx: LoopContext, view: str, bar, cache: dict[tuple[int, str], Ranking] | None = None
) -> dict[tuple[int, int], Ranking]:
    """Every user's rankings for the queries of ``view``. ``cache`` shares rankings between views that
    ask the same query of the same user in the same state (MovieLens seen and held-out)."""
    rankings = {}
    cache = {} if cache is None else cache
    for user_index, user in enumerate(ctx.dataset.users):
        for query_index, (qid, _relevance) in enumerate(user.views.get(view, [])):
            key = (user_index, qid)
            if key not in cache:
                cache[key] = rank(
                    query_vector=ctx.query_vectors[qid], user_id=user.user_id, query_text=ctx.dataset.queries[qid]
                )
            rankings[(user_index, query_index)] = cache[key]
            bar.update(1)
    return rankings


def _seen_ndcg(ctx: LoopContext, rankings: dict[tuple[int, int], Ranking]) -> float:
    """Mean over users of NDCG@10 on their seen queries (training query ``i`` is seen query ``i``)."""
    per_user: dict[int, list[float]] = defaultdict(list)
    for (user_index, query_index), (ids, _) in rankings.items():
        if user_index < 0:
            continue  # bystanders are not scored
        relevance = ctx.dataset.users[user_index].views["seen"][query_index][1]
        per_user[user_index].append(score_ranking(ids, relevance)["ndcg@10"])
    return float(np.mean([np.mean(v) for v in per_user.values()])) if per_user else float("nan")


def _guard_rankings(ctx: LoopContext) -> dict[tuple[str, str], Ranking]:
    """Rankings of people who never click: anonymous, a probe user with no history, the bystanders."""
    rankings = {}
    text = ctx.dataset.queries
    for qid in ctx.dataset.probe_queries:
        vector = ctx.query_vectors[qid]
        rankings[("anonymous", qid)] = rank(query_vector=vector, user_id=None, query_text=text[qid])
        rankings[(PROBE_USER, qid)] = rank(query_vector=vector, user_id=PROBE_USER, query_text=text[qid])
    for user in ctx.dataset.bystanders:
        for qid, _ in user.train:
            rankings[(user.user_id, qid)] = rank(
                query_vector=ctx.query_vectors[qid], user_id=user.user_id, query_text=text[qid]
            )
    return rankings


def copy_similarity() -> dict:
    """Cosine between each personalized copy and its original (mean over its parts): mean, min, count."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*), avg(c), min(c) FROM (
                SELECT po.id, avg(1 - (pp.vector::vector <=> op.vector)) AS c
                FROM studio_personalizedobject po
                JOIN studio_personalizedpart pp ON pp.personalized_id = po.id
                JOIN studio_objectpart op ON op.object_id = po.original_id AND op.index = pp.index
                GROUP BY po.id
            ) AS per_copy
            """
        )
        count, mean, minimum = cursor.fetchone()
    return {
        "copies": int(count),
        "mean_cosine": float(mean) if mean is not None else 1.0,
        "min_cosine": float(minimum) if minimum is not None else 1.0,
    }


DRIFT_MIN_MEAN_COSINE = 0.95


def run_arm(ctx: LoopContext, arm: Arm) -> ArmOutcome:
    """Replay the whole loop for one arm from a clean state and collect its rankings and guards.

    The NDCG@10 curve is measured on what the users were shown: round ``r``'s training searches show
    the state after ``r`` improvement runs; the last point is the final seen evaluation."""
    started = time.monotonic()
    reset_state()
    # The arm's settings hold for its searches too: some act only at search time (the shared tier's bound,
    # weight and minimum of users), so overriding them for the improvement runs alone would test nothing.
    with override_settings(**arm.overrides):
        outcome = ArmOutcome(
            name=arm.name, parameters=arm_parameters(arm), rankings={}, curve=[], clicked=defaultdict(set)
        )
        bar = _progress_bar(ctx, arm)
        guard_before = _guard_rankings(ctx)
        first_shown, last_shown = _training_rounds(ctx, arm, outcome, bar)
        _final_evaluation(ctx, outcome, bar)
        guard_after = _guard_rankings(ctx)
        bar.close()
        outcome.guards = _guards(ctx, outcome, first_shown, last_shown, guard_before, guard_after)
        if arm.improve:
            outcome.guards["single_user_invisible"] = _single_user_invisible(ctx, arm)
            outcome.guards["forget_exact"] = shared_checks.forget_is_exact(voter=_first_voter(ctx))
    outcome.seconds = time.monotonic() - started
    return outcome


def _single_user_invisible(ctx: LoopContext, arm: Arm) -> bool:
    """A probe user alone clicks on a query nobody else ran: after a run, nobody else's ranking for it moved."""
    qid = ctx.dataset.probe_queries[0]
    text = f"{ctx.dataset.queries[qid]} (probe)"
    vector = ctx.query_vectors[qid]
    others = [None, *(user.user_id for user in ctx.dataset.bystanders)]
    before = [rank(query_vector=vector, user_id=user, query_text=text) for user in others]
    for n in range(3):  # the probe repeats it: one user's sessions still weigh as one voter
        hits = search.search_and_track(
            query=text, query_vector=vector, user_id=PROBE_USER, limit=SHOWN_RESULTS, session_id=f"probe-{arm.name}-{n}"
        ).hits
        _record_events([{"session_id": f"probe-{arm.name}-{n}", "event_id": "c", "object_id": hits[-1].object_id}])
    run_improvement(arm.overrides)
    after = [rank(query_vector=vector, user_id=user, query_text=text) for user in others]
    return before == after


def _first_voter(ctx: LoopContext) -> str:
    """The user whose forgetting the ``forget_exact`` guard checks: the first simulated user."""
    return ctx.dataset.users[0].user_id


def _progress_bar(ctx: LoopContext, arm: Arm) -> tqdm:
    """A bar over every search of the arm: the training rounds', then the final evaluation's."""
    dataset = ctx.dataset
    population = dataset.users + dataset.bystanders
    total = sum(len(u.train) for u in population) * ctx.rounds + sum(
        len(u.views.get(v, [])) for u in dataset.users for v in dataset.views
    )
    return tqdm(total=total, desc=f"{arm.name:>16}", unit="search", disable=not ctx.progress, leave=True)


def _training_rounds(
    ctx: LoopContext, arm: Arm, outcome: ArmOutcome, bar
) -> tuple[dict[tuple[int, int], Ranking], dict[tuple[int, int], Ranking]]:
    """Every round: the training searches and clicks, then (if the arm improves) an improvement run.
    Returns what the first and the last round showed."""
    improve = ctx.improve or run_improvement
    shown_cache: dict = {}
    first_shown = last_shown = {}
    for round_index in range(ctx.rounds):
        mark = time.monotonic()
        last_shown = _training_round(ctx, arm, round_index, outcome, shown_cache, bar)
        outcome.timings["search_and_click"] += time.monotonic() - mark
        if round_index == 0:
            first_shown = last_shown
        outcome.curve.append(_seen_ndcg(ctx, last_shown))
        if arm.improve:
            mark = time.monotonic()
            outcome.runs.extend(improve(arm.overrides))
            outcome.timings["improvement"] += time.monotonic() - mark
        bar.set_postfix(ndcg=f"{outcome.curve[-1]:.4f}")
    return first_shown, last_shown


def _final_evaluation(ctx: LoopContext, outcome: ArmOutcome, bar) -> None:
    """Every view's rankings after the last run, and the curve's last point (seen NDCG@10)."""
    mark = time.monotonic()
    final_cache: dict[tuple[int, str], Ranking] = {}
    for view in ctx.dataset.views:
        outcome.rankings[view] = _evaluate_view(ctx, view, bar, final_cache)
    outcome.timings["final_evaluation"] += time.monotonic() - mark
    outcome.curve.append(_seen_ndcg(ctx, outcome.rankings.get("seen", {})))


def _guards(
    ctx: LoopContext,
    outcome: ArmOutcome,
    first_shown: dict[tuple[int, int], Ranking],
    last_shown: dict[tuple[int, int], Ranking],
    guard_before: dict[tuple[str, str], Ranking],
    guard_after: dict[tuple[str, str], Ranking],
) -> dict:
    """Whether people who never clicked saw the same rankings throughout, and how close copies stayed."""
    dataset = ctx.dataset
    # Users who never clicked own no copies: what they were shown must not have moved at all.
    never_clicked = {i for i in range(len(dataset.users)) if not outcome.clicked.get(i)}
    users_unchanged = all(first_shown[key] == last_shown[key] for key in first_shown if key[0] in never_clicked)
    bystanders_unchanged = all(guard_before[key] == guard_after[key] for key in guard_before if key[0] != "anonymous")
    anonymous_unchanged = all(guard_before[key] == guard_after[key] for key in guard_before if key[0] == "anonymous")
    similarity = copy_similarity()
    return {
        "other_users_unchanged": bool(users_unchanged and bystanders_unchanged),
        "anonymous_unchanged": bool(anonymous_unchanged),
        "drift_ok": similarity["mean_cosine"] >= DRIFT_MIN_MEAN_COSINE,
        "users_without_clicks": len(never_clicked),
        "bystanders": len(dataset.bystanders),
        **similarity,
    }
