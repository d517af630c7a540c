"""improvement.api.users: ``DELETE /api/v1/users/{user_id}`` forgets a user's clickstream and copies."""

from __future__ import annotations

from clickstream.models import Session
from improvement.models import ImprovementAttempt
from studio.models import PersonalizedObject


def test_delete_user_forgets_clickstream_and_copies(learned, make_client):
    client = make_client("admin")
    ann_copies = PersonalizedObject.objects.filter(user_id="ann").count()
    response = client.delete("/api/v1/users/ann")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "ann"
    assert (body["sessions"], body["shown_results"], body["events"]) == (1, 5, 1)
    assert body["improvement_attempts"] == 1
    assert body["personalized_objects"] == ann_copies > 0
    assert body["personalized_parts"] == ann_copies
    assert not Session.objects.filter(user_id="ann").exists()
    assert not PersonalizedObject.objects.filter(user_id="ann").exists()
    assert not ImprovementAttempt.objects.filter(user_id="ann").exists()
    assert PersonalizedObject.objects.filter(user_id="ben").exists()
    again = client.delete("/api/v1/users/ann").json()
    assert again["sessions"] == 0 and again["personalized_objects"] == 0
    too_long = client.delete("/api/v1/users/" + "x" * 300)
    assert too_long.status_code == 400 and "user_id" in too_long.json()["error"]["fields"]
