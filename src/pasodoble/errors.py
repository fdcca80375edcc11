"""User-facing errors: the CLI prints their message on one line and exits non-zero, without a traceback."""

from __future__ import annotations

from pasodoble.config import ConfigError


class UserError(RuntimeError):
    """Bad input from the user (a file, a path, a checkpoint): the message names it and what to do."""

    exit_code = 1


__all__ = ["ConfigError", "UserError"]
