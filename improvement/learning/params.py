"""What the adjuster takes and returns, and its hyper-parameters: plain data, no torch.

Kept apart from ``improvement.learning.adjuster`` (the torch engine) so that run bookkeeping, the
admin and the web process can build parameters and inputs without importing torch; the engine is
imported only when a batch is adjusted (docs/architecture.md, "Where torch runs").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

METRICS = ("cosine", "dot", "euclid")
RULES = ("pairwise", "seed")


@dataclass(frozen=True)
class AdjusterParams:
    """Hyper-parameters of one adjustment (defaults come from settings via ``from_settings``)."""

    metric: str = "cosine"  # cosine | dot | euclid
    rule: str = "seed"  # pairwise (v2) | seed (AdamW on the cubic loss)
    lr: float = 1e-3
    weight_decay: float = 0.01
    iterations: int = 10
    softmin_temperature: float = 0.05
    position_bias_eta: float = 0.0  # 0 = off; else weight (position + 1) ** eta
    max_drift: float | None = 0.05  # cap on cosine distance from the original; None = off
    renormalize: bool = True  # keep each part's original norm (cosine)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int | None = None  # torch CPU threads during the call; None = leave torch's setting
    changed_epsilon: float = 1e-6  # an object counts as changed when one of its parts moved (L2) more than this
    pair_temperature: float = 0.02  # pairwise: temperature of the logistic preference loss
    pair_margin: float = 0.0  # pairwise: the preference holds once S(c) - S(n) exceeds this
    pair_next_weight: float = 0.0  # pairwise: weight of "clicked over the unclicked result right below it"; 0 = off
    pair_push_depth: int | None = None  # pairwise: push down only the skipped results this close above a click
    max_norm_ratio: float | None = None  # pairwise under dot/euclid: norm within [1/r, r] × the original's

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, not {self.rule!r}")
        if not self.pair_temperature > 0:
            raise ValueError("pair_temperature must be > 0")
        if self.pair_next_weight < 0:
            raise ValueError("pair_next_weight must be >= 0")
        if self.pair_push_depth is not None and self.pair_push_depth < 0:
            raise ValueError("pair_push_depth must be >= 0 or None")
        if self.max_norm_ratio is not None and not self.max_norm_ratio >= 1:
            raise ValueError("max_norm_ratio must be >= 1 or None")
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")
        if not self.lr > 0:
            raise ValueError("lr must be > 0")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")
        if not self.softmin_temperature > 0:
            raise ValueError("softmin_temperature must be > 0")
        if self.position_bias_eta < 0:
            raise ValueError("position_bias_eta must be >= 0")
        if self.max_drift is not None and not 0 < self.max_drift <= 2:
            raise ValueError("max_drift must be in (0, 2] or None")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError("device must be auto, cpu or cuda")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1 or None")

    @classmethod
    def from_settings(cls, **overrides) -> AdjusterParams:
        """Parameters from the ``IMPROVEMENT_*`` settings (and ``STUDIO_METRIC``), with ``overrides`` on top."""
        from django.conf import settings

        values = {
            "metric": settings.STUDIO_METRIC,
            "rule": settings.IMPROVEMENT_RULE,
            "lr": settings.IMPROVEMENT_LR,
            "pair_temperature": settings.IMPROVEMENT_PAIR_TEMPERATURE,
            "pair_margin": settings.IMPROVEMENT_PAIR_MARGIN,
            "pair_next_weight": settings.IMPROVEMENT_PAIR_NEXT_WEIGHT,
            "pair_push_depth": settings.IMPROVEMENT_PAIR_PUSH_DEPTH,
            "max_norm_ratio": settings.IMPROVEMENT_MAX_NORM_RATIO if settings.IMPROVEMENT_RULE == "pairwise" else None,
            "weight_decay": settings.IMPROVEMENT_WEIGHT_DECAY,
            "iterations": settings.IMPROVEMENT_ITERATIONS,
            "softmin_temperature": settings.IMPROVEMENT_SOFTMIN_TEMPERATURE,
            "position_bias_eta": settings.IMPROVEMENT_POSITION_BIAS_ETA,
            "max_drift": settings.IMPROVEMENT_MAX_DRIFT,
            "renormalize": settings.IMPROVEMENT_RENORMALIZE,
            "seed": settings.IMPROVEMENT_SEED,
            "device": settings.IMPROVEMENT_DEVICE,
            # Optional (None = torch's default). On a shared 2-core box 1 avoids OpenMP threads
            # spinning against the web server and PostgreSQL; see the README's adjuster notes.
            "num_threads": getattr(settings, "IMPROVEMENT_TORCH_THREADS", None),
        }
        if values["max_drift"] is not None and values["max_drift"] <= 0:
            values["max_drift"] = None  # IMPROVEMENT_MAX_DRIFT=0 switches the cap off
        values.update(overrides)
        return cls(**values)

    @classmethod
    def embedding_studio(cls, **overrides) -> AdjusterParams:
        """Embedding Studio's shipped rule: lr 0.1, 10 iterations, AdamW's default decay, no rails.

        (Its "all shown-unclicked objects are negatives" is the caller's choice of ``negatives``.)
        """
        values = {
            "rule": "seed",
            "lr": 0.1,
            "iterations": 10,
            "weight_decay": 0.01,
            "softmin_temperature": 1.0,
            "position_bias_eta": 0.0,
            "max_drift": None,
            "renormalize": False,
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def studio_v1(cls, **overrides) -> AdjusterParams:
        """The first version's defaults: the seed rule (AdamW, cubic loss) with lr 1e-3, 10 iterations, the
        cosine rails (renormalize, drift cap 0.05), softmin T 0.05, η 0."""
        values = {
            "rule": "seed",
            "lr": 1e-3,
            "iterations": 10,
            "weight_decay": 0.01,
            "softmin_temperature": 0.05,
            "position_bias_eta": 0.0,
            "max_drift": 0.05,
            "renormalize": True,
            "max_norm_ratio": None,
        }
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes) -> AdjusterParams:
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass
class ObjectVectors:
    """One (user, object) pair: ``start`` and ``original`` are (parts × D) float32 arrays."""

    start: np.ndarray
    original: np.ndarray
    is_average: np.ndarray | None = None  # (parts,) bool; None = all False. Average parts are ranked like any part.


@dataclass
class SessionExample:
    """One session: the query and the objects (indices into ``objects``) clicked and pushed away."""

    query: np.ndarray  # (D,)
    clicked: list[int]
    negatives: list[int] = field(default_factory=list)
    clicked_weights: list[float] | None = None  # event weights; None = 1.0 each
    clicked_positions: list[int] | None = None  # 0-based shown positions, for position-bias weights
    negative_positions: list[int] | None = None  # None = negatives are not position-weighted
    user: str | None = None  # whose session: the pairwise rule normalizes each user's loss by their own sessions
    # Per clicked object, the object shown right below it when that one was not clicked (else None); the
    # pairwise rule's weak "skip next" evidence (``pair_next_weight``). None = not given.
    next_skipped: list[int | None] | None = None

    def referenced_objects(self) -> list[int]:
        """Every object the session refers to: clicked, negatives, and skipped right below a click."""
        below = [o for o in self.next_skipped or () if o is not None]
        return [*self.clicked, *self.negatives, *below]


@dataclass
class AdjustResult:
    """Adjusted vectors (same order and shapes as ``objects``) and what changed.

    ``failed_sessions`` maps the index of a session that could not be used (its query or one of its
    objects is not finite, or training on it produced non-finite vectors) to the reason; the
    returned vectors are the result of training on the other sessions only.
    """

    vectors: list[np.ndarray]
    changed: list[bool]
    metrics: dict  # loss_before, loss_after, clicked_similarity_change, negative_similarity_change, drift_p50/p90/max
    failed_sessions: dict[int, str] = field(default_factory=dict)
