"""What can go wrong, each kind with the exit code ``sclft`` gives it (no imports: the CLI loads it for ``--help``).

Every expected failure raises a subclass of :class:`SclftError`:

* :class:`UsageError` (a ``ValueError``) — bad input: a flag, a config value, a file or folder that is not what
  was asked for. Exit 2.
* :class:`UnavailableError` — the environment lacks something: pretrained weights, the data, a device, disk
  space, an engine's command. Exit 1.
* :class:`RunFailedError` — the work ran and failed (a non-finite or diverged loss). Exit 1.
* :class:`Interrupted` (a ``KeyboardInterrupt``, as Ctrl-C itself) — stopped by the user. Exit 130.

:func:`exit_code` is the one place that maps an exception to an exit code (used by :func:`sclft.cli.main` for
every sub-command). Anything else — a ``ValueError`` raised inside torch, numpy or timm included — is a bug, not
a verdict on the input: it keeps its traceback so that it gets reported.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class SclftError(Exception):
    """An expected failure; ``exit_code`` is what the CLI exits with (after printing the message, no traceback)."""

    exit_code = EXIT_FAILED


class UsageError(SclftError, ValueError):
    """Bad input: the message names what was wrong (flag, key, file, value) and what is valid."""

    exit_code = EXIT_USAGE


class MissingFileError(UsageError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class UnavailableError(SclftError):
    """The environment lacks what the command needs (weights, data, a device, disk space, an engine): exit 1."""


class RunFailedError(SclftError):
    """The work ran and failed (e.g. the loss became non-finite); what was kept is said in the message."""


class Interrupted(KeyboardInterrupt):
    """Stopped by the user (Ctrl-C); the message says what was kept and how to resume."""

    exit_code = EXIT_INTERRUPTED


# an error of the operating system that sclft did not classify: the environment's fault (permissions, a full or
# read-only disk), except that a missing file or folder is one the user named
_OS_ERRORS = ((FileNotFoundError, EXIT_USAGE), (OSError, EXIT_FAILED))


def exit_code(e: BaseException) -> int | None:
    """The exit code of an expected failure, or None: an unexpected error (a bug), whose traceback must be shown."""
    if isinstance(e, (SclftError, Interrupted)):
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    for cls, code in _OS_ERRORS:
        if isinstance(e, cls):
            return code
    return None
