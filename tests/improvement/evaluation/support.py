"""Helpers shared by the evaluation tests (holds no tests): BEIR-layout folders and the throwaway databases."""

from __future__ import annotations

import json


def write_beir(folder, *, documents: dict[str, str], queries: dict[str, str], qrels: list[tuple[str, str, int]]):
    """A BEIR-layout folder."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as handle:
        for doc_id, text in documents.items():
            handle.write(json.dumps({"_id": doc_id, "title": f"Doc {doc_id}", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for query_id, text in queries.items():
            handle.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, d, g in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")


TOPICS = {
    "astronomy": ["telescopes", "planets", "comets", "galaxies", "the moon", "stars", "nebulae", "eclipses"],
    "cooking": ["bread", "soups", "pasta", "spices", "grilling", "baking cakes", "sauces", "knife skills"],
    "gardening": ["tomatoes", "roses", "compost", "pruning", "seeds", "soil", "herbs", "watering"],
    "sailing": ["knots", "navigation", "wind", "sails", "anchoring", "tides", "racing", "boat repair"],
    "chess": ["openings", "endgames", "tactics", "tournaments", "grandmasters", "pawns", "blitz", "puzzles"],
    "painting": ["watercolor", "oil paint", "brushes", "portraits", "landscapes", "color theory", "canvas", "murals"],
}


def tiny_collection(folder) -> None:
    """Six topics of eight documents; each topic's query judges three of its documents relevant (grade 2)
    and the other five not, so that clicks, not the text, tell them apart."""
    documents, queries, qrels = {}, {}, []
    for t, (topic, subjects) in enumerate(TOPICS.items()):
        queries[f"q{t}"] = f"a practical guide to {topic}"
        for s, subject in enumerate(subjects):
            doc_id = f"{topic}-{s}"
            documents[doc_id] = f"An introduction to {topic}: {subject}, explained for beginners with examples."
            qrels.append((f"q{t}", doc_id, 2 if s in (2, 5, 7) else 0))
    write_beir(folder, documents=documents, queries=queries, qrels=qrels)


def evaluation_databases() -> list[str]:
    """Names of the evaluation's throwaway databases on the server."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'studio_eval_%%'")
        return [row[0] for row in cursor.fetchall()]
