"""Fast, actionable failure when pretrained weights would need the (unreachable) model hub.

The Hub's address and offline mode are huggingface_hub's (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, read by
``huggingface_hub.constants``), so a mirror is probed, not huggingface.co.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from urllib.parse import urlsplit

from huggingface_hub import constants

from .errors import UnavailableError


class WeightsUnavailableError(UnavailableError, RuntimeError):
    """Pretrained weights could not be loaded (offline, or a bad local file)."""


def hub_offline_flag() -> bool:
    """True in huggingface_hub's offline mode (``HF_HUB_OFFLINE=1``)."""
    return bool(constants.HF_HUB_OFFLINE)


def hub_host() -> str:
    """``host[:port]`` of the Hub huggingface_hub talks to (``HF_ENDPOINT``, default huggingface.co)."""
    return urlsplit(constants.ENDPOINT).netloc


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One DNS lookup + TCP connect, so an offline machine fails in seconds, not after minutes of retries."""
    if hub_offline_flag():
        return False
    url = urlsplit(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)),
                                      timeout=timeout):
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
