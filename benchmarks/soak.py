"""Soak: ingestion, search and improvement together over loopback for a bounded time, then an audit.

Runs on its own: an embedded PostgreSQL + Redis under ``.studio/bench-soak`` (wiped per run, stopped
at the end), migrations, an all-scopes API key, gunicorn (2 workers × 4 threads) on a free 127.0.0.1
port and a real Celery worker, all pointed at those servers. A catalogue of random vectors is
loaded through ``POST /objects``; then, for ``--seconds`` (default 120, ``--quick`` 20):

- search threads: ``POST /search`` (vector, a user from a pool, tracked) and clicks on half of the
  results pages through ``POST /clickstream/sessions/{id}/events``;
- ingest threads: ``POST /clickstream/sessions/batch`` then ``POST /clickstream/events`` for those
  sessions; one request in ten is sent twice (a client retry), which must count as duplicates;
- an improvement thread: ``POST /improvement/runs`` every 5 s (as beat would), the worker learning.

Every load loop is bounded by the deadline and stops by itself. The audit counts the events stored
in PostgreSQL against the unique events the server accepted (none lost, none stored twice) and
checks that resent events were all reported as duplicates. A baseline p95 of search on the idle
service is measured in the same run. Last line:
``{"seconds", "events_sent", "events_stored", "duplicates", "error_rate", "p95_search_ms", ...}``.
Targets: zero lost or duplicated events, error rate < 0.1 %, p95 search ≤ 50 ms under the mixed load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: only benchmarks/ is on the path
    sys.path.insert(0, str(ROOT))
from benchmarks import _stack  # noqa: E402

DATA_DIR = ROOT / ".studio" / "bench-soak"
DIM = 384
USERS = 200
RESULTS = 10
SESSIONS_PER_BATCH = 50
RUN_EVERY_SECONDS = 5.0


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` (nearest rank); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


class Client:
    """One keep-alive HTTP connection (per thread), recording status and latency of every call."""

    def __init__(self, port: int, key: str, stats: Stats):
        self.port, self.stats = port, stats
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.conn: http.client.HTTPConnection | None = None

    def call(self, kind: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        payload = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        for attempt in range(2):
            reused = self.conn is not None
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.request(method, path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                raw = response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException) as exc:
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                # A keep-alive connection the server closed while idle (gunicorn keepalive): reconnect once.
                if (
                    reused
                    and attempt == 0
                    and isinstance(exc, (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected))
                ):
                    started = time.perf_counter()
                    continue
                self.stats.record(kind, 0, time.perf_counter() - started, f"transport: {exc}")
                return 0, {}
        elapsed = time.perf_counter() - started
        data = json.loads(raw) if raw else {}
        self.stats.record(kind, status, elapsed, None if status < 400 else raw[:300].decode(errors="replace"))
        return status, data


class Stats:
    """Thread-safe tallies of the load."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {}
        self.statuses: dict[str, Counter] = {}
        self.errors: list[str] = []
        self.accepted_events = 0
        self.resent_events = 0
        self.reported_duplicates = 0
        self.sessions = 0

    def record(self, kind: str, status: int, seconds: float, error: str | None) -> None:
        with self.lock:
            self.latency.setdefault(kind, []).append(seconds * 1000)
            self.statuses.setdefault(kind, Counter())[status] += 1
            if error is not None and len(self.errors) < 20:
                self.errors.append(f"{kind} {status}: {error}")

    def events(self, *, accepted: int, duplicates: int, resent: int = 0) -> None:
        with self.lock:
            self.accepted_events += accepted
            self.reported_duplicates += duplicates
            self.resent_events += resent


def random_vector(rng: random.Random) -> list[float]:
    return [round(rng.gauss(0, 1), 5) for _ in range(DIM)]


# --- load loops (each bounded by the deadline) ---------------------------------------------------------


def search_loop(client: Client, stats: Stats, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        user = f"user{rng.randrange(USERS)}"
        status, body = client.call(
            "search", "POST", "/api/v1/search", {"query_vector": random_vector(rng), "user_id": user, "limit": RESULTS}
        )
        if status != 200 or not body.get("results") or rng.random() < 0.5:
            continue
        session_id = body["session_id"]
        clicked = rng.sample(body["results"], k=min(2, len(body["results"])))
        events = [{"event_id": f"c{i}", "object_id": hit["object_id"]} for i, hit in enumerate(clicked)]
        status, result = client.call(
            "events", "POST", f"/api/v1/clickstream/sessions/{session_id}/events", {"events": events}
        )
        if status == 200:
            stats.events(accepted=result["accepted"], duplicates=result["duplicates"])


def ingest_loop(client: Client, stats: Stats, deadline: float, seed: int, objects: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        sessions = []
        for _ in range(SESSIONS_PER_BATCH):
            shown = rng.sample(range(objects), RESULTS)
            sessions.append(
                {
                    "session_id": uuid.uuid4().hex,
                    "user_id": f"user{rng.randrange(USERS)}",
                    "search_query": "soak",
                    "query_vector": random_vector(rng),
                    "search_results": [{"object_id": f"obj{i}"} for i in shown],
                }
            )
        status, result = client.call("sessions", "POST", "/api/v1/clickstream/sessions/batch", {"sessions": sessions})
        if status != 200:
            continue
        with stats.lock:
            stats.sessions += result["accepted"]
        events = []
        for session in sessions:
            for n in range(rng.randrange(1, 3)):
                shown = session["search_results"][rng.randrange(RESULTS)]["object_id"]
                events.append({"session_id": session["session_id"], "event_id": f"e{n}", "object_id": shown})
        body = {"events": events}
        status, result = client.call("events", "POST", "/api/v1/clickstream/events", body)
        if status == 200:
            stats.events(accepted=result["accepted"], duplicates=result["duplicates"])
            if rng.random() < 0.1:  # a client retry of a request that was in fact stored
                status, again = client.call("events", "POST", "/api/v1/clickstream/events", body)
                if status == 200:
                    stats.events(accepted=again["accepted"], duplicates=again["duplicates"], resent=result["accepted"])


def improve_loop(client: Client, deadline: float, runs: list[int]) -> None:
    while time.monotonic() < deadline:
        status, body = client.call("runs", "POST", "/api/v1/improvement/runs", {})
        if status == 202:
            runs.append(body["id"])
        time.sleep(min(RUN_EVERY_SECONDS, max(0.0, deadline - time.monotonic())))


# --- the stack -----------------------------------------------------------------------------------------


def sql(database_url: str, query: str) -> list[tuple]:
    import psycopg

    host = unquote(urlparse(database_url).hostname or "")
    with psycopg.connect(host=host, user="postgres", dbname="studio") as conn:
        return conn.execute(query).fetchall()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 s and a smaller catalogue")
    parser.add_argument("--seconds", type=float, default=None, help="load duration (default 120; --quick 20)")
    parser.add_argument("--objects", type=int, default=None, help="catalogue size (default 5000; --quick 2000)")
    args = parser.parse_args()
    seconds = args.seconds or (20.0 if args.quick else 120.0)
    objects = args.objects or (2000 if args.quick else 5000)

    database_url, broker, cache = _stack.fresh_embedded_servers(DATA_DIR)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "studio.config.settings",
        "DATABASE_URL": database_url,
        "STUDIO_DATA_DIR": str(DATA_DIR),  # these are the embedded servers of DATA_DIR (development key allowed)
        "CELERY_BROKER_URL": broker,
        "CACHE_URL": cache,
        "STUDIO_EMBEDDER": "none",  # vector queries only: the load is the service, not the model
        "STUDIO_THROTTLE_RATE": "1000000/s",
        "IMPROVEMENT_SETTLE_SECONDS": "2",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    processes: list[subprocess.Popen] = []
    try:
        key = _stack.migrate_and_create_key(env, name="soak", scopes="ingest,search,catalog,admin")
        port = _stack.free_port()
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "studio.config.wsgi", "--bind", f"127.0.0.1:{port}"]
                + ["--workers", "2", "--threads", "4", "--timeout", "120", "--graceful-timeout", "5"],
                cwd=ROOT,
                env=env,
                stdout=(DATA_DIR / "gunicorn.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        worker_log = DATA_DIR / "worker.log"
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "studio", "worker", "--concurrency", "1"]
                + ["--loglevel", "INFO", "--without-mingle", "--without-gossip"],
                cwd=ROOT,
                env=env,
                stdout=worker_log.open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        setup = Stats()
        admin = Client(port, key, setup)
        if not wait_until(lambda: admin.call("health", "GET", "/api/v1/health")[0] in (200, 503), 180):
            raise SystemExit("gunicorn did not answer")
        if not wait_until(lambda: "ready." in worker_log.read_text(errors="replace"), 180):
            raise SystemExit("the Celery worker did not start")
        rng = random.Random(1)
        for start in range(0, objects, 500):
            batch = [
                {"object_id": f"obj{i}", "payload": {"n": i}, "vector": random_vector(rng)}
                for i in range(start, min(objects, start + 500))
            ]
            status, body = admin.call("load", "POST", "/api/v1/objects", {"objects": batch})
            if status != 200 or body.get("errors"):
                raise SystemExit(f"catalogue load failed: {status} {str(body)[:300]}")

        # Baseline: search alone on the idle service, same client code.
        baseline = Stats()
        idle = Client(port, key, baseline)
        for _ in range(200):
            body = {"query_vector": random_vector(rng), "limit": RESULTS, "track": False}
            idle.call("search", "POST", "/api/v1/search", body)
        idle_p95 = percentile(baseline.latency["search"], 0.95)

        stats = Stats()
        runs: list[int] = []
        started = time.monotonic()
        deadline = started + seconds
        threads = [
            threading.Thread(target=search_loop, args=(Client(port, key, stats), stats, deadline, 10 + n))
            for n in range(2)
        ]
        threads += [
            threading.Thread(target=ingest_loop, args=(Client(port, key, stats), stats, deadline, 20 + n, objects))
            for n in range(2)
        ]
        threads.append(threading.Thread(target=improve_loop, args=(Client(port, key, stats), deadline, runs)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + 180)
        elapsed = time.monotonic() - started

        # Let the runs started during the load finish (bounded), then audit the database.
        def runs_done() -> bool:
            rows = sql(
                database_url, "SELECT count(*) FROM improvement_improvementrun WHERE status IN ('queued','running')"
            )
            return rows[0][0] == 0

        runs_finished = wait_until(runs_done, 300)
        stored, distinct = sql(
            database_url, "SELECT count(*), count(DISTINCT (session_id, event_id)) FROM clickstream_event"
        )[0]
        session_states = dict(
            sql(database_url, "SELECT improvement_status, count(*) FROM clickstream_session GROUP BY 1")
        )
        attempts_per_session = sql(
            database_url,
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM improvement_improvementattempt "
            "WHERE outcome = 'done' GROUP BY session_id) AS a",
        )[0][0]
        run_states = dict(sql(database_url, "SELECT status, count(*) FROM improvement_improvementrun GROUP BY 1"))
        requests_total = sum(sum(c.values()) for c in stats.statuses.values())
        failed = sum(n for c in stats.statuses.values() for status, n in c.items() if status == 0 or status >= 500)
        unexpected_4xx = sum(
            n
            for kind, c in stats.statuses.items()
            for status, n in c.items()
            if 400 <= status < 500 and kind != "events"
        )
        result = {
            "seconds": round(elapsed, 1),
            "events_sent": stats.accepted_events,
            "events_stored": stored,
            # stored twice: more rows than unique accepted events (or than distinct ids)
            "duplicates": max(0, stored - stats.accepted_events) + (stored - distinct),
            "error_rate": round((failed + unexpected_4xx) / max(1, requests_total), 6),
            "p95_search_ms": round(percentile(stats.latency.get("search", []), 0.95), 2),
            "p50_search_ms": round(percentile(stats.latency.get("search", []), 0.50), 2),
            "p95_search_idle_ms": round(idle_p95, 2),
            "p95_events_ms": round(percentile(stats.latency.get("events", []), 0.95), 2),
            "p95_sessions_batch_ms": round(percentile(stats.latency.get("sessions", []), 0.95), 2),
            "requests": requests_total,
            "searches": len(stats.latency.get("search", [])),
            "events_resent": stats.resent_events,
            "duplicates_reported": stats.reported_duplicates,
            "lost_events": max(0, stats.accepted_events - stored),
            "retries_not_reported_as_duplicates": stats.resent_events - stats.reported_duplicates,
            "sessions_ingested": stats.sessions,
            "sessions_by_status": session_states,
            "max_done_attempts_per_session": attempts_per_session,
            "runs": run_states,
            "runs_finished": runs_finished,
        }
        for line in stats.errors[:10]:
            print("error:", line)
        for kind, counter in sorted(stats.statuses.items()):
            latencies = stats.latency[kind]
            print(
                f"{kind:9s} {sum(counter.values()):6d} calls  p50 {statistics.median(latencies):7.1f} ms  "
                f"p95 {percentile(latencies, 0.95):7.1f} ms  {dict(counter)}"
            )
        print(json.dumps(result))
    finally:
        for proc in processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        _stack.stop_embedded_servers(DATA_DIR)


if __name__ == "__main__":
    main()
