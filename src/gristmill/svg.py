"""Small inline-SVG charts for the HTML report: a line chart, stacked bars and a lane timeline.

Plain strings, no dependency and no script: the report stays one self-contained file that any
browser draws offline. Every text that reaches the SVG goes through ``esc``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

FONT = 'font-family="sans-serif" font-size="11"'
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 14, 34


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _fmt(value: float) -> str:
    return f"{value:g}" if value < 1e4 else f"{value:.3g}"


def _frame(width: int, height: int, x_max: float, y_ticks: Sequence[float], xlabel: str,
           ylabel: str, label: str) -> tuple[list[str], float, float]:
    """Axes with ticks; returns the parts and the x and y scales (pixels per unit)."""
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    sx = plot_w / x_max if x_max > 0 else 1.0
    sy = plot_h / y_ticks[-1] if y_ticks[-1] > 0 else 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'aria-label="{esc(label)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">']
    for y in y_ticks:
        py = TOP + plot_h - y * sy
        parts.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{py + 4:.1f}" text-anchor="end" {FONT}>'
                     f'{_fmt(y)}</text>')
    for x in nice_ticks(x_max, 8):
        if x > x_max * 1.0001:
            break
        px = LEFT + x * sx
        parts.append(f'<text x="{px:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" {FONT}>'
                     f'{_fmt(x)}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{TOP + plot_h}" '
                 f'y2="{TOP + plot_h}" stroke="#333"/>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle" '
                 f'{FONT}>{esc(xlabel)}</text>')
    if ylabel:
        parts.append(f'<text transform="translate(12 {TOP + plot_h / 2:.0f}) rotate(-90)" '
                     f'text-anchor="middle" {FONT}>{esc(ylabel)}</text>')
    return parts, sx, sy


def line_chart(points: Sequence[tuple[float, float]], *, x_max: float, xlabel: str, ylabel: str,
               marks: Sequence[tuple[float, str]] = (), label: str = "line chart",
               width: int = 760, height: int = 240) -> str:
    """A line over ``points`` (x, y), with labelled vertical ``marks`` (x, text)."""
    top = max((y for _, y in points), default=0.0)
    ticks = nice_ticks(top * 1.05 if top else 1.0)
    parts, sx, sy = _frame(width, height, x_max, ticks, xlabel, ylabel, label)
    base = TOP + (height - TOP - BOTTOM)
    for x, text in marks:
        px = LEFT + x * sx
        parts.append(f'<line class="mark" x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{base}" '
                     'stroke="#888" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{px + 3:.1f}" y="{TOP + 10}" {FONT} fill="#555">'
                     f'{esc(text)}</text>')
    if points:
        path = " ".join(f"{LEFT + x * sx:.1f},{base - y * sy:.1f}" for x, y in points)
        parts.append(f'<polyline class="series" fill="none" stroke="#1f77b4" stroke-width="2" '
                     f'points="{path}"/>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_bars(rows: Sequence[tuple[str, Sequence[tuple[str, float, str]]]], *,
                 label: str = "stacked bars", width: int = 760) -> str:
    """One horizontal bar per row (label, [(part name, fraction 0..1, colour)]), and a legend."""
    label_w, bar_h, gap = 230, 18, 6
    height = TOP + len(rows) * (bar_h + gap) + 30
    plot_w = width - label_w - RIGHT
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'aria-label="{esc(label)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">']
    legend: dict[str, str] = {}
    for i, (name, segments) in enumerate(rows):
        y = TOP + i * (bar_h + gap)
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" {FONT}>'
                     f'{esc(name)}</text>')
        x = float(label_w)
        for part, fraction, colour in segments:
            legend.setdefault(part, colour)
            w = max(0.0, min(1.0, fraction)) * plot_w
            if w <= 0:
                continue
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                         f'height="{bar_h}" fill="{colour}"><title>{esc(name)}: {esc(part)} '
                         f'{fraction:.0%}</title></rect>')
            if w > 34:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 13}" text-anchor="middle" '
                             f'{FONT} fill="#fff">{fraction:.0%}</text>')
            x += w
    x = float(label_w)
    for part, colour in legend.items():
        parts.append(f'<rect x="{x:.0f}" y="{height - 20}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{x + 14:.0f}" y="{height - 11}" {FONT}>'
                     f'{esc(part)}</text>')
        x += 24 + 7 * len(part)
    parts.append("</svg>")
    return "".join(parts)


def timeline(lanes: Sequence[str], bars: Sequence[tuple[int, float, float, str, str]], *,
             x_max: float, marks: Sequence[tuple[int, float, str, str]] = (),
             runs: Sequence[tuple[float, str]] = (), label: str = "timeline",
             width: int = 760) -> str:
    """Lanes of bars (lane, x0, x1, colour, tooltip), point ``marks`` (lane, x, colour, tooltip)
    drawn as triangles, and vertical ``runs`` boundaries (x, text)."""
    label_w, lane_h = 110, 22
    plot_h = len(lanes) * lane_h
    height = TOP + plot_h + BOTTOM
    plot_w = width - label_w - RIGHT
    sx = plot_w / x_max if x_max > 0 else 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'aria-label="{esc(label)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">']
    for i, name in enumerate(lanes):
        y = TOP + i * lane_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" {FONT}>'
                     f'{esc(name)}</text>')
        parts.append(f'<line x1="{label_w}" x2="{width - RIGHT}" y1="{y + lane_h}" '
                     f'y2="{y + lane_h}" stroke="#eee"/>')
    for lane, x0, x1, colour, tip in bars:
        y = TOP + lane * lane_h + 3
        w = max(1.5, (x1 - x0) * sx)
        parts.append(f'<rect class="shard" x="{label_w + x0 * sx:.1f}" y="{y}" width="{w:.1f}" '
                     f'height="{lane_h - 6}" fill="{colour}" stroke="#fff" stroke-width="0.5">'
                     f'<title>{esc(tip)}</title></rect>')
    for x, text in runs:
        px = label_w + x * sx
        parts.append(f'<line class="mark" x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" '
                     f'y2="{TOP + plot_h}" stroke="#888" stroke-dasharray="4 3"/>'
                     f'<text x="{px + 3:.1f}" y="{TOP + plot_h + 26}" {FONT} fill="#555">'
                     f'{esc(text)}</text>')
    for lane, x, colour, tip in marks:
        px, y = label_w + x * sx, TOP + lane * lane_h + 2
        parts.append(f'<path class="event" d="M{px - 5:.1f},{y} L{px + 5:.1f},{y} '
                     f'L{px:.1f},{y + 9} Z" fill="{colour}"><title>{esc(tip)}</title></path>')
    for x in nice_ticks(x_max, 8):
        if x > x_max * 1.0001:
            break
        parts.append(f'<text x="{label_w + x * sx:.1f}" y="{TOP + plot_h + 13}" '
                     f'text-anchor="middle" {FONT}>{_fmt(x)}</text>')
    parts.append("</svg>")
    return "".join(parts)
