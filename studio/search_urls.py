"""URL routes (filled in by their feature)."""

urlpatterns: list = []
