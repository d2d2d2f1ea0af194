"""Progress bars (tqdm) that keep a redirected log readable.

On a terminal a bar redraws in place. Written to a file (``> train.log``, a Slurm output) every redraw is
another line, so there a transient bar (``leave=False``: an epoch, an evaluation, a cache pass) is not shown
at all, and a bar that stays (``leave=True``: a deep-linear-network run, a bench's tasks) redraws at most
once a minute and once at the end.
"""

from __future__ import annotations

import sys
from typing import Any

NON_TTY_INTERVAL = 60.0  # seconds between redraws of a kept bar when stderr is not a terminal


def progress_bar(iterable: Any = None, *, progress: bool = True, leave: bool = False, **kwargs: Any):
    """``tqdm.auto.tqdm(iterable, ...)``, off unless ``progress``; see the module docstring for logs."""
    from tqdm.auto import tqdm  # tqdm.auto looks for Jupyter: loaded when a bar is made

    terminal = sys.stderr.isatty()
    if not terminal:
        interval = max(kwargs.get("mininterval", 0.1), NON_TTY_INTERVAL)
        kwargs.update(mininterval=interval, maxinterval=max(kwargs.get("maxinterval", 10.0), interval))
    return tqdm(iterable, disable=not progress or (not terminal and not leave), leave=leave, **kwargs)
