"""Dataclass configs with a generated command line (``--help`` lists every option)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
import typing
from collections.abc import Mapping
from typing import Any

from wmblocks.errors import UserError


def option(default, help: str, **kwargs):  # noqa: A002
    """A dataclass field with a help text for the command line. ``choices=[...]``
    restricts its values; ``min=x`` makes values below x an error (:func:`check`)."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


class _Parser(argparse.ArgumentParser):
    """Errors as one line (``prog: error: ...``, exit 2), with the closest option names
    for a misspelled flag, instead of argparse's usage block."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            hints = []
            for word in message.split(":", 1)[1].split():
                if word.startswith("-"):
                    close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.6)
                    if close:
                        hints.append(f"{word} -> {close[0]}?")
            if hints:
                message += f" (did you mean: {', '.join(hints)})"
            message += "; --help lists every option"
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def check(config) -> None:
    """Raise :class:`~wmblocks.errors.UserError` for the first field of ``config`` of the
    wrong type (a hand-edited ``config.json``), outside its ``choices``, below its
    minimum (``option(min=...)`` or the class's ``minimums`` mapping) or not greater
    than 0 (the class's ``positive`` names), naming the flag."""
    hints = typing.get_type_hints(type(config))
    minimums = getattr(type(config), "minimums", {})
    positive = getattr(type(config), "positive", ())
    for f in dataclasses.fields(config):
        value, kind, flag = getattr(config, f.name), hints[f.name], "--" + f.name.replace("_", "-")
        if kind in (int, float, str, bool) and (
            not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))
        ):
            raise UserError(f"{flag} must be {kind.__name__}, got {value!r}")
        low = f.metadata.get("min", minimums.get(f.name))
        if low is not None and value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
        if f.name in positive and not value > 0:
            raise UserError(f"{flag} must be greater than 0, got {value}")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise UserError(f"{flag} must be one of {list(f.metadata['choices'])}, got {value!r}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help; the description (a recipe's docstring, with
    its example commands) keeps its line breaks."""


def _parser(cls, description: str, defaults: Mapping[str, Any]) -> argparse.ArgumentParser:
    parser = _Parser(description=description, formatter_class=_HelpFormatter)
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
    config = cls(**vars(args))
    check(config)
    return config


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
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the run's configuration {path} ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"the run's configuration {path} is not a JSON object of options")
    hints = typing.get_type_hints(cls)
    values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
    for name, value in values.items():  # JSON writes 512.0 as written: 512 is a float too
        if hints[name] is float and type(value) is int:
            values[name] = float(value)
    config = cls(**values)
    try:
        check(config)
    except UserError as e:
        raise UserError(f"the run's configuration {path} is invalid: {e}") from None
    return config
