"""``make run``'s process supervisor: the Procfile's web, worker and beat, each restarted when it dies.

Each program runs in its own process group, its output prefixed with its name. When a program exits
on its own (a crash, ``kill -9``), what is left of its group is stopped (a killed Celery worker's pool
children) and it is started again after a backoff that doubles with each quick failure (1 s … 30 s)
and resets once it has stayed up ``STABLE_SECONDS``; the others keep running. ``stop()`` ends them all:
SIGTERM to every group, SIGKILL to what is left after the grace period.

The claims a killed worker held go back to the queue through its runs' heartbeat
(``improvement.services.heartbeat``), not through anything here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0
STOP_GRACE_SECONDS = 20.0


@dataclass
class Program:
    """One Procfile line and the process running it."""

    name: str
    command: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_failures: int = 0  # consecutive exits within STABLE_SECONDS of a start
    restart_at: float | None = None
    restarts: int = 0


def read_procfile(path: Path) -> list[Program]:
    """The programs of a Procfile (``name: command`` lines; blank lines and comments skipped)."""
    programs = []
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.lstrip().startswith("#"):
            programs.append(Program(name=name.strip(), command=command.strip()))
    return programs


def backoff_seconds(quick_failures: int) -> float:
    """The wait before restarting a program that failed ``quick_failures`` times in a row."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** max(0, quick_failures - 1))


class Supervisor:
    """Starts the programs, restarts the ones that die, stops them all."""

    def __init__(self, programs: list[Program], *, env: dict[str, str], cwd: Path, out: TextIO = sys.stdout):
        self.programs = programs
        self.env = env
        self.cwd = cwd
        self.out = out
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def say(self, name: str, text: str) -> None:
        """One line of output, prefixed with the program's name."""
        with self._lock:
            try:
                self.out.write(f"{name:<7}| {text}\n")
                self.out.flush()
            except ValueError:  # the stream was closed under a program still talking (its last lines)
                pass

    def start(self, program: Program) -> None:
        """Start one program in its own process group, its output forwarded line by line."""
        program.process = subprocess.Popen(
            ["/bin/sh", "-c", program.command],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        program.started_at = time.monotonic()
        program.restart_at = None
        threading.Thread(target=self._forward, args=(program.name, program.process), daemon=True).start()
        self.say("system", f"{program.name} started (pid {program.process.pid})")

    def _forward(self, name: str, process: subprocess.Popen) -> None:
        for raw in process.stdout:
            self.say(name, raw.decode(errors="replace").rstrip())

    def run(self, *, poll_seconds: float = 0.5) -> int:
        """Start every program and keep them running until ``stop()``; returns 0."""
        for program in self.programs:
            self.start(program)
        while not self._stopping.wait(poll_seconds):
            for program in self.programs:
                self._tend(program)
        return 0

    def _tend(self, program: Program) -> None:
        """Notice a program that died and schedule its restart; restart it when its backoff is over."""
        now = time.monotonic()
        if program.restart_at is not None:
            if now >= program.restart_at and not self._stopping.is_set():
                program.restarts += 1
                self.start(program)
            return
        code = program.process.poll() if program.process else None
        if code is None:
            return
        _stop_group(program.process.pid, grace=5.0)  # what is left of it (a killed worker's pool children)
        quick = now - program.started_at < STABLE_SECONDS
        program.quick_failures = program.quick_failures + 1 if quick else 1
        wait = backoff_seconds(program.quick_failures)
        program.restart_at = now + wait
        self.say("system", f"{program.name} exited with {code}; restarting in {wait:.0f} s")

    def stop(self) -> None:
        """Stop every program: SIGTERM to each group, SIGKILL to whatever is left after the grace period."""
        self._stopping.set()
        running = [p.process for p in self.programs if p.process is not None]
        for process in running:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stop_group(pgid: int, *, grace: float) -> None:
    """SIGTERM a process group, SIGKILL it if anything is left after ``grace`` seconds."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)


def main() -> int:
    """``python -m studio.devstack.supervisor PROCFILE``: supervise its programs until SIGTERM or Ctrl-C."""
    supervisor = Supervisor(read_procfile(Path(sys.argv[1])), env=dict(os.environ), cwd=Path.cwd())
    signal.signal(signal.SIGTERM, lambda signum, frame: supervisor.stop())
    try:
        return supervisor.run()
    except KeyboardInterrupt:
        return 0
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
