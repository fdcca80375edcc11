"""The knowledge base: snippets that ground the Proposer's problems (method.md, Online training, step 1).

Sources (``knowledge.source``):

- ``tiny``: the built-in arithmetic corpus (``assets/tiny_knowledge.jsonl``, 60 snippets);
- a local ``.jsonl`` / ``.parquet`` / ``.txt`` file, or a directory holding such files (read
  recursively, in sorted path order). jsonl and parquet records hold the text in
  ``knowledge.text_field``; a ``.txt`` file holds one snippet per blank-line-separated paragraph;
- anything else is a ``datasets`` name, streamed with ``load_dataset(name, config_name, split=...,
  data_files=..., streaming=True)`` (for users with network access or a local datasets cache).

Local files are read a line (jsonl, txt) or a row group (parquet) at a time, never whole (pyarrow
holds a few times one row group's text column, measured: give large exports row groups of tens of MB).
How they are sampled depends on their total size (``knowledge.max_memory_mb``):

- up to that size, the snippets are held in memory and visited in a fresh seeded permutation per
  epoch (permutation of epoch e = ``default_rng([seed, e]).permutation(n)``), state = (epoch, cursor);
- above it (a multi-GB corpus export), they are streamed: the files become the shards of a
  ``datasets.IterableDataset`` (``from_generator``), shuffled with a seeded buffer of
  ``knowledge.shuffle_buffer`` records (``shuffle(seed).set_epoch(epoch)``: a new file order and
  record mix per epoch), state = (epoch, records consumed). Memory holds the buffer, not the corpus.

A ``datasets`` name is streamed the same way. Resuming a stream re-opens it and reads past the
consumed records, so the resumed run draws exactly the snippets an uninterrupted one would have.

``sample(tokenizer)`` caps a snippet at ``max_snippet_tokens`` tokens before it enters the prompt (the
reference code truncated prompts for the loss only). With ``knowledge.enabled = false`` (the
no-knowledge ablation) ``sample`` returns ``Snippet('none', '')`` and the prompts omit the snippet.
Snippet ids are stable: ``file:line`` (jsonl, txt paragraph start), ``file:row`` (parquet), the file
relative to the source directory; ``name:split#epoch.position`` (datasets names).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
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
TOY = "toy"
PARQUET_BATCH_ROWS = 256  # rows read at a time from a parquet file (bounded memory for long documents)


def tiny_knowledge_path() -> Path:
    """Path of the built-in tiny knowledge base."""
    return Path(str(resources.files("pasodoble") / "assets" / "tiny_knowledge.jsonl"))


def toy_knowledge_path() -> Path:
    """Path of the built-in toy knowledge base (2,000 worked toy-world problems; make_toy_knowledge.py)."""
    return Path(str(resources.files("pasodoble") / "assets" / "toy_knowledge.jsonl"))


BUILT_IN = {TINY: tiny_knowledge_path, TOY: toy_knowledge_path}  # knowledge.source names of the assets


# characters per token assumed for the first cut (a few per token in practice); grown when short
_CHARS_PER_TOKEN = 8
# tokens past max_tokens that the cut prefix must still give: only the last few tokens of a prefix can
# differ from the full text's (the cut may fall inside a word)
_CUT_MARGIN = 16


def cap_tokens(text: str, tokenizer: Any, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (decoded back to text); unchanged when shorter.

    Only a prefix of ``text`` is tokenized: ``_CHARS_PER_TOKEN * (max_tokens + _CUT_MARGIN)`` characters,
    four times more while it gives fewer than ``max_tokens + _CUT_MARGIN`` tokens, so time and memory
    follow ``max_snippet_tokens``, not the record (a 20 MB record took 4.1 GB tokenized whole).
    """
    limit = _CHARS_PER_TOKEN * (max_tokens + _CUT_MARGIN)
    while True:
        ids = tokenizer(text[:limit], add_special_tokens=False)["input_ids"]
        if limit >= len(text) or len(ids) >= max_tokens + _CUT_MARGIN:
            break
        limit *= 4
    if len(ids) <= max_tokens and limit >= len(text):
        return text
    capped = tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)
    # a cut inside a character of several byte-level tokens (CJK, '∑') decodes to U+FFFD: drop the half
    return capped if "\ufffd" in text else capped.rstrip("\ufffd")


# --------------------------------------------------------------------------------------------------
# Local files, read incrementally


def _field_error(path: Path, where: str, field: str, available: list[str]) -> UserError:
    return UserError(
        f"knowledge file {path}{where} has no field '{field}' (fields: {', '.join(map(str, available)) or 'none'}); "
        "set knowledge.text_field to the field holding the snippet text"
    )


def _jsonl_snippets(path: Path, field: str, prefix: str) -> Iterator[Snippet]:
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
            yield Snippet(f"{prefix}:{lineno}", text.strip())


def _parquet_snippets(path: Path, field: str, prefix: str) -> Iterator[Snippet]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)  # page by page, no read-ahead
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise UserError(f"cannot read knowledge file {path} as parquet: {exc}") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise _field_error(path, "", field, names)
    kind = pf.schema_arrow.field(field).type
    import pyarrow as pa

    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
        raise UserError(  # an integer column used to read as "empty"
            f"knowledge file {path}: column '{field}' holds {kind}, not text; set knowledge.text_field to "
            "the column holding the snippet text"
        )
    row = 0
    # one row group at a time: over all row groups at once, pyarrow reads ahead (the whole file, measured)
    for group in range(pf.num_row_groups):
        batches = pf.iter_batches(
            batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=[field], use_threads=False
        )
        for batch in batches:
            for text in batch.column(0).to_pylist():
                if isinstance(text, str) and text.strip():
                    yield Snippet(f"{prefix}:{row}", text.strip())
                row += 1


def _txt_snippets(path: Path, prefix: str) -> Iterator[Snippet]:
    para: list[str] = []
    start = 0
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(itertools.chain(fh, [""]), 1):
                if line.strip():
                    if not para:
                        start = lineno
                    para.append(line.rstrip("\n"))
                elif para:
                    yield Snippet(f"{prefix}:{start}", "\n".join(para).strip())
                    para = []
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read knowledge file {path}: {exc}") from None


def local_files(path: Path) -> list[Path]:
    """The knowledge files of a local source: the file itself, or a directory's files in sorted order."""
    if not path.is_dir():
        if path.suffix not in SUFFIXES:
            raise UserError(f"knowledge file {path} has an unsupported type; use {', '.join(SUFFIXES)} files")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise UserError(f"knowledge directory {path} holds no {', '.join(SUFFIXES)} files")
    return files


def file_snippets(path: Path, field: str, prefix: str) -> Iterator[Snippet]:
    """The non-empty snippets of one file, read incrementally. UserError names the file (and line)."""
    if path.suffix == ".jsonl":
        return _jsonl_snippets(path, field, prefix)
    if path.suffix == ".parquet":
        return _parquet_snippets(path, field, prefix)
    if path.suffix == ".txt":
        return _txt_snippets(path, prefix)
    raise UserError(f"knowledge file {path} has an unsupported type; use {', '.join(SUFFIXES)} files")


def iter_local(path: Path, field: str, *, prefix: str | None = None) -> Iterator[Snippet]:
    """All non-empty snippets of a local file or directory, in a fixed order, one at a time."""
    if path.is_dir():
        for f in local_files(path):
            yield from file_snippets(f, field, f.relative_to(path).as_posix())
    else:
        local_files(path)  # the type check
        yield from file_snippets(path, field, prefix if prefix is not None else path.name)


def read_local(path: Path, field: str, *, prefix: str | None = None) -> list[Snippet]:
    """All non-empty snippets of a local file or directory, in a fixed order. UserError names the file."""
    return list(iter_local(path, field, prefix=prefix))


def _stream_records(files: list[str], root: str, field: str) -> Iterator[dict[str, str]]:
    """``datasets`` generator of a streamed local knowledge base: one shard per file (``files``)."""
    for name in files:
        path = Path(name)
        prefix = path.relative_to(root).as_posix() if root else path.name
        for snippet in file_snippets(path, field, prefix):
            yield {"id": snippet.id, "text": snippet.text}


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
        self.position = 0  # in memory: cursor in this epoch's permutation; streams: records consumed
        self.bytes = 0  # total size of local files
        self._snippets: list[Snippet] = []
        self._order: np.ndarray | None = None
        self._stream: Any = None
        self._files: list[Path] = []
        self._root = ""
        if not cfg.enabled:
            self.kind = "disabled"
            return
        source = cfg.source
        if source in BUILT_IN:
            self.kind = "local"
            self._snippets = read_local(BUILT_IN[source](), "text", prefix=source)
        elif Path(source).expanduser().exists():
            path = Path(source).expanduser()
            self._files = local_files(path)
            self._root = str(path) if path.is_dir() else ""
            self.bytes = sum(f.stat().st_size for f in self._files)
            if self.bytes <= cfg.max_memory_mb * 2**20:
                self.kind = "local"
                self._snippets = read_local(path, cfg.text_field)
            else:
                self.kind = "local_stream"
                # fail early on a file whose first record is unusable (missing field, not JSON, ...)
                next(iter_local(path, cfg.text_field), None)
                self._open_stream()
                return
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
        """Number of snippets held in memory (0 when disabled or streamed)."""
        return len(self._snippets)

    # ----------------------------------------------------------------------------------------------

    def sample(self, tokenizer: Any) -> Snippet:
        """The next snippet, capped at ``max_snippet_tokens`` tokens of ``tokenizer`` (the Proposer's)."""
        if self.kind == "disabled":
            return NO_SNIPPET
        snippet = self.next_snippet()
        return Snippet(snippet.id, cap_tokens(snippet.text, tokenizer, self.cfg.max_snippet_tokens))

    def next_snippet(self) -> Snippet:
        """The next snippet in the seeded order, whole (no token cap; ``pasodoble knowledge sample``).
        ``epoch`` moves past 0 once every snippet of the source was drawn."""
        if self.kind == "disabled":
            return NO_SNIPPET
        return self._next_local() if self.kind == "local" else self._next_streamed()

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

    def _dataset(self):
        """The unshuffled ``datasets.IterableDataset`` of a streamed source."""
        import datasets

        if self.kind == "local_stream":
            return datasets.IterableDataset.from_generator(
                _stream_records,
                features=datasets.Features(
                    {"id": datasets.Value("string"), "text": datasets.Value("string")}
                ),
                gen_kwargs={
                    "files": [str(f) for f in self._files],
                    "root": self._root,
                    "field": self.cfg.text_field,
                },
            )
        cfg = self.cfg
        try:
            return datasets.load_dataset(
                cfg.source,
                name=cfg.config_name,
                split=cfg.split,
                data_files=list(cfg.data_files) or None,
                streaming=True,
            )
        except Exception as exc:
            raise UserError(
                f"knowledge.source '{cfg.source}' is not a local file or directory, and loading it as a "
                f"datasets name failed ({type(exc).__name__}: {exc}); check the name, knowledge.config_name, "
                "knowledge.split, knowledge.data_files and network access, or use a local "
                ".jsonl/.parquet/.txt file"
            ) from None

    def _open_stream(self) -> None:
        ds = self._dataset()
        if self.cfg.shuffle_buffer > 0:
            ds = ds.shuffle(seed=self.seed, buffer_size=self.cfg.shuffle_buffer)
            ds.set_epoch(self.epoch)
        # skip by reading: IterableDataset.skip drops the epoch set above (datasets 3-5), and its
        # state_dict does not keep the shuffle buffer, so only reading past the records is exact
        self._stream = itertools.islice(iter(ds), self.position, None)

    def _next_streamed(self) -> Snippet:
        local = self.kind == "local_stream"
        field = "text" if local else self.cfg.text_field
        rollovers = 0
        while True:
            try:
                record = next(self._stream)
            except StopIteration:
                if self.position == 0 or rollovers >= 1:
                    split = "" if local else f" (split {self.cfg.split})"
                    raise UserError(
                        f"knowledge {'files' if local else 'dataset'} '{self.cfg.source}'{split} have no record "
                        f"with non-empty text in field '{self.cfg.text_field}'"
                    ) from None
                rollovers += 1
                self.epoch += 1
                self.position = 0
                self._open_stream()
                continue
            position = self.position
            self.position += 1
            if local:
                return Snippet(record["id"], record["text"])
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
        """JSON-serializable sampling position: kind, source, seed, epoch, position, size (snippets held
        in memory) and bytes (total size of local files)."""
        return {
            "kind": self.kind,
            "source": self.cfg.source,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "size": len(self._snippets),
            "bytes": self.bytes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue sampling where ``state`` left off (the saved seed wins over the constructor's).

        A checkpoint of another knowledge base (different kind, source, number of snippets or size of
        the local files) is a UserError: resuming it would silently change the snippet order.
        """
        mine = self.state_dict()
        for key in ("kind", "source", "size", "bytes"):
            if key == "bytes" and key not in state:
                continue  # checkpoints written before the size was recorded
            if state[key] != mine[key]:
                raise UserError(
                    f"the checkpoint's knowledge base has {key} {state[key]!r} but this run's has {mine[key]!r}; "
                    "resume with the knowledge base (and knowledge.max_memory_mb) the run was started with"
                )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = None
        if self.kind in ("stream", "local_stream"):
            self._open_stream()
