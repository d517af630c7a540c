"""The PyTorch adjuster: moves (user, object) vectors toward the queries whose results were clicked
and away from the shown-but-skipped ones. The only module of studio that imports torch, and only
the adjust stage of a batch imports it (the data types live in ``improvement.learning.params``).

Usage::

    params = AdjusterParams.from_settings()
    result = adjust(objects=[ObjectVectors(...)], sessions=[SessionExample(...)], params=params)

``objects`` are the distinct (user, object) pairs of a batch, each with its start vectors (the
user's current copy, else the original) and the original's vectors (for the drift cap);
sessions refer to them by index, so two sessions touching the same (user, object) share one
parameter and add their gradients.

The rule (docs/architecture.md, "The learning rule"), per session with query ``q``, clicked set
``C`` and negatives ``N``::

    s(q, p)   = cosine(q, p) | q·p | -‖q - p‖               for each part p of object o
    S(q, o)   = Σ_p softmax(s(q, ·) / T)_p · s(q, p)        (a soft "best part")
    loss      = -mean_{o∈C} w_o·S(q, o)³ + mean_{o∈N} w_o·S(q, o)³   (second term only when N ≠ ∅)
    w_o       = event weight · (position + 1)^η            (η = 0: position ignored)

and the batch loss is the mean over sessions, minimised by full-batch AdamW, with optional rails
after each step (renormalize to the original norm; cap the cosine distance to the original).

Internally every (session, object) pair becomes one term with a fixed coefficient
``∓w_o / (|C or N| · sessions)``, so the loss is one weighted sum over terms: no padding over
sessions, no Python loop inside the iteration loop. Each object's first term sits in row i of a
first group (row i = object i, so it needs no gather); repeated objects' other terms form a
second group gathered by index, whose gradients ``index_add_`` into the same parameter rows.
Objects with fewer parts than the widest one are padded and masked: padded parts get exactly zero
gradient and are never returned. The gradient of s(q, p) is written by hand (see
``_PartSimilarity``): it is several times faster on CPU than autograd's and is checked against
finite differences in the tests.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch  # noqa: TID253  the torch engine itself; imported only when a batch is adjusted

from improvement.learning.params import AdjusterParams, AdjustResult, ObjectVectors, SessionExample

_NORM_EPS = 1e-12  # below this a vector counts as zero (no direction)


def adjust(
    *,
    objects: list[ObjectVectors],
    sessions: list[SessionExample],
    params: AdjusterParams,
    dim: int | None = None,
) -> AdjustResult:
    """Train ``params.rule``'s loss for ``params.iterations`` full-batch steps and return the adjusted vectors:
    AdamW on the cubic loss (``seed``, this module) or SGD on pairwise preferences (``pairwise``,
    ``improvement.learning.pairwise``). Both share the input checks, the rails and the result here.

    ``dim`` (optional) is the expected vector dimension; every vector is checked against it.
    Raises ``ValueError`` on structurally bad input (wrong shapes, indices out of range);
    non-finite numbers fail only the sessions concerned (see ``AdjustResult.failed_sessions``).
    """
    started = time.perf_counter()
    starts, originals = validate_objects(objects, dim=dim)
    if dim is None and starts:
        dim = starts[0].shape[1]
    queries = validate_sessions(sessions, n_objects=len(objects), dim=dim)
    start_all, original_all, mask_all = pad_objects(starts, originals, dim=dim or 0)
    failed = non_finite_inputs(start_all, original_all, queries, sessions)
    device = pick_device(params.device)
    if params.rule == "pairwise":
        from improvement.learning.pairwise import train
    else:
        train = _train
    with torch_settings(params, device):
        outcome = _train_until_finite(
            train, start_all, original_all, mask_all, queries, sessions, failed, params, device
        )
    vectors, changed = result_vectors(outcome, starts)
    metrics = result_metrics(
        outcome, changed=changed, sessions=sessions, failed=failed, params=params, device=device, started=started
    )
    return AdjustResult(vectors=vectors, changed=changed, metrics=metrics, failed_sessions=failed)


def non_finite_inputs(
    start_all: np.ndarray, original_all: np.ndarray, queries: np.ndarray, sessions: list[SessionExample]
) -> dict[int, str]:
    """The sessions whose query or one of whose objects is not finite, with why: they fail, the others train."""
    failed: dict[int, str] = {}
    objects_finite = np.isfinite(start_all).all(axis=(1, 2)) & np.isfinite(original_all).all(axis=(1, 2))
    queries_finite = np.isfinite(queries).all(axis=1)
    for si, session in enumerate(sessions):
        if not queries_finite[si]:
            failed[si] = "query vector is not finite"
        elif not objects_finite.all() and not all(objects_finite[o] for o in session.referenced_objects()):
            failed[si] = "an object's stored vector is not finite"
    return failed


@contextlib.contextmanager
def torch_settings(params: AdjusterParams, device: torch.device):
    """The call's torch settings (threads, CUDA determinism) for the block, torch's own restored afterwards."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if params.num_threads is not None:
            torch.set_num_threads(params.num_threads)
        if device.type == "cuda":
            # CUDA's scatter-add (the backward of a gather) is non-deterministic unless asked.
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        if params.num_threads is not None:
            torch.set_num_threads(previous_threads)
        if device.type == "cuda":
            torch.use_deterministic_algorithms(previous_deterministic)


def _train_until_finite(
    train,
    start_all: np.ndarray,
    original_all: np.ndarray,
    mask_all: np.ndarray,
    queries: np.ndarray,
    sessions: list[SessionExample],
    failed: dict[int, str],
    params: AdjusterParams,
    device: torch.device,
) -> Outcome:
    """Train; while the result holds non-finite vectors, fail (in ``failed``) the sessions behind them and retrain."""
    # A NaN/inf stays inside the objects whose sessions produced it (each object is its own
    # parameter and AdamW is element-wise), so failing those sessions and retraining is enough.
    # Every retry drops at least one session, so this ends (at worst with no session left).
    while True:
        outcome = train(start_all, original_all, mask_all, queries, sessions, failed, params, device)
        if not outcome.non_finite_sessions:
            return outcome
        for si in outcome.non_finite_sessions:
            failed[si] = "adjustment produced non-finite vectors (learning rate too high?)"


def result_vectors(outcome: Outcome, starts: list[np.ndarray]) -> tuple[list[np.ndarray], list[bool]]:
    """Per object, its new vectors (a copy of its start where it did not change) and whether it changed."""
    vectors: list[np.ndarray | None] = [None] * len(starts)
    changed = [False] * len(starts)
    for local in np.flatnonzero(outcome.changed):
        global_index = int(outcome.touched[local])
        # A view into the fresh result array (which nothing else holds): no per-object copy.
        vectors[global_index] = outcome.vectors[local, : starts[global_index].shape[0]]
        changed[global_index] = True
    vectors = [start.copy() if new is None else new for start, new in zip(starts, vectors, strict=True)]
    return vectors, changed


def result_metrics(
    outcome: Outcome,
    *,
    changed: list[bool],
    sessions: list[SessionExample],
    failed: dict[int, str],
    params: AdjusterParams,
    device: torch.device,
    started: float,
) -> dict:
    """The training's metrics, then the call's counts, drift percentiles, device and seconds."""
    drifts = outcome.drift[outcome.changed]  # drift is reported over the objects that changed
    metrics = dict(outcome.metrics)
    metrics.update(
        sessions=len(sessions),
        sessions_used=len(sessions) - len(failed),
        sessions_failed=len(failed),
        objects=len(changed),
        objects_touched=len(outcome.touched),
        objects_changed=int(sum(changed)),
        drift_p50=float(np.percentile(drifts, 50)) if drifts.size else 0.0,
        drift_p90=float(np.percentile(drifts, 90)) if drifts.size else 0.0,
        drift_max=float(drifts.max()) if drifts.size else 0.0,
        iterations=params.iterations,
        device=str(device),
        seconds=time.perf_counter() - started,
    )
    return metrics


# --- input checks -------------------------------------------------------------------------------


def validate_objects(objects: list[ObjectVectors], *, dim: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    starts, originals = [], []
    for i, obj in enumerate(objects):
        start, original = obj.start, obj.original
        if not (_is_float32_matrix(start) and _is_float32_matrix(original)):  # the fast path skips asarray
            start = np.asarray(start, dtype=np.float32)
            original = np.asarray(original, dtype=np.float32)
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


def _is_float32_matrix(array) -> bool:
    return type(array) is np.ndarray and array.dtype == np.float32 and array.ndim == 2


def validate_sessions(sessions: list[SessionExample], *, n_objects: int, dim: int | None) -> np.ndarray:
    """Check the sessions' shapes and references; return their queries as one (sessions × D) array."""
    queries = []
    for si, session in enumerate(sessions):
        query = np.asarray(session.query, dtype=np.float32).reshape(-1)
        if dim is not None and query.shape[0] != dim:
            raise ValueError(f"sessions[{si}].query has dimension {query.shape[0]}, expected {dim}")
        for name in ("clicked", "negatives", "next_skipped"):
            for o in getattr(session, name) or ():
                if o is not None and not 0 <= int(o) < n_objects:
                    raise ValueError(f"sessions[{si}].{name} refers to object {o}, outside 0..{n_objects - 1}")
        for name, ref in (
            ("clicked_weights", session.clicked),
            ("clicked_positions", session.clicked),
            ("negative_positions", session.negatives),
            ("next_skipped", session.clicked),
        ):
            values = getattr(session, name)
            if values is not None and len(values) != len(ref):
                raise ValueError(f"sessions[{si}].{name} has {len(values)} entries for {len(ref)} objects")
        queries.append(query)
    if not queries:
        return np.zeros((0, dim or 0), dtype=np.float32)
    if len({q.shape[0] for q in queries}) > 1:
        raise ValueError("sessions' queries differ in dimension")
    return np.stack(queries)


def pad_objects(
    starts: list[np.ndarray], originals: list[np.ndarray], *, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack ragged (parts × D) arrays into (objects × P × D) with a (objects × P) mask of real parts."""
    if not starts:
        empty = np.zeros((0, 1, dim), dtype=np.float32)
        return empty, empty.copy(), np.zeros((0, 1), dtype=bool)
    counts = np.fromiter((s.shape[0] for s in starts), dtype=np.int64, count=len(starts))
    width = int(counts.max())
    if (counts == width).all():  # the common case (one part each): one concatenation, no loop
        shape = (len(starts), width, dim)
        return (
            np.concatenate(starts).reshape(shape),
            np.concatenate(originals).reshape(shape),
            np.ones((len(starts), width), dtype=bool),
        )
    start = np.zeros((len(starts), width, dim), dtype=np.float32)
    original = np.zeros_like(start)
    for i, (s, o) in enumerate(zip(starts, originals, strict=True)):
        start[i, : s.shape[0]] = s
        original[i, : o.shape[0]] = o
    mask = np.arange(width)[None, :] < counts[:, None]
    return start, original, mask


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --- training -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    touched: np.ndarray  # (touched,) global object indices, in local order
    vectors: np.ndarray  # (touched × P × D) final vectors (padded parts zero)
    changed: np.ndarray  # (touched,) bool: some part moved (L2) by more than changed_epsilon
    drift: np.ndarray  # (touched,) max cosine distance of a part to its original part
    metrics: dict
    non_finite_sessions: set[int]


@dataclass
class _Terms:
    """A group of (session, object) terms of the loss, one row each: ``coefficient · S(q, o)³``.

    ``coefficient`` = ∓ weight / (|C| or |N|) / sessions. The first group holds, for every
    touched object in local order, its first term, so it needs no gather at all: row i is object
    i. The second group holds the remaining terms of objects seen in several sessions.
    """

    object_index: torch.Tensor | None  # (terms,) local object; None for the first group (= arange)
    query: torch.Tensor  # (terms × 1 × D) contiguous, unit length for cosine
    query_sq_norm: torch.Tensor | None  # (terms × 1) ‖q‖², for euclid only
    coefficient: torch.Tensor  # (terms,)
    clicked: torch.Tensor  # (terms,) bool
    session_row: np.ndarray  # (terms,) index into the used sessions


class _PartSimilarity(torch.autograd.Function):
    """``s(q, p)`` for every term and part of every group: ``(terms × P)`` per group.

    The gradient is written by hand because it has a cheap shape: for each term ``∂s/∂v`` is
    ``a·q + r·v`` with scalars ``a`` and ``r`` (cosine: ``a = 1/‖v‖, r = -s/‖v‖²``; dot: ``a = 1, r = 0``;
    euclid: ``a = 1/‖q - v‖, r = -a``), so the whole backward is one broadcast multiply for the first
    group, an ``index_add_`` of the few repeated terms, and one ``addcmul_``. Autograd's generic version
    makes several more passes over (objects × P × D) and is several times slower on CPU.
    """

    @staticmethod
    def forward(ctx, vectors: torch.Tensor, groups: list[_Terms], metric: str):
        norm = vectors.norm(dim=-1) if metric != "dot" else None  # (objects × P)
        if metric == "cosine":
            per_row = 1.0 / norm.clamp_min(_NORM_EPS)  # 1/‖v‖
        elif metric == "euclid":
            per_row = norm * norm  # ‖v‖²
        outputs, saved = [], []
        for group in groups:
            if group.object_index is None:
                rows, row_values = vectors, (per_row if norm is not None else None)
            else:
                rows = vectors.index_select(0, group.object_index)
                row_values = per_row.index_select(0, group.object_index) if norm is not None else None
            similarity, aux = _group_similarity(rows, row_values, group, metric)
            outputs.append(similarity)
            saved.append(aux)
        ctx.groups = groups
        ctx.metric = metric
        ctx.saved_aux = saved
        ctx.saved_similarity = [o.detach() for o in outputs]
        ctx.save_for_backward(vectors)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        (vectors,) = ctx.saved_tensors
        metric = ctx.metric
        grad_vectors = None
        radial = None if metric == "dot" else torch.zeros(vectors.shape[:2], dtype=vectors.dtype, device=vectors.device)
        for group, grad, similarity, aux in zip(ctx.groups, grads, ctx.saved_similarity, ctx.saved_aux, strict=True):
            if metric == "dot":
                along, toward = grad, None
            elif metric == "cosine":
                along, toward = grad * aux, -grad * similarity * aux * aux
            else:
                along = grad / aux
                toward = -along
            term = along.unsqueeze(-1) * group.query  # (terms × P × D)
            if group.object_index is None:  # the first group has one row per object, in order
                grad_vectors = term
                if toward is not None:
                    radial += toward
            else:
                if grad_vectors.is_cuda:
                    grad_vectors.index_put_((group.object_index,), term, accumulate=True)
                    if toward is not None:
                        radial.index_put_((group.object_index,), toward, accumulate=True)
                else:
                    grad_vectors.index_add_(0, group.object_index, term)
                    if toward is not None:
                        radial.index_add_(0, group.object_index, toward)
        if radial is not None:
            grad_vectors.addcmul_(vectors, radial.unsqueeze(-1))
        return grad_vectors, None, None


@dataclass
class _Layout:
    """The loss's terms in their groups, and where each term comes from."""

    touched: np.ndarray  # (touched,) sorted global object indices: local object i is touched[i]
    local: np.ndarray  # (terms,) local object of each flattened term
    session_row: np.ndarray  # (terms,) index into the used sessions
    groups: list[_Terms]


@dataclass
class Touched:
    """The touched objects on the device: start vectors, originals (and their norms), the part mask."""

    start_np: np.ndarray  # (touched × P × D) the start vectors, on the host
    start: torch.Tensor
    original: torch.Tensor
    original_norm: torch.Tensor  # (touched × P)
    mask: torch.Tensor  # (touched × P) bool: real parts
    pad_mask: torch.Tensor | None  # the mask where some part is padded, else None


def _group_similarity(
    rows: torch.Tensor, row_values: torch.Tensor | None, group: _Terms, metric: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A group's ``s(q, p)`` (terms × P) from its rows and their per-part value (1/‖v‖ or ‖v‖²), and what
    the backward needs of it (cosine: 1/‖v‖; euclid: ‖q - v‖; dot: nothing)."""
    dots = torch.bmm(rows, group.query.transpose(1, 2)).squeeze(-1)  # (terms × P)
    if metric == "dot":
        return dots, None
    if metric == "cosine":
        return dots * row_values, row_values
    # ‖q - p‖ from ‖q‖² - 2 q·p + ‖p‖²: no (terms × P × D) difference tensor needed
    squared = group.query_sq_norm - 2.0 * dots + row_values
    aux = squared.clamp_min(_NORM_EPS).sqrt()
    aux = aux.masked_fill(squared < _NORM_EPS, float("inf"))  # at q = p: no gradient (1/inf = 0)
    similarity = -aux.clamp(max=torch.finfo(aux.dtype).max).masked_fill(squared < _NORM_EPS, 0.0)
    return similarity, aux


def _train(
    start_all: np.ndarray,
    original_all: np.ndarray,
    mask_all: np.ndarray,
    queries: np.ndarray,
    sessions: list[SessionExample],
    failed: dict[int, str],
    params: AdjusterParams,
    device: torch.device,
) -> Outcome:
    """One training over the sessions not failed: lay out the terms, step AdamW, check and measure the result."""
    torch.manual_seed(params.seed)
    used = [si for si in range(len(sessions)) if si not in failed and (sessions[si].clicked or sessions[si].negatives)]
    metrics = zero_metrics()
    if not used:
        return empty_outcome(start_all, metrics)
    layout = _lay_out_terms(sessions, used, queries, params, device)
    touched = touched_objects(start_all, original_all, mask_all, layout.touched, device)
    vectors, loss_before, similarity_before = _optimize(touched, layout.groups, params)
    with torch.no_grad():
        final, final_norm = final_vectors(vectors, touched)
        bad_sessions = _non_finite_sessions(final_norm, layout, used)
        if bad_sessions is not None:
            return Outcome(layout.touched, touched.start_np, np.zeros(0, dtype=bool), np.zeros(0), {}, bad_sessions)
        loss_after, similarity_after = _loss(final, layout.groups, touched.pad_mask, params)
        drift, changed = drift_and_changed(final, final_norm, touched, params)
    metrics.update(loss_before=float(loss_before), loss_after=float(loss_after))
    _add_similarity_metrics(metrics, layout.groups, similarity_before, similarity_after)
    arrays = (final.cpu().numpy(), changed.cpu().numpy(), drift.cpu().numpy().astype(np.float64))
    return Outcome(layout.touched, *arrays, metrics, set())


def empty_outcome(start_all: np.ndarray, metrics: dict) -> Outcome:
    """The outcome of a training without sessions: nothing touched."""
    return Outcome(np.zeros(0, np.int64), start_all[:0], np.zeros(0, dtype=bool), np.zeros(0), metrics, set())


def zero_metrics() -> dict:
    """The training metrics, all zero (what a training without sessions reports)."""
    metrics = {"loss_before": 0.0, "loss_after": 0.0, "clicked_pairs": 0, "negative_pairs": 0}
    for kind in ("clicked", "negative"):
        for when in ("before", "after", "change"):
            metrics[f"{kind}_similarity_{when}"] = 0.0
    return metrics


def _lay_out_terms(
    sessions: list[SessionExample], used: list[int], queries: np.ndarray, params: AdjusterParams, device: torch.device
) -> _Layout:
    """Flatten the used sessions into terms; each object's first term in the first group, repeats in the second."""
    object_of, session_row, coefficient, clicked = _flatten_terms(sessions, used, params)
    touched, first_term, local = np.unique(object_of, return_index=True, return_inverse=True)
    later = np.ones(len(object_of), dtype=bool)
    later[first_term] = False

    query_t = torch.from_numpy(queries[used]).to(device)
    if params.metric == "cosine":
        query_t = query_t / query_t.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    euclid = params.metric == "euclid"
    repeats = np.flatnonzero(later)
    groups = [
        _make_terms(rows, index, query_t, session_row, coefficient, clicked, device, euclid=euclid)
        for rows, index in ((first_term, None), (repeats, local[repeats]))
    ]
    if groups[1].coefficient.numel() == 0:
        groups.pop()
    return _Layout(touched=touched, local=local, session_row=session_row, groups=groups)


def touched_objects(
    start_all: np.ndarray, original_all: np.ndarray, mask_all: np.ndarray, touched: np.ndarray, device: torch.device
) -> Touched:
    """The touched objects' start vectors, originals and part mask, moved to the device."""
    all_touched = len(touched) == len(start_all)  # touched is sorted, so then it is 0..n-1
    start_np = start_all if all_touched else start_all[touched]
    original_t = torch.from_numpy(original_all if all_touched else original_all[touched]).to(device)
    mask_t = torch.from_numpy(mask_all if all_touched else mask_all[touched]).to(device)
    start_t = torch.from_numpy(start_np).to(device)
    pad_mask = None if bool(mask_t.all()) else mask_t
    return Touched(start_np, start_t, original_t, original_t.norm(dim=-1), mask_t, pad_mask)


def _optimize(
    touched: Touched, groups: list[_Terms], params: AdjusterParams
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``params.iterations`` full-batch AdamW steps, the rails after each; the vectors, and the loss before."""
    vectors = touched.start.clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([vectors], lr=params.lr, weight_decay=params.weight_decay, fused=True)
    with torch.no_grad():
        loss_before, similarity_before = _loss(vectors, groups, touched.pad_mask, params)
    for _ in range(params.iterations):
        optimizer.zero_grad()
        loss, _ = _loss(vectors, groups, touched.pad_mask, params)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            apply_rails(vectors, touched.original, touched.original_norm, touched.mask, params)
    return vectors, loss_before, similarity_before


def final_vectors(vectors: torch.Tensor, touched: Touched) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained vectors (padded parts zero) and their part norms."""
    final = vectors.detach()
    if touched.pad_mask is not None:
        final = final * touched.mask.unsqueeze(-1)  # padded parts get no gradient; this only makes it explicit
    final_norm = final.norm(dim=-1)  # NaN or inf anywhere in a part makes its norm non-finite
    return final, final_norm


def _non_finite_sessions(final_norm: torch.Tensor, layout: _Layout, used: list[int]) -> set[int] | None:
    """The sessions with a term on an object that came out non-finite; None when every object is finite."""
    finite_objects = torch.isfinite(final_norm).all(dim=1)
    if bool(finite_objects.all()):
        return None
    bad_terms = ~finite_objects.cpu().numpy()[layout.local]
    return {used[row] for row in np.unique(layout.session_row[bad_terms])}


def drift_and_changed(
    final: torch.Tensor, final_norm: torch.Tensor, touched: Touched, params: AdjusterParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object, the largest cosine distance of a part to its original, and whether some part moved."""
    cosine = row_dots(final, touched.original) / (final_norm * touched.original_norm).clamp_min(_NORM_EPS)
    drift = (1.0 - cosine).masked_fill(~touched.mask, 0.0).amax(dim=1)
    changed = ((final - touched.start).norm(dim=-1) > params.changed_epsilon).any(dim=1)
    return drift, changed


def _add_similarity_metrics(
    metrics: dict, groups: list[_Terms], similarity_before: list[torch.Tensor], similarity_after: list[torch.Tensor]
) -> None:
    """In ``metrics``: per kind (clicked, negative) its pair count and mean similarity before, after, change."""
    for kind, flag in (("clicked", True), ("negative", False)):
        selections = [group.clicked if flag else ~group.clicked for group in groups]
        count = sum(int(s.sum()) for s in selections)
        metrics[f"{kind}_pairs"] = count
        if count:
            before = sum(float(v[s].sum()) for v, s in zip(similarity_before, selections, strict=True)) / count
            after = sum(float(v[s].sum()) for v, s in zip(similarity_after, selections, strict=True)) / count
            metrics[f"{kind}_similarity_before"] = before
            metrics[f"{kind}_similarity_after"] = after
            metrics[f"{kind}_similarity_change"] = after - before


def _flatten_terms(
    sessions: list[SessionExample], used: list[int], params: AdjusterParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One row per (session, object) term: global object, session row (into ``used``), coefficient, clicked."""
    per_session = 1.0 / len(used)
    object_of: list[int] = []
    session_row: list[int] = []
    coefficient: list[float] = []
    clicked: list[bool] = []
    for row, si in enumerate(used):
        session = sessions[si]
        for members, weights, positions, sign, is_clicked in (
            (session.clicked, session.clicked_weights, session.clicked_positions, -1.0, True),
            (session.negatives, None, session.negative_positions, 1.0, False),
        ):
            if not members:
                continue
            scale = sign * per_session / len(members)
            object_of.extend(int(o) for o in members)
            session_row.extend([row] * len(members))
            clicked.extend([is_clicked] * len(members))
            coefficient.extend(_coefficients(scale, weights, positions, len(members), params.position_bias_eta))
    return (
        np.asarray(object_of, dtype=np.int64),
        np.asarray(session_row, dtype=np.int64),
        np.asarray(coefficient, dtype=np.float32),
        np.asarray(clicked, dtype=bool),
    )


def _coefficients(scale: float, weights, positions, count: int, eta: float) -> list[float]:
    """Each member's ``scale · weight · (position + 1)^η`` (weight 1 when not given; η = 0: position ignored)."""
    if weights is None and (eta == 0 or positions is None):
        return [scale] * count
    coefficients = []
    for k in range(count):
        weight = 1.0 if weights is None else float(weights[k])
        if eta > 0 and positions is not None:
            weight *= (int(positions[k]) + 1) ** eta
        coefficients.append(scale * weight)
    return coefficients


def _make_terms(
    rows: np.ndarray,
    object_index: np.ndarray | None,
    queries: torch.Tensor,
    session_row: np.ndarray,
    coefficient: np.ndarray,
    clicked: np.ndarray,
    device: torch.device,
    euclid: bool,
) -> _Terms:
    query = queries.index_select(0, torch.from_numpy(session_row[rows]).to(device))
    return _Terms(
        object_index=None if object_index is None else torch.from_numpy(object_index).to(device),
        query=query.unsqueeze(1),
        query_sq_norm=(query * query).sum(dim=-1, keepdim=True) if euclid else None,
        coefficient=torch.from_numpy(coefficient[rows]).to(device),
        clicked=torch.from_numpy(clicked[rows]).to(device),
        session_row=session_row[rows],
    )


def _loss(
    vectors: torch.Tensor, groups: list[_Terms], part_mask: torch.Tensor | None, params: AdjusterParams
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The batch loss and, per group of terms, every term's object similarity S(q, o)."""
    part_similarities = _PartSimilarity.apply(vectors, groups, params.metric)
    total = vectors.new_zeros(())
    similarities = []
    for group, part_similarity in zip(groups, part_similarities, strict=True):
        if part_similarity.shape[1] == 1:
            similarity = part_similarity[:, 0]
        else:
            mask = None
            if part_mask is not None:
                mask = part_mask if group.object_index is None else part_mask[group.object_index]
            logits = part_similarity / params.softmin_temperature
            if mask is not None:
                # Padded parts: weight exactly 0 and a constant similarity, so no gradient reaches them.
                logits = logits.masked_fill(~mask, float("-inf"))
                part_similarity = part_similarity.masked_fill(~mask, 0.0)
            similarity = (torch.softmax(logits, dim=-1) * part_similarity).sum(dim=-1)
        total = total + (group.coefficient * similarity**3).sum()
        similarities.append(similarity)
    return total, similarities


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Part-wise dot products of two (objects × P × D) tensors: (objects × P), one fast batched product."""
    return torch.bmm(a.flatten(0, 1).unsqueeze(1), b.flatten(0, 1).unsqueeze(2)).view(a.shape[:2])


def apply_rails(
    vectors: torch.Tensor,
    original: torch.Tensor,
    original_norm: torch.Tensor,
    part_mask: torch.Tensor,
    params: AdjusterParams,
) -> None:
    """In place: keep each part's original norm (cosine) or within ``max_norm_ratio`` of it (dot, euclid),
    then pull parts that drifted too far back."""
    renormalize = params.renormalize and params.metric == "cosine"
    if params.max_norm_ratio is not None and params.metric != "cosine":
        _bound_norms(vectors, original_norm, params.max_norm_ratio)
    if not renormalize and params.max_drift is None:
        return
    norm = vectors.norm(dim=-1)  # (objects × P)
    if params.max_drift is not None:
        along = row_dots(vectors, original)  # v·o, before any rescaling (cosine is scale-free)
        cosine = along / (norm * original_norm).clamp_min(_NORM_EPS)
        over = (cosine < 1.0 - params.max_drift) & part_mask & (original_norm > _NORM_EPS)
    if renormalize:
        vectors.mul_((original_norm / norm.clamp_min(_NORM_EPS)).unsqueeze(-1))
        norm = original_norm
    if params.max_drift is None or not bool(over.any()):
        return
    _pull_back(vectors, original, original_norm, norm, over, params.max_drift)


def _bound_norms(vectors: torch.Tensor, original_norm: torch.Tensor, ratio: float) -> None:
    """In place: each part's norm into [original / ratio, original × ratio] (dot and euclid: no hubs)."""
    norm = vectors.norm(dim=-1)
    bounded = torch.minimum(torch.maximum(norm, original_norm / ratio), original_norm * ratio)
    vectors.mul_((bounded / norm.clamp_min(_NORM_EPS)).unsqueeze(-1))


def _pull_back(
    vectors: torch.Tensor,
    original: torch.Tensor,
    original_norm: torch.Tensor,
    norm: torch.Tensor,
    over: torch.Tensor,
    max_drift: float,
) -> None:
    """In place: the parts ``over`` the drift cap, turned back to exactly ``max_drift`` from their original."""
    rows = over.nonzero(as_tuple=True)
    current = vectors[rows]
    length = norm[rows].unsqueeze(-1)
    anchor = original[rows] / original_norm[rows].unsqueeze(-1)
    # Move along the great circle through the original and the current direction, stopping at the
    # angle whose cosine distance is exactly max_drift; the length stays as it is.
    unit = current / length.clamp_min(_NORM_EPS)
    across = unit - (unit * anchor).sum(dim=-1, keepdim=True) * anchor
    across_norm = across.norm(dim=-1, keepdim=True)
    target_cos = 1.0 - max_drift
    target_sin = max(0.0, 1.0 - target_cos**2) ** 0.5
    # Exactly opposite the original there is no unique great circle: fall back to the original direction.
    direction = torch.where(
        across_norm > 1e-6,
        target_cos * anchor + target_sin * across / across_norm.clamp_min(_NORM_EPS),
        anchor,
    )
    vectors[rows] = direction * length
