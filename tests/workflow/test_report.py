"""`zsad report` on hand-written run folders with known numbers, and on the files a real `zsad test` writes."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

from zsad.cli import main
from zsad.errors import ConfigError, DataError
from zsad.metrics.results import AUPRO_VARIANTS, macro_mean
from zsad.workflow.report.aggregate import summarise
from zsad.workflow.report.curves import curves
from zsad.workflow.report.grouping import group_runs
from zsad.workflow.report.render import LATEX_PACKAGES
from zsad.workflow.report.runs import load_runs
from zsad.workflow.report.significance import bootstrap_interval, compare, holm_adjust
from zsad.workflow.report.tables import protocol_description
from zsad.workflow.results import SCORE_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = {"static": "zsad.prompts.static.StaticPrompt", "vip": "zsad.prompts.vip.ViPPrompt"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def protocol(name="toy-within", targets=("a", "b")):
    target = {"dataset": "toy", "root": "/data/toy", "categories": list(targets), "split": "test"}
    return {"name": name, "aux": [], "targets": [target], "allow_overlap": False}


def write_run(folder, per_category, seed=0, prompt="static", dataset="toy", proto=None, model_extra=None):
    """A results.json as `zsad test` writes it, from {category: {metric: value}} (absent = undefined).

    ``per_category`` may also be {dataset: {category: {metric: value}}} when ``dataset`` is None.
    """
    tables = per_category if dataset is None else {dataset: per_category}
    metrics = list(dict.fromkeys(m for cats in tables.values() for values in cats.values() for m in values))
    per_dataset = {d: macro_mean(list(cats.values()), metrics) for d, cats in tables.items()}
    document = {
        "per_category": tables,
        "per_dataset": per_dataset,
        "mean": macro_mean(list(per_dataset.values()), metrics),
        "undefined": {},
        "aupro_variants": {k: v for k, v in AUPRO_VARIANTS.items() if k in metrics},
        "model": {"prompt": {"class_path": PROMPTS.get(prompt, prompt), "init_args": {}}, **(model_extra or {})},
        "protocol": proto or protocol(targets=tuple(c for cats in tables.values() for c in cats)),
        "seed": str(seed),  # older results files store the environment's string
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(document))
    return folder / "results.json"


def write_scores(folder, rows):
    with (folder / "scores.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCORE_COLUMNS)
        writer.writerows(rows)


def jsonl_line(run_id, method, seed, results, status="done", overrides=None, proto="toy-within", error=None):
    return json.dumps(
        {
            "run_id": run_id,
            "config_hash": "0" * 64,
            "status": status,
            "overrides": overrides or {},
            "method": method,
            "seed": seed,
            "protocol": proto,
            "results": results,
            "error": error,
            "started": "2026-01-01T00:00:00Z",
            "finished": "2026-01-01T00:01:00Z",
            "duration_s": 60.0,
        }
    )


def summary_of(*inputs, by=("method",), metrics=None):
    groups = group_runs(load_runs(list(inputs)).runs, list(by))
    assert len(groups) == 1
    return summarise(groups[0], metrics)


@pytest.fixture
def three_seeds(tmp_path):
    """static: seeds 0-2 with image_auroc 0.7/0.8/0.9 on 'a'; vip: one seed."""
    root = tmp_path / "runs"
    for seed, value in enumerate([0.7, 0.8, 0.9]):
        write_run(root / f"static-{seed}", {"a": {"image_auroc": value}, "b": {"image_auroc": 0.5}}, seed=seed)
    write_run(root / "vip-0", {"a": {"image_auroc": 0.75}, "b": {"image_auroc": 0.6}}, prompt="vip")
    return root


def run_report(args, capsys):
    try:
        main(["report", *map(str, args)])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ---------------------------------------------------------------- numbers


def test_means_and_sample_stds_over_seeds(three_seeds):
    summary = summary_of(three_seeds)
    assert summary.labels == ["static", "vip"]  # method from results.json's prompt synthesizer
    assert summary.seeds("static") == [0, 1, 2]  # string seeds read as integers
    a = summary.category("static", "toy", "a", "image_auroc")
    assert a.n == 3 and a.mean == pytest.approx(0.8) and a.std == pytest.approx(np.std([0.7, 0.8, 0.9], ddof=1))
    assert a.std == pytest.approx(0.1)
    dataset = summary.dataset("static", "toy", "image_auroc")  # seed-wise dataset means 0.6, 0.65, 0.7
    assert dataset.mean == pytest.approx(0.65) and dataset.std == pytest.approx(0.05)
    single = summary.category("vip", "toy", "a", "image_auroc")
    assert single.n == 1 and single.std is None


def test_markdown_cells_and_marks(three_seeds, tmp_path, capsys):
    code, out = run_report([three_seeds, "--out", tmp_path / "out", "--no-plots"], capsys)
    assert code == 0, out
    report = (tmp_path / "out" / "toy-within" / "report.md").read_text()
    # category a: static 80.0 ± 10.0 (3 seeds) beats vip 75.0 (one seed: no ±); b: vip wins
    assert "| a | **80.0 ± 10.0** | 75.0 |" in report
    assert "| b | 50.0 ± 0.0 | **60.0** |" in report
    assert "| mean | 65.0 ± 5.0 | **67.5** |" in report
    assert "Seeds: static n=3 (0, 1, 2); vip n=1 (0)." in report
    assert "Protocol toy-within" in report


def test_best_bold_second_underlined_and_na_unranked(tmp_path, capsys):
    values = {"static": 0.9, "vip": 0.8, "zeta": 0.7, "omega": None}
    for order, (name, value) in enumerate(values.items()):
        per_category = {"a": {"image_auroc": 0.5, "pixel_aupro": 0.4}, "b": {"pixel_aupro": 0.3}}
        if value is not None:
            per_category["b"]["image_auroc"] = value
        write_run(tmp_path / "runs" / f"{order}-{name}", per_category, prompt=name)  # folders sort as listed
    code, out = run_report([tmp_path / "runs", "--out", tmp_path / "out", "--no-plots"], capsys)
    assert code == 0, out
    folder = tmp_path / "out" / "toy-within"
    report = (folder / "report.md").read_text()
    assert "| b | **90.0** | <u>80.0</u> | 70.0 | n/a |" in report  # per row; undefined stays n/a, unranked
    assert "| a | **50.0** | **50.0** | **50.0** | **50.0** |" in report  # ties share the mark
    # per-dataset table: methods are rows and the best is marked per column (image_auroc, then pixel_aupro)
    assert "| static | **70.0** | **35.0** |" in report
    assert "| vip | <u>65.0</u> | **35.0** |" in report
    assert "| omega | 50.0 | **35.0** |" in report  # mean over the category where it is defined, not (0.5 + 0) / 2
    latex = (folder / "tables.tex").read_text()
    assert r"b & \textbf{90.0} & \underline{80.0} & 70.0 & n/a \\" in latex
    rows = list(csv.DictReader((folder / "tables.csv").open()))
    b = {r["method"]: r for r in rows if r["category"] == "b" and r["metric"] == "image_auroc"}
    assert (b["static"]["mark"], b["vip"]["mark"], b["zeta"]["mark"], b["omega"]["mark"]) == ("best", "second", "", "")
    assert b["omega"]["mean"] == "" and b["omega"]["n_seeds"] == "0"
    assert float(b["vip"]["mean"]) == pytest.approx(0.8)


def test_undefined_in_one_seed_is_left_out_not_zero(tmp_path):
    write_run(tmp_path / "s0", {"a": {"image_auroc": 0.6}, "b": {"image_auroc": 0.4}}, seed=0)
    write_run(tmp_path / "s1", {"a": {}, "b": {"image_auroc": 0.4}}, seed=1)
    value = summary_of(tmp_path).category("static", "toy", "a", "image_auroc")
    assert value.n == 1 and value.mean == pytest.approx(0.6)


def test_latex_is_escaped_booktabs(tmp_path, capsys):
    per_category = {"metal_nut": {"image_auroc": 0.9, "pixel_aupro": 0.5, "pixel_aupro_cflow": 0.6}}
    write_run(tmp_path / "runs" / "r0", per_category, dataset="my_set", proto=protocol("my_proto", ("metal_nut",)))
    code, out = run_report([tmp_path / "runs", "--out", tmp_path / "out", "--no-plots"], capsys)
    assert code == 0, out
    latex = (tmp_path / "out" / "my_proto" / "tables.tex").read_text()
    assert r"metal\_nut" in latex and r"image\_auroc" in latex and r"Protocol my\_proto" in latex
    assert "metal_nut" not in latex.replace(r"metal\_nut", "")  # no unescaped underscore left
    assert r"AUPRO@0.3 exact per-region curve, normalised by the limit (anomalib \textgreater{}= 2.3)" in latex
    assert "AUPRO@0.3 over 200 thresholds" in latex  # the cflow variant is named too
    for table in re.findall(r"\\begin\{table\}.*?\\end\{table\}", latex, flags=re.DOTALL):
        assert table.count(r"\begin{tabular}") == table.count(r"\end{tabular}") == 1
        assert table.index(r"\toprule") < table.index(r"\midrule") < table.index(r"\bottomrule")
        columns = len(re.search(r"\\begin\{tabular\}\{(l[c]*)\}", table).group(1))
        body = [line for line in table.splitlines() if line.rstrip().endswith(r"\\")]
        assert body and all(line.count(" & ") == columns - 1 for line in body)
        assert table.count("{") == table.count("}")


def test_several_datasets_get_a_mean_over_datasets(tmp_path, capsys):
    for name, shift in [("static", 0.0), ("vip", 0.1)]:
        tables = {
            "d1": {"a": {"image_auroc": 0.5 + shift}, "b": {"image_auroc": 0.7}},
            "d2": {"c": {"image_auroc": 0.9}},
        }
        write_run(tmp_path / "runs" / name, tables, prompt=name, dataset=None)
    summary = summary_of(tmp_path / "runs")
    assert summary.scopes == ["d1", "d2", "mean"]
    assert summary.value("static", "mean", "mean", "image_auroc").mean == pytest.approx((0.6 + 0.9) / 2)
    (pooled,) = compare(summary, "image_auroc", "mean")
    assert (pooled.reference, pooled.pairs, pooled.difference) == ("vip", 3, pytest.approx(-0.1 / 3))
    code, out = run_report([tmp_path / "runs", "--out", tmp_path / "out"], capsys)
    assert code == 0, out
    folder = tmp_path / "out" / "toy-within"
    report = (folder / "report.md").read_text()
    assert (
        "#### all datasets (mean over 2)" in report and "| static | 75.0 |" in report and "| vip | **77.5** |" in report
    )
    assert "#### all datasets (categories pooled): against the best method" in report
    assert (folder / "plots" / "bars_mean.png").stat().st_size > 0
    assert "no scores.csv in any run, no curves" in report  # hand-written runs without scores.csv


# ---------------------------------------------------------------- significance


def paired_runs(tmp_path, reference, other, seeds=(0,)):
    for seed in seeds:
        write_run(tmp_path / f"static-{seed}", {f"c{i}": {"image_auroc": v} for i, v in enumerate(reference)}, seed)
        write_run(tmp_path / f"vip-{seed}", {f"c{i}": {"image_auroc": v} for i, v in enumerate(other)}, seed, "vip")
    return summary_of(tmp_path)


def test_wilcoxon_equals_scipy_on_the_seed_averaged_differences(tmp_path):
    reference = [0.91, 0.85, 0.88, 0.93, 0.79, 0.95, 0.87, 0.90]
    other = [0.89, 0.86, 0.80, 0.90, 0.70, 0.94, 0.85, 0.81]
    summary = paired_runs(tmp_path, reference, other, seeds=(0, 1))
    (comparison,) = compare(summary, "image_auroc", "toy")
    differences = np.array(other) - np.array(reference)
    assert (comparison.method, comparison.reference, comparison.pairs) == ("vip", "static", 8)
    assert comparison.p_value == wilcoxon(differences).pvalue
    assert comparison.difference == pytest.approx(differences.mean())
    low, high = comparison.interval
    assert low < differences.mean() < high and comparison.note == ""


def wide_report(tmp_path, capsys) -> Path:
    """tables.tex of 3 methods x 2 seeds on 8 categories with LaTeX's special characters in their names; one method
    differs from the best in 4 categories only, so its p-values are n/a with a note."""
    rng = np.random.default_rng(0)
    categories = ["metal_nut", "pcb&1", "screw#2", "carpet", "toothbrush", "grid_50%", "bottle", "zip~per"]
    metrics = ("image_auroc", "pixel_auroc", "pixel_aupro")
    reference = {c: {m: float(rng.uniform(0.7, 0.99)) for m in metrics} for c in categories}
    close = {c: {m: v - 0.01 * (i < 4) for m, v in values.items()} for i, (c, values) in enumerate(reference.items())}
    for seed in (0, 1):
        write_run(tmp_path / "runs" / f"static-{seed}", reference, seed)
        write_run(tmp_path / "runs" / f"vip-{seed}", close, seed, "vip")
        lower = {c: {m: v - float(rng.uniform(0.0, 0.1)) for m, v in values.items()} for c, values in reference.items()}
        write_run(tmp_path / "runs" / f"my_method-{seed}", lower, seed, "my_method")
    code, out = run_report([tmp_path / "runs", "--out", tmp_path / "out", "--no-plots"], capsys)
    assert code == 0, out
    return tmp_path / "out" / "toy-within" / "tables.tex"


def test_latex_notes_go_below_the_table_and_wide_tables_shrink(tmp_path, capsys):
    latex = wide_report(tmp_path, capsys).read_text()
    assert latex.startswith(r"% zsad report: needs \usepackage{booktabs} \usepackage{graphicx}")
    assert latex.count(r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%") == latex.count(
        r"\begin{tabular}"
    )
    significance = re.search(r"\\label\{tab:significance-toy\}.*?\\end\{table\}", latex, flags=re.DOTALL).group(0)
    assert "& note" not in significance  # the notes column is not in the tabular ...
    assert r"\footnotesize $^{1}$4 non-zero paired difference(s), fewer than 6" in significance  # ... but below it
    assert len(re.findall(r"& vip & static & .* & n/a & n/a\$\^\{1\}\$ \\\\", significance)) == 3  # a row per metric


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (Debian: texlive-latex-base)")
def test_tables_tex_compiles_without_overfull_boxes(tmp_path, capsys):
    tables = wide_report(tmp_path, capsys)
    document = tmp_path / "paper.tex"
    packages = "\n".join(rf"\usepackage{{{name}}}" for name in LATEX_PACKAGES)
    body = tables.read_text()
    document.write_text(f"\\documentclass{{article}}\n{packages}\n\\begin{{document}}\n{body}\n\\end{{document}}\n")
    command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name]
    process = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stdout[-3000:]
    assert "Overfull \\hbox" not in process.stdout, process.stdout[-3000:]


def test_holm_adjustment_matches_the_step_down_formula():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to 0.06 to keep the order; None is no test
    assert holm_adjust([0.04, None, 0.01, 0.03]) == pytest.approx([0.06, None, 0.03, 0.06])
    assert holm_adjust([0.6, 0.5]) == [1.0, 1.0]  # capped at 1
    assert holm_adjust([0.2]) == [0.2] and holm_adjust([None]) == [None] and holm_adjust([]) == []


def test_each_scope_and_metric_is_one_holm_family(tmp_path):
    reference = [0.91, 0.85, 0.88, 0.93, 0.79, 0.95, 0.87, 0.90]
    others = {
        "vip": [0.89, 0.86, 0.80, 0.90, 0.70, 0.94, 0.85, 0.81],
        "cops": [0.80, 0.84, 0.87, 0.92, 0.70, 0.90, 0.80, 0.80],
    }
    write_run(tmp_path / "static", {f"c{i}": {"image_auroc": v} for i, v in enumerate(reference)}, 0)
    for method, values in others.items():
        write_run(tmp_path / method, {f"c{i}": {"image_auroc": v} for i, v in enumerate(values)}, 0, method)
    comparisons = compare(summary_of(tmp_path), "image_auroc", "toy")
    raw = [c.p_value for c in comparisons]
    assert len(comparisons) == 2 and None not in raw
    assert [c.p_holm for c in comparisons] == holm_adjust(raw)
    assert all(c.p_holm >= c.p_value for c in comparisons)


def test_bootstrap_interval_is_seeded():
    differences = np.random.default_rng(0).normal(-0.02, 0.03, size=9)
    first = bootstrap_interval(differences, resamples=10_000, seed=3)
    assert first == bootstrap_interval(differences, resamples=10_000, seed=3)
    assert first != bootstrap_interval(differences, resamples=10_000, seed=4)
    assert differences.min() <= first[0] < differences.mean() < first[1] <= differences.max()


def test_too_few_or_zero_differences_are_na_with_a_reason(tmp_path, capsys):
    (few,) = compare(paired_runs(tmp_path / "few", [0.9, 0.8, 0.7, 0.6], [0.8, 0.7, 0.6, 0.5]), "image_auroc", "toy")
    assert few.p_value is None and "fewer than 6" in few.note and few.interval is not None
    same = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    (zero,) = compare(paired_runs(tmp_path / "zero", same, same), "image_auroc", "toy")
    assert zero.p_value is None and zero.note == "no difference in any category" and zero.difference == 0.0
    code, out = run_report([tmp_path / "zero", "--out", tmp_path / "out", "--no-plots"], capsys)
    assert code == 0, out
    rows = list(csv.DictReader((tmp_path / "out" / "toy-within" / "significance.csv").open()))
    assert rows[0]["p_value"] == "" and rows[0]["test"].startswith("Wilcoxon signed-rank")
    assert (
        "| image_auroc | vip | static | 7 | 0.0 | [0.0, 0.0] | n/a | n/a | no difference in any category |"
        in (tmp_path / "out" / "toy-within" / "report.md").read_text()
    )


# ---------------------------------------------------------------- protocols and runs.jsonl


def test_protocols_get_separate_reports(tmp_path, capsys):
    write_run(tmp_path / "runs" / "p1", {"a": {"image_auroc": 0.9}})
    write_run(tmp_path / "runs" / "p2", {"a": {"image_auroc": 0.1}}, proto=protocol("other-protocol", ("a",)))
    code, out = run_report([tmp_path / "runs", "--out", tmp_path / "out", "--no-plots"], capsys)
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other-protocol", "toy-within"]
    assert "| a | 90.0 |" in (tmp_path / "out" / "toy-within" / "report.md").read_text()
    assert "| a | 10.0 |" in (tmp_path / "out" / "other-protocol" / "report.md").read_text()


def test_same_protocol_name_with_other_data_is_refused(tmp_path, capsys):
    write_run(tmp_path / "runs" / "r1", {"a": {"image_auroc": 0.9}})
    write_run(tmp_path / "runs" / "r2", {"a": {"image_auroc": 0.9}}, seed=1, proto=protocol(targets=("a", "z")))
    code, out = run_report([tmp_path / "runs", "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert "zsad: error: Runs r1 and r2 both use protocol 'toy-within' but differ in targets" in out
    assert not (tmp_path / "out").exists()


def test_runs_jsonl_labels_failures_reruns_and_by(tmp_path, capsys):
    grid = tmp_path / "grid"
    for run_id, seed, value in [("a0", 0, 0.7), ("a1", 1, 0.9), ("b0", 0, 0.6)]:
        write_run(grid / run_id, {"a": {"image_auroc": value}}, seed=seed)
    lines = [
        jsonl_line("a0", "AnomalyCLIP", 0, None, status="failed", error="CUDA out of memory"),
        jsonl_line("a0", "AnomalyCLIP", 0, "a0/results.json", overrides={"model.prompt.init_args.n_ctx": 8}),
        jsonl_line("a1", "AnomalyCLIP", 1, "a1/results.json", overrides={"model.prompt.init_args.n_ctx": 8}),
        jsonl_line("b0", "AnomalyCLIP", 0, "b0/results.json", overrides={"model.prompt.init_args.n_ctx": 12}),
        jsonl_line("c0", "AnomalyCLIP", 2, None, status="failed", error="disk full"),
    ]
    (grid / "runs.jsonl").write_text("\n".join(lines) + "\n")
    # seed 0 with n_ctx 8 and 12 under one label: not replicates
    code, out = run_report([grid, "--no-plots"], capsys)
    assert code == 2 and "Runs a0 and b0 are both 'AnomalyCLIP' with seed 0" in out
    summary = summary_of(grid, by=("method", "model.prompt.init_args.n_ctx"))
    assert summary.labels == ["AnomalyCLIP n_ctx=8", "AnomalyCLIP n_ctx=12"]  # the grid's method label
    assert summary.category("AnomalyCLIP n_ctx=8", "toy", "a", "image_auroc").mean == pytest.approx(0.8)
    code, out = run_report([grid / "runs.jsonl", "--by", "method", "model.prompt.init_args.n_ctx", "--no-plots",
                            "--out", tmp_path / "out"], capsys)  # fmt: skip
    assert code == 0, out
    report = (tmp_path / "out" / "toy-within" / "report.md").read_text()
    assert "Left out: c0: failed (disk full)" in report and "CUDA" not in report  # a0 was re-run


def test_seeds_that_differ_in_a_setting_are_refused(tmp_path):
    write_run(tmp_path / "s0", {"a": {"image_auroc": 0.6}}, seed=0, model_extra={"head": {"init_args": {"sigma": 4}}})
    write_run(tmp_path / "s1", {"a": {"image_auroc": 0.6}}, seed=1, model_extra={"head": {"init_args": {"sigma": 8}}})
    with pytest.raises(
        DataError, match=r"differ in model.head.init_args.sigma \(4 vs 8\).*--by method model.head.init_args.sigma"
    ):
        summary_of(tmp_path)
    summary = summary_of(tmp_path, by=("method", "model.head.init_args.sigma"))
    assert summary.labels == ["static sigma=4", "static sigma=8"]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    code, out = run_report([tmp_path / "nothing"], capsys)
    assert code == 2 and out.startswith("zsad: error: ") and out.count("\n") == 1 and "nothing" in out
    (tmp_path / "runs.jsonl").write_text('{"run_id": "x"\n')
    code, out = run_report([tmp_path / "runs.jsonl"], capsys)
    assert code == 2 and "runs.jsonl:1 is not valid JSON" in out
    write_run(tmp_path / "r", {"a": {"image_auroc": 0.5}})
    with pytest.raises(ConfigError, match=r"--metrics pixel_auroc: not reported.*available: image_auroc"):
        summary_of(tmp_path / "r", metrics=["pixel_auroc"])
    with pytest.raises(ConfigError, match=r"--by model\.nope"):
        summary_of(tmp_path / "r", by=("model.nope",))


def with_entries(results_path, **entries):
    """Add top-level entries (``checkpoint``, ``trainable_parameters``) to a written results.json."""
    document = json.loads(results_path.read_text())
    results_path.write_text(json.dumps({**document, **entries}))


def test_each_entry_is_labelled_by_what_its_checkpoint_was_trained_on(tmp_path):
    values = {"a": {"image_auroc": 0.5}}
    aux = [{"dataset": "synthetic", "root": "/s", "categories": ["stripes", "weave", "disc", "tile"], "split": "test"}]
    trained = {"path": "/c/last.ckpt", "sha256": "0" * 64, "provenance": {"kind": "fit", "aux": aux, "seed": 0}}
    with_entries(write_run(tmp_path / "static", values), checkpoint=trained, trainable_parameters=30)
    with_entries(write_run(tmp_path / "vip", values, prompt="vip"), checkpoint="untrained", trainable_parameters=9)
    free = write_run(tmp_path / "winclip", values, prompt="zsad.prompts.winclip.WinCLIPPrompt")
    with_entries(free, checkpoint=None, trainable_parameters=0)
    sentence = protocol_description(summary_of(tmp_path))
    assert "static trained on synthetic (4 categories)" in sentence  # the checkpoint's data, not the test's (none)
    assert "vip untrained (initial prompts, no checkpoint)" in sentence and "winclip training-free" in sentence
    assert "tested on toy (1 category)" in sentence
    # one trained entry alone: a trained checkpoint tested on one category is never "training-free (0 categories)"
    sentence = protocol_description(summary_of(tmp_path / "static"))
    assert sentence.startswith("Protocol toy-within: trained on synthetic (4 categories); tested on toy")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"seed": [1]}, r"'seed' is \[1\] \(list\), expected null or an integer"),
        ({"mean": {"image_auroc": True}}, r"'mean.image_auroc' is True \(bool\), expected a number"),
        ({"protocol": {"name": 3}}, r"'protocol.name' is 3 \(int\), expected a protocol name"),
        ({"checkpoint": "trained"}, r"'checkpoint' is 'trained' \(str\), expected null, 'untrained' or a checkpoint"),
        ({"per_dataset": []}, r"'per_dataset' is \[\] \(list\), expected a mapping"),
    ],
)
def test_results_values_of_the_wrong_type_name_the_file_and_key(tmp_path, entries, message):
    path = write_run(tmp_path / "run", {"a": {"image_auroc": 0.5}})
    with_entries(path, **entries)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: {message}"):
        load_runs([tmp_path])


def test_scores_of_another_run_are_refused(tmp_path):
    path = write_run(tmp_path / "run", {"a": {"image_auroc": 0.5}})
    write_scores(tmp_path / "run", [("toy", "a", "x.png", 1, 0.9)])
    digest = hashlib.sha256((tmp_path / "run" / "scores.csv").read_bytes()).hexdigest()
    with_entries(path, scores={"file": "scores.csv", "sha256": digest, "images": 1})
    assert load_runs([tmp_path]).runs[0].scores_path == tmp_path / "run" / "scores.csv"  # its own: accepted
    write_scores(tmp_path / "run", [("toy", "a", "y.png", 0, 0.1)])  # another run's scores land beside it
    with pytest.raises(DataError, match=r"scores\.csv does not belong to .*results\.json"):
        load_runs([tmp_path])


# ---------------------------------------------------------------- plots


def test_curves_match_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60) + 0.4 * labels, 1)  # heavy ties
    curve = curves(scores, labels)
    assert curve.auroc == pytest.approx(roc_auc_score(labels, scores))
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(roc_auc_score(labels, scores))
    step_ap = float(np.sum(np.diff(curve.recall) * curve.precision[1:]))
    assert step_ap == pytest.approx(average_precision_score(labels, scores))
    assert curves(scores, np.zeros(60, dtype=int)) is None  # one class: no curve


def test_pngs_are_written(three_seeds, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for folder in ["static-0", "static-1", "vip-0"]:
        rows = [("toy", c, f"{c}/{i}.png", i % 2, float(rng.random())) for c in "ab" for i in range(10)]
        write_scores(three_seeds / folder, rows)
    code, out = run_report([three_seeds, "--out", tmp_path / "out"], capsys)
    assert code == 0, out
    plots = tmp_path / "out" / "toy-within" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["bars_toy.png", "curves_toy_a.png", "curves_toy_b.png"]
    for png in plots.iterdir():
        assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 5000
    assert "![toy/a: curves](plots/curves_toy_a.png)" in (plots.parent / "report.md").read_text()


# ---------------------------------------------------------------- end to end


@pytest.mark.slow  # about 4-5 s on 2 shared CPU cores
def test_zsad_test_writes_scores_that_report_reads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    configs = ["backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", "trainer/smoke.yaml"]
    args = [a for c in configs for a in ("-c", str(ROOT / "configs" / c))]
    results = tmp_path / "runs" / "static-seed0" / "results.json"  # an absolute name, as `zsad grid` gives it
    main(["test", *args, "--untrained=true", "--trainer.enable_progress_bar=false", f"--results.filename={results}",
          "--data.init_args.target_categories=[checker, ring]", "--data.init_args.n_test_good=3"])  # fmt: skip
    document = json.loads(results.read_text())
    rows = list(csv.DictReader((results.parent / "scores.csv").open()))
    assert tuple(rows[0]) == SCORE_COLUMNS
    counts = document["counts"]["synthetic"]
    assert len(rows) == sum(c["normal"] + c["anomalous"] for c in counts.values())
    assert {r["label"] for r in rows} == {"0", "1"} and all(Path(r["path"]).is_file() for r in rows)
    assert sum(r["label"] == "1" and r["category"] == "ring" for r in rows) == counts["ring"]["anomalous"]
    assert document["seed"] == 0
    code, out = run_report([tmp_path / "runs", "--out", tmp_path / "report"], capsys)
    assert code == 0, out
    folder = tmp_path / "report" / "synthetic-within"
    assert (folder / "plots" / "curves_synthetic_ring.png").stat().st_size > 0
    checker_auroc = 100 * document["per_category"]["synthetic"]["checker"]["image_auroc"]
    assert f"| checker | {checker_auroc:.1f} |" in (folder / "report.md").read_text()
