"""Loading an evaluation catalogue through the catalogue service, with embeddings computed once.

Texts are split and embedded exactly as ``studio.catalogue.services.build_parts`` does for a text upsert
(``studio.catalogue.embedding.split_text``, the bundled model, an average part for multi-chunk texts), but the
chunk vectors are cached in ``STUDIO_DATA_DIR/evaluation-cache`` so that every arm, every sweep
configuration and every later run reuses them. Query texts are cached the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from django.conf import settings
from tqdm import tqdm

from improvement.evaluation.datasets import EvalDataset
from studio.catalogue import embedding, services

LOAD_BATCH = 500


def cache_dir() -> Path:
    """Where embeddings are cached (under the data dir)."""
    folder = Path(settings.STUDIO_DATA_DIR) / "evaluation-cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def embed_cached(texts: Sequence[str], *, label: str, progress: bool = True) -> np.ndarray:
    """Embed ``texts`` with the bundled model, reusing a ``.npy`` keyed by the texts and the model settings."""
    digest = hashlib.sha256()
    digest.update(f"{settings.STUDIO_EMBEDDER}|{settings.STUDIO_EMBEDDING_DIM}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    path = cache_dir() / f"{label}-{digest.hexdigest()[:20]}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape == (len(texts), settings.STUDIO_EMBEDDING_DIM):
            return vectors
    vectors = embedding.embed_texts(list(texts), show_progress=progress)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def object_vectors(dataset: EvalDataset, *, progress: bool = True) -> list[list[np.ndarray]]:
    """Per object, its chunk vectors (one per ``split_text`` chunk)."""
    chunks: list[str] = []
    owners: list[int] = []
    for position, obj in enumerate(dataset.objects):
        for chunk in embedding.split_text(obj.text):
            chunks.append(chunk)
            owners.append(position)
    vectors = embed_cached(
        chunks, label=f"objects-{dataset.name.replace(':', '_').replace('/', '_')}", progress=progress
    )
    per_object: list[list[np.ndarray]] = [[] for _ in dataset.objects]
    for owner, vector in zip(owners, vectors, strict=True):
        per_object[owner].append(vector)
    return per_object


def query_vectors(dataset: EvalDataset, *, progress: bool = True) -> dict[str, np.ndarray]:
    """Every query text of the data set, embedded once."""
    ids = sorted(dataset.queries)
    vectors = embed_cached([dataset.queries[q] for q in ids], label="queries", progress=progress)
    return dict(zip(ids, vectors, strict=True))


def load_catalogue(dataset: EvalDataset, vectors: list[list[np.ndarray]], *, progress: bool = True) -> int:
    """Upsert every object through ``studio.catalogue.services.upsert_objects`` (as ``POST /objects`` does)."""
    items = [
        services.ObjectInput(
            object_id=obj.object_id,
            payload=obj.payload,
            text=obj.text,
            vectors=[v.tolist() for v in parts],
            add_average=True,  # what a text upsert does for multi-chunk texts
        )
        for obj, parts in zip(dataset.objects, vectors, strict=True)
    ]
    written = 0
    bar = tqdm(total=len(items), desc="catalogue", unit="obj", disable=not progress, leave=False)
    for start in range(0, len(items), LOAD_BATCH):
        batch = items[start : start + LOAD_BATCH]
        written += services.upsert_objects(items=batch)
        bar.update(len(batch))
    bar.close()
    return written
