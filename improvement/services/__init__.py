"""Improvement writes, one module per concern:

- ``runs``: create, queue and execute runs (the loop over batches), close them;
- ``claims``: claim settled sessions under a lease, give them back, reap expired leases and silent workers' claims;
- ``heartbeat``: a running run's sign of life (its worker's identity, the beat thread);
- ``batch``: one claimed batch in stages (load → plan → adjust → decide → write);
- ``metrics``: add a batch's counts and totals to its run;
- ``users``: forget a user everywhere;
- ``guard``: switch learned ranking off when it loses the interleaving experiment.

The names callers use are re-exported here (``from improvement import services``).
"""

from improvement.services.batch import process_claim
from improvement.services.claims import Claim, LeaseLost, claim_batch, reap_expired_leases, release_claim
from improvement.services.guard import enforce_interleaving_guard
from improvement.services.metrics import BatchReport
from improvement.services.runs import (
    TRANSIENT_ERRORS,
    BrokerUnavailable,
    RunScope,
    adjuster_params,
    create_run,
    enqueue_run,
    execute_run,
    finish_run,
    queue_run,
    run_for_beat,
)
from improvement.services.users import forget_user

__all__ = [
    "TRANSIENT_ERRORS",
    "BatchReport",
    "BrokerUnavailable",
    "Claim",
    "LeaseLost",
    "RunScope",
    "adjuster_params",
    "claim_batch",
    "create_run",
    "enforce_interleaving_guard",
    "enqueue_run",
    "execute_run",
    "finish_run",
    "forget_user",
    "process_claim",
    "queue_run",
    "reap_expired_leases",
    "release_claim",
    "run_for_beat",
]
