"""studio.catalogue.embedding: the sentence embedder and text splitting."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from studio.catalogue import embedding
from tests.studio.catalogue.support import DIM


def test_embedding_is_deterministic_unit_and_384_dims():
    first = embedding.embed_text("Star Wars (1977). Genres: Action, Adventure, Sci-Fi.")
    second = embedding.embed_texts(["Star Wars (1977). Genres: Action, Adventure, Sci-Fi.", "Toy Story"])
    assert first.shape == (DIM,) and first.dtype == np.float32
    assert np.array_equal(first, second[0])
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert float(first @ second[1]) < 0.9
    assert embedding.embed_texts([]).shape == (0, DIM)


def test_model_loads_without_deprecation_warning(monkeypatch):
    monkeypatch.setattr(embedding, "_model", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedding.embed_text("hello")
    assert not [w for w in caught if "get_sentence_embedding_dimension" in str(w.message)]


def test_embedder_none_refuses_to_embed(settings, monkeypatch):
    settings.STUDIO_EMBEDDER = "none"
    monkeypatch.setattr(embedding, "_model", None)
    assert not embedding.embedder_enabled()
    with pytest.raises(embedding.EmbedderUnavailable):
        embedding.embed_text("hello")


def test_split_text(settings):
    settings.STUDIO_EMBEDDER_MAX_WORDS = 3
    assert embedding.split_text("  a b c  ") == ["a b c"]
    assert embedding.split_text("a b c d e f g") == ["a b c", "d e f", "g"]
