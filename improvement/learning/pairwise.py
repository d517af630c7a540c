"""The v2 learning rule: pairwise preferences, plain gradient steps, per-user normalization.

``adjuster.adjust`` calls ``train`` when ``params.rule == "pairwise"``; the input checks, the rails and
the result are the adjuster's (docs/architecture.md, "The learning rule"). Per session with query ``q``:

    pairs      = {(c, n): c clicked, n shown above c and not clicked}           (cascade)
               ∪ {(c, n'): n' shown right below c and not clicked}   (skip next, weighed by w_next; lifts c only)
    S(q, o)    = Σ_p softmax(s(q, ·) / T_parts)_p · s(q, p)                        (as the seed rule)
    ℓ(c, n)    = τ · softplus((m − (S(q, c) − S(q, n))) / τ)                      (stops once c beats n by m)
    weight     = event weight(c) · (position(c) + 1)^η / |pairs above c| / |sessions of the user|
                 (a skip-next pair: event weight(c) · (position(c) + 1)^η · w_next / |sessions of the user|)
    loss       = Σ_pairs weight · ℓ(c, n)       (a skip-next pair's gradient reaches only c: S(q, n') is held)

minimised by ``params.iterations`` plain gradient steps ``v ← v − lr · ∂loss/∂v`` (no Adam: the step
follows the gradient, so weights, propensities and evidence counts scale the update), the rails after
each step. Every parameter belongs to one (user, object) and each user's loss is divided by that user's
own sessions, so what a run writes for a user does not depend on who else shares the batch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch  # noqa: TID253  the pairwise engine; imported only when a batch is adjusted under this rule

from improvement.learning.adjuster import (
    Outcome,
    apply_rails,
    drift_and_changed,
    empty_outcome,
    final_vectors,
    touched_objects,
    zero_metrics,
)
from improvement.learning.params import AdjusterParams, SessionExample

_NORM_EPS = 1e-12


@dataclass
class _Pairs:
    """The batch's preferences: each pair a winner term over a loser term; a term is one (session, object)."""

    term_object: np.ndarray  # (terms,) local object index
    term_session: np.ndarray  # (terms,) index into the sessions
    winner: np.ndarray  # (pairs,) term index
    loser: np.ndarray  # (pairs,) term index
    weight: np.ndarray  # (pairs,) float32
    pushes: np.ndarray  # (pairs,) bool: the loser is pushed (skipped above); False: skip-next, only the winner moves
    touched: np.ndarray  # (touched,) sorted global object indices


def train(
    start_all: np.ndarray,
    original_all: np.ndarray,
    mask_all: np.ndarray,
    queries: np.ndarray,
    sessions: list[SessionExample],
    failed: dict[int, str],
    params: AdjusterParams,
    device: torch.device,
) -> Outcome:
    """One training over the sessions not failed: lay out the pairs, step, check and measure the result."""
    torch.manual_seed(params.seed)
    pairs = lay_out_pairs(
        sessions,
        failed,
        eta=params.position_bias_eta,
        next_weight=params.pair_next_weight,
        push_depth=params.pair_push_depth,
    )
    metrics = zero_metrics()
    if pairs is None:
        return empty_outcome(start_all, metrics)
    touched = touched_objects(start_all, original_all, mask_all, pairs.touched, device)
    terms = _Terms.build(pairs, queries, params, device)
    vectors = touched.start.clone()
    loss_before, before = _loss(vectors, terms, touched.pad_mask, params)
    for _ in range(params.iterations):
        gradient = _gradient(vectors, terms, touched.pad_mask, params)
        with torch.no_grad():
            vectors.sub_(gradient, alpha=params.lr)  # in place: ``vectors`` is this training's own clone
            apply_rails(vectors, touched.original, touched.original_norm, touched.mask, params)
    with torch.no_grad():
        final, final_norm = final_vectors(vectors.detach(), touched)
        bad = _non_finite_sessions(final_norm, pairs)
        if bad:
            return Outcome(pairs.touched, touched.start_np, np.zeros(0, dtype=bool), np.zeros(0), {}, bad)
        loss_after, after = _loss(final, terms, touched.pad_mask, params)
        drift, changed = drift_and_changed(final, final_norm, touched, params)
    _add_metrics(metrics, pairs, float(loss_before), float(loss_after), before, after)
    arrays = (final.cpu().numpy(), changed.cpu().numpy(), drift.cpu().numpy().astype(np.float64))
    return Outcome(pairs.touched, *arrays, metrics, set())


def lay_out_pairs(
    sessions: list[SessionExample],
    failed: dict[int, str],
    *,
    eta: float,
    next_weight: float = 0.0,
    push_depth: int | None = None,
) -> _Pairs | None:
    """The preferences of the sessions not failed, weighted; None when there is none."""
    raw = [
        (si, *pair)
        for si in range(len(sessions))
        if si not in failed
        for pair in session_pairs(sessions[si], eta, next_weight=next_weight, push_depth=push_depth)
    ]
    if not raw:
        return None
    sessions_of = Counter(_user_key(sessions[si], si) for si in {row[0] for row in raw})
    table = np.asarray([(si, c, n) for si, c, n, _, _ in raw], dtype=np.int64)
    weight = np.asarray([w / sessions_of[_user_key(sessions[si], si)] for si, _, _, w, _ in raw], dtype=np.float32)
    # Terms: distinct (session, object) over winners and losers, so each similarity is computed once.
    keys = np.concatenate([table[:, [0, 1]], table[:, [0, 2]]])
    unique_keys, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    touched, term_object = np.unique(unique_keys[:, 1], return_inverse=True)
    return _Pairs(
        term_object=term_object.reshape(-1),
        term_session=unique_keys[:, 0],
        winner=inverse[: len(table)],
        loser=inverse[len(table) :],
        weight=weight,
        pushes=np.asarray([pushes for *_, pushes in raw], dtype=bool),
        touched=touched,
    )


def session_pairs(
    session: SessionExample, eta: float, *, next_weight: float = 0.0, push_depth: int | None = None
) -> list[tuple[int, int, float, bool]]:
    """One session's preferences ``(clicked, other, weight, pushes)``: each clicked object over each negative
    shown above it (all negatives when positions are not known), weighted ``event weight · (position + 1)^η``
    shared among that click's pairs, the negative pushed away (with ``push_depth``, only those at most that many
    places above the click; the click is still lifted over the others); and, when ``next_weight`` > 0, over the
    unclicked object shown right below it, with that weight times ``next_weight``, lifting the click only
    (Joachims' "click > skip next": the only evidence a first-result click gives, too weak to push anything down)."""
    pairs = []
    for k, clicked in enumerate(session.clicked):
        position = None if session.clicked_positions is None else int(session.clicked_positions[k])
        weight = 1.0 if session.clicked_weights is None else float(session.clicked_weights[k])
        if eta > 0 and position is not None:
            weight *= (position + 1) ** eta
        shown_at = session.negative_positions
        losers = [
            j for j in range(len(session.negatives)) if position is None or shown_at is None or shown_at[j] < position
        ]
        pairs.extend(
            (
                int(clicked),
                int(session.negatives[j]),
                weight / len(losers),
                _pushes(position, None if shown_at is None else shown_at[j], push_depth),
            )
            for j in losers
        )
        below = None if session.next_skipped is None else session.next_skipped[k]
        if next_weight > 0 and below is not None:
            pairs.append((int(clicked), int(below), weight * next_weight, False))
    return pairs


def _pushes(position: int | None, negative_position: int | None, push_depth: int | None) -> bool:
    """Whether a skipped result is pushed down (else only the click is lifted over it): all are, unless
    ``push_depth`` limits it to those at most that many places above the click."""
    if push_depth is None or position is None or negative_position is None:
        return True
    return position - int(negative_position) <= push_depth


def _user_key(session: SessionExample, index: int) -> tuple:
    """Whose loss a session belongs to: its user, or (no user given) the session alone."""
    return ("user", session.user) if session.user is not None else ("session", index)


@dataclass
class _Terms:
    """The pairs on the device: per term its object and query, per pair its winner, loser and weight."""

    object_index: torch.Tensor
    query: torch.Tensor  # (terms × D), unit length for cosine
    winner: torch.Tensor
    loser: torch.Tensor
    weight: torch.Tensor
    pushes: torch.Tensor
    # Optional: the distinct queries (sessions × D) and each term's row among them. Without them every term
    # is its own row of ``query``; with them the gradient sums over a session's queries, not its terms' copies.
    session_query: torch.Tensor | None = None
    term_session: torch.Tensor | None = None
    _workspace: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, pairs: _Pairs, queries: np.ndarray, params: AdjusterParams, device: torch.device) -> _Terms:
        session_query = torch.from_numpy(np.ascontiguousarray(queries)).to(device)
        if params.metric == "cosine":
            session_query = session_query / session_query.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
        tensor = lambda array: torch.from_numpy(array).to(device)  # noqa: E731
        term_session = tensor(pairs.term_session)
        return cls(
            tensor(pairs.term_object),
            session_query.index_select(0, term_session),
            tensor(pairs.winner),
            tensor(pairs.loser),
            tensor(pairs.weight),
            tensor(pairs.pushes),
            session_query,
            term_session,
        )

    def rows(self, flat: torch.Tensor) -> torch.Tensor:
        """Each term's object row (terms × D), gathered into one buffer reused across steps: a fresh tensor of
        this size costs its page faults every step (glibc maps allocations over 32 MB anew), ten times the copy."""
        buffer = self._workspace.get("rows")
        if buffer is None:
            buffer = self._workspace["rows"] = flat.new_empty((len(self.object_index), flat.shape[1]))
        return torch.index_select(flat, 0, self.object_index, out=buffer)

    def query_sums(self, weights: torch.Tensor, objects: int) -> torch.Tensor:
        """Per object Σ over its terms of weight · query (objects × D), as one ``embedding_bag`` over the
        distinct queries: no (terms × D) product is built."""
        if "order" not in self._workspace:
            order = torch.argsort(self.object_index, stable=True)
            counts = torch.bincount(self.object_index, minlength=objects)
            sessions = self.term_session
            if sessions is None:  # every term its own row of ``query``
                sessions = torch.arange(len(order), device=order.device)
            self._workspace.update(order=order, offsets=torch.cumsum(counts, 0) - counts, bag=sessions[order])
        table = self.session_query if self.session_query is not None else self.query
        work = self._workspace
        return torch.nn.functional.embedding_bag(
            work["bag"], table, work["offsets"], mode="sum", per_sample_weights=weights[work["order"]]
        )


def _loss(
    vectors: torch.Tensor, terms: _Terms, part_mask: torch.Tensor | None, params: AdjusterParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted pairwise loss and every term's object similarity S(q, o)."""
    similarity = _similarity(vectors, terms, part_mask, params)
    loser = similarity[terms.loser]
    loser = torch.where(terms.pushes, loser, loser.detach())  # skip-next: the result below is not pushed
    gap = similarity[terms.winner] - loser
    tau = params.pair_temperature
    per_pair = tau * torch.nn.functional.softplus((params.pair_margin - gap) / tau)
    return (terms.weight * per_pair).sum(), similarity.detach()


def _gradient(
    vectors: torch.Tensor, terms: _Terms, part_mask: torch.Tensor | None, params: AdjusterParams
) -> torch.Tensor:
    """∂loss/∂vectors: written out for one-part objects (most catalogues; faster than autograd, which still
    serves several parts' softmin)."""
    if vectors.shape[1] != 1:
        vectors = vectors.detach().requires_grad_(True)
        loss, _ = _loss(vectors, terms, part_mask, params)
        return torch.autograd.grad(loss, vectors)[0]
    with torch.no_grad():
        flat = vectors[:, 0]  # (objects × D)
        similarity, scales = _one_part_terms(flat, terms, params.metric)
        tau = params.pair_temperature
        # ∂ℓ/∂gap = −sigmoid((m − gap)/τ); the winner's S gains it, a pushed loser's S loses it
        slope = terms.weight * torch.sigmoid(
            (params.pair_margin - (similarity[terms.winner] - similarity[terms.loser])) / tau
        )
        per_term = torch.zeros_like(similarity).index_add_(0, terms.winner, -slope)
        per_term.index_add_(0, terms.loser, torch.where(terms.pushes, slope, torch.zeros_like(slope)))
        return _one_part_gradient(flat, terms, per_term, scales).unsqueeze(1)


def _one_part_terms(
    flat: torch.Tensor, terms: _Terms, metric: str
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Per term s(q, r) and the two scalars of ∂s/∂r = α·q − β·r (None for dot, where ∂s/∂r = q): cosine
    α = 1/|r|, β = s/|r|²; euclid α = β = 1/‖q − r‖. The norms of the rows are taken once per object."""
    dots = torch.einsum("td,td->t", terms.rows(flat), terms.query)  # no (terms × D) temporary, unlike (a*b).sum
    if metric == "dot":
        return dots, None
    squared = torch.einsum("od,od->o", flat, flat).index_select(0, terms.object_index)
    if metric == "cosine":
        norm = squared.sqrt().clamp_min(_NORM_EPS)
        similarity = dots / norm
        return similarity, (1.0 / norm, similarity / norm**2)
    query_squared = torch.einsum("td,td->t", terms.query, terms.query)
    distance = (squared - 2 * dots + query_squared).clamp_min(_NORM_EPS).sqrt()
    return -distance, (1.0 / distance, 1.0 / distance)


def _one_part_gradient(
    flat: torch.Tensor, terms: _Terms, per_term: torch.Tensor, scales: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """Σ over an object's terms of ∂ℓ/∂s · ∂s/∂r. With ∂s/∂r = α·q − β·r and r the object's own row, that is
    Σ(∂ℓ/∂s·α·q) − (Σ ∂ℓ/∂s·β)·r: the first sum over the distinct queries, the second a scalar per object."""
    alpha = per_term if scales is None else per_term * scales[0]
    gradient = terms.query_sums(alpha, flat.shape[0])
    if scales is not None:
        beta = torch.zeros(flat.shape[0], dtype=flat.dtype, device=flat.device)
        beta.index_add_(0, terms.object_index, per_term * scales[1])
        gradient.addcmul_(beta.unsqueeze(-1), flat, value=-1.0)
    return gradient


def _similarity(
    vectors: torch.Tensor, terms: _Terms, part_mask: torch.Tensor | None, params: AdjusterParams
) -> torch.Tensor:
    """Per term S(q, o): the soft best part of s(q, p) = cosine | dot | −euclidean."""
    rows = vectors.index_select(0, terms.object_index)  # (terms × P × D)
    dots = torch.bmm(rows, terms.query.unsqueeze(-1)).squeeze(-1)  # (terms × P)
    if params.metric == "cosine":
        part = dots / rows.norm(dim=-1).clamp_min(_NORM_EPS)
    elif params.metric == "dot":
        part = dots
    else:
        squared = (rows * rows).sum(-1) - 2 * dots + (terms.query * terms.query).sum(-1, keepdim=True)
        part = -squared.clamp_min(_NORM_EPS).sqrt()
    if part.shape[1] == 1:
        return part[:, 0]
    logits = part / params.softmin_temperature
    if part_mask is not None:
        mask = part_mask.index_select(0, terms.object_index)
        logits = logits.masked_fill(~mask, float("-inf"))
        part = part.masked_fill(~mask, 0.0)
    return (torch.softmax(logits, dim=-1) * part).sum(dim=-1)


def _non_finite_sessions(final_norm: torch.Tensor, pairs: _Pairs) -> set[int]:
    """The sessions with a term on an object that came out non-finite."""
    finite = torch.isfinite(final_norm).all(dim=1).cpu().numpy()
    if finite.all():
        return set()
    return {int(si) for si in np.unique(pairs.term_session[~finite[pairs.term_object]])}


def _add_metrics(
    metrics: dict, pairs: _Pairs, loss_before: float, loss_after: float, before: torch.Tensor, after: torch.Tensor
) -> None:
    """Losses, pair counts, and the mean similarity of winners (clicked) and pushed losers (negative) before and
    after; a skip-next pair's loser is held still, so it is not counted as pushed."""
    metrics.update(loss_before=loss_before, loss_after=loss_after)
    for kind, index in (("clicked", pairs.winner), ("negative", pairs.loser[pairs.pushes])):
        if not len(index):
            continue  # e.g. only first-result clicks: nothing pushed, the zeros stand
        terms = torch.from_numpy(np.unique(index)).to(before.device)
        metrics[f"{kind}_pairs"] = int(len(index))
        metrics[f"{kind}_similarity_before"] = float(before[terms].mean())
        metrics[f"{kind}_similarity_after"] = float(after[terms].mean())
        metrics[f"{kind}_similarity_change"] = float(after[terms].mean() - before[terms].mean())
