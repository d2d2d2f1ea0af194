"""YAML files shipped inside the package: run configs (``sclft/configs/NAME.yaml``) and bench suites
(``sclft/configs/bench/NAME.yaml``), found by name after any install (torch-free).

``find_yaml(kind, name)``: a file that exists wins; else the packaged ``NAME.yaml`` (``.yml``); else a
ValueError listing the available names.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from .errors import UsageError

__all__ = ["KINDS", "find_yaml", "list_yaml", "read_yaml"]

# kind -> (folder inside the package, what a user calls it, the CLI flag that takes it)
KINDS = {
    "configs": ("configs", "run config", "--config"),
    "suites": ("configs/bench", "bench suite", "--suite"),
}
_EXTENSIONS = (".yaml", ".yml")


def _folder(kind: str):
    if kind not in KINDS:
        raise UsageError(f"unknown kind of packaged YAML {kind!r}; valid: {', '.join(KINDS)}")
    folder = resources.files("sclft")
    for part in KINDS[kind][0].split("/"):
        folder = folder.joinpath(part)
    return folder


def list_yaml(kind: str) -> list[str]:
    """The names of the packaged YAML files of ``kind`` (``configs`` or ``suites``), sorted."""
    folder = _folder(kind)
    if not folder.is_dir():
        return []
    return sorted(Path(e.name).stem for e in folder.iterdir() if e.is_file() and Path(e.name).suffix in _EXTENSIONS)


def find_yaml(kind: str, name: str | Path) -> Path:
    """The file a ``--config`` / ``--suite`` value names: an existing file, else the packaged NAME.yaml."""
    path = Path(name)
    if path.is_file():
        return path
    folder = _folder(kind)
    for ext in _EXTENSIONS:
        entry = folder.joinpath(f"{name}{ext}")
        if path.suffix not in _EXTENSIONS and len(path.parts) == 1 and entry.is_file():
            return Path(str(entry))  # installed as plain files (wheel, editable, checkout)
    _, what, flag = KINDS[kind]
    if path.exists():
        raise UsageError(f"{flag} {name}: is a folder, not a YAML file")
    raise UsageError(f"{flag} {name}: no such file and no packaged {what} of that name "
                     f"(give a YAML path or one of: {', '.join(list_yaml(kind)) or 'none'})")


def read_yaml(kind: str, name: str | Path) -> tuple[object, Path]:
    """(the parsed content, the file) of what a ``--config`` / ``--suite`` value names; an unreadable file, one
    that is not UTF-8 text or not valid YAML is a ValueError naming the flag, the file and the line."""
    path = find_yaml(kind, name)
    flag = KINDS[kind][2]
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")), path
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {path}: not a text (UTF-8) file") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise UsageError(f"{flag} {path}: invalid YAML{at}: {getattr(e, 'problem', None) or e}") from None
