"""Question buffer: admission band, dedupe, sampling, retirement, eviction, save/load round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pasodoble.config import BufferConfig, RewardsConfig
from pasodoble.errors import UserError
from pasodoble.question_buffer import QuestionBuffer


def make(max_size: int = 10, **kw) -> QuestionBuffer:
    return QuestionBuffer(BufferConfig(max_size=max_size, **kw), RewardsConfig())


def test_admission_band_and_dedupe():
    buf = make()
    assert buf.admit("q1", "1", 0.5, step=0) is not None
    assert buf.admit("q0", "0", 0.0, step=0) is None  # invalid (p~ = 0)
    assert buf.admit("qlow", "0", 0.2, step=0) is None  # tau_low excluded
    assert buf.admit("qhigh", "0", 1.0, step=0) is None  # always solved
    assert buf.admit("  q1 ", "1", 0.5, step=1) is None  # same problem text
    assert len(buf) == 1
    assert buf.metrics() == {
        "admitted": 1, "rejected_band": 3, "rejected_duplicate": 1,
        "retired_solved": 0, "retired_stale": 0, "evicted": 0, "size": 1,
    }  # fmt: skip


def test_sample_reproducible_without_replacement():
    buf = make()
    for i in range(6):
        buf.admit(f"q{i}", str(i), 0.5, step=i)
    a = [e.id for e in buf.sample(4, np.random.default_rng(7))]
    b = [e.id for e in buf.sample(4, np.random.default_rng(7))]
    assert a == b and len(set(a)) == 4
    assert sorted(e.id for e in buf.sample(100, np.random.default_rng(0))) == list(range(6))
    assert make().sample(3, np.random.default_rng(0)) == []


def test_retire_solved():
    buf = make()
    e = buf.admit("q", "a", 0.5, step=0)
    assert buf.record_visit(e.id, 5 / 6) is None
    assert buf.record_visit(e.id, 1.0) == "solved"
    assert e.id not in buf and buf.counters["retired_solved"] == 1
    # once gone, the same problem may enter again
    assert buf.admit("q", "a", 0.5, step=3) is not None


def test_retire_stale_after_patience_visits():
    buf = make(patience=3, min_improvement=0.01)
    e = buf.admit("q", "a", 0.5, step=0)  # reference 0.5
    assert buf.record_visit(e.id, 0.505) is None  # +0.005: not > 0.01 -> stale 1
    assert buf.record_visit(e.id, 2 / 3) is None  # +0.167: improvement, reference 2/3, stale 0
    assert buf.record_visit(e.id, 0.5) is None  # stale 1
    assert buf.record_visit(e.id, 2 / 3 + 0.01) is None  # +0.01 exactly: not more -> stale 2
    assert buf.get(e.id).stale_visits == 2 and buf.get(e.id).visits == 4
    assert buf.record_visit(e.id, 0.5) == "stale"  # stale 3 = patience
    assert buf.counters["retired_stale"] == 1 and len(buf) == 0
    with pytest.raises(KeyError):
        buf.record_visit(e.id, 0.5)


def test_size_cap_evicts_oldest():
    buf = make(max_size=2)
    ids = [buf.admit(f"q{i}", "x", 0.5, step=i).id for i in range(3)]
    assert [e.id for e in buf.entries()] == ids[1:]
    assert buf.counters["evicted"] == 1


def test_save_load_round_trip(tmp_path):
    buf = make(max_size=3)
    for i in range(4):
        buf.admit(f"q{i}", str(i), 0.5, step=i, meta={"snippet": f"tiny:{i}"})
    first = buf.entries()[0].id
    buf.record_visit(first, 0.6)
    path = tmp_path / "buffer.json"
    buf.save(path)
    assert not (tmp_path / "buffer.json.tmp").exists()
    json.loads(path.read_text())  # plain JSON

    again = make(max_size=3)
    again.load(path)
    assert again.state_dict() == buf.state_dict()
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    assert [e.id for e in again.sample(2, rng_a)] == [e.id for e in buf.sample(2, rng_b)]
    assert again.get(first).meta == {"snippet": "tiny:1"}
    assert again.get(first).reference_pass_rate == 0.6
    # ids keep counting after resume (and the full buffer evicts its oldest)
    assert again.admit("new", "n", 0.5, step=9).id == 4
    assert first not in again


def test_load_errors_name_the_file(tmp_path):
    buf = make()
    with pytest.raises(UserError, match="missing.json"):
        buf.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        buf.load(bad)
