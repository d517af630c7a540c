"""studio.devstack.launcher: the environment ``make run`` gives web, worker and beat."""

from __future__ import annotations

from studio.devstack import launcher


def test_make_run_keeps_debug_off_unless_asked(monkeypatch):
    monkeypatch.delenv("DEBUG", raising=False)
    env = launcher._environment()
    assert env.get("DEBUG", "false") == "false"  # a 500 on the public demo page shows no debug page
    assert env["STUDIO_DEMO"] == "true" and env["HF_HUB_OFFLINE"] == "1"
    assert env["STUDIO_INTERLEAVE_FRACTION"] == "0.5"  # the demo's experiment is on (production default: off)
    monkeypatch.setenv("DEBUG", "true")
    assert launcher._environment()["DEBUG"] == "true"
