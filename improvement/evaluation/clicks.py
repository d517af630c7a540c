"""Click models that turn graded relevance of a shown ranking into simulated clicks.

Both take their randomness from the caller's generator, so a fixed seed per (round, user, query)
gives every arm the same random numbers (common random numbers: paired comparisons stay tight).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# P(click | examined, grade) for grades 0, 1, 2 (docs/architecture.md); higher grades use the last value.
DEFAULT_CLICK_PROBABILITIES = (0.05, 0.5, 0.9)


def click_probability(grade: int, probabilities: Sequence[float] = DEFAULT_CLICK_PROBABILITIES) -> float:
    """Attractiveness of an object of this grade."""
    return probabilities[min(max(int(grade), 0), len(probabilities) - 1)]


@dataclass(frozen=True)
class PositionBasedModel:
    """PBM: position r (0-based) is examined with probability (1/(r+1))^η, independently of the rest;
    an examined object is clicked with P(click | grade). η = 0 removes position bias."""

    eta: float = 1.0
    probabilities: tuple[float, ...] = DEFAULT_CLICK_PROBABILITIES

    def clicks(self, grades: Sequence[int], rng: np.random.Generator) -> list[int]:
        """Positions clicked, in order."""
        draws = rng.random(len(grades))
        return [
            position
            for position, grade in enumerate(grades)
            if draws[position] < (1.0 / (position + 1)) ** self.eta * click_probability(grade, self.probabilities)
        ]


@dataclass(frozen=True)
class CascadeModel:
    """Cascade (Craswell et al., 2008): the user reads top-down, clicks an object with P(click | grade)
    and stops after the first click. ``eta`` is accepted for a uniform interface and ignored (the
    cascade's own position bias comes from stopping)."""

    eta: float = 1.0
    probabilities: tuple[float, ...] = DEFAULT_CLICK_PROBABILITIES

    def clicks(self, grades: Sequence[int], rng: np.random.Generator) -> list[int]:
        """Positions clicked (at most one)."""
        draws = rng.random(len(grades))
        for position, grade in enumerate(grades):
            if draws[position] < click_probability(grade, self.probabilities):
                return [position]
        return []


def make_click_model(name: str, *, eta: float = 1.0) -> PositionBasedModel | CascadeModel:
    """``pbm`` or ``cascade``."""
    if name == "pbm":
        return PositionBasedModel(eta=eta)
    if name == "cascade":
        return CascadeModel(eta=eta)
    raise ValueError(f"unknown click model {name!r} (pbm or cascade)")
