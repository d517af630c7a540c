"""The PyTorch adjuster: moves (user, object) vectors toward the queries whose results were clicked
and away from the shown-but-skipped ones. The only module of studio that imports torch.

Usage::

    params = AdjusterParams.from_settings()
    result = adjust(objects=[ObjectVectors(...)], sessions=[SessionExample(...)], params=params)

``objects`` are the distinct (user, object) pairs of a batch, each with its start vectors (the
user's current copy, else the original) and the original's vectors (for the drift cap);
sessions refer to them by index, so two sessions touching the same (user, object) share one
parameter and add their gradients.

The rule (DESIGN §5), per session with query ``q``, clicked set ``C`` and negatives ``N``::

    s(q, p)   = cosine(q, p) | q·p | -‖q - p‖               for each part p of object o
    S(q, o)   = Σ_p softmax(s(q, ·) / T)_p · s(q, p)        (a soft "best part")
    loss      = -mean_{o∈C} w_o·S(q, o)³ + mean_{o∈N} w_o·S(q, o)³   (second term only when N ≠ ∅)
    w_o       = event weight · (position + 1)^η            (η = 0: position ignored)

and the batch loss is the mean over sessions, minimised by full-batch AdamW. Internally every
(session, object) pair becomes one row with a fixed coefficient ``±w_o / (|C or N| · sessions)``,
so the loss is a single weighted sum over pairs: no padding over sessions, no Python loop inside
the iteration loop. Objects with fewer parts than the widest one are padded and masked: padded
parts get exactly zero gradient and are never returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

METRICS = ("cosine", "dot", "euclid")
_NORM_EPS = 1e-12  # below this a vector counts as zero (no direction)


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
    num_threads: int | None = None  # torch CPU threads during the call; None = leave torch's setting
    changed_epsilon: float = 1e-6  # an object counts as changed when some coordinate moved more than this

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
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
            "lr": settings.IMPROVEMENT_LR,
            "weight_decay": settings.IMPROVEMENT_WEIGHT_DECAY,
            "iterations": settings.IMPROVEMENT_ITERATIONS,
            "softmin_temperature": settings.IMPROVEMENT_SOFTMIN_TEMPERATURE,
            "position_bias_eta": settings.IMPROVEMENT_POSITION_BIAS_ETA,
            "max_drift": settings.IMPROVEMENT_MAX_DRIFT,
            "renormalize": settings.IMPROVEMENT_RENORMALIZE,
            "seed": settings.IMPROVEMENT_SEED,
            "device": settings.IMPROVEMENT_DEVICE,
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


def adjust(
    *,
    objects: list[ObjectVectors],
    sessions: list[SessionExample],
    params: AdjusterParams,
    dim: int | None = None,
) -> AdjustResult:
    """Run AdamW for ``params.iterations`` full-batch steps and return the adjusted vectors.

    ``dim`` (optional) is the expected vector dimension; every vector is checked against it.
    Raises ``ValueError`` on structurally bad input (wrong shapes, indices out of range);
    non-finite numbers fail only the sessions concerned (see ``AdjustResult.failed_sessions``).
    """
    started = time.perf_counter()
    starts, originals = _validate_objects(objects, dim=dim)
    dim = dim if dim is not None else (starts[0].shape[1] if starts else None)
    queries = _validate_sessions(sessions, n_objects=len(objects), dim=dim)

    failed: dict[int, str] = {}
    bad_objects = {i for i, (s, o) in enumerate(zip(starts, originals, strict=True)) if not _finite(s, o)}
    for si, session in enumerate(sessions):
        if not np.isfinite(queries[si]).all():
            failed[si] = "query vector is not finite"
        elif any(o in bad_objects for o in (*session.clicked, *session.negatives)):
            failed[si] = "an object's stored vector is not finite"

    device = _pick_device(params.device)
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if params.num_threads is not None:
            torch.set_num_threads(params.num_threads)
        if device.type == "cuda":
            # CUDA's scatter-add (the backward of the gather) is non-deterministic unless asked.
            torch.use_deterministic_algorithms(True, warn_only=True)
        # A NaN/inf stays inside the objects whose sessions produced it (each object is its own
        # parameter and AdamW is element-wise), so failing those sessions and retraining is enough.
        for _attempt in range(3):
            outcome = _train(starts, originals, queries, sessions, failed, params, device)
            if not outcome.non_finite_sessions:
                break
            for si in outcome.non_finite_sessions:
                failed[si] = "adjustment produced non-finite vectors (learning rate too high?)"
        else:
            raise RuntimeError("adjustment kept producing non-finite vectors")
    finally:
        if params.num_threads is not None:
            torch.set_num_threads(previous_threads)
        if device.type == "cuda":
            torch.use_deterministic_algorithms(previous_deterministic)

    vectors = [s.copy() for s in starts]
    changed = [False] * len(objects)
    drifts = []
    for local, global_index in enumerate(outcome.touched):
        parts = starts[global_index].shape[0]
        new = outcome.vectors[local, :parts]
        if np.abs(new - starts[global_index]).max(initial=0.0) > params.changed_epsilon:
            vectors[global_index] = np.ascontiguousarray(new, dtype=np.float32)
            changed[global_index] = True
            drifts.append(float(outcome.drift[local]))

    metrics = dict(outcome.metrics)
    metrics.update(
        sessions=len(sessions),
        sessions_used=len(sessions) - len(failed),
        sessions_failed=len(failed),
        objects=len(objects),
        objects_touched=len(outcome.touched),
        objects_changed=int(sum(changed)),
        drift_p50=float(np.percentile(drifts, 50)) if drifts else 0.0,
        drift_p90=float(np.percentile(drifts, 90)) if drifts else 0.0,
        drift_max=float(max(drifts)) if drifts else 0.0,
        iterations=params.iterations,
        device=str(device),
        seconds=time.perf_counter() - started,
    )
    return AdjustResult(vectors=vectors, changed=changed, metrics=metrics, failed_sessions=failed)


# --- input checks -------------------------------------------------------------------------------


def _finite(*arrays: np.ndarray) -> bool:
    return all(np.isfinite(a).all() for a in arrays)


def _validate_objects(objects: list[ObjectVectors], *, dim: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    starts, originals = [], []
    for i, obj in enumerate(objects):
        start = np.asarray(obj.start, dtype=np.float32)
        original = np.asarray(obj.original, dtype=np.float32)
        if start.ndim == 1:
            start = start[None, :]
        if original.ndim == 1:
            original = original[None, :]
        if start.ndim != 2 or start.shape[0] < 1:
            raise ValueError(f"objects[{i}].start must be a (parts × D) array with at least one part")
        if original.shape != start.shape:
            raise ValueError(f"objects[{i}]: original {original.shape} and start {start.shape} differ in shape")
        expected = dim if dim is not None else (starts[0].shape[1] if starts else start.shape[1])
        if start.shape[1] != expected:
            raise ValueError(f"objects[{i}] has dimension {start.shape[1]}, expected {expected}")
        starts.append(start)
        originals.append(original)
    return starts, originals


def _validate_sessions(sessions: list[SessionExample], *, n_objects: int, dim: int | None) -> list[np.ndarray]:
    queries = []
    for si, session in enumerate(sessions):
        query = np.asarray(session.query, dtype=np.float32).reshape(-1)
        if dim is not None and query.shape[0] != dim:
            raise ValueError(f"sessions[{si}].query has dimension {query.shape[0]}, expected {dim}")
        for name in ("clicked", "negatives"):
            for o in getattr(session, name):
                if not 0 <= int(o) < n_objects:
                    raise ValueError(f"sessions[{si}].{name} refers to object {o}, outside 0..{n_objects - 1}")
        for name, ref in (
            ("clicked_weights", session.clicked),
            ("clicked_positions", session.clicked),
            ("negative_positions", session.negatives),
        ):
            values = getattr(session, name)
            if values is not None and len(values) != len(ref):
                raise ValueError(f"sessions[{si}].{name} has {len(values)} entries for {len(ref)} objects")
        queries.append(query)
    return queries


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --- training -----------------------------------------------------------------------------------


@dataclass
class _Outcome:
    touched: list[int]  # global object indices, in local order
    vectors: np.ndarray  # (touched × P × D) final vectors (padded parts zero)
    drift: np.ndarray  # (touched,) max cosine distance of a part to its original part
    metrics: dict
    non_finite_sessions: set[int]


@dataclass
class _Bucket:
    """Sessions with the same number of (padded) slots, laid out as (sessions × slots).

    Every slot is one term of the loss, ``coefficient · S(q, o)³`` with ``coefficient`` =
    ∓ weight / (|C| or |N|) / sessions; padding slots point at object 0 with coefficient 0.
    The query is stored once per session, not once per slot (that is what makes it fast).
    """

    object_index: torch.Tensor  # (sessions · slots,) local object index
    query: torch.Tensor  # (sessions × D × 1), unit length for cosine
    query_sq_norm: torch.Tensor  # (sessions × 1 × 1) ‖q‖², for euclid
    coefficient: torch.Tensor  # (sessions × slots)
    clicked: torch.Tensor  # (sessions × slots) bool, real clicked slots
    negative: torch.Tensor  # (sessions × slots) bool, real negative slots
    session_index: np.ndarray  # (sessions,) index into the caller's ``sessions``


class _GatherRows(torch.autograd.Function):
    """``source[index]`` whose backward adds gradient rows with ``index_add_``.

    Autograd's own backward for indexing (``index_put_`` with accumulate) is several times slower on
    CPU; ``index_add_`` is serial there and therefore deterministic. On CUDA we use ``index_put_``,
    which has a deterministic implementation under ``torch.use_deterministic_algorithms``.
    """

    @staticmethod
    def forward(ctx, source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.source_shape = source.shape
        return source.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.source_shape)
        if grad.is_cuda:
            out.index_put_((index,), grad, accumulate=True)
        else:
            out.index_add_(0, index, grad)
        return out, None


def _train(
    starts: list[np.ndarray],
    originals: list[np.ndarray],
    queries: list[np.ndarray],
    sessions: list[SessionExample],
    failed: dict[int, str],
    params: AdjusterParams,
    device: torch.device,
) -> _Outcome:
    torch.manual_seed(params.seed)
    used = [si for si in range(len(sessions)) if si not in failed and (sessions[si].clicked or sessions[si].negatives)]
    touched: list[int] = []
    local_of: dict[int, int] = {}
    for si in used:
        for o in (*sessions[si].clicked, *sessions[si].negatives):
            o = int(o)
            if o not in local_of:
                local_of[o] = len(touched)
                touched.append(o)
    metrics = {"loss_before": 0.0, "loss_after": 0.0, "clicked_pairs": 0, "negative_pairs": 0}
    for kind in ("clicked", "negative"):
        for when in ("before", "after", "change"):
            metrics[f"{kind}_similarity_{when}"] = 0.0
    if not touched:
        dim = starts[0].shape[1] if starts else 0
        return _Outcome([], np.zeros((0, 1, dim), np.float32), np.zeros(0), metrics, set())

    start, original, part_mask = _pad_objects([starts[o] for o in touched], [originals[o] for o in touched])
    buckets = _build_buckets(sessions, used, queries, local_of, params, device)

    original_t = torch.from_numpy(original).to(device)
    mask_t = torch.from_numpy(part_mask).to(device)
    original_norm = original_t.norm(dim=-1)
    vectors = torch.from_numpy(start).to(device).requires_grad_(True)
    optimizer = torch.optim.AdamW([vectors], lr=params.lr, weight_decay=params.weight_decay, fused=True)
    pad_mask = None if part_mask.all() else mask_t

    with torch.no_grad():
        loss_before, similarity_before = _loss(vectors, buckets, pad_mask, params)
    for _ in range(params.iterations):
        optimizer.zero_grad()
        loss, _ = _loss(vectors, buckets, pad_mask, params)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            _apply_rails(vectors, original_t, original_norm, mask_t, params)

    with torch.no_grad():
        final = vectors.detach()
        if pad_mask is not None:
            final = final * mask_t.unsqueeze(-1)  # padded parts stay exactly zero anyway; make it explicit
        loss_after, similarity_after = _loss(final, buckets, pad_mask, params)
        drift = _cosine_distance(final, original_t).masked_fill(~mask_t, 0.0).amax(dim=1)
        finite_objects = torch.isfinite(final).flatten(1).all(dim=1)

    if not bool(finite_objects.all()):
        bad = ~finite_objects
        bad_sessions: set[int] = set()
        for bucket in buckets:
            hit = bad[bucket.object_index].view_as(bucket.coefficient) & (bucket.clicked | bucket.negative)
            bad_sessions.update(bucket.session_index[hit.any(dim=1).cpu().numpy()].tolist())
        return _Outcome(touched, np.empty(0), np.empty(0), {}, bad_sessions)

    metrics["loss_before"] = float(loss_before)
    metrics["loss_after"] = float(loss_after)
    for kind in ("clicked", "negative"):
        rows = [getattr(b, kind) for b in buckets]
        count = int(sum(int(r.sum()) for r in rows))
        metrics[f"{kind}_pairs"] = count
        if count:
            before = float(sum(float(s[r].sum()) for s, r in zip(similarity_before, rows, strict=True)) / count)
            after = float(sum(float(s[r].sum()) for s, r in zip(similarity_after, rows, strict=True)) / count)
            metrics[f"{kind}_similarity_before"] = before
            metrics[f"{kind}_similarity_after"] = after
            metrics[f"{kind}_similarity_change"] = after - before
    return _Outcome(touched, final.cpu().numpy(), drift.cpu().numpy(), metrics, set())


def _pad_objects(starts: list[np.ndarray], originals: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack ragged (parts × D) arrays into (objects × P × D) with a (objects × P) mask of real parts."""
    counts = np.fromiter((s.shape[0] for s in starts), dtype=np.int64, count=len(starts))
    width = int(counts.max())
    if (counts == width).all():  # the common case (one part each): no copying loop
        return np.stack(starts), np.stack(originals), np.ones((len(starts), width), dtype=bool)
    dim = starts[0].shape[1]
    start = np.zeros((len(starts), width, dim), dtype=np.float32)
    original = np.zeros_like(start)
    for i, (s, o) in enumerate(zip(starts, originals, strict=True)):
        start[i, : s.shape[0]] = s
        original[i, : o.shape[0]] = o
    mask = np.arange(width)[None, :] < counts[:, None]
    return start, original, mask


def _slot_count(n: int, distinct: int) -> int:
    """Sessions are grouped by their number of terms; with many different sizes, by the next power of two."""
    return n if distinct <= 12 else 1 << (n - 1).bit_length()


def _build_buckets(
    sessions: list[SessionExample],
    used: list[int],
    queries: list[np.ndarray],
    local_of: dict[int, int],
    params: AdjusterParams,
    device: torch.device,
) -> list[_Bucket]:
    """Group the sessions into (sessions × slots) layouts with one loss coefficient per slot."""
    eta = params.position_bias_eta
    per_session = 1.0 / len(used)
    sizes = {si: len(sessions[si].clicked) + len(sessions[si].negatives) for si in used}
    distinct = len(set(sizes.values()))
    groups: dict[int, list[int]] = {}
    for si in used:
        groups.setdefault(_slot_count(sizes[si], distinct), []).append(si)

    buckets = []
    for slots, members in sorted(groups.items()):
        object_index = np.zeros((len(members), slots), dtype=np.int64)
        coefficient = np.zeros((len(members), slots), dtype=np.float32)
        kind = np.zeros((len(members), slots), dtype=np.int8)  # 0 padding, 1 clicked, 2 negative
        for row, si in enumerate(members):
            session = sessions[si]
            slot = 0
            for objects, weights, positions, sign, label in (
                (session.clicked, session.clicked_weights, session.clicked_positions, -1.0, 1),
                (session.negatives, None, session.negative_positions, 1.0, 2),
            ):
                if not objects:
                    continue
                scale = sign * per_session / len(objects)
                for k, o in enumerate(objects):
                    weight = 1.0 if weights is None else float(weights[k])
                    if eta > 0 and positions is not None:
                        weight *= (int(positions[k]) + 1) ** eta
                    object_index[row, slot] = local_of[int(o)]
                    coefficient[row, slot] = scale * weight
                    kind[row, slot] = label
                    slot += 1
        query = torch.from_numpy(np.stack([queries[si] for si in members])).to(device)
        if params.metric == "cosine":
            query = query / query.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
        kind_t = torch.from_numpy(kind).to(device)
        buckets.append(
            _Bucket(
                object_index=torch.from_numpy(object_index.reshape(-1)).to(device),
                query=query.unsqueeze(-1).contiguous(),
                query_sq_norm=(query * query).sum(dim=-1).view(-1, 1, 1),
                coefficient=torch.from_numpy(coefficient).to(device),
                clicked=kind_t == 1,
                negative=kind_t == 2,
                session_index=np.asarray(members, dtype=np.int64),
            )
        )
    return buckets


def _loss(
    vectors: torch.Tensor, buckets: list[_Bucket], part_mask: torch.Tensor | None, params: AdjusterParams
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The batch loss and, per bucket, every slot's object similarity S(q, o): (sessions × slots)."""
    parts, dim = vectors.shape[1], vectors.shape[2]
    if params.metric == "cosine":
        row_scale = 1.0 / vectors.norm(dim=-1).clamp_min(_NORM_EPS)  # (objects × P)
    elif params.metric == "euclid":
        row_scale = (vectors * vectors).sum(dim=-1)  # ‖v‖²
    total = vectors.new_zeros(())
    similarities = []
    for bucket in buckets:
        n_sessions, slots = bucket.coefficient.shape
        gathered = _GatherRows.apply(vectors, bucket.object_index)  # (sessions·slots × P × D)
        dots = torch.bmm(gathered.view(n_sessions, slots * parts, dim), bucket.query)
        dots = dots.view(n_sessions, slots, parts)
        if params.metric == "dot":
            part_similarity = dots
        else:
            scale = _GatherRows.apply(row_scale, bucket.object_index).view(n_sessions, slots, parts)
            if params.metric == "cosine":
                part_similarity = dots * scale
            else:  # -‖q - p‖ from ‖q‖² - 2 q·p + ‖p‖²: no (slots × D) difference tensor needed
                part_similarity = -(bucket.query_sq_norm - 2.0 * dots + scale).clamp_min(_NORM_EPS).sqrt()
        if parts == 1:
            similarity = part_similarity[..., 0]
        elif part_mask is None:
            weights = torch.softmax(part_similarity / params.softmin_temperature, dim=-1)
            similarity = (weights * part_similarity).sum(dim=-1)
        else:
            mask = part_mask[bucket.object_index].view(n_sessions, slots, parts)
            # Padded parts: weight exactly 0 and a constant similarity, so no gradient reaches them.
            logits = (part_similarity / params.softmin_temperature).masked_fill(~mask, float("-inf"))
            weights = torch.softmax(logits, dim=-1)
            similarity = (weights * part_similarity.masked_fill(~mask, 0.0)).sum(dim=-1)
        total = total + (bucket.coefficient * similarity**3).sum()
        similarities.append(similarity)
    return total, similarities


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a_unit = a / a.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    b_unit = b / b.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    return 1.0 - (a_unit * b_unit).sum(dim=-1)


def _apply_rails(
    vectors: torch.Tensor,
    original: torch.Tensor,
    original_norm: torch.Tensor,
    part_mask: torch.Tensor,
    params: AdjusterParams,
) -> None:
    """In place: keep each part's original norm (cosine), then pull parts that drifted too far back."""
    renormalize = params.renormalize and params.metric == "cosine"
    if not renormalize and params.max_drift is None:
        return
    norm = vectors.norm(dim=-1)  # (objects × P)
    if params.max_drift is not None:
        along = torch.linalg.vecdot(vectors, original)  # v·o, before any rescaling (cosine is scale-free)
        cosine = along / (norm * original_norm).clamp_min(_NORM_EPS)
        over = (cosine < 1.0 - params.max_drift) & part_mask & (original_norm > _NORM_EPS)
    if renormalize:
        vectors.mul_((original_norm / norm.clamp_min(_NORM_EPS)).unsqueeze(-1))
        norm = original_norm
    if params.max_drift is None or not bool(over.any()):
        return
    rows = over.nonzero(as_tuple=True)
    current = vectors[rows]
    length = norm[rows].unsqueeze(-1)
    anchor = original[rows] / original_norm[rows].unsqueeze(-1)
    # Move along the great circle through the original and the current direction, stopping at the
    # angle whose cosine distance is exactly max_drift; the length stays as it is.
    unit = current / length.clamp_min(_NORM_EPS)
    across = unit - (unit * anchor).sum(dim=-1, keepdim=True) * anchor
    across_norm = across.norm(dim=-1, keepdim=True)
    target_cos = 1.0 - params.max_drift
    target_sin = max(0.0, 1.0 - target_cos**2) ** 0.5
    # Exactly opposite the original there is no unique great circle: fall back to the original direction.
    direction = torch.where(
        across_norm > 1e-6,
        target_cos * anchor + target_sin * across / across_norm.clamp_min(_NORM_EPS),
        anchor,
    )
    vectors[rows] = direction * length
