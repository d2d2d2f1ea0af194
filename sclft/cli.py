"""`sclft` command line: each sub-command registers itself from its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# sub-command name -> module exposing ``add_parser(subparsers)``; the parser sets ``func(args) -> int``.
COMMAND_MODULES = {
    "dln": "sclft.dln.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sclft", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
