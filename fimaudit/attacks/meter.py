"""Model evaluations an attack paid: input rows through the runner and the gradient source."""

from __future__ import annotations

from fimaudit.gradients import InputJacobian
from fimaudit.runtime import ModelRunner


class EvaluationMeter:
    """Counts rows evaluated since it was made (runner and source; once when they share a count)."""

    def __init__(self, runner: ModelRunner, source: InputJacobian | None = None) -> None:
        self._counts = [runner.accounting]
        if source is not None and source.accounting is not runner.accounting:
            self._counts.append(source.accounting)
        self._start = [count.evaluations for count in self._counts]

    @property
    def spent(self) -> int:
        """Rows evaluated since the meter was made, forward runs and gradients together."""
        return sum(count.evaluations - start for count, start in zip(self._counts, self._start, strict=True))
