"""``manage.py load_objects FILE``: bulk-load objects from JSONL or CSV through COPY, then build the index."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from studio.catalogue import services
from studio.catalogue.models import ObjectPart
from studio.catalogue.validation import parse_object_item
from studio.core.validation import ItemError

MAX_REPORTED_ERRORS = 20


class BadLine(Exception):
    """A line of the input that is not an object at all (bad JSON, bad CSV cell)."""


def _csv_item(row: dict) -> dict:
    """A CSV row as an API item: ``object_id``; ``text``, or ``vector`` / ``vectors`` as JSON;
    ``payload`` as a JSON object; any other column goes into the payload."""
    row = dict(row)
    if None in row:
        raise BadLine("more cells than header columns")
    item: dict = {"object_id": row.pop("object_id", None)}
    payload_cell = row.pop("payload", None)
    try:
        payload = json.loads(payload_cell) if payload_cell else {}
    except json.JSONDecodeError as exc:
        raise BadLine(f"payload is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadLine("payload must be a JSON object")
    for name in ("vector", "vectors"):
        cell = row.pop(name, None)
        if cell:
            try:
                item[name] = json.loads(cell)
            except json.JSONDecodeError as exc:
                raise BadLine(f"{name} is not JSON: {exc}") from exc
    text = row.pop("text", None)
    if text:
        item["text"] = text
    payload.update({key: value for key, value in row.items() if key})
    item["payload"] = payload
    return item


def read_items(path: Path) -> Iterator[tuple[int, dict | BadLine]]:
    """``(line number, raw item or BadLine)`` for each record of a ``.jsonl`` or ``.csv`` file (``-``: JSONL
    on stdin). A JSONL line that is not UTF-8 is a bad line; a CSV file that is not UTF-8 is refused."""
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            try:
                for row in reader:
                    try:
                        yield reader.line_num, _csv_item(row)
                    except BadLine as exc:
                        yield reader.line_num, exc
            except UnicodeDecodeError as exc:
                raise CommandError(f"{path}: not UTF-8 after line {reader.line_num}") from exc
        return
    handle = sys.stdin.buffer if str(path) == "-" else path.open("rb")
    try:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)  # bytes: bad UTF-8 is a ValueError of this line only
            except (ValueError, RecursionError) as exc:
                yield number, BadLine(f"not JSON: {exc}")
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def _resolved(items: list[services.ObjectInput]) -> Iterator[tuple]:
    """The objects as COPY rows: id, payload, text, then their parts' vectors and is-average flags."""
    for item, parts in zip(items, services.build_parts(items), strict=True):
        yield item.object_id, item.payload, item.text, [v for v, _ in parts], [avg for _, avg in parts]


def _rows(file: Path, batch_size: int, errors: list[str]) -> Iterator[tuple]:
    """COPY rows of the file's valid objects, resolved ``batch_size`` at a time; what is skipped goes to ``errors``."""
    pending: list[services.ObjectInput] = []
    for number, raw in read_items(file):
        if isinstance(raw, BadLine):
            errors.append(f"line {number}: {raw}")
            continue
        parsed = parse_object_item(raw, number)
        if isinstance(parsed, ItemError):
            errors.append(f"line {number} ({parsed.ids['object_id']}): {parsed.message}")
            continue
        pending.append(parsed)
        if len(pending) >= batch_size:
            yield from _resolved(pending)
            pending = []
    yield from _resolved(pending)


class Command(BaseCommand):
    help = (
        "Load objects from a JSONL or CSV file (one object per line, as in POST /api/v1/objects) via COPY, "
        "with a progress bar; drops the HNSW index first and builds it once afterwards."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="a .jsonl or .csv file, or - for JSONL on stdin")
        parser.add_argument("--batch-size", type=int, default=2000, help="objects per COPY transaction")
        parser.add_argument(
            "--keep-index",
            action="store_true",
            help="Keep the HNSW index during the load (for small additions to a large catalogue).",
        )
        parser.add_argument("--index-workers", type=int, default=None, help="Parallel workers for the index build.")
        parser.add_argument(
            "--maintenance-work-mem", default="1GB", help="Memory for the index build (PostgreSQL units)."
        )

    def handle(self, *args, file: Path, batch_size: int, keep_index: bool, **options):
        if str(file) != "-" and not file.is_file():
            raise CommandError(f"{file} does not exist")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        started = time.perf_counter()
        errors: list[str] = []
        progress = tqdm(unit="obj", desc="loading", disable=options.get("verbosity", 1) == 0, file=sys.stderr)
        # Building an HNSW index once after the load is many times faster than maintaining it row by row.
        if not keep_index:
            services.drop_hnsw_index()
        try:
            rows = _rows(file, batch_size, errors)
            loaded = services.copy_objects(rows=rows, batch_size=batch_size, on_batch=progress.update)
        finally:
            progress.close()
            load_seconds = time.perf_counter() - started
            if not keep_index:
                self._build_index(options)
        self._report(errors, loaded=loaded, load_seconds=load_seconds, started=started)

    def _build_index(self, options: dict) -> None:
        """Build the HNSW index once, after the load."""
        self.stdout.write("building the HNSW index …")
        index_started = time.perf_counter()
        services.create_hnsw_index(
            maintenance_work_mem=options["maintenance_work_mem"], workers=options["index_workers"]
        )
        self.stdout.write(f"index built in {time.perf_counter() - index_started:.3f}s")

    def _report(self, errors: list[str], *, loaded: int, load_seconds: float, started: float) -> None:
        """The first skipped lines (and how many more), then the counts and times."""
        for line in errors[:MAX_REPORTED_ERRORS]:
            self.stderr.write(f"skipped {line}")
        if len(errors) > MAX_REPORTED_ERRORS:
            self.stderr.write(f"… and {len(errors) - MAX_REPORTED_ERRORS} more skipped")
        self.stdout.write(f"loaded in {load_seconds:.3f}s")
        self.stdout.write(
            f"Loaded {loaded} objects ({ObjectPart.objects.count()} parts in the catalogue), "
            f"skipped {len(errors)}, in {time.perf_counter() - started:.1f}s."
        )
