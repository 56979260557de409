"""The configs shipped inside the package (``zsad/configs/``), addressable by name wherever zsad is installed.

``zsad fit -c method/cops -c backbone/vit_l_14_336_openai -c protocol/mvtec_to_all`` reads the packaged files when
no such local file exists; ``configs/method/cops.yaml`` (the path in a checkout, where ``configs`` links to the
package's folder) works everywhere too. A local file always wins over a packaged one of the same name.
``zsad configs`` lists the packaged configs with the first sentence of each file's leading comment.

This module imports nothing heavy: ``zsad configs`` must start in a blink.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from zsad.errors import ConfigError

PACKAGED_ROOT = Path(__file__).resolve().parent / "configs"
"""The folder of the packaged configs (``configs/`` in a checkout links here)."""
CONFIG_SUFFIXES = (".yaml", ".yml")
CHECKOUT_PREFIX = "configs/"
"""The prefix the documented paths carry (``configs/method/cops.yaml``); a packaged name may keep it."""
SUMMARY_WIDTH = 96
SENTENCE_END = re.compile(r"\.\s+(?=[A-Z(`])")
"""A full stop that ends a sentence (not the one of an abbreviation such as "Tab. 4")."""


@dataclass(frozen=True)
class PackagedConfig:
    """One packaged config file.

    Attributes:
        name: What ``-c`` takes, e.g. ``method/cops``.
        path: The file.
        summary: The first sentence of its leading comment.
    """

    name: str
    path: Path
    summary: str


def packaged_config(name: str | Path) -> Path | None:
    """The packaged file that a ``-c`` value names, or ``None``.

    ``method/cops``, ``method/cops.yaml`` and ``configs/method/cops.yaml`` all name
    ``<package>/configs/method/cops.yaml``. Absolute paths and paths that climb out (``..``) name none.
    """
    text = str(name).replace("\\", "/").strip()
    relative = PurePosixPath(text)
    if not text or relative.is_absolute() or ".." in relative.parts:
        return None
    relative_text = relative.as_posix().removeprefix(CHECKOUT_PREFIX)
    candidates = [relative_text] if relative.suffix in CONFIG_SUFFIXES else [relative_text + s for s in CONFIG_SUFFIXES]
    for candidate in candidates:
        path = PACKAGED_ROOT / candidate
        if path.is_file():
            return path
    return None


def local_config(name: str | Path) -> Path | None:
    """The local file that a ``-c`` value names: the path itself, or with ``.yaml`` added when it has no suffix."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if not path.suffix:
        for suffix in CONFIG_SUFFIXES:
            if path.with_suffix(suffix).is_file():
                return path.with_suffix(suffix)
    return None


def resolve_config_file(name: str | Path) -> Path:
    """The file a ``-c`` value stands for: a local file if there is one, else the packaged config of that name.

    Raises:
        ConfigError: Neither exists; the message says where zsad looked and how to list the packaged configs.
    """
    found = local_config(name) or packaged_config(name)
    if found is None:
        raise ConfigError(
            f"Config file '{name}' does not exist here ({Path.cwd()}) and is not a packaged config. Check the path "
            "given to -c, or run `zsad configs` for the packaged ones (e.g. -c method/static)."
        )
    return found


def is_packaged(path: str | Path) -> bool:
    """Whether a file lies in the packaged configs."""
    return Path(path).resolve().is_relative_to(PACKAGED_ROOT)


def config_summary(path: Path) -> str:
    """The first sentence of a config file's leading comment, shortened to :data:`SUMMARY_WIDTH` characters."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(part for part in lines if part)
    end = SENTENCE_END.search(text)
    sentence = text if end is None else text[: end.start() + 1]
    return sentence if len(sentence) <= SUMMARY_WIDTH else sentence[: SUMMARY_WIDTH - 3].rstrip() + "..."


def packaged_configs(part: str | None = None) -> list[PackagedConfig]:
    """Every packaged config (of one folder, e.g. ``method``, when ``part`` is given), sorted by name."""
    root = PACKAGED_ROOT / part if part else PACKAGED_ROOT
    paths = sorted(p for suffix in CONFIG_SUFFIXES for p in root.rglob(f"*{suffix}"))
    return [
        PackagedConfig(p.relative_to(PACKAGED_ROOT).with_suffix("").as_posix(), p, config_summary(p)) for p in paths
    ]


def configs_listing(part: str | None = None) -> str:
    """The text ``zsad configs`` prints: the packaged configs grouped by folder, each with its summary."""
    found = packaged_configs(part)
    width = max((len(c.name.split("/", 1)[-1]) for c in found), default=0)
    lines = [
        f"Packaged configs in {PACKAGED_ROOT}",
        "Give them to -c by name (e.g. `-c method/cops`, or `configs/method/cops.yaml` as the docs write it); "
        "a local file of the same path wins.",
    ]
    folder = None
    for config in found:
        group, _, leaf = config.name.rpartition("/")
        if group != folder:
            folder = group
            lines += ["", f"{group}/"]
        lines.append(f"  {leaf.ljust(width)}  {config.summary}")
    return "\n".join(lines) + "\n"


def configs_main(argv: list[str]) -> int:
    """``zsad configs [FOLDER] [--show NAME]``: list the packaged configs, or print one to copy and edit.

    Raises:
        ConfigError: An unknown folder or config name.
    """
    parser = argparse.ArgumentParser(
        prog="zsad configs",
        description="List the configs shipped with zsad (first sentence of each), or print one with --show.",
    )
    parser.add_argument("folder", nargs="?", help="only this folder, e.g. method or backbone")
    parser.add_argument("--show", metavar="NAME", help="print a packaged config, e.g. --show method/cops")
    args = parser.parse_args(argv)
    if args.show is not None:
        path = packaged_config(args.show)
        if path is None:
            raise ConfigError(f"No packaged config '{args.show}'. Run `zsad configs` for the names.")
        print(path.read_text(encoding="utf-8"), end="")
        return 0
    folders = sorted(p.name for p in PACKAGED_ROOT.iterdir() if p.is_dir())
    if args.folder is not None and args.folder.strip("/") not in folders:
        raise ConfigError(f"No packaged config folder '{args.folder}'. Folders: {', '.join(folders)}.")
    print(configs_listing(args.folder.strip("/") if args.folder else None), end="")
    return 0
