"""Peak memory of training (fit) and evaluation (test) per method, one fresh process per measurement.

Each measurement runs in its own Python process, so that no allocation of an earlier one (the allocator keeps
freed memory) inflates a later peak. The process builds the model and the synthetic datamodule from the shipped
configs, exactly as ``zsad fit``/``zsad test`` do, generates the data if needed, and then:

- ``fit``: ``--steps`` optimisation steps on the auxiliary categories (no validation, no checkpoints);
- ``test``: one full evaluation of the target categories (every metric, as ``zsad test``).

Columns: RSS after the imports, the high-water mark of the resident set while building the model (the frozen
CLIP's weights), and the high-water mark during the stage (VmHWM, reset to the current RSS just before it where
Linux allows), plus the GPU's peak allocated memory on ``--device cuda``. WinCLIP is training-free: it has no fit.

    python benchmarks/memory.py                                          # tiny CLIP, every method: a few minutes
    python benchmarks/memory.py --backbone real --methods static --stages test --target-categories checker \\
        --batch-size 2                                                   # ViT-L/14 at 518 px, random weights
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))
from inference import METHODS, REAL, TINY  # noqa: E402
from metrics import peak_rss_mb, reset_peak_rss  # noqa: E402

STAGES = ("fit", "test")
RESULT_PREFIX = "RESULT "


def current_rss_mb() -> float:
    """Resident set size now, in MB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_in_this_process(job: dict[str, Any]) -> dict[str, Any]:
    """Build one method and run one stage; return the memory figures (runs inside the worker process)."""
    import logging
    import warnings

    import lightning as L  # noqa: N812
    import torch

    from inference import build_cli

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    imported = current_rss_mb()
    extra = [
        f"--data.init_args.batch_size={job['batch_size']}",
        f"--data.init_args.eval_batch_size={job['batch_size']}",
    ]
    if job["target_categories"]:
        extra.append(f"--data.init_args.target_categories=[{','.join(job['target_categories'])}]")
    extra += job["overrides"]
    cli = build_cli(METHODS[job["method"]], job["backbone"], extra)
    cli.datamodule.prepare_data()  # generated before the stage's peak is taken
    built = peak_rss_mb()
    device = torch.device(job["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = L.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            max_steps=job["steps"],
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=scratch,
        )
        resettable = reset_peak_rss()
        if job["stage"] == "fit":
            trainer.fit(cli.model, datamodule=cli.datamodule)
        else:
            trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return {
        "imported_mb": imported,
        "built_mb": built,
        "peak_mb": peak_rss_mb(),
        "peak_resettable": resettable,
        "gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Measure one job in a fresh Python process and return its figures (or the error it ended with)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**job, **json.loads(line[len(RESULT_PREFIX) :])}
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
    return {**job, "error": f"exit {completed.returncode}: {tail[0]}"}


def jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (method, stage) to measure; WinCLIP has nothing to fit."""
    return [
        {
            "method": method,
            "stage": stage,
            "backbone": args.backbone,
            "device": args.device,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "target_categories": args.target_categories,
            "overrides": [f"--{override}" for override in args.override],
        }
        for method in args.methods
        for stage in args.stages
        if not (stage == "fit" and method == "winclip")
    ]


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print one line per measurement."""
    from zsad.metrics.results import format_table

    print(f"backbone {args.backbone}, device {args.device}, batch {args.batch_size}, fit steps {args.steps}")
    header = ["method", "stage", "RSS after imports MB", "peak building MB", "peak in stage MB", "GPU peak MB"]
    table = []
    for row in rows:
        if "error" in row:
            table.append([METHODS[row["method"]].label, row["stage"], "-", "-", row["error"][:60], "-"])
            continue
        gpu = "-" if row["gpu_peak_mb"] is None else f"{row['gpu_peak_mb']:.0f}"
        peak = f"{row['peak_mb']:.0f}" + ("" if row["peak_resettable"] else " (since start)")
        table.append(
            [
                METHODS[row["method"]].label,
                row["stage"],
                f"{row['imported_mb']:.0f}",
                f"{row['built_mb']:.0f}",
                peak,
                gpu,
            ]
        )
    print(format_table(header, table))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--backbone", choices=[REAL, TINY], default=TINY, help="tiny CLIP (default) or real arch")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=3, help="optimisation steps of each fit")
    parser.add_argument("--batch-size", type=int, default=8, help="training and evaluation batch size")
    parser.add_argument("--target-categories", nargs="+", help="evaluate only these synthetic categories")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every run, as on the zsad command line without the dashes, e.g. "
        "model.prompt.init_args.prompt_count=1 (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one job, run in this process
    args = parser.parse_args(argv)
    if min(args.steps, args.batch_size) < 1:
        parser.error("--steps and --batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(measure_in_this_process(json.loads(args.worker))))
        return []
    rows = []
    for job in jobs(args):
        rows.append(run_worker(job))
        print(f"{job['method']} {job['stage']}: {rows[-1].get('peak_mb', rows[-1].get('error'))}", file=sys.stderr)
    print_table(rows, args)
    if args.json:
        from zsad.workflow.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
