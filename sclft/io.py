"""Atomic file writes: a crash mid-write never leaves a half-written result or checkpoint."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UnavailableError, UsageError


class DiskFullError(UnavailableError, OSError):
    """No space left on the device a file is written to: an environment fault (exit 1), not bad input."""


def _is_disk_full(e: BaseException) -> bool:
    """ENOSPC, also as libraries report it (safetensors: ``IoError(Os { code: 28, kind: StorageFull ... })``)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return any(s in text for s in ("No space left on device", "StorageFull", "os error 28", "Disk quota exceeded"))


def _device(path: Path) -> str:
    """The device (and mount point) that holds ``path``."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p.parent != p:
        p = p.parent
    dev = os.stat(p).st_dev
    while p.parent != p and os.stat(p.parent).st_dev == dev:
        p = p.parent
    try:
        with open("/proc/mounts") as f:
            name = next((line.split()[0] for line in f if len(line.split()) > 1 and line.split()[1] == str(p)), None)
    except OSError:
        name = None
    return f"{name} (mounted at {p})" if name else str(p)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}" if n >= 2**20 // 10 else f"{n / 2**20:.3f}"


@contextmanager
def space_for(path: str | os.PathLike, needed: int | Callable[[], int]) -> Iterator[None]:
    """Turn a disk-full error while writing ``path`` (about ``needed`` bytes) into a :class:`DiskFullError`
    that names the device, the space needed and the space free (no library traceback)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if not _is_disk_full(e):
            raise
        where = Path(os.path.abspath(path))
        probe = where
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        needed = needed() if callable(needed) else needed
        raise DiskFullError(f"no space left on {_device(where)} (needed ~{_mb(needed)} MB to write "
                            f"{where}, {_mb(free)} MB free): free some space there or write elsewhere "
                            "(--out, --cache-dir); nothing earlier was removed") from None


@contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``. A full disk
    is a :class:`DiskFullError` (``needed``: the bytes to be written, else what was written when it failed).
    A device, FIFO, socket or folder at ``path`` is never replaced (:class:`OutputPathError`)."""
    path = Path(path)
    kind = special_kind(path)
    if kind is not None:
        raise OutputPathError(f"{path}: {os.path.realpath(path)} is {kind}; sclft writes only regular files")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with space_for(path, needed or (lambda: tmp_path.stat().st_size if tmp_path.exists() else 0)):
            yield tmp_path
            plain_mode(tmp_path)  # mkstemp's 0600, or the 0600 of a writer that replaced the file (save_file)
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def plain_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a plain ``open()`` would (0644 under the usual umask): ``mkstemp`` and
    safetensors' ``save_file`` create 0600, which a colleague cannot read in a shared run folder."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], needed: int | None = None) -> Path:
    """``write(tmp_path)`` then rename into place."""
    with atomic_path(path, needed) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text), needed=len(text.encode()))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def as_json(obj: Any) -> Any:
    """``obj`` as :func:`atomic_write_json` writes it and :func:`read_json` reads it back (tuples as lists...)."""
    return json.loads(json.dumps(obj, default=json_default))


def json_default(o: Any):
    """What ``json.dumps`` writes for numpy / torch scalars (``.item()``), sets, tuples and paths."""
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_out_dir(path: str | Path, flag: str = "--out") -> None:
    """Fail before any work when ``path`` cannot become a writable folder (e.g. it lies under a file)."""
    probe = Path(path).expanduser()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {probe} is not writable")


class OutputPathError(UsageError):
    """An output path that must not be written: a device or other special file, a file of a sclft run or bench
    folder, or an existing file without ``--overwrite`` (bad input: exit 2)."""


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def special_kind(path: Path) -> str | None:
    """What ``path`` (links followed) is when it exists and is not a regular file, else None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"not checkable ({e.strerror or e})"
    return None if stat.S_ISREG(mode) else next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_json(path: str | os.PathLike, error: Callable[[str], Exception] = UsageError) -> Any:
    """The JSON value in ``path``; a file that cannot be read or parsed is ``error(message naming the file)``
    (truncated, not UTF-8, not JSON), never a bare ``JSONDecodeError`` that names no file."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): it is not a file sclft wrote") from None
    except ValueError as e:
        raise error(f"{path} is not readable JSON ({e}); the file is truncated or damaged") from None


def read_json_object(path: str | os.PathLike, error: Callable[[str], Exception] = UsageError) -> dict[str, Any]:
    """:func:`read_json` of a file that must hold a JSON object."""
    value = read_json(path, error)
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object, got {type(value).__name__}; the file is damaged")
    return value
