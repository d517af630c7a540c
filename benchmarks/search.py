"""Search API latency and recall: 100k objects × 384 dims, k = 10, a user with 1,000 copies and a user with none.

Runs on its own: an embedded PostgreSQL + Redis under ``.studio/bench-search/<size>`` (the loaded
catalogue is kept there between runs, so reruns skip the load), migrations, a random-but-clustered
catalogue loaded with ``studio.catalogue.services.copy_objects`` + ``create_hnsw_index``, one user with 1,000
personalized copies of near neighbours of the benchmark queries (slightly perturbed, so that they
compete with the originals) beside a few other users' copies, then gunicorn on a free 127.0.0.1 port.

Each of ``--runs`` rounds measures, one request at a time over one keep-alive connection:
the bare SQL of the same ranking statement (the baseline, straight through psycopg), the API with a
query vector (``track`` true, the default, and false), and the API with a text query, all as the user
with 1,000 copies (at the default ``IMPROVEMENT_MAX_COPIES_PER_USER``); then the API and the bare SQL
as a user without copies (``*_no_copies``: a new user, the common case). Figures are medians over rounds.
recall@10 compares the API's pages with the exact personalized ranking computed in numpy in the same run
(checked against ``search_objects(exact=True)`` on a sample).
``--filters`` adds in-process timings of exact vs index paths for filters of several selectivities
(the evidence for ``studio.catalogue.search.exact_filter_threshold``). ``--data nested`` generates a catalogue
whose points have neighbourhoods (topics inside clusters) instead of the targets' isotropic clusters, kept under
its own data dir (``generate_catalogue``); ``STUDIO_HNSW_M`` / ``STUDIO_HNSW_EF_CONSTRUCTION`` set the index a
load builds (a kept catalogue indexed with other settings is loaded and indexed again).

Targets (DESIGN §7 v2, 2-core machine): a user without copies p50 ≤ 8 ms and API / bare SQL ≤ 1.8; a user at
the copy cap p50 ≤ 15 ms; recall@10 ≥ 0.95.
Last line: ``{"objects", "p50_ms_vector", "p95_ms_vector", "p50_ms_text", "recall_at_10", "api_to_sql_ratio", …}``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: only benchmarks/ is on the path
    sys.path.insert(0, str(ROOT))
from benchmarks import _stack  # noqa: E402

DATA_ROOT = ROOT / ".studio" / "bench-search"
DIM = 384
CLUSTERS = 200
NOISE = 0.04  # per-dimension noise around a unit-length cluster centre: clusters overlap at their edges
SUBCLUSTERS = 100  # --data nested: topics per cluster, and the per-dimension noise of topics and of points
NESTED_TOPIC_NOISE = 0.03
NESTED_POINT_NOISE = 0.025
SEED = 20240611
CATALOGUE_VERSION = 1
USER = "bench-user"
NEW_USER = "bench-new-user"  # no copies: the ranking of the originals alone
OTHER_USERS = 4
COPIES = 1000
K = 10
TEXT_QUERIES = [
    "space adventure among distant stars",
    "a quiet family drama in a small town",
    "romantic comedy set in Paris",
    "documentary about deep sea creatures",
    "heist thriller with a clever twist",
    "animated film for young children",
    "historical war epic",
    "detective story in foggy London",
    "music festival road trip",
    "cooking competition with famous chefs",
    "zombie apocalypse survival",
    "biography of a chess champion",
    "high school sports underdog story",
    "courtroom drama about a wrongful conviction",
    "time travel paradox science fiction",
    "nature film about arctic wolves",
]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100) of the values."""
    return float(np.percentile(np.asarray(values), q))


# --- data -----------------------------------------------------------------------------------------


def generate_catalogue(n: int, data: str = "isotropic") -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around CLUSTERS random centres (deterministic), and each one's cluster.

    ``isotropic`` (the targets' data set): each point is its centre plus noise in all 384 dimensions, so inside a
    cluster every point is about as far from every other — at a million (5,000 per cluster) the "nearest"
    neighbours are near-ties, the hardest case for any approximate index. ``nested``: each cluster holds
    SUBCLUSTERS topics and each point sits near its topic's centre, so a point has a neighbourhood (about 50
    points at cosine ≈ 0.75 at a million, its cluster at ≈ 0.6, the rest ≈ 0), closer to what text embeddings look
    like."""
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((CLUSTERS, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(CLUSTERS, size=n)
    if data == "nested":
        topics = np.repeat(centres, SUBCLUSTERS, axis=0)
        topics += NESTED_TOPIC_NOISE * rng.standard_normal(topics.shape, dtype=np.float32)
        anchors = topics[labels * SUBCLUSTERS + rng.integers(SUBCLUSTERS, size=n)]
    else:
        anchors = centres[labels]
    noise = point_noise(data)
    vectors = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 10_000):
        stop = min(n, start + 10_000)
        block = anchors[start:stop] + noise * rng.standard_normal((stop - start, DIM), dtype=np.float32)
        vectors[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors, labels


def point_noise(data: str) -> float:
    """The per-dimension noise of a point around its anchor (queries are drawn with the same)."""
    return NESTED_POINT_NOISE if data == "nested" else NOISE


def payload_of(i: int, label: int) -> dict:
    """Payload with keys of several selectivities (for filter timings)."""
    return {"cluster": int(label), "bucket": i % 10, "group": i % 40, "tag": i % 1000}


def ensure_catalogue(
    n: int, vectors: np.ndarray, labels: np.ndarray, data_dir: Path, data: str = "isotropic"
) -> float | None:
    """Load the catalogue unless this data dir already holds it; returns load seconds (None when cached)."""
    from django.conf import settings
    from django.db import connection

    from studio.catalogue import services
    from studio.models import Object

    marker = data_dir / "catalogue.json"
    wanted = {"objects": n, "dim": DIM, "seed": SEED, "version": CATALOGUE_VERSION}
    # the index a load built: other HNSW settings rebuild it rather than measure the kept one silently
    wanted["hnsw"] = [settings.STUDIO_HNSW_M, settings.STUDIO_HNSW_EF_CONSTRUCTION]
    if data != "isotropic":
        wanted["data"] = data
    if marker.exists() and json.loads(marker.read_text()) == wanted and Object.objects.count() == n:
        return None
    print(f"loading {n} objects × {DIM} (kept under {data_dir} for later runs) …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # CASCADE: whatever refers to the catalogue (the shared tier's evidence and offsets) goes with it
        cursor.execute(
            "TRUNCATE studio_object, studio_objectpart, studio_personalizedobject, studio_personalizedpart CASCADE"
        )
    services.drop_hnsw_index()
    rows = (
        (f"obj-{i}", payload_of(i, labels[i]), "", [vectors[i].tolist()])
        for i in range(n)  # one part per object
    )
    services.copy_objects(rows=rows, batch_size=5000)
    loaded = time.perf_counter() - started
    print(f"  copied in {loaded:.0f} s; building the HNSW index …", file=sys.stderr, flush=True)
    # Sized for the machine: the whole graph in maintenance_work_mem (~2.5 KB per 384-d part; a build that spills
    # is many times slower), and every core but the leader's as a parallel maintenance worker.
    graph_mb = max(512, int(n * 2.5 / 1024) + 256)
    services.create_hnsw_index(maintenance_work_mem=f"{graph_mb}MB", workers=max(0, (os.cpu_count() or 1) - 1))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE studio_object")
        cursor.execute("VACUUM ANALYZE studio_objectpart")
    marker.write_text(json.dumps(wanted))
    seconds = time.perf_counter() - started
    print(f"  loaded and indexed in {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def make_queries(vectors: np.ndarray, count: int, noise: float = NOISE) -> np.ndarray:
    """Query vectors near catalogue objects (another draw of the catalogue's point noise), deterministic."""
    rng = np.random.default_rng(SEED + 1)
    picks = rng.choice(len(vectors), size=count, replace=False)
    queries = vectors[picks] + noise * rng.standard_normal((count, DIM), dtype=np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def exact_distances(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine distances of every original (vectors are unit length)."""
    return 1.0 - vectors @ query


def write_copies(vectors: np.ndarray, queries: np.ndarray) -> dict[int, np.ndarray]:
    """The benchmark user's 1,000 copies: near neighbours of the queries, perturbed (some move up,
    some down), plus other users' copies so that per-user access must go through the index.
    Returns {object row number: copy vector} of the benchmark user."""
    from django.db import connection, transaction

    from studio.models import Object, PersonalizedObject, PersonalizedPart

    rng = np.random.default_rng(SEED + 2)
    per_query = max(1, COPIES // len(queries))
    chosen: dict[int, np.ndarray] = {}
    for query in queries:
        order = np.argsort(exact_distances(vectors, query))
        taken = 0
        for row in order[: per_query * 3]:
            if taken == per_query or len(chosen) == COPIES:
                break
            if int(row) not in chosen:
                chosen[int(row)] = None  # type: ignore[assignment]
                taken += 1
    while len(chosen) < COPIES:  # fill up with random objects if the neighbourhoods overlapped
        chosen.setdefault(int(rng.integers(len(vectors))), None)  # type: ignore[arg-type]
    for row in chosen:
        moved = vectors[row] + 0.5 * NOISE * rng.standard_normal(DIM, dtype=np.float32)
        chosen[row] = (moved / np.linalg.norm(moved)).astype(np.float32)

    others = {f"other-user-{u}": rng.choice(len(vectors), size=COPIES, replace=False) for u in range(OTHER_USERS)}
    pk_of = dict(Object.objects.filter(object_id__startswith="obj-").values_list("object_id", "pk"))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE studio_personalizedobject, studio_personalizedpart")
        plan = [(USER, row, vector) for row, vector in chosen.items()]
        for user, rows in others.items():
            plan += [(user, int(row), vectors[int(row)]) for row in rows]
        copies = PersonalizedObject.objects.bulk_create(
            [
                PersonalizedObject(original_id=pk_of[f"obj-{row}"], user_id=user, object_id=f"obj-{row}_{user}")
                for user, row, _ in plan
            ],
            batch_size=2000,
        )
        PersonalizedPart.objects.bulk_create(
            [
                PersonalizedPart(personalized_id=copy.pk, index=0, vector=vector)
                for copy, (_, _, vector) in zip(copies, plan, strict=True)
            ],
            batch_size=2000,
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE studio_personalizedobject")
        cursor.execute("ANALYZE studio_personalizedpart")
    return chosen


def exact_top(vectors: np.ndarray, copies: dict[int, np.ndarray], query: np.ndarray, k: int) -> tuple[list, float]:
    """The exact personalized top-k (object ids) and the k-th distance."""
    distances = exact_distances(vectors, query).astype(np.float64)
    if copies:
        rows = np.fromiter(copies.keys(), dtype=np.int64)
        distances[rows] = 1.0 - np.stack(list(copies.values())) @ query
    order = np.argsort(distances)[:k]
    return [f"obj-{row}" for row in order], float(distances[order[-1]])


# --- CPU accounting (a latency floor that other load on the machine does not inflate) -------------


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds used so far by each of these processes that is alive."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings, over the processes alive at both."""
    return sum(max(0.0, after[pid] - before[pid]) for pid in before.keys() & after.keys())


def service_pids(gunicorn_pid: int, data_dir: Path) -> tuple[list[int], list[int]]:
    """(gunicorn and its workers, the embedded PostgreSQL's processes): where a request spends CPU."""
    postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
    return [gunicorn_pid, *descendants(gunicorn_pid)], [postmaster, *descendants(postmaster)]


# --- servers and clients --------------------------------------------------------------------------


class Client:
    """One keep-alive connection, one request at a time (latency, not throughput)."""

    def __init__(self, port: int, key: str):
        self.port = port
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def search(self, body: bytes) -> tuple[float, dict]:
        """POST /api/v1/search; returns (milliseconds, decoded body); fails loudly on non-200."""
        started = time.perf_counter()
        try:
            self.conn.request("POST", "/api/v1/search", body=body, headers=self.headers)
            response = self.conn.getresponse()
            data = response.read()
        except (http.client.HTTPException, ConnectionError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return self.search(body)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise SystemExit(f"search: HTTP {response.status}: {data[:500]!r}")
        return elapsed, json.loads(data)


def recall_of(results: list[dict], truth: tuple[list, float]) -> float:
    """recall@K of an API page against the exact ranking; ties at the boundary count as hits (a result as
    close as the k-th exact one is right)."""
    ids, kth = truth
    return sum(1 for r in results if r["object_id"] in ids or r["distance"] <= kth + 1e-6) / K


def encode(data: dict) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(data, separators=(",", ":")).encode()


def bare_sql_timings(url: str, queries: np.ndarray, user_id: str | None) -> list[float]:
    """The same ranking statement the API runs (same ef_search, set for its transaction only, in one
    round trip as ``studio.catalogue.search`` sends it), straight through psycopg: the floor under the API."""
    import psycopg

    from studio.catalogue import search

    sql = search._ranking_sql(
        op=search.METRIC_OPERATORS["cosine"], personalized=bool(user_id), filtered=False, exact=False
    )
    ef = search.initial_ef_search(need=K)
    timings = []
    with psycopg.connect(
        url.replace("postgres://", "postgresql://"), autocommit=True, cursor_factory=psycopg.ClientCursor
    ) as conn:
        for query in queries:
            params = {
                "q": search.vector_literal(query),
                "user_id": user_id,
                "need": K,
                "parts": ef,
                "ef_search": str(ef),
            }
            started = time.perf_counter()
            with conn.cursor() as cursor:
                cursor.execute(search._SET_EF_SEARCH + "; " + sql, params)
                cursor.nextset()
                cursor.fetchall()
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def set_shared_buffers(value: str) -> str:
    """Give the benchmark's own embedded PostgreSQL ``shared_buffers`` (restarting it if it changes), so
    that the index and the table stay in PostgreSQL's cache; ``default`` gives initdb's 128 MB. Returns the
    value in force. The start-up tuning (``STUDIO_EMBEDDED_PG_SHARED_BUFFERS``) applies it: an ``ALTER
    SYSTEM`` of our own would be undone by that tuning on the restart."""
    from django.db import connection

    from studio.devstack import embedded

    wanted = "128MB" if value == "default" else value
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_bytes(current_setting('shared_buffers')) = pg_size_bytes(%s)", [wanted])
        in_force = cursor.fetchone()[0]
    os.environ["STUDIO_EMBEDDED_PG_SHARED_BUFFERS"] = wanted
    if not in_force:
        connection.close()
        embedded.stop_postgres()
        embedded.ensure_postgres("studio")  # same socket directory: Django reconnects on its next query
    with connection.cursor() as cursor:
        cursor.execute("SHOW shared_buffers")
        return cursor.fetchone()[0]


def filter_timings(queries: np.ndarray) -> dict[str, dict]:
    """In-process: exact scan vs index path (pgvector's iterative scan) for filters matching ~100 … ~10,000
    objects: time of each, and the index path's recall@10 against the exact page (the same user's copies)."""
    from studio.catalogue import search

    report = {}
    for key, value in (("tag", 7), ("cluster", 7), ("group", 7), ("bucket", 7)):
        matches = search._count_matching(filter_json=json.dumps({key: value}), cap=10**9)
        times: dict[str, list[float]] = {"exact": [], "index": []}
        pages: dict[str, list[list[str]]] = {"exact": [], "index": []}
        saved = search.EXACT_FILTER_MIN_MATCHES, search.EXACT_FILTER_COST_RATIO
        try:
            for path in ("exact", "index"):
                search.EXACT_FILTER_MIN_MATCHES = 10**9 if path == "exact" else 0
                search.EXACT_FILTER_COST_RATIO = 0.0
                for query in queries[:20]:
                    started = time.perf_counter()
                    found = search.search_objects(
                        query_vector=query.tolist(), user_id=USER, limit=K, filter={key: value}
                    )
                    times[path].append((time.perf_counter() - started) * 1000)
                    pages[path].append([hit.object_id for hit in found.hits])
        finally:
            search.EXACT_FILTER_MIN_MATCHES, search.EXACT_FILTER_COST_RATIO = saved
        overlaps = [len(set(i) & set(e)) / max(len(e), 1) for i, e in zip(pages["index"], pages["exact"], strict=True)]
        report[f"{key}={value}"] = {
            "matches": matches,
            "exact_p50_ms": round(statistics.median(times["exact"]), 2),
            "index_p50_ms": round(statistics.median(times["index"]), 2),
            "index_recall_at_10": round(statistics.mean(overlaps), 4),
        }
        print(f"filter {key}={value}: {report[f'{key}={value}']}", file=sys.stderr, flush=True)
    return report


# --- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k objects, fewer queries and rounds")
    parser.add_argument("--objects", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None, help="measurement rounds (median is reported)")
    parser.add_argument("--queries", type=int, default=None, help="vector queries per round")
    parser.add_argument("--filters", action="store_true", help="also time the filter paths (in process)")
    parser.add_argument(
        "--shared-buffers",
        default="512MB",
        help="shared_buffers of the benchmark's own PostgreSQL ('default': the embedded 128MB)",
    )
    parser.add_argument(
        "--data",
        choices=("isotropic", "nested"),
        default="isotropic",
        help="generated catalogue: isotropic clusters (the targets' data set) or nested topics (generate_catalogue)",
    )
    args = parser.parse_args()
    objects = args.objects or (20_000 if args.quick else 100_000)
    runs = args.runs or (3 if args.quick else 5)
    query_count = args.queries or (100 if args.quick else 200)

    data_dir = DATA_ROOT / ("quick" if objects == 20_000 else "full" if objects == 100_000 else f"n{objects}")
    if args.data != "isotropic":
        data_dir = data_dir.with_name(f"{data_dir.name}-{args.data}")
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["STUDIO_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.config.settings")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    from studio.devstack import embedded

    embedded.start_servers()  # settings start nothing: a benchmark starts what it needs (kept data reused)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from studio.catalogue import search
    from studio.core.auth import create_api_key
    from studio.devstack import embedded

    gunicorn = None
    try:
        if settings.STUDIO_METRIC != "cosine" or settings.STUDIO_EMBEDDING_DIM != DIM:
            raise SystemExit("run with the default STUDIO_METRIC=cosine and STUDIO_EMBEDDING_DIM=384")
        shared_buffers = set_shared_buffers(args.shared_buffers)
        call_command("migrate", verbosity=0)
        vectors, labels = generate_catalogue(objects, args.data)
        load_seconds = ensure_catalogue(objects, vectors, labels, data_dir, args.data)
        queries = make_queries(vectors, query_count, point_noise(args.data))
        copies = write_copies(vectors, queries)
        truth = [exact_top(vectors, copies, query, K) for query in queries]
        truth_no_copies = [exact_top(vectors, {}, query, K) for query in queries]

        # The numpy reference must agree with the database's exact ranking.
        mismatches = 0
        for query, (ids, _) in list(zip(queries, truth, strict=True))[:5]:
            hits = search.search_objects(query_vector=query.tolist(), user_id=USER, limit=K, exact=True).hits
            mismatches += len(set(ids) - {h.object_id for h in hits})
        if mismatches:
            print(f"warning: numpy and SQL exact rankings differ in {mismatches} of 50 ids", file=sys.stderr)

        _, key = create_api_key(name="bench-search", scopes=["search"])
        env = _stack.gunicorn_env(DEBUG="false", PYTHONUNBUFFERED="1")
        port = _stack.free_port()
        gunicorn = _stack.start_gunicorn(port, env, data_dir / "gunicorn.log", wait_s=120)
        client = Client(port, key)

        vector_bodies = [encode({"query_vector": q.tolist(), "user_id": USER, "limit": K}) for q in queries]
        untracked_bodies = [
            encode({"query_vector": q.tolist(), "user_id": USER, "limit": K, "track": False}) for q in queries
        ]
        text_bodies = [encode({"query": text, "user_id": USER, "limit": K}) for text in TEXT_QUERIES]
        new_user_bodies = [encode({"query_vector": q.tolist(), "user_id": NEW_USER, "limit": K}) for q in queries]
        for body in vector_bodies[:20] + text_bodies * 2:  # warm-up: connections, caches, the text model
            client.search(body)

        recalls: list[float] = []
        recalls_no_copies: list[float] = []
        rounds = []
        for run in range(runs):
            sql = bare_sql_timings(_stack.database_url(), queries, USER)
            vector, untracked, text = [], [], []
            web_pids, db_pids = service_pids(gunicorn.pid, data_dir)
            web_before, db_before = cpu_seconds(web_pids), cpu_seconds(db_pids)
            for position, body in enumerate(vector_bodies):
                elapsed, data = client.search(body)
                vector.append(elapsed)
                if run == 0:
                    recalls.append(recall_of(data["results"], truth[position]))
            cpu_web = cpu_used(web_before, cpu_seconds(web_pids)) * 1000 / len(vector_bodies)
            cpu_db = cpu_used(db_before, cpu_seconds(db_pids)) * 1000 / len(vector_bodies)
            for body in untracked_bodies:
                untracked.append(client.search(body)[0])
            for body in text_bodies * 2:
                text.append(client.search(body)[0])
            sql_new = bare_sql_timings(_stack.database_url(), queries, NEW_USER)
            new_user = []
            for position, body in enumerate(new_user_bodies):
                elapsed, data = client.search(body)
                new_user.append(elapsed)
                if run == 0:
                    recalls_no_copies.append(recall_of(data["results"], truth_no_copies[position]))
            figures = {
                "sql_p50": statistics.median(sql),
                "vector_p50": statistics.median(vector),
                "vector_p95": percentile(vector, 95),
                "untracked_p50": statistics.median(untracked),
                "text_p50": statistics.median(text),
                "cpu_ms_web": cpu_web,
                "cpu_ms_db": cpu_db,
                "new_user_p50": statistics.median(new_user),
                "new_user_p95": percentile(new_user, 95),
                "sql_new_user_p50": statistics.median(sql_new),
            }
            figures["ratio"] = figures["vector_p50"] / figures["sql_p50"]
            figures["new_user_ratio"] = figures["new_user_p50"] / figures["sql_new_user_p50"]
            rounds.append(figures)
            print(f"round {run + 1}/{runs}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), file=sys.stderr)

        filters = filter_timings(queries) if args.filters else None

        def median_of(name: str) -> float:
            return round(statistics.median(r[name] for r in rounds), 2)

        result = {
            "objects": objects,
            "data": args.data,
            "p50_ms_vector": median_of("vector_p50"),
            "p95_ms_vector": median_of("vector_p95"),
            "p50_ms_text": median_of("text_p50"),
            "recall_at_10": round(statistics.mean(recalls), 4),
            "api_to_sql_ratio": median_of("ratio"),
            "p50_ms_vector_untracked": median_of("untracked_p50"),
            "p50_ms_sql": median_of("sql_p50"),
            # a user without copies (the v2 target's p50 ≤ 8 ms and ratio ≤ 1.8)
            "p50_ms_vector_no_copies": median_of("new_user_p50"),
            "p95_ms_vector_no_copies": median_of("new_user_p95"),
            "p50_ms_sql_no_copies": median_of("sql_new_user_p50"),
            "api_to_sql_ratio_no_copies": median_of("new_user_ratio"),
            "recall_at_10_no_copies": round(statistics.mean(recalls_no_copies), 4),
            # CPU of gunicorn + PostgreSQL per tracked vector request: what p50 tends to on an idle machine
            "cpu_ms_per_vector_request_web": median_of("cpu_ms_web"),
            "cpu_ms_per_vector_request_db": median_of("cpu_ms_db"),
            "personalized_copies": len(copies),
            "ef_search": search.initial_ef_search(need=K),
            "shared_buffers": shared_buffers,
            "runs": runs,
            "queries": len(queries),
            "load_and_index_s": round(load_seconds, 1) if load_seconds is not None else None,
        }
        if filters:
            result["filters"] = {**filters, "exact_threshold_for_k10": search.exact_filter_threshold(need=K)}
        print(json.dumps(result))
        return 0
    finally:
        if gunicorn is not None:
            _stack.stop_process(gunicorn)
        embedded.stop_started()


if __name__ == "__main__":
    sys.exit(main())
