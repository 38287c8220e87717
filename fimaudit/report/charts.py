"""Chart layouts for the HTML report: every coordinate computed here, so templates only place them.

Three charts, all inline SVG:

- ``histogram``: distribution of lambda_max over the samples (log axis when it spans decades),
  with the median, p95 and the threshold marked;
- ``sample_chart``: every sample's lambda_max sorted, with its interval where estimated, its own
  bound where known, and the model-wide bound and threshold as lines (bound versus measured);
- ``strip_chart``: one row per model on a shared log axis (comparison report);
- ``scatter_chart``: two models' lambda_max per sample against each other on log-log axes, with
  the identity line (comparison report, one per compared pair).

lambda_max spans decades across samples, so values are placed on log10 axes; zeros (possible for
a sample whose prediction is certain) are drawn at the bottom of the axis and said to be so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fimaudit.report.formatting import fmt


@dataclass
class Tick:
    """An axis tick (or a row label): its position in pixels and its text."""
    position: float
    label: str


@dataclass
class Line:
    """A line segment, optionally labelled at (label_x, label_y)."""
    x1: float
    y1: float
    x2: float
    y2: float
    css: str
    label: str = ""
    label_x: float = 0.0
    label_y: float = 0.0


@dataclass
class Rect:
    """A rectangle (a histogram bar) with its hover title."""
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass
class Dot:
    """A marker at (cx, cy) with its CSS class and hover title."""
    cx: float
    cy: float
    css: str
    title: str


@dataclass
class Chart:
    """Everything an SVG chart shows, in pixels of a width x height box."""

    width: int
    height: int
    title: str
    left: float
    right: float
    top: float
    bottom: float
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_label: str = ""
    y_label: str = ""
    rects: list[Rect] = field(default_factory=list)
    dots: list[Dot] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    row_labels: list[Tick] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""

    @property
    def x_label_y(self) -> float:
        """Baseline of the x-axis label, just above the bottom edge."""
        return self.height - 6

    @property
    def x_center(self) -> float:
        """Horizontal centre of the plot area (where the x label is centred)."""
        return _round((self.left + self.right) / 2)

    @property
    def y_center(self) -> float:
        """Vertical centre of the plot area (where the y label is centred)."""
        return _round((self.top + self.bottom) / 2)

    @property
    def plot_width(self) -> float:
        """Width of the plot area in pixels."""
        return _round(self.right - self.left)

    @property
    def plot_height(self) -> float:
        """Height of the plot area in pixels."""
        return _round(self.bottom - self.top)

    @property
    def x_tick_end(self) -> float:
        """Where the x-axis tick marks end, below the plot area."""
        return self.bottom + 4

    @property
    def row_label_x(self) -> float:
        """Right edge of the row labels, left of the plot area."""
        return self.left - 8

    @property
    def tick_label_y(self) -> float:
        """Baseline of the x-axis tick labels."""
        return self.bottom + 16

    @property
    def y_tick_label_x(self) -> float:
        """Right edge of the y-axis tick labels."""
        return self.left - 6


def _round(value: float) -> float:
    return round(float(value), 2)


def tick_label(value: float) -> str:
    """Short axis labels: 0.01, 250, 1000, then 1e5 rather than 1e+05."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    text = f"{value:.2g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


class LogAxis:
    """Maps positive values to pixels between ``start`` and ``end`` on a log10 scale."""

    def __init__(self, values: Sequence[float], start: float, end: float) -> None:
        data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
        positive = data[data > 0]
        if positive.size == 0:
            positive = np.array([1.0])
        self.floor = float(positive.min())
        self.has_zero = bool((data <= 0).any())
        low, high = math.log10(self.floor), math.log10(float(positive.max()))
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        pad = 0.04 * (high - low)
        self.low, self.high = low - pad, high + pad
        self.start, self.end = start, end

    def __call__(self, value: float) -> float:
        """The pixel position of ``value``, clipped to the axis range."""
        clipped = max(float(value), 10**self.low)
        fraction = (math.log10(clipped) - self.low) / (self.high - self.low)
        fraction = min(max(fraction, 0.0), 1.0)
        return _round(self.start + fraction * (self.end - self.start))

    def contains(self, value: float) -> bool:
        """Whether ``value`` is positive and inside the axis range."""
        return value > 0 and self.low <= math.log10(value) <= self.high

    def ticks(self) -> list[Tick]:
        """Decades inside the range; when it spans less than two, also the ends' values."""
        first, last = math.ceil(self.low), math.floor(self.high)
        decades = list(range(first, last + 1))
        if len(decades) > 8:
            step = math.ceil(len(decades) / 6)
            decades = decades[::step]
        ticks = [Tick(self(10.0**k), tick_label(10.0**k)) for k in decades]
        if len(ticks) < 2:
            ticks = [Tick(self(10**v), tick_label(10**v)) for v in np.linspace(self.low, self.high, 4)]
        return ticks


def histogram(
    values: Sequence[float],
    markers: Sequence[tuple[str, float, str]] = (),
    title: str = "Distribution of lambda_max over samples",
    bins: int = 24,
    width: int = 640,
    height: int = 250,
    extend_to: float | None = None,
) -> Chart:
    """Counts of samples per bin (log10 bins when the values span more than two decades).

    ``markers`` are (label, value, css class) drawn as vertical lines: median, p95, threshold.
    ``extend_to`` (the threshold) widens the axis to show it, unless it is far off the data
    (beyond ten times the range), where it is drawn at the edge and labelled off scale.
    """
    chart = Chart(width, height, title, left=44, right=width - 14, top=46, bottom=height - 42)
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        chart.note = "no samples"
        return chart
    positive = data[data > 0]
    use_log = positive.size == data.size and positive.max() / positive.min() > 100
    transformed = np.log10(data) if use_log else data
    low, high = float(transformed.min()), float(transformed.max())
    if (
        extend_to is not None
        and extend_to > 0
        and (not use_log or positive.min() / 10 <= extend_to <= positive.max() * 10)
    ):
        extra = math.log10(extend_to) if use_log else extend_to
        if not use_log and not (low - 10 * (high - low + 1e-300) <= extra <= high + 10 * (high - low + 1e-300)):
            extra = low
        low, high = min(low, extra), max(high, extra)
    if high == low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(transformed, bins=bins, range=(low, high))
    span_x = chart.right - chart.left
    span_y = chart.bottom - chart.top
    tallest = max(int(counts.max()), 1)

    def shown(edge: float) -> float:
        return 10**edge if use_log else edge

    def x_of(raw: float) -> float:
        t = math.log10(raw) if use_log else raw
        return _round(chart.left + (t - low) / (high - low) * span_x)

    bar_width = span_x / bins
    for i, count in enumerate(counts):
        bar_height = span_y * int(count) / tallest
        chart.rects.append(
            Rect(
                x=_round(chart.left + i * bar_width),
                y=_round(chart.bottom - bar_height),
                width=_round(max(bar_width - 1, 0.5)),
                height=_round(bar_height),
                title=f"{fmt(shown(edges[i]), 3)} – {fmt(shown(edges[i + 1]), 3)}: {int(count)} samples",
            )
        )
    chart.x_ticks = [
        Tick(_round(chart.left + t * span_x / 4), tick_label(shown(low + t * (high - low) / 4))) for t in range(5)
    ]
    chart.y_ticks = [
        Tick(_round(chart.bottom - span_y * c / tallest), str(c)) for c in sorted({0, tallest // 2, tallest})
    ]
    chart.x_label = "lambda_max" + (" (log scale)" if use_log else "")
    chart.y_label = "samples"
    for label, value, css in markers:
        if value is None:
            continue
        position = (math.log10(value) if value > 0 else -math.inf) if use_log else value
        slack = 1e-9 * (high - low)
        inside = low - slack <= position <= high + slack
        x = x_of(value) if inside else (chart.right if position > high else chart.left)
        text = f"{label} {fmt(value)}" + ("" if inside else " (off scale)")
        # Labels of up to three markers are staggered so that close markers stay readable.
        label_y = 12 + 12 * (len(chart.lines) % 3)
        chart.lines.append(
            Line(x, chart.top, x, chart.bottom, css, text, _round(min(x + 3, chart.right - 110)), label_y)
        )
    return chart


def sample_chart(
    samples: Sequence[dict],
    threshold: float | None,
    model_bound: float | None,
    sample_bounds: dict[int, float],
    width: int = 640,
    height: int = 260,
) -> Chart:
    """lambda_max of every sample sorted ascending, against bounds and the threshold."""
    title = "lambda_max of each sample (sorted) against the analytic bound"
    chart = Chart(width, height, title, left=54, right=width - 14, top=16, bottom=height - 42)
    ordered = sorted(samples, key=lambda s: float(s["lambda_max"]))
    everything: list[float] = [float(s["lambda_max"]) for s in ordered]
    for s in ordered:
        if s.get("interval"):
            everything += [float(v) for v in s["interval"]]
    everything += list(sample_bounds.values())
    if model_bound is not None:
        everything.append(model_bound)
    if threshold is not None:
        everything.append(threshold)
    axis = LogAxis(everything, chart.bottom, chart.top)
    count = max(len(ordered), 1)
    step = (chart.right - chart.left) / count
    for rank, sample in enumerate(ordered):
        x = _round(chart.left + (rank + 0.5) * step)
        value = float(sample["lambda_max"])
        if sample.get("interval"):
            low, high = sample["interval"]
            chart.lines.append(Line(x, axis(high), x, axis(low), "interval"))
        chart.dots.append(Dot(x, axis(value), f"measured {sample['kind']}",
                              f"sample {sample['index']}: {fmt(value)} ({sample['kind']})"))
        bound = sample_bounds.get(sample["index"])
        if bound is not None:
            chart.dots.append(Dot(x, axis(bound), "sample-bound", f"sample {sample['index']}: bound {fmt(bound)}"))
    for label, level, css in (("bound", model_bound, "bound"), ("threshold", threshold, "threshold")):
        if level is not None:
            y = axis(level)
            chart.lines.append(
                Line(chart.left, y, chart.right, y, css, f"{label} {fmt(level)}", chart.left + 4, _round(y - 4))
            )
    chart.y_ticks = axis.ticks()
    chart.x_label = f"samples, sorted by lambda_max ({len(ordered)})"
    chart.y_label = "lambda_max (log)"
    chart.legend = [("measured", "measured exact")]
    if any(s.get("interval") for s in ordered):
        chart.legend.append(("interval", "interval"))
    if sample_bounds:
        chart.legend.append(("per-sample bound", "sample-bound"))
    if model_bound is not None:
        chart.legend.append(("model bound", "bound"))
    if threshold is not None:
        chart.legend.append(("threshold", "threshold"))
    notes = []
    if model_bound is None and not sample_bounds:
        notes.append("analytic bound: not computed")
    if axis.has_zero:
        notes.append("zeros drawn at the bottom of the axis")
    chart.note = "; ".join(notes)
    return chart


@dataclass
class StripRow:
    """One model's row of the strip chart: its per-sample values, median and bound."""
    label: str
    values: list[float]
    median: float | None
    bound: float | None


def strip_chart(rows: Sequence[StripRow], threshold: float | None = None, width: int = 720) -> Chart:
    """One row per model: each sample a dot on a shared log axis, the median a bar, the bound a diamond."""
    row_height = 34
    height = 60 + row_height * max(len(rows), 1)
    chart = Chart(
        width, height, "lambda_max per sample, by model", left=190, right=width - 16, top=14, bottom=height - 42
    )
    everything = [v for row in rows for v in row.values] + [row.bound for row in rows if row.bound is not None]
    if threshold is not None:
        everything.append(threshold)
    axis = LogAxis(everything, chart.left, chart.right)
    for i, row in enumerate(rows):
        y = _round(chart.top + row_height * (i + 0.5))
        chart.row_labels.append(Tick(y, row.label))
        chart.lines.append(Line(chart.left, y, chart.right, y, "row"))
        for value in row.values:
            chart.dots.append(Dot(axis(value), y, "measured", f"{row.label}: {fmt(value)}"))
        if row.median is not None:
            x = axis(row.median)
            chart.lines.append(Line(x, _round(y - 11), x, _round(y + 11), "median", "", 0, 0))
        if row.bound is not None:
            chart.dots.append(Dot(axis(row.bound), y, "bound-mark", f"{row.label}: bound {fmt(row.bound)}"))
    if threshold is not None:
        x = axis(threshold)
        chart.lines.append(
            Line(
                x, chart.top, x, chart.bottom, "threshold", f"threshold {fmt(threshold)}", _round(x + 3), chart.top + 10
            )
        )
    chart.x_ticks = [Tick(t.position, t.label) for t in axis.ticks()]
    chart.x_label = "lambda_max (log scale)"
    chart.legend = [("sample", "measured"), ("median", "median")]
    if any(row.bound is not None for row in rows):
        chart.legend.append(("bound", "bound-mark"))
    else:
        chart.note = "analytic bounds: not computed"
    return chart


@dataclass
class ScatterPoint:
    """One sample of the scatter chart: lambda_max under model A (x) and B (y), and whether they agree."""
    index: int
    x: float
    y: float
    agree: bool


def scatter_chart(points: Sequence[ScatterPoint], x_label: str, y_label: str, size: int = 320) -> Chart:
    """lambda_max of model A (x) against model B (y) per sample, log-log, with the identity line.

    Both axes share one range, so a sample on which the models agree lies on the diagonal;
    disagreeing samples are drawn in their own colour.
    """
    chart = Chart(size + 60, size + 50, f"lambda_max per sample: {y_label} against {x_label}",
                  left=56, right=size + 46, top=12, bottom=size + 8)
    everything = [p.x for p in points] + [p.y for p in points]
    x_axis = LogAxis(everything, chart.left, chart.right)
    y_axis = LogAxis(everything, chart.bottom, chart.top)
    low, high = 10**x_axis.low, 10**x_axis.high
    chart.lines.append(Line(x_axis(low), y_axis(low), x_axis(high), y_axis(high), "identity"))
    for point in points:
        css = "measured" if point.agree else "disagree"
        verdict = "agree" if point.agree else "DISAGREE"
        chart.dots.append(Dot(x_axis(point.x), y_axis(point.y), css,
                              f"sample {point.index}: {fmt(point.x)} vs {fmt(point.y)} ({verdict})"))
    chart.x_ticks = x_axis.ticks()
    chart.y_ticks = y_axis.ticks()
    chart.x_label = f"{x_label} (log)"
    chart.y_label = f"{y_label} (log)"
    chart.legend = [
        ("sample that agrees", "measured"),
        ("sample that disagrees", "disagree"),
        ("identity y = x", "identity"),
    ]
    if x_axis.has_zero:
        chart.note = "zeros drawn at the bottom of the axes"
    return chart


def attack_scatter(points: Sequence[tuple[int, float, float]], norm: str, caption: str, size: int = 320) -> Chart:
    """lambda_max (x) against the verified epsilon_min (y) per sample, log-log (the attack section).

    ``points`` are (sample index, lambda_max, epsilon_min) of the samples with a verified example.
    If lambda_max predicts vulnerability, the points fall from top left to bottom right (for a
    locally quadratic model, epsilon_min ~ 1 / sqrt(lambda_max)); ``caption`` states the measured
    correlation.
    """
    chart = Chart(size + 60, size + 50, f"lambda_max against epsilon_min (l{norm}) per sample: {caption}",
                  left=56, right=size + 46, top=12, bottom=size + 8)
    x_axis = LogAxis([p[1] for p in points], chart.left, chart.right)
    y_axis = LogAxis([p[2] for p in points], chart.bottom, chart.top)
    for index, lam, eps in points:
        chart.dots.append(Dot(x_axis(lam), y_axis(eps), "measured",
                              f"sample {index}: lambda_max {fmt(lam)}, epsilon_min {fmt(eps)}"))
    chart.x_ticks, chart.y_ticks = x_axis.ticks(), y_axis.ticks()
    chart.x_label, chart.y_label = "lambda_max (log)", f"verified epsilon_min, l{norm} (log)"
    chart.legend = [("sample with a verified adversarial example", "measured")]
    if x_axis.has_zero:
        chart.note = "lambda_max = 0 drawn at the left edge"
    return chart


def quadratic_chart(index: int, t: Sequence[float], kl: Sequence[float], quadratic: Sequence[float],
                    radius: float | None, size: int = 300) -> Chart:
    """KL(p(x) || p(x + t v)) measured against 1/2 t^2 lambda_max along the top eigenvector, log-log.

    The two curves coincide where lambda_max describes the model; the marker is the radius up to
    which they agree within the tolerance. Non-positive KL (below float rounding) is not drawn.
    """
    chart = Chart(size + 60, size // 2 + 70, f"sample {index}: KL along the top eigenvector against "
                  "1/2 t^2 lambda_max", left=56, right=size + 46, top=12, bottom=size // 2 + 28)
    x_axis = LogAxis(list(t), chart.left, chart.right)
    y_axis = LogAxis([v for v in [*kl, *quadratic] if v > 0], chart.bottom, chart.top)
    for css, values in (("kl-quadratic", quadratic), ("kl-measured", kl)):
        for i in range(len(t) - 1):
            if values[i] > 0 and values[i + 1] > 0:
                chart.lines.append(Line(x_axis(t[i]), y_axis(values[i]), x_axis(t[i + 1]), y_axis(values[i + 1]), css))
    if radius is not None:
        at = quadratic[list(t).index(radius)] if radius in t else 0.5 * radius**2
        chart.dots.append(Dot(x_axis(radius), y_axis(at), "bound-mark", f"quadratic regime up to t = {fmt(radius)}"))
    chart.x_ticks, chart.y_ticks = x_axis.ticks(), y_axis.ticks()
    chart.x_label, chart.y_label = "t, step along v (log)", "KL (log)"
    chart.legend = [("measured KL (+v)", "kl-measured"), ("1/2 t^2 lambda_max", "kl-quadratic")]
    chart.note = "quadratic regime: " + (f"up to t = {fmt(radius)} (marker)" if radius is not None
                                         else "not reached at the first grid point")
    return chart


def certificate_chart(index: int, epsilons: Sequence[float], values: Sequence[float], measured: float,
                      norm: str, size: int = 300) -> Chart:
    """The certified bound B(x, eps) against eps (log-log) beside the sample's lambda_max(x) (issue 10).

    B is a guarantee over the whole eps-ball; lambda_max(x) is the value at x alone, which B
    approaches as eps -> 0. Only positive radii are drawn (eps = 0 has no place on a log axis).
    """
    points = [(e, v) for e, v in zip(epsilons, values, strict=True) if e > 0 and v > 0 and math.isfinite(v)]
    chart = Chart(size + 60, size // 2 + 70, f"sample {index}: certified B(x, eps) ({norm}) against lambda_max(x)",
                  left=56, right=size + 46, top=12, bottom=size // 2 + 28)
    x_axis = LogAxis([e for e, _ in points] or [1.0], chart.left, chart.right)
    y_axis = LogAxis([v for _, v in points] + [measured], chart.bottom, chart.top)
    for (e1, v1), (e2, v2) in zip(points, points[1:], strict=False):
        chart.lines.append(Line(x_axis(e1), y_axis(v1), x_axis(e2), y_axis(v2), "kl-measured"))
    for e, v in points:
        chart.dots.append(Dot(x_axis(e), y_axis(v), "bound-mark", f"B(x, {fmt(e)}) = {fmt(v)}"))
    chart.lines.append(Line(chart.left, y_axis(measured), chart.right, y_axis(measured), "kl-quadratic"))
    chart.x_ticks, chart.y_ticks = x_axis.ticks(), y_axis.ticks()
    chart.x_label, chart.y_label = "eps, radius of the ball (log)", "lambda_max (log)"
    chart.legend = [("certified B(x, eps)", "kl-measured"), ("measured lambda_max(x)", "kl-quadratic")]
    return chart
