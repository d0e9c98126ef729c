"""A results table that fits its console: the wide table (a row per condition, a column per
metric) where every cell fits on one line, else one block per condition (its metrics one
under the other), so that no cell is cut into columns a few characters wide.

Used by the study's table (`tables.terminal_table`) and by `compare` (`matrix.compare_table`);
the layout is chosen when the table is printed, from the console's width (80 columns on a
small terminal, 160 in logs and pipes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

SKIPPED = frozenset({"(reference)", "—"})
"""Cells a block leaves out: a metric the reference has by definition, or one not computed."""
_PAD = 3  # a column's padding and its border: "│ x " (and one more border for the table)


class FitTable:
    """Rows of plain-text cells under `headers`, printed as a wide table when every cell fits
    on one line (a header may wrap at its spaces), else as one block per row.

    A block's first line is its row's `heading` cells (joined by ": ") in bold and its last
    cell (the verdict) in that cell's style; the other cells follow one per line beside their
    header, except those in `SKIPPED`. `styles` gives a rich style per cell (or None)."""

    def __init__(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]],
                 styles: Sequence[Sequence[str | None]] | None = None,
                 heading: Sequence[int] = (0,)) -> None:
        self.title = title
        self.headers = list(headers)
        self.rows = [list(row) for row in rows]
        self.styles = ([list(s) for s in styles] if styles is not None
                       else [[None] * len(self.headers) for _ in self.rows])
        self.heading = tuple(heading)

    def wide_widths(self) -> list[int]:
        """Each column's width with every cell on one line and each header wrapped at most at
        its spaces (its longest word)."""
        widths = [max((len(word) for word in header.split()), default=0)
                  for header in self.headers]
        for row in self.rows:
            widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
        return widths

    def fits_wide(self, width: int) -> bool:
        """Whether the wide table fits `width` columns with no cell wrapped."""
        return sum(self.wide_widths()) + _PAD * len(self.headers) + 1 <= width

    def wide(self) -> Table:
        table = Table(title=escape(self.title), title_justify="left", min_width=len(self.title))
        for header, width in zip(self.headers, self.wide_widths(), strict=True):
            # the width of its widest cell: the header wraps, rich never narrows a cell
            table.add_column(escape(header), min_width=width, max_width=width, overflow="fold")
        for row, styles in zip(self.rows, self.styles, strict=True):
            table.add_row(*(_styled(cell, style) for cell, style in zip(row, styles,
                                                                           strict=True)))
        return table

    def blocks(self) -> Table:
        """One block per row: a 2-column table (header | cell), a rule between blocks."""
        last = len(self.headers) - 1
        # as wide as its title where the console allows: the title on one line
        table = Table(title=escape(self.title), title_justify="left", min_width=len(self.title))
        table.add_column(escape(": ".join(self.headers[i] for i in self.heading) + " / metric"),
                         overflow="fold")
        table.add_column(escape(f"{self.headers[last]} / value"), overflow="fold")
        for row, styles in zip(self.rows, self.styles, strict=True):
            name = ": ".join(row[i] for i in self.heading)
            table.add_row(f"[bold]{escape(name)}[/]", _styled(row[last], styles[last]))
            shown = [i for i in range(1, last)
                     if i not in self.heading and row[i] not in SKIPPED]
            for i in shown:
                table.add_row(_styled(self.headers[i], "dim"), _styled(row[i], styles[i]),
                              end_section=i == shown[-1])
            if not shown:
                table.rows[-1].end_section = True
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.wide() if self.fits_wide(options.max_width) else self.blocks()


def _styled(cell: str, style: str | None) -> str:
    return f"[{style}]{escape(cell)}[/]" if style else escape(cell)
