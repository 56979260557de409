"""The gallery page of a run: per-category metrics and thresholds, ROC/PR curves, and image panels worst first.

One static HTML file with everything inline (styles, script, SVG curves, figures as JPEG data URIs): it opens from
disk in any browser, needs no server and asks no other host for anything. Filters by category, defect type and
outcome (false positive, false negative, ...) hide and show panels; the filter state is kept in the address's
``#`` part (``gallery.html#category=mvtec/bottle&outcome=FP``), so a filtered view can be bookmarked.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image

from zsad.metrics.results import percent
from zsad.workflow.atomic import atomic_write_text
from zsad.workflow.gallery.run import GalleryImage, GalleryRun, load_gallery_run, threshold_summary
from zsad.workflow.gallery.svg import pr_svg, roc_svg
from zsad.workflow.report.curves import curves
from zsad.workflow.report.runs import Run
from zsad.workflow.report.tables import training_description
from zsad.workflow.report.writer import slug

FIGURE_WIDTH = 1400
"""Figures wider than this are scaled down for the page (the PNGs on disk keep their size)."""
JPEG_QUALITY = 88
OUTCOMES = {
    "FP": "false positive",
    "FN": "false negative",
    "TP": "true positive",
    "TN": "true negative",
    "": "no threshold",
}

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#f6f6f6}
header{background:#20304a;color:#fff;padding:16px 24px}
header h1{margin:0 0 6px;font-size:22px}
header p{margin:2px 0;font-size:14px;opacity:.92}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;margin-left:4px}
.tuned{background:#ffb74d;color:#3e2500}
main{padding:12px 24px}
section{background:#fff;border-radius:8px;padding:12px 16px;margin:12px 0;box-shadow:0 1px 2px #0002}
h2{font-size:18px;margin:4px 0 10px}
.controls{position:sticky;top:0;z-index:2;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
.controls label{font-size:14px}
select{font-size:14px;padding:3px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 8px;text-align:right;border-bottom:1px solid #e4e4e4}
th:first-child,td:first-child{text-align:left}
tr.mean td{font-weight:600;border-top:2px solid #999}
.curves{display:flex;flex-wrap:wrap;gap:10px}
.curve{border:1px solid #ddd;border-radius:6px;padding:6px}
.curve h3{font-size:14px;margin:2px 4px}
.panels{display:flex;flex-direction:column;gap:14px}
.panel{margin:0;border:1px solid #ddd;border-radius:6px;padding:8px;background:#fff}
.panel img{max-width:100%;height:auto;display:block}
.panel figcaption{font-size:14px;margin-top:6px}
.outcome{font-weight:700;padding:1px 6px;border-radius:4px;color:#fff}
.FP{background:#c62828}.FN{background:#6a1b9a}.TP{background:#2e7d32}.TN{background:#546e7a}.none{background:#999}
.note{font-size:13px;color:#555}
[hidden]{display:none!important}
"""

SCRIPT = """
(function () {
  var errors = [];
  window.addEventListener('error', function (event) {
    errors.push(String(event.message));
    document.body.setAttribute('data-errors', errors.join(' | '));
  });
  var select = function (id) { return document.getElementById(id); };
  function matches(element, category, defect, outcome) {
    if (category && element.getAttribute('data-category') !== category) return false;
    if (!element.classList.contains('panel')) return true;
    if (defect && element.getAttribute('data-defect') !== defect) return false;
    var kind = element.getAttribute('data-outcome');
    if (outcome === 'errors') return kind === 'FP' || kind === 'FN';
    return !outcome || kind === outcome;
  }
  function apply() {
    var category = select('category').value, defect = select('defect').value, outcome = select('outcome').value;
    var shown = 0;
    document.querySelectorAll('[data-category]').forEach(function (element) {
      var visible = matches(element, category, defect, outcome);
      element.hidden = !visible;
      if (visible && element.classList.contains('panel')) shown += 1;
    });
    select('shown').textContent = String(shown);
    var state = new URLSearchParams({category: category, defect: defect, outcome: outcome}).toString();
    try { history.replaceState(null, '', '#' + state); } catch (error) { /* some browsers refuse it on file: */ }
  }
  var initial = new URLSearchParams(window.location.hash.slice(1));
  ['category', 'defect', 'outcome'].forEach(function (id) {
    var value = initial.get(id);
    if (value !== null && Array.prototype.some.call(select(id).options, function (o) { return o.value === value; })) {
      select(id).value = value;
    }
    select(id).addEventListener('change', apply);
  });
  apply();
  document.body.setAttribute('data-ready', '1');
})();
"""


def figure_data_uri(path: Path, max_width: int = FIGURE_WIDTH) -> str:
    """A figure as a JPEG ``data:`` URI, scaled down to ``max_width`` when wider."""
    with Image.open(path) as picture:
        image = picture.convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _metric_names(document: dict[str, Any]) -> list[str]:
    names = list(document.get("mean", {}))
    for categories in document.get("per_category", {}).values():
        for values in categories.values():
            names.extend(name for name in values if name not in names)
    return names


def _threshold_cells(document: dict[str, Any], dataset: str, category: str) -> list[str]:
    entry = (document.get("thresholds") or {}).get("per_category", {}).get(dataset, {}).get(category) or {}
    cells = []
    for level in ("image", "pixel"):
        point = entry.get(level) or {}
        value = point.get("threshold")
        cells.append("n/a" if value is None else f"{value:.4g}")
        cells.extend(percent(point.get(name)) for name in ("f1", "precision", "recall"))
    return cells


def metrics_section(gallery: GalleryRun) -> str:
    """Per-category metrics (percent), the means, and the thresholds with their F1, precision and recall."""
    document = gallery.run.document
    names = _metric_names(document)
    with_thresholds = isinstance(document.get("thresholds"), dict)
    header = ["category", *names]
    if with_thresholds:
        header += ["image t", "image F1", "image P", "image R", "pixel t", "pixel F1", "pixel P", "pixel R"]
    rows = []
    for dataset, categories in document.get("per_category", {}).items():
        for category, values in categories.items():
            group = f"{dataset}/{category}" if dataset else category
            cells = [escape(group), *(percent(values.get(name)) for name in names)]
            if with_thresholds:
                cells += _threshold_cells(document, dataset, category)
            rows.append(f'<tr data-category="{escape(group)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        means = document.get("per_dataset", {}).get(dataset, {})
        cells = [escape(f"{dataset} mean" if dataset else "mean"), *(percent(means.get(name)) for name in names)]
        cells += [""] * (8 if with_thresholds else 0)
        rows.append('<tr class="mean">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    description, tuned = threshold_summary(document)
    note = ""
    if with_thresholds:
        badge = ' <span class="badge tuned">tuned on the target set</span>' if tuned else ""
        note = f'<p class="note">Thresholds: {escape(description)}{badge}. F1, P, R in percent at those thresholds.</p>'
    undefined = document.get("undefined") or {}
    if undefined:
        listed = "; ".join(f"{name}: {', '.join(where)}" for name, where in undefined.items())
        note += f'<p class="note">Undefined (left out of the means): {escape(listed)}.</p>'
    return (
        f'<section id="metrics"><h2>Metrics per category (percent)</h2><div class="scroll"><table><thead><tr>{head}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>{note}</section>"
    )


def curves_section(gallery: GalleryRun) -> str:
    """Image-level ROC and PR curves per category, from ``scores.csv``."""
    cards, missing = [], []
    for (dataset, category), (scores, labels) in sorted(gallery.scores_by_group().items()):
        group = f"{dataset}/{category}" if dataset else category
        curve = curves(scores, labels)
        if curve is None:
            missing.append(group)
            continue
        cards.append(
            f'<div class="curve" data-category="{escape(group)}"><h3>{escape(group)}</h3>{roc_svg(curve)}'
            f"{pr_svg(curve)}</div>"
        )
    note = ""
    if not gallery.images:
        note = '<p class="note">This run has no scores.csv, so there are no curves.</p>'
    elif missing:
        note = f'<p class="note">No curves where one class is missing: {escape(", ".join(missing))}.</p>'
    heading = "<h2>Image-level ROC and PR curves</h2>"
    return f'<section id="curves">{heading}<div class="curves">{"".join(cards)}</div>{note}</section>'


def panel_html(image: GalleryImage, rank: int) -> str:
    """One pictured image: its figure and a caption with outcome, label, score and threshold."""
    outcome = image.outcome
    badge = f'<span class="outcome {outcome or "none"}">{escape(OUTCOMES[outcome])}</span>'
    threshold = f", image threshold {image.threshold:.4g}" if image.threshold is not None else ""
    label = "anomalous" if image.label else "normal"
    caption = (
        f"#{rank} {badge} <b>{escape(image.group)}</b> {escape(image.path)} &middot; {label} "
        f"({escape(image.defect_type)})"
        f" &middot; score {image.score:.4g}{threshold} &middot; worse than {100 * image.badness:.0f}% of the other kind"
    )
    attributes = (
        f'class="panel" data-category="{escape(image.group)}" data-defect="{escape(image.defect_type)}" '
        f'data-outcome="{outcome}"'
    )
    source = figure_data_uri(image.figure)
    alt = f"anomaly-map figure of {image.path}"
    return f'<figure {attributes}><img src="{source}" alt="{escape(alt)}"><figcaption>{caption}</figcaption></figure>'


def _options(values: Iterable[str], everything: str) -> str:
    items = [f'<option value="">{escape(everything)}</option>']
    items += [f'<option value="{escape(value)}">{escape(value)}</option>' for value in values]
    return "".join(items)


def controls_section(gallery: GalleryRun) -> str:
    """The filters: category, defect type, outcome; and how many panels are shown."""
    groups = sorted({image.group for image in gallery.pictured} | {g for g in _all_groups(gallery)})
    defects = sorted({image.defect_type for image in gallery.pictured})
    outcomes = [("", "all outcomes"), ("errors", "errors (FP and FN)")] + [
        (key, name) for key, name in OUTCOMES.items() if key
    ]
    outcome_options = "".join(f'<option value="{key}">{escape(name)}</option>' for key, name in outcomes)
    return (
        '<section class="controls">'
        f'<label>category <select id="category">{_options(groups, "all categories")}</select></label>'
        f'<label>defect type <select id="defect">{_options(defects, "all defect types")}</select></label>'
        f'<label>outcome <select id="outcome">{outcome_options}</select></label>'
        f'<span><b id="shown">{len(gallery.pictured)}</b> of {len(gallery.pictured)} pictured images shown</span>'
        "</section>"
    )


def _all_groups(gallery: GalleryRun) -> list[str]:
    return [
        f"{dataset}/{category}" if dataset else category
        for dataset, categories in gallery.run.document.get("per_category", {}).items()
        for category in categories
    ]


def panels_section(gallery: GalleryRun) -> str:
    """The pictured images, worst first (see :mod:`zsad.workflow.gallery.run`)."""
    if not gallery.pictured:
        body = (
            '<p class="note">No figures were found for this run. Test with <code>--results.html true</code>, or with '
            "the <code>AnomalyMapPictures</code> callback (configs/logger/pictures.yaml), to have them.</p>"
        )
    else:
        body = "".join(panel_html(image, rank) for rank, image in enumerate(gallery.pictured, start=1))
    order = (
        "False positives and false negatives at the image threshold first, then the others; within each, worst "
        "first: a normal image by the share of anomalous images it outscores, an anomalous image by the share of "
        "normal images that outscore it."
    )
    heading = f'<h2>Images, worst first</h2><p class="note">{order}</p>'
    return f'<section id="images">{heading}<div class="panels">{body}</div></section>'


def header_section(gallery: GalleryRun) -> str:
    """The run's name, method, training, protocol, seed and threshold rule."""
    run, document = gallery.run, gallery.run.document
    model = document.get("model", {})
    head = str((model.get("head") or {}).get("class_path", "?")).rsplit(".", 1)[-1]
    backbone = (model.get("backbone") or {}).get("init_args", {})
    backbone_name = backbone.get("model_name") or (model.get("backbone") or {}).get("class_path", "?")
    protocol = document.get("protocol") or {}
    description, tuned = threshold_summary(document)
    badge = ' <span class="badge tuned">tuned on the target set</span>' if tuned else ""
    counts = sum(sum(c.values()) for cats in document.get("counts", {}).values() for c in cats.values())
    lines = [
        f"method <b>{escape(run.method)}</b> (head {escape(head)}, backbone {escape(str(backbone_name))}), "
        f"{escape(training_description(run))}",
        f"protocol {escape(str(protocol.get('name', 'not recorded')))}, seed {escape(str(run.seed))}, "
        f"{counts} test images, metric resolution {escape(str(model.get('metric_resolution', 'eval')))}",
        f"thresholds: {escape(description or 'none chosen')}{badge}",
        f"results: {escape(str(run.results_path))}",
    ]
    return f"<header><h1>{escape(run.run_id)}</h1>{''.join(f'<p>{line}</p>' for line in lines)}</header>"


def render_page(gallery: GalleryRun) -> str:
    """The whole page as one HTML string."""
    title = f"zsad gallery: {gallery.run.run_id}"
    data = json.dumps({"run": gallery.run.run_id, "panels": len(gallery.pictured)})
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<style>{STYLE}</style></head>\n<body data-gallery='{escape(data)}'>"
        f"{header_section(gallery)}<main>{controls_section(gallery)}{metrics_section(gallery)}"
        f"{curves_section(gallery)}{panels_section(gallery)}</main>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_run_gallery(results_path: str | Path, out: str | Path, figures: Iterable[Path] | None = None) -> Path:
    """Write the gallery page of one run.

    Args:
        results_path: The run's ``results.json``.
        out: The HTML file.
        figures: The run's figures (default: those under ``<results folder>/pictures/``).

    Returns:
        ``out``.
    """
    gallery = load_gallery_run(results_path, None if figures is None else list(figures))
    return atomic_write_text(out, render_page(gallery))


INDEX_FILE = "index.html"


def write_galleries(runs: Iterable[Run], folder: str | Path) -> list[Path]:
    """One gallery page per run in ``folder`` (``<run id>.html``), and an ``index.html`` that links them.

    Args:
        runs: Finished runs (:func:`zsad.workflow.report.runs.load_runs`).
        folder: Output folder (created).

    Returns:
        The pages, then the index.
    """
    folder = Path(folder)
    pages: list[Path] = []
    names: set[str] = set()
    items = []
    for run in runs:
        name = slug(run.run_id)
        while name in names:  # two runs whose ids differ only in characters a file name cannot hold
            name += "_"
        names.add(name)
        gallery = load_gallery_run(run.results_path, run=run)
        pages.append(atomic_write_text(folder / f"{name}.html", render_page(gallery)))
        items.append(
            f'<li><a href="{escape(name)}.html">{escape(run.run_id)}</a>: {escape(run.method)}, seed {run.seed}, '
            f"{len(gallery.pictured)} pictured images</li>"
        )
    index = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>zsad galleries</title>'
        f'<link rel="icon" href="data:,"><style>{STYLE}</style></head><body><header><h1>zsad galleries</h1>'
        f"<p>{len(pages)} run(s)</p></header><main><section><ul>{''.join(items)}</ul></section></main></body></html>\n"
    )
    pages.append(atomic_write_text(folder / INDEX_FILE, index))
    return pages
