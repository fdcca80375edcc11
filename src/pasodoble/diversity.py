"""Question diversity against a history of earlier questions (method.md, Diversity).

Q_i is the set of token ids of question i's problem text. With h ranging over the history (the
token-id sets of the most recent H questions of EARLIER steps),

    d_i = 1 - #{h : Jaccard(Q_i, h) > J} / |history|,   d_i = 1 for an empty history.

Scoring does not change the history; ``add`` is called once per step, after the step's rewards are
computed, with every question of that step (valid or not), and evicts the oldest beyond H. The
history is part of the checkpoint (``state_dict``) and must be identical on every rank.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from pasodoble.config import RewardsConfig

TokenSet = frozenset[int]


def jaccard(a: frozenset[int] | set[int], b: frozenset[int] | set[int]) -> float:
    """|a ∩ b| / |a ∪ b|. Two empty sets have similarity 0 by definition: an empty problem is never a
    near-duplicate of anything (it is invalid anyway), and no division by zero can occur."""
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


class DiversityHistory:
    """The last ``max_size`` questions' token-id sets, and diversity scores against them."""

    def __init__(self, max_size: int = 100, threshold: float = 0.8) -> None:
        if max_size < 1:
            raise ValueError(f"diversity history size must be >= 1; got {max_size}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"Jaccard threshold must be in [0, 1]; got {threshold}")
        self.max_size = max_size
        self.threshold = threshold
        self._history: deque[TokenSet] = deque(maxlen=max_size)

    @classmethod
    def from_config(cls, cfg: RewardsConfig) -> DiversityHistory:
        """H = ``rewards.diversity_history``, J = ``rewards.jaccard_threshold``."""
        return cls(max_size=cfg.diversity_history, threshold=cfg.jaccard_threshold)

    def __len__(self) -> int:
        return len(self._history)

    def score(self, token_ids: Iterable[int]) -> float:
        """d for one question: 1 minus the share of history entries with Jaccard > J (1 if empty)."""
        if not self._history:
            return 1.0
        q = frozenset(token_ids)
        near = sum(1 for h in self._history if jaccard(q, h) > self.threshold)
        return 1.0 - near / len(self._history)

    def scores(self, token_id_sets: Sequence[Iterable[int]]) -> list[float]:
        """d_i for each question of a step, against the history only (questions of the same step are
        not compared with each other, and the history is not modified)."""
        return [self.score(ids) for ids in token_id_sets]

    def add(self, token_id_sets: Iterable[Iterable[int]]) -> None:
        """Append the step's questions in order; the oldest entries leave beyond ``max_size``."""
        for ids in token_id_sets:
            self._history.append(frozenset(int(t) for t in ids))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state: sizes and the history, oldest first, each set as a sorted list."""
        return {
            "max_size": self.max_size,
            "threshold": self.threshold,
            "history": [sorted(h) for h in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history saved by ``state_dict``. The configured size and threshold are kept (a
        resumed run may change them); a longer saved history keeps its most recent entries."""
        self._history = deque((frozenset(int(t) for t in h) for h in state["history"]), maxlen=self.max_size)
