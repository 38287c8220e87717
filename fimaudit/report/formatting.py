"""Numbers and values as a reviewer reads them: formatted once, in Python, never in templates.

``present`` turns any JSON value into short text, so sections whose shape fimaudit does not fix
(per-layer bound contributions, dataset breakdowns, gradient-check details written by other
stages) can still be shown faithfully as tables.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"


def fmt(value: float | int | None, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; '—' for missing, words for non-finite."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    return f"{number:.{digits}g}"


def shape_text(shape: Any) -> str:
    """[N, 1, 8, 8] with symbolic dimensions kept as their names and unknown ones as '?'."""
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def present(value: Any) -> str:
    """Any JSON value as one line of text (numbers to 4 significant digits)."""
    if value is None:
        return MISSING
    if isinstance(value, (bool, int, float)):
        return fmt(value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "; ".join(f"{key}: {present(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in value):
            return f"[{fmt(value[0])}, {fmt(value[1])}]"
        return ", ".join(present(item) for item in value)
    return str(value)


def humanise(key: str) -> str:
    """'max_relative_error' -> 'Max relative error' (section and column titles from JSON keys)."""
    words = str(key).replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else words


def table_from_records(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Columns (union of keys, first-seen order) and text rows for a list of JSON objects."""
    columns: list[str] = []
    for record in records:
        for key in record:
            if key not in columns:
                columns.append(key)
    rows = [[clip(present(record.get(column))) for column in columns] for record in records]
    return [humanise(column) for column in columns], rows


#: Table cells longer than this are cut (the JSON document keeps the whole value).
CELL_LIMIT = 160


def clip(text: str, limit: int = CELL_LIMIT) -> str:
    """``text`` cut to ``limit`` characters for a table cell, saying where the full text is."""
    return text if len(text) <= limit else text[: limit - 20] + " … (cut; full in the JSON)"


def file_name(path: str) -> str:
    """The last component of a path written by any platform."""
    return str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
