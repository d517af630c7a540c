"""studio.config.settings: every environment variable studio reads (the settings, the embedded servers, the
Procfile) is listed in .env.example and in the README settings table."""

import re

from tests.support import ROOT


def _variables_read() -> set[str]:
    names = set(re.findall(r'env\.\w+\("([A-Z_]+)"', (ROOT / "studio" / "config" / "settings.py").read_text()))
    embedded = (ROOT / "studio" / "devstack" / "embedded.py").read_text()
    names |= set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', embedded))
    names |= set(re.findall(r"\$\{([A-Z_]+):-", (ROOT / "Procfile").read_text()))
    return names


def test_every_setting_is_in_env_example():
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert _variables_read() - example == set()


def test_every_setting_is_in_readme():
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in _variables_read() if f"`{name}`" not in readme)
    assert missing == []


def _import_settings(**env: str):
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "studio.config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_external_database_without_secret_key_refuses_to_start_unless_debug():
    external = {"DATABASE_URL": "postgres://studio@db.example.invalid/studio", "DEBUG": "false"}
    refused = _import_settings(**external)
    assert refused.returncode != 0
    assert "SECRET_KEY is not set" in refused.stderr
    assert _import_settings(**external, SECRET_KEY="a-real-secret-" * 4).returncode == 0
    assert _import_settings(**{**external, "DEBUG": "true"}).returncode == 0  # development on a remote database
    assert _import_settings(DEBUG="false").returncode == 0  # the embedded servers: the development key is fine


def test_a_borrow_similarity_outside_0_to_1_refuses_to_start():
    """Above 1 even a query's own offsets would stop applying; empty switches borrowing off."""
    refused = _import_settings(IMPROVEMENT_SHARED_BORROW_SIMILARITY="1.5")
    assert refused.returncode != 0 and "IMPROVEMENT_SHARED_BORROW_SIMILARITY must be in (0, 1]" in refused.stderr
    assert _import_settings(IMPROVEMENT_SHARED_BORROW_SIMILARITY="").returncode == 0
    assert _import_settings(IMPROVEMENT_SHARED_BORROW_SIMILARITY="0.9").returncode == 0


def test_a_query_shift_outside_0_to_1_refuses_to_start():
    refused = _import_settings(IMPROVEMENT_SHARED_QUERY_SHIFT="1.5")
    assert refused.returncode != 0 and "IMPROVEMENT_SHARED_QUERY_SHIFT must be in [0, 1]" in refused.stderr
    assert _import_settings(IMPROVEMENT_SHARED_QUERY_SHIFT="0").returncode == 0
