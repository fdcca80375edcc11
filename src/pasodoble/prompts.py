"""Proposer and Solver prompts, and their rendering with a tokenizer's chat template.

The Proposer reads a knowledge snippet, thinks, writes a new self-contained problem inside
``<problem>...</problem>`` and then a worked solution ending in ``\\boxed{answer}`` (the format that
``parse.parse_proposal`` reads). The Solver solves a problem step by step and boxes its final answer.

Templates are plain strings with a ``{snippet}`` (Proposer) or ``{problem}`` (Solver) placeholder,
filled by literal replacement (not ``str.format``), so a template may contain LaTeX braces such as
``\\boxed{}``. ``proposer.prompt`` / ``solver.prompt`` in the config override the built-in ones.
"""

from __future__ import annotations

from typing import Any

from pasodoble.config import ConfigError
from pasodoble.types import Snippet

PROPOSER = "proposer"
SOLVER = "solver"
ROLES = (PROPOSER, SOLVER)
PLACEHOLDERS = {PROPOSER: "{snippet}", SOLVER: "{problem}"}

PROPOSER_TEMPLATE = """\
You write math problems for a strong student. Here is a passage to draw on:

<snippet>
{snippet}
</snippet>

Read the passage and think about the mathematical ideas in it. Then write one new math problem that \
builds on those ideas without copying the passage. The problem must be self-contained (a reader who \
has not seen the passage can solve it), have a single exact final answer, and must not state or hint \
at that answer.

Reply in this format: first the problem between <problem> and </problem>, then a complete \
step-by-step solution that ends with the final answer in \\boxed{}."""

PROPOSER_TEMPLATE_NO_KNOWLEDGE = """\
You write math problems for a strong student. Think about an interesting mathematical idea, then write \
one new math problem about it. The problem must be self-contained, have a single exact final answer, \
and must not state or hint at that answer.

Reply in this format: first the problem between <problem> and </problem>, then a complete \
step-by-step solution that ends with the final answer in \\boxed{}."""

SOLVER_TEMPLATE = """\
Solve the following math problem. Reason step by step, then give the final answer in \\boxed{}.

{problem}"""

THINK_OPEN = "<think>\n"
PLAIN_FORMAT = "User:\n{content}\n\nAssistant:\n"


def check_template(template: str, role: str, *, knowledge: bool = True) -> None:
    """Raise ConfigError naming ``<role>.prompt`` when the template lacks its placeholder.

    A Proposer template needs ``{snippet}`` unless the run has no knowledge base (``knowledge=False``).
    """
    placeholder = PLACEHOLDERS[role]
    if placeholder in template or (role == PROPOSER and not knowledge):
        return
    raise ConfigError(f"{role}.prompt must contain the placeholder {placeholder}; got {template!r}")


def user_message(
    role: str,
    *,
    snippet: Snippet | str | None = None,
    problem: str | None = None,
    template: str | None = None,
    task: Any = None,
) -> str:
    """The user-turn text of a role's prompt, before any chat formatting.

    Proposer: an empty or missing snippet (the no-knowledge mode) selects the built-in template without
    a snippet; a custom template then gets an empty ``{snippet}``. Solver: ``problem`` is required.
    ``task`` (a ``tasks.Task``) gives the built-in templates; None = the math task's, defined here.
    """
    if role == PROPOSER:
        text = snippet.text if isinstance(snippet, Snippet) else (snippet or "")
        if template is None:
            with_snippet = task.proposer_template if task is not None else PROPOSER_TEMPLATE
            without = (
                task.proposer_template_no_knowledge if task is not None else PROPOSER_TEMPLATE_NO_KNOWLEDGE
            )
            return with_snippet.replace("{snippet}", text) if text else without
        check_template(template, role, knowledge=bool(text))
        return template.replace("{snippet}", text)
    if role == SOLVER:
        if problem is None:
            raise ValueError("the Solver prompt needs a problem")
        if template is None:
            template = task.solver_template if task is not None else SOLVER_TEMPLATE
        check_template(template, role)
        return template.replace("{problem}", problem)
    raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")


def apply_chat(content: str, tokenizer: Any, *, open_thinking: bool = False) -> str:
    """Wrap one user message with the tokenizer's chat template and its generation prompt.

    Tokenizers without a chat template (or ``tokenizer=None``) get the plain ``PLAIN_FORMAT``.
    ``open_thinking`` appends ``<think>\\n`` so the completion starts inside the thinking section
    (not twice when the template already opens it).
    """
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": content}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        prompt = PLAIN_FORMAT.replace("{content}", content)
    if open_thinking and not opens_thinking(prompt):
        prompt += THINK_OPEN
    return prompt


def opens_thinking(prompt: str) -> bool:
    """Whether a rendered prompt ends inside an open thinking section (pass to ``parse_proposal``)."""
    return prompt.rstrip().endswith(THINK_OPEN.strip())


def build_prompt(
    role: str,
    tokenizer: Any,
    *,
    snippet: Snippet | str | None = None,
    problem: str | None = None,
    template: str | None = None,
    open_thinking: bool = False,
    task: Any = None,
) -> str:
    """The full prompt text of a role, ready to tokenize for generation.

    ``role`` is ``'proposer'`` (give ``snippet``; none or empty = no-knowledge prompt) or ``'solver'``
    (give ``problem``); ``template`` overrides the built-in user message (``proposer.prompt`` /
    ``solver.prompt``); ``open_thinking`` is ``rollout.open_thinking``; ``task`` gives the built-in
    templates (None = math).
    """
    content = user_message(role, snippet=snippet, problem=problem, template=template, task=task)
    return apply_chat(content, tokenizer, open_thinking=open_thinking)
