"""Start-up time of the quick ``zsad`` commands against ``python -c "import torch"``, with the ratios.

Each command runs as a fresh process, as a user's shell starts it (the ``zsad`` script next to this Python), several
times interleaved with the baseline, so that a load change on a shared machine hits both alike; the median of each is
reported. The target: each quick command under 1.5 s on the 2-core development machine, i.e. well under the cost of
importing torch, which none of them may do (tests/test_startup_imports.py checks the imports, without timing).

    python benchmarks/startup.py                 # 7 rounds
    python benchmarks/startup.py --rounds 15 --json startup.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (("--help",), ("--version",), ("list",), ("configs",))
TARGET_S = 1.5


def wall_time(argv: list[str]) -> float:
    """Seconds from starting ``argv`` to its exit (output discarded)."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(zsad: str, rounds: int) -> dict[str, list[float]]:
    """Times of the baseline and of every command, one of each per round."""
    runs = {"import torch": [sys.executable, "-c", "import torch"]}
    runs.update({f"zsad {' '.join(c)}": [zsad, *c] for c in COMMANDS})
    times: dict[str, list[float]] = {name: [] for name in runs}
    for argv in runs.values():  # warm the file cache once, untimed
        wall_time(argv)
    for _ in range(rounds):
        for name, argv in runs.items():
            times[name].append(wall_time(argv))
    return times


def report(times: dict[str, list[float]]) -> list[dict[str, float | str | bool]]:
    """One row per command: median seconds, its ratio to ``import torch``, and whether it is under the target."""
    baseline = statistics.median(times["import torch"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(
            {
                "command": name,
                "median_s": round(median, 3),
                "min_s": round(min(values), 3),
                "ratio_to_import_torch": round(median / baseline, 3),
                "under_target": name == "import torch" or median < TARGET_S,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each command (default 7)")
    parser.add_argument("--zsad", default=str(Path(sys.executable).parent / "zsad"), help="the zsad script to time")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args()
    rows = report(measure(args.zsad, args.rounds))
    print(f"{'command':<16} {'median s':>9} {'min s':>7} {'x import torch':>15}  under {TARGET_S} s")
    for row in rows:
        ok = "yes" if row["under_target"] else "NO"
        print(
            f"{row['command']:<16} {row['median_s']:>9.3f} {row['min_s']:>7.3f} "
            f"{row['ratio_to_import_torch']:>15.3f}  {ok if row['command'] != 'import torch' else '(baseline)'}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if not all(row["under_target"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
