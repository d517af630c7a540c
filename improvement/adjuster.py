"""The PyTorch adjuster: moves (user, object) vectors toward the queries whose results were clicked
and away from the shown-but-skipped ones. The only module of studio that imports torch.

INTERFACE (fixed; the implementation is being written):

    params = AdjusterParams(...)
    result = adjust(objects=[ObjectVectors(...)], sessions=[SessionExample(...)], params=params)

``objects`` are the distinct (user, object) pairs of a batch, each with its start vectors (the
user's current copy, else the original) and the original's vectors (for the drift cap);
sessions refer to them by index, so two sessions touching the same (user, object) share one
parameter and add their gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AdjusterParams:
    """Hyper-parameters of one adjustment (defaults come from settings via ``from_settings``)."""

    metric: str = "cosine"  # cosine | dot | euclid
    lr: float = 1e-3
    weight_decay: float = 0.01
    iterations: int = 10
    softmin_temperature: float = 0.05
    position_bias_eta: float = 0.0  # 0 = off; else weight (position + 1) ** eta
    max_drift: float | None = 0.05  # cap on cosine distance from the original; None = off
    renormalize: bool = True  # keep each part's original norm (cosine)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class ObjectVectors:
    """One (user, object) pair: ``start`` and ``original`` are (parts × D) float32 arrays."""

    start: np.ndarray
    original: np.ndarray
    is_average: np.ndarray | None = None  # (parts,) bool; None = all False


@dataclass
class SessionExample:
    """One session: the query and the objects (indices into ``objects``) clicked and pushed away."""

    query: np.ndarray  # (D,)
    clicked: list[int]
    negatives: list[int] = field(default_factory=list)
    clicked_weights: list[float] | None = None  # event weights; None = 1.0 each
    clicked_positions: list[int] | None = None  # 0-based shown positions, for position-bias weights
    negative_positions: list[int] | None = None


@dataclass
class AdjustResult:
    """Adjusted vectors (same order and shapes as ``objects``) and what changed."""

    vectors: list[np.ndarray]
    changed: list[bool]
    metrics: dict  # loss_before, loss_after, clicked_similarity_change, negative_similarity_change, drift_p50/p90/max


def adjust(*, objects: list[ObjectVectors], sessions: list[SessionExample], params: AdjusterParams) -> AdjustResult:
    """Run AdamW for ``params.iterations`` full-batch steps and return the adjusted vectors."""
    raise NotImplementedError
