"""`pasodoble knowledge sample`: a local JSONL sample of any knowledge source, for offline use.

    pasodoble knowledge sample SOURCE --n N --out FILE.jsonl [--seed S] [--text-field F] \\
        [--split S] [--config-name C] [--data-files PATTERN ...] [--shuffle-buffer K] [--max-chars M]
    pasodoble knowledge sample --config TRAIN.yaml --n N --out FILE.jsonl     # the config's knowledge section

SOURCE is anything ``knowledge.source`` accepts (``pasodoble.knowledge.KnowledgeBase``): a local
``.jsonl``/``.parquet``/``.txt`` file or directory, a Hugging Face ``datasets`` name (streamed, e.g.
``OctoThinker/MegaMath-Web-Pro-Max``), or the built-in ``tiny`` / ``toy``. The first N snippets of the
knowledge base's seeded order (a seeded permutation for sources that fit in memory, a seeded shuffle
buffer for streams) are written whole, one JSON object a line: ``{"text": ..., "source": SOURCE,
"id": ...}`` where ``id`` is the snippet's origin in the source (``file:line``, ``file:row``,
``name:split#epoch.position``: the position in the seeded stream). Fewer are written when the source
holds fewer (each snippet at most once). The file is a knowledge source itself
(``knowledge.source: FILE.jsonl``, ``sft build-data --knowledge FILE.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="knowledge_command", metavar="{sample}")
    p = sub.add_parser(
        "sample",
        help="write a local JSONL sample of a knowledge source (file, directory, datasets name, tiny, toy)",
        description="Write the first N snippets of a knowledge source's seeded order to a JSONL file "
        '({"text", "source", "id"} a line), a knowledge source itself for offline use.',
    )
    p.add_argument(
        "source",
        nargs="?",
        default=None,
        help="knowledge.source: a .jsonl/.parquet/.txt file or directory, a datasets name (streamed, e.g. "
        "OctoThinker/MegaMath-Web-Pro-Max), tiny or toy (default: --config's knowledge.source)",
    )
    p.add_argument("--n", type=int, required=True, help="snippets to write")
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.add_argument(
        "--config",
        default=None,
        metavar="TRAIN.yaml",
        help="take the knowledge section (source, text_field, split, config_name, data_files, "
        "shuffle_buffer) from a training config; the options below win",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default %(default)s)")
    p.add_argument("--text-field", default=None, help="record field holding the text (default text)")
    p.add_argument("--split", default=None, help="datasets name only: split to stream (default train)")
    p.add_argument("--config-name", default=None, help="datasets name only: the dataset's configuration")
    p.add_argument(
        "--data-files",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="datasets name only: files of the dataset to stream (paths or globs inside its repository)",
    )
    p.add_argument(
        "--shuffle-buffer",
        type=int,
        default=None,
        help="streamed sources: shuffle buffer in records; 0 = file order (default 10000)",
    )
    p.add_argument(
        "--max-chars", type=int, default=None, help="cut each text to this many characters (default: whole)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _knowledge_config(args: argparse.Namespace):
    import dataclasses

    from pasodoble.config import ConfigError, KnowledgeConfig, load_config
    from pasodoble.errors import UserError

    if args.config is not None:
        try:
            cfg = dataclasses.replace(load_config(args.config).knowledge, enabled=True)
        except ConfigError as exc:
            raise UserError(f"--config {args.config}: {exc}") from None
        if args.source is not None and args.source != cfg.source:  # another source: drop dataset-only fields
            cfg = dataclasses.replace(cfg, source=args.source, config_name=None, data_files=[])
    elif args.source is not None:
        cfg = KnowledgeConfig(source=args.source)
    else:
        raise UserError(
            "give a SOURCE (a file, directory, datasets name, tiny or toy) or --config TRAIN.yaml"
        )
    updates = {
        "text_field": args.text_field,
        "split": args.split,
        "config_name": args.config_name,
        "data_files": args.data_files,
        "shuffle_buffer": args.shuffle_buffer,
    }
    return dataclasses.replace(cfg, **{k: v for k, v in updates.items() if v is not None})


def sample(args: argparse.Namespace) -> dict:
    """Write the sample (atomically: a temporary file renamed over ``--out``) and return its summary."""
    from pathlib import Path

    from tqdm import tqdm

    from pasodoble.errors import UserError
    from pasodoble.knowledge import KnowledgeBase

    if args.n < 1:
        raise UserError(f"--n must be >= 1; got {args.n}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0; got {args.seed}")
    if args.max_chars is not None and args.max_chars < 1:
        raise UserError(f"--max-chars must be >= 1; got {args.max_chars}")
    if args.shuffle_buffer is not None and args.shuffle_buffer < 0:
        raise UserError(f"--shuffle-buffer must be >= 0; got {args.shuffle_buffer}")
    out = Path(args.out).expanduser()
    if out.suffix != ".jsonl":
        raise UserError(f"--out {args.out} must end in .jsonl (the sample is a JSONL knowledge file)")
    if out.is_dir():
        raise UserError(f"--out {args.out} is a directory; give a .jsonl file path")
    if out.exists() and not args.overwrite:
        raise UserError(f"--out {args.out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise UserError(f"--out {args.out}: directory {out.parent} does not exist; create it first")
    cfg = _knowledge_config(args)
    kb = KnowledgeBase(cfg, seed=args.seed)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    written = 0
    chars = 0
    try:
        with (
            open(tmp, "w", encoding="utf-8") as fh,
            tqdm(
                total=args.n, desc="sample", unit="snippet", disable=args.no_progress, file=sys.stderr
            ) as bar,
        ):
            while written < args.n:
                snippet = kb.next_snippet()
                if kb.epoch > 0:  # every snippet of the source was written once
                    break
                text = snippet.text if args.max_chars is None else snippet.text[: args.max_chars]
                fh.write(
                    json.dumps({"text": text, "source": cfg.source, "id": snippet.id}, ensure_ascii=False)
                )
                fh.write("\n")
                written += 1
                chars += len(text)
                bar.update(1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "out": str(out),
        "written": written,
        "asked": args.n,
        "source": cfg.source,
        "kind": kb.kind,
        "seed": args.seed,
        "exhausted": written < args.n,
        "chars": chars,
    }


def run(args: argparse.Namespace) -> int:
    from pasodoble.errors import UserError

    if args.knowledge_command != "sample":
        raise UserError("give a subcommand: pasodoble knowledge sample SOURCE --n N --out FILE.jsonl")
    summary = sample(args)
    if summary["exhausted"]:
        print(
            f"pasodoble knowledge sample: {summary['source']} holds {summary['written']} non-empty snippets; "
            f"wrote all of them (--n {summary['asked']})",
            file=sys.stderr,
        )
    print(json.dumps(summary))
    return 0
