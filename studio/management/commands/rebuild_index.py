"""``manage.py rebuild_index``: drop and rebuild the HNSW index with the operator class of ``STUDIO_METRIC``."""

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from studio.catalogue import services


class Command(BaseCommand):
    help = "Rebuild the HNSW index on ObjectPart.vector (after changing STUDIO_METRIC or the HNSW settings)."

    def add_arguments(self, parser):
        parser.add_argument("--index-workers", type=int, default=None, help="Parallel workers for the build.")

    def handle(self, *args, index_workers: int | None, **options):
        started = time.perf_counter()
        services.drop_hnsw_index()
        services.create_hnsw_index(workers=index_workers)
        self.stdout.write(
            f"Rebuilt {services.HNSW_INDEX_NAME} ({services.HNSW_OPCLASS[settings.STUDIO_METRIC]}, "
            f"m={settings.STUDIO_HNSW_M}, ef_construction={settings.STUDIO_HNSW_EF_CONSTRUCTION}) "
            f"in {time.perf_counter() - started:.1f}s."
        )
