"""studio.management.commands.create_api_key: the key is printed last and works; unknown scopes are refused."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from studio.models import Object
from tests.support import unit_vector


def test_create_api_key_prints_key_last_and_it_works(db):
    out = io.StringIO()
    call_command("create_api_key", "--name", "ci", "--scopes", "catalog,search", stdout=out)
    last = out.getvalue().strip().splitlines()[-1]
    match = re.fullmatch(r"API key: (\S+)", last)
    assert match, out.getvalue()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {match.group(1)}")
    assert client.get("/api/v1/objects/nothing").status_code == 404
    assert client.post("/api/v1/objects", {"objects": [{"object_id": "a", "vector": unit_vector(1.0)}]}, format="json")
    assert Object.objects.filter(object_id="a").exists()


def test_create_api_key_refuses_unknown_scope(db):
    with pytest.raises(CommandError, match="scopes"):
        call_command("create_api_key", "--name", "x", "--scopes", "catalog,root", stdout=io.StringIO())
