"""studio.devstack.supervisor: `make run`'s programs, each restarted with backoff when it dies, stopped together."""

from __future__ import annotations

import io
import os
import signal
import threading

from studio.devstack.supervisor import Program, Supervisor, backoff_seconds, read_procfile
from tests.support import ROOT, wait_for


def test_the_procfile_names_web_worker_and_beat():
    programs = {program.name: program.command for program in read_procfile(ROOT / "Procfile")}
    assert set(programs) == {"web", "worker", "beat"}
    assert "celery -A studio worker" in programs["worker"] and "gunicorn" in programs["web"]


def test_backoff_doubles_from_one_second_up_to_thirty():
    assert [backoff_seconds(n) for n in (1, 2, 3, 4, 5, 6, 9)] == [1, 2, 4, 8, 16, 30, 30]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_program_is_restarted_alone_and_stop_leaves_nothing_running():
    out = io.StringIO()
    crashing, steady = Program("crashing", "echo up; exec sleep 300"), Program("steady", "exec sleep 300")
    supervisor = Supervisor([crashing, steady], env=dict(os.environ), cwd=ROOT, out=out)
    threading.Thread(target=supervisor.run, kwargs={"poll_seconds": 0.05}, daemon=True).start()
    try:
        wait_for(lambda: crashing.process is not None and steady.process is not None, timeout=10, what="start")
        first, steady_pid = crashing.process.pid, steady.process.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: crashing.restarts == 1 and crashing.process.pid != first, timeout=10, what="restart")
        assert steady.process.pid == steady_pid and steady.process.poll() is None  # the others keep running
        assert "crashing exited with -9; restarting in 1 s" in out.getvalue()
        assert out.getvalue().count("crashing| up") == 2  # its output, prefixed, from both lives
    finally:
        supervisor.stop()
    assert not _alive(crashing.process.pid) and not _alive(steady_pid)
