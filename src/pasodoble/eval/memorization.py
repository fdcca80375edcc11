"""Memorization analysis (the paper's recall test): does a model reproduce generated problems verbatim?

For each question (a Proposer-generated problem) and each prefix fraction x, the model is given the
first ``round(x * L)`` tokens of the problem's L tokens (raw text, no chat template) and decodes
greedily exactly as many tokens as remain. The continuation is compared with the true rest:

- exact match (EM) = 1 if the continuation's token ids equal the rest's token ids, else 0;
- ROUGE-L F1 on the same token ids: with LCS the longest common subsequence length,
  P = LCS / len(continuation), R = LCS / len(rest), F1 = 2PR / (P + R) (0 when LCS = 0).

High EM at short prefixes means the problems are recalled rather than composed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pasodoble.errors import UserError
from pasodoble.jsonl import read_jsonl


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l_f1(candidate: Sequence[Any], reference: Sequence[Any]) -> float:
    """ROUGE-L F1 between two token sequences (harmonic mean of LCS precision and recall)."""
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(candidate), lcs / len(reference)
    return 2 * p * r / (p + r)


def read_questions(
    path: str | os.PathLike[str], limit: int | None = None, *, valid_only: bool = False
) -> list[str]:
    """Problems from a JSONL file: each line with a non-empty ``problem`` string (a rollouts.jsonl of
    training, or any plain JSONL). Lines without one (e.g. unparsable proposals) are skipped, and with
    ``valid_only`` also lines whose ``valid`` field is false; a file with none is a UserError.
    Duplicates are kept once, in first-seen order."""
    p = Path(path)
    seen: dict[str, None] = {}
    for _, record in read_jsonl(p, "questions file"):
        problem = record.get("problem")
        if valid_only and record.get("valid") is False:
            continue
        if isinstance(problem, dict):  # a nested question record
            problem = problem.get("problem")
        if isinstance(problem, str) and problem.strip():
            seen.setdefault(problem.strip(), None)
        if limit is not None and len(seen) >= limit:
            break
    if not seen:
        raise UserError(f"{p} has no line with a non-empty 'problem' field")
    return list(seen)


def greedy_continue(
    model: Any, prompts: list[list[int]], lengths: list[int], pad_id: int, batch_size: int = 16
) -> list[list[int]]:
    """Greedy continuation of each prompt by exactly ``lengths[i]`` tokens (EOS does not stop it early:
    the comparison is token for token). Batches are left-padded; position ids follow the attention mask."""
    import torch

    device = next(model.parameters()).device
    outputs: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), lengths[i]))
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        P = max(len(prompts[i]) for i in idx)
        T = max(lengths[i] for i in idx)
        ids = torch.full((len(idx), P), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), P), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, P - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, P - len(prompts[i]) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        generated = []
        with torch.no_grad():
            for _ in range(T):
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
                nxt = logits.argmax(-1)
                generated.append(nxt)
                ids = torch.cat([ids, nxt[:, None]], 1)
                mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], 1)
        gen = torch.stack(generated, 1).tolist() if generated else [[] for _ in idx]
        for row, i in enumerate(idx):
            outputs[i] = gen[row][: lengths[i]]
    return outputs


def analyze_memorization(
    model: Any,
    tokenizer: Any,
    questions: list[str],
    prefixes: Sequence[float],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary rows per prefix, per-question rows). A question too short to leave a non-empty prefix and
    rest at some fraction is skipped for that fraction (counted in ``skipped``)."""
    from tqdm.auto import tqdm

    for x in prefixes:
        if not 0 < x < 1:
            raise UserError(f"prefix fractions must be in (0, 1); got {x}")
    token_ids = [list(tokenizer(q, add_special_tokens=False)["input_ids"]) for q in questions]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    was_training = model.training
    model.eval()
    summary, details = [], []
    try:
        for x in tqdm(prefixes, desc="memorization", disable=not progress):
            chosen, prompts, rests = [], [], []
            for qi, ids in enumerate(token_ids):
                cut = round(x * len(ids))
                if cut < 1 or cut >= len(ids):
                    continue
                chosen.append(qi)
                prompts.append(ids[:cut])
                rests.append(ids[cut:])
            conts = (
                greedy_continue(model, prompts, [len(r) for r in rests], pad, batch_size) if prompts else []
            )
            ems, rouges = [], []
            for qi, prompt, rest, cont in zip(chosen, prompts, rests, conts, strict=True):
                em = float(cont == rest)
                rl = rouge_l_f1(cont, rest)
                ems.append(em)
                rouges.append(rl)
                details.append(
                    {
                        "prefix": x,
                        "question": qi,
                        "prefix_tokens": len(prompt),
                        "rest_tokens": len(rest),
                        "exact_match": em,
                        "rouge_l": rl,
                        "prefix_text": tokenizer.decode(prompt),
                        "rest_text": tokenizer.decode(rest),
                        "continuation_text": tokenizer.decode(cont),
                    }
                )
            n = len(ems)
            summary.append(
                {
                    "prefix": x,
                    "n": n,
                    "skipped": len(token_ids) - n,
                    "exact_match": sum(ems) / n if n else 0.0,
                    "rouge_l": sum(rouges) / n if n else 0.0,
                }
            )
    finally:
        model.train(was_training)
    return summary, details


def memorization_markdown(summary: list[dict[str, Any]], model: str, questions: str) -> str:
    lines = [
        f"# Memorization of `{questions}` by `{model}`",
        "",
        "Greedy continuation of the first x% of each problem's tokens, as long as the rest; "
        "exact match and ROUGE-L F1 (token LCS) against the rest, in percent.",
        "",
        "| prefix | questions | exact match | ROUGE-L |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in summary:
        lines.append(
            f"| {100 * row['prefix']:.0f}% | {row['n']} | {100 * row['exact_match']:.1f} | {100 * row['rouge_l']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def memorization_chart(summary: list[dict[str, Any]], path: str | os.PathLike[str], title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [100 * r["prefix"] for r in summary]
    fig, ax = plt.subplots(figsize=(5.0, 3.5))
    ax.plot(xs, [100 * r["exact_match"] for r in summary], marker="o", label="exact match")
    ax.plot(xs, [100 * r["rouge_l"] for r in summary], marker="s", label="ROUGE-L F1")
    ax.set_xlabel("prefix given (% of problem tokens)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_memorization(
    out_dir: str | os.PathLike[str],
    summary: list[dict[str, Any]],
    details: list[dict[str, Any]],
    *,
    model: str,
    questions: str,
    n_questions: int,
) -> None:
    """OUT/memorization.json, .md, .png and memorization_samples.jsonl (one line per question and prefix)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"model": model, "questions": questions, "n_questions": n_questions, "prefixes": summary}
    (out / "memorization.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "memorization.md").write_text(memorization_markdown(summary, model, questions))
    with (out / "memorization_samples.jsonl").open("w", encoding="utf-8") as fh:
        for row in details:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    memorization_chart(summary, out / "memorization.png", title=f"{Path(model).name}")
