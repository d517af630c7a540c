"""Helpers of the clickstream tests (holds no tests)."""

from __future__ import annotations

import uuid

from clickstream import services
from clickstream.models import Session
from studio.catalogue.interleaving import BASE, LEARNED

SHOWN = ["a", "b", "c", "d"]


def shown_session(*, metas: list[dict], query: str = "q", search_meta: dict | None = None) -> Session:
    """A session of user ``u`` as search registers one: results ``SHOWN[:len(metas)]``, each with its meta."""
    session_id = uuid.uuid4().hex
    services.register_session(
        session_id=session_id,
        user_id="u",
        search_query=query,
        query_vector=None,
        results=[services.ShownResultInput(object_id=oid, score=None, meta=meta) for oid, meta in zip(SHOWN, metas)],
        search_meta=search_meta or {},
    )
    return Session.objects.get(session_id=session_id)


def interleaved_session(*, teams=(LEARNED, BASE, LEARNED, BASE), query="q", interleaving=True) -> Session:
    """An interleaved session as search registers one: each shown result with its team."""
    if not interleaving:
        return shown_session(metas=[{} for _ in teams], query=query)
    return shown_session(
        metas=[{"team": team} for team in teams], query=query, search_meta={"interleaving": "team_draft"}
    )
