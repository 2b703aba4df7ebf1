"""Charts as server-side SVG images: line charts (run curves, compared runs), a heatmap
(confusion matrix) and bar charts (class distributions).

Why SVG drawn on the server rather than a JavaScript charting library: nothing to vendor or
download, no script needed to see a chart (a screenshot, a mail, a page without JS show it), one
renderer for every page and for the live ones (a live page only reloads the image when an event
says the data changed), and the whole input is numbers and escaped labels, so a chart cannot
carry markup from a dataset's class names. Each function returns a complete `<svg>` document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.utils.html import escape

PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
FONT = 'font-family="sans-serif"'
MAX_POINTS = 2000  # a series is thinned to this many points
MAX_LABELS = 40  # heatmap axes label at most this many classes; bars beyond it are summed


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        f'<rect width="{width}" height="{height}" fill="#fff"/>' + "".join(body) + "</svg>"
    )


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]], str]],
    *,
    title: str,
    x_label: str = "epoch",
    width: int = 560,
    height: int = 300,
    y_min: float | None = None,
    y_max: float | None = None,
) -> str:
    """Several series `(label, [(x, y), ...], dash)` on shared axes; `dash` "" draws a solid
    line, "4 3" a dashed one (validation curves). Non-finite points are skipped."""
    left, right, top, bottom = 56, 16, 28, 44
    legend_rows = math.ceil(len(series) / 2)
    height = height + 16 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom - 16 * legend_rows
    clean = []
    for label, points, dash in series:
        pts = [(float(x), float(y)) for x, y in points if _finite(x) and _finite(y)]
        if len(pts) > MAX_POINTS:
            stride = math.ceil(len(pts) / MAX_POINTS)
            pts = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
        clean.append((label, pts, dash))
    xs = [x for _, pts, _ in clean for x, _ in pts]
    ys = [y for _, pts, _ in clean for _, y in pts]
    body = [
        f'<text x="{left}" y="18" font-size="13" {FONT} font-weight="bold">{escape(title)}</text>'
    ]
    if not xs:
        body.append(
            f'<text x="{left}" y="{top + plot_h / 2}" font-size="12" {FONT} fill="#666">'
            "No data yet.</text>"
        )
        return _svg(width, height, title, body)
    x0, x1 = min(xs), max(xs)
    lo = min(ys) if y_min is None else min(y_min, min(ys))
    hi = max(ys) if y_max is None else max(y_max, max(ys))
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5

    def px(x):
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y):
        return top + plot_h - (y - lo) / (hi - lo) * plot_h

    body.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>'
    )
    for tick in _ticks(lo, hi):
        y = py(tick)
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" {FONT} text-anchor="end">'
            f"{_fmt(tick)}</text>"
        )
    x_ticks = [t for t in _ticks(x0, x1, 6) if float(t).is_integer()] or [x0, x1]
    for tick in x_ticks:
        x = px(tick)
        body.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" '
            'stroke="#999"/>'
            f'<text x="{x:.1f}" y="{top + plot_h + 17}" font-size="11" {FONT} '
            f'text-anchor="middle">{_fmt(tick)}</text>'
        )
    body.append(
        f'<text x="{left + plot_w / 2}" y="{top + plot_h + 32}" font-size="11" {FONT} '
        f'text-anchor="middle" fill="#555">{escape(x_label)}</text>'
    )
    for i, (label, pts, dash) in enumerate(clean):
        colour = series_colour(i, clean)
        if pts:
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            dash_attr = f' stroke-dasharray="{escape(dash)}"' if dash else ""
            body.append(
                f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2"'
                f'{dash_attr} points="{coords}"/>'
            )
            if len(pts) == 1:
                body.append(
                    f'<circle cx="{px(pts[0][0]):.1f}" cy="{py(pts[0][1]):.1f}" r="3" '
                    f'fill="{colour}"/>'
                )
        lx = left + (i % 2) * (plot_w / 2)
        ly = top + plot_h + 50 + 16 * (i // 2)
        last = f" ({_fmt(pts[-1][1])})" if pts else ""
        dash_attr = f' stroke-dasharray="{escape(dash)}"' if dash else ""
        body.append(
            f'<line x1="{lx:.1f}" y1="{ly - 4}" x2="{lx + 18:.1f}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
            f'<text x="{lx + 24:.1f}" y="{ly}" font-size="11" {FONT}>{escape(label)}{last}</text>'
        )
    return _svg(width, height, title, body)


def series_colour(index: int, series: Sequence) -> str:
    """Pairs (train, val) of one run share a colour when the series come in pairs."""
    paired = len(series) % 2 == 0 and all(
        (s[2] or "") == ("" if i % 2 == 0 else "4 3") for i, s in enumerate(series)
    )
    return PALETTE[(index // 2 if paired else index) % len(PALETTE)]


def _heat(fraction: float) -> str:
    """White to dark blue."""
    f = min(1.0, max(0.0, fraction))
    r, g, b = (int(255 - f * (255 - c)) for c in (8, 48, 107))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(matrix: Sequence[Sequence[float]], labels: Sequence[str], *, title: str) -> str:
    """A confusion matrix: rows are true classes, columns predicted; each cell is shaded by its
    share of its row (recall), and shows its count when there is room."""
    n = len(matrix)
    if n == 0 or any(len(row) != n for row in matrix):
        return line_chart([], title=title)
    cell = max(6, min(44, 520 // n))
    show_labels = n <= MAX_LABELS
    margin = 90 if show_labels else 40
    top = 40 + (margin if show_labels else 0)
    size = cell * n
    width, height = margin + size + 20, top + size + 40
    body = [f'<text x="8" y="18" font-size="13" {FONT} font-weight="bold">{escape(title)}</text>']
    body.append(
        f'<text x="{margin + size / 2}" y="34" font-size="11" {FONT} text-anchor="middle" '
        'fill="#555">predicted</text>'
        f'<text x="12" y="{top + size / 2}" font-size="11" {FONT} fill="#555" '
        f'transform="rotate(-90 12 {top + size / 2})" text-anchor="middle">true</text>'
    )
    for i, row in enumerate(matrix):
        total = sum(v for v in row if _finite(v)) or 1
        for j, value in enumerate(row):
            value = value if _finite(value) else 0
            x, y = margin + j * cell, top + i * cell
            share = value / total
            body.append(
                f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="{_heat(share)}" stroke="#fff"><title>true {escape(_label(labels, i))}, '
                f"predicted {escape(_label(labels, j))}: {_fmt(value)}</title></rect>"
            )
            if cell >= 22:
                colour = "#fff" if share > 0.5 else "#222"
                body.append(
                    f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" font-size="{min(12, cell // 3)}" '
                    f'{FONT} text-anchor="middle" fill="{colour}">{int(value)}</text>'
                )
    if show_labels:
        for k in range(n):
            name = escape(_label(labels, k)[:14])
            body.append(
                f'<text x="{margin - 6}" y="{top + k * cell + cell / 2 + 4}" font-size="11" '
                f'{FONT} text-anchor="end">{name}</text>'
            )
            cx = margin + k * cell + cell / 2
            body.append(
                f'<text x="{cx}" y="{top - 6}" font-size="11" {FONT} '
                f'transform="rotate(-60 {cx} {top - 6})">{name}</text>'
            )
    return _svg(width, height, title, body)


def _label(labels: Sequence[str], index: int) -> str:
    return str(labels[index]) if index < len(labels) else str(index)


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str) -> str:
    """Vertical bars `(label, value)`; past MAX_LABELS bars the smallest are summed as "other"."""
    bars = [(str(label), float(v) if _finite(v) else 0.0) for label, v in bars]
    if len(bars) > MAX_LABELS:
        ranked = sorted(bars, key=lambda b: -b[1])
        bars = ranked[: MAX_LABELS - 1] + [("other", sum(v for _, v in ranked[MAX_LABELS - 1 :]))]
    left, top, bottom = 50, 30, 70
    bar_w = max(10, min(48, 560 // max(1, len(bars))))
    width = left + bar_w * len(bars) + 20
    width = max(width, 260)
    plot_h = 200
    height = top + plot_h + bottom
    body = [f'<text x="8" y="18" font-size="13" {FONT} font-weight="bold">{escape(title)}</text>']
    if not bars:
        body.append(f'<text x="{left}" y="{top + 40}" font-size="12" {FONT}>No data.</text>')
        return _svg(width, height, title, body)
    high = max(v for _, v in bars) or 1.0
    for tick in _ticks(0, high, 4):
        y = top + plot_h - tick / high * plot_h
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" {FONT} text-anchor="end">'
            f"{_fmt(tick)}</text>"
        )
    for i, (label, value) in enumerate(bars):
        h = value / high * plot_h
        x = left + i * bar_w
        body.append(
            f'<rect class="bar" x="{x + 2}" y="{top + plot_h - h:.1f}" width="{bar_w - 4}" '
            f'height="{h:.1f}" fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)}: '
            f"{_fmt(value)}</title></rect>"
        )
        cx, cy = x + bar_w / 2, top + plot_h + 12
        body.append(
            f'<text x="{cx}" y="{cy}" font-size="11" {FONT} text-anchor="end" '
            f'transform="rotate(-45 {cx} {cy})">{escape(label[:16])}</text>'
        )
    return _svg(width, height, title, body)
