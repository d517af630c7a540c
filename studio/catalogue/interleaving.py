"""Team-draft interleaving of the learned ranking against the base ranking (docs/architecture.md, "Online proof").

For ``STUDIO_INTERLEAVE_FRACTION`` of tracked searches, chosen deterministically from the session id, the
page shown is a team draft (Radlinski, Kurup & Joachims, 2008) of two rankings of the same query: the
*learned* one (the user's copies and the shared tier, what search returns) and the *base* one (originals
only, no shared offsets). At each turn the team with fewer picks so far (a coin seeded by the session id on a
tie) adds its highest-ranked result not yet shown; each shown result records its team, so that clicks
credit teams (``clickstream.experiments``). The response is an ordinary ranking: a client never knows.

Where the two rankings begin with the same results in the same order, that common prefix is shown first
and credited to neither team (``BOTH``): there a result's team would be the coin's choice, not a ranker's,
so a click on it could only add a win or a loss at random. The draft starts after it, teams even.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence

from django.conf import settings

LEARNED = "learned"
BASE = "base"
BOTH = "both"  # the common prefix: shown by both rankings at the same ranks, credited to neither


def interleaved(*, session_id: str, fraction: float | None = None) -> bool:
    """Whether this session's search is interleaved: its id hashed to [0, 1) falls under the fraction."""
    fraction = settings.STUDIO_INTERLEAVE_FRACTION if fraction is None else fraction
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"interleave:{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def team_draft(learned: Sequence, base: Sequence, *, limit: int, seed: str, key=lambda hit: hit) -> list[tuple]:
    """The first ``limit`` of a team draft of two rankings: ``[(item, team), …]``, no item twice (by ``key``);
    the common prefix first (team ``BOTH``), then the teams' picks, never more than one apart while both
    still have results to give."""
    coin = random.Random(seed)
    rankings = {LEARNED: list(learned), BASE: list(base)}
    prefix = _common_prefix(rankings[LEARNED], rankings[BASE], key=key)[:limit]
    cursor = {LEARNED: len(prefix), BASE: len(prefix)}
    picks = {LEARNED: 0, BASE: 0}
    shown: set = {key(item) for item in prefix}
    drafted: list[tuple] = [(item, BOTH) for item in prefix]
    while len(drafted) < limit:
        turn = _whose_turn(picks, coin)
        item = _next_unshown(rankings[turn], cursor, turn, shown, key)
        if item is None:  # this team has nothing left: the other one picks
            turn = BASE if turn == LEARNED else LEARNED
            item = _next_unshown(rankings[turn], cursor, turn, shown, key)
            if item is None:
                break
        shown.add(key(item))
        picks[turn] += 1
        drafted.append((item, turn))
    return drafted


def _common_prefix(learned: list, base: list, *, key) -> list:
    """The results both rankings show first, at the same ranks."""
    prefix = []
    for a, b in zip(learned, base, strict=False):
        if key(a) != key(b):
            break
        prefix.append(a)
    return prefix


def _whose_turn(picks: dict[str, int], coin: random.Random) -> str:
    if picks[LEARNED] != picks[BASE]:
        return LEARNED if picks[LEARNED] < picks[BASE] else BASE
    return coin.choice((LEARNED, BASE))


def _next_unshown(ranking: list, cursor: dict[str, int], team: str, shown: set, key):
    while cursor[team] < len(ranking):
        item = ranking[cursor[team]]
        cursor[team] += 1
        if key(item) not in shown:
            return item
    return None


def interleave_hits(learned: Sequence, base: Sequence, *, limit: int, seed: str) -> list:
    """Search hits of a team draft, ranked 1 … n, each with its ``team``."""
    drafted = team_draft(learned, base, limit=limit, seed=seed, key=lambda hit: hit.object_id)
    return [dataclasses.replace(hit, rank=rank, team=team) for rank, (hit, team) in enumerate(drafted, start=1)]
