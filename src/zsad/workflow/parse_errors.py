"""One line for a refused ``zsad fit/validate/test/predict`` command line, instead of jsonargparse's usage and dump.

jsonargparse answers a bad value with about 60 lines of usage text and, for components, a nested dump of every
Union subtype it tried (the missing data ``root`` sits several levels down). :func:`parser_error_line` reads that
nested message and says what is wrong in one line: the dotted key, what was expected or which names are valid, and
where the value came from (the ``-c`` file that sets it, or the command line). The full usage stays one ``--help``
away.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zsad.config_compose import accepted_arguments, config_runs, read_config_file
from zsad.errors import ZSADError
from zsad.packaged_configs import local_config, packaged_config

PARSER_KEY = re.compile(r'Parser key "(?P<key>[^"]+)":?')
CLASS_PROBLEM = re.compile(r"Problem with given class_path '(?P<class_path>[^']+)':?")
NOT_ACCEPTED = re.compile(r"Option '(?P<name>[^']+)' is not accepted")
REQUIRED = re.compile(r"the following arguments are required: (?P<names>.+)")
EXPECTED = re.compile(r"Expected an? (?P<type>.+?)(?:\. Got value: (?P<value>.*))?")
UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<arguments>.+)")
SUBCOMMAND_OPTION = re.compile(r"Subcommand '(?P<subcommand>[^']+)' does not accept option '(?P<key>[^']+)'")
UNION = "Does not validate against any of the Union subtypes"
NONE_TYPE = "<class 'NoneType'>"
CLASS_TYPE = re.compile(r"<class '(?:[\w.]+\.)?(?P<name>[^'.]+)'>")
INIT_ARGS = "init_args"
TRAINER_CLASS = "lightning.pytorch.Trainer"
COMPONENT_CONFIGS = {
    "data": "configs/data/",
    "model.backbone": "configs/backbone/",
    "model.prompt": "configs/method/",
    "model.head": "configs/method/",
}
"""Where the shipped configs of each required component are, for a "missing" message."""


@dataclass(frozen=True)
class Problem:
    """What a jsonargparse error message says, read out of its nesting.

    Attributes:
        kind: ``"unknown key"``, ``"unknown option"``, ``"missing"``, ``"invalid"`` or ``"other"``.
        keys: The dotted keys at fault (several for missing values; the raw arguments for unknown options).
        detail: What was expected and given (``invalid``), or the message itself (``other``).
        class_path: The component class whose arguments the keys are, if any.
    """

    kind: str
    keys: tuple[str, ...] = ()
    detail: str = ""
    class_path: str | None = None


def join_key(key: str, name: str, class_path: str | None) -> str:
    """``model.prompt`` + ``n_ctx`` -> ``model.prompt.init_args.n_ctx`` inside a component, else a plain join."""
    if not key:
        return name
    return f"{key}.{INIT_ARGS}.{name}" if class_path is not None else f"{key}.{name}"


def readable_type(text: str) -> str:
    """``<class 'int'>`` -> ``int``; ``typing.Literal['a', 'b']`` -> ``one of 'a', 'b'``."""
    literal = re.fullmatch(r"typing\.Literal\[(?P<values>.*)\]", text.strip())
    if literal:
        return f"one of {literal['values']}"
    return CLASS_TYPE.sub(lambda match: match["name"], text).replace("NoneType", "null")


def indentation(line: str) -> int:
    """Leading spaces of a line."""
    return len(line) - len(line.lstrip(" "))


def union_items(lines: list[str]) -> tuple[list[list[str]], str | None]:
    """The ``- ...`` items under ``Errors:`` of a Union failure (with their continuation lines), and ``Given value``."""
    items: list[list[str]] = []
    given = None
    in_errors, item_indent = False, -1
    for line in lines:
        text = line.strip()
        if text == "Errors:":
            in_errors = True
            continue
        if text.startswith("Given value:"):
            given = text.removeprefix("Given value:").strip()
        if not in_errors:
            continue
        if text.startswith("- ") and (item_indent < 0 or indentation(line) == item_indent):
            item_indent = indentation(line)
            items.append([" " * (item_indent + 2) + text[2:]])
        elif items and indentation(line) > item_indent:
            items[-1].append(line)
        else:
            in_errors = False
    return items, given


def read_problem(lines: list[str], key: str = "", class_path: str | None = None) -> Problem:
    """Walk a jsonargparse message down its nesting to the innermost statement.

    Args:
        lines: The message's lines (indentation kept).
        key: The dotted key reached so far.
        class_path: The component class whose arguments follow, if inside one.
    """
    lines = [line for line in lines if line.strip()]
    if not lines:
        return Problem("other", (key,) if key else (), "", class_path)
    first, rest = lines[0].strip(), lines[1:]
    if match := PARSER_KEY.fullmatch(first):
        return read_problem(rest, join_key(key, match["key"], class_path), None)
    if match := CLASS_PROBLEM.fullmatch(first):
        return read_problem(rest, key, match["class_path"])
    if first.startswith(UNION):
        return read_union(rest, key, class_path)
    if match := NOT_ACCEPTED.fullmatch(first):
        return Problem("unknown key", (join_key(key, match["name"], class_path),), "", class_path)
    if match := REQUIRED.fullmatch(first):
        names = [name.strip() for name in match["names"].split(",")]
        return Problem("missing", tuple(join_key(key, name, class_path) for name in names), "", class_path)
    if match := EXPECTED.fullmatch(first):
        got = f", got {match['value']!r}" if match["value"] is not None else ""
        return Problem("invalid", (key,), f"expected {readable_type(match['type'])}{got}", class_path)
    if match := UNRECOGNIZED.fullmatch(first):
        return Problem("unknown option", tuple(match["arguments"].split()))
    if match := SUBCOMMAND_OPTION.fullmatch(first):
        return Problem("unknown key", (match["key"],))
    return Problem("other", (key,) if key else (), " ".join(line.strip() for line in lines), class_path)


def read_union(lines: list[str], key: str, class_path: str | None) -> Problem:
    """The telling error of a Union failure: the first subtype's error other than "not null"."""
    items, given = union_items(lines)
    telling = [item for item in items if item[0].strip() != f"Expected a {NONE_TYPE}"]
    if telling and not all(EXPECTED.fullmatch(item[0].strip()) for item in telling):
        chosen = next(item for item in telling if not EXPECTED.fullmatch(item[0].strip()))
        return read_problem(chosen, key, class_path)
    types = [readable_type(match["type"]) for item in items if (match := EXPECTED.fullmatch(item[0].strip()))]
    got = f", got {given!r}" if given is not None else ""
    return Problem("invalid", (key,), f"expected {' or '.join(dict.fromkeys(types)) or 'another value'}{got}")


def value_at(document: Any, key: str) -> bool:
    """Whether a config document sets a dotted key (``init_args`` may be left out, as configs do)."""
    node = document
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif part == INIT_ARGS and isinstance(node, dict):
            continue
        else:
            return False
    return True


def where_set(key: str, argv: Sequence[str]) -> str:
    """Where a key's value came from: ``on the command line``, ``in config file 'F'``, or ``""`` when unknown."""
    short = key.replace(f".{INIT_ARGS}.", ".")
    for argument in argv:
        name = argument.split("=", 1)[0].removeprefix("--")
        if argument.startswith("--") and name in (key, short):
            return "on the command line"
    files = [file for _, _, files in config_runs(list(argv)) for file in files]
    for file in reversed(files):  # the last file that sets it wins
        path = local_config(file) or packaged_config(file)  # as the -c value was resolved
        if path is None:
            continue
        try:
            if value_at(read_config_file(path), key):
                return f"in config file '{file}'"
        except ZSADError:
            continue
    return ""


def in_parentheses(text: str) -> str:
    """`` (text)``, or nothing for empty text."""
    return f" ({text})" if text else ""


def component_key(key: str) -> str:
    """``data.init_args.root`` -> ``data``: the key of the component whose argument ``key`` is."""
    return key.split(f".{INIT_ARGS}.", 1)[0]


def close_names(key: str, class_path: str | None) -> str:
    """`` Did you mean 'x'?`` from the arguments of the component class (or of the Trainer for ``trainer.*``)."""
    if class_path is None and key.count(".") == 1 and key.startswith("trainer."):
        class_path = TRAINER_CLASS
    accepted = accepted_arguments(class_path) if class_path else None
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], sorted(accepted or ()), n=3)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def class_name(class_path: str | None) -> str:
    """The class name of a class path, for messages."""
    return class_path.rsplit(".", 1)[-1] if class_path else ""


def parser_error_line(message: str, subcommand: str, argv: Sequence[str]) -> str:
    """One line for a jsonargparse error of ``zsad <subcommand>``.

    Args:
        message: The ``ArgumentError``'s message.
        subcommand: ``fit``, ``validate``, ``test`` or ``predict``.
        argv: The arguments after the subcommand as the user gave them (to say which ``-c`` file set a key).

    Returns:
        The message (without the ``zsad: error:`` prefix), ending with where to find the options.
    """
    problem = read_problem(message.splitlines())
    keys = [key.removeprefix(f"{subcommand}.") for key in problem.keys]
    help_hint = f"`zsad {subcommand} --help` lists the options."
    if problem.kind == "unknown option":
        return f"Unknown option(s) {' '.join(keys)} for `zsad {subcommand}`. {help_hint}"
    if problem.kind == "missing":
        return f"{missing_line(keys, problem.class_path, argv)} {help_hint}"
    key = keys[0] if keys else ""
    where = in_parentheses(where_set(key, argv)) if key else ""
    if problem.kind == "unknown key":
        owner = f" of {class_name(problem.class_path)}" if problem.class_path else ""
        suggestion = close_names(key, problem.class_path)
        return f"Unknown key '{key}'{where}: no such argument{owner}.{suggestion} {help_hint}"
    if problem.kind == "invalid":
        return f"Invalid value for '{key}'{where}: {problem.detail}. {help_hint}"
    prefix = f"'{key}'{where}: " if key else ""
    return f"{prefix}{problem.detail or message.strip().splitlines()[0]} {help_hint}"


def missing_line(keys: list[str], class_path: str | None, argv: Sequence[str]) -> str:
    """``Missing required value 'data.init_args.root' of MVTecDataModule (chosen in config file 'F'): ...``."""
    named = ", ".join(f"'{key}'" for key in keys)
    plural = "s" if len(keys) > 1 else ""
    if class_path is not None:
        chosen = where_set(component_key(keys[0]), argv)
        owner = f" of {class_name(class_path)}{in_parentheses(f'chosen {chosen}' if chosen else '')}"
        return f"Missing required value{plural} {named}{owner}: set it in a -c config file or with --{keys[0]}=VALUE."
    configs = [f"{key} from {COMPONENT_CONFIGS[key]}" for key in keys if key in COMPONENT_CONFIGS]
    shipped = f" (shipped ones: {'; '.join(configs)})" if configs else ""
    return f"Missing required value{plural} {named}: give {'them' if plural else 'it'} in -c config files{shipped}."
