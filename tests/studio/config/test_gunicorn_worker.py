"""studio.config.gunicorn_worker: gunicorn's own protocol errors (before Django) answer in the JSON error shape."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.support import ROOT, free_port, subprocess_env, wait_for

WORKER = "studio.config.gunicorn_worker.JsonErrorThreadWorker"
BIG_HEADER = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"


def _raw(port: int, request: bytes) -> tuple[int, str, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), json.loads(body)


@pytest.fixture
def gunicorn(transactional_db, tmp_path):
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("ab")
    command = [sys.executable, "-m", "gunicorn", "studio.config.wsgi", "--worker-class", WORKER, "--threads", "2"]
    proc = subprocess.Popen(
        [*command, "--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: _answers(port), timeout=60, what="gunicorn")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (BIG_HEADER, 431, "header_fields_too_large"),
        (b"GET /api/v1/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"POST /api/v1/objects HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", 400, "bad_request"),
    ],
    ids=["header-too-large", "uri-too-long", "malformed-content-length"],
)
def test_gunicorn_protocol_errors_are_json(gunicorn, request_bytes, status, code):
    got_status, content_type, body = _raw(gunicorn, request_bytes)
    assert (got_status, content_type) == (status, "application/json")
    assert body["error"]["code"] == code and body["error"]["message"] and body["error"]["fields"] == {}
