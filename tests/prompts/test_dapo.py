"""DAPO prompts against slow literal references: hybrid prompts, averaging, deep text/visual tokens, both quirks."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import yaml

from training_steps import train_on_batch
from zsad import ZSADModule
from zsad.backbones import TinyRandomBackbone
from zsad.cli import main
from zsad.data.batch import select
from zsad.errors import ConfigError
from zsad.heads.multiclass import MultiClassHead
from zsad.inference.detector import Detector
from zsad.losses import ImageCrossEntropy
from zsad.losses.multiclass import MultiClassFocalLoss
from zsad.losses.pixel import DiceLoss
from zsad.prompts.dapo import DATASET_TEST_VOCABULARIES, DEFECT_VOCABULARIES, MVTEC_DEFECT_WORDS, DAPOPrompt
from zsad.registry import PROMPTS
from zsad.structures import Features

ROOT = Path(__file__).resolve().parents[2]

WORDS = ["scratch", "faulty imprint"]


@pytest.fixture(scope="module")
def backbone():
    return TinyRandomBackbone(project_patches=False)


def make_prompt(backbone, **kwargs):
    torch.manual_seed(0)
    options = {"vocabulary": WORDS, "prompt_count": 2, "vision_width": 64, "vision_patch_size": 8, **kwargs}
    prompt = DAPOPrompt(**options)
    prompt.setup(backbone.text)
    return prompt


def reference_text(prompt, text, causal, pool_original, average="projected"):
    """One prompt at a time, 77 tokens, deep tokens inserted and blended by hand: ``[C, D]``.

    ``average="projected"`` averages the projected embeddings of the sets, ``"normalized"`` the unit ones.
    """
    ids = text.tokenize([f"X X X X X {t}" for t in ["flawless object", *(f"{w} anomaly object" for w in WORDS)]])
    per_set = []
    for s in range(prompt.prompt_count):
        rows = []
        for c in range(ids.shape[0]):
            x = text.token_embedding(ids[c]).clone()
            x[1:6] = prompt.normal_context[s] if c == 0 else prompt.anomaly_context[s]
            x = x + text.positional_embedding
            for layer, block in enumerate(text.transformer.resblocks):
                deep = prompt.text_deep[layer]
                if layer == 0:
                    x = torch.cat([x[:1], deep, x[1:]])
                else:
                    x = torch.cat([x[:1], 0.01 * x[1:5] + 0.99 * deep, x[5:]])
                mask = torch.full((81, 81), float("-inf")).triu(1) if causal else None
                x = block(x[None], attn_mask=mask)[0]
            x = text.ln_final(x)
            eot = int(ids[c].argmax())
            pooled = x[eot if pool_original else eot + 4] @ text.text_projection
            rows.append(F.normalize(pooled, dim=-1) if average == "normalized" else pooled)
        per_set.append(torch.stack(rows))
    return F.normalize(torch.stack(per_set).mean(0), dim=-1)


def test_registered_and_class_layout(backbone):
    assert PROMPTS.get("dapo") is DAPOPrompt
    prompt = make_prompt(backbone)
    with torch.no_grad():
        text = prompt(None, backbone.text)
    assert text.class_names == ("normal", "scratch", "faulty imprint")
    assert text.embeddings.shape == (1, 3, backbone.text.embed_dim)
    torch.testing.assert_close(text.embeddings.norm(dim=-1), torch.ones(1, 3))


@pytest.mark.parametrize(("causal", "pool_original"), list(itertools.product([False, True], repeat=2)))
def test_text_matches_slow_reference_for_both_quirks(backbone, causal, pool_original):
    prompt = make_prompt(backbone, text_causal_mask=causal, pool_at_original_eot=pool_original)
    with torch.no_grad():
        ours = prompt(None, backbone.text).embeddings[0]
        reference = reference_text(prompt, backbone.text, causal, pool_original)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("average", ["projected", "normalized"])
def test_both_context_averages_match_the_slow_reference_and_differ(backbone, average):
    prompt = make_prompt(backbone, prompt_count=3, context_average=average)
    other = make_prompt(
        backbone, prompt_count=3, context_average="normalized" if average == "projected" else "projected"
    )
    with torch.no_grad():
        ours = prompt(None, backbone.text).embeddings[0]
        reference = reference_text(prompt, backbone.text, False, True, average)
        assert (ours - other(None, backbone.text).embeddings[0]).abs().max() > 1e-5
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="context_average='median' is unknown"):
        DAPOPrompt(context_average="median")


def test_each_quirk_changes_the_embeddings(backbone):
    results = {}
    for causal, pool_original in itertools.product([False, True], repeat=2):
        prompt = make_prompt(backbone, text_causal_mask=causal, pool_at_original_eot=pool_original)
        with torch.no_grad():
            results[causal, pool_original] = prompt(None, backbone.text).embeddings
    for a, b in itertools.combinations(results.values(), 2):
        assert (a - b).abs().max() > 1e-3


def test_text_checkpointing_gives_the_same_values_and_gradients(backbone):
    grads = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        prompt = make_prompt(backbone, text_checkpointing=checkpointing)
        embeddings = prompt(None, backbone.text).embeddings
        (embeddings * torch.arange(embeddings.numel()).view_as(embeddings)).sum().backward()
        text_grads = [p.grad for p in prompt.parameters() if p.grad is not None]  # the visual tokens get none here
        grads[checkpointing] = (embeddings.detach(), *text_grads)
    assert len(grads[True]) == len(grads[False]) > 3
    for plain, recomputed in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(recomputed, plain, atol=0, rtol=0)


def test_normalized_average_is_the_normalised_mean_of_single_set_embeddings(backbone):
    prompt = make_prompt(backbone, prompt_count=3, context_average="normalized")
    singles = []
    for s in range(3):
        single = make_prompt(backbone, prompt_count=1)
        with torch.no_grad():
            single.normal_context.copy_(prompt.normal_context[s : s + 1])
            single.anomaly_context.copy_(prompt.anomaly_context[s : s + 1])
            single.text_deep.copy_(prompt.text_deep)
            singles.append(single(None, backbone.text).embeddings)
    with torch.no_grad():
        ours = prompt(None, backbone.text).embeddings
    torch.testing.assert_close(ours, F.normalize(torch.stack(singles).mean(0), dim=-1), atol=1e-6, rtol=1e-5)


def test_initialisation_follows_the_official_distributions(backbone):
    """Text tokens: N(mean, std²) per dimension of the token table; visual tokens: uniform ±sqrt(6/(3·p²+width))."""
    prompt = make_prompt(backbone, prompt_count=200)  # 2 x 1000 samples per dimension for the statistics
    table = backbone.text.token_embedding.weight
    context = torch.cat([prompt.normal_context, prompt.anomaly_context]).detach().reshape(-1, table.shape[1])
    std = table.std(dim=0)
    assert ((context.mean(dim=0) - table.mean(dim=0)).abs() < 0.15 * std).all()
    torch.testing.assert_close(context.std(dim=0), std, rtol=0.1, atol=0)
    bound = (6.0 / (3 * 8 * 8 + 64)) ** 0.5
    visual = prompt.vision_deep.detach()
    assert float(visual.abs().max()) <= bound and float(visual.abs().max()) > 0.95 * bound
    assert float(visual.std()) == pytest.approx(bound / 3**0.5, rel=0.05)
    prompt = make_prompt(backbone, prompt_count=10)
    shapes = {n: tuple(p.shape) for n, p in prompt.named_parameters()}
    assert shapes == {
        "normal_context": (10, 5, 64),
        "anomaly_context": (10, 5, 64),
        "text_deep": (12, 4, 64),
        "vision_deep": (24, 4, 64),
    }


def test_visual_tokens_match_slow_reference(backbone, images):
    prompt = make_prompt(backbone)
    with torch.no_grad():
        features = backbone(images, deep_prompts=prompt.vision_prompts())
        visual = backbone.visual
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], dim=1) + visual.positional_embedding
        x = visual.ln_pre(x)
        kept = {}
        for layer, block in enumerate(visual.transformer.resblocks):
            deep = prompt.vision_deep[layer].expand(2, -1, -1)
            if layer == 0:
                x = torch.cat([x[:, :1], deep, x[:, 1:]], dim=1)
            else:
                x = torch.cat([x[:, :1], 0.01 * x[:, 1:5] + 0.99 * deep, x[:, 5:]], dim=1)
            x = block(x)
            kept[layer + 1] = x
    assert x.shape[1] == 1 + 4 + 64
    for layer, tokens in zip(features.layers, features.patch_tokens, strict=True):
        torch.testing.assert_close(tokens, kept[layer][:, 5:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.global_embedding, visual.ln_post(x[:, 0]) @ visual.proj, atol=1e-5, rtol=1e-5)


def test_visual_tokens_of_the_wrong_width_are_refused(backbone, images):
    prompt = make_prompt(backbone, vision_width=1024)
    with pytest.raises(ConfigError, match="visual tokens have width 1024 but the image tower has width 64"):
        backbone(images, deep_prompts=prompt.vision_prompts())


def official_sizes():
    """The official test script's lists (but Real-IAD's) and their lengths."""
    return {"mvtec_test": 20, "visa": 18, "mpdd": 7, "mvtec_loco": 2, "mad_real": 2, "mad_sim": 3}


def test_vocabularies_and_bad_options(backbone):
    assert DAPOPrompt().words == MVTEC_DEFECT_WORDS and len(MVTEC_DEFECT_WORDS) == 20
    assert DAPOPrompt(vocabulary="mpdd").words == DEFECT_VOCABULARIES["mpdd"]
    assert {name: len(DEFECT_VOCABULARIES[name]) for name in official_sizes()} == official_sizes()
    assert DEFECT_VOCABULARIES["mpdd"][:3] == ("hole", "scratch", "bent")
    assert DEFECT_VOCABULARIES["mvtec_test"][2:4] == ("color", "combined")  # folder words, not the training ones
    assert DAPOPrompt(vocabulary=["hole"]).class_names == ("normal", "hole")
    with pytest.raises(ConfigError, match="Unknown defect vocabulary 'visaa'"):
        DAPOPrompt(vocabulary="visaa")
    with pytest.raises(ConfigError, match="must not repeat"):
        DAPOPrompt(vocabulary=["hole", "hole"])
    with pytest.raises(ConfigError, match="non-empty"):
        DAPOPrompt(vocabulary=[])
    with pytest.raises(ConfigError, match="needs a '\\{\\}'"):
        DAPOPrompt(anomaly_template="anomaly object")
    with pytest.raises(ConfigError, match="exceeds the 12 blocks"):
        make_prompt(backbone, text_deep_layers=13)


def test_test_vocabulary_applies_in_eval_mode_only(backbone):
    prompt = make_prompt(backbone, test_vocabulary=["hole", "crack", "scratch"])
    with torch.no_grad():
        training = prompt.train()(None, backbone.text)
        testing = prompt.eval()(None, backbone.text)
        same_words = make_prompt(backbone, vocabulary=["hole", "crack", "scratch"]).eval()(None, backbone.text)
    assert training.class_names == ("normal", *WORDS) and prompt.train().class_names == ("normal", *WORDS)
    assert testing.class_names == ("normal", "hole", "crack", "scratch")
    torch.testing.assert_close(testing.embeddings, same_words.embeddings)  # the learned tokens are shared
    torch.testing.assert_close(testing.embeddings[:, 0], training.embeddings[:, 0])  # the normal prompt too
    assert make_prompt(backbone).eval().class_names == ("normal", *WORDS)  # None keeps the training words


def dataset_features(*datasets):
    """Features that carry only what DAPO's text reads: the dataset of each image."""
    return Features(torch.zeros(len(datasets), 32), (), (), (1, 1), datasets=datasets)


def test_by_dataset_scores_each_dataset_with_its_official_list(backbone, caplog):
    prompt = make_prompt(backbone, test_vocabulary="by_dataset").eval()
    with torch.no_grad():
        mvtec = prompt(dataset_features("mvtec", "mvtec"), backbone.text)
        fixed = make_prompt(backbone, test_vocabulary="mvtec_test").eval()(None, backbone.text)
        with caplog.at_level(logging.WARNING, logger="zsad.prompts.dapo"):
            btad = prompt(dataset_features("btad"), backbone.text)
            prompt(dataset_features("btad"), backbone.text)
        unknown = prompt(None, backbone.text)
        training = prompt.train()(dataset_features("mvtec"), backbone.text)
    assert mvtec.class_names == ("normal", *DEFECT_VOCABULARIES["mvtec_test"])
    torch.testing.assert_close(mvtec.embeddings, fixed.embeddings, rtol=0, atol=0)  # the same as naming the list
    # every list of the official test script, MVTec's under its test name
    assert sorted(DATASET_TEST_VOCABULARIES.values()) == sorted(set(official_sizes()) | {"realiad"})
    assert DATASET_TEST_VOCABULARIES["mvtec"] == "mvtec_test" and DATASET_TEST_VOCABULARIES["visa"] == "visa"
    # a dataset the official script has no list for, or an unknown one: the training words, said once
    assert btad.class_names == unknown.class_names == training.class_names == ("normal", *WORDS)
    assert [r.getMessage() for r in caplog.records].count(
        "DAPO: the official test script has no word list for dataset 'btad'; scoring it with the training words (2). "
        "Set model.prompt.init_args.test_vocabulary to a list to score it with others."
    ) == 1
    assert prompt.eval().reads_dataset and not prompt.train().reads_dataset
    assert not make_prompt(backbone, test_vocabulary="visa").eval().reads_dataset
    with pytest.raises(ConfigError, match=r"one dataset at a time, but the batch holds \['mpdd', 'visa'\]"):
        prompt.eval()(dataset_features("visa", "mpdd"), backbone.text)


def test_deep_tokens_can_be_disabled(backbone):
    prompt = make_prompt(backbone, text_deep_layers=0, vision_deep_layers=0)
    assert prompt.vision_prompts() is None and prompt.text_prompt_hook() is None
    assert {n for n, _ in prompt.named_parameters()} == {"normal_context", "anomaly_context"}
    with torch.no_grad():
        assert prompt(None, backbone.text).embeddings.shape == (1, 3, 32)


# ---------------------------------------------------------------- the whole method in ZSADModule and the CLI
def make_module(backbone):
    """ZSADModule from configs/method/dapo.yaml's components, at tiny-random sizes with a short vocabulary."""
    config = yaml.safe_load((ROOT / "configs" / "method" / "dapo.yaml").read_text())["model"]
    assert config["backbone"]["init_args"]["project_patches"] is False
    assert config["backbone"]["init_args"]["layers"] == list(backbone.layers)
    config["prompt"]["init_args"].update(vision_width=64, prompt_count=2, vocabulary=WORDS)
    config["head"]["init_args"].update(layers=list(backbone.layers), vision_width=64, embed_dim=32)
    torch.manual_seed(0)
    module = ZSADModule(backbone=backbone, prompt=config["prompt"], head=config["head"], losses=config["losses"])
    assert isinstance(module.prompt, DAPOPrompt) and isinstance(module.head, MultiClassHead)
    assert [type(loss) for loss in module.losses] == [ImageCrossEntropy, MultiClassFocalLoss, DiceLoss]
    assert [loss.weight for loss in module.losses] == [1.0, 4.0, 4.0]
    return module


def batch_of(images):
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 16:40, 8:32] = 1
    return {
        "image": images,
        "mask": mask,
        "label": torch.tensor([1, 0]),
        "defect_type": ["scratch_head", "good"],
        "category": ["screw", "screw"],
        "dataset": ["mvtec", "mvtec"],
    }


def test_module_trains_every_learned_token_and_lowers_the_loss(backbone, images):
    module = make_module(backbone)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    prompt_params = {f"prompt.{n}" for n in ("normal_context", "anomaly_context", "text_deep", "vision_deep")}
    assert trainable == prompt_params | {f"head.patch_maps.{i}.{k}" for i in range(4) for k in ("weight", "bias")}
    assert set(module.state_dict()) == trainable
    optimizer = module.configure_optimizers()
    losses = train_on_batch(module, optimizer, batch_of(images), steps=4, check_gradients=True)
    assert losses[-1] < losses[0] - 1.0


def test_module_test_step_gives_class_maps_and_metrics(backbone, images):
    module = make_module(backbone).eval()
    module.evaluator.reset()
    with torch.no_grad():
        module.test_step(batch_of(images), 0)
        scores, text = module.score(module.extract_features(batch_of(images)))
    assert text.class_names == ("normal", *DEFECT_VOCABULARIES["mvtec_test"])  # the preset's MVTec test words
    assert scores.class_map.shape == (2, 64, 64) and int(scores.class_map.max()) <= 20
    assert any(key.endswith("image_auroc") for key in module.evaluator.compute().flat())


def test_a_batch_of_two_datasets_is_scored_with_each_ones_words(backbone, images):
    module = make_module(backbone).eval()
    module.evaluator.reset()
    batch = batch_of(torch.cat([images, images[:1]]))
    batch = {**batch, "mask": torch.cat([batch["mask"], batch["mask"][:1]]), "label": torch.tensor([1, 0, 1])}
    batch.update(defect_type=["scratch_head", "good", "hole"], category=["screw", "screw", "pcb1"])
    batch["dataset"] = ["mvtec", "mvtec", "visa"]  # the end of one target and the start of the next
    with torch.no_grad():
        parts = module.test_step(batch, 0)["parts"]
        alone = [module.score(module.extract_features(select(batch, keep)))[0] for keep in halves(3, 2)]
        predicted = module.predict_step(batch, 0)
    assert [part["class_names"] for part in parts] == [
        ("normal", *DEFECT_VOCABULARIES["mvtec_test"]),
        ("normal", *DEFECT_VOCABULARIES["visa"]),
    ]
    assert [part["batch"]["category"] for part in parts] == [["screw", "screw"], ["pcb1"]]
    for part, scores in zip(parts, alone, strict=True):
        torch.testing.assert_close(part["scores"].image_score, scores.image_score, rtol=0, atol=0)
    expected = torch.cat([scores.image_score for scores in alone])
    torch.testing.assert_close(predicted["image_score"], expected, rtol=0, atol=0)
    assert predicted["anomaly_map"].shape == (3, 64, 64)
    assert {key.split("/")[0] for key in module.evaluator.compute().flat() if not key.startswith("mean")} >= {
        "mvtec",
        "visa",
    }


def test_predict_and_detector_take_the_dataset_of_a_folder(backbone, images):
    detector = Detector(make_module(backbone))
    assert detector(images, dataset="visa").class_names == ("normal", *DEFECT_VOCABULARIES["visa"])
    assert detector(images).class_names == ("normal", *WORDS)  # no dataset named: the training words


def halves(size, first):
    """Boolean masks of the first ``first`` samples and of the rest."""
    head = torch.arange(size) < first
    return [head, ~head]


def test_reproduction_config_fits_and_prints_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSAD_CACHE_DIR", str(tmp_path / "cache"))
    configs = [ROOT / "configs" / c for c in ("backbone/tiny.yaml", "method/dapo.yaml", "data/synthetic.yaml")]
    args = [arg for path in [*configs, ROOT / "configs/trainer/smoke.yaml"] for arg in ("-c", str(path))]
    small = [
        "--model.prompt.init_args.prompt_count=2",  # keeps the CPU test short
        "--model.prompt.init_args.vocabulary=[scratch, hole, crack]",
        "--trainer.enable_progress_bar=false",
    ]
    main(["fit", *args, *small, "--trainer.max_steps=2"])  # visual tokens and maps sized from the tiny backbone
    assert (tmp_path / "runs" / "smoke" / "last.ckpt").is_file()
    with pytest.raises(SystemExit):
        main(["fit", *args, *small, "--print_config"])
    printed = capsys.readouterr().out
    assert "class_path: zsad.prompts.dapo.DAPOPrompt" in printed and "project_patches: false" in printed
    assert "${" not in printed and "vision_width: null" in printed  # sized from the backbone when built
