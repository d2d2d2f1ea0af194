"""Figures without pyplot: library code never switches the user's matplotlib backend or keeps figures open.

``Figure`` objects render with the Agg canvas on ``savefig`` whatever backend the user's process has
chosen, so nothing here calls ``matplotlib.use`` or touches pyplot's global figure list.

Conventions every sclft figure follows: log axes through :func:`log_axis` (tick labels are plain numbers —
``0.5``, ``2``, ``30``, ``1e-5`` — never mathtext like ``2×10⁰``, and at least two of them are labelled), and a
legend or colour bar wherever colour carries meaning.
"""

from __future__ import annotations

import math
from typing import Any


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any):
    """Like ``plt.subplots`` but pyplot-free: ``figsize``/``dpi`` go to the Figure, the rest to ``subplots``."""
    from matplotlib.figure import Figure  # matplotlib loads only when a figure is drawn

    fig = Figure(figsize=kwargs.pop("figsize", None), dpi=kwargs.pop("dpi", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def colormap(name: str):
    from matplotlib import colormaps  # as above

    return colormaps[name]


def plain_number(value: float) -> str:
    """A tick label as people write numbers: ``0.002``, ``0.5``, ``3``, ``2000``; ``1e-5``/``3e4`` outside
    [0.001, 10000)."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def log_tick_coefficients(decades: float) -> tuple[int, ...]:
    """Which ``c·10ⁿ`` ticks get a label on a log axis spanning ``decades``: every one on a short axis, 1-2-5 on
    one or two decades, the decades alone beyond — so a short axis shows at least two labels."""
    if decades <= 0.6:
        return tuple(range(1, 10))
    if decades <= 1.3:
        return 1, 2, 3, 5
    if decades <= 2.3:
        return 1, 2, 5
    return (1,)


def _log_formatter(minor: bool):
    from matplotlib.ticker import Formatter  # as above

    class PlainLogFormatter(Formatter):
        """Plain-number labels on a base-10 log axis, thinned by :func:`log_tick_coefficients`."""

        def __call__(self, x, pos=None):
            if x <= 0 or self.axis is None:
                return ""
            low, high = sorted(v for v in self.axis.get_view_interval())
            decades = math.log10(high / low) if low > 0 else math.inf
            exponent = math.floor(math.log10(x) + 1e-9)
            coefficient = round(x / 10 ** exponent)
            if not math.isclose(x, coefficient * 10 ** exponent, rel_tol=1e-6):
                return ""
            keep = log_tick_coefficients(decades)
            if minor and keep == (1,):  # the major ticks carry the decades (some skipped on a long axis)
                return ""
            return plain_number(coefficient * 10.0 ** exponent) if coefficient in keep else ""

    return PlainLogFormatter()


def log_axis(ax, axis: str = "y") -> None:
    """Log-scale ``ax``'s ``axis`` ("x" or "y") with plain-number tick labels (see :func:`log_tick_coefficients`)."""
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(_log_formatter(minor=False))
    target.set_minor_formatter(_log_formatter(minor=True))
