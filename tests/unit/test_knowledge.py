"""Knowledge base: sources, errors, token capping, reproducible sampling and resume position."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from pasodoble.config import KnowledgeConfig
from pasodoble.errors import UserError
from pasodoble.knowledge import KnowledgeBase, cap_tokens, tiny_knowledge_path

ROOT = Path(__file__).resolve().parents[2]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer (every word its own id, unknown -> [UNK]); decode joins by spaces."""
    words = "a b c d e f g h one two three four five six seven eight".split()
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


TOK = word_tokenizer()


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
    return path


def draw(kb: KnowledgeBase, n: int) -> list[str]:
    return [kb.sample(TOK).id for _ in range(n)]


# --------------------------------------------------------------------------------------------------
# Sources


def test_tiny_asset_is_up_to_date_and_loads():
    script = ROOT / "scripts" / "make_tiny_knowledge.py"
    out = subprocess.run([sys.executable, str(script), "--check", "--out", str(tiny_knowledge_path())])
    assert out.returncode == 0
    kb = KnowledgeBase(KnowledgeConfig(source="tiny"))
    assert len(kb) == 60
    assert all(kb.sample(TOK).id.startswith("tiny:") for _ in range(3))


def test_jsonl_ids_and_custom_field(tmp_path):
    path = tmp_path / "k.jsonl"
    path.write_text('{"body": "one two"}\n\n{"body": "  "}\n{"body": "three"}\n')
    kb = KnowledgeBase(KnowledgeConfig(source=str(path), text_field="body"))
    assert len(kb) == 2  # blank line and blank text skipped
    assert sorted(draw(kb, 2)) == ["k.jsonl:1", "k.jsonl:4"]


def test_txt_paragraphs(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("one two\nthree\n\n\nfour five\n\nsix\n")
    kb = KnowledgeBase(KnowledgeConfig(source=str(path)))
    snippets = {s.id: s.text for s in (kb.sample(TOK) for _ in range(3))}
    assert snippets == {"notes.txt:1": "one two\nthree", "notes.txt:5": "four five", "notes.txt:7": "six"}


def test_parquet_and_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    pq.write_table(pa.table({"text": ["a b", "c", None], "n": [1, 2, 3]}), tmp_path / "sub" / "p.parquet")
    write_jsonl(tmp_path / "j.jsonl", ["d e"])
    (tmp_path / "ignored.csv").write_text("x\n")
    kb = KnowledgeBase(KnowledgeConfig(source=str(tmp_path)))
    assert sorted(draw(kb, 3)) == ["j.jsonl:1", "sub/p.parquet:0", "sub/p.parquet:1"]


# --------------------------------------------------------------------------------------------------
# Errors


def test_missing_field_names_field_and_file(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", ["a"], field="content")
    with pytest.raises(UserError, match=r"k\.jsonl line 1 has no field 'text'.*content"):
        KnowledgeBase(KnowledgeConfig(source=str(path)))
    pq.write_table(pa.table({"content": ["a"]}), tmp_path / "p.parquet")
    with pytest.raises(UserError, match=r"p\.parquet has no field 'text'"):
        KnowledgeBase(KnowledgeConfig(source=str(tmp_path / "p.parquet")))


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.jsonl", "", "empty"),
        ("blank.txt", "\n\n  \n", "empty"),
        ("bad.jsonl", '{"text": "a"}\n{oops\n', r"bad\.jsonl line 2 is not valid JSON"),
        ("list.jsonl", "[1, 2]\n", "must be a JSON object"),
        ("num.jsonl", '{"text": 3}\n', "must be a string"),
        ("fake.parquet", "not parquet", r"cannot read knowledge file .*fake\.parquet"),
        ("k.csv", "text\na\n", "unsupported type"),
    ],
)
def test_bad_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=match):
        KnowledgeBase(KnowledgeConfig(source=str(tmp_path / name)))


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(UserError, match="not found"):
        KnowledgeBase(KnowledgeConfig(source=str(tmp_path / "nope.jsonl")))
    with pytest.raises(UserError, match="holds no"):
        KnowledgeBase(KnowledgeConfig(source=str(tmp_path)))


def test_unknown_dataset_name_is_user_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match="org/missing-corpus"):
        KnowledgeBase(KnowledgeConfig(source="org/missing-corpus"))


# --------------------------------------------------------------------------------------------------
# Token capping and no-knowledge mode


def test_snippets_capped_by_tokens(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", ["one two three four five six seven", "a b"])
    kb = KnowledgeBase(KnowledgeConfig(source=str(path), max_snippet_tokens=3))
    texts = sorted(kb.sample(TOK).text for _ in range(2))
    assert texts == ["a b", "one two three"]
    assert cap_tokens("a  b", TOK, 5) == "a  b"  # short text is returned unchanged


def test_disabled_returns_empty_snippet():
    kb = KnowledgeBase(KnowledgeConfig(source="does/not-matter", enabled=False))
    snippet = kb.sample(TOK)
    assert snippet.text == "" and snippet.id == "none"
    assert kb.state_dict()["kind"] == "disabled"


# --------------------------------------------------------------------------------------------------
# Reproducibility and resume


def test_same_seed_same_order_and_epochs_reshuffle(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", [f"s{i}" for i in range(5)])
    cfg = KnowledgeConfig(source=str(path))
    a = draw(KnowledgeBase(cfg, seed=3), 10)
    assert a == draw(KnowledgeBase(cfg, seed=3), 10)
    assert a != draw(KnowledgeBase(cfg, seed=4), 10)
    assert sorted(a[:5]) == sorted(a[5:]) == [f"k.jsonl:{i}" for i in range(1, 6)]  # each epoch visits all
    assert a[:5] != a[5:]  # a new permutation per epoch (seed 3: checked to differ)


def test_resume_position_local(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", [f"s{i}" for i in range(5)])
    cfg = KnowledgeConfig(source=str(path))
    kb = KnowledgeBase(cfg, seed=7)
    draw(kb, 7)  # into the second epoch
    state = json.loads(json.dumps(kb.state_dict()))
    assert (state["epoch"], state["position"]) == (1, 2)
    expected = draw(kb, 6)
    resumed = KnowledgeBase(cfg, seed=0)  # the checkpoint's seed wins
    resumed.load_state_dict(state)
    assert draw(resumed, 6) == expected


def test_resume_rejects_other_knowledge_base(tmp_path):
    a = KnowledgeBase(KnowledgeConfig(source=str(write_jsonl(tmp_path / "a.jsonl", ["x", "y"]))))
    b = KnowledgeBase(KnowledgeConfig(source=str(write_jsonl(tmp_path / "a2.jsonl", ["x"]))))
    with pytest.raises(UserError, match="source"):
        b.load_state_dict(a.state_dict())


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """Route datasets.load_dataset(name, ...) to a local json file: the real streaming code path, no hub."""
    import datasets

    real = datasets.load_dataset
    path = write_jsonl(tmp_path / "stream.jsonl", [f"doc {i}" for i in range(7)] + ["  "])
    calls = []

    def load(source, name=None, split=None, data_files=None, streaming=False):
        assert source == "org/corpus" and streaming
        calls.append({"name": name, "split": split, "data_files": data_files})
        return real("json", data_files=str(path), split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", load)
    return calls


def test_streaming_sampling_and_resume(local_hub):
    cfg = KnowledgeConfig(source="org/corpus", shuffle_buffer=4)
    kb = KnowledgeBase(cfg, seed=1)
    first = [kb.sample(TOK) for _ in range(7)]
    assert sorted(s.text for s in first) == [f"doc {i}" for i in range(7)]
    # ids: stream position in epoch 0 (the blank record's position is skipped)
    assert len({s.id for s in first}) == 7 and all(s.id.startswith("org/corpus:train#0.") for s in first)
    again = KnowledgeBase(cfg, seed=1)
    assert [again.sample(TOK).text for _ in range(7)] == [s.text for s in first]

    kb = KnowledgeBase(cfg, seed=1)
    [kb.sample(TOK) for _ in range(10)]  # wraps into epoch 1 (the blank record is skipped)
    state = kb.state_dict()
    assert state["kind"] == "stream" and state["epoch"] == 1
    expected = [kb.sample(TOK).text for _ in range(5)]
    resumed = KnowledgeBase(cfg, seed=1)
    resumed.load_state_dict(state)
    assert [resumed.sample(TOK).text for _ in range(5)] == expected


def test_streaming_missing_field(local_hub):
    kb = KnowledgeBase(KnowledgeConfig(source="org/corpus", text_field="body"))
    with pytest.raises(UserError, match="no field 'body'"):
        kb.sample(TOK)


def test_streaming_passes_config_name_split_and_data_files(local_hub):
    cfg = KnowledgeConfig(source="org/corpus", config_name="en", split="dev", data_files=["data/a-*.parquet"])
    KnowledgeBase(cfg).sample(TOK)
    assert local_hub[-1] == {"name": "en", "split": "dev", "data_files": ["data/a-*.parquet"]}
    KnowledgeBase(KnowledgeConfig(source="org/corpus"))
    assert local_hub[-1] == {"name": None, "split": "train", "data_files": None}


# --------------------------------------------------------------------------------------------------
# Local files larger than knowledge.max_memory_mb: streamed through datasets


def test_large_local_files_are_streamed_and_visit_every_snippet(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", [f"s{i}" for i in range(20)])
    cfg = KnowledgeConfig(source=str(path), max_memory_mb=0, shuffle_buffer=4)  # 0: always stream
    kb = KnowledgeBase(cfg, seed=1)
    assert kb.kind == "local_stream" and len(kb) == 0 and kb.state_dict()["bytes"] == path.stat().st_size
    first, second = draw(kb, 20), draw(kb, 20)
    assert sorted(first) == sorted(second) == sorted(f"k.jsonl:{i}" for i in range(1, 21))
    assert first != second  # a new buffer mix per epoch
    assert first == draw(KnowledgeBase(cfg, seed=1), 20)
    assert first != draw(KnowledgeBase(cfg, seed=2), 20)
    assert KnowledgeBase(KnowledgeConfig(source=str(path)), seed=1).kind == "local"  # 340 bytes < 256 MB


def test_streamed_directory_keeps_file_and_line_ids(tmp_path):
    (tmp_path / "sub").mkdir()
    pq.write_table(pa.table({"text": ["a b", "c", None], "n": [1, 2, 3]}), tmp_path / "sub" / "p.parquet")
    write_jsonl(tmp_path / "j.jsonl", ["d e"])
    (tmp_path / "notes.txt").write_text("one two\nthree\n\n\nfour five\n")
    snippets = {}
    kb = KnowledgeBase(KnowledgeConfig(source=str(tmp_path), max_memory_mb=0, shuffle_buffer=2), seed=0)
    for _ in range(5):
        s = kb.sample(TOK)
        snippets[s.id] = s.text
    assert snippets == {
        "j.jsonl:1": "d e",
        "notes.txt:1": "one two\nthree",
        "notes.txt:5": "four five",
        "sub/p.parquet:0": "a b",
        "sub/p.parquet:1": "c",
    }


def test_streamed_file_errors_name_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", ["a"], field="content")
    with pytest.raises(UserError, match=r"k\.jsonl line 1 has no field 'text'"):  # at construction
        KnowledgeBase(KnowledgeConfig(source=str(path), max_memory_mb=0))
    path.write_text('{"text": "a"}\n{"text": "b"}\n{oops\n')
    kb = KnowledgeBase(KnowledgeConfig(source=str(path), max_memory_mb=0, shuffle_buffer=0))
    assert draw(kb, 2) == ["k.jsonl:1", "k.jsonl:2"]  # shuffle_buffer 0: file order
    with pytest.raises(UserError, match=r"k\.jsonl line 3 is not valid JSON"):  # met while streaming
        kb.sample(TOK)


def test_streamed_resume_continues_at_the_same_snippet(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", [f"s{i}" for i in range(9)])
    cfg = KnowledgeConfig(source=str(path), max_memory_mb=0, shuffle_buffer=3)
    kb = KnowledgeBase(cfg, seed=5)
    draw(kb, 11)  # into the second epoch
    state = json.loads(json.dumps(kb.state_dict()))
    assert (state["kind"], state["epoch"], state["position"]) == ("local_stream", 1, 2)
    expected = draw(kb, 12)
    resumed = KnowledgeBase(cfg, seed=0)  # the checkpoint's seed wins
    resumed.load_state_dict(state)
    assert draw(resumed, 12) == expected
    path.write_text(path.read_text() + json.dumps({"text": "s9"}) + "\n")  # the corpus changed
    with pytest.raises(UserError, match="bytes"):
        KnowledgeBase(cfg).load_state_dict(state)
    in_memory = KnowledgeBase(KnowledgeConfig(source=str(path)))
    with pytest.raises(UserError, match="kind 'local_stream'"):
        in_memory.load_state_dict(state)


MEMORY_PROBE = """
import json, sys
from pathlib import Path
from pasodoble.config import KnowledgeConfig
from pasodoble.knowledge import KnowledgeBase

def peak_rss_kb() -> int:
    # VmHWM: this process's peak resident memory (getrusage's ru_maxrss would start at the parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

class NoCap:  # a tokenizer that never cuts: every snippet is read whole
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [0]}

def read_epoch(source, max_memory_mb, records):
    before = peak_rss_kb()
    kb = KnowledgeBase(KnowledgeConfig(source=source, max_memory_mb=max_memory_mb, shuffle_buffer=64))
    ids = {kb.sample(NoCap()).id for _ in range(records)}
    return {"kind": kb.kind, "distinct": len(ids), "growth_mb": (peak_rss_kb() - before) / 1024}

jsonl, parquet, cap_mb, records = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for warm_up in sys.argv[5:]:  # imports and first use of the readers and the streaming machinery
    read_epoch(warm_up, 0, 30)
streamed = read_epoch(jsonl, cap_mb, records)
streamed_parquet = read_epoch(parquet, cap_mb, records)
held = read_epoch(jsonl, 1000, records)  # the control, last: held in memory
print(json.dumps({"streamed": streamed, "streamed_parquet": streamed_parquet, "held": held}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads peak memory from /proc (Linux)")
def test_a_file_ten_times_the_memory_cap_is_read_with_bounded_memory(tmp_path):
    cap_mb, records = 4, 4200
    texts = [f"record {i} " + "lorem ipsum dolor sit amet " * 370 for i in range(records)]
    big = write_jsonl(tmp_path / "big.jsonl", texts)
    size_mb = big.stat().st_size / 2**20
    # parquet memory follows its row groups (read one at a time): 50 rows here, about 0.5 MB of text
    big_parquet = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": texts}), big_parquet, row_group_size=50, compression="none")
    assert size_mb >= 10 * cap_mb and big_parquet.stat().st_size >= 10 * cap_mb * 2**20
    small = write_jsonl(tmp_path / "small.jsonl", texts[:50])
    pq.write_table(pa.table({"text": texts[:50]}), tmp_path / "small.parquet", row_group_size=50)
    probe = [MEMORY_PROBE, str(big), str(big_parquet), str(cap_mb), str(records), str(small)]
    out = subprocess.run(
        [sys.executable, "-c", *probe, str(tmp_path / "small.parquet")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.splitlines()[-1])
    held = result["held"]
    # a whole epoch streamed: every record read once, the peak memory growth stays under the cap
    for streamed in (result["streamed"], result["streamed_parquet"]):
        assert streamed["kind"] == "local_stream" and streamed["distinct"] == records
        assert streamed["growth_mb"] < cap_mb, result
    # the control: the same file held in memory grows the process by about its size
    assert held["kind"] == "local" and held["distinct"] == records
    assert held["growth_mb"] > 0.8 * size_mb, result


def test_built_in_toy_knowledge_is_the_committed_worked_problems():
    kb = KnowledgeBase(KnowledgeConfig(source="toy"), seed=0)
    assert len(kb) == 2000
    texts = [s.text for s in kb._snippets]
    assert all(t.startswith("What is ") and "The answer is " in t for t in texts)
    # the committed file is what scripts/make_toy_knowledge.py writes (deterministic generator)
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_toy_knowledge.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
