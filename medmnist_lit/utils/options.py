"""Short errors for misspelled options: one line with a "did you mean" suggestion instead of the full usage.

Works on any argparse/jsonargparse parser: the candidates are every option string it accepts (nested dotted keys
such as ``--trainer.max_epochs`` included) and, for a class given by ``class_path`` (``--optimizer SGD``), the
parameters of that class.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["OptionError", "explain_parse_error", "option_names", "suggest"]

_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)", re.IGNORECASE)
_GROUP = re.compile(r"Group '([\w.]+)' does not accept option '([\w.]+)'")
_TOP = re.compile(r"^Option '([\w.]+)' is not accepted")
_CLASS = re.compile(
    r"Parser key \"([\w.]+)\".*?given class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", re.DOTALL
)


class OptionError(ValueError):
    """A command line or config file names an option the command does not have."""


def option_names(parser: Any) -> list[str]:
    """Every ``--option`` of ``parser``, nested dotted keys included (not ``--x.help`` nor list-append ``--x+``)."""
    names = []
    for action in getattr(parser, "_actions", []):
        for name in action.option_strings:
            if name.startswith("--") and not name.endswith((".help", "+")):
                names.append(name)
    return list(dict.fromkeys(names))


def suggest(name: str, candidates: Sequence[str]) -> str | None:
    """The closest of ``candidates`` to ``name`` (difflib), or ``None`` when none is close.

    Options of the same group (``--trainer.…`` for ``--trainer.max_epoch``) come first: a misspelled last part is
    the common typo.
    """
    group = name.rpartition(".")[0]
    if group:
        within = [c.rpartition(".")[2] for c in candidates if c.rpartition(".")[0] == group]
        close = difflib.get_close_matches(name.rpartition(".")[2], within, n=1, cutoff=0.6)
        if close:
            return f"{group}.{close[0]}"
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def _config_files(args: Sequence[str]) -> list[str]:
    files = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("-c", "--config"):
            value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            if value and not value.lstrip().startswith("{"):  # inline YAML is not a file
                files.append(value)
    return files


def _class_parameters(class_path: str) -> list[str]:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []


def _unknown(name: str, candidates: Sequence[str], args: Sequence[str], remedy: str) -> str:
    """``unknown option --x; did you mean --y?`` for the command line, ``unknown key 'x' in c.yaml`` for a file."""
    if f"--{name}" in {a.partition("=")[0] for a in args}:
        match = suggest(f"--{name}", candidates)
        what = f"unknown option --{name}"
    else:
        match = suggest(name, [c.removeprefix("--") for c in candidates])
        files = _config_files(args)
        what = f"unknown key {name!r} in {files[0] if len(files) == 1 else 'a config file'}"
    return f"{what}{f'; did you mean {match}?' if match else ''} ({remedy})"


def explain_parse_error(parser: Any, message: str, args: Sequence[str] = (), prog: str | None = None) -> str:
    """One line for a parser's error ``message``: the unknown option and the closest known one, if any.

    Args:
        parser: The parser that failed (its options are the candidates).
        message: The parser's error message.
        args: The command line it parsed (tells a command-line option from a config-file key).
        prog: The command, as shown in the remedy (default: the parser's ``prog``).

    Returns:
        ``unknown option --trainer.max_epoch; did you mean --trainer.max_epochs? (… --help lists the options)``,
        or, for any other error, the message on one line.
    """
    prog = prog or getattr(parser, "prog", "") or "the command"
    candidates = option_names(parser)
    remedy = f"{prog} --help lists the options"
    found = _UNRECOGNIZED.search(message)
    if found:
        flag = next((t.partition("=")[0] for t in found.group(1).split() if t.startswith("-")), found.group(1))
        if not flag.startswith("--"):
            return f"unrecognized arguments: {found.group(1)} ({remedy})"
        return _unknown(flag[2:], candidates, [*args, flag], remedy)
    found = _CLASS.search(message)
    if found:
        key, class_path, option = found.groups()
        parameters = _class_parameters(class_path)
        remedy = f"{prog} --{key}.help {class_path} lists its options"
        if f"--{key}.{option}" in {a.partition("=")[0] for a in args}:  # the short form: --optimizer.lr
            return _unknown(f"{key}.{option}", [f"--{key}.{p}" for p in parameters], args, remedy)
        return _unknown(f"{key}.init_args.{option}", [f"--{key}.init_args.{p}" for p in parameters], args, remedy)
    found = _GROUP.search(message)
    if found:
        return _unknown(f"{found.group(1)}.{found.group(2)}", candidates, args, remedy)
    found = _TOP.search(message)
    if found:
        return _unknown(found.group(1), candidates, args, remedy)
    return " ".join(line.strip() for line in message.splitlines() if line.strip())
