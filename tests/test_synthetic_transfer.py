"""Training on synthetic categories transfers to held-out categories (tiny random CLIP, so mechanics only).

The data are the synthetic categories with ``marked`` defects (one colour shared by all categories,
:func:`zsad.data.synthetic.defects.mark_defect`). With natural defects nothing can transfer on random weights: a
fully supervised linear probe on the tiny CLIP's patch tokens ranks held-out defect patches at chance, and the
methods fit the auxiliary categories (pixel AUROC about 0.7) while the held-out ones stay at 0.5. Their earlier
"image gains" there were random starts below chance drifting back to 0.5.

The asserted metric is held-out pixel AUROC, averaged over seeds 0-2. Image scores of ``dual_branch`` and
``multiclass`` read only the global feature, which carries little of a small defect on a random tower (a fully
supervised probe reaches 0.52-0.55), and single seeds vary a lot with 40 optimisation steps and 4 held-out
categories of 16 images (single-seed pixel gains ranged from -0.02 to +0.51). The margin comes from
`benchmarks/synthetic_transfer.py` (5 epochs, seeds 0-2, this machine; table in benchmarks/README.md): mean
pixel gains of +0.14 (static), +0.19 (cops), +0.21 (vip) and +0.24 (dapo), every ablation positive too. A margin
of +0.08 is well under the smallest, so the test fails only when training stops transferring.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import synthetic_transfer

MARGIN = 0.08
SEEDS = (0, 1, 2)
TIMEOUT_S = 1800
"""Three 5-epoch fits per method. DAPO's are the slowest (210 prompts encoded per step) and ran past pytest's default
600 s on a loaded 2-core machine; this limit catches a hang, it is not a speed check."""


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S)
@pytest.mark.parametrize("method", ["static", "cops", "vip", "dapo"])
def test_training_beats_the_untrained_start_on_held_out_categories(method, tmp_path):
    runs = [synthetic_transfer.run_method(method, seed, 5, tmp_path / "data", tmp_path) for seed in SEEDS]
    gains = [run.after["pixel_auroc"] - run.before["pixel_auroc"] for run in runs]
    detail = [f"seed {run.seed}: {run.before} -> {run.after}" for run in runs]
    assert statistics.mean(gains) > MARGIN, f"{method}: held-out pixel AUROC gains {gains}\n" + "\n".join(detail)
