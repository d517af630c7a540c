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

from studio import services
from studio.models import ObjectPart
from studio.validation import parse_object_item


def read_items(path: Path) -> Iterator[dict]:
    """Raw items of a ``.jsonl`` / ``.csv`` file (CSV: ``object_id``, ``text`` or ``vector`` as JSON,
    ``payload`` as JSON; other columns go into the payload)."""
    opener = sys.stdin if str(path) == "-" else path.open(encoding="utf-8", newline="")
    with opener as handle:
        if path.suffix.lower() == ".csv":
            for row in csv.DictReader(handle):
                item: dict = {"object_id": row.pop("object_id", None)}
                payload = json.loads(row.pop("payload")) if row.get("payload") else {}
                for name in ("vector", "vectors"):
                    if row.get(name):
                        item[name] = json.loads(row.pop(name))
                    row.pop(name, None)
                if row.get("text"):
                    item["text"] = row.pop("text")
                row.pop("text", None)
                payload.update({k: v for k, v in row.items() if k})
                item["payload"] = payload
                yield item
        else:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield {"__error__": f"line {number}: {exc}"}


class Command(BaseCommand):
    help = "Load objects from a JSONL or CSV file via COPY, with a progress bar; rebuilds the HNSW index after."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--batch-size", type=int, default=2000)
        parser.add_argument(
            "--keep-index",
            action="store_true",
            help="Keep the HNSW index during the load (for small additions to a large catalogue).",
        )
        parser.add_argument("--index-workers", type=int, default=None, help="Parallel workers for the index build.")

    def handle(self, *args, file: Path, batch_size: int, keep_index: bool, index_workers: int | None, **options):
        if str(file) != "-" and not file.exists():
            raise CommandError(f"{file} does not exist")
        started = time.perf_counter()
        # Building an HNSW index once after the load is many times faster than maintaining it row by row.
        rebuild = not keep_index
        if rebuild:
            services.drop_hnsw_index()
        errors: list[str] = []
        progress = tqdm(unit="obj", desc="loading", disable=options.get("verbosity", 1) == 0)

        def rows():
            pending: list[services.ObjectInput] = []
            for index, raw in enumerate(read_items(file)):
                if "__error__" in raw:
                    errors.append(raw["__error__"])
                    continue
                parsed = parse_object_item(raw, index)
                if isinstance(parsed, services.ItemError):
                    errors.append(f"item {index} ({parsed.object_id}): {parsed.message}")
                    continue
                pending.append(parsed)
                if len(pending) >= batch_size:
                    yield from _resolve(pending)
                    pending = []
            yield from _resolve(pending)

        def _resolve(items):
            for item, parts in zip(items, services.build_parts(items), strict=True):
                yield item.object_id, item.payload, item.text, [vector for vector, _avg in parts]

        try:
            loaded = services.copy_objects(rows=rows(), batch_size=batch_size, on_batch=progress.update)
        finally:
            progress.close()
            if rebuild:
                index_started = time.perf_counter()
                self.stdout.write("building the HNSW index …")
                services.create_hnsw_index(workers=index_workers)
                self.stdout.write(f"index built in {time.perf_counter() - index_started:.1f}s")
        for line in errors[:20]:
            self.stderr.write(f"skipped {line}")
        if len(errors) > 20:
            self.stderr.write(f"… and {len(errors) - 20} more skipped")
        self.stdout.write(
            f"Loaded {loaded} objects ({ObjectPart.objects.count()} parts in the catalogue), "
            f"skipped {len(errors)}, in {time.perf_counter() - started:.1f}s."
        )
