"""`pasodoble sft build-data` end to end against a real local chat-completions endpoint.

The endpoint is ``tests.fakes.chat_server.ChatServer`` (http.server on 127.0.0.1, the OpenAI wire format)
with a deterministic scripted responder (not a model: it is instant and lets the test plant invalid
proposals and wrong answers whose rejection counts must show up in the data card).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pasodoble.cli import main
from pasodoble.extract import last_boxed
from pasodoble.parse import parse_proposal
from pasodoble.prompts import PROPOSER, SOLVER, user_message
from pasodoble.rewards import question_validity
from tests.fakes.chat_server import ChatServer

FAST = ["--grader-workers", "0", "--no-progress", "--backoff", "0.01"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _build(url: str, out: Path, *extra: str) -> int:
    argv = ["sft", "build-data", "--teacher", url, "--knowledge", "tiny", "--size", "12", "--out", str(out)]
    return main([*argv, "--concurrency", "4", "--solver-samples", "2", *FAST, *extra])


def test_build_data_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TEACHER_KEY", "sekret")
    # 1. an uninterrupted run
    with ChatServer(api_key="sekret") as server:
        assert _build(server.url, tmp_path / "full", "--api-key-env", "TEACHER_KEY") == 0
        full_requests = server.served
    out = tmp_path / "full"
    card = json.loads((out / "data_card.json").read_text())
    proposer, solver = _lines(out / "proposer.jsonl"), _lines(out / "solver.jsonl")
    assert card["files"] == {"proposer.jsonl": len(proposer), "solver.jsonl": len(solver)}
    assert card["proposer"]["kept"] == len(proposer) == 12
    assert card["solver"]["kept"] == len(solver) == 24  # two distinct right answers per problem
    rejected = card["proposer"]["rejected"]
    assert rejected.get("no_problem", 0) > 0 and rejected.get("check_disagree", 0) > 0
    assert card["proposer"]["requests"] == card["proposer"]["kept"] + sum(rejected.values())
    assert card["usage"]["teacher"]["total_tokens"] > 0
    assert card["usage"]["teacher"]["requests_with_usage"] == full_requests
    assert card["teacher"]["model"].startswith("scripted-teacher @ http://127.0.0.1:")
    assert "| proposer |" in (out / "data_card.md").read_text()
    for rec in proposer:
        user, assistant = rec["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert user["content"].startswith(user_message(PROPOSER, snippet="X").split("<snippet>")[0])
        q = parse_proposal(assistant["content"])
        assert question_validity(q).valid and q.answer == rec["meta"]["answer"]
    for rec in solver:
        user, assistant = rec["messages"]
        assert user["content"].startswith(user_message(SOLVER, problem="").rstrip())
        assert last_boxed(assistant["content"]) == rec["meta"]["answer"]

    # 2. the server dies after 9 answers: the command aborts with a one-line error ...
    part = tmp_path / "part"
    capsys.readouterr()
    with ChatServer(fail_after=9) as dying:
        assert _build(dying.url, part, "--max-retries", "1") == 1
        first = dict(dying.prompts)
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "HTTP 500" in err and "failed after 2 attempts" in err
    assert sum(first.values()) == 9
    assert len((part / "journal.jsonl").read_text().splitlines()) == 9  # every answer was kept
    # ... and the rerun completes without asking for any finished request again
    with ChatServer() as healthy:
        assert _build(healthy.url, part) == 0
        second = dict(healthy.prompts)
    assert not set(first) & set(second)
    assert max(second.values()) == 1
    assert sum(first.values()) + sum(second.values()) == full_requests
    assert (part / "proposer.jsonl").read_text() == (out / "proposer.jsonl").read_text()
    assert (part / "solver.jsonl").read_text() == (out / "solver.jsonl").read_text()
    assert json.loads((part / "data_card.json").read_text())["proposer"] == card["proposer"]


def test_build_data_with_a_separate_checker(tmp_path):
    with ChatServer(model="teacher") as teacher, ChatServer(model="checker") as checker:
        rc = main(
            ["sft", "build-data", "--teacher", teacher.url, "--checker", checker.url, "--size", "4"]
            + ["--out", str(tmp_path), "--solver-samples", "1", *FAST]
        )
        assert rc == 0
        # the checker saw only Solver prompts; the teacher also answered the Solver prompts of kept problems
        assert all("<snippet>" not in k for k in checker.prompts)
        card = json.loads((tmp_path / "data_card.json").read_text())
        assert card["solver"]["requests"] == 4 and card["solver"]["kept"] == 4
        assert card["checker"]["model"].startswith("checker @") and not card["checker"]["is_teacher"]
        assert set(card["usage"]) == {"teacher", "checker"}


def test_build_data_with_a_local_teacher(tmp_path, capsys):
    # the random tiny model writes no valid problem: everything is rejected, the card says why, and
    # fewer than --min-kept (default 1) kept is a one-line error naming the reasons
    rc = main(
        ["sft", "build-data", "--teacher", "tiny", "--size", "2", "--out", str(tmp_path), "--max-tokens", "6"]
        + ["--no-progress", "--grader-workers", "0"]
    )
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "pasodoble sft: error: kept 0 problems of 8 teacher answers, fewer than --min-kept 1"
    )
    card = json.loads((tmp_path / "data_card.json").read_text())
    assert card["proposer"]["requests"] == 8  # the default budget: 4 x size
    assert card["proposer"]["kept"] == 0 and sum(card["proposer"]["rejected"].values()) == 8
    assert card["usage"]["teacher"]["completion_tokens"] > 0
    assert (tmp_path / "proposer.jsonl").read_text() == ""


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_errors_are_one_line(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    assert _build(url, tmp_path / "a", "--teacher-model", "m", "--max-retries", "2") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{url}/chat/completions failed after 3 attempts" in err

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    assert _build(url, tmp_path / "b", "--api-key-env", "NO_SUCH_KEY_VAR") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "NO_SUCH_KEY_VAR" in err and "not set" in err

    with ChatServer(api_key="right") as server:
        monkeypatch.setenv("WRONG_KEY", "wrong")
        assert _build(server.url, tmp_path / "c", "--api-key-env", "WRONG_KEY") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "HTTP 401" in err

    bad = tmp_path / "bad.jsonl"
    ok = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    bad.write_text(ok + "\n" + ok + "\n{oops\n")
    rc = main(
        [
            "sft",
            "train",
            "--role",
            "solver",
            "--data",
            str(bad),
            "--model",
            "tiny",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{bad} line 3 is not valid JSON" in err


# --------------------------------------------------------------------------------------------------
# pasodoble sft train on the tiny model


def _synthetic(role: str, n: int, seed: int = 0) -> list[str]:
    """Chat-format lines of templated arithmetic examples in the role's format (RL prompts as user turns;
    the Proposer's is the no-knowledge prompt, the shortest, to keep the test fast)."""
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = rng.randint(1, 19), rng.randint(1, 19)
        if role == "proposer":
            user = user_message(PROPOSER, snippet=None)
            answer = (
                f"<think>\nI ask for the sum of {a} and {b}.\n</think>\n<problem>What is {a} + {b}?</problem>\n"
                f"{a} + {b} = {a + b}, so the answer is \\boxed{{{a + b}}}."
            )
        else:
            user = user_message(SOLVER, problem=f"What is {a} + {b}?")
            answer = (
                f"<think>\nAdd {a} and {b}.\n</think>\n{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."
            )
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        lines.append(json.dumps({"messages": messages}) + "\n")
    return lines


def _format_rate(model_dir: Path, role: str, prompts: int = 16, n: int = 2) -> float:
    """Share of sampled outputs (temperature 0.6) in the role's format."""
    from transformers import AutoModelForCausalLM

    from pasodoble.models import load_tokenizer
    from pasodoble.prompts import build_prompt
    from pasodoble.rollout.base import SamplingParams
    from pasodoble.rollout.hf import HFBackend
    from pasodoble.types import ParseFailure

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = load_tokenizer(str(model_dir))
    if role == "proposer":
        texts = [build_prompt(PROPOSER, tok, snippet=None)] * prompts
    else:
        texts = [
            build_prompt(SOLVER, tok, problem=f"What is {a} + {2 * a % 17 + 1}?") for a in range(prompts)
        ]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    groups = HFBackend(model, tok).generate(
        ids, SamplingParams(temperature=0.6, max_new_tokens=96, n=n, seed=1)
    )
    outputs = [c.text for g in groups for c in g]
    if role == "proposer":
        ok = [not isinstance(parse_proposal(t), ParseFailure) and "</think>" in t for t in outputs]
    else:
        ok = [last_boxed(t) is not None for t in outputs]
    return sum(ok) / len(ok)


def _train(data: Path, out: Path, *extra: str) -> dict:
    argv = ["sft", "train", "--data", str(data), "--model", "tiny", "--out", str(out), "--no-progress"]
    assert main([*argv, *extra]) == 0
    return json.loads((out / "sft_summary.json").read_text())


SETTINGS = {
    # role: (examples, epochs, lr, batch size); tuned to pass with margin (format rate 1.0 when tuned)
    "solver": ("200", "4", "3e-3", "12"),
    "proposer": ("200", "4", "3e-3", "8"),
}


@pytest.mark.parametrize("role", ["solver", "proposer"])
def test_sft_lowers_heldout_loss_and_teaches_the_format(role, tmp_path, one_thread):
    examples, epochs, lr, batch = SETTINGS[role]
    data = tmp_path / f"{role}.jsonl"
    data.write_text("".join(_synthetic(role, int(examples))))
    out = tmp_path / "model"
    summary = _train(
        data,
        out,
        "--role",
        role,
        "--epochs",
        epochs,
        "--lr",
        lr,
        "--batch-size",
        batch,
        "--micro-batch-size",
        batch,
        "--eval-fraction",
        "0.1",
        "--max-length",
        "512",
        "--warmup-ratio",
        "0.1",
    )
    print(role, json.dumps(summary))
    assert summary["eval_examples"] == 20 and summary["train_examples"] == 180
    assert summary["eval_loss_after"] < 0.25 * summary["eval_loss_before"]
    rate = _format_rate(out, role)
    print(f"{role} format rate {rate:.3f}")
    assert rate >= 0.9


def test_sft_resume_continues_bit_for_bit(tmp_path, one_thread):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    data = tmp_path / "solver.jsonl"
    data.write_text("".join(_synthetic("solver", 40)))
    args = [
        "--role",
        "solver",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--batch-size",
        "6",
        "--micro-batch-size",
        "3",
    ]
    args += ["--checkpoint-every", "2", "--eval-fraction", "0.1", "--packing", "--max-length", "256"]
    full = _train(data, tmp_path / "full", *args)
    assert full["steps"] == 12  # 36 training examples, 6 per step, 2 epochs
    # a run stopped after step 10: keep only its step-10 checkpoint, then resume it
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full" / "checkpoints", part / "checkpoints")
    shutil.rmtree(part / "checkpoints" / "step_00000012")
    assert [p.name for p in (part / "checkpoints").iterdir()] == ["step_00000010"]
    resumed = _train(data, part, *args, "--resume")
    assert resumed["steps"] == 12 and resumed["eval_loss_before"] == full["eval_loss_before"]
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "full").state_dict()
    b = AutoModelForCausalLM.from_pretrained(part).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a second run into a finished directory must say so instead of overwriting it
    assert main(["sft", "train", "--data", str(data), "--model", "tiny", "--out", str(part), *args]) == 1


def test_on_eval_hook_records_its_metrics_at_every_evaluation(tmp_path, one_thread):
    # The toy build measures the cold-start Solver's accuracy through this hook (its plateau curve).
    from pasodoble.sft.train import SFTConfig, train_sft

    data = tmp_path / "solver.jsonl"
    data.write_text("".join(_synthetic("solver", 40)))
    calls = []

    def on_eval(model, tokenizer, step):
        calls.append(step)
        return {"probe": float(step)}

    cfg = SFTConfig(
        data=str(data),
        model="tiny",
        out=str(tmp_path / "out"),
        epochs=1,
        batch_size=8,
        micro_batch_size=8,
        eval_every=2,
        checkpoint_every=0,
        progress=False,
        eval_fraction=0.1,
    )
    summary = train_sft(cfg, on_eval=on_eval)
    assert summary["steps"] == 5
    assert calls == [0, 2, 4, 5]
    history = _lines(tmp_path / "out" / "metrics.jsonl")
    assert [h["step"] for h in history if "probe" in h] == [0, 2, 4, 5]
    assert all(h["probe"] == h["step"] for h in history if "probe" in h)
