"""The offline question buffer (method.md, Offline training).

During a Proposer phase every valid question with tau_low < p̃ < tau_high enters the buffer with the
Proposer's answer and its pass rate; during a Solver phase batches are drawn from it and re-scored
with fresh Solver attempts. Retirement rules, applied by ``record_visit`` after each re-scoring:

- **solved**: the new pass rate is >= ``retire_pass_rate`` (1.0): the Solver has learned it;
- **stale**: for ``patience`` (3) consecutive visits the pass rate has not risen by more than
  ``min_improvement`` (0.01) above its reference, the pass rate at admission or at the last visit
  that did improve on it (comparing with the reference, not with the previous visit, makes a
  question whose pass rate oscillates retire too).

The buffer has a size cap (the oldest question leaves to make room) and is saved with every
checkpoint (``save``/``load``, atomic), fixing two defects of the reference code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pasodoble.config import BufferConfig, RewardsConfig
from pasodoble.errors import UserError

RETIRED_SOLVED = "solved"
RETIRED_STALE = "stale"

_COUNTERS = ("admitted", "rejected_band", "rejected_duplicate", "retired_solved", "retired_stale", "evicted")


@dataclass
class BufferEntry:
    """One buffered question. ``id`` is unique for the buffer's lifetime (it survives save/load)."""

    id: int
    problem: str
    answer: str
    pass_rate: float  # latest measured validated pass rate
    reference_pass_rate: float  # at admission or at the last improving visit
    added_step: int
    visits: int = 0
    stale_visits: int = 0  # consecutive visits without an improvement > min_improvement
    meta: dict[str, Any] = field(default_factory=dict)


class QuestionBuffer:
    """Admit, sample, re-score and retire offline Solver questions; JSON state for checkpoints."""

    def __init__(self, cfg: BufferConfig, rewards: RewardsConfig | None = None) -> None:
        """``rewards`` supplies the admission band (tau_low, tau_high); None uses the defaults."""
        self.cfg = cfg
        rewards = rewards if rewards is not None else RewardsConfig()
        self.tau_low = rewards.tau_low
        self.tau_high = rewards.tau_high
        self._entries: dict[int, BufferEntry] = {}  # insertion order = age order
        self._by_problem: dict[str, int] = {}
        self._next_id = 0
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    # ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def entries(self) -> list[BufferEntry]:
        """All entries, oldest first."""
        return list(self._entries.values())

    def get(self, entry_id: int) -> BufferEntry:
        """The entry with this id (KeyError if it has left the buffer)."""
        return self._entries[entry_id]

    def metrics(self) -> dict[str, int]:
        """Cumulative counters plus the current ``size`` (logged under ``buffer/``)."""
        return {**self.counters, "size": len(self._entries)}

    # ----------------------------------------------------------------------------------------------

    def admit(
        self, question: str, answer: str, pass_rate: float, step: int, meta: dict[str, Any] | None = None
    ) -> BufferEntry | None:
        """Add a question (problem text) with the Proposer's answer and its VALIDATED pass rate p̃.

        The caller admits only questions that pass ``rewards.question_validity``; the buffer also
        enforces tau_low < p̃ < tau_high (so an invalid question, p̃ = 0, can never enter) and
        rejects a problem text already in the buffer. Rejections are counted, and None is returned.
        When full, the oldest entry is evicted to make room. ``meta`` must be JSON-serializable.
        """
        if not self.tau_low < pass_rate < self.tau_high:
            self.counters["rejected_band"] += 1
            return None
        key = question.strip()
        if key in self._by_problem:
            self.counters["rejected_duplicate"] += 1
            return None
        while len(self._entries) >= self.cfg.max_size:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.counters["evicted"] += 1
        entry = BufferEntry(
            id=self._next_id,
            problem=key,
            answer=answer,
            pass_rate=float(pass_rate),
            reference_pass_rate=float(pass_rate),
            added_step=int(step),
            meta=dict(meta or {}),
        )
        self._next_id += 1
        self._entries[entry.id] = entry
        self._by_problem[key] = entry.id
        self.counters["admitted"] += 1
        return entry

    def sample(self, k: int, rng: np.random.Generator) -> list[BufferEntry]:
        """Up to ``k`` distinct entries drawn uniformly without replacement (all when fewer).

        Reproducible: the draw depends only on ``rng``'s state and the buffer content.
        """
        if k < 0:
            raise ValueError(f"sample size must be >= 0; got {k}")
        entries = list(self._entries.values())
        n = min(k, len(entries))
        if n == 0:
            return []
        picks = rng.choice(len(entries), size=n, replace=False)
        return [entries[int(i)] for i in picks]

    def record_visit(self, entry_id: int, new_pass_rate: float) -> str | None:
        """Record a fresh pass rate for an entry and apply the retirement rules.

        Returns ``'solved'`` or ``'stale'`` when the entry leaves the buffer, else None.
        """
        entry = self._entries[entry_id]
        entry.visits += 1
        entry.pass_rate = float(new_pass_rate)
        if new_pass_rate >= self.cfg.retire_pass_rate:
            self._remove(entry_id)
            self.counters["retired_solved"] += 1
            return RETIRED_SOLVED
        if new_pass_rate > entry.reference_pass_rate + self.cfg.min_improvement:
            entry.reference_pass_rate = float(new_pass_rate)
            entry.stale_visits = 0
            return None
        entry.stale_visits += 1
        if entry.stale_visits >= self.cfg.patience:
            self._remove(entry_id)
            self.counters["retired_stale"] += 1
            return RETIRED_STALE
        return None

    def _remove(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        del self._by_problem[entry.problem]

    # ----------------------------------------------------------------------------------------------
    # Checkpointing

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state: entries (oldest first), the id counter and the metrics counters."""
        return {
            "version": 1,
            "next_id": self._next_id,
            "counters": dict(self.counters),
            "entries": [dataclasses.asdict(e) for e in self._entries.values()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the content with a saved state. A smaller ``max_size`` now keeps the newest entries."""
        self._entries = {}
        self._by_problem = {}
        for raw in state["entries"]:
            entry = BufferEntry(**raw)
            self._entries[entry.id] = entry
            self._by_problem[entry.problem] = entry.id
        self._next_id = int(state["next_id"])
        self.counters = dict.fromkeys(_COUNTERS, 0) | {k: int(v) for k, v in state["counters"].items()}
        while len(self._entries) > self.cfg.max_size:
            self._remove(next(iter(self._entries)))
            self.counters["evicted"] += 1

    def save(self, path: str | Path) -> None:
        """Write the state as JSON atomically (temporary file in the same folder + ``os.replace``)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state_dict(), f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path: str | Path) -> None:
        """Restore the state written by ``save``; a missing or corrupt file is a UserError naming it."""
        path = Path(path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            self.load_state_dict(state)
        except FileNotFoundError:
            raise UserError(
                f"question buffer file {path} not found; resume from a complete checkpoint"
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"question buffer file {path} is corrupt ({type(exc).__name__}: {exc}); "
                "resume from an earlier checkpoint"
            ) from None
