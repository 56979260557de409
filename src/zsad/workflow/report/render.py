"""Tables as text: cells ``mean ± std``, best and second best marked, rendered as markdown or LaTeX (booktabs)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from zsad.metrics.results import percent
from zsad.workflow.report.aggregate import Stat

PLUS_MINUS = "±"
BEST, SECOND = "best", "second"
MIN_FOR_SECOND = 3
"""Second best is underlined only among at least this many defined values (of two, it is simply the other one)."""
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",  # plain < and > print as inverted punctuation in LaTeX's default (OT1) font encoding
    ">": r"\textgreater{}",
}


@dataclass
class Table:
    """A table of text cells, with optional best/second marks.

    Attributes:
        title: Short title (a markdown heading).
        caption: What the table shows, for LaTeX, which appends the report's common caption (protocol, seeds,
            variants); markdown shows the title only, the report stating the common part once at its top.
        header: Column names, the first one naming the row labels.
        rows: One list per row: its label, then one cell per remaining column.
        marks: ``BEST``, ``SECOND`` or ``""`` per value cell (same shape as the rows without labels).
        rules: Row indices with a rule above them (e.g. the mean row).
        label: LaTeX label suffix (``tab:<label>``).
        notes_column: Index into ``header`` of a column of free-text notes: LaTeX moves its texts below the table as
            numbered notes, marked on each row's last cell, so that long reasons do not widen the tabular; markdown
            keeps the column.
    """

    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    marks: list[list[str]] = field(default_factory=list)
    rules: set[int] = field(default_factory=set)
    label: str = ""
    notes_column: int | None = None

    def mark(self, row: int, column: int) -> str:
        """The mark of value cell ``column`` of ``row`` (``""`` when unmarked)."""
        return self.marks[row][column] if self.marks else ""


def cell(value: Stat | None, digits: int = 1) -> str:
    """``mean ± std`` in percent; one seed shows no ±, an undefined value shows ``n/a``."""
    if value is None:
        return percent(None)
    if value.std is None:
        return percent(value.mean, digits)
    return f"{percent(value.mean, digits)} {PLUS_MINUS} {percent(value.std, digits)}"


def rank_marks(values: list[Stat | None], digits: int = 1) -> list[str]:
    """Best and second-best marks for values compared with each other (higher is better).

    Means are compared as shown (rounded to ``digits`` in percent), so equal-looking numbers share a mark. With
    fewer than two defined values nothing is marked; second best needs :data:`MIN_FOR_SECOND` defined values.
    """
    shown = [None if v is None else float(percent(v.mean, digits)) for v in values]
    defined = sorted({v for v in shown if v is not None}, reverse=True)
    count = sum(v is not None for v in shown)
    if count < 2:
        return [""] * len(values)
    second = defined[1] if count >= MIN_FOR_SECOND and len(defined) > 1 else None
    return [BEST if v == defined[0] else SECOND if v is not None and v == second else "" for v in shown]


def latex_escape(text: str) -> str:
    r"""Escape LaTeX's special characters in plain text; ``±`` becomes ``$\pm$``."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text).replace(PLUS_MINUS, r"$\pm$")


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured markdown table under a ``####`` title; best in bold, second best underlined.

    The caption is left to LaTeX: a markdown report states the protocol, seeds and variants once, at its top.
    """

    def styled(text: str, mark: str) -> str:
        text = text.replace("|", r"\|")
        return f"**{text}**" if mark == BEST else f"<u>{text}</u>" if mark == SECOND else text

    lines = [
        "| " + " | ".join(styled(h, "") for h in table.header) + " |",
        "|" + "|".join([":---", *["---:"] * (len(table.header) - 1)]) + "|",
    ]
    for r, (label, *cells) in enumerate(table.rows):
        lines.append(
            "| " + " | ".join([styled(label, ""), *(styled(c, table.mark(r, i)) for i, c in enumerate(cells))]) + " |"
        )
    return f"#### {table.title}\n\n" + "\n".join(lines) + "\n"


LATEX_PACKAGES = ("booktabs", "graphicx")
"""What the LaTeX tables need in the preamble: booktabs' rules, and graphicx to shrink a table wider than the line."""
LATEX_PREAMBLE = "% zsad report: needs " + " ".join(rf"\usepackage{{{name}}}" for name in LATEX_PACKAGES) + "\n\n"
"""First lines of ``tables.tex``."""


def to_latex(table: Table, common_caption: str = "") -> str:
    r"""A ``table`` float with a booktabs ``tabular``; best in ``\textbf``, second best ``\underline``.

    A tabular wider than the line is scaled down to ``\linewidth`` (graphicx's ``\resizebox``, which reads the natural
    width as ``\width``); narrower ones keep their size. Notes (:attr:`Table.notes_column`) follow the tabular.
    """

    def styled(text: str, mark: str) -> str:
        text = latex_escape(text)
        return rf"\textbf{{{text}}}" if mark == BEST else rf"\underline{{{text}}}" if mark == SECOND else text

    header, rows, notes, note_numbers = _split_notes(table)
    caption = " ".join(part for part in (table.caption, common_caption) if part)
    lines = [
        r"\begin{table}[t]",
        r"  \centering",
        rf"  \caption{{{latex_escape(caption)}}}",
    ]
    if table.label:
        lines.append(rf"  \label{{tab:{re.sub(r'[^A-Za-z0-9:.-]+', '-', table.label)}}}")
    lines += [
        r"  \resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"  \begin{{tabular}}{{l{'c' * (len(header) - 1)}}}",
        r"    \toprule",
        "    " + " & ".join(styled(h, "") for h in header) + r" \\",
        r"    \midrule",
    ]
    for r, (label, *cells) in enumerate(rows):
        if r in table.rules:
            lines.append(r"    \midrule")
        row = [styled(label, ""), *(styled(c, table.mark(r, i)) for i, c in enumerate(cells))]
        if note_numbers[r]:  # on the row's last cell: in a significance table, the n/a it explains
            row[-1] += rf"$^{{{note_numbers[r]}}}$"
        lines.append("    " + " & ".join(row) + r" \\")
    lines += [r"    \bottomrule", r"  \end{tabular}}"]
    if notes:
        listed = "; ".join(rf"$^{{{number}}}${latex_escape(note)}" for number, note in enumerate(notes, start=1))
        lines.append(rf"  \par\smallskip\footnotesize {listed}.")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _split_notes(table: Table) -> tuple[list[str], list[list[str]], list[str], list[int]]:
    """The tabular's header and rows (without the notes column), the distinct notes, and each row's note number.

    Notes are the column's non-empty texts in order of appearance; a row's number is 1-based, 0 for none. Marks stay
    aligned: the notes column must come after every marked value column.
    """
    column = table.notes_column
    if column is None:
        return table.header, table.rows, [], [0] * len(table.rows)
    notes = list(dict.fromkeys(row[column] for row in table.rows if row[column]))
    numbers = [notes.index(row[column]) + 1 if row[column] else 0 for row in table.rows]

    def drop(items: list[str]) -> list[str]:
        return items[:column] + items[column + 1 :]

    return drop(table.header), [drop(row) for row in table.rows], notes, numbers
