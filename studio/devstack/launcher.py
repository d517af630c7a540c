"""``make run``: the whole stack on the embedded defaults.

Starts the embedded PostgreSQL and Redis (unless ``DATABASE_URL`` / ``CELERY_BROKER_URL``
are set), migrates, prints a development API key and admin login, loads the demo
catalogue once, then runs web, Celery worker and Celery beat under ``studio.devstack.supervisor``,
which restarts any of them that dies (with backoff). Ctrl-C stops all of them, then the embedded
servers this launcher started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from studio.devstack import embedded

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, check=True)


def _secret_file(name: str) -> Path:
    path = embedded.data_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# Run in a child process (Django set up on the stack's settings): reuse the stored keys while they
# verify with the scopes asked for, else create and store them; (re)set the admin's password from its
# file; print both keys.
_CREDENTIALS_SCRIPT = (
    "import sys\n"
    "from pathlib import Path\n"
    "import django; django.setup()\n"
    "from django.contrib.auth import get_user_model\n"
    "from studio.core.auth import create_api_key, verify_api_key\n"
    "def key(path, name, scopes):\n"
    "    p = Path(path)\n"
    "    stored = verify_api_key(p.read_text().strip()) if p.exists() else None\n"
    "    if stored is not None and sorted(stored.scopes) == sorted(scopes):\n"
    "        return p.read_text().strip()\n"
    "    _, plain = create_api_key(name=name, scopes=scopes)\n"
    "    p.write_text(plain); p.chmod(0o600)\n"
    "    return plain\n"
    "dev = key(sys.argv[1], 'development', ['ingest', 'sessions:read', 'search', 'catalog', 'admin', 'tokens'])\n"
    "demo = key(sys.argv[2], 'demo page', ['tokens'])\n"
    "User = get_user_model()\n"
    "password = Path(sys.argv[3]).read_text().strip()\n"
    "user, _ = User.objects.get_or_create(username='admin', defaults={'is_staff': True, 'is_superuser': True})\n"
    "user.is_staff = user.is_superuser = True; user.set_password(password); user.save()\n"
    "print(dev); print(demo)\n"
)


def _dev_credentials(env: dict[str, str]) -> tuple[str, str, str]:
    """A development API key, a demo key (``tokens``: it issues the page's user-bound tokens) and an admin password,
    kept under the data dir so that every ``make run`` prints the same ones."""
    password_file = _secret_file("dev-admin-password")
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(12))
        password_file.chmod(0o600)
    key_files = (str(_secret_file("dev-api-key")), str(_secret_file("demo-api-key")))
    out = subprocess.run(
        [sys.executable, "-c", _CREDENTIALS_SCRIPT, *key_files, str(password_file)],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out[-2], out[-1], password_file.read_text().strip()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    """Run the stack until Ctrl-C (or SIGTERM)."""
    signal.signal(signal.SIGTERM, _interrupt)
    env = _environment()
    _start_embedded(env)
    if not env.get("STATIC_ROOT"):
        (ROOT / ".studio" / "static").mkdir(parents=True, exist_ok=True)  # WhiteNoise warns when it is missing
    holder = _hold_embedded_postgres(env)
    supervisor = None
    try:
        _manage("migrate", "--noinput", env=env)
        _manage("load_demo", env=env)
        dev_key, demo_key, password = _dev_credentials(env)
        env["STUDIO_DEMO_API_KEY"] = demo_key
        _print_banner(env.get("STUDIO_BIND", "127.0.0.1:8000"), dev_key, password)
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "studio.devstack.supervisor", str(ROOT / "Procfile")],
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        return supervisor.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(supervisor)
        if holder is not None:
            holder.close()
        embedded.stop_started()
        print("studio stopped.")


def _environment() -> dict[str, str]:
    """This process's environment with the development defaults (demo, interleaving, offline models). DEBUG stays off
    unless asked (``DEBUG=true make run``): the demo page is public, and a debug page would show it the
    source and the settings."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "studio.config.settings")
    env.setdefault("STUDIO_DEMO", "true")
    env.setdefault("STUDIO_INTERLEAVE_FRACTION", "0.5")  # the demo measures itself: half its searches interleaved
    env["HF_HUB_OFFLINE"] = "1"
    # The Procfile's gunicorn and celery live beside this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _hold_embedded_postgres(env: dict[str, str]):
    """A connection held for the stack's whole life, so that a ``manage.py`` command that started the
    embedded servers before ``make run`` sees them in use and leaves them running when it exits."""
    if os.environ.get("DATABASE_URL"):
        return None  # not ours: an external server
    import psycopg

    return psycopg.connect(
        host=embedded.postgres_socket_dir(), user="postgres", dbname="postgres", application_name="studio make run"
    )


def _start_embedded(env: dict[str, str]) -> None:
    """Start the embedded PostgreSQL and Redis where ``env`` names no database or broker, and point it at them."""
    if not env.get("DATABASE_URL"):
        server = embedded.ensure_postgres("studio")
        env["DATABASE_URL"] = embedded.postgres_url(server.socket_dir, "studio")
        print(f"embedded PostgreSQL: {server.pgdata}")
    if not env.get("CELERY_BROKER_URL"):
        redis = embedded.ensure_redis()
        env["CELERY_BROKER_URL"] = redis.url
        env.setdefault("CACHE_URL", redis.cache_url)
        print(f"embedded Redis: {redis.socket_path}")


def _print_banner(bind: str, dev_key: str, password: str) -> None:
    """Where the stack answers, and the development credentials."""
    print("\n" + "=" * 72)
    print(f"studio is starting at http://{bind}/  (demo search page)")
    print(f"  API docs:  http://{bind}/api/v1/docs")
    print(f"  admin:     http://{bind}/admin/  (user admin, password {password})")
    print(f"  API key:   {dev_key}")
    print("  Ctrl-C stops web, worker, beat and the embedded servers.")
    print("=" * 72 + "\n", flush=True)


def _stop(supervisor: subprocess.Popen | None) -> None:
    """Stop the supervisor if it still runs: SIGTERM (it stops its programs within 20 s), SIGKILL after 30 s."""
    if supervisor is None or supervisor.poll() is not None:
        return
    try:
        os.killpg(supervisor.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        supervisor.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(supervisor.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
