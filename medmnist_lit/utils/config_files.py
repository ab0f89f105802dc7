"""YAML config files checked before any parser reads them, so every mistake is one line naming the file.

jsonargparse reports an empty config as ``Unexpected config:`` without the file, and YAML syntax errors in
``"<unicode string>"``; :func:`check_config_args` finds every config file on a command line and checks it first,
and :func:`load_yaml` is the one reader of YAML files (batch specs and their ``base:`` configs use it too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from medmnist_lit.utils.files import read_user_text

#: Options whose value is a config file.
CONFIG_OPTIONS = ("--config", "-c")
#: Option groups that also accept a config file for their section (``--data data.yaml``).
GROUP_OPTIONS = ("--data", "--model", "--trainer", "--optimizer", "--lr_scheduler", "--cv", "--lr_find", "--predict")
_YAML_SUFFIXES = (".yaml", ".yml")


class ConfigFileError(ValueError):
    """A config or spec file that cannot be used; the message names the file and what is wrong."""


def _mark(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _syntax(err: yaml.YAMLError) -> str:
    """``at line 3, column 4: <problem> (while parsing ... at line 2, column 11)`` from a PyYAML error."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if problem is None or mark is None:
        return ": " + " ".join(str(err).split())
    text = f" at {_mark(mark)}: {problem}"
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context:
        here = context_mark is None or (context_mark.line, context_mark.column) == (mark.line, mark.column)
        where = "" if here else f" that starts at {_mark(context_mark)}"
        text += f" ({context}{where})"
    return text


def _example(option: str | None) -> str:
    """What the settings of a file given to ``option`` look like."""
    if option in GROUP_OPTIONS:
        sample = {"--data": "source: PATH", "--trainer": "max_epochs: 5"}.get(option, "name: value")
        return f"`key: value` lines of the {option[2:]} section, e.g. `{sample}`"
    return "`key: value` lines, e.g. `data: {source: PATH}`"


def load_yaml(
    path: str | os.PathLike[str], *, what: str = "config file", option: str | None = None, example: str | None = None
) -> Any:
    """Read a YAML file with ``yaml.safe_load``; every problem is a one-line :class:`ConfigFileError`.

    Args:
        path: The file.
        what: How messages name it (``config file``, ``batch spec``, ``base config``).
        option: The command-line option that named it, for the remedy (``--config``).
        example: What its content should look like (default: config settings).

    Returns:
        The parsed content; never ``None`` (an empty or comment-only file is an error).

    Raises:
        ConfigFileError: Missing, a folder, unreadable, not UTF-8, invalid YAML, or empty.
    """
    path = Path(path)
    given = f"check the path given to {option}" if option else "check the path"
    text = read_user_text(path, what, given, ConfigFileError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigFileError(f"{what} {path} is not valid YAML{_syntax(err)}") from None
    if data is None:
        drop = f", or leave out {option} {path}" if option else ""
        raise ConfigFileError(
            f"{what} {path} is empty: it holds no settings (only comments, blank lines or null); "
            f"write {example or _example(option)}{drop}"
        )
    return data


def load_mapping(
    path: str | os.PathLike[str], *, what: str = "config file", option: str | None = None, example: str | None = None
) -> dict[str, Any]:
    """:func:`load_yaml`, and the top level must be a mapping of settings.

    Raises:
        ConfigFileError: As :func:`load_yaml`, or the top level is a list or a plain value.
    """
    data = load_yaml(path, what=what, option=option, example=example)
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"the {type(data).__name__} {str(data)[:40]!r}"
        raise ConfigFileError(
            f"{what} {path} holds {kind} at the top level, not a mapping of settings; "
            f"write {example or _example(option)}"
        )
    return data


def _inline_config(value: str) -> bool:
    """Whether ``value`` is a YAML mapping given inline (``--config '{trainer: {max_epochs: 1}}'``)."""
    try:
        return isinstance(yaml.safe_load(value), dict)
    except yaml.YAMLError:
        return False


def config_files(args: Sequence[str]) -> list[tuple[str, str]]:
    """``(option, path)`` of every config file named in ``args`` (``--config F``, ``--config=F``, ``-c F``).

    A group option (``--data F``) counts when its value ends in ``.yaml``/``.yml``; values that are inline YAML
    mappings or URLs are left to the parser, which reads those itself.
    """
    found = []
    items = list(args)
    for i, item in enumerate(items):
        option, eq, inline = item.partition("=")
        if option not in CONFIG_OPTIONS + GROUP_OPTIONS:
            continue
        if eq:
            value = inline
        elif i + 1 < len(items):
            value = items[i + 1]
        else:
            continue  # no value: the parser says so
        if option in GROUP_OPTIONS and not value.lower().endswith(_YAML_SUFFIXES):
            continue
        if "://" in value or (not Path(value).exists() and _inline_config(value)):
            continue
        found.append((option, value))
    return found


def check_config_args(args: Sequence[str]) -> None:
    """Check every config file named in ``args`` before a parser reads it.

    Raises:
        ConfigFileError: The first file that is missing, unreadable, invalid YAML, empty or not a mapping.
    """
    for option, path in config_files(args):
        load_mapping(path, option=option)
