"""Helpers of the clickstream tests (holds no tests)."""

from __future__ import annotations

import uuid

from clickstream import services
from clickstream.models import Session
from studio.catalogue.interleaving import BASE, LEARNED

SHOWN = ["a", "b", "c", "d"]


def interleaved_session(*, teams=(LEARNED, BASE, LEARNED, BASE), query="q", interleaving=True) -> Session:
    """A session registered as search registers an interleaved one: each shown result with its team."""
    session_id = uuid.uuid4().hex
    services.register_session(
        session_id=session_id,
        user_id="u",
        search_query=query,
        query_vector=None,
        results=[
            services.ShownResultInput(object_id=oid, score=None, meta={"team": team} if interleaving else {})
            for oid, team in zip(SHOWN, teams, strict=True)
        ],
        search_meta={"interleaving": "team_draft"} if interleaving else {},
    )
    return Session.objects.get(session_id=session_id)
