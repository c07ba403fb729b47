"""The health page's charts: inline SVG drawn on the server, and the same numbers as a table.

No script and no `style` attribute: colours come from classes in
static/css/site.css (`s0`…`s9`), so the page keeps the strict CSP of
config/settings/base.py. Every value that reaches the markup goes through
`format_html`, which escapes it. `health_charts()` turns an
`accounts.ops.timeline.Timeline` into the page's charts.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .events import REFRESH_WAIT
from .timeline import KNOWN, Timeline

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 24
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
COLOURS = 10  # classes s0…s9 in site.css


@dataclass(frozen=True)
class Line:
    """One labelled row of values, one per minute (None: nothing to show that minute)."""

    label: str
    values: tuple[float | None, ...]
    colour: str  # a class, "s0"…


@dataclass(frozen=True)
class Chart:
    """What the template shows for one chart: heading, SVG, legend and table."""

    id: str
    title: str
    summary: str
    svg: SafeString
    legend: tuple[Line, ...]
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[str, ...]], ...]  # (minute, cells) for minutes with data


def minute_label(minute: int) -> str:
    """Return a unix minute as HH:MM in the site's time zone."""
    return timezone.localtime(datetime.fromtimestamp(minute * 60, UTC)).strftime("%H:%M")


def milliseconds(seconds: float | None) -> str:
    """Return a latency for people: "7.5 ms", "1.2 s", or "–" for none."""
    if seconds is None:
        return "–"
    if seconds >= 1:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def nice_ceiling(value: float) -> float:
    """Return the smallest 1, 2 or 5 times a power of ten that is at least `value` (1 for none)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value * (1 - 1e-9))


def count_label(value: float) -> str:
    return f"{value:g}"


def bar_chart(
    *,
    id: str,
    title: str,
    minutes: tuple[int, ...],
    bars: list[Line],
    line: Line | None = None,
    nothing: str,
) -> Chart:
    """Return a chart of stacked per-minute bars, with an optional line drawn over them."""
    totals = [sum(bar.values[i] or 0 for bar in bars) for i in range(len(minutes))]
    top = nice_ceiling(max([*totals, *(line.values if line else ())], default=0) or 0)
    slot = PLOT_W / max(len(minutes), 1)
    shapes = []
    for i, minute in enumerate(minutes):
        base = 0.0
        for bar in bars:
            value = bar.values[i] or 0
            if not value:
                continue
            y0, y1 = _y(base, top), _y(base + value, top)
            shapes.append(
                format_html(
                    '<rect class="bar {}" x="{}" y="{}" width="{}" height="{}">'
                    "<title>{} {}: {}</title></rect>",
                    bar.colour,
                    _n(LEFT + i * slot + slot * 0.1),
                    _n(y1),
                    _n(slot * 0.8),
                    _n(y0 - y1),
                    minute_label(minute),
                    bar.label,
                    value,
                )
            )
            base += value
    if line is not None:
        points = [(LEFT + (i + 0.5) * slot, _y(v or 0, top)) for i, v in enumerate(line.values)]
        shapes.append(_polyline(points, line.colour))
    series = [*bars, *([line] if line else [])]
    events = sum(totals)
    summary = (
        ", ".join(f"{_total(s)} {s.label}" for s in series) + " in the last hour"
        if events or (line and _total(line))
        else nothing
    )
    return Chart(
        id=id,
        title=title,
        summary=summary,
        svg=_svg(id, title, summary, minutes, top, count_label, _joined(shapes)),
        legend=tuple(series),
        columns=tuple(s.label for s in series),
        rows=_rows(minutes, series, [count_label] * len(series)),
    )


def latency_chart(
    *, id: str, title: str, minutes: tuple[int, ...], calls: Line, p50: Line, p95: Line
) -> Chart:
    """Return a chart of two latency lines (p50, p95) with a dot for each minute that had calls."""
    top = nice_ceiling(max((v for v in p95.values if v is not None), default=0))
    slot = PLOT_W / max(len(minutes), 1)
    shapes = []
    for line in (p50, p95):
        run: list[tuple[float, float]] = []
        for i, value in enumerate([*line.values, None]):
            if value is not None:
                run.append((LEFT + (i + 0.5) * slot, _y(value, top)))
                continue
            if len(run) > 1:
                shapes.append(_polyline(run, line.colour))
            for x, y in run:
                shapes.append(
                    format_html(
                        '<circle class="dot {}" cx="{}" cy="{}" r="2.5"></circle>',
                        line.colour,
                        _n(x),
                        _n(y),
                    )
                )
            run = []
    total = _total(calls)
    summary = (
        f"{total:g} {calls.label}; p50 {milliseconds(_last(p50))}, p95 {milliseconds(_last(p95))} "
        "in the latest minute with calls"
        if total
        else "No calls in the last hour"
    )
    return Chart(
        id=id,
        title=title,
        summary=summary,
        svg=_svg(id, title, summary, minutes, top, milliseconds, _joined(shapes)),
        legend=(p50, p95),
        columns=(calls.label, p50.label, p95.label),
        rows=_rows(
            minutes, (calls, p50, p95), [count_label, milliseconds, milliseconds], counted=calls
        ),
    )


def health_charts(timeline: Timeline) -> list[Chart]:
    """Return the page's charts: refreshes, sign-ins, sign-outs, throttle, proxy, latencies.

    Latencies: of the backend, per endpoint called, and of requests' waits for
    a refresh, when any waited.
    """
    minutes = timeline.minutes
    zeros = (0,) * len(minutes)

    def lines(series: str, *, always: tuple[str, ...] = ()) -> list[Line]:
        rows = timeline.counts.get(series, {})
        wanted = [label for label, row in rows.items() if label in always or any(row)]
        return [
            Line(_human(label), rows.get(label, zeros), f"s{_colour(series, label)}")
            for label in wanted
        ]

    served = timeline.counts.get("refresh_served", {})
    coalesced = tuple(sum(column) for column in zip(*served.values(), strict=True)) or zeros
    charts = [
        bar_chart(
            id="refreshes",
            title="Refreshes per minute",
            minutes=minutes,
            bars=lines("refresh", always=KNOWN["refresh"]),
            line=Line("coalesced (shared + waited)", coalesced, "s9"),
            nothing="No refreshes in the last hour",
        ),
        bar_chart(
            id="sign-ins",
            title="Sign-in outcomes per minute",
            minutes=minutes,
            bars=lines("sign_in", always=("ok", "wrong_password")),
            nothing="No sign-ins in the last hour",
        ),
        bar_chart(
            id="sign-outs",
            title="Sign-outs by reason per minute",
            minutes=minutes,
            bars=lines("sign_out"),
            nothing="No sign-outs in the last hour",
        ),
        bar_chart(
            id="throttle",
            title="Sign-in throttle per minute",
            minutes=minutes,
            bars=lines("throttle", always=KNOWN["throttle"]),
            nothing="No sign-in attempts reached the throttle in the last hour",
        ),
        bar_chart(
            id="proxy",
            title="Proxy answers per minute, by status",
            minutes=minutes,
            bars=lines("proxy"),
            nothing="No calls through the /api/ proxy in the last hour",
        ),
    ]
    if timeline.endpoints(REFRESH_WAIT):
        charts.append(
            latency_chart(
                id="refresh-wait",
                title="Waits for a refresh",
                minutes=minutes,
                calls=Line("waits", timeline.calls("all", REFRESH_WAIT), "s7"),
                p50=Line("p50", timeline.percentiles("all", 0.5, REFRESH_WAIT), "s4"),
                p95=Line("p95", timeline.percentiles("all", 0.95, REFRESH_WAIT), "s1"),
            )
        )
    for endpoint in timeline.endpoints():
        charts.append(
            latency_chart(
                id=f"latency-{endpoint}",
                title=f"Backend latency: {endpoint}",
                minutes=minutes,
                calls=Line("calls", timeline.calls(endpoint), "s7"),
                p50=Line("p50", timeline.percentiles(endpoint, 0.5), "s4"),
                p95=Line("p95", timeline.percentiles(endpoint, 0.95), "s1"),
            )
        )
    return charts


@dataclass(frozen=True)
class LatencySummary:
    """One endpoint's calls and latency over the whole window."""

    endpoint: str
    calls: int
    p50: str
    p95: str


def latency_summary(timeline: Timeline) -> list[LatencySummary]:
    """Return calls, p50 and p95 over the window for each endpoint called in it."""
    return [
        LatencySummary(
            endpoint=endpoint,
            calls=sum(timeline.calls(endpoint)),
            p50=milliseconds(timeline.window_percentile(endpoint, 0.5)),
            p95=milliseconds(timeline.window_percentile(endpoint, 0.95)),
        )
        for endpoint in timeline.endpoints()
    ]


def _colour(series: str, label: str) -> int:
    known = KNOWN.get(series, ())
    index = known.index(label) if label in known else len(known) + sum(map(ord, label))
    return index % (COLOURS - 1)  # s9 is the refresh chart's line


def _human(label: str) -> str:
    return label.replace("_", " ")


def _y(value: float, top: float) -> float:
    return TOP + PLOT_H - min(value, top) / top * PLOT_H


def _n(number: float) -> str:
    return f"{number:.1f}"


def _total(line: Line) -> float:
    return sum(v for v in line.values if v is not None)


def _last(line: Line) -> float | None:
    return next((v for v in reversed(line.values) if v is not None), None)


def _joined(parts: list[SafeString]) -> SafeString:
    # Each part is already escaped markup; format_html_join leaves it as it is.
    return format_html_join("", "{}", ((part,) for part in parts))


def _polyline(points: list[tuple[float, float]], colour: str) -> SafeString:
    return format_html(
        '<polyline class="line {}" points="{}"></polyline>',
        colour,
        " ".join(f"{_n(x)},{_n(y)}" for x, y in points),
    )


def _svg(id, title, summary, minutes, top, label, shapes: SafeString) -> SafeString:
    """Return the <svg> element: grid lines with their values, minute ticks, and `shapes`."""
    levels = [0, top / 2, top] if label is not count_label or (top / 2).is_integer() else [0, top]
    grid = format_html_join(
        "",
        '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"></line>'
        '<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>',
        (
            (
                LEFT,
                WIDTH - RIGHT,
                _n(_y(v, top)),
                _n(_y(v, top)),
                LEFT - 4,
                _n(_y(v, top) + 4),
                label(v) if v else "0",
            )
            for v in levels
        ),
    )
    slot = PLOT_W / max(len(minutes), 1)
    last = len(minutes) - 1
    shown = sorted({0, last // 4, last // 2, 3 * last // 4, last}) if minutes else []
    ticks = format_html_join(
        "",
        '<text class="tick" x="{}" y="{}" text-anchor="{}">{}</text>',
        (
            (
                _n(LEFT + (i + 0.5) * slot),
                HEIGHT - 6,
                "start" if i == 0 else "end" if i == last else "middle",
                minute_label(minutes[i]),
            )
            for i in shown
        ),
    )
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-labelledby="{}-title {}-desc" '
        'xmlns="http://www.w3.org/2000/svg">'
        '<title id="{}-title">{}</title><desc id="{}-desc">{}</desc>{}{}{}</svg>',
        WIDTH,
        HEIGHT,
        id,
        id,
        id,
        title,
        id,
        summary,
        grid,
        shapes,
        ticks,
    )


def _rows(minutes, series, formats, *, counted: Line | None = None):
    """Return (minute, cells) for each minute with data (with calls, when `counted`)."""
    rows = []
    for i, minute in enumerate(minutes):
        values = [line.values[i] for line in series]
        if not (counted.values[i] if counted is not None else any(values)):
            continue
        cells = tuple(
            fmt(v) if v is not None else "–" for fmt, v in zip(formats, values, strict=True)
        )
        rows.append((minute_label(minute), cells))
    return tuple(rows)
