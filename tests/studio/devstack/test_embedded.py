"""Settings start nothing; ``manage.py`` starts the embedded servers a command needs and stops,
when it exits, the ones it started — nothing is left running after ``check`` or ``shell``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")}
    return {**env, "STUDIO_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "studio.config.settings"}


def _processes_using(data_dir: Path) -> list[str]:
    """Command lines of live processes that name the data dir (postgres -D …, redis-server its config)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if str(data_dir) in cmdline and state != "Z":
            found.append(cmdline)
    return found


def _manage(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=_embedded_env(data_dir),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_importing_settings_starts_nothing_and_creates_no_folder(tmp_path):
    data_dir = tmp_path / "data"
    code = (
        "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default']['HOST'])"
    )
    static_root = tmp_path / "static"  # settings used to create it on import
    env = {**_embedded_env(data_dir), "STATIC_ROOT": str(static_root)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(str(data_dir / "pg"))  # where the server will listen
    assert not data_dir.exists()
    assert not static_root.exists()
    assert _processes_using(data_dir) == []


@pytest.mark.slow
def test_manage_py_stops_the_servers_it_started(tmp_path):
    data_dir = tmp_path / "data"
    check = _manage("check", data_dir=data_dir)
    assert check.returncode == 0, check.stderr[-2000:]
    shell = _manage(
        "shell",
        "-c",
        "from django.db import connection; connection.ensure_connection(); "
        "from django.core.cache import cache; cache.set('k', 1); print('reached', cache.get('k'))",
        data_dir=data_dir,
    )
    assert shell.returncode == 0, shell.stderr[-2000:]
    assert "reached 1" in shell.stdout  # both servers were up for the command
    assert (data_dir / "pg" / "PG_VERSION").exists()
    assert not (data_dir / "pg" / "postmaster.pid").exists()
    assert not (data_dir / "redis" / "redis.pid").exists()
    assert _processes_using(data_dir) == []


def test_data_of_the_previous_embedded_server_is_refused_with_how_to_move_it(tmp_path):
    """A PostgreSQL 16 cluster from pgserver is never started over nor deleted: the command stops and says how to
    move it (``make move-data``) or start afresh (``make clean-data``)."""
    pgdata = tmp_path / "data" / "pg"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")
    (pgdata / "base").mkdir()  # stands for the cluster's files, which must survive
    check = _manage("check", data_dir=tmp_path / "data")
    assert check.returncode == 1
    assert "PostgreSQL 16" in check.stderr and "make move-data" in check.stderr and "make clean-data" in check.stderr
    assert "Traceback" not in check.stderr
    assert (pgdata / "PG_VERSION").read_text() == "16\n" and (pgdata / "base").is_dir()
    assert _processes_using(tmp_path / "data") == []
