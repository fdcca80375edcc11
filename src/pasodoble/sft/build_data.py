"""Teacher-built cold-start data for both roles (``pasodoble sft build-data``; method.md, Cold start).

1. **Proposer prompts.** Snippets are sampled from the knowledge base (seeded, token-capped like RL)
   and wrapped in the RL Proposer prompt (``prompts.user_message``). The teacher answers each once.
2. **Proposer filter.** An answer is kept when ``parse_proposal`` finds a problem and a boxed answer,
   ``question_validity`` passes (no leak, no boxed problem, ...), the problem is not a duplicate of
   an earlier kept one, and an independent check agrees: the checker (``--checker``, or the teacher
   itself prompted as Solver) answers the problem ``check_samples`` times with the RL Solver prompt
   and at least half of its answers are equivalent to the proposed answer (``Grader``).
3. **Rounds.** Step 1-2 repeat on fresh snippets until ``size`` problems are kept or ``max_requests``
   Proposer requests were sent (the first round sends ``size``, later ones twice what is missing).
4. **Solver examples.** For each kept problem, ``solver_samples`` teacher answers to the RL Solver
   prompt; those whose final answer matches the proposed answer are kept (duplicates dropped). When
   the teacher is its own checker, its check answers are reused (one request serves both).

Every request has a deterministic id (kind, index and a hash of its messages and sampling settings)
and goes through a ``teacher.Journal`` (``OUT/journal.jsonl``), so rerunning the same command after a
crash continues where it stopped without resending a finished request.

Output in ``OUT``: ``proposer.jsonl`` and ``solver.jsonl`` (``{"messages": [user, assistant],
"meta": {...}}`` per line, the user turn being exactly the RL prompt's), ``data_card.json`` and
``data_card.md`` (counts kept and rejected by reason, teacher, checker, settings, token usage).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pasodoble.errors import UserError
from pasodoble.sft.teacher import Journal, Teacher, TeacherReply, TeacherRequest, build_teacher, run_requests

CHECK_DISAGREE = "check_disagree"
DUPLICATE = "duplicate_problem"
EMPTY_REPLY = "empty_reply"


@dataclass
class BuildDataConfig:
    """Settings of ``pasodoble sft build-data`` (command-line options of the same names)."""

    teacher: str = ""
    knowledge: str = "tiny"
    size: int = 100
    out: str = ""
    teacher_model: str | None = None
    api_key_env: str | None = None
    checker: str | None = None
    checker_model: str | None = None
    checker_api_key_env: str | None = None
    concurrency: int = 8
    timeout: float = 600.0
    max_retries: int = 6
    backoff: float = 1.0
    temperature: float = 0.6
    max_tokens: int = 4096
    check_samples: int = 1
    solver_samples: int = 2
    max_requests: int | None = None
    seed: int = 0
    text_field: str = "text"
    max_snippet_tokens: int = 512
    tokenizer: str | None = None
    leak_check: str = "token"
    generation_batch_size: int = 16
    dtype: str = "float32"
    grader_workers: int = 2
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class _ApproxTokenizer:
    """Caps snippets by characters (4 per token) when no tokenizer is at hand (endpoint teachers)."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[str]]:
        return {"input_ids": [text[i : i + 4] for i in range(0, len(text), 4)]}

    def decode(self, ids: list[str], skip_special_tokens: bool = True) -> str:
        return "".join(ids)


def request_id(kind: str, index: int, messages: list[dict[str, str]], settings: dict[str, Any]) -> str:
    """``kind-000042-<16 hex>``: stable across runs for the same messages and sampling settings."""
    digest = hashlib.sha256(json.dumps([kind, messages, settings], sort_keys=True).encode()).hexdigest()[:16]
    return f"{kind}-{index:06d}-{digest}"


def _request(kind: str, index: int, content: str, n: int, cfg: BuildDataConfig, model: str) -> TeacherRequest:
    messages = [{"role": "user", "content": content}]
    settings = {"n": n, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "model": model}
    rid = request_id(kind, index, messages, settings)
    return TeacherRequest(
        id=rid,
        messages=(("user", content),),
        n=n,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        seed=int(rid.rsplit("-", 1)[1][:8], 16),
    )


def _validate(cfg: BuildDataConfig) -> None:
    checks = [
        (
            bool(cfg.teacher),
            "--teacher is required (a model name/directory or an http(s) chat-completions URL)",
        ),
        (bool(cfg.out), "--out is required"),
        (cfg.size >= 1, f"--size must be >= 1; got {cfg.size}"),
        (cfg.check_samples >= 1, f"--check-samples must be >= 1; got {cfg.check_samples}"),
        (cfg.solver_samples >= 1, f"--solver-samples must be >= 1; got {cfg.solver_samples}"),
        (cfg.temperature > 0, f"--temperature must be > 0; got {cfg.temperature}"),
        (cfg.max_tokens >= 1, f"--max-tokens must be >= 1; got {cfg.max_tokens}"),
        (
            cfg.max_requests is None or cfg.max_requests >= 1,
            f"--max-requests must be >= 1; got {cfg.max_requests}",
        ),
        (
            cfg.leak_check in ("token", "substring", "off"),
            f"--leak-check must be token, substring or off; got {cfg.leak_check!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _chat_line(prompt: str, answer: str, meta: dict[str, Any]) -> str:
    record = {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "meta": meta,
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def _add_usage(total: dict[str, int], reply: TeacherReply) -> None:
    if reply.usage:
        total["requests_with_usage"] = total.get("requests_with_usage", 0) + 1
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if key in reply.usage:
                total[key] = total.get(key, 0) + int(reply.usage[key])


def build_data(cfg: BuildDataConfig) -> dict[str, Any]:
    """Run the pipeline of the module docstring; return the data card (also written to ``OUT``)."""
    from pasodoble.config import GraderConfig, KnowledgeConfig
    from pasodoble.knowledge import KnowledgeBase
    from pasodoble.parse import parse_proposal
    from pasodoble.prompts import PROPOSER, SOLVER, user_message
    from pasodoble.rewards import question_validity
    from pasodoble.sft.teacher import is_url
    from pasodoble.verify import Grader

    _validate(cfg)
    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = cfg.max_requests if cfg.max_requests is not None else 4 * cfg.size

    teacher_kw = dict(
        concurrency=cfg.concurrency,
        timeout_s=cfg.timeout,
        max_retries=cfg.max_retries,
        backoff_s=cfg.backoff,
        seed=cfg.seed,
        generation_batch_size=cfg.generation_batch_size,
        dtype=cfg.dtype,
    )
    teacher: Teacher = build_teacher(
        cfg.teacher, model=cfg.teacher_model, api_key_env=cfg.api_key_env, **teacher_kw
    )
    checker: Teacher = teacher
    if cfg.checker is not None:
        checker = build_teacher(
            cfg.checker, model=cfg.checker_model, api_key_env=cfg.checker_api_key_env, **teacher_kw
        )
    self_check = checker is teacher

    if cfg.tokenizer is not None:
        from pasodoble.models import load_tokenizer

        cap_tokenizer: Any = load_tokenizer(cfg.tokenizer)
    elif not is_url(cfg.teacher):
        cap_tokenizer = teacher.tokenizer  # type: ignore[attr-defined]
    else:
        cap_tokenizer = _ApproxTokenizer()
    kb = KnowledgeBase(
        KnowledgeConfig(
            source=cfg.knowledge, text_field=cfg.text_field, max_snippet_tokens=cfg.max_snippet_tokens
        ),
        seed=cfg.seed,
    )

    journal = Journal(out / "journal.jsonl")
    usage: dict[str, dict[str, int]] = {"teacher": {}, "checker": {}}
    counts = {
        "proposer": {"requests": 0, "kept": 0, "rejected": Counter()},
        "solver": {"requests": 0, "responses": 0, "kept": 0, "rejected": Counter()},
    }
    kept: list[dict[str, Any]] = []
    seen_problems: set[str] = set()
    n_check = max(cfg.check_samples, cfg.solver_samples) if self_check else cfg.check_samples
    need_agree = math.ceil(cfg.check_samples / 2)
    issued = 0
    try:
        with Grader(GraderConfig(workers=cfg.grader_workers)) as grader:
            while len(kept) < cfg.size and issued < budget:
                missing = cfg.size - len(kept)
                k = min(budget - issued, missing if issued == 0 else 2 * missing)
                requests, snippets = [], []
                for i in range(issued, issued + k):
                    snippet = kb.sample(cap_tokenizer)
                    snippets.append(snippet)
                    requests.append(
                        _request(
                            "proposer", i, user_message(PROPOSER, snippet=snippet), 1, cfg, teacher.model
                        )
                    )
                issued += k
                counts["proposer"]["requests"] += k
                replies = run_requests(teacher, journal, requests, desc="proposer", progress=cfg.progress)
                candidates = []
                for req, snippet in zip(requests, snippets, strict=True):
                    reply = replies[req.id]
                    _add_usage(usage["teacher"], reply)
                    text = reply.texts[0] if reply.texts else ""
                    if not text.strip():
                        counts["proposer"]["rejected"][EMPTY_REPLY] += 1
                        continue
                    question = parse_proposal(text)
                    valid, reason = question_validity(question, leak_check=cfg.leak_check)
                    if not valid:
                        counts["proposer"]["rejected"][reason] += 1
                        continue
                    if question.problem in seen_problems:  # type: ignore[union-attr]
                        counts["proposer"]["rejected"][DUPLICATE] += 1
                        continue
                    seen_problems.add(question.problem)  # type: ignore[union-attr]
                    index = int(req.id.split("-")[1])
                    candidates.append(
                        {
                            "index": index,
                            "request": req,
                            "snippet": snippet,
                            "text": text,
                            "question": question,
                        }
                    )
                check_requests = [
                    _request(
                        "check" if not self_check else "solver",
                        c["index"],
                        user_message(SOLVER, problem=c["question"].problem),
                        n_check,
                        cfg,
                        checker.model,
                    )
                    for c in candidates
                ]
                check_replies = run_requests(
                    checker, journal, check_requests, desc="check", progress=cfg.progress
                )
                texts, golds = [], []
                for c, req in zip(candidates, check_requests, strict=True):
                    reply = check_replies[req.id]
                    _add_usage(usage["teacher" if self_check else "checker"], reply)
                    c["check_texts"] = list(reply.texts)
                    texts += c["check_texts"]
                    golds += [c["question"].answer] * len(reply.texts)
                verdicts = grader.grade_batch(texts, golds) if texts else []
                at = 0
                for c in candidates:
                    mine = verdicts[at : at + len(c["check_texts"])]
                    at += len(c["check_texts"])
                    c["check_correct"] = [v.correct for v in mine]
                    agree = sum(c["check_correct"][: cfg.check_samples])
                    if agree >= need_agree and len(kept) < cfg.size:
                        kept.append(c)
                    elif agree < need_agree:
                        counts["proposer"]["rejected"][CHECK_DISAGREE] += 1
                    else:
                        counts["proposer"]["rejected"]["over_size"] += 1
            counts["proposer"]["kept"] = len(kept)

            # Solver examples
            if self_check:
                for c in kept:
                    c["solver_texts"] = c["check_texts"][: cfg.solver_samples]
                    c["solver_correct"] = c["check_correct"][: cfg.solver_samples]
                counts["solver"]["requests"] = 0
            else:
                solver_requests = [
                    _request(
                        "solver",
                        c["index"],
                        user_message(SOLVER, problem=c["question"].problem),
                        cfg.solver_samples,
                        cfg,
                        teacher.model,
                    )
                    for c in kept
                ]
                counts["solver"]["requests"] = len(solver_requests)
                solver_replies = run_requests(
                    teacher, journal, solver_requests, desc="solver", progress=cfg.progress
                )
                texts, golds = [], []
                for c, req in zip(kept, solver_requests, strict=True):
                    reply = solver_replies[req.id]
                    _add_usage(usage["teacher"], reply)
                    c["solver_texts"] = list(reply.texts)
                    texts += c["solver_texts"]
                    golds += [c["question"].answer] * len(reply.texts)
                verdicts = grader.grade_batch(texts, golds) if texts else []
                at = 0
                for c in kept:
                    c["solver_correct"] = [v.correct for v in verdicts[at : at + len(c["solver_texts"])]]
                    at += len(c["solver_texts"])
    finally:
        journal.close()
        teacher.close()
        if not self_check:
            checker.close()

    proposer_lines, solver_lines = [], []
    for c in kept:
        q = c["question"]
        meta = {"request_id": c["request"].id, "snippet_id": c["snippet"].id, "answer": q.answer}
        proposer_lines.append(_chat_line(c["request"].messages[0][1], c["text"], meta))
        solver_prompt = user_message(SOLVER, problem=q.problem)
        seen_texts: set[str] = set()
        for text, ok in zip(c["solver_texts"], c["solver_correct"], strict=True):
            counts["solver"]["responses"] += 1
            if not ok:
                counts["solver"]["rejected"]["mismatch" if text.strip() else EMPTY_REPLY] += 1
            elif text in seen_texts:
                counts["solver"]["rejected"]["duplicate_response"] += 1
            else:
                seen_texts.add(text)
                solver_lines.append(_chat_line(solver_prompt, text, meta))
    counts["solver"]["kept"] = len(solver_lines)
    (out / "proposer.jsonl").write_text("".join(proposer_lines), encoding="utf-8")
    (out / "solver.jsonl").write_text("".join(solver_lines), encoding="utf-8")

    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress", "extra")}
    card = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "teacher": {"spec": cfg.teacher, "model": teacher.name},
        "checker": {"spec": cfg.checker or cfg.teacher, "model": checker.name, "is_teacher": self_check},
        "knowledge": cfg.knowledge,
        "settings": settings,
        "files": {"proposer.jsonl": len(proposer_lines), "solver.jsonl": len(solver_lines)},
        "proposer": {**counts["proposer"], "rejected": dict(sorted(counts["proposer"]["rejected"].items()))},
        "solver": {**counts["solver"], "rejected": dict(sorted(counts["solver"]["rejected"].items()))},
        "usage": {k: v for k, v in usage.items() if v},
        "journal_entries": len(journal),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / "data_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / "data_card.md").write_text(data_card_markdown(card), encoding="utf-8")
    return card


def data_card_markdown(card: dict[str, Any]) -> str:
    """The human-readable data card."""
    lines = [
        "# Cold-start SFT data card",
        "",
        f"- created: {card['created']}",
        f"- teacher: `{card['teacher']['model']}`",
        f"- checker: `{card['checker']['model']}`"
        + (" (the teacher as Solver)" if card["checker"]["is_teacher"] else ""),
        f"- knowledge: `{card['knowledge']}`",
        "",
        "| role | requests | kept | rejected |",
        "| --- | ---: | ---: | --- |",
    ]
    for role in ("proposer", "solver"):
        c = card[role]
        rejected = ", ".join(f"{k}: {v}" for k, v in c["rejected"].items()) or "none"
        lines.append(f"| {role} | {c['requests']} | {c['kept']} | {rejected} |")
    lines += [
        "",
        "Solver requests are 0 when the teacher is its own checker (its check answers are reused).",
        "",
    ]
    if card["usage"]:
        lines += [
            "## Token usage (as reported by the endpoint)",
            "",
            "| model | prompt | completion | total |",
            "| --- | ---: | ---: | ---: |",
        ]
        for who, u in card["usage"].items():
            lines.append(
                f"| {who} | {u.get('prompt_tokens', 0)} | {u.get('completion_tokens', 0)} | {u.get('total_tokens', 0)} |"
            )
        lines.append("")
    lines += ["## Settings", "", "```json", json.dumps(card["settings"], indent=2), "```", ""]
    return "\n".join(lines)
