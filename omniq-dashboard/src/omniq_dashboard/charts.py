"""Line charts as inline SVG, drawn on the server: no charting library, no JavaScript.

Only numbers and escaped labels go into the markup, so a queue named ``<script>`` is
text here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

#: Line colours, in series order (colour-blind-safe Okabe-Ito).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
WIDTH, HEIGHT = 560, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 12, 38


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M")


def _nice(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def line_chart(
    title: str, xs: Sequence[float], series: dict[str, Sequence[float]], unit: str = ""
) -> Markup:
    """A chart of ``series`` (name -> one value per x) over the times ``xs``."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max((v for values in series.values() for v in values), default=0.0) or 1.0
    parts = [
        (
            f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        ),
        f"<title>{escape(title)}</title>",
        (
            f'<text x="{WIDTH - RIGHT}" y="{TOP + 4}" text-anchor="end" class="title">'
            f"{escape(title)}</text>"
        ),
        (
            f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
            'class="axis"/>'
        ),
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" class="axis"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{escape(_nice(top) + unit)}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    if xs:
        parts.append(f'<text x="{LEFT}" y="{HEIGHT - 22}">{_clock(xs[0])}</text>')
        parts.append(
            f'<text x="{LEFT + plot_w}" y="{HEIGHT - 22}" text-anchor="end">'
            f"{_clock(xs[-1])} UTC</text>"
        )
    step = plot_w / max(len(xs) - 1, 1)
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(
            f"{LEFT + j * step:.1f},{TOP + plot_h - (v / top) * plot_h:.1f}"
            for j, v in enumerate(values)
        )
        if points:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
            )
        x = LEFT + i * 140
        parts.append(f'<rect x="{x}" y="{HEIGHT - 12}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{HEIGHT - 3}">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]
