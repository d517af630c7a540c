"""Claiming and reading a run's batches, one batch ahead (docs/architecture.md, "An improvement run").

While the current batch adjusts and writes in the run's thread, the next one is claimed and read in a
second thread with its own database connection (``IMPROVEMENT_READ_AHEAD``). That is safe because reading
writes nothing but the claim, and a claim takes whole users that no batch in flight holds (``claims``):
the batch read ahead never reads a copy that the batch being written is about to change. A claim made
while the previous batch held its users may come back empty although those users have more ready
sessions, so an empty read-ahead is tried once more after the write before the run ends.

Sessions given back after a crash are never read ahead, nor beside: a poison session that kills the
process must cost only its own batch an attempt, or it would take innocent sessions with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connection

from improvement.learning.params import AdjusterParams
from improvement.services.batch import LoadedBatch, load_claim
from improvement.services.claims import Claim, release_claim
from improvement.services.metrics import count_on_run

logger = logging.getLogger(__name__)

# (batch size, fresh_only) → a claim, or None when no session is ready (``claims.claim_batch``)
ClaimFn = Callable[[int, bool], Claim | None]


class BatchReader:
    """Claims and loads a run's batches, at most ``session_limit`` sessions in all (None: no limit); with
    ``read_ahead``, the next batch is read in a second thread while the caller processes the current one."""

    def __init__(
        self, *, claim: ClaimFn, params: AdjusterParams, batch_size: int, session_limit: int | None, read_ahead: bool
    ):
        self._claim, self._params, self._batch_size, self._left = claim, params, batch_size, session_limit
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="improvement-read") if read_ahead else None
        self._ahead: Future | None = None

    @property
    def limit_reached(self) -> bool:
        """Whether the run has claimed as many sessions as its limit allows."""
        return self._left is not None and self._left <= 0

    def next_batch(self) -> LoadedBatch | None:
        """The next loaded batch (the one read ahead, if any); None when no session is ready or at the limit."""
        if self._ahead is None:
            return self._read()
        ahead, self._ahead = self._ahead, None
        loaded = ahead.result()
        return self._read() if loaded is None else loaded  # the previous batch may have held the users left

    def read_ahead(self, *, current: LoadedBatch) -> None:
        """Start claiming and reading the batch after ``current`` (no-op without read-ahead). Not beside a
        batch holding sessions given back after a crash: if one of them crashes the process again, only its
        own batch may pay an attempt for it (``claims._claim_rows``)."""
        if self._pool is not None and not current.claim.retried:
            self._ahead = self._pool.submit(self._read, fresh_only=True)

    def close(self) -> None:
        """Wait for a read in flight and give back what it claimed; close the second thread's connection.
        Never raises: it runs on the way out of a run that may be failing for its own reason."""
        if self._ahead is not None:
            try:
                loaded = self._ahead.result()
            except Exception:  # noqa: BLE001  the read gave its claim back itself; the run's own error is raised
                loaded = None
            self._ahead = None
            if loaded is not None:
                release_quietly(loaded.claim, reason="its run stopped before processing it; back in the queue")
        if self._pool is not None:
            try:
                self._pool.submit(_close_connection).result()  # run in the worker thread: its own connection
            except Exception:  # noqa: BLE001  a connection that is already gone needs no closing
                logger.debug("could not close the read-ahead thread's connection", exc_info=True)
            self._pool.shutdown()

    def _read(self, *, fresh_only: bool = False) -> LoadedBatch | None:
        """Claim a batch and load it; a claim whose load fails is given back before the error propagates."""
        if self.limit_reached:
            return None
        started = time.perf_counter()
        size = self._batch_size if self._left is None else min(self._left, self._batch_size)
        claim = self._claim(size, fresh_only)
        if claim is None:
            return None
        if self._left is not None:
            self._left -= len(claim.session_pks)
        try:
            return load_claim(claim=claim, params=self._params, claim_seconds=time.perf_counter() - started)
        except BaseException as exc:
            release_quietly(claim, reason=stopped_by(exc))
            raise


def _close_connection() -> None:
    """Close the calling thread's database connection (``connection`` is per thread)."""
    connection.close()


def stopped_by(exc: BaseException) -> str:
    """Why a batch went back: the error that stopped its run."""
    return f"its run stopped: {type(exc).__name__}: {exc}"


def release_quietly(claim: Claim, *, reason: str) -> None:
    """Give a batch back after an error; if the database is gone too, its lease expires instead."""
    try:
        release_claim(claim=claim, reason=reason[:1000])
        count_on_run(run_id=claim.run_id, name="released_batches")
    except Exception:  # noqa: BLE001  the reaper returns the batch when its lease runs out
        logger.warning("run %s: could not give back a batch; its lease will expire", claim.run_id, exc_info=True)
