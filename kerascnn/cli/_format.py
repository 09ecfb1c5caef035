"""Text output shared by the commands: one table renderer, CSV, numbers, sizes."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable, Sequence


def table(rows: Sequence[Sequence[Any]], *, right: Iterable[int] = (), rule: bool = False,
          markdown: bool = False) -> str:
    """Rows of cells as aligned text columns; the first row is the header.

    Args:
        rows: the header, then one sequence of cells per row (made `str`).
        right: indices of the columns aligned to the right (numbers).
        rule: draw a line of dashes under the header.
        markdown: a Markdown table (`| a | b |`) instead of aligned text.

    Returns:
        The table, lines joined by newlines, without trailing spaces.
    """
    rows = [[str(c) for c in row] for row in rows]
    if not rows:
        return ""
    if markdown:
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines)
    right = set(right)
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if rule and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as CSV text, `\\n` line ends."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def decimal(value: Any, digits: int = 4) -> str:
    """A number with `digits` decimals; `-` for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def shape(dims: Iterable[Any]) -> str:
    """`(28, 28, 1)` -> `28x28x1`."""
    return "x".join(str(d) for d in dims)


def size(n: float | None, *, binary: bool = False) -> str:
    """A byte count for people: `1.5 MB` (powers of 1000) or `1.4 MiB` (`binary`)."""
    if n is None:
        return "-"
    base, units = (1024, ("B", "KiB", "MiB", "GiB")) if binary else (1000, ("B", "kB", "MB", "GB"))
    for unit in units:
        if n < base or unit == units[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= base
    return f"{n} B"
