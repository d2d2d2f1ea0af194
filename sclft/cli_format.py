"""The help formatter of every ``sclft`` command (no torch: ``--help`` stays light)."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults in the help, once: not where the text already says its default, and not for a flag
    whose default is "not given" (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):  # not 0
            return text
        return super()._get_help_string(action)
