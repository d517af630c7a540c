"""The architecture, checked: imports run one way between the rooms, torch and the embedder load
only where they run, and functions stay short (docs/architecture.md)."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys

from tests.support import ROOT, subprocess_env

# Lowest first: a room may import the rooms before it, never one after it.
LAYERS = ("studio.core", "clickstream", "studio.catalogue", "improvement", "studio.console")
HEAVY = ("torch", "sentence_transformers", "matplotlib")


# The app's entry points and shims, standing for the room they gather from.
ALIASES = {"studio.models": "studio.catalogue", "studio.services": "studio.catalogue"}
# The project around the rooms: only the console (the top room) may reach into its config (Celery, heartbeat).
PROJECT = ("studio.config", "studio.devstack", "studio.admin", "studio.apps", "studio.management")
ANYWHERE = {"studio", "studio.celery_app"}  # the project's Celery app, as every Django app uses it


def _room(module: str) -> str | None:
    aliased = (room for alias, room in ALIASES.items() if module == alias or module.startswith(alias + "."))
    module = next(aliased, module)
    for layer in sorted(LAYERS, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def _problem(module: str, rank: int) -> str | None:
    """Why a module of room ``LAYERS[rank]`` may not import ``module``, or None."""
    if module in ANYWHERE:
        return None
    if module.startswith(PROJECT):
        return None if LAYERS[rank] == "studio.console" and module.startswith("studio.config") else "the project"
    target = _room(module)
    if target is None:
        return "an unknown part of studio" if module.startswith("studio.") else None
    return "a room above it" if LAYERS.index(target) > rank else None


def _imported_modules(tree: ast.AST):
    for node in ast.walk(tree):  # function-level (lazy) imports count too
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: this project spells every import in full
                yield f"<relative import of {node.module or '.'}>"
            elif node.module:
                yield from ([f"studio.{a.name}" for a in node.names] if node.module == "studio" else [node.module])
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _sources(layer: str):
    for path in (ROOT / layer.replace(".", "/")).rglob("*.py"):
        if "migrations" not in path.parts:
            yield path


def test_imports_run_one_way_between_the_rooms():
    upward = []
    for rank, layer in enumerate(LAYERS):
        for path in _sources(layer):
            for module in _imported_modules(ast.parse(path.read_text())):
                problem = "a relative import" if module.startswith("<") else _problem(module, rank)
                if problem:
                    upward.append(f"{path.relative_to(ROOT)} imports {module} ({problem})")
    assert upward == []


def test_the_room_check_catches_what_it_is_for():
    clickstream, catalogue = LAYERS.index("clickstream"), LAYERS.index("studio.catalogue")
    assert _problem("studio.models", clickstream) == "a room above it"  # the catalogue's models, via the shim
    assert _problem("improvement.selectors", catalogue) == "a room above it"
    assert _problem("studio.devstack.embedded", catalogue) == "the project"
    assert _problem("studio.nowhere", catalogue) == "an unknown part of studio"
    assert _problem("studio.core.errors", clickstream) is None
    assert _problem("clickstream.services", catalogue) is None


def test_the_core_knows_no_app_models():
    apps = ("clickstream", "improvement", "studio.catalogue", "studio.models")
    found = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in _sources("studio.core")
        for module in _imported_modules(ast.parse(path.read_text()))
        if module.startswith(apps)
    ]
    assert found == []


def test_functions_are_short():
    lengths = []
    for root in ("studio", "clickstream", "improvement"):
        for path in (ROOT / root).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lengths.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.name}"))
    lengths.sort()
    p90 = lengths[math.ceil(0.9 * len(lengths)) - 1][0]
    assert p90 <= 30, f"p90 function length {p90} lines"
    assert [name for length, name in lengths if length > 80] == []


# Runs in a fresh interpreter: this test process has torch loaded by other tests.
LOAD_THE_WEB_APP = """
import json, sys
from studio.config.wsgi import application
from django.contrib import admin
from django.test import Client
from django.urls import get_resolver

def views(patterns):
    for pattern in patterns:
        if hasattr(pattern, "url_patterns"):
            yield from views(pattern.url_patterns)
        else:
            yield pattern.callback

callbacks = list(views(get_resolver().url_patterns))
for model_admin in admin.site._registry.values():
    model_admin.get_urls()
client = Client()
statuses = [client.get(path).status_code for path in ("/api/v1/health", "/api/v1/schema", "/admin/login/", "/")]
print(json.dumps({"views": len(callbacks), "statuses": statuses, "loaded": [m for m in %r if m in sys.modules]}))
"""


def test_the_web_app_never_imports_torch_or_the_embedder(transactional_db):
    done = subprocess.run(
        [sys.executable, "-c", LOAD_THE_WEB_APP % (HEAVY,)],
        cwd=ROOT,
        env=subprocess_env(STUDIO_DEMO="true"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["views"] > 10  # the walk reached the routes (a broken walk would prove nothing)
    assert report["statuses"][1] == 200 and report["statuses"][2] == 200
    assert report["loaded"] == []


def test_the_worker_imports_the_adjuster_only_to_adjust():
    code = "import sys, improvement.tasks, improvement.services; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
