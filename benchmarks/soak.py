"""Soak: ingestion, search and improvement together over loopback for a bounded time, then an audit.

Runs on its own: an embedded PostgreSQL + Redis under ``.studio/bench-soak`` (wiped per run, stopped
at the end), migrations, an all-scopes API key, gunicorn (2 workers × 4 threads) on a free 127.0.0.1
port and a real Celery worker, all pointed at those servers. A catalogue of random vectors is
loaded through ``POST /objects``; then, for ``--seconds`` (default 120, ``--quick`` 20), one of two loads:

- ``--mode open`` (default, the latency figure): requests arrive at fixed rates whatever the service's
  speed — ``--search-rate`` tracked vector searches/s (half of the pages get clicks through
  ``POST /clickstream/sessions/{id}/events``), ``--session-rate`` sessions/s through
  ``POST /clickstream/sessions/batch`` (50 a request) and ``--event-rate`` events/s on those sessions through
  ``POST /clickstream/events`` (100 a request, one request in ten sent twice: a client retry, which must count
  as duplicates). Latency runs from each request's scheduled arrival. The defaults (20 / 100 / 300 a second,
  with improvement learning every session) keep both cores about a third busy (``machine_cpu_busy`` is
  printed): 500 sessions/s with their learning already took 86 % on this 2-core machine;
- ``--mode saturate``: closed loop — two search clients and two ingest clients each send their next request as
  soon as the last one returned, so the machine is saturated and latency says how it queues.

In both, ``POST /improvement/runs`` every 5 s (as beat would), a real Celery worker learning. Every load loop
is bounded by the deadline and stops by itself. The audit counts the events stored in PostgreSQL against
the unique events the server accepted (none lost, none stored twice), checks that resent events were all
reported as duplicates, and counts stored sessions against those accepted. A baseline p95 of search on the
idle service is measured in the same run. Last line:
``{"mode", "seconds", "events_stored", "duplicates", "lost_sessions", "error_rate", "p95_search_ms", ...}``.
Targets: zero lost or duplicated events and sessions, error rate < 0.1 %; search p95 ≤ 30 ms in the open
loop (DESIGN §7 v2; the saturating mode has no latency target).
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

    def call(
        self, kind: str, method: str, path: str, body: dict | None = None, *, scheduled: float | None = None
    ) -> tuple[int, dict]:
        """One request; its latency runs from ``scheduled`` (an open-loop arrival, perf_counter time) when given,
        so that time spent waiting for a free client thread counts (no coordinated omission)."""
        payload = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter() if scheduled is None else scheduled
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
                    started = time.perf_counter() if scheduled is None else scheduled
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
        self.sessions = 0  # accepted through the batch endpoint
        self.tracked_searches = 0  # each registered a session

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
        if status == 200:
            with stats.lock:
                stats.tracked_searches += 1
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


def session_batch(rng: random.Random, objects: int, vector) -> list[dict]:
    """SESSIONS_PER_BATCH sessions of RESULTS shown objects each; ``vector(rng)`` gives each query vector."""
    return [
        {
            "session_id": uuid.uuid4().hex,
            "user_id": f"user{rng.randrange(USERS)}",
            "search_query": "soak",
            "query_vector": vector(rng),
            "search_results": [{"object_id": f"obj{i}"} for i in rng.sample(range(objects), RESULTS)],
        }
        for _ in range(SESSIONS_PER_BATCH)
    ]


def post_events(client: Client, stats: Stats, rng: random.Random, events: list[dict], scheduled=None) -> None:
    """POST /clickstream/events; one accepted request in ten is sent again (a client retry of a stored request),
    whose events must all come back as duplicates."""
    body = {"events": events}
    status, result = client.call("events", "POST", "/api/v1/clickstream/events", body, scheduled=scheduled)
    if status != 200:
        return
    stats.events(accepted=result["accepted"], duplicates=result["duplicates"])
    if rng.random() < 0.1:
        status, again = client.call("events", "POST", "/api/v1/clickstream/events", body)
        if status == 200:
            stats.events(accepted=again["accepted"], duplicates=again["duplicates"], resent=result["accepted"])


def ingest_loop(client: Client, stats: Stats, deadline: float, seed: int, objects: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        sessions = session_batch(rng, objects, random_vector)
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
        post_events(client, stats, rng, events)


def improve_loop(client: Client, deadline: float, runs: list[int], every: float = RUN_EVERY_SECONDS) -> None:
    """An improvement run every ``every`` seconds (as beat would); none when ``every`` is 0."""
    while every > 0 and time.monotonic() < deadline:
        status, body = client.call("runs", "POST", "/api/v1/improvement/runs", {})
        if status == 202:
            runs.append(body["id"])
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))


# --- open loop: fixed arrival rates ----------------------------------------------------------------------

EVENTS_PER_BATCH = 100
VECTOR_POOL = 500  # query vectors made once: the load generator shares the 2 cores with the service


class OpenLoop:
    """Requests at fixed arrival rates, whatever the service's speed: a dispatcher per stream schedules arrivals
    every 1/rate s and hands each to a pool thread with its own keep-alive connection. Latency runs from the
    scheduled arrival, so a slow service shows as latency, never as fewer requests (no coordinated omission)."""

    def __init__(self, port: int, key: str, stats: Stats, objects: int, *, pool_threads: int = 32):
        from concurrent.futures import ThreadPoolExecutor

        self.port, self.key, self.stats, self.objects = port, key, stats, objects
        self.pool = ThreadPoolExecutor(max_workers=pool_threads)
        self.local = threading.local()
        self.recent_sessions: list[tuple[str, list[str]]] = []  # (session_id, shown ids) the server accepted
        self.lock = threading.Lock()
        rng = random.Random(3)
        self.vectors = [random_vector(rng) for _ in range(VECTOR_POOL)]
        self.arrivals: Counter = Counter()
        self.max_dispatch_lag_ms = 0.0

    def client(self) -> Client:
        if not hasattr(self.local, "client"):
            self.local.client = Client(self.port, self.key, self.stats)
        return self.local.client

    def stream(self, name: str, per_second: float, job, deadline: float) -> threading.Thread:
        """A dispatcher thread: ``job(rng, scheduled)`` submitted at ``per_second`` until the deadline."""

        def dispatch() -> None:
            rng = random.Random(name)
            start = time.perf_counter()
            for n in range(int(per_second * (deadline - time.monotonic()))):
                scheduled = start + n / per_second
                time.sleep(max(0.0, scheduled - time.perf_counter()))
                self.max_dispatch_lag_ms = max(self.max_dispatch_lag_ms, (time.perf_counter() - scheduled) * 1000)
                self.arrivals[name] += 1
                self.pool.submit(job, random.Random(rng.random()), scheduled)

        return threading.Thread(target=dispatch, name=f"arrivals-{name}")

    def search(self, rng: random.Random, scheduled: float) -> None:
        """A tracked vector search by a user from the pool; half the pages get one or two clicks."""
        body = {"query_vector": rng.choice(self.vectors), "user_id": f"user{rng.randrange(USERS)}", "limit": RESULTS}
        status, data = self.client().call("search", "POST", "/api/v1/search", body, scheduled=scheduled)
        if status != 200:
            return
        with self.stats.lock:
            self.stats.tracked_searches += 1
        if not data.get("results") or rng.random() < 0.5:
            return
        clicked = rng.sample(data["results"], k=min(2, len(data["results"])))
        events = [{"event_id": f"c{i}", "object_id": hit["object_id"]} for i, hit in enumerate(clicked)]
        path = f"/api/v1/clickstream/sessions/{data['session_id']}/events"
        status, result = self.client().call("events", "POST", path, {"events": events})
        if status == 200:
            self.stats.events(accepted=result["accepted"], duplicates=result["duplicates"])

    def sessions(self, rng: random.Random, scheduled: float) -> None:
        """A batch of sessions (``session_batch``); accepted ones become click targets."""
        batch = session_batch(rng, self.objects, lambda r: r.choice(self.vectors))
        body = {"sessions": batch}
        path = "/api/v1/clickstream/sessions/batch"
        status, result = self.client().call("sessions", "POST", path, body, scheduled=scheduled)
        if status != 200:
            return
        accepted = [(item["session_id"], [r["object_id"] for r in item["search_results"]]) for item in batch]
        with self.lock:
            self.recent_sessions.extend(accepted)
            del self.recent_sessions[: max(0, len(self.recent_sessions) - 5000)]
        with self.stats.lock:
            self.stats.sessions += result["accepted"]

    def events(self, rng: random.Random, scheduled: float) -> None:
        """EVENTS_PER_BATCH clicks on recently ingested sessions, through ``post_events`` (retries included)."""
        with self.lock:
            targets = rng.sample(self.recent_sessions, k=min(EVENTS_PER_BATCH, len(self.recent_sessions)))
        if targets:
            events = [
                {"session_id": session_id, "event_id": uuid.uuid4().hex[:12], "object_id": rng.choice(shown)}
                for session_id, shown in targets
            ]
            post_events(self.client(), self.stats, rng, events, scheduled=scheduled)


def run_open_loop(port: int, key: str, stats: Stats, objects: int, args, runs: list[int]) -> dict:
    """Searches, session batches and event batches at fixed arrival rates, improvement every RUN_EVERY_SECONDS."""
    load = OpenLoop(port, key, stats, objects)
    deadline = time.monotonic() + args.seconds
    dispatchers = [
        load.stream("search", args.search_rate, load.search, deadline),
        load.stream("sessions", args.session_rate / SESSIONS_PER_BATCH, load.sessions, deadline),
        load.stream("events", args.event_rate / EVENTS_PER_BATCH, load.events, deadline),
        threading.Thread(target=improve_loop, args=(Client(port, key, stats), deadline, runs, args.run_every)),
    ]
    for thread in dispatchers:
        thread.start()
    for thread in dispatchers:
        thread.join()
    load.pool.shutdown(wait=True)
    return {
        "rates_per_s": {"search": args.search_rate, "sessions": args.session_rate, "events": args.event_rate},
        "arrivals": dict(load.arrivals),
        "max_dispatch_lag_ms": round(load.max_dispatch_lag_ms, 1),
    }


def run_saturate(port: int, key: str, stats: Stats, objects: int, args, runs: list[int]) -> dict:
    """Closed loop: two search and two ingest clients each send their next request as soon as one returns."""
    deadline = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=search_loop, args=(Client(port, key, stats), stats, deadline, 10 + n)) for n in range(2)
    ]
    threads += [
        threading.Thread(target=ingest_loop, args=(Client(port, key, stats), stats, deadline, 20 + n, objects))
        for n in range(2)
    ]
    threads.append(
        threading.Thread(target=improve_loop, args=(Client(port, key, stats), deadline, runs, args.run_every))
    )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=args.seconds + 180)
    return {}


# --- the stack -----------------------------------------------------------------------------------------


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


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
    parser.add_argument(
        "--mode",
        choices=["open", "saturate"],
        default="open",
        help="open: fixed arrival rates (the latency figure); saturate: closed-loop clients, as fast as answered",
    )
    parser.add_argument("--search-rate", type=float, default=20.0, help="open: tracked searches per second")
    parser.add_argument("--session-rate", type=float, default=100.0, help="open: sessions per second (batches of 50)")
    parser.add_argument("--event-rate", type=float, default=300.0, help="open: events per second (batches of 100)")
    parser.add_argument(
        "--run-every", type=float, default=RUN_EVERY_SECONDS, help="seconds between improvement runs (0: none)"
    )
    args = parser.parse_args()
    args.seconds = args.seconds or (20.0 if args.quick else 120.0)
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
                + ["--workers", os.environ.get("WEB_WORKERS", "2"), "--threads", os.environ.get("WEB_THREADS", "4")]
                + ["--timeout", "120", "--graceful-timeout", "5"],
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

        stats = Stats()
        runs: list[int] = []
        started = time.monotonic()
        busy_before, total_before, own_before = *machine_cpu(), time.process_time()
        load = (run_open_loop if args.mode == "open" else run_saturate)(port, key, stats, objects, args, runs)
        elapsed = time.monotonic() - started
        busy_after, total_after = machine_cpu()
        cpu = {
            # share of both cores busy during the load (all processes), and the load generator's own part
            "machine_cpu_busy": round((busy_after - busy_before) / max(1.0, total_after - total_before), 3),
            "load_generator_cpu_share": round(
                (time.process_time() - own_before) / (elapsed * (os.cpu_count() or 1)), 3
            ),
        }

        # Let the runs started during the load finish (bounded), then audit the database.
        def runs_done() -> bool:
            rows = sql(
                database_url, "SELECT count(*) FROM improvement_improvementrun WHERE status IN ('queued','running')"
            )
            return rows[0][0] == 0

        runs_finished = wait_until(runs_done, 300)
        # Baseline: the load's search request (tracked, a user from the pool) alone on the service, idle again
        # after the load (same catalogue, copies and tables; before the load it is cold and still being vacuumed).
        baseline = Stats()
        idle = Client(port, key, baseline)
        for n in range(200):
            body = {"query_vector": random_vector(rng), "user_id": f"user{n % USERS}", "limit": RESULTS}
            idle.call("search", "POST", "/api/v1/search", body)
        idle_p50 = statistics.median(baseline.latency["search"])
        idle_p95 = percentile(baseline.latency["search"], 0.95)

        stored, distinct = sql(
            database_url, "SELECT count(*), count(DISTINCT (session_id, event_id)) FROM clickstream_event"
        )[0]
        sessions_stored = sql(database_url, "SELECT count(*) FROM clickstream_session")[0][0]
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
            "mode": args.mode,
            **load,
            **cpu,
            "seconds": round(elapsed, 1),
            "events_sent": stats.accepted_events,
            "events_stored": stored,
            # stored twice: more rows than unique accepted events (or than distinct ids)
            "duplicates": max(0, stored - stats.accepted_events) + (stored - distinct),
            "error_rate": round((failed + unexpected_4xx) / max(1, requests_total), 6),
            "p95_search_ms": round(percentile(stats.latency.get("search", []), 0.95), 2),
            "p50_search_ms": round(percentile(stats.latency.get("search", []), 0.50), 2),
            "p50_search_idle_ms": round(idle_p50, 2),
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
            "tracked_searches": stats.tracked_searches,
            # every accepted session (batch or tracked search) is stored once: the session id is unique
            "lost_sessions": max(0, stats.sessions + stats.tracked_searches + 200 - sessions_stored),
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
