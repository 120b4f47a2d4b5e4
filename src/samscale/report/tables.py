"""Tables as Markdown and HTML, with one number format for both (4 significant digits, whole numbers exact)."""
from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

MISSING = "–"


def format_value(value: Any) -> str:
    """Readable text for one table cell: whole numbers exact with thousands separators, other floats to 4 digits."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(format_value(v) for v in value)
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every cell replaced by its display text."""
    return table.apply(lambda column: column.map(format_value)) if len(table) else table.astype(str)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    if table.empty:
        return "_(no rows)_"
    cells = formatted(table)

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    header = [str(c) for c in table.columns]
    rows = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    rows += [line(list(values)) for values in cells.itertuples(index=False)]
    return "\n".join(rows)


def html_table(table: pd.DataFrame) -> str:
    """An HTML table with escaped cells."""
    if table.empty:
        return "<p><em>(no rows)</em></p>"
    cells = formatted(table)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>"
        for values in cells.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
