"""Finding pretrained weights in the local Hugging Face cache (no network)."""

from __future__ import annotations

from collections.abc import Iterable

from huggingface_hub import try_to_load_from_cache


def cached_hub_file(repo_id: str, filenames: Iterable[str]) -> str | None:
    """Path of the first of ``filenames`` of Hub repository ``repo_id`` present in the local HF cache."""
    repo = repo_id.split("@")[0].strip("/")
    for name in filenames:
        path = try_to_load_from_cache(repo, name)
        if isinstance(path, str):
            return path
    return None
