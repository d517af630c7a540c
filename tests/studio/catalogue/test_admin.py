"""studio.catalogue.admin (and the API keys' admin of studio.core.admin): pages render, vectors and key
hashes are never listed, personalized copies link to their sessions and originals and can be reset."""

from __future__ import annotations

import pytest
from django.urls import reverse

from clickstream.models import Session
from studio.models import PersonalizedObject, PersonalizedPart
from tests.improvement.support import two_learned_users
from tests.studio.catalogue.support import DIM, make_original


def test_admin_pages_render(db, client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    obj = make_original("a", [0.123456789] * DIM)
    copy = PersonalizedObject.objects.create(original=obj, user_id="u", object_id="a_u")
    PersonalizedPart.objects.create(personalized=copy, index=0, vector=[0.5] * DIM)
    from studio.core.auth import create_api_key

    key, _ = create_api_key(name="admin-test", scopes=["catalog"])
    pages = [
        "/admin/",
        "/admin/studio/object/",
        f"/admin/studio/object/{obj.pk}/change/",
        "/admin/studio/personalizedobject/",
        f"/admin/studio/personalizedobject/{copy.pk}/change/",
        "/admin/studio/apikey/",
        f"/admin/studio/apikey/{key.pk}/change/",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
    listing = client.get("/admin/studio/object/").content.decode()
    assert listing.count("0.123") < 10  # vectors are never listed in full
    assert key.key_hash not in client.get("/admin/studio/apikey/").content.decode()


@pytest.fixture
def learned(db, settings):
    """Two users, each with a used session and personalized copies."""
    settings.IMPROVEMENT_SETTLE_SECONDS = 0
    return two_learned_users()


def test_admin_personalized_objects_filter_links_and_reset(learned, admin_client):
    url = reverse("admin:studio_personalizedobject_changelist")
    page = admin_client.get(url + "?user_id=ann")
    assert page.status_code == 200
    assert b"_ann" in page.content and b"_ben" not in page.content
    copy = PersonalizedObject.objects.filter(user_id="ann").first()
    detail = admin_client.get(reverse("admin:studio_personalizedobject_change", args=[copy.pk]))
    session = Session.objects.get(user_id="ann")
    assert reverse("admin:clickstream_session_change", args=[session.pk]).encode() in detail.content
    assert reverse("admin:studio_object_change", args=[copy.original_id]).encode() in detail.content
    response = admin_client.post(url, {"action": "reset_user_copies", "_selected_action": [copy.pk]})
    assert response.status_code == 302
    assert not PersonalizedObject.objects.filter(user_id="ann").exists()
    assert PersonalizedObject.objects.filter(user_id="ben").exists()
