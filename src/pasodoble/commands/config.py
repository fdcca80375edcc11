"""`pasodoble config [CONFIG.yaml] [key=value ...]`: print the resolved config, or its reference."""

from __future__ import annotations

import argparse

import yaml

from pasodoble.config import config_reference_markdown, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config file (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides")
    parser.add_argument(
        "--markdown", action="store_true", help="print the configuration reference (docs/configuration.md)"
    )


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(config_reference_markdown())
        return 0
    path = args.config
    overrides = list(args.overrides)
    if path is not None and "=" in path and not path.endswith((".yaml", ".yml")):
        overrides.insert(0, path)
        path = None
    cfg = load_config(path, overrides)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0
