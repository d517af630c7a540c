"""Kept for the shipped migration ``studio/migrations/0002``, which imports the HNSW helpers from
here; the catalogue's services are ``studio.catalogue.services``."""

from studio.catalogue.services import HNSW_INDEX_NAME, create_hnsw_index

__all__ = ["HNSW_INDEX_NAME", "create_hnsw_index"]
