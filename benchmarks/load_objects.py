"""Catalogue bulk load: ``manage.py load_objects`` of N random 384-d vectors, then the HNSW build.

Runs on its own: an embedded PostgreSQL + Redis under ``.studio/bench-foundation`` (wiped per run,
stopped at the end), a JSONL file of N clustered random unit vectors (N = 100,000; ``--quick``
10,000), then ``load_objects`` three times into an emptied catalogue (median reported).

Target (docs/architecture.md, "Targets"): load + index ≤ 60 s for 100k × 384 on a 2-core machine.
Last line: ``{"rows", "load_and_index_s", "load_s", "index_s", ...}``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: only benchmarks/ is on the path
    sys.path.insert(0, str(ROOT))
from benchmarks import _stack  # noqa: E402

DATA_DIR = ROOT / ".studio" / "bench-foundation"


def write_jsonl(path: Path, *, rows: int, dim: int, seed: int = 7) -> None:
    """N unit vectors around 100 random centres (a catalogue has clusters), one object per line."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    with path.open("w", encoding="utf-8") as handle:
        for start in range(0, rows, 10_000):
            count = min(10_000, rows - start)
            vectors = centres[rng.integers(0, len(centres), count)] + 0.6 * rng.standard_normal((count, dim))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            # Six decimals, as a client would send them (rounded by numpy, not per float in Python).
            for offset, vector in enumerate(vectors.round(6).tolist()):
                number = start + offset
                item = {
                    "object_id": f"obj-{number}",
                    "payload": {"cluster": number % 100, "title": f"object {number}"},
                    "vector": vector,
                }
                handle.write(json.dumps(item, separators=(",", ":")) + "\n")


def postgres_cpu_seconds(pgdata: Path) -> float:
    """CPU seconds used so far by the embedded PostgreSQL: the postmaster, its live children, and
    (through the postmaster's reaped-children counters) its exited ones, such as parallel workers."""
    tick = os.sysconf("SC_CLK_TCK")
    postmaster = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def process_cpu_seconds() -> float:
    """CPU seconds of this process (all threads)."""
    times = os.times()
    return times.user + times.system


def main() -> int:
    """Run the benchmark; print one JSON line last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 rows instead of 100,000")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--index-workers", type=int, default=None, help="passed to load_objects")
    args = parser.parse_args()
    rows = args.rows or (10_000 if args.quick else 100_000)

    # Own embedded servers, fresh every run; the settings module starts them on import.
    embedded = _stack.fresh_embedded_in_process(DATA_DIR)

    import django

    try:
        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        source = DATA_DIR / "objects.jsonl"
        started = time.perf_counter()
        write_jsonl(source, rows=rows, dim=settings.STUDIO_EMBEDDING_DIM)
        print(f"generated {rows} rows ({source.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s")

        from studio.catalogue import services

        # Time the index build from inside the command (same process): wall and CPU of that phase alone.
        build_index = services.create_hnsw_index
        phase: dict[str, float] = {}

        def timed_build(**kwargs):
            cpu, wall = postgres_cpu_seconds(DATA_DIR / "pg"), time.perf_counter()
            build_index(**kwargs)
            phase["index_s"] = time.perf_counter() - wall
            phase["index_cpu_s"] = postgres_cpu_seconds(DATA_DIR / "pg") - cpu

        services.create_hnsw_index = timed_build
        totals, loads, indexes, python_cpu, postgres_cpu, index_cpu = [], [], [], [], [], []
        for run in range(args.runs):
            with connection.cursor() as cursor:
                cursor.execute("TRUNCATE studio_object, studio_objectpart, studio_personalizedobject CASCADE")
                cursor.execute("CHECKPOINT")
            out = io.StringIO()
            cpu_before = process_cpu_seconds(), postgres_cpu_seconds(DATA_DIR / "pg")
            started = time.perf_counter()
            options = {} if args.index_workers is None else {"index_workers": args.index_workers}
            call_command("load_objects", str(source), stdout=out, stderr=io.StringIO(), verbosity=0, **options)
            total = time.perf_counter() - started
            python_cpu.append(process_cpu_seconds() - cpu_before[0])
            postgres_cpu.append(postgres_cpu_seconds(DATA_DIR / "pg") - cpu_before[1])
            text = out.getvalue()
            index_s = phase["index_s"]
            index_cpu.append(phase["index_cpu_s"])
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM studio_objectpart")
                parts = cursor.fetchone()[0]
            if parts != rows:
                raise SystemExit(f"expected {rows} parts, found {parts}:\n{text}")
            totals.append(total)
            indexes.append(index_s)
            loads.append(total - index_s)
            print(
                f"run {run + 1}: load {total - index_s:.2f}s, index {index_s:.2f}s, total {total:.2f}s; "
                f"CPU: python {python_cpu[-1]:.1f}s, postgres {postgres_cpu[-1]:.1f}s "
                f"(index build {index_cpu[-1]:.1f}s)"
            )

        # Baseline in the same run: only decoding the file's JSON, the floor of the load's Python work.
        started = time.perf_counter()
        with source.open("rb") as handle:
            for line in handle:
                json.loads(line)
        parse_only_s = time.perf_counter() - started
        print(f"baseline: JSON decoding alone {parse_only_s:.2f}s")

        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            pgvector_version = cursor.fetchone()[0]
        result = {
            "rows": rows,
            "load_and_index_s": round(statistics.median(totals), 2),
            "load_s": round(statistics.median(loads), 2),
            "index_s": round(statistics.median(indexes), 2),
            "runs": args.runs,
            "rows_per_s": round(rows / statistics.median(loads)),
            "parse_only_s": round(parse_only_s, 2),
            "load_to_parse_ratio": round(statistics.median(loads) / parse_only_s, 2),
            # CPU seconds are what other load on the machine does not change: compare these across runs.
            "python_cpu_s": round(statistics.median(python_cpu), 2),
            "postgres_cpu_s": round(statistics.median(postgres_cpu), 2),
            "index_cpu_s": round(statistics.median(index_cpu), 2),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "target_s": 60,
            "dim": settings.STUDIO_EMBEDDING_DIM,
            "pgvector": pgvector_version,
            "cpus": os.cpu_count(),
        }
    finally:
        from django.db import connections

        connections.close_all()
        embedded.stop_started()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
