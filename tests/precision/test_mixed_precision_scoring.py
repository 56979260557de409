"""Every synthesizer with its head scores under autocast (bf16, and fp16 as `16-mixed` uses) close to fp32.

Same model and parameters for both precisions: the method config on the tiny backbone at seed 0, scored untrained
and again after one Adam step on the gradients of a bf16 training pass, whose loss terms are compared with fp32's.
Under autocast the frozen CLIP and the prompt networks run in half precision, the similarity logits, softmaxes,
losses and smoothing in fp32 (test_fp32_steps.py checks those exactly), so the outputs must be fp32 and differ from
fp32 only by the half-precision rounding of the features.

Tolerances come from measurements: `max |half - fp32|` over the 64 target images, seeds 0 and 1, untrained and
after 3 Adam steps (CPU). bf16 keeps 8 significant bits (a rounding error of up to 2^-9 = 0.2 % per operation), and
a softmax over cosines / 0.07 turns a cosine error d into a probability error of up to d / (2 * 0.07) = 7 d, so
per-layer probabilities move by about 1e-2 on this backbone. The tolerances are about twice the worst case:

    bf16, measured max  anomaly map               image score   tolerance (map, score)
    static              7.4e-2 (4 summed layers)  3.0e-2        0.15, 0.06
    cops                3.3e-2                    1.7e-2        0.08, 0.04
    vip                 3.6e-3                    3.1e-3        0.01, 0.008
    dapo (2 prompt sets) 2.1e-2                   1.1e-2        0.05, 0.03
    winclip             1.4e-3                    1.8e-3        0.004, 0.004

fp16 has 3 more significant bits and measured 8x to 11x closer in every case; its tolerance is a quarter of bf16's.
Loss terms of the first 3 training batches differed by at most 3.4 % in bf16 (image cross-entropy and focal);
the tolerance is 10 % (or 0.01 absolute for terms near 0). These bounds catch what goes wrong in practice (an
fp16 overflow to inf or NaN, a cast that loses a branch, a wrong dtype), not one half-precision step in an fp32
place, which is below them; test_fp32_steps.py checks those steps exactly.

CoPS is scored with `test_seed: null` and the global random state reset before each pass, so both precisions draw
the same prior samples. With the default per-image seed, the seed hashes the fp16-rounded global feature, which
half-precision features change: the test-time samples then differ between precisions, and so do the scores, by as
much as another test seed would give (docs/multi_gpu.md#mixed-precision).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zsad.cli import ZSADCLI
from zsad.config_aliases import install_loader, translate_argv

ROOT = Path(__file__).resolve().parents[2]
BF16_TOLERANCE = {  # (anomaly map, image score), see the module docstring
    "static": (0.15, 0.06),
    "cops": (0.08, 0.04),
    "vip": (0.01, 0.008),
    "dapo": (0.05, 0.03),
    "winclip": (0.004, 0.004),
}
OPTIONS = {
    "cops": ["--model.prompt.init_args.test_seed=null"],
    "dapo": ["--model.prompt.init_args.prompt_count=2"],  # same code paths, 5x fewer text prompts
}
HALF = {torch.bfloat16: 1.0, torch.float16: 0.25}  # dtype -> fraction of the bf16 tolerance


def build(method: str, tmp_path: Path) -> ZSADCLI:
    install_loader()
    configs = ["backbone/tiny.yaml", f"method/{method}.yaml"]
    configs += ["backbone/tiny_winclip.yaml"] if method == "winclip" else []
    args = [a for c in [*configs, "data/synthetic.yaml"] for a in ("--config", str(ROOT / "configs" / c))]
    args += [f"--data.init_args.root={tmp_path / 'data'}", "--data.init_args.batch_size=4", "--seed_everything=0"]
    return ZSADCLI(args=translate_argv([*args, *OPTIONS.get(method, [])]), run=False)


def score(model, batch: dict, dtype: torch.dtype | None):
    torch.manual_seed(0)  # the same prior samples for CoPS at every precision
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return model.score(model.extract_features(batch))[0]


def loss_terms(model, batch: dict, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # the same VAE noise for CoPS at every precision
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        scores, text = model.score(model.extract_features(batch))
        return {type(loss).__name__: loss(scores, batch, text) for loss in model.losses}


def assert_scores_close(model, batch: dict, method: str) -> None:
    reference = score(model, batch, None)
    map_tolerance, score_tolerance = BF16_TOLERANCE[method]
    for dtype, fraction in HALF.items():
        low = score(model, batch, dtype)
        outputs = [low.image_logits, low.image_score, low.anomaly_map, *low.layer_probs]
        assert all(output.dtype == torch.float32 for output in outputs)
        map_error = (low.anomaly_map - reference.anomaly_map).abs().max().item()
        score_error = (low.image_score - reference.image_score).abs().max().item()
        assert map_error <= fraction * map_tolerance, f"{dtype}: anomaly maps differ by {map_error:.2e}"
        assert score_error <= fraction * score_tolerance, f"{dtype}: image scores differ by {score_error:.2e}"


@pytest.mark.parametrize("method", list(BF16_TOLERANCE))
def test_half_precision_scores_match_fp32(method, tmp_path, monkeypatch):
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    cli = build(method, tmp_path)
    model, data = cli.model.eval(), cli.datamodule
    batch = next(iter(data.test_dataloader()))
    assert_scores_close(model, batch, method)
    if method == "winclip":
        return  # training-free

    model.train()
    train_batch = next(iter(data.train_dataloader()))
    reference = loss_terms(model, train_batch, None)
    low = loss_terms(model, train_batch, torch.bfloat16)
    for name, value in low.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), f"{name}: {value}"
        assert value.item() == pytest.approx(reference[name].item(), rel=0.1, abs=0.01), name
    torch.stack(list(low.values())).sum().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in trainable)

    optimizer = torch.optim.Adam(trainable, lr=1e-3)  # the half-precision gradients train the fp32 parameters
    optimizer.step()
    assert_scores_close(model.eval(), batch, method)
