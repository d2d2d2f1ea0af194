"""Fast, actionable failure when pretrained weights would need the (unreachable) model hub."""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from .errors import UnavailableError

HUB_HOST = "huggingface.co"


class WeightsUnavailableError(UnavailableError, RuntimeError):
    """Pretrained weights could not be loaded (offline, or a bad local file)."""


def hub_offline_flag() -> bool:
    """True when the user asked huggingface_hub to stay offline (HF_HUB_OFFLINE=1)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One DNS lookup + TCP connect, so an offline machine fails in seconds, not after minutes of retries."""
    if hub_offline_flag():
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def weights_error(what: str, source: str, reason: str, local_hint: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Cannot load pretrained weights for {what}: {reason}\n"
        f"  would download: {source}\n"
        f"  to use a local copy: {local_hint}\n"
        "  or pass pretrained=False (--no-pretrained) for random weights."
    )
