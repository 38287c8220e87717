"""Chart layouts: counts, axes and markers computed in Python, inside the chart box."""

from __future__ import annotations

import re

import numpy as np

from fimaudit.report.charts import LogAxis, StripRow, histogram, sample_chart, strip_chart, tick_label
from tests.report.helpers import sample


def _inside(chart, x: float, y: float) -> bool:
    return 0 <= x <= chart.width and 0 <= y <= chart.height


def test_histogram_counts_every_sample_and_marks_median_p95_threshold() -> None:
    values = np.geomspace(0.001, 50, 40)
    chart = histogram(values.tolist(), [("median", float(np.median(values)), "median"), ("threshold", 1e6, "threshold")])
    counts = [int(re.search(r": (\d+) samples", r.title).group(1)) for r in chart.rects]
    assert sum(counts) == 40
    assert "log scale" in chart.x_label
    median, threshold = chart.lines
    assert chart.left < median.x1 < chart.right
    assert threshold.x1 == chart.right and "off scale" in threshold.label
    for rect in chart.rects:
        assert _inside(chart, rect.x, rect.y) and rect.y + rect.height <= chart.bottom + 0.01


def test_histogram_of_equal_values_and_linear_range() -> None:
    chart = histogram([2.0, 2.0, 2.0])
    assert sum(int(r.title.rsplit(": ", 1)[1].split()[0]) for r in chart.rects) == 3
    assert "log" not in chart.x_label


def test_log_axis_is_monotone_and_ticks_are_decades() -> None:
    axis = LogAxis([0.01, 5.0, 300.0], 0, 100)
    positions = [axis(v) for v in (0.01, 0.1, 5.0, 300.0)]
    assert positions == sorted(positions) and 0 <= positions[0] and positions[-1] <= 100
    assert [t.label for t in axis.ticks()] == ["0.01", "0.1", "1", "10", "100"]


def test_sample_chart_draws_each_sample_its_bound_intervals_and_lines() -> None:
    samples = [s.to_dict() for s in (sample(0, 1.0), sample(1, 5.0, "estimate", [4.0, 6.0]), sample(2, 0.1))]
    chart = sample_chart(samples, threshold=3.0, model_bound=50.0, sample_bounds={0: 2.0, 2: 0.5})
    measured = [d for d in chart.dots if d.css.startswith("measured")]
    assert [d.title.split(":")[0] for d in measured] == ["sample 2", "sample 0", "sample 1"]  # sorted
    assert len([d for d in chart.dots if d.css == "sample-bound"]) == 2
    assert {line.css for line in chart.lines} == {"interval", "bound", "threshold"}
    bound_line = next(line for line in chart.lines if line.css == "bound")
    assert bound_line.y1 < min(d.cy for d in measured)  # larger values are higher up
    assert chart.note == ""
    assert "analytic bound: not computed" in sample_chart(samples, None, None, {}).note


def test_strip_chart_has_a_row_per_model() -> None:
    rows = [StripRow("a.onnx", [0.1, 1.0], 0.5, None), StripRow("b.onnx", [10.0], 10.0, 40.0)]
    chart = strip_chart(rows)
    assert [t.label for t in chart.row_labels] == ["a.onnx", "b.onnx"]
    assert len([d for d in chart.dots if d.css == "measured"]) == 3
    assert len([d for d in chart.dots if d.css == "bound-mark"]) == 1


def test_tick_labels_are_short() -> None:
    assert [tick_label(v) for v in (0.0001, 0.024, 1000.0, 1e4, 2.5e5)] == ["0.0001", "0.024", "1000", "1e4", "2.5e5"]


def test_histogram_widens_to_show_a_nearby_threshold() -> None:
    values = [0.01, 0.5, 2.0, 42.0]
    chart = histogram(values, [("threshold", 50.0, "threshold")], extend_to=50.0)
    (threshold,) = chart.lines
    assert chart.left < threshold.x1 <= chart.right and "off scale" not in threshold.label
    assert chart.x_ticks[-1].label == "50"
