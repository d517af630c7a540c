"""``manage.py load_demo``: the MovieLens-100K movies as a demo catalogue, embedded with the bundled model."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from studio.catalogue import services
from studio.catalogue.datasets import DatasetMissing, movielens_movies
from studio.catalogue.models import Object


def demo_items() -> list[services.ObjectInput]:
    """The 1,682 movies as objects ``movie-<id>`` with title, year and genres."""
    return [
        services.ObjectInput(object_id=f"movie-{m.item_id}", payload=m.payload, text=m.text) for m in movielens_movies()
    ]


class Command(BaseCommand):
    help = "Load the MovieLens-100K movies as the demo catalogue (once; --force reloads)."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true")

    def handle(self, *args, force: bool, **options):
        if Object.objects.filter(object_id__startswith="movie-").exists() and not force:
            self.stdout.write("Demo catalogue already loaded.")
            return
        try:
            items = demo_items()
        except DatasetMissing as exc:
            raise CommandError(str(exc)) from exc
        batch = 256
        with tqdm(total=len(items), unit="movie", desc="embedding demo catalogue") as progress:
            for start in range(0, len(items), batch):
                services.upsert_objects(items=items[start : start + batch])
                progress.update(len(items[start : start + batch]))
        self.stdout.write(f"Loaded {len(items)} movies.")
