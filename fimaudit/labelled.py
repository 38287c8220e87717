"""What labels add to an audit: accuracy, lambda_max by true class, correct vs misclassified.

A model owner with a validation set asks whether sensitivity and errors go together: are the
misclassified samples the fragile ones, and which true classes are fragile? Everything here is
computed from the per-sample results (``SampleResult.true_class``, ``predicted_class`` and the
verdict space's lambda_max); no model runs. Values keep their kind, as in the dataset view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fimaudit.results import LabelSummary, SampleResult
from fimaudit.statistics import summary_dict


def _stats(values: list[float]) -> dict[str, float | int | None]:
    return summary_dict(np.asarray(values, dtype=np.float64))


def label_summary(samples: Sequence[SampleResult], class_names: Sequence[str] | None = None) -> LabelSummary | None:
    """Accuracy and lambda_max split by true class and by correctness; None without labels."""
    labelled = [s for s in samples if s.true_class is not None]
    if not labelled:
        return None
    correct = [s.value for s in labelled if s.predicted_class == s.true_class]
    wrong = [s.value for s in labelled if s.predicted_class != s.true_class]
    by_class: dict[int, list[SampleResult]] = {}
    for sample in labelled:
        by_class.setdefault(int(sample.true_class), []).append(sample)  # type: ignore[arg-type]
    classes = []
    for label in sorted(by_class):
        members = by_class[label]
        name = class_names[label] if class_names is not None and label < len(class_names) else None
        classes.append(
            {
                "class": label,
                "name": name,
                "count": len(members),
                "accuracy": sum(s.predicted_class == label for s in members) / len(members),
                "lambda_max": _stats([s.value for s in members]),
            }
        )
    return LabelSummary(
        count=len(labelled),
        accuracy=len(correct) / len(labelled),
        space=labelled[0].space,
        correct=_stats(correct),
        misclassified=_stats(wrong),
        by_true_class=tuple(classes),
    )
