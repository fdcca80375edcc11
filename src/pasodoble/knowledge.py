"""The knowledge base: snippets that ground the Proposer's problems (method.md, Online training, step 1).

Sources (``knowledge.source``):

- ``tiny``: the built-in arithmetic corpus (``assets/tiny_knowledge.jsonl``, 60 snippets);
- a local ``.jsonl`` / ``.parquet`` / ``.txt`` file, or a directory holding such files (read
  recursively, in sorted path order). jsonl and parquet records hold the text in
  ``knowledge.text_field``; a ``.txt`` file holds one snippet per blank-line-separated paragraph;
- anything else is a ``datasets`` name, streamed with ``load_dataset(name, split=..., streaming=True)``
  (for users with network access or a local datasets cache).

Sampling is reproducible and its position is part of the checkpoint (``state_dict``):

- local files are loaded into memory and visited in a fresh seeded permutation per epoch
  (permutation of epoch e = ``default_rng([seed, e]).permutation(n)``), state = (epoch, cursor);
- a stream is shuffled with a seeded buffer (``shuffle(seed).set_epoch(epoch)``), state = (epoch,
  records consumed); resuming re-opens the stream and reads past the consumed records.

``sample(tokenizer)`` caps a snippet at ``max_snippet_tokens`` tokens before it enters the prompt (the
reference code truncated prompts for the loss only). With ``knowledge.enabled = false`` (the
no-knowledge ablation) ``sample`` returns ``Snippet('none', '')`` and the prompts omit the snippet.
Snippet ids are stable: ``file:line`` (jsonl, txt paragraph start), ``file:row`` (parquet),
``name:split#epoch.position`` (streams).
"""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pasodoble.config import KnowledgeConfig
from pasodoble.errors import UserError
from pasodoble.jsonl import read_jsonl
from pasodoble.types import Snippet

SUFFIXES = (".jsonl", ".parquet", ".txt")
NO_SNIPPET = Snippet(id="none", text="")
TINY = "tiny"


def tiny_knowledge_path() -> Path:
    """Path of the built-in tiny knowledge base."""
    return Path(str(resources.files("pasodoble") / "assets" / "tiny_knowledge.jsonl"))


def cap_tokens(text: str, tokenizer: Any, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (decoded back to text); unchanged when shorter."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


# --------------------------------------------------------------------------------------------------
# Local files


def _field_error(path: Path, where: str, field: str, available: list[str]) -> UserError:
    return UserError(
        f"knowledge file {path}{where} has no field '{field}' (fields: {', '.join(map(str, available)) or 'none'}); "
        "set knowledge.text_field to the field holding the snippet text"
    )


def _read_jsonl(path: Path, field: str, prefix: str) -> list[Snippet]:
    snippets: list[Snippet] = []
    for lineno, record in read_jsonl(path, "knowledge file"):
        if field not in record:
            raise _field_error(path, f" line {lineno}", field, list(record))
        text = record[field]
        if not isinstance(text, str):
            raise UserError(
                f"knowledge file {path} line {lineno}: field '{field}' must be a string, "
                f"got {type(text).__name__}"
            )
        if text.strip():
            snippets.append(Snippet(f"{prefix}:{lineno}", text.strip()))
    return snippets


def _read_parquet(path: Path, field: str, prefix: str) -> list[Snippet]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise UserError(f"cannot read knowledge file {path} as parquet: {exc}") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise _field_error(path, "", field, names)
    snippets: list[Snippet] = []
    row = 0
    for batch in pf.iter_batches(columns=[field]):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                snippets.append(Snippet(f"{prefix}:{row}", text.strip()))
            row += 1
    return snippets


def _read_txt(path: Path, prefix: str) -> list[Snippet]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read knowledge file {path}: {exc}") from None
    snippets: list[Snippet] = []
    para: list[str] = []
    start = 0
    for lineno, line in enumerate([*lines, ""], 1):
        if line.strip():
            if not para:
                start = lineno
            para.append(line)
        elif para:
            snippets.append(Snippet(f"{prefix}:{start}", "\n".join(para).strip()))
            para = []
    return snippets


def read_local(path: Path, field: str, *, prefix: str | None = None) -> list[Snippet]:
    """All non-empty snippets of a local file or directory, in a fixed order. UserError names the file."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise UserError(f"knowledge directory {path} holds no {', '.join(SUFFIXES)} files")
        snippets: list[Snippet] = []
        for f in files:
            snippets += read_local(f, field, prefix=f.relative_to(path).as_posix())
        return snippets
    prefix = prefix if prefix is not None else path.name
    if path.suffix == ".jsonl":
        return _read_jsonl(path, field, prefix)
    if path.suffix == ".parquet":
        return _read_parquet(path, field, prefix)
    if path.suffix == ".txt":
        return _read_txt(path, prefix)
    raise UserError(f"knowledge file {path} has an unsupported type; use {', '.join(SUFFIXES)} files")


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or source.endswith((*SUFFIXES, ".json"))


# --------------------------------------------------------------------------------------------------
# The knowledge base


class KnowledgeBase:
    """Reproducible, resumable, token-capped snippet sampling from a ``KnowledgeConfig``."""

    def __init__(self, cfg: KnowledgeConfig, seed: int = 0) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0; got {seed}")
        self.cfg = cfg
        self.seed = seed
        self.epoch = 0
        self.position = 0  # local: cursor in this epoch's permutation; stream: records consumed
        self._snippets: list[Snippet] = []
        self._order: np.ndarray | None = None
        self._stream: Any = None
        if not cfg.enabled:
            self.kind = "disabled"
            return
        source = cfg.source
        if source == TINY:
            self.kind = "local"
            self._snippets = read_local(tiny_knowledge_path(), "text", prefix=TINY)
        elif Path(source).expanduser().exists():
            self.kind = "local"
            self._snippets = read_local(Path(source).expanduser(), cfg.text_field)
        elif _looks_like_path(source):
            raise UserError(f"knowledge.source {source} not found; give an existing file or directory")
        else:
            self.kind = "stream"
            self._open_stream()
            return
        if not self._snippets:
            raise UserError(
                f"knowledge base {source} is empty: no record has non-empty text in field '{cfg.text_field}'"
            )

    def __len__(self) -> int:
        """Number of snippets of a local knowledge base (0 when disabled or streamed)."""
        return len(self._snippets)

    # ----------------------------------------------------------------------------------------------

    def sample(self, tokenizer: Any) -> Snippet:
        """The next snippet, capped at ``max_snippet_tokens`` tokens of ``tokenizer`` (the Proposer's)."""
        if self.kind == "disabled":
            return NO_SNIPPET
        snippet = self._next_local() if self.kind == "local" else self._next_streamed()
        return Snippet(snippet.id, cap_tokens(snippet.text, tokenizer, self.cfg.max_snippet_tokens))

    def _next_local(self) -> Snippet:
        if self.position >= len(self._snippets):
            self.epoch += 1
            self.position = 0
            self._order = None
        if self._order is None:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self._snippets))
        snippet = self._snippets[int(self._order[self.position])]
        self.position += 1
        return snippet

    def _open_stream(self) -> None:
        import datasets

        source = self.cfg.source
        try:
            ds = datasets.load_dataset(source, split=self.cfg.split, streaming=True)
        except Exception as exc:
            raise UserError(
                f"knowledge.source '{source}' is not a local file or directory, and loading it as a "
                f"datasets name failed ({type(exc).__name__}: {exc}); check the name, knowledge.split and "
                "network access, or use a local .jsonl/.parquet/.txt file"
            ) from None
        if self.cfg.shuffle_buffer > 0:
            ds = ds.shuffle(seed=self.seed, buffer_size=self.cfg.shuffle_buffer)
            ds.set_epoch(self.epoch)
        # skip by reading: IterableDataset.skip drops the epoch set above (datasets 3-5)
        self._stream = itertools.islice(iter(ds), self.position, None)

    def _next_streamed(self) -> Snippet:
        field = self.cfg.text_field
        rollovers = 0
        while True:
            try:
                record = next(self._stream)
            except StopIteration:
                if self.position == 0 or rollovers >= 1:
                    raise UserError(
                        f"knowledge dataset '{self.cfg.source}' (split {self.cfg.split}) has no record with "
                        f"non-empty text in field '{field}'"
                    ) from None
                rollovers += 1
                self.epoch += 1
                self.position = 0
                self._open_stream()
                continue
            position = self.position
            self.position += 1
            if field not in record:
                raise UserError(
                    f"knowledge dataset '{self.cfg.source}' has no field '{field}' (fields: {', '.join(record)}); "
                    "set knowledge.text_field to the field holding the snippet text"
                )
            text = record[field]
            if isinstance(text, str) and text.strip():
                return Snippet(f"{self.cfg.source}:{self.cfg.split}#{self.epoch}.{position}", text.strip())

    # ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable sampling position: kind, source, seed, epoch, position (and size if local)."""
        return {
            "kind": self.kind,
            "source": self.cfg.source,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "size": len(self._snippets),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue sampling where ``state`` left off (the saved seed wins over the constructor's).

        A checkpoint of another knowledge base (different kind, source or number of snippets) is a
        UserError: resuming it would silently change the snippet order.
        """
        mine = self.state_dict()
        for key in ("kind", "source", "size"):
            if state[key] != mine[key]:
                raise UserError(
                    f"the checkpoint's knowledge base has {key} {state[key]!r} but this run's has {mine[key]!r}; "
                    "resume with the knowledge base the run was started with"
                )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = None
        if self.kind == "stream":
            self._open_stream()
