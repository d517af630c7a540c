"""Security, proven: scopes on every API operation, keys compared in constant time, no SQL built from
user values, user deletion that leaves nothing behind, the admin behind staff login and CSRF,
``manage.py check --deploy`` clean under production settings, body size limits, per-key throttles.
"""

from __future__ import annotations

import ast
import re
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.db import connection
from drf_spectacular.generators import EndpointEnumerator
from rest_framework.test import APIClient

from studio.core import auth
from studio.models import API_SCOPES
from tests.support import ROOT, subprocess_env

# Operations that hold no data and need no key (docs/architecture.md, "Keys and scopes": health; the schema and its UI).
PUBLIC = {("/api/v1/health", "GET"), ("/api/v1/schema", "GET"), ("/api/v1/docs", "GET")}
PATH_VALUES = {"object_id": "obj-1", "run_id": "1", "session_id": "sess-1", "user_id": "user-1"}


def api_operations() -> list[tuple[str, str, type]]:
    """Every (path, method, view class) routed under /api/v1, as the schema generator sees them."""
    operations = []
    for path, _regex, method, callback in EndpointEnumerator().get_api_endpoints():
        if path.startswith("/api/v1/"):
            operations.append((path, method, callback.cls))
    return sorted(operations, key=lambda op: (op[0], op[1]))


OPERATIONS = api_operations()
PROTECTED = [(path, method, view) for path, method, view in OPERATIONS if (path, method) not in PUBLIC]


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


def send(client: APIClient, path: str, method: str):
    url = concrete(path)
    if method in ("POST", "PUT", "PATCH"):
        return getattr(client, method.lower())(url, {}, format="json")
    return getattr(client, method.lower())(url)


def client_with(*scopes: str) -> APIClient:
    _, plain = auth.create_api_key(name=f"sec-{secrets.token_hex(3)}", scopes=list(scopes))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


@pytest.fixture(autouse=True)
def _fresh_key_cache():
    auth.clear_key_cache()
    yield
    auth.clear_key_cache()


# --- scopes -------------------------------------------------------------------------------------


def test_every_api_route_is_enumerated_and_declares_a_known_scope():
    routes = {path for path, _, _ in OPERATIONS}
    for expected in ("/api/v1/objects", "/api/v1/search", "/api/v1/clickstream/events", "/api/v1/users/{user_id}"):
        assert expected in routes
    assert len(PROTECTED) >= 12
    for path, method, view in PROTECTED:
        assert getattr(view, "required_scope", None) in API_SCOPES, (path, method)
        assert auth.HasScope in view.permission_classes, (path, method)
        assert auth.ApiKeyRateThrottle in view.throttle_classes, (path, method)  # every key is throttled


@pytest.mark.parametrize(("path", "method", "view"), PROTECTED, ids=[f"{m} {p}" for p, m, _ in PROTECTED])
def test_scope_is_enforced(db, path, method, view):
    scope = view.required_scope
    anonymous = send(APIClient(), path, method)
    assert anonymous.status_code == 401, anonymous.content
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    assert anonymous["WWW-Authenticate"] == "Bearer"

    lacking = send(client_with(*[s for s in API_SCOPES if s != scope]), path, method)
    assert lacking.status_code == 403, lacking.content
    assert scope in lacking.json()["error"]["message"]

    holding = send(client_with(scope), path, method)
    assert holding.status_code not in (401, 403), holding.content
    assert holding.status_code < 500, holding.content


@pytest.mark.parametrize(("path", "method"), sorted(PUBLIC))
def test_public_operations_need_no_key(db, path, method):
    assert (path, method) in {(p, m) for p, m, _ in OPERATIONS}
    assert send(APIClient(), path, method).status_code in (200, 503)  # health is 503 when degraded


# --- keys ---------------------------------------------------------------------------------------


def test_keys_are_verified_by_hash_in_constant_time(db, monkeypatch):
    import hmac

    key, plain = auth.create_api_key(name="timing", scopes=["search"])
    stored = [str(value) for value in key.__class__.objects.filter(pk=key.pk).values().get().values()]
    assert not any(plain in value or plain.split("_", 2)[2] in value for value in stored)  # no secret at rest

    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert auth.verify_api_key(plain + "x") is None  # same prefix, wrong secret
    assert auth.verify_api_key(plain).pk == key.pk
    assert len(compared) == 2 and all(a == key.key_hash for a, _ in compared)
    assert "==" not in "".join(
        line for line in Path(auth.__file__).read_text().splitlines() if "key_hash" in line and "compare" not in line
    )


# --- SQL ----------------------------------------------------------------------------------------

SQL_CALLS = {"execute", "executemany", "raw", "extra", "copy", "RawSQL"}
# Every SQL call site whose statement is not a plain constant, reviewed: no user value is formatted in.
REVIEWED_DYNAMIC_SQL = {
    ("clickstream/services.py", "_delete_sessions"): "formats one of two constant SELECTs of this module; "
    "user_id and dates are bound parameters",
    ("improvement/evaluation/database.py", "_admin_execute"): "psycopg sql.SQL with sql.Identifier "
    "(throwaway evaluation database name)",
    ("studio/devstack/embedded.py", "_ensure_database"): "psycopg sql.Identifier of the configured database name",
    ("studio/devstack/embedded.py", "_tune"): "ALTER SYSTEM with an integer (kB) that "
    "pg_size_bytes computed from a bound parameter",
    ("studio/migrations/0002_objectpart_hnsw_index.py", "drop_index"): "a constant index name",
    ("studio/catalogue/personalization.py", "execute"): "a cursor wrapper forwarding its caller's statement unchanged",
    ("studio/catalogue/shared.py", "_row_sets"): "runs the module's constant statements it is handed "
    "(_DERIVED_* and _RECOMPUTED_*); nothing is formatted",
    ("studio/catalogue/shared.py", "query_offsets"): "_QUERY_OFFSETS: a module constant around offsets_sql's fixed "
    "fragments (the exact-query key); query, weight, bound, half-life and limit are bound parameters",
    ("studio/catalogue/shared.py", "shifted_query"): "_shift_rows_sql: offsets_sql's fixed fragments and the metric "
    "operator from METRIC_OPERATORS; query text, vector, weight, bound, half-life are bound parameters",
    ("studio/catalogue/search.py", "_run_ranking"): "_ranking_sql: fixed fragments and the metric operator from "
    "settings; vector, user, filter (jsonb @> bound), limits are bound parameters",
    ("studio/catalogue/services.py", "drop_hnsw_index"): "a constant index name",
    ("studio/catalogue/services.py", "create_hnsw_index"): "constant index name, opclass from "
    "STUDIO_METRIC (validated), m/ef_construction integers from settings",
}


def _composed_of_constants(value: ast.expr | None, constants: set[str]) -> bool:
    """A module-level f-string whose every interpolation is a string constant of the module or an
    imported UPPER_CASE constant: a statement fixed when the module is imported, never per call."""
    return isinstance(value, ast.JoinedStr) and all(
        isinstance(part, ast.Constant)
        or (isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) and part.value.id in constants)
        for part in value.values
    )


def _module_string_constants(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:  # in order: a constant may be built from the ones above it
        if isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names if alias.name.isupper())
            continue
        value = node.value if isinstance(node, ast.Assign) else None
        if (isinstance(value, ast.Constant) and isinstance(value.value, str)) or _composed_of_constants(value, names):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


def dynamic_sql_call_sites() -> set[tuple[str, str]]:
    """(file, function) of every SQL call whose statement is not a string constant of its module."""
    found = set()
    for package in ("studio", "clickstream", "improvement"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            constants = _module_string_constants(tree)
            enclosing = {}
            for function in ast.walk(tree):
                if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for node in ast.walk(function):
                        enclosing[node] = function.name  # inner functions are walked later and win
            for call in ast.walk(tree):
                if not isinstance(call, ast.Call):
                    continue
                func = call.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name not in SQL_CALLS:
                    continue
                args = list(call.args) or [k.value for k in call.keywords if k.arg in ("sql", "query")]
                if not args:
                    continue  # numpy's .copy()
                statement = args[0]
                if isinstance(statement, ast.Constant) and isinstance(statement.value, str):
                    continue
                if isinstance(statement, ast.Name) and statement.id in constants:
                    continue
                found.add((path.relative_to(ROOT).as_posix(), enclosing.get(call, "<module>")))
    return found


def test_no_sql_is_built_from_strings_except_the_reviewed_sites():
    found = dynamic_sql_call_sites()
    assert found - REVIEWED_DYNAMIC_SQL.keys() == set(), "new SQL built from strings: review it, bind the values"
    assert REVIEWED_DYNAMIC_SQL.keys() - found == set(), "a reviewed site is gone: drop it from the list"


def test_the_sql_audit_catches_an_fstring_statement(tmp_path, monkeypatch):
    package = tmp_path / "studio"
    package.mkdir()
    (package / "bad.py").write_text("def lookup(cursor, name):\n    cursor.execute(f\"SELECT 1 WHERE x = '{name}'\")\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "clickstream").mkdir()
    (tmp_path / "improvement").mkdir()
    assert dynamic_sql_call_sites() == {("studio/bad.py", "lookup")}


def test_the_sql_audit_accepts_only_constants_composed_at_import(tmp_path, monkeypatch):
    package = tmp_path / "studio"
    package.mkdir()
    (package / "mixed.py").write_text(
        'READY = "x = 1"\n'
        'FIXED = f"SELECT 1 WHERE {READY}"\n'
        "import os\n"
        'table = os.environ["T"]\n'
        'LOOSE = f"SELECT 1 FROM {table}"\n'
        'USER = os.environ["USER"]\n'
        'PEEK = f"SELECT 1 WHERE u = {USER}"\n'
        "def peek(cursor):\n    cursor.execute(PEEK)\n"
        "def fixed(cursor):\n    cursor.execute(FIXED)\n"
        "def loose(cursor):\n    cursor.execute(LOOSE)\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "clickstream").mkdir()
    (tmp_path / "improvement").mkdir()
    assert dynamic_sql_call_sites() == {("studio/mixed.py", "loose"), ("studio/mixed.py", "peek")}


# --- forgetting a user --------------------------------------------------------------------------

FORGOTTEN = "forget-me-7f3a9c"
KEPT = "keep-me-2b8d41"


def rows_mentioning(text: str) -> dict[str, int]:
    """Every table of the database whose rows mention ``text`` anywhere (any column, as text)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        tables = [name for (name,) in cursor.fetchall()]
        found = {}
        for table in tables:
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT count(*) FROM {quoted} AS t WHERE t::text LIKE %s", [f"%{text}%"])
            count = cursor.fetchone()[0]
            if count:
                found[table] = count
    return found


def test_delete_user_leaves_nothing_about_them_in_any_table(db, settings):
    from improvement import services
    from improvement.models import RunTrigger
    from tests.improvement.support import click, load_catalogue, near, ranking, register, unit

    settings.IMPROVEMENT_SETTLE_SECONDS = 0
    rng = np.random.default_rng(3)
    query = unit(rng)[0]
    load_catalogue({f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(6)})
    order = ranking(query, None)
    for user in (FORGOTTEN, KEPT):
        for _ in range(2):
            click(register(user_id=user, shown=order[:5], query_vector=near(rng, query, 0.1)), order[3])
    services.execute_run(run_id=services.create_run(trigger=RunTrigger.COMMAND).pk)
    register(user_id=FORGOTTEN, shown=order[:5], query_vector=query)  # one still pending
    before = rows_mentioning(FORGOTTEN)
    for table in ("clickstream_session", "improvement_improvementattempt", "studio_personalizedobject"):
        assert before.get(table), (table, before)

    response = client_with("admin").delete(f"/api/v1/users/{FORGOTTEN}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["sessions"] == 3 and body["events"] == 2 and body["improvement_attempts"] == 2
    assert body["personalized_objects"] >= 1
    assert rows_mentioning(FORGOTTEN) == {}
    kept = rows_mentioning(KEPT)
    for table in ("clickstream_session", "improvement_improvementattempt", "studio_personalizedobject"):
        assert kept.get(table), (table, kept)
    with connection.cursor() as cursor:  # shown results and events of the forgotten sessions went too
        cursor.execute(
            "SELECT (SELECT count(*) FROM clickstream_shownresult r WHERE NOT EXISTS "
            "(SELECT 1 FROM clickstream_session s WHERE s.id = r.session_id)), "
            "(SELECT count(*) FROM clickstream_event e WHERE NOT EXISTS "
            "(SELECT 1 FROM clickstream_session s WHERE s.id = e.session_id)), "
            "(SELECT count(*) FROM studio_personalizedpart p WHERE NOT EXISTS "
            "(SELECT 1 FROM studio_personalizedobject o WHERE o.id = p.personalized_id))"
        )
        assert cursor.fetchone() == (0, 0, 0)


def test_delete_user_forgets_a_run_narrowed_to_them(db, settings):
    """The demo's "Improve now" records its user on the run; forgetting the user drops that too."""
    from improvement import services
    from improvement.models import RunTrigger
    from tests.improvement.support import click, load_catalogue, near, ranking, register, unit

    rng = np.random.default_rng(4)
    query = unit(rng)[0]
    load_catalogue({f"o{i}": near(rng, query, 0.05 + 0.02 * i) for i in range(4)})
    order = ranking(query, None)
    click(register(user_id=FORGOTTEN, shown=order[:4], query_vector=query), order[2])
    services.execute_run(run_id=services.create_run(trigger=RunTrigger.API).pk, settle_seconds=0, user_id=FORGOTTEN)

    assert client_with("admin").delete(f"/api/v1/users/{FORGOTTEN}").status_code == 200
    assert rows_mentioning(FORGOTTEN) == {}


# --- admin --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/", "/admin/dashboard/", "/admin/studio/apikey/", "/admin/users/u1/"])
def test_admin_needs_a_staff_login(db, client, django_user_model, path):
    anonymous = client.get(path)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    client.force_login(django_user_model.objects.create_user("plain", password="pw-not-staff-123"))
    assert client.get(path).status_code == 302  # logged in, not staff: back to the login page


def test_admin_writes_need_the_csrf_token(db, django_user_model):
    from django.test import Client

    from clickstream.models import Session
    from tests.improvement.support import register

    session = register(user_id="csrf-user", shown=["a"], query_vector=np.ones(384, dtype=np.float32))
    staff = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-staff-123")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff)
    action = {"action": "mark_irrelevant", "_selected_action": [session.pk]}
    forged = browser.post("/admin/clickstream/session/", action)
    assert forged.status_code == 403
    assert not Session.objects.get(pk=session.pk).is_irrelevant

    page = browser.get("/admin/clickstream/session/")
    token = page.cookies["csrftoken"].value
    done = browser.post("/admin/clickstream/session/", {**action, "csrfmiddlewaretoken": token})
    assert done.status_code == 302
    assert Session.objects.get(pk=session.pk).is_irrelevant


def test_admin_login_sets_no_session_without_the_csrf_token(db, django_user_model):
    from django.test import Client

    django_user_model.objects.create_superuser("boss2", "boss2@example.com", "pw-staff-123")
    browser = Client(enforce_csrf_checks=True)
    response = browser.post("/admin/login/", {"username": "boss2", "password": "pw-staff-123"})
    assert response.status_code == 403
    assert "sessionid" not in response.cookies


# --- deployment settings ------------------------------------------------------------------------


PRODUCTION = {
    "DEBUG": "false",
    "ALLOWED_HOSTS": "studio.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://studio.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "BEHIND_TLS_PROXY": "true",
}


def production_env(**extra: str) -> dict[str, str]:
    """A production-like environment on this session's database and broker."""
    return subprocess_env(**{"SECRET_KEY": secrets.token_urlsafe(64), **PRODUCTION, **extra})


def test_check_deploy_passes_with_no_warning_under_production_settings(db):
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "System check identified no issues" in output, output[-3000:]


def test_check_deploy_flags_the_development_defaults(db):
    """The same check fails on the development defaults: the test above is not vacuous."""
    env = production_env(DEBUG="true")
    del env["SECRET_KEY"]
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "security.W018" in done.stderr + done.stdout  # DEBUG on
    assert "security.W009" in done.stderr + done.stdout  # weak SECRET_KEY


# --- request limits and throttles ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method"), sorted({(p, m) for p, m, _ in PROTECTED if m in ("POST", "PUT", "PATCH", "DELETE")})
)
def test_oversized_bodies_are_refused_with_413_before_reading(db, settings, path, method):
    settings.STUDIO_MAX_BODY_BYTES = 4096
    client = client_with(*API_SCOPES)
    body = b'{"pad": "' + b"x" * 5000 + b'"}'
    response = client.generic(method, concrete(path), body, content_type="application/json")
    assert response.status_code == 413, response.content
    assert response.json()["error"]["code"] == "payload_too_large"


def test_batches_over_their_item_limits_are_refused_naming_the_field(db, settings):
    client = client_with(*API_SCOPES)
    settings.CLICKSTREAM_MAX_EVENTS_PER_REQUEST = 3
    events = [{"session_id": "s", "event_id": str(i), "object_id": "o"} for i in range(4)]
    response = client.post("/api/v1/clickstream/events", {"events": events}, format="json")
    assert response.status_code in (400, 413), response.content
    assert "events" in response.json()["error"]["fields"]


def test_throttles_count_per_key(db, monkeypatch):
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    busy, other = client_with("admin", "search"), client_with("admin")
    for _ in range(3):
        assert busy.get("/api/v1/improvement/runs").status_code == 200
    throttled = busy.get("/api/v1/improvement/runs")
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert throttled.json()["error"]["code"] == "throttled"
    assert other.get("/api/v1/improvement/runs").status_code == 200  # another key is not slowed down
    assert busy.post("/api/v1/search", {}, format="json").status_code == 429  # every endpoint of the key
