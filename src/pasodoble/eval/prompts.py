"""Evaluation prompts: the 0-shot Solver prompt used in training, and a 4-shot prompt for base models.

0-shot (trained models): exactly the Solver prompt of training (``pasodoble.prompts``), so evaluation
measures the policy that was trained. 4-shot (base models, as in the paper's Table 1 for the base
rows): plain text, no chat template, four fixed worked examples written for this project, each ending
in ``\\boxed{}``; the model continues after ``Solution:``. A base model tends to go on with a fifth
"Problem:", so ``truncate_few_shot`` cuts the response there before the answer is extracted.
"""

from __future__ import annotations

from typing import Any

FEW_SHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "A bakery sells muffins for $3 each and cookies for $2 each. Lena buys 4 muffins and some "
        "cookies and pays $22 in total. How many cookies does she buy?",
        "The muffins cost $4 \\times 3 = 12$ dollars, so the cookies cost $22 - 12 = 10$ dollars. "
        "At $2$ dollars each, that is $10 / 2 = 5$ cookies. The final answer is $\\boxed{5}$.",
    ),
    (
        "Find all real $x$ such that $x^2 - 7x + 10 = 0$. Give the sum of the solutions.",
        "Factor: $x^2 - 7x + 10 = (x - 2)(x - 5)$, so $x = 2$ or $x = 5$. "
        "Their sum is $2 + 5 = 7$. The final answer is $\\boxed{7}$.",
    ),
    (
        "Two fair six-sided dice are rolled. What is the probability that the sum of the numbers shown is 9?",
        "There are $6 \\cdot 6 = 36$ equally likely outcomes. The pairs with sum $9$ are "
        "$(3,6), (4,5), (5,4), (6,3)$, which is $4$ outcomes, so the probability is "
        "$\\frac{4}{36} = \\frac{1}{9}$. The final answer is $\\boxed{\\frac{1}{9}}$.",
    ),
    (
        "What is the remainder when $2^{10}$ is divided by $7$?",
        "Powers of $2$ modulo $7$ repeat with period $3$: $2^1 \\equiv 2$, $2^2 \\equiv 4$, "
        "$2^3 \\equiv 1$. Since $10 = 3 \\cdot 3 + 1$, we get $2^{10} \\equiv 2^1 = 2 \\pmod 7$. "
        "The final answer is $\\boxed{2}$.",
    ),
)

FEW_SHOT_HEADER = "Solve each math problem step by step. Put the final answer in \\boxed{}.\n\n"
FEW_SHOT_STOP = "\nProblem:"


def few_shot_prompt(problem: str, shots: int = 4) -> str:
    """The plain-text k-shot prompt (k <= 4) ending in ``Solution:`` for the model to continue."""
    if not 0 <= shots <= len(FEW_SHOT_EXAMPLES):
        raise ValueError(f"shots must be in [0, {len(FEW_SHOT_EXAMPLES)}]; got {shots}")
    parts = [FEW_SHOT_HEADER]
    for q, a in FEW_SHOT_EXAMPLES[:shots]:
        parts.append(f"Problem: {q}\nSolution: {a}\n\n")
    parts.append(f"Problem: {problem.strip()}\nSolution:")
    return "".join(parts)


def truncate_few_shot(response: str) -> str:
    """Cut a few-shot response where the model starts writing the next example ("Problem:" on a new line)."""
    cut = response.find(FEW_SHOT_STOP)
    return response if cut < 0 else response[:cut]


def solver_prompt_ids(
    tokenizer: Any, problem: str, *, template: str | None = None, open_thinking: bool = False
) -> list[int]:
    """Token ids of the 0-shot Solver prompt exactly as training builds it (``pasodoble.prompts``):
    chat template applied, ``template`` = ``solver.prompt``, ``open_thinking`` = ``rollout.open_thinking``."""
    from pasodoble.prompts import build_prompt

    text = build_prompt("solver", tokenizer, problem=problem, template=template, open_thinking=open_thinking)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eval_prompt_ids(
    tokenizer: Any, problem: str, few_shot: int, *, template: str | None = None, open_thinking: bool = False
) -> list[int]:
    """Prompt token ids for one benchmark problem: the Solver prompt (0) or the k-shot prompt."""
    if few_shot == 0:
        return solver_prompt_ids(tokenizer, problem, template=template, open_thinking=open_thinking)
    return list(tokenizer(few_shot_prompt(problem, few_shot), add_special_tokens=False)["input_ids"])


def postprocess_response(text: str, few_shot: int) -> str:
    """The response as graded and stored: few-shot responses are cut at the next 'Problem:'."""
    return truncate_few_shot(text) if few_shot else text
