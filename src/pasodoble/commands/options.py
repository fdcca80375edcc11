"""Command-line options built from a dataclass's fields: one help text per field, written once, in the
dataclass (as TRL's ``HfArgumentParser`` does). ``field_name`` becomes ``--field-name``; ``metadata`` gives
``help``, and optionally ``choices``, ``required`` and ``metavar``."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def _names(text: str) -> list[str]:
    """A comma-separated list option: ``"a, b"`` -> ``["a", "b"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def add_dataclass_options(
    parser: argparse.ArgumentParser, cls: type, *, exclude: tuple[str, ...] = ()
) -> None:
    """Add one option per field of the dataclass ``cls`` (but ``exclude``):

    - ``bool`` defaulting to False: a flag ``--name``; defaulting to True: ``--no-name`` (stores False);
    - ``list[str]``: a comma-separated value;
    - ``X | None``: a value of type X, default None;
    - otherwise a value of the field's type, its default shown in the help.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        meta = f.metadata
        help_ = meta.get("help", "")
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        default: Any = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_}
        if tp is bool:
            if default:
                parser.add_argument("--no-" + f.name.replace("_", "-"), action="store_false", **kwargs)
            else:
                parser.add_argument(flag, action="store_true", **kwargs)
            continue
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is list:
            kwargs.update(type=_names, default=list(default), metavar=meta.get("metavar", "A,B"))
        else:
            if args and type(None) in args:  # X | None
                tp = next(a for a in args if a is not type(None))
            kwargs.update(type=tp, default=default)
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
            if "metavar" in meta:
                kwargs["metavar"] = meta["metavar"]
            if meta.get("required"):
                kwargs.update(required=True)
                del kwargs["default"]
            elif default not in (None, ""):
                kwargs["help"] = f"{help_} (default %(default)s)"
        parser.add_argument(flag, **kwargs)


def dataclass_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values of ``cls``'s fields among the parsed ``args``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
