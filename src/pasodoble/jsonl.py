"""Reading user-supplied JSONL files with one-line errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pasodoble.errors import UserError


def read_jsonl(path: str | Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, record)`` for each non-blank line of a JSONL file.

    ``what`` names the file's role in messages ("benchmark file", "knowledge file", ...). A missing or
    unreadable file, a line that is not valid JSON, or a line that is not a JSON object raises a
    UserError naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found")
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{what} {path} line {lineno} is not valid JSON: {exc.msg}") from None
                if not isinstance(record, dict):
                    raise UserError(f"{what} {path} line {lineno} must be a JSON object")
                yield lineno, record
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None
