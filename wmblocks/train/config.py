"""Dataclass configs with a generated command line (``--help`` lists every option)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Mapping
from typing import Any

from wmblocks.errors import UserError


def option(default, help: str, **kwargs):  # noqa: A002
    """A dataclass field with a help text for the command line."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help; the description (a recipe's docstring, with
    its example commands) keeps its line breaks."""


def _parser(cls, description: str, defaults: Mapping[str, Any]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        kw = {"default": defaults.get(f.name, f.default), "help": f.metadata.get("help", "")}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if kind is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(name, type=kind, **kw)
    return parser


def parse_config(
    cls,
    argv: list[str] | None = None,
    description: str = "",
    suites: Mapping[str, Mapping[str, Any]] | None = None,
):
    """Build ``cls`` (a dataclass) from the command line: one ``--name`` per field,
    typed by the field's default, documented by its ``help``; booleans get
    ``--name/--no-name``; fields with ``choices`` metadata are checked.

    ``suites`` maps a suite name to the field values it sets (a recipe's reference
    settings per benchmark suite); ``--suite NAME`` makes them the defaults, so flags
    given explicitly still win. A suite the recipe has no preset for is a
    :class:`~wmblocks.errors.UserError` listing the ones it has.
    """
    defaults: Mapping[str, Any] = {}
    if suites is not None and "suite" in {f.name for f in dataclasses.fields(cls)}:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--suite", default="")
        suite = pre.parse_known_args(argv)[0].suite
        if suite:
            if suite not in suites:
                raise UserError(
                    f"this recipe has no --suite {suite!r} preset; it has: "
                    f"{', '.join(sorted(suites)) or 'none'}"
                )
            defaults = suites[suite]
    args = _parser(cls, description, defaults).parse_args(argv)
    return cls(**vars(args))


def given_options(cls, argv: list[str] | None = None) -> set[str]:
    """The field names of ``cls`` set explicitly on the command line ``argv`` (what
    ``--resume`` takes over a saved run's values; defaults and suite presets are not
    "given")."""
    parser = _parser(cls, "", {})
    for action in parser._actions:
        if action.dest != "help":
            action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def save_config(config, path: str) -> None:
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=1)


def load_config(cls, path: str):
    """The ``cls`` saved at ``path`` by :func:`save_config` (unknown keys ignored); a
    missing or unreadable file is a :class:`~wmblocks.errors.UserError` naming it."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the run's configuration {path} ({e})") from None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
