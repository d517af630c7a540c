"""Improvement end to end: claim → (embed) → torch → write → done, through the service code.

Runs on its own: an embedded PostgreSQL + Redis under ``.studio/bench-pipeline`` (wiped per run,
stopped at the end), a catalogue of random clustered 384-d unit vectors loaded with
``studio.catalogue.services.copy_objects`` (100,000; ``--quick`` 20,000), and settled sessions registered
through ``clickstream.services`` (10,000; ``--quick`` 2,000): 10 shown results each, drawn with a
popularity skew, 1 click (70 %) or 2, the query near a clicked object, users of 10 sessions each.
The shape matches ``benchmarks/adjuster_only.py`` (negatives: every shown, unclicked object).

Each measured run is one ``improvement.services.execute_run`` over all sessions (batches of
IMPROVEMENT_BATCH_SIZE, 10 iterations), after which the sessions are put back to pending. A first,
unmeasured run creates the users' copies, so every measured run does the steady-state work of an
accumulating service: read copies, adjust, update them. The adjuster-only figure is measured in the
same process, right after, with ``benchmarks/adjuster_only.measure_adjuster`` on the same sizes;
and the adjuster is timed once more on exactly the inputs of the last measured run (the database
idle), which separates the pipeline's own cost from the difference in batch shape (per-user copies
are more distinct parameters than the synthetic batches' shared objects).

    .venv/bin/python benchmarks/improve.py [--quick] [--runs 3] [--profile] [--compare-read-ahead]

Targets (docs/architecture.md, "Targets"): e2e ≥ 1,000 sessions/s; e2e / adjuster-only ≥ 0.5.
Last line: ``{"sessions", "e2e_sessions_per_s", "adjuster_sessions_per_s", "ratio", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: only benchmarks/ is on the path
    sys.path.insert(0, str(ROOT))
from benchmarks import _stack  # noqa: E402

DATA_DIR = ROOT / ".studio" / "bench-pipeline"
DIM = 384
RESULTS = 10


def catalogue_rows(objects: int, seed: int = 7):
    """Unit vectors around 100 random centres, six decimals (as a client sends them)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, DIM)).astype(np.float32)
    for start in range(0, objects, 10_000):
        count = min(10_000, objects - start)
        vectors = centres[rng.integers(0, 100, count)] + 0.6 * rng.standard_normal((count, DIM))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for offset, vector in enumerate(vectors.round(6).tolist()):
            yield (f"obj-{start + offset}", {}, "", [vector])


def register_sessions(*, sessions: int, objects: int, seed: int = 1) -> None:
    """Settled sessions with clicks, through the clickstream services (validated like the API)."""
    from django.utils import timezone

    from clickstream import services as clickstream
    from clickstream.validation import parse_event_item, validate_session
    from studio.catalogue.personalization import original_vectors

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, objects + 1) ** 0.6
    popularity /= popularity.sum()
    for first in range(0, sessions, 1000):
        count = min(1000, sessions - first)
        shown = np.stack([rng.choice(objects, size=RESULTS, replace=False, p=popularity) for _ in range(count)])
        ids = sorted({f"obj-{o}" for o in shown.ravel()})
        vectors = {oid: stored.vectors[0] for oid, stored in original_vectors(object_ids=ids).items()}
        now = timezone.now()
        items, events = [], []
        for row in range(count):
            number = first + row
            session_id = f"s-{number}-{uuid.uuid4().hex[:6]}"
            clicked = np.sort(rng.choice(RESULTS, size=1 if rng.random() < 0.7 else 2, replace=False))
            noise = rng.standard_normal(DIM).astype(np.float32)
            query = vectors[f"obj-{shown[row, clicked[0]]}"] + 0.9 * noise / np.linalg.norm(noise)
            query /= np.linalg.norm(query)
            items.append(
                validate_session(
                    session_id=session_id,
                    user_id=f"user-{number // 10}",
                    search_query="",
                    query_vector=query.round(6).tolist(),
                    results=[{"object_id": f"obj-{o}"} for o in shown[row]],
                    search_meta={},
                    created_at=None,
                    now=now,
                )
            )
            for slot in clicked:
                events.append(
                    parse_event_item(
                        {"event_id": f"e{slot}", "object_id": f"obj-{shown[row, slot]}"},
                        index=len(events),
                        now=now,
                        session_id=session_id,
                    )
                )
        clickstream.register_sessions(sessions=items, now=now)
        outcome = clickstream.record_events(events=events, now=now)
        assert not outcome.rejected, outcome.rejected[:3]


def repend() -> None:
    """Put every session back in the queue (as if new clicks had arrived) and tidy the tables."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE clickstream_session SET improvement_status = 'pending', lease_until = NULL, attempts = 0, "
            "improvement_detail = ''"
        )
        cursor.execute("DELETE FROM improvement_improvementattempt")
    with connection.cursor() as cursor:
        for table in ("clickstream_session", "studio_personalizedobject", "studio_personalizedpart"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def one_run(*, profile_to: Path | None = None, capture: list | None = None) -> dict:
    """One full run over every ready session; its figures. ``capture`` collects the adjuster's inputs."""
    from improvement import services
    from improvement.learning import adjuster
    from improvement.models import RunTrigger

    def recording_adjust(**kwargs):
        capture.append(kwargs)
        return adjuster.adjust(**kwargs)

    run = services.create_run(trigger=RunTrigger.COMMAND)
    started = time.perf_counter()
    if capture is not None:
        run = services.execute_run(run_id=run.pk, adjust=recording_adjust)
    elif profile_to is not None:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        run = services.execute_run(run_id=run.pk)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative")
        stats.dump_stats(str(profile_to))
        stats.print_stats(35)
    else:
        run = services.execute_run(run_id=run.pk)
    elapsed = time.perf_counter() - started
    assert run.status == "succeeded" and run.used == run.claimed, (run.status, run.claimed, run.used, run.error)
    return {
        "sessions": run.claimed,
        "seconds": elapsed,
        "sessions_per_s": run.claimed / elapsed,
        "objects_personalized": run.objects_personalized,
        "stages": run.metrics.get("seconds", {}),
        "clicked_rank": [run.metrics.get("clicked_rank_before"), run.metrics.get("clicked_rank_after")],
    }


def main() -> int:
    """Run the benchmark; print one JSON line last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 sessions over 20,000 objects")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one extra e2e run (stderr, .prof file)")
    parser.add_argument("--rule", choices=("pairwise", "seed"), default="pairwise", help="IMPROVEMENT_RULE to measure")
    parser.add_argument(
        "--compare-read-ahead",
        action="store_true",
        help="also time each run with IMPROVEMENT_READ_AHEAD off, in turn with the default runs (same-run ratio)",
    )
    args = parser.parse_args()
    sessions, objects = (2_000, 20_000) if args.quick else (10_000, 100_000)

    embedded = _stack.fresh_embedded_in_process(DATA_DIR)
    os.environ["IMPROVEMENT_SETTLE_SECONDS"] = "0"
    os.environ["IMPROVEMENT_NEGATIVES"] = "all"  # the adjuster-only benchmark's shape
    os.environ["IMPROVEMENT_ITERATIONS"] = "10"
    os.environ["IMPROVEMENT_DEVICE"] = "cpu"
    os.environ["IMPROVEMENT_RULE"] = args.rule  # its own default learning rate

    import django

    try:
        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.test.utils import override_settings

        from studio.catalogue import services as catalogue

        call_command("migrate", verbosity=0)
        catalogue.drop_hnsw_index()  # improvement never searches; loading without it is much faster
        mark = time.perf_counter()
        catalogue.copy_objects(rows=catalogue_rows(objects))
        register_sessions(sessions=sessions, objects=objects)
        print(f"setup: {objects} objects, {sessions} sessions in {time.perf_counter() - mark:.0f}s", file=sys.stderr)

        warm = one_run()  # creates the copies (and warms torch); not measured
        print(f"warm-up run: {warm['sessions_per_s']:.0f} sessions/s {warm['stages']}", file=sys.stderr)
        runs, serial_runs = [], []
        captured: list = []
        for number in range(args.runs):
            # Same-run A/B: with --compare-read-ahead a serial run beside each default one, taking turns going first.
            modes = [True, False] if args.compare_read_ahead else [True]
            for read_ahead in modes if number % 2 == 0 else modes[::-1]:
                repend()
                with override_settings(IMPROVEMENT_READ_AHEAD=read_ahead):
                    result = one_run(capture=captured if read_ahead and number == args.runs - 1 else None)
                (runs if read_ahead else serial_runs).append(result)
                label = "" if read_ahead else " (serial)"
                print(
                    f"run {number + 1}{label}: {result['sessions_per_s']:.0f} sessions/s, stages {result['stages']}",
                    file=sys.stderr,
                )
        if args.profile:
            repend()
            one_run(profile_to=DATA_DIR.parent / "bench-pipeline.prof")

        from benchmarks.adjuster_only import measure_adjuster

        adjuster = measure_adjuster(
            sessions=sessions,
            objects=objects,
            iterations=10,
            batch_size=settings.IMPROVEMENT_BATCH_SIZE,
            runs=args.runs,
        )
        # The adjuster again on exactly the inputs of the last measured run, the database idle.
        from improvement.learning.adjuster import adjust

        same_input_seconds = 0.0
        for kwargs in captured:
            mark = time.perf_counter()
            adjust(**kwargs)
            same_input_seconds += time.perf_counter() - mark
        same_input_rate = sum(len(k["sessions"]) for k in captured) / max(same_input_seconds, 1e-9)
        e2e = statistics.median(r["sessions_per_s"] for r in runs)
        median_run = sorted(runs, key=lambda r: r["sessions_per_s"])[len(runs) // 2]
        figures = {
            "sessions": sessions,
            "e2e_sessions_per_s": round(e2e, 1),
            "adjuster_sessions_per_s": adjuster["adjuster_sessions_per_s"],
            "ratio": round(e2e / adjuster["adjuster_sessions_per_s"], 3),
            "objects": objects,
            "batch_size": settings.IMPROVEMENT_BATCH_SIZE,
            "runs_e2e_sessions_per_s": [round(r["sessions_per_s"], 1) for r in runs],
            "adjuster_same_inputs_sessions_per_s": round(same_input_rate, 1),
            "ratio_same_inputs": round(e2e / same_input_rate, 3),
            "in_pipeline_adjust_sessions_per_s": round(sessions / median_run["stages"].get("adjust", 1e-9), 1),
            "median_run_stage_seconds": median_run["stages"],
            "objects_personalized_per_run": median_run["objects_personalized"],
            "rule": args.rule,
            # the copies' vector payload a run writes per session: halfvec, float16 × D plus pgvector's 4-byte header
            # (and the varlena's 4): the bytes the column holds, not the WAL or the row headers
            "bytes_written_per_session": round(
                median_run["objects_personalized"] * (2 * settings.STUDIO_EMBEDDING_DIM + 8) / sessions, 1
            ),
            "clicked_rank_before_after": median_run["clicked_rank"],
        }
        if serial_runs:
            serial = statistics.median(r["sessions_per_s"] for r in serial_runs)
            figures["serial_e2e_sessions_per_s"] = round(serial, 1)
            figures["read_ahead_speedup"] = round(e2e / serial, 3)
    finally:
        from django.db import connections

        connections.close_all()
        embedded.stop_redis()
        embedded.stop_postgres()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
