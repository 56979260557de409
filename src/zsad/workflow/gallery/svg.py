"""ROC and precision-recall curves as small inline SVG: crisp at any zoom, no image files, no plotting library."""

from __future__ import annotations

from html import escape

import numpy as np

from zsad.workflow.report.curves import Curves

SIZE = 220
"""Side of the plotting square, in SVG units."""
MARGIN = 34


def _points(xs: np.ndarray, ys: np.ndarray) -> str:
    """``x,y`` pairs in SVG coordinates (y grows downwards), at most two decimals."""
    left, top = MARGIN, 8
    px = left + np.clip(xs, 0, 1) * SIZE
    py = top + (1 - np.clip(ys, 0, 1)) * SIZE
    return " ".join(f"{x:.2f},{y:.2f}" for x, y in zip(px, py, strict=True))


def _steps(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The PR step curve: precision holds from the previous recall up to each recall (``steps-pre``)."""
    xs, ys = [recall[0]], [precision[0]]
    for r, p in zip(recall[1:], precision[1:], strict=True):
        xs += [xs[-1], r]
        ys += [p, p]
    return np.array(xs), np.array(ys)


def _axes(x_label: str, y_label: str, title: str) -> list[str]:
    left, top, bottom = MARGIN, 8, 8 + SIZE
    parts = [
        f'<rect x="{left}" y="{top}" width="{SIZE}" height="{SIZE}" fill="#fff" stroke="#888"/>',
        f'<text x="{left + SIZE / 2}" y="{bottom + 28}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="10" y="{top + SIZE / 2}" text-anchor="middle" transform="rotate(-90 10 {top + SIZE / 2})">'
        f"{escape(y_label)}</text>",
        f'<text x="{left + SIZE / 2}" y="{bottom + 44}" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
    ]
    for value in (0.0, 0.5, 1.0):
        x, y = left + value * SIZE, top + (1 - value) * SIZE
        parts.append(f'<text x="{x}" y="{bottom + 13}" text-anchor="middle">{value:g}</text>')
        parts.append(f'<text x="{left - 4}" y="{y + 4}" text-anchor="end">{value:g}</text>')
        if 0 < value < 1:
            parts.append(f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="#eee"/>')
            parts.append(f'<line x1="{left}" y1="{y}" x2="{left + SIZE}" y2="{y}" stroke="#eee"/>')
    return parts


def _svg(parts: list[str], label: str) -> str:
    width, height = MARGIN + SIZE + 10, SIZE + 60
    body = "".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}" font-size="11" font-family="sans-serif">{body}</svg>'
    )


def roc_svg(curve: Curves) -> str:
    """The ROC curve with its AUROC in the title."""
    parts = _axes("false-positive rate", "true-positive rate", f"ROC, AUROC {100 * curve.auroc:.1f}")
    diagonal = _points(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    parts.append(f'<polyline points="{diagonal}" fill="none" stroke="#aaa" stroke-dasharray="3 3"/>')
    parts.append(f'<polyline points="{_points(curve.fpr, curve.tpr)}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    return _svg(parts, "ROC curve")


def pr_svg(curve: Curves) -> str:
    """The precision-recall step curve with its average precision in the title."""
    parts = _axes("recall", "precision", f"PR, AP {100 * curve.average_precision:.1f}")
    xs, ys = _steps(curve.recall, curve.precision)
    parts.append(f'<polyline points="{_points(xs, ys)}" fill="none" stroke="#d62728" stroke-width="2"/>')
    return _svg(parts, "precision-recall curve")
