"""Forgetting a user: every row studio holds about them, across the apps, in one transaction.

Lives in improvement because it is the one app that may read all three stores it empties
(clickstream sessions and events, improvement attempts and runs, catalogue copies); the HTTP
endpoint is ``improvement.api.users`` (``DELETE /api/v1/users/{user_id}``).
"""

from __future__ import annotations

from django.db import transaction

from clickstream.services import forget_user as forget_clickstream_user
from improvement.models import ImprovementAttempt, ImprovementRun
from studio.catalogue import personalization, shared


@transaction.atomic
def forget_user(*, user_id: str) -> dict[str, int]:
    """Delete everything studio knows about a user: clickstream rows, attempts, personalized copies, shared votes.

    Sessions go first (their rows are locked), so a batch writing this user's copies right now
    either commits before (and its copies are deleted here) or finds the sessions gone and writes
    nothing for this user.
    """
    # Attempts go with their sessions (ON DELETE CASCADE, migration 0004): count them first to report them.
    attempts = ImprovementAttempt.objects.filter(user_id=user_id).count()
    counts = dict(forget_clickstream_user(user_id=user_id))
    counts["improvement_attempts"] = attempts + ImprovementAttempt.objects.filter(user_id=user_id).delete()[0]
    counts.update(personalization.delete_user_copies(user_id=user_id))
    # The shared tier forgets their votes and recomputes what they touched from everyone else's.
    counts["shared_votes"] = shared.forget_voter(voter=user_id)
    # A run narrowed to this user (the demo's "Improve now") names them in its parameters.
    narrowed = list(ImprovementRun.objects.filter(parameters__user_id=user_id))
    for run in narrowed:
        run.parameters.pop("user_id", None)
    ImprovementRun.objects.bulk_update(narrowed, ["parameters"])
    counts["improvement_runs_redacted"] = len(narrowed)
    return counts
