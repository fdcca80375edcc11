"""One dual-play step, top to bottom: snippet → Proposer rollouts → parsing → Solver rollouts →
verification → rewards (validity, difficulty, diversity) → advantages → policy updates.

``DualPlay.online_step`` trains both roles on the rollouts of one step (method.md, Online training);
``proposer_phase_step`` and ``solver_phase_step`` are the two halves of offline training, which talk
through the question buffer (method.md, Offline training). Every decision that depends on grading —
verdicts, rewards, diversity, skips, buffer admission and retirement — is taken once, on the main
process, and broadcast, so data-parallel ranks can never disagree (a defect of the reference code).
Generation is split across ranks and gathered; each rank then trains on its shard of the batch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pasodoble import distributed as dist
from pasodoble.config import Config
from pasodoble.diversity import DiversityHistory
from pasodoble.grpo import group_advantages
from pasodoble.knowledge import KnowledgeBase
from pasodoble.learner import Learner, TrainSample
from pasodoble.metrics import cut_middle
from pasodoble.prompts import build_prompt, opens_thinking
from pasodoble.question_buffer import QuestionBuffer
from pasodoble.rewards import (
    pass_rate,
    proposer_reward,
    skip_step,
    solver_rewards,
    solver_trainable,
    validated_pass_rate,
)
from pasodoble.rollout.base import Completion, GenerationBackend, SamplingParams
from pasodoble.seeds import derive_seed
from pasodoble.tasks import get_task
from pasodoble.types import ParseFailure, Question


@dataclass
class Role:
    """One role's trainable policy and its generator (they share weights, or are synced after updates)."""

    name: str
    learner: Learner
    backend: GenerationBackend
    temperature: float
    max_new_tokens: int

    def __post_init__(self) -> None:
        if not isinstance(self.backend, GenerationBackend):
            raise TypeError(
                f"the {self.name}'s generator is a {type(self.backend).__name__}, not a "
                "pasodoble.rollout.GenerationBackend: derive it from that class (it writes generate and "
                "sync_weights; the rest of the lifecycle has defaults)"
            )


@dataclass
class StepResult:
    """What one step produced: metrics (namespaced keys) and rollout records (one per question)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None
    trained: bool = False


@dataclass
class Scores:
    """What grading decides about one step's N proposals (taken on the main process, then broadcast)."""

    valid: list[bool]
    invalid_reason: list[str | None]
    pass_rate: list[float | None]  # raw p; None for a question that was not attempted
    validated_pass_rate: list[float]  # p̃
    diversity: list[float]
    proposer_reward: list[float]
    proposer_advantage: list[float]
    skip: str | None  # the skip reason (skip_step), or None
    solver_rewards: list[list[float]]  # r_ij of each attempted question ([] for the others)
    verdicts: list[list[tuple[str | None, bool, str | None]]]  # (pred, correct, reason) per attempt
    grader_timeouts: int


@dataclass
class Proposed:
    """One step's proposals and their attempts: what both the online and the offline Proposer step use."""

    scores: Scores
    snippet_id: str
    prompt_ids: list[int]
    proposals: list[Completion]
    parsed: list[Question | ParseFailure]
    attempted: list[int]  # indices of the questions the Solver attempted (the valid ones)
    attempts: list[list[Completion]]  # their attempts, in the order of ``attempted``
    timing: dict[str, float]


_ROLE_IDS = {"proposer": 1, "solver": 2}


class DualPlay:
    """The dual-play engine: both roles, the knowledge base, grader, diversity history and buffer."""

    def __init__(
        self,
        cfg: Config,
        *,
        tokenizer,
        proposer: Role,
        solver: Role,
        knowledge: KnowledgeBase,
        grader,
        diversity: DiversityHistory,
        buffer: QuestionBuffer,
        relabel: Callable[[str], str | None] | None = None,
    ) -> None:
        """``relabel(problem) -> answer | None`` is for diagnosis only (the toy demo's true-answer run):
        when set, a parsed question's answer is replaced by what it returns (None keeps the Proposer's).
        Normal training never sets it: every answer then comes from the Proposer."""
        self.cfg = cfg
        self.relabel = relabel
        self.tokenizer = tokenizer
        self.proposer = proposer
        self.solver = solver
        self.knowledge = knowledge
        self.grader = grader  # only used on the main process
        self.diversity = diversity
        self.buffer = buffer
        self.task = get_task(cfg.task.name)  # prompts, parsing, validity, answer format (tasks/)
        r = cfg.rewards
        self._solver_reward_plugin = _plugin(r.solver_reward, "rewards.solver_reward")
        self._proposer_reward_plugin = _plugin(r.proposer_reward, "rewards.proposer_reward")

    # ------------------------------------------------------------------ generation

    def _encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-self.cfg.rollout.max_prompt_tokens :]

    def _generate(self, role: Role, prompts: list[list[int]], n: int, step: int) -> list[list[Completion]]:
        """``n`` completions for each prompt, the work split across ranks and gathered on every rank."""
        flat = [p for p in prompts for _ in range(n)]
        lo, hi = dist.shard_bounds(len(flat))
        params = SamplingParams(
            temperature=role.temperature,
            top_p=self.cfg.rollout.top_p,
            top_k=self.cfg.rollout.top_k,
            max_new_tokens=role.max_new_tokens,
            n=1,
            seed=derive_seed(self.cfg.run.seed, step, _ROLE_IDS[role.name], dist.rank()),
        )
        # Called on every rank, even with nothing to generate: a backend may take part in collectives
        # (a sharded model's weights gathered for generation) and must return [] for no prompts.
        local = [group[0] for group in role.backend.generate(flat[lo:hi], params)]
        gathered = dist.gather_list(local)
        return [gathered[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _proposer_prompt(self) -> tuple[str, str, list[int]]:
        snippet = self.knowledge.sample(self.tokenizer)
        text = build_prompt(
            "proposer",
            self.tokenizer,
            snippet=snippet if self.cfg.knowledge.enabled else None,
            template=self.cfg.proposer.prompt,
            open_thinking=self.cfg.rollout.open_thinking,
            task=self.task,
        )
        return snippet.id, text, self._encode(text)

    def _solver_prompt(self, problem: str) -> list[int]:
        text = build_prompt(
            "solver",
            self.tokenizer,
            problem=problem,
            template=self.cfg.solver.prompt,
            open_thinking=self.cfg.rollout.open_thinking,
            task=self.task,
        )
        return self._encode(text)

    # ------------------------------------------------------------------ scoring (main process only)

    def _grade(self, attempts: list[list[Completion]], answers: list[str]) -> list[list[Any]]:
        """Verdicts of every attempt against its question's (Proposer's or buffered) answer."""
        responses = [a.text for group in attempts for a in group]
        golds = [ans for group, ans in zip(attempts, answers, strict=True) for _ in group]
        flat = self.grader.grade_batch(responses, golds) if responses else []
        out, i = [], 0
        for group in attempts:
            out.append(flat[i : i + len(group)])
            i += len(group)
        return out

    def _score_proposals(
        self, step: int, proposals: list[Completion], attempts, attempted: list[int], parsed
    ) -> Scores:
        """Validity, pass rates, diversity, Proposer rewards/advantages, Solver rewards, the skip decision."""
        cfg = self.cfg.rewards
        n = len(proposals)
        valid_reason = [self.task.question_validity(p, leak_check=cfg.leak_check) for p in parsed]
        verdicts = self._grade(attempts, [parsed[i].answer for i in attempted])
        raw_p: list[float | None] = [None] * n
        verdicts_of: list[list[Any]] = [[] for _ in range(n)]
        for i, v in zip(attempted, verdicts, strict=True):
            raw_p[i] = pass_rate([x.correct for x in v])
            verdicts_of[i] = v
        p_tilde = [validated_pass_rate(raw_p[i] or 0.0, valid_reason[i][0]) for i in range(n)]
        token_sets = [
            set(self.tokenizer(p.problem, add_special_tokens=False)["input_ids"])
            if isinstance(p, Question)
            else set()
            for p in parsed
        ]
        diversity = self.diversity.scores(token_sets)
        if self._proposer_reward_plugin is None:
            rewards = [proposer_reward(p_tilde[i], diversity[i], cfg) for i in range(n)]
        else:
            rewards = [
                float(
                    self._proposer_reward_plugin(
                        p_tilde=p_tilde[i], diversity=diversity[i], question=parsed[i], cfg=cfg
                    )
                )
                for i in range(n)
            ]
        advantages = group_advantages(
            rewards, n, norm=self.cfg.grpo.advantage_norm, eps=self.cfg.grpo.advantage_eps
        ).tolist()
        skip = skip_step(p_tilde, advantages, cfg)
        self.diversity.add([s for s, p in zip(token_sets, parsed, strict=True) if isinstance(p, Question)])
        rng = np.random.default_rng(derive_seed(self.cfg.run.seed, step, 7))
        attempts_of = dict(zip(attempted, attempts, strict=True))
        solver_r = [
            self._solver_rewards([x.correct for x in verdicts_of[i]], attempts_of[i], parsed[i], rng)
            if verdicts_of[i]
            else []
            for i in range(n)
        ]
        return Scores(
            valid=[v for v, _ in valid_reason],
            invalid_reason=[r for _, r in valid_reason],
            pass_rate=raw_p,
            validated_pass_rate=p_tilde,
            diversity=diversity,
            proposer_reward=rewards,
            proposer_advantage=advantages,
            skip=skip,
            solver_rewards=solver_r,
            verdicts=[[(x.pred, x.correct, x.reason) for x in v] for v in verdicts_of],
            grader_timeouts=sum(1 for v in verdicts_of for x in v if x.reason == "timeout"),
        )

    # ------------------------------------------------------------------ the steps

    def _relabelled(self, parsed: Question | ParseFailure) -> Question | ParseFailure:
        if not isinstance(parsed, Question):
            return parsed
        answer = self.relabel(parsed.problem)
        return parsed if answer is None else dataclasses.replace(parsed, answer=answer)

    def _propose_and_solve(self, step: int) -> Proposed:
        t0 = time.perf_counter()
        snippet_id, prompt_text, prompt_ids = self._proposer_prompt()
        proposals = self._generate(self.proposer, [prompt_ids], self.proposer_group, step)[0]
        t1 = time.perf_counter()
        thinking_opened = opens_thinking(prompt_text)
        parsed = [self.task.parse_proposal(c.text, thinking_opened=thinking_opened) for c in proposals]
        if self.relabel is not None:
            parsed = [self._relabelled(p) for p in parsed]
        valid_pre = [
            self.task.question_validity(p, leak_check=self.cfg.rewards.leak_check)[0] for p in parsed
        ]
        # Invalid questions score p̃ = 0 whatever the Solver does: they are not attempted (pass_rate null).
        attempted = [i for i, ok in enumerate(valid_pre) if ok]
        solver_prompts = [self._solver_prompt(parsed[i].problem) for i in attempted]
        attempts = self._generate(self.solver, solver_prompts, self.solver_group, step)
        t2 = time.perf_counter()
        scores = dist.main_then_broadcast(
            lambda: self._score_proposals(step, proposals, attempts, attempted, parsed)
        )
        t3 = time.perf_counter()
        timing = {
            "time/generate_proposer": t1 - t0,
            "time/generate_solver": t2 - t1,
            "time/grade": t3 - t2,
            # weights loaded lazily into generation engines before these generations
            "time/weight_sync": _pending_sync(self.proposer) + _pending_sync(self.solver),
        }
        return Proposed(scores, snippet_id, prompt_ids, proposals, parsed, attempted, attempts, timing)

    def _solver_rewards(
        self, correct: list[bool], attempts: list[Completion], question: Question, rng: np.random.Generator
    ) -> list[float]:
        """r_ij of one question's attempts: the built-in modes (``rewards.solver_rewards``) or the plug-in."""
        if self._solver_reward_plugin is not None:
            out = [
                float(x)
                for x in self._solver_reward_plugin(
                    correct=correct, responses=[c.text for c in attempts], question=question, rng=rng
                )
            ]
            if len(out) != len(correct):
                raise RuntimeError(
                    f"rewards.solver_reward={self.cfg.rewards.solver_reward} returned {len(out)} rewards for "
                    f"{len(correct)} attempts"
                )
            return out
        return solver_rewards(
            correct,
            mode=self.cfg.rewards.solver_reward,
            rng=rng,
            formatted=[self.task.has_final_answer(c.text) for c in attempts],
        )

    @property
    def proposer_group(self) -> int:
        return self.cfg.proposer.group_size

    @property
    def solver_group(self) -> int:
        return self.cfg.solver.group_size

    def _solver_samples(self, attempts: list[Completion], rewards: list[float]) -> list[TrainSample]:
        adv = group_advantages(
            rewards, len(rewards), norm=self.cfg.grpo.advantage_norm, eps=self.cfg.grpo.advantage_eps
        ).tolist()
        return [_train_sample(c, a) for c, a in zip(attempts, adv, strict=True)]

    def online_step(self, step: int) -> StepResult:
        """Method.md, Online training: one snippet, N proposals, M attempts each, both roles updated."""
        pro = self._propose_and_solve(step)
        scores, snippet_id, proposals, parsed = pro.scores, pro.snippet_id, pro.proposals, pro.parsed
        attempted, attempts, timing = pro.attempted, pro.attempts, pro.timing
        result = StepResult(skipped=scores.skip)
        trainable = [
            i
            for i in range(len(proposals))
            if solver_trainable(scores.validated_pass_rate[i], self.cfg.rewards)
        ]
        t0 = time.perf_counter()
        if result.skipped is None:
            prop_samples = [
                _train_sample(c, a) for c, a in zip(proposals, scores.proposer_advantage, strict=True)
            ]
            attempts_of = dict(zip(attempted, attempts, strict=True))
            solver_samples = [
                s for i in trainable for s in self._solver_samples(attempts_of[i], scores.solver_rewards[i])
            ]
            result.metrics.update(
                _prefixed("proposer", self.proposer.learner.update(self.proposer.learner.shard(prop_samples)))
            )
            t1 = time.perf_counter()
            result.metrics.update(
                _prefixed("solver", self.solver.learner.update(self.solver.learner.shard(solver_samples)))
            )
            t2 = time.perf_counter()
            sync = _sync(self.proposer) + _sync(self.solver)
            result.trained = True
            timing.update({"time/update_proposer": t1 - t0, "time/update_solver": t2 - t1})
            timing["time/weight_sync"] = timing.get("time/weight_sync", 0.0) + sync
        result.metrics.update(timing)
        result.metrics.update(self._question_metrics(scores, trainable if result.trained else []))
        result.rollouts = self._rollout_records(
            step,
            "online",
            snippet_id,
            parsed,
            scores,
            attempted,
            set(trainable) if result.trained else set(),
            proposals,
            attempts,
        )
        return result

    def proposer_phase_step(self, step: int) -> StepResult:
        """Offline (a): the Solver is frozen; the Proposer is updated; valid questions enter the buffer."""
        pro = self._propose_and_solve(step)
        scores, snippet_id, proposals, parsed = pro.scores, pro.snippet_id, pro.proposals, pro.parsed
        attempted, attempts, timing = pro.attempted, pro.attempts, pro.timing
        result = StepResult(
            skipped="zero_proposer_advantage" if all(a == 0 for a in scores.proposer_advantage) else None
        )
        admitted = dist.main_then_broadcast(lambda: self._admit(step, parsed, scores))
        if result.skipped is None:
            t0 = time.perf_counter()
            samples = [_train_sample(c, a) for c, a in zip(proposals, scores.proposer_advantage, strict=True)]
            result.metrics.update(
                _prefixed("proposer", self.proposer.learner.update(self.proposer.learner.shard(samples)))
            )
            t1 = time.perf_counter()
            timing["time/weight_sync"] = timing.get("time/weight_sync", 0.0) + _sync(self.proposer)
            result.trained = True
            timing["time/update_proposer"] = t1 - t0
        result.metrics.update(timing)
        result.metrics.update(self._question_metrics(scores, []))
        result.metrics["buffer/admitted"] = admitted
        result.rollouts = self._rollout_records(
            step, "offline_proposer", snippet_id, parsed, scores, attempted, set(), proposals, attempts
        )
        return result

    def _admit(self, step: int, parsed, scores: Scores) -> int:
        admitted = 0
        for i, q in enumerate(parsed):
            p = scores.validated_pass_rate[i]
            if scores.valid[i] and solver_trainable(p, self.cfg.rewards):
                admitted += int(self.buffer.admit(q.problem, q.answer, p, step) is not None)
        return admitted

    def solver_phase_step(self, step: int) -> StepResult:
        """Offline (b): the Proposer is frozen; the Solver trains on buffered questions against stored answers."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(derive_seed(self.cfg.run.seed, step, 11))
        entries = dist.main_then_broadcast(lambda: self.buffer.sample(self.cfg.solver.batch_questions, rng))
        result = StepResult()
        if not entries:
            result.skipped = "empty_buffer"
            result.metrics.update(self._buffer_metrics())
            return result
        prompts = [self._solver_prompt(e.problem) for e in entries]
        attempts = self._generate(self.solver, prompts, self.solver_group, step)
        t1 = time.perf_counter()
        weight_sync = _pending_sync(self.solver)

        def score():
            verdicts = self._grade(attempts, [e.answer for e in entries])
            rng_r = np.random.default_rng(derive_seed(self.cfg.run.seed, step, 7))
            out = []
            for e, v, group in zip(entries, verdicts, attempts, strict=True):
                correct = [x.correct for x in v]
                p = pass_rate(correct)
                self.buffer.record_visit(e.id, p)
                question = Question(problem=e.problem, answer=e.answer)
                out.append(
                    (
                        p,
                        self._solver_rewards(correct, group, question, rng_r),
                        [(x.pred, x.correct, x.reason) for x in v],
                    )
                )
            return out

        scored = dist.main_then_broadcast(score)
        t2 = time.perf_counter()
        trainable = [i for i, (p, _, _) in enumerate(scored) if solver_trainable(p, self.cfg.rewards)]
        if not trainable:
            # The reference code loops forever here; we skip this batch and carry on with the phase.
            result.skipped = "no_trainable_question"
            t3 = time.perf_counter()
        else:
            samples = [s for i in trainable for s in self._solver_samples(attempts[i], scored[i][1])]
            result.metrics.update(
                _prefixed("solver", self.solver.learner.update(self.solver.learner.shard(samples)))
            )
            t3 = time.perf_counter()
            weight_sync += _sync(self.solver)
            result.trained = True
        result.metrics.update(
            {
                "time/generate_solver": t1 - t0,
                "time/grade": t2 - t1,
                "time/update_solver": t3 - t2,
                "time/weight_sync": weight_sync,
                "solver/pass_rate": float(np.mean([p for p, _, _ in scored])),
                "solver/trainable_questions": len(trainable),
            }
        )
        result.metrics.update(self._buffer_metrics())
        result.rollouts = [
            {
                "step": step,
                "phase": "offline_solver",
                "buffer_id": e.id,
                "problem": e.problem,
                "answer": e.answer,
                "pass_rate": scored[i][0],
                "solver_trained": i in trainable and result.trained,
                "solver_answers": self._solver_answers(scored[i][2], attempts[i]),
            }
            for i, e in enumerate(entries)
        ]
        return result

    # ------------------------------------------------------------------ logging helpers

    def _buffer_metrics(self) -> dict[str, Any]:
        return {f"buffer/{k}": v for k, v in self.buffer.metrics().items()}

    def _question_metrics(self, scores: Scores, trainable: list[int]) -> dict[str, Any]:
        n = len(scores.valid)
        attempted = [p for p in scores.pass_rate if p is not None]
        reasons: dict[str, int] = {}
        for r in scores.invalid_reason:
            if r is not None:
                reasons[r] = reasons.get(r, 0) + 1
        band = [p for p in scores.validated_pass_rate if solver_trainable(p, self.cfg.rewards)]
        m: dict[str, Any] = {
            "proposer/valid_rate": sum(scores.valid) / n,
            "proposer/band_rate": len(band) / n,
            "proposer/reward_mean": float(np.mean(scores.proposer_reward)),
            "proposer/diversity_mean": float(np.mean(scores.diversity)),
            "proposer/validated_pass_rate_mean": float(np.mean(scores.validated_pass_rate)),
            "solver/pass_rate": float(np.mean(attempted)) if attempted else None,
            "solver/trainable_questions": len(trainable),
            "grader/timeouts": scores.grader_timeouts,
        }
        for r, c in sorted(reasons.items()):
            m[f"proposer/invalid/{r}"] = c
        return m

    def _logged_text(self, text: str) -> str:
        return cut_middle(text, self.cfg.run.completion_chars)

    def _solver_answers(self, verdicts, attempts: list[Completion]) -> list[dict[str, Any]]:
        """One entry per attempt: its extracted answer and verdict, and (run.log_completions) its text."""
        answers = [{"pred": p, "correct": c, "reason": r} for p, c, r in verdicts]
        if self.cfg.run.log_completions:
            for entry, attempt in zip(answers, attempts, strict=True):
                entry["response"] = self._logged_text(attempt.text)
        return answers

    def _rollout_records(
        self,
        step,
        phase,
        snippet_id,
        parsed,
        scores,
        attempted,
        trained: set[int],
        proposals: list[Completion],
        attempts: list[list[Completion]],
    ):
        """One record per proposal (docs/metrics.md); ``attempts`` holds the attempts of the questions
        in ``attempted``, in that order."""
        attempts_of = dict(zip(attempted, attempts, strict=True))
        records = []
        for i, q in enumerate(parsed):
            is_q = isinstance(q, Question)
            completion = (
                {"proposer_completion": self._logged_text(proposals[i].text)}
                if self.cfg.run.log_completions
                else {}
            )
            records.append(
                {
                    "step": step,
                    "phase": phase,
                    "snippet_id": snippet_id,
                    "index": i,
                    "problem": q.problem if is_q else None,
                    "answer": q.answer if is_q else None,
                    **completion,
                    "proposer_truncated": proposals[i].truncated,
                    "pass_rate": scores.pass_rate[i],
                    "validated_pass_rate": scores.validated_pass_rate[i],
                    "valid": scores.valid[i],
                    "invalid_reason": scores.invalid_reason[i],
                    "diversity": scores.diversity[i],
                    "proposer_reward": scores.proposer_reward[i],
                    "proposer_advantage": scores.proposer_advantage[i],
                    "solver_trained": i in trained,
                    "solver_answers": self._solver_answers(scores.verdicts[i], attempts_of[i])
                    if i in attempts_of
                    else [],
                    "skipped": scores.skip,
                }
            )
        return records


def _plugin(value: str, field_name: str):
    """The plug-in function a ``module:fn`` value names, else None (a built-in mode)."""
    if ":" not in value:
        return None
    from pasodoble.plugins import load_callable

    return load_callable(value, field_name)


def _sync(role: Role) -> float:
    """Give the role's generator the updated weights (every process); return the seconds it took."""
    started = time.perf_counter()
    role.backend.sync_weights(role.learner.unwrapped_model)
    return time.perf_counter() - started + _pending_sync(role)


def _pending_sync(role: Role) -> float:
    """Seconds a backend spent loading weights lazily since last asked (0 for backends that do not)."""
    return float(role.backend.pop_sync_seconds())


def _train_sample(c: Completion, advantage: float) -> TrainSample:
    return TrainSample(
        prompt_ids=list(c.prompt_ids),
        completion_ids=list(c.completion_ids),
        advantage=float(advantage),
        old_logprobs=None,
        truncated=c.finish_reason == "length",
    )


def _prefixed(role: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"{role}/{k}": v for k, v in metrics.items()}
