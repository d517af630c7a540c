"""Clickstream ingestion over HTTP: batched events, sessions batch, single-session POST, against bare health.

Runs on its own: an embedded PostgreSQL + Redis under ``.studio/bench-clickstream`` (wiped per run,
stopped at the end), migrations, an ``ingest`` API key, then gunicorn (``studio.config.wsgi``, gthread
workers) on a free 127.0.0.1 port, pointed at those servers through DATABASE_URL / CELERY_BROKER_URL /
CACHE_URL. A bounded thread pool of keep-alive ``http.client`` connections sends a fixed number of
pre-encoded requests per run (self-stopping), checking every response; each figure is the median
of ``--runs`` runs, the bare ``GET /api/v1/health`` rate measured in the same run is the baseline.

Targets (docs/architecture.md, "Targets", 2-core machine): ≥ 10,000 events/s, ≥ 4,000 sessions/s batched,
≥ 400 single-session POST/s. ``--profile`` adds an in-process cProfile of where a request's time goes.
Last line: ``{"events_per_s", "sessions_per_s_batched", "single_session_posts_per_s", "health_rps", ...}``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: only benchmarks/ is on the path
    sys.path.insert(0, str(ROOT))
from benchmarks import _stack  # noqa: E402

DATA_DIR = ROOT / ".studio" / "bench-clickstream"
RESULTS_PER_SESSION = 10
EVENTS_PER_REQUEST = 1000
SESSIONS_PER_BATCH = 500


class Driver:
    """Sends pre-encoded requests from ``concurrency`` threads, one keep-alive connection each."""

    def __init__(self, port: int, key: str, concurrency: int):
        self.port = port
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.concurrency = concurrency
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        return conn

    def _send(self, request: tuple[str, str, bytes | None]) -> tuple[int, bytes]:
        method, path, body = request
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=self.headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def run(self, requests: list[tuple[str, str, bytes | None]]) -> tuple[float, list[tuple[int, bytes]]]:
        """Send all requests (bounded: the list is the whole load); returns (seconds, responses)."""
        with ThreadPoolExecutor(self.concurrency) as pool:
            started = time.perf_counter()
            responses = list(pool.map(self._send, requests))
            elapsed = time.perf_counter() - started
        return elapsed, responses


def check(responses: list[tuple[int, bytes]], expected: set[int], what: str) -> list[dict]:
    """Fail loudly on any unexpected status; returns the decoded bodies."""
    bodies = []
    for status, body in responses:
        if status not in expected:
            raise SystemExit(f"{what}: HTTP {status}: {body[:500]!r}")
        bodies.append(json.loads(body) if body else {})
    return bodies


def session_item(session_id: str, user: int) -> dict:
    """One session as a search front end would send it (no query vector: embedded later)."""
    return {
        "session_id": session_id,
        "user_id": f"user-{user}",
        "search_query": f"comedy movies {user % 17}",
        "search_results": [
            {"object_id": f"obj-{(user * 7 + i) % 5000}", "score": round(1.0 - i / 20, 3)}
            for i in range(RESULTS_PER_SESSION)
        ],
        "search_meta": {"page": 1},
    }


def encode(data: dict) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(data, separators=(",", ":")).encode()


PROFILED = {
    # (function name, file fragment): label
    ("dispatch", "rest_framework/views.py"): "DRF dispatch (whole view)",
    ("perform_authentication", "rest_framework/views.py"): "  authentication (API key)",
    ("check_throttles", "rest_framework/views.py"): "  throttle (shared cache)",
    ("_parse", "rest_framework/request.py"): "  JSON parsing",
    ("parse_session_item", "clickstream/validation.py"): "  session validation",
    ("parse_event_item", "clickstream/validation.py"): "  event validation",
    ("register_sessions", "clickstream/services.py"): "  register_sessions (SQL)",
    ("record_events", "clickstream/services.py"): "  record_events (SQL)",
    ("execute", "psycopg/cursor.py"): "    of which PostgreSQL round trips",
    ("rendered_content", "rest_framework/response.py"): "  JSON rendering",
}


def profile_in_process(key: str) -> None:
    """Where a request's time goes: cProfile of each request kind through Django's full stack, in this
    process (warmed up first), reported as milliseconds per request in the main steps."""
    import cProfile
    import logging
    import pstats

    from django.test import Client

    logging.getLogger("django.request").setLevel(logging.ERROR)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    tag = uuid.uuid4().hex[:8]

    def batch_body(name: str) -> bytes:
        return encode({"sessions": [session_item(f"{name}-{n}", n) for n in range(SESSIONS_PER_BATCH)]})

    def events_body(name: str) -> bytes:
        events = []
        for n in range(EVENTS_PER_REQUEST):
            session = session_item(f"warm-{n % 2000}", n % 2000)
            events.append(
                {
                    "session_id": session["session_id"],
                    "event_id": f"{name}-{n}",
                    "object_id": session["search_results"][n % RESULTS_PER_SESSION]["object_id"],
                }
            )
        return encode({"events": events})

    cases = [
        ("sessions batch (500 sessions × 10 results)", "/api/v1/clickstream/sessions/batch", batch_body, 4, 200),
        ("events (1000 per request)", "/api/v1/clickstream/events", events_body, 6, 200),
        ("single session POST", "/api/v1/clickstream/sessions", lambda name: encode(session_item(name, 1)), 200, 201),
    ]
    for title, url, make_body, count, expected in cases:
        warm = [make_body(f"pw-{tag}-{n}") for n in range(max(2, count // 10))]
        for body in warm:
            client.post(url, body, "application/json")
        bodies = [make_body(f"p-{tag}-{n}") for n in range(count)]
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for body in bodies:
            response = client.post(url, body, "application/json")
            if response.status_code != expected:
                raise SystemExit(f"profile {title}: HTTP {response.status_code} {response.content[:300]!r}")
        profiler.disable()
        elapsed = (time.perf_counter() - started) / count
        stats = pstats.Stats(profiler).stats
        print(f"\nprofile: {title}: {elapsed * 1000:.2f} ms per request in-process (cProfile on)")
        for (name, fragment), label in PROFILED.items():
            cumulative = sum(
                value[3] for (file, _, function), value in stats.items() if function == name and fragment in file
            )
            if cumulative:
                print(f"  {label:38s} {cumulative / count * 1000:8.2f} ms")


def main() -> int:
    """Run the benchmark; print one JSON line last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--concurrency", type=int, default=8, help="client connections")
    parser.add_argument("--profile", action="store_true", help="also cProfile the request kinds in-process")
    args = parser.parse_args()
    scale = 1 if args.quick else 4
    event_requests = 10 * scale
    batch_requests = 6 * scale
    single_requests = 500 * scale
    health_requests = 500 * scale

    embedded = _stack.fresh_embedded_in_process(DATA_DIR)

    import django

    gunicorn = None
    try:
        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from studio.core.auth import create_api_key

        call_command("migrate", verbosity=0)
        _, key = create_api_key(name="bench-ingest", scopes=["ingest"])
        env = _stack.gunicorn_env(
            STUDIO_THROTTLE_RATE="1000000/s",  # measure ingestion, not the throttle's refusals
            DATABASE_CONN_MAX_AGE="600",
            LOG_LEVEL="WARNING",
        )
        port = _stack.free_port()
        gunicorn = _stack.start_gunicorn(
            port, env, DATA_DIR / "gunicorn.log", workers=args.workers, threads=args.threads
        )
        driver = Driver(port, key, args.concurrency)
        print(
            f"gunicorn {args.workers} workers × {args.threads} threads on 127.0.0.1:{port}; "
            f"{args.concurrency} client connections; {args.runs} runs"
        )

        # Warm-up (imports, connections), and the sessions the event batches refer to.
        warm_sessions = [session_item(f"warm-{n}", n) for n in range(2000)]
        for start in range(0, len(warm_sessions), SESSIONS_PER_BATCH):
            chunk = {"sessions": warm_sessions[start : start + SESSIONS_PER_BATCH]}
            check(driver.run([("POST", "/api/v1/clickstream/sessions/batch", encode(chunk))])[1], {200}, "warm-up")
        check(driver.run([("GET", "/api/v1/health", None)] * 50)[1], {200, 503}, "warm-up health")

        figures: dict[str, list[float]] = {"events": [], "sessions": [], "single": [], "health": []}
        for run in range(args.runs):
            # health baseline
            elapsed, responses = driver.run([("GET", "/api/v1/health", None)] * health_requests)
            check(responses, {200, 503}, "health")
            figures["health"].append(health_requests / elapsed)

            # events: 1000 per request over the warm sessions, all new
            requests = []
            for r in range(event_requests):
                events = []
                for n in range(EVENTS_PER_REQUEST):
                    session = warm_sessions[(r * EVENTS_PER_REQUEST + n) % len(warm_sessions)]
                    events.append(
                        {
                            "session_id": session["session_id"],
                            "event_id": f"run{run}-r{r}-e{n}",
                            "object_id": session["search_results"][n % RESULTS_PER_SESSION]["object_id"],
                            "event_type": "click",
                        }
                    )
                requests.append(("POST", "/api/v1/clickstream/events", encode({"events": events})))
            elapsed, responses = driver.run(requests)
            bodies = check(responses, {200}, "events")
            accepted = sum(body["accepted"] for body in bodies)
            if accepted != event_requests * EVENTS_PER_REQUEST:
                raise SystemExit(f"events: accepted {accepted}, rejected e.g. {bodies[0]['rejected'][:3]}")
            figures["events"].append(accepted / elapsed)

            # sessions batch: 500 new sessions × 10 results per request
            requests = [
                (
                    "POST",
                    "/api/v1/clickstream/sessions/batch",
                    encode({"sessions": [session_item(f"b{run}-{r}-{n}", n) for n in range(SESSIONS_PER_BATCH)]}),
                )
                for r in range(batch_requests)
            ]
            elapsed, responses = driver.run(requests)
            bodies = check(responses, {200}, "sessions batch")
            created = sum(body["accepted"] for body in bodies)
            if created != batch_requests * SESSIONS_PER_BATCH:
                raise SystemExit(f"sessions batch: created {created}; e.g. {bodies[0]['rejected'][:3]}")
            figures["sessions"].append(created / elapsed)

            # single-session POST
            requests = [
                ("POST", "/api/v1/clickstream/sessions", encode(session_item(f"one{run}-{n}", n)))
                for n in range(single_requests)
            ]
            elapsed, responses = driver.run(requests)
            check(responses, {201}, "single session")
            figures["single"].append(single_requests / elapsed)
            print(
                f"run {run + 1}: events {figures['events'][-1]:,.0f}/s, sessions batched "
                f"{figures['sessions'][-1]:,.0f}/s, single POST {figures['single'][-1]:,.0f}/s, "
                f"health {figures['health'][-1]:,.0f}/s"
            )

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT count(*) FROM clickstream_session), (SELECT count(*) FROM clickstream_event)"
            )
            sessions_stored, events_stored = cursor.fetchone()
        if args.profile:
            profile_in_process(key)
        health = statistics.median(figures["health"])
        single = statistics.median(figures["single"])
        result = {
            "events_per_s": round(statistics.median(figures["events"])),
            "sessions_per_s_batched": round(statistics.median(figures["sessions"])),
            "single_session_posts_per_s": round(single),
            "health_rps": round(health),
            "single_post_to_health_ratio": round(single / health, 3),
            "runs": args.runs,
            "quick": args.quick,
            "gunicorn": f"{args.workers}x{args.threads} gthread",
            "client_connections": args.concurrency,
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "sessions_stored": sessions_stored,
            "events_stored": events_stored,
            "targets": {"events_per_s": 10_000, "sessions_per_s_batched": 4_000, "single_session_posts_per_s": 400},
        }
    finally:
        if gunicorn is not None:
            _stack.stop_process(gunicorn)
        from django.db import connections

        connections.close_all()
        embedded.stop_started()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
