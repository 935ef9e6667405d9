"""Charts drawn on the server as inline SVG: no chart library, no JavaScript, nothing from a CDN.
Pure functions from plain numbers to markup (every text escaped), so a page re-rendered by
static/tether-live.js brings its charts up to date like any other region.

Each chart is a `<figure>` with an `<svg role="img">` and a `<figcaption>`; the numbers are also in
the page's tables (and their CSV exports) for anyone who cannot see the picture.
"""

from dataclasses import dataclass
from datetime import datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 12, 28
COLORS = ("#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed")


@dataclass
class Series:
    label: str
    values: list[float | None]
    kind: str = "line"  # "line" or "bar"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 2.5, 5, 10):
        magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1
        candidate = step * magnitude
        if candidate >= value:
            return float(candidate)
    return float(value)


def _fmt(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:.0f}%"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def _label_time(moment: datetime, bucket: str) -> str:
    return moment.strftime("%m-%d") if bucket == "day" else moment.strftime("%H:%M")


def time_chart(*, chart_id: str, title: str, starts: list[datetime], series: list[Series], bucket: str = "hour",
               percent: bool = False, y_max: float | None = None) -> SafeString:
    """Lines and/or bars over time buckets (oldest left), with a y axis, a few x labels and a legend."""
    n = max(len(starts), 1)
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    top = y_max if y_max is not None else _nice_max(max([v or 0 for s in series for v in s.values] or [0]))
    step = plot_w / n

    def x(i):
        return PAD_LEFT + step * (i + 0.5)

    def y(v):
        return PAD_TOP + plot_h - (min(v, top) / top) * plot_h

    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{chart_id}-title" '
             f'class="chart" data-chart="{escape(chart_id)}" preserveAspectRatio="none">',
             f'<title id="{chart_id}-title">{escape(title)}</title>']
    for frac in (0, 0.5, 1):
        gy = PAD_TOP + plot_h - frac * plot_h
        parts.append(f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}"/>')
        parts.append(f'<text class="axis" x="{PAD_LEFT - 6}" y="{gy + 4:.1f}" text-anchor="end">{escape(_fmt(top * frac, percent))}</text>')
    every = max(1, n // 6)
    for i, start in enumerate(starts):
        if i % every == 0:
            parts.append(f'<text class="axis" x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                         f'{escape(_label_time(start, bucket))}</text>')
    bars = [s for s in series if s.kind == "bar"]
    bar_w = max(step * 0.8 / max(len(bars), 1), 1)
    for k, s in enumerate(series):
        color = COLORS[k % len(COLORS)]
        if s.kind == "bar":
            b = bars.index(s)
            for i, v in enumerate(s.values):
                if v:
                    bx = x(i) - step * 0.4 + b * bar_w
                    parts.append(f'<rect class="bar" fill="{color}" x="{bx:.1f}" y="{y(v):.1f}" width="{bar_w:.1f}" '
                                 f'height="{PAD_TOP + plot_h - y(v):.1f}"><title>{escape(s.label)}: {escape(_fmt(v, percent))}</title></rect>')
        else:
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values) if v is not None)
            if points:
                parts.append(f'<polyline class="line" fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
    parts.append("</svg>")
    legend = "".join(f'<span class="legend-item"><i style="background:{COLORS[k % len(COLORS)]}"></i>{escape(s.label)}</span>'
                     for k, s in enumerate(series))
    return mark_safe(f'<figure class="chart-figure" id="chart-{escape(chart_id)}"><figcaption><b>{escape(title)}</b>'
                     f'<span class="legend">{legend}</span></figcaption>{"".join(parts)}</figure>')


def bar_ranking(*, chart_id: str, title: str, rows: list[tuple[str, float]], percent: bool = False,
                href: str = "", empty: str = "Nothing to show in this window.") -> SafeString:
    """Horizontal bars, one per (label, value), largest first as given; labels link to `href` + label."""
    if not rows:
        return mark_safe(f'<figure class="chart-figure" id="chart-{escape(chart_id)}"><figcaption><b>{escape(title)}</b>'
                         f'</figcaption><p class="empty">{escape(empty)}</p></figure>')
    row_h, label_w = 22, 170
    height = row_h * len(rows) + 8
    top = 1.0 if percent else _nice_max(max(v for _, v in rows))
    plot_w = WIDTH - label_w - 70
    parts = [f'<svg viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="{chart_id}-title" class="chart ranking" '
             f'data-chart="{escape(chart_id)}">', f'<title id="{chart_id}-title">{escape(title)}</title>']
    for i, (label, v) in enumerate(rows):
        ty = 4 + i * row_h
        w = max((min(v, top) / top) * plot_w, 1 if v else 0)
        text = escape(label if len(label) <= 24 else label[:23] + "…")
        name = f'<a href="{escape(href + label)}/">{text}</a>' if href else text
        parts.append(f'<text class="axis" x="{label_w - 6}" y="{ty + 15}" text-anchor="end">{name}</text>')
        parts.append(f'<rect class="bar" fill="{COLORS[0]}" x="{label_w}" y="{ty + 3}" width="{w:.1f}" height="{row_h - 8}">'
                     f'<title>{escape(label)}: {escape(_fmt(v, percent))}</title></rect>')
        parts.append(f'<text class="axis value" x="{label_w + w + 6:.1f}" y="{ty + 15}">{escape(_fmt(v, percent))}</text>')
    parts.append("</svg>")
    return mark_safe(f'<figure class="chart-figure" id="chart-{escape(chart_id)}"><figcaption><b>{escape(title)}</b>'
                     f'</figcaption>{"".join(parts)}</figure>')
