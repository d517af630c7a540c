"""improvement.services.guard: learned ranking switched off when it loses the interleaving experiment
(STUDIO_INTERLEAVE_AUTO_OFF), recorded, shown in health, and switched back on by an admin."""

from __future__ import annotations

import pytest

from improvement import services
from improvement.tasks import check_interleaving_guard
from studio.catalogue import ranking_switch
from studio.models import RankingSwitch
from tests.clickstream.support import interleaved_session
from tests.improvement.support import click


@pytest.fixture
def losing(learned, settings):
    """Users with copies, and an experiment the learned ranking loses (8 losses, guard at 8 and p < 0.05)."""
    settings.STUDIO_INTERLEAVE_FRACTION = 0.5
    settings.STUDIO_INTERLEAVE_GUARD_MIN_SESSIONS = 8
    settings.STUDIO_INTERLEAVE_GUARD_P = 0.05
    for _ in range(8):
        click(interleaved_session(), "b")
    return settings


def _personalized(client, user: str) -> int:
    from studio.models import ObjectPart
    from tests.improvement.support import unit  # noqa: F401  (vectors come from the learned world)

    vector = [float(x) for x in ObjectPart.objects.order_by("object__object_id").first().vector]
    body = client.post("/api/v1/search", {"query_vector": vector, "user_id": user, "track": False}, format="json")
    return sum(hit["personalized"] for hit in body.json()["results"])


def test_a_losing_experiment_switches_learned_ranking_off_until_an_admin_switches_it_on(
    losing, make_client, admin_client, client
):
    api = make_client("search")
    assert _personalized(api, "ann") > 0
    losing.STUDIO_INTERLEAVE_AUTO_OFF = False
    assert services.enforce_interleaving_guard() is False  # the guard only warns unless auto-off is allowed
    losing.STUDIO_INTERLEAVE_AUTO_OFF = True
    assert check_interleaving_guard.apply().get() is True
    switch = RankingSwitch.objects.get()
    assert switch.learned_ranking is False and switch.changed_by == "interleaving guard" and "8 losses" in switch.reason
    assert _personalized(api, "ann") == 0  # originals only, for everyone
    health = client.get("/api/v1/health").json()["interleaving"]
    assert health["learned_ranking"] is False and health["ok"] is False
    assert services.enforce_interleaving_guard() is False  # already off: nothing recorded twice

    response = admin_client.post(
        "/admin/studio/rankingswitch/add/", {"learned_ranking": "on", "reason": "investigated: a bad deploy"}
    )
    assert response.status_code == 302
    latest = RankingSwitch.objects.order_by("-pk").first()
    assert latest.learned_ranking and latest.changed_by == "admin"
    assert ranking_switch.learned_ranking_on() and _personalized(api, "ann") > 0
    assert admin_client.get("/admin/studio/rankingswitch/").status_code == 200
