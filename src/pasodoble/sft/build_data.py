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

**Prompts and sampling.** The prompts are the built-in ones unless ``--config`` names a training config
(or a run directory): then its ``proposer.prompt`` / ``solver.prompt``, ``rollout.open_thinking``, each
role's temperature and generation cap, its ``knowledge`` section and ``rewards.leak_check`` are used, so
a teacher sees exactly what the RL rollouts will show the student. ``--proposer-prompt-file`` /
``--solver-prompt-file`` give templates from files (over the config's); explicit options such as
``--temperature`` or ``--knowledge`` win over the config.

**Shortfall.** The data card counts every dropped example by reason; ``check_kept`` turns fewer than
``--min-kept`` kept problems into a one-line error naming the main reasons and what to change.

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
    """Settings of ``pasodoble sft build-data``: each field is the command-line option of the same name
    (``min_kept`` is ``--min-kept``), built from this class with its help text (commands/options.py).

    ``None`` for ``knowledge``, ``temperature``, ``max_tokens``, ``text_field``, ``max_snippet_tokens`` and
    ``leak_check`` means: the value of ``config`` when one is given, else the default in ``DEFAULTS``.
    """

    teacher: str = field(
        default="",
        metadata={
            "help": "teacher: a local model name/directory ('tiny' for smoke tests) or an OpenAI-compatible "
            "chat-completions base URL (http(s)://host/v1)",
            "required": True,
        },
    )
    config: str | None = field(
        default=None,
        metadata={
            "help": "training config (or run directory) whose prompts (proposer.prompt, solver.prompt), "
            "rollout.open_thinking, per-role temperature and max_new_tokens, knowledge section and "
            "rewards.leak_check the teacher gets, as the RL rollouts will; explicit options win",
            "metavar": "TRAIN.yaml|RUN_DIR",
        },
    )
    proposer_prompt_file: str | None = field(
        default=None,
        metadata={
            "help": "UTF-8 file holding the Proposer prompt template (with {snippet}); over --config's",
            "metavar": "FILE",
        },
    )
    solver_prompt_file: str | None = field(
        default=None,
        metadata={
            "help": "UTF-8 file holding the Solver prompt template (with {problem}); over --config's",
            "metavar": "FILE",
        },
    )
    knowledge: str | None = field(
        default=None,
        metadata={
            "help": "knowledge source, as knowledge.source: a .jsonl/.parquet/.txt file or directory, a "
            "datasets name, 'tiny' or 'toy' (default: --config's knowledge.source, else tiny); "
            "`pasodoble knowledge sample` writes a local sample of any source"
        },
    )
    size: int = field(
        default=100, metadata={"help": "Proposer examples (kept problems) to build", "required": True}
    )
    out: str = field(
        default="",
        metadata={"help": "output directory (rerun the same command to resume)", "required": True},
    )
    min_kept: int = field(
        default=1,
        metadata={"help": "exit non-zero, naming the drop reasons, when fewer problems are kept"},
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "model name at the endpoint (default: first of /models)"}
    )
    api_key_env: str | None = field(
        default=None,
        metadata={
            "help": "environment variable holding the endpoint's API key (default: OPENAI_API_KEY if "
            "set, else none)",
            "metavar": "VAR",
        },
    )
    checker: str | None = field(
        default=None,
        metadata={
            "help": "independent checker model or URL that must reach the proposed answer (default: the "
            "teacher prompted as Solver)"
        },
    )
    checker_model: str | None = field(default=None, metadata={"help": "model name at the checker endpoint"})
    checker_api_key_env: str | None = field(
        default=None, metadata={"help": "API-key variable of the checker", "metavar": "VAR"}
    )
    concurrency: int = field(default=8, metadata={"help": "endpoint requests in flight"})
    timeout: float = field(default=600.0, metadata={"help": "seconds per HTTP request"})
    max_retries: int = field(default=6, metadata={"help": "retries per request"})
    backoff: float = field(default=1.0, metadata={"help": "first retry delay in seconds, doubled per retry"})
    temperature: float | None = field(
        default=None,
        metadata={"help": "teacher sampling temperature (default: --config's per role, else 0.6)"},
    )
    max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "generation cap per response in tokens (default: --config's max_new_tokens per role, "
            "else 4096)"
        },
    )
    check_samples: int = field(default=1, metadata={"help": "checker answers per problem; half must agree"})
    solver_samples: int = field(default=2, metadata={"help": "teacher Solver answers per kept problem"})
    max_requests: int | None = field(
        default=None, metadata={"help": "Proposer request budget (default 4 x --size)"}
    )
    seed: int = field(default=0, metadata={"help": "snippet sampling seed"})
    text_field: str | None = field(
        default=None,
        metadata={"help": "knowledge record field holding the text (default: --config's, else text)"},
    )
    max_snippet_tokens: int | None = field(
        default=None, metadata={"help": "snippet cap, in tokens (default: --config's, else 512)"}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "tokenizer that measures the snippet cap (the student's; default: --config's Proposer "
            "model when it is a local directory, else the local teacher's, or 4 chars per token for "
            "endpoints)"
        },
    )
    leak_check: str | None = field(
        default=None,
        metadata={
            "help": "answer-leak rule (default: --config's rewards.leak_check, else token)",
            "choices": ("token", "substring", "off"),
        },
    )
    generation_batch_size: int = field(default=16, metadata={"help": "local teacher batch"})
    dtype: str = field(
        default="float32",
        metadata={"help": "local teacher dtype", "choices": ("float32", "bfloat16", "float16")},
    )
    grader_workers: int = field(default=2, metadata={"help": "answer-grader processes"})
    progress: bool = field(default=True, metadata={"help": "no progress bars"})
    # not an option: extra settings recorded in the data card by library callers
    extra: dict[str, Any] = field(default_factory=dict)


# the values of the ``None`` fields above when no --config gives them
DEFAULTS: dict[str, Any] = {
    "knowledge": "tiny",
    "temperature": 0.6,
    "max_tokens": 4096,
    "text_field": "text",
    "max_snippet_tokens": 512,
    "leak_check": "token",
}


@dataclass
class Plan:
    """What one build uses, resolved from the options, ``--config`` and the prompt files.

    ``proposer_prompt`` / ``solver_prompt``: the templates (None = built-in); ``temperature`` and
    ``max_tokens`` per role; ``prompts_from``: where the templates came from (for the data card).
    """

    proposer_prompt: str | None
    solver_prompt: str | None
    temperature: dict[str, float]
    max_tokens: dict[str, int]
    knowledge: Any  # KnowledgeConfig
    leak_check: str
    open_thinking: bool
    tokenizer: str | None
    prompts_from: dict[str, str]


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


def _request(
    kind: str, index: int, content: str, n: int, temperature: float, max_tokens: int, model: str
) -> TeacherRequest:
    messages = [{"role": "user", "content": content}]
    settings = {"n": n, "temperature": temperature, "max_tokens": max_tokens, "model": model}
    rid = request_id(kind, index, messages, settings)
    return TeacherRequest(
        id=rid,
        messages=(("user", content),),
        n=n,
        temperature=temperature,
        max_tokens=max_tokens,
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
        (cfg.min_kept >= 0, f"--min-kept must be >= 0; got {cfg.min_kept}"),
        (cfg.check_samples >= 1, f"--check-samples must be >= 1; got {cfg.check_samples}"),
        (cfg.solver_samples >= 1, f"--solver-samples must be >= 1; got {cfg.solver_samples}"),
        (
            cfg.temperature is None or cfg.temperature > 0,
            f"--temperature must be > 0; got {cfg.temperature}",
        ),
        (cfg.max_tokens is None or cfg.max_tokens >= 1, f"--max-tokens must be >= 1; got {cfg.max_tokens}"),
        (
            cfg.max_requests is None or cfg.max_requests >= 1,
            f"--max-requests must be >= 1; got {cfg.max_requests}",
        ),
        (
            cfg.leak_check in (None, "token", "substring", "off"),
            f"--leak-check must be token, substring or off; got {cfg.leak_check!r}",
        ),
        (
            cfg.max_snippet_tokens is None or cfg.max_snippet_tokens >= 1,
            f"--max-snippet-tokens must be >= 1; got {cfg.max_snippet_tokens}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _training_config(spec: str) -> Any:
    """The validated training config of ``--config``: a YAML file, or a run directory's config.yaml."""
    from pasodoble.config import ConfigError, load_config

    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise UserError(
                f"--config {spec} is a directory without config.yaml; give a training config (.yaml) or a run directory"
            )
        path = path / "config.yaml"
    elif not path.is_file():
        raise UserError(f"--config {spec} not found; give a training config (.yaml) or a run directory")
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UserError(f"--config {spec}: {exc}") from None


def _template_file(flag: str, path: str, role: str) -> str:
    """A prompt template read from ``path`` (UTF-8), checked for its role's placeholder."""
    from pasodoble.prompts import PLACEHOLDERS

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{flag} {path} not found; give a UTF-8 file holding the {role} prompt template"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{flag} {path} cannot be read as UTF-8 text: {exc}") from None
    if not text.strip():
        raise UserError(f"{flag} {path} is empty; write the {role} prompt template in it")
    placeholder = PLACEHOLDERS[role]
    if placeholder not in text:
        raise UserError(
            f"{flag} {path} has no {placeholder} placeholder; put {placeholder} where the "
            f"{'knowledge snippet' if role == 'proposer' else 'problem'} goes"
        )
    return text


def resolve(cfg: BuildDataConfig) -> Plan:
    """The ``Plan`` of a build: options first, then ``--config``, then ``DEFAULTS`` (see the module doc)."""
    import dataclasses

    from pasodoble.config import KnowledgeConfig

    _validate(cfg)

    def pick(name: str, from_config: Any) -> Any:
        value = getattr(cfg, name)
        if value is not None:
            return value
        return from_config if from_config is not None else DEFAULTS[name]

    prompts: dict[str, str | None] = {"proposer": None, "solver": None}
    origin = {"proposer": "built-in", "solver": "built-in"}
    temperature: dict[str, float] = {}
    max_tokens: dict[str, int] = {}
    tokenizer = cfg.tokenizer
    if cfg.config is not None:
        train = _training_config(cfg.config)
        for role in ("proposer", "solver"):
            section = getattr(train, role)
            if section.prompt is not None:
                prompts[role] = section.prompt
                origin[role] = f"--config {cfg.config}"
            temperature[role] = pick(
                "temperature",
                section.temperature if section.temperature is not None else train.rollout.temperature,
            )
            max_tokens[role] = pick(
                "max_tokens",
                section.max_new_tokens
                if section.max_new_tokens is not None
                else train.rollout.max_new_tokens,
            )
        k = train.knowledge
        knowledge = dataclasses.replace(
            k,
            source=pick("knowledge", k.source),
            text_field=pick("text_field", k.text_field),
            max_snippet_tokens=pick("max_snippet_tokens", k.max_snippet_tokens),
        )
        if cfg.knowledge is not None and cfg.knowledge != k.source:
            # another source: the config's dataset-only settings do not describe it
            knowledge = dataclasses.replace(knowledge, config_name=None, data_files=[], enabled=True)
        leak_check = pick("leak_check", train.rewards.leak_check)
        open_thinking = bool(train.rollout.open_thinking)
        if tokenizer is None:
            # the student's tokenizer measures the snippet cap, as in training, when it is on this machine
            student = train.proposer.model_path or train.model.name_or_path
            if Path(student).expanduser().is_dir():
                tokenizer = student
    else:
        for role in ("proposer", "solver"):
            temperature[role] = pick("temperature", None)
            max_tokens[role] = pick("max_tokens", None)
        knowledge = KnowledgeConfig(
            source=pick("knowledge", None),
            text_field=pick("text_field", None),
            max_snippet_tokens=pick("max_snippet_tokens", None),
        )
        leak_check = pick("leak_check", None)
        open_thinking = False
    for role, flag, path in (
        ("proposer", "--proposer-prompt-file", cfg.proposer_prompt_file),
        ("solver", "--solver-prompt-file", cfg.solver_prompt_file),
    ):
        if path is not None:
            prompts[role] = _template_file(flag, path, role)
            origin[role] = f"{flag} {path}"
    return Plan(
        proposer_prompt=prompts["proposer"],
        solver_prompt=prompts["solver"],
        temperature=temperature,
        max_tokens=max_tokens,
        knowledge=knowledge,
        leak_check=leak_check,
        open_thinking=open_thinking,
        tokenizer=tokenizer,
        prompts_from=origin,
    )


def _opened(teacher: Teacher, request: TeacherRequest) -> bool:
    """Whether the teacher's rendered prompt of ``request`` ends inside an open thinking section."""
    fn = getattr(teacher, "opens_thinking", None)
    return bool(fn(request)) if fn is not None else False


def _prefix(teacher: Teacher, request: TeacherRequest) -> str:
    """What the prompt added after the chat template (``rollout.open_thinking``), put back in front of an
    answer so that SFT, which renders the conversation with the plain template, trains on it."""
    fn = getattr(teacher, "thinking_prefix", None)
    return str(fn(request)) if fn is not None else ""


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
    from pasodoble.config import GraderConfig
    from pasodoble.knowledge import KnowledgeBase
    from pasodoble.parse import parse_proposal
    from pasodoble.prompts import PROPOSER, SOLVER, user_message
    from pasodoble.rewards import question_validity
    from pasodoble.sft.teacher import is_url
    from pasodoble.verify import Grader

    plan = resolve(cfg)
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
        open_thinking=plan.open_thinking,
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

    if plan.tokenizer is not None:
        from pasodoble.models import load_tokenizer

        cap_tokenizer: Any = load_tokenizer(plan.tokenizer)
    elif not is_url(cfg.teacher):
        cap_tokenizer = teacher.tokenizer  # type: ignore[attr-defined]
    else:
        cap_tokenizer = _ApproxTokenizer()
    kb = KnowledgeBase(plan.knowledge, seed=cfg.seed)
    snippets_on = plan.knowledge.enabled

    def proposer_message(snippet: Any) -> str:
        return user_message(PROPOSER, snippet=snippet if snippets_on else None, template=plan.proposer_prompt)

    def solver_message(problem: str) -> str:
        return user_message(SOLVER, problem=problem, template=plan.solver_prompt)

    def solver_request(kind: str, index: int, problem: str, n: int, model: str) -> TeacherRequest:
        return _request(
            kind, index, solver_message(problem), n, plan.temperature[SOLVER], plan.max_tokens[SOLVER], model
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
                            "proposer",
                            i,
                            proposer_message(snippet),
                            1,
                            plan.temperature[PROPOSER],
                            plan.max_tokens[PROPOSER],
                            teacher.model,
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
                    opened = _opened(teacher, req)
                    question = parse_proposal(text, thinking_opened=opened)
                    valid, reason = question_validity(question, leak_check=plan.leak_check)
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
                            "text": _prefix(teacher, req) + text,
                            "question": question,
                        }
                    )
                check_requests = [
                    solver_request(
                        "check" if not self_check else "solver",
                        c["index"],
                        c["question"].problem,
                        n_check,
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
                    c["check_texts"] = [_prefix(checker, req) + t for t in reply.texts]
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
                    solver_request(
                        "solver", c["index"], c["question"].problem, cfg.solver_samples, teacher.model
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
                    c["solver_texts"] = [_prefix(teacher, req) + t for t in reply.texts]
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
        solver_prompt = solver_message(q.problem)
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
    settings.update(
        knowledge=plan.knowledge.source,
        text_field=plan.knowledge.text_field,
        max_snippet_tokens=plan.knowledge.max_snippet_tokens,
        leak_check=plan.leak_check,
        temperature=plan.temperature,
        max_tokens=plan.max_tokens,
        open_thinking=plan.open_thinking,
        tokenizer=plan.tokenizer,
    )
    card = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "teacher": {"spec": cfg.teacher, "model": teacher.name},
        "checker": {"spec": cfg.checker or cfg.teacher, "model": checker.name, "is_teacher": self_check},
        "knowledge": plan.knowledge.source if snippets_on else "none (knowledge.enabled false)",
        "prompts": {
            "proposer": {"from": plan.prompts_from[PROPOSER], "template": plan.proposer_prompt},
            "solver": {"from": plan.prompts_from[SOLVER], "template": plan.solver_prompt},
        },
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


# reasons that say the teacher's answer is not in the Proposer format the prompt asks for
_FORMAT_REASONS = {"no_problem", "no_answer", "unfinished_thinking", "empty_problem", EMPTY_REPLY}


def dropped(card: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per role, the dropped examples by reason, most frequent first (the summary's ``dropped``)."""
    return {
        role: dict(sorted(card[role]["rejected"].items(), key=lambda kv: (-kv[1], kv[0])))
        for role in ("proposer", "solver")
    }


def dropped_report(card: dict[str, Any]) -> list[str]:
    """Human-readable lines: requests (responses), kept and the histogram of drop reasons per role."""
    lines = []
    for role, reasons in dropped(card).items():
        c = card[role]
        asked = f"{c['requests']} requests" if role == "proposer" else f"{c['responses']} answers"
        hist = ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none"
        lines.append(f"{role}: {asked}, {c['kept']} kept, {sum(reasons.values())} dropped: {hist}")
    return lines


def check_kept(card: dict[str, Any], min_kept: int) -> None:
    """UserError (one line) when fewer than ``min_kept`` problems were kept: the reasons and what to do."""
    kept = card["proposer"]["kept"]
    if kept >= min_kept:
        return
    reasons = dropped(card)["proposer"]
    total = sum(reasons.values())
    hist = ", ".join(f"{k} {v}" for k, v in reasons.items()) or "no answer was dropped"
    fmt = sum(v for k, v in reasons.items() if k in _FORMAT_REASONS)
    if total and fmt * 2 >= total:
        what = (
            "most teacher answers are not in the format the Proposer prompt asks for: give the prompts the "
            "teacher was trained or instructed with (--config TRAIN.yaml, or --proposer-prompt-file and "
            "--solver-prompt-file), or raise --max-tokens"
        )
    elif reasons.get(CHECK_DISAGREE, 0) * 2 >= max(total, 1):
        what = (
            "the checker seldom reaches the proposed answers: use a checker that solves such problems "
            "(--checker MODEL_OR_URL; with --config, the Solver prompt it was trained with)"
        )
    else:
        what = "raise --max-requests, or see data_card.md for the reasons"
    raise UserError(
        f"kept {kept} problems of {card['proposer']['requests']} teacher answers, fewer than --min-kept "
        f"{min_kept} (dropped: {hist}); {what}"
    )
