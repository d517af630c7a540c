"""Evaluation data sets: a catalogue, query texts, and simulated users whose clicks follow real relevance.

- ``movielens``: MovieLens-100K from the installed recbole wheel (``studio.catalogue.datasets``). Queries are genres
  and genre pairs ("comedy movies"); a user's relevance of an item for a query is their own rating of an
  item matching the query (5 → 2, 4 → 1, else 0). Each user's ratings are split by time: the earlier 80 %
  drive clicks, the later 20 % are the held-out relevance.
- ``beir:PATH``: a folder in the BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``).
  Half of the judged queries can be trained on (each simulated user repeats a sample of them); the other
  half, which nobody trains on, is the related view. Relevant = grade ≥ 1.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

Relevance = dict[str, int]  # object_id -> grade (absent = 0)


@dataclass(frozen=True)
class EvalObject:
    """A catalogue item as loaded into the throwaway database."""

    object_id: str
    text: str
    payload: dict


@dataclass
class SimUser:
    """A simulated user: the queries they run (with the relevance that drives their clicks) and,
    per view, the queries they are scored on (with the relevance they are scored against)."""

    user_id: str
    train: list[tuple[str, Relevance]]
    views: dict[str, list[tuple[str, Relevance]]] = field(default_factory=dict)
    clicks: bool = True  # bystanders search but never click


@dataclass
class EvalDataset:
    """Everything one evaluation needs; query texts are referred to by id."""

    name: str
    objects: list[EvalObject]
    queries: dict[str, str]
    users: list[SimUser]
    views: tuple[str, ...]
    bystanders: list[SimUser] = field(default_factory=list)
    probe_queries: list[str] = field(default_factory=list)
    # Views scored after removing, per user, every object that user clicked in any arm.
    exclude_clicked: frozenset[str] = frozenset()

    def fingerprint(self) -> str:
        """Hash of the catalogue texts (embedding cache key part)."""
        digest = hashlib.sha256()
        for obj in self.objects:
            digest.update(obj.object_id.encode())
            digest.update(b"\0")
            digest.update(obj.text.encode())
            digest.update(b"\1")
        return digest.hexdigest()[:16]


def user_half(user_id: str) -> int:
    """0 (tuning half) or 1 (reporting half), stable for a user id across runs and machines."""
    return int(hashlib.sha256(user_id.encode()).hexdigest(), 16) % 2


COLD_SHARE = 0.25  # cold users per training user


def _cold_users(pool: list[SimUser], trained: set[str], count: int, *, prefix: str) -> list[SimUser]:
    """Users who never search during training and never click, scored after the rounds (the ``cold`` view) on
    queries the others trained, against their own relevance: what the shared tier gives everyone else."""
    cold = []
    for user in pool:
        queries = [(q, rel) for view in ("seen", "related") for q, rel in user.views.get(view, []) if q in trained]
        if queries:
            cold.append(SimUser(user_id=f"{prefix}{user.user_id}", train=[], views={"cold": queries[:3]}, clicks=False))
        if len(cold) == count:
            break
    return cold


def _bystanders(users: list[SimUser], count: int = 3) -> list[SimUser]:
    """Users who run the same training queries as the first users but never click."""
    return [
        SimUser(user_id=f"bystander-{user.user_id}", train=user.train, views={}, clicks=False) for user in users[:count]
    ]


# --- MovieLens ------------------------------------------------------------------------------------

GENRE_WORDS = {"Children's": "children's", "Film-Noir": "film-noir", "Sci-Fi": "sci-fi"}
REWORDINGS = (
    "good {x} films",
    "{x} film recommendations",
    "a {x} film to watch tonight",
    "best {x} pictures",
)
MIN_PAIR_MOVIES = 20


def _genre_phrase(genres: tuple[str, ...]) -> str:
    return " ".join(GENRE_WORDS.get(g, g.lower()) for g in genres)


def _grade(rating: float) -> int:
    return 2 if rating >= 5 else 1 if rating >= 4 else 0


def load_movielens(
    *,
    users: int = 200,
    queries_per_user: int = 3,
    related_per_user: int = 3,
    min_relevant: int = 2,
    held_out_share: float = 0.2,
    seed: int = 0,
) -> EvalDataset:
    """MovieLens-100K as an evaluation data set (see the module docstring); ``users=0`` takes all eligible."""
    from studio.catalogue.datasets import movielens_movies, movielens_ratings

    movies = movielens_movies()
    intents, queries = _genre_intents({m.item_id: frozenset(g for g in m.genres if g != "unknown") for m in movies})
    draw = _Draw(queries_per_user, related_per_user, min_relevant, held_out_share, seed)
    by_user = _ratings_by_user(movielens_ratings())
    drawn = (_movielens_user(uid, by_user[uid], intents, draw) for uid in sorted(by_user, key=int))
    eligible = [user for user in drawn if user is not None]
    selected = _choose_users(eligible, users, seed)
    chosen_ids = {user.user_id for user in selected}
    trained = {q for user in selected for q, _ in user.train}
    others = [user for user in eligible if user.user_id not in chosen_ids]
    cold = _cold_users(others, trained, max(1, int(len(selected) * COLD_SHARE)), prefix="cold-")
    return EvalDataset(
        name="movielens",
        objects=[EvalObject(object_id=m.item_id, text=m.text, payload=m.payload) for m in movies],
        queries=queries,
        users=selected + cold,
        views=("seen", "reworded", "related", "held_out", "cold"),
        bystanders=_bystanders(selected),
        probe_queries=[intents.query_id[i] for i in intents.intents[:: max(1, len(intents.intents) // 10)]],
        exclude_clicked=frozenset({"held_out"}),
    )


@dataclass(frozen=True)
class _Draw:
    """How a MovieLens user's queries are drawn (the options of ``load_movielens``)."""

    queries_per_user: int
    related_per_user: int
    min_relevant: int
    held_out_share: float
    seed: int


@dataclass
class _Intents:
    """The MovieLens query intents (every genre, and genre pairs with enough movies), in order, with their
    query ids and the items that match them."""

    intents: list[tuple[str, ...]]
    query_id: dict[tuple[str, ...], str]
    items: dict[tuple[str, ...], set[str]]

    def relevance(self, grades: dict[str, int], intent: tuple[str, ...]) -> Relevance:
        """The graded items that match ``intent``."""
        return {item: g for item, g in grades.items() if item in self.items[intent]}


def _genre_intents(genres_of: dict[str, frozenset[str]]) -> tuple[_Intents, dict[str, str]]:
    """The intents and the query texts: per intent its plain query ("comedy movies") and its rewordings."""
    genre_list = sorted({g for gs in genres_of.values() for g in gs})
    intents: list[tuple[str, ...]] = [(g,) for g in genre_list]
    for pair in combinations(genre_list, 2):
        if sum(1 for gs in genres_of.values() if set(pair) <= gs) >= MIN_PAIR_MOVIES:
            intents.append(pair)
    queries: dict[str, str] = {}
    intent_id = {}
    for intent in intents:
        qid = "g:" + "+".join(intent)
        intent_id[intent] = qid
        queries[qid] = f"{_genre_phrase(intent)} movies"
        for n, template in enumerate(REWORDINGS):
            queries[f"r{n}:{qid}"] = template.format(x=_genre_phrase(intent))
    items_of = {intent: {item for item, gs in genres_of.items() if set(intent) <= gs} for intent in intents}
    return _Intents(intents=intents, query_id=intent_id, items=items_of), queries


def _ratings_by_user(ratings) -> dict[str, list]:
    """The ratings grouped by user id."""
    by_user: dict[str, list] = defaultdict(list)
    for rating in ratings:
        by_user[rating.user_id].append(rating)
    return by_user


def _movielens_user(uid: str, ratings: list, intents: _Intents, draw: _Draw) -> SimUser | None:
    """A user's simulated self (None: too few relevant items for any intent): ratings split by time, training
    queries drawn among the intents the earlier ratings make relevant, related ones sharing a genre."""
    ratings = sorted(ratings, key=lambda r: (r.timestamp, int(r.item_id)))
    cut = int(math.floor(len(ratings) * (1.0 - draw.held_out_share)))
    earlier = {r.item_id: _grade(r.rating) for r in ratings[:cut] if _grade(r.rating) > 0}
    later = {r.item_id: _grade(r.rating) for r in ratings[cut:] if _grade(r.rating) > 0}
    full = {**earlier, **later}
    rel = intents.relevance
    candidates = [intent for intent in intents.intents if len(rel(earlier, intent)) >= draw.min_relevant]
    if not candidates:
        return None
    user_rng = np.random.default_rng([draw.seed, int(uid)])
    picked = [candidates[i] for i in sorted(user_rng.permutation(len(candidates))[: draw.queries_per_user])]
    trained_genres = {g for intent in picked for g in intent}
    related_pool = [
        intent
        for intent in intents.intents
        if intent not in picked and trained_genres.intersection(intent) and rel(full, intent)
    ]
    related = [related_pool[i] for i in sorted(user_rng.permutation(len(related_pool))[: draw.related_per_user])]
    qid = intents.query_id
    views = {
        "seen": [(qid[i], rel(full, i)) for i in picked],
        "reworded": [(f"r{int(user_rng.integers(len(REWORDINGS)))}:{qid[i]}", rel(full, i)) for i in picked],
        "related": [(qid[i], rel(full, i)) for i in related],
        "held_out": [(qid[i], rel(later, i)) for i in picked if rel(later, i)],
    }
    return SimUser(user_id=f"ml-{uid}", train=[(qid[i], rel(earlier, i)) for i in picked], views=views)


def _choose_users(eligible: list[SimUser], users: int, seed: int) -> list[SimUser]:
    """``users`` of the eligible users drawn at random (kept in order), or all of them."""
    if users and users < len(eligible):
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(eligible), size=users, replace=False))
        return [eligible[i] for i in chosen]
    return eligible


# --- BEIR -----------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_beir(
    path: str | Path,
    *,
    users: int = 100,
    queries_per_user: int = 3,
    related_per_user: int = 5,
    seed: int = 0,
    qrels_from_export: Path | None = None,
) -> EvalDataset:
    """A BEIR-layout folder as an evaluation data set (see the module docstring). ``qrels_from_export``: judge with
    a ``GET /api/v1/judgments`` CSV export (``query,docid,rating``) instead of the folder's qrels."""
    folder = Path(path)
    for needed in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        if not (folder / needed).exists():
            raise FileNotFoundError(f"{folder / needed} is missing (BEIR layout: corpus.jsonl, queries.jsonl, qrels/)")
    objects = [_beir_object(doc) for doc in _read_jsonl(folder / "corpus.jsonl")]
    all_queries = {str(q["_id"]): q["text"] for q in _read_jsonl(folder / "queries.jsonl")}
    known = {obj.object_id for obj in objects}
    if qrels_from_export is not None:
        qrels = read_exported_qrels(Path(qrels_from_export), known, all_queries)
    else:
        qrels = _read_qrels(folder / "qrels" / "test.tsv", known, all_queries)
    judged = sorted(qrels, key=lambda q: (len(q), q))
    if len(judged) < 2:
        raise ValueError(f"{folder}: fewer than two judged queries")
    sim_users = _beir_users(judged, qrels, users=users, trained=queries_per_user, related=related_per_user, seed=seed)
    trained = sorted({q for user in sim_users for q, _ in user.train})
    cold = _beir_cold_users(trained, qrels, count=max(1, int(users * COLD_SHARE)), per_user=queries_per_user, seed=seed)
    return EvalDataset(
        name=f"beir:{folder.name}",
        objects=objects,
        queries={q: all_queries[q] for q in judged},
        users=sim_users + cold,
        views=("seen", "related", "cold"),
        bystanders=_bystanders(sim_users),
        probe_queries=judged[:: max(1, len(judged) // 10)],
    )


def _beir_users(
    judged: list[str], qrels: dict[str, Relevance], *, users: int, trained: int, related: int, seed: int
) -> list[SimUser]:
    """Simulated users over the judged queries: half of them (at random) can be trained on, the rest are related."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(judged))
    train_pool = sorted(judged[i] for i in order[: len(judged) // 2])
    related_pool = sorted(judged[i] for i in order[len(judged) // 2 :])
    return [
        _beir_user(n, train_pool, related_pool, qrels, seed=seed, trained=trained, related=related)
        for n in range(users)
    ]


def _beir_cold_users(
    trained: list[str], qrels: dict[str, Relevance], *, count: int, per_user: int, seed: int
) -> list[SimUser]:
    """Cold users: each runs a sample of the queries the others trained (relevance is the query's), never clicks."""
    cold = []
    for n in range(count):
        rng = np.random.default_rng([seed, 1_000_000 + n])
        sample = sorted(str(q) for q in rng.choice(trained, size=min(per_user, len(trained)), replace=False))
        cold.append(
            SimUser(user_id=f"cold-u{n}", train=[], views={"cold": [(q, qrels[q]) for q in sample]}, clicks=False)
        )
    return cold


def _beir_object(doc: dict) -> EvalObject:
    """A corpus document as a catalogue item: "title. text" (or whichever of them there is)."""
    title = (doc.get("title") or "").strip()
    body = (doc.get("text") or "").strip()
    text = f"{title}. {body}" if title and body else title or body
    return EvalObject(object_id=str(doc["_id"]), text=text, payload={"title": title})


def _read_qrels(path: Path, known_objects: set[str], queries: dict[str, str]) -> dict[str, Relevance]:
    """Per query, the grades ≥ 1 of known documents (the header and other rows are skipped)."""
    qrels: dict[str, Relevance] = defaultdict(dict)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for row in reader:
            if len(row) < 3 or not row[2].strip().lstrip("-").isdigit():
                continue  # header
            qid, doc_id, grade = row[0], row[1], int(row[2])
            if grade >= 1 and doc_id in known_objects and qid in queries:
                qrels[qid][doc_id] = grade
    return qrels


def read_exported_qrels(path: Path, known_objects: set[str], queries: dict[str, str]) -> dict[str, Relevance]:
    """A judgments export (``query,docid,rating``) as qrels: each query text matched to the folder's query with
    the same normalized text (lowercased, whitespace collapsed, as the export writes it); ratings ≥ 1 of known
    documents kept, like the folder's qrels."""
    by_text = {" ".join(text.lower().split()): qid for qid, text in queries.items()}
    qrels: dict[str, Relevance] = defaultdict(dict)
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            qid = by_text.get(" ".join((row.get("query") or "").lower().split()))
            rating = (row.get("rating") or "").strip()
            if qid and rating.isdigit() and int(rating) >= 1 and row.get("docid") in known_objects:
                qrels[qid][row["docid"]] = int(rating)
    return qrels


def _beir_user(
    n: int,
    train_pool: list[str],
    related_pool: list[str],
    qrels: dict[str, Relevance],
    *,
    seed: int,
    trained: int,
    related: int,
) -> SimUser:
    """Simulated user ``n``: a sample of the training queries (also its seen view) and of the related ones."""
    user_rng = np.random.default_rng([seed, n])
    train = sorted(str(q) for q in user_rng.choice(train_pool, size=min(trained, len(train_pool)), replace=False))
    others = sorted(str(q) for q in user_rng.choice(related_pool, size=min(related, len(related_pool)), replace=False))
    return SimUser(
        user_id=f"u{n}",
        train=[(q, qrels[q]) for q in train],
        views={"seen": [(q, qrels[q]) for q in train], "related": [(q, qrels[q]) for q in others]},
    )


def load_dataset(
    name: str,
    *,
    users: int | None = None,
    queries_per_user: int = 3,
    seed: int = 0,
    qrels_from_export: Path | None = None,
) -> EvalDataset:
    """``movielens`` or ``beir:PATH``; ``users=None`` takes the data set's default. ``qrels_from_export`` (BEIR
    only) judges with a judgments export instead of the folder's qrels."""
    if qrels_from_export is not None and not name.startswith("beir:"):
        raise ValueError("--qrels-from-export takes a beir:PATH data set (its queries.jsonl names the queries)")
    if name == "movielens":
        return load_movielens(users=200 if users is None else users, queries_per_user=queries_per_user, seed=seed)
    if name.startswith("beir:"):
        return load_beir(
            name.removeprefix("beir:"),
            users=100 if users is None else users,
            queries_per_user=queries_per_user,
            seed=seed,
            qrels_from_export=qrels_from_export,
        )
    raise ValueError(f"unknown data set {name!r}: movielens or beir:PATH")
