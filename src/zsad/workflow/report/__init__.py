"""``zsad report``: tables, significance tests and plots from finished runs (see docs/reports.md).

The parts follow the data: :mod:`.runs` finds runs, :mod:`.grouping` splits them by protocol and entry,
:mod:`.aggregate` averages seeds, :mod:`.tables` and :mod:`.render` make tables, :mod:`.significance` compares
methods, :mod:`.curves` and :mod:`.plots` draw figures, :mod:`.writer` writes a protocol's folder and
:mod:`.command` is the command line.
"""

from zsad.workflow.report.command import report_main
from zsad.workflow.report.runs import Run, load_runs
from zsad.workflow.report.writer import ReportOptions, write_report

__all__ = ["ReportOptions", "Run", "load_runs", "report_main", "write_report"]
