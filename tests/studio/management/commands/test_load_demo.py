"""studio.management.commands.load_demo: the demo movies load once."""

from __future__ import annotations

import io

from django.core.management import call_command

from studio.models import Object, ObjectPart


def test_load_demo_loads_movies_once(db, monkeypatch):
    from studio.management.commands import load_demo

    movies = load_demo.demo_items()
    assert len(movies) == 1682
    assert movies[0].object_id == "movie-1" and movies[0].payload["title"]
    monkeypatch.setattr(load_demo, "demo_items", lambda: movies[:12])  # embedding all 1,682 is slow here
    call_command("load_demo", stdout=io.StringIO(), stderr=io.StringIO())
    assert Object.objects.filter(object_id__startswith="movie-").count() == 12
    assert ObjectPart.objects.count() == 12
    out = io.StringIO()
    call_command("load_demo", stdout=out, stderr=io.StringIO())
    assert "already loaded" in out.getvalue()
