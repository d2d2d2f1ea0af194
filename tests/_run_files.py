"""Test helper: edit a run folder the way an attacker can, forging the digests the run records."""

import hashlib
import json
from pathlib import Path


def forge_digest(file: Path) -> None:
    """Record the current sha256 of ``file`` where its run records it: ``checkpoint/latest.json`` for a file
    of a checkpoint, ``manifest.json`` for a file of the finished run (no-op if the file is not listed)."""
    file = Path(file)
    record = file.parent.parent / "latest.json" if file.parent.parent.name == "checkpoint" else \
        file.parent / "manifest.json"
    if not record.is_file():
        return
    info = json.loads(record.read_text())
    if file.name in info["files"]:
        info["files"][file.name] = hashlib.sha256(file.read_bytes()).hexdigest()
        record.write_text(json.dumps(info))
