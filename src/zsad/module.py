"""``ZSADModule``: backbone -> prompt synthesizer -> scoring head -> losses, as one LightningModule."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import lightning as L  # noqa: N812
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from zsad import __version__
from zsad.backbones.base import Backbone
from zsad.checkpoints.provenance import PROVENANCE_KEY, fit_provenance, run_seed
from zsad.components import build
from zsad.data.batch import batch_size, dataset_runs, split_valid
from zsad.errors import CheckpointError, ConfigError
from zsad.features import CacheMode, FeatureCache, FeatureCacheSettings, open_training_cache
from zsad.heads.base import ScoringHead
from zsad.losses.base import Loss
from zsad.metrics.evaluator import Evaluator, Resolution
from zsad.metrics.pixel_state import PIXEL_METRIC_NAMES
from zsad.metrics.results import Results
from zsad.prompts.base import PromptSynthesizer
from zsad.structures import Features, Scores, TextFeatures

logger = logging.getLogger(__name__)
# The frozen backbone stays in eval mode on purpose (see Backbone.train).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

FROZEN_PREFIX = "backbone."


def object_name(category: str) -> str:
    """Category folder name to words for prompts: ``"metal_nut"`` -> ``"metal nut"``."""
    return category.replace("_", " ").strip()


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam with lr 1e-3 and betas (0.5, 0.999), the setting of AnomalyCLIP, CoPS and DAPO."""
    return torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))


class ZSADModule(L.LightningModule):
    """Composes registered parts into a trainable zero-shot anomaly detector.

    Methods never see raw images: :meth:`extract_features` is the one place where images become
    :class:`~zsad.structures.Features`, and a batch that already carries ``"features"`` (a feature cache) skips
    the backbone entirely.

    Only the trainable parts are optimised and checkpointed; the frozen backbone is rebuilt from its spec.

    Args:
        backbone: Frozen backbone (or its spec).
        prompt: Prompt synthesizer (or its spec).
        head: Scoring head (or its spec).
        losses: Weighted losses; their sum (plus any ``aux_losses`` of the synthesizer) is minimised.
        optimizer: Callable that builds the optimizer from the trainable parameters.
        max_pictures: How many test images per category keep their maps for pictures (0 keeps none), normal and
            anomalous mixed (:mod:`zsad.viz.selection`); the ``AnomalyMapPictures`` callback raises it for a test.
        pixel_metrics: Pixel metrics to compute (both AUPRO variants by default); empty for image metrics only.
        metric_resolution: ``"eval"`` (square evaluation size, as the reference repositories) or ``"native"``
            (each image's own size).
        feature_cache: Training feature cache (docs/caching.md): ``"auto"`` (memory when the features cannot
            change, else off), ``"memory"``, ``"disk"`` or ``"off"``.
        feature_cache_dir: Root folder of disk caches (default ``$ZSAD_CACHE_DIR/features``).
        feature_cache_fp16: Store cached features as float16 (replayed in the backbone's dtype).
    """

    def __init__(
        self,
        backbone: Backbone,
        prompt: PromptSynthesizer,
        head: ScoringHead,
        losses: Sequence[Loss] | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        max_pictures: int = 0,
        pixel_metrics: Sequence[str] = PIXEL_METRIC_NAMES,
        metric_resolution: Resolution = "eval",
        feature_cache: CacheMode = "auto",
        feature_cache_dir: str | None = None,
        feature_cache_fp16: bool = False,
    ) -> None:
        super().__init__()
        self.backbone: Backbone = build(backbone)
        self.prompt: PromptSynthesizer = build(prompt)
        self.head: ScoringHead = build(head)
        self.losses = nn.ModuleList(build(list(losses or [])))
        self.optimizer_factory = optimizer
        self.max_pictures = max_pictures
        self.pixel_metrics = list(pixel_metrics)
        self.metric_resolution = metric_resolution
        self.prompt.setup_backbone(self.backbone)
        self.head.setup_backbone(self.backbone)
        self.prompt.setup(self.backbone.text)
        self.feature_cache = FeatureCacheSettings(feature_cache, feature_cache_dir, feature_cache_fp16)
        self.feature_cache.check_prompt(self.prompt)
        self.training_cache: FeatureCache | None = None
        # what results.json records under "checkpoint": set by `zsad test` and zsad.load (a checkpoint_record, or
        # "untrained" on request); None for a training-free model
        self.evaluated_checkpoint: dict[str, Any] | str | None = None
        self.training_provenance: dict[str, Any] | None = None
        self.save_hyperparameters(self.component_specs(), ignore=["optimizer"])
        self.evaluator = Evaluator(self.pixel_metrics, resolution=metric_resolution)
        self.register_state_dict_post_hook(_drop_frozen_state)
        self.register_load_state_dict_post_hook(_ignore_missing_frozen_state)

    def component_specs(self) -> dict[str, Any]:
        """Plain-data specs of every component: what checkpoints store as hyper-parameters."""
        return {
            "backbone": self.backbone.spec(),
            "prompt": self.prompt.spec(),
            "head": self.head.spec(),
            "losses": [loss.spec() for loss in self.losses],
            "max_pictures": self.max_pictures,
            "pixel_metrics": self.pixel_metrics,
            "metric_resolution": self.metric_resolution,
        }

    # ---------------------------------------------------------------- forward
    def extract_features(self, batch: dict[str, Any], cache: FeatureCache | None = None) -> Features:
        """Backbone features of a batch; replays ``batch["features"]`` when a cache supplied them.

        ``cache`` (training only) replays the features of images it has seen and stores those it has not.

        The frozen backbone runs without autograd, unless the prompt synthesizer feeds learned tokens into the
        image tower (DAPO): then gradients must flow through it to those tokens.
        """
        features = batch.get("features")
        vision_prompts = self.prompt.vision_prompts()
        if features is not None and vision_prompts is not None:
            raise ConfigError(
                f"{type(self.prompt).__name__} feeds learned tokens into the image tower, so cached backbone "
                "features would silently skip them. Turn the feature cache off for this method."
            )
        if features is None:
            if vision_prompts is not None:
                features = self.backbone(batch["image"], deep_prompts=vision_prompts)
            elif cache is not None:
                features = cache.features(batch, self.backbone)
            else:
                with torch.no_grad():
                    features = self.backbone(batch["image"])
        if "category" in batch and features.class_names is None:
            features = replace(features, class_names=tuple(object_name(c) for c in batch["category"]))
        if "dataset" in batch and features.datasets is None:
            features = replace(features, datasets=tuple(batch["dataset"]))
        return features

    def forward(self, images: Tensor) -> Scores:
        """Score normalised images ``[B, 3, H, W]``."""
        return self.score(self.extract_features({"image": images}))[0]

    def score(self, features: Features) -> tuple[Scores, TextFeatures]:
        """Run prompt synthesizer and head on features (image-independent prompts are encoded once per evaluation)."""
        text = self.prompt.synthesize(features, self.backbone.text)
        return self.head(features, text, self.backbone.image_size), text

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        """One optimisation step; logs each loss term. Unreadable samples (``on_bad_image: skip``) are dropped."""
        batch, skipped = split_valid(batch)
        for path, problem in skipped:
            logger.warning("Skipped training image %s: %s", path, problem)
        if batch_size(batch) == 0:
            return self._nothing_to_train()
        scores, text = self.score(self.extract_features(batch, cache=self.training_cache))
        check_terms_consumed(text, self.losses)
        terms = {type(loss).__name__: loss(scores, batch, text) for loss in self.losses}
        if not terms:
            raise ConfigError("The model has no losses to train; give `losses` (e.g. image_ce, focal, dice).")
        total = torch.stack([t.float() for t in terms.values()]).sum()
        size = batch_size(batch)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        return total

    def _nothing_to_train(self) -> Tensor | None:
        """The step of a batch whose every image was unreadable: skipped, except under several processes.

        DDP averages gradients across processes in backward, so every process must run backward at every step (and
        Lightning refuses a skipped step there). Such a process returns a zero loss that reaches every trainable
        parameter: it adds zero gradients, and the step then follows the other processes' images.
        """
        if self._trainer is None or self.trainer.world_size == 1:
            return None
        trainable = [parameter.sum() for parameter in self.parameters() if parameter.requires_grad]
        return torch.stack(trainable).sum() * 0.0

    def on_train_start(self) -> None:
        """Open the training feature cache (or log why it stays off); note what trains, for the checkpoints."""
        self.training_cache = open_training_cache(self.feature_cache, self.prompt, self.trainer.train_dataloader)
        datamodule = getattr(self.trainer, "datamodule", None)
        protocol = datamodule.protocol() if hasattr(datamodule, "protocol") else None
        self.training_provenance = fit_provenance(protocol, self.component_specs(), run_seed())

    def on_train_end(self) -> None:
        """Release the cached training features."""
        if self.training_cache is not None:
            self.training_cache.close()
            self.training_cache = None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Optimizer over the trainable parameters only, with each component's learning-rate scales applied.

        A component may set ``lr_scales = {"submodule": 0.01}`` (ViP2's FGP trains at 1/100 of the main rate); the
        optimizer is built with the configured rate, then each group's rate is multiplied by its scale.
        """
        groups = parameter_groups({"prompt": self.prompt, "head": self.head, "losses": self.losses})
        if not groups:
            raise ConfigError(
                f"{type(self.prompt).__name__} with {type(self.head).__name__} has no trainable parameters; "
                "use `zsad test` directly (training-free method)."
            )
        optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)
        return optimizer

    # ---------------------------------------------------------------- evaluation
    def on_test_epoch_start(self) -> None:
        """Start a fresh evaluation over the datamodule's target categories, with freshly encoded prompts."""
        self.prompt.prompt_cache.clear()
        self.evaluator.reset(self._target_groups())

    def _target_groups(self) -> list[tuple[str, str]] | None:
        """(dataset, category) of every sample the running loop will see, so that every process numbers them alike.

        Read from the active loaders' datasets (each process holds the whole dataset; only the sampler splits it).
        """
        loaders = self.trainer.test_dataloaders if self.trainer.testing else self.trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        records = [r for loader in loaders if loader is not None for r in getattr(loader.dataset, "records", [])]
        return sorted({(r.dataset, r.category) for r in records}) or None

    on_validation_epoch_start = on_test_epoch_start

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """Score a batch and add it to the per-category evaluation; unreadable samples are listed, not scored.

        Returns the scores with the scored (readable) part of the batch and the class names, for callbacks'
        ``on_test_batch_end`` (the results writer saves raw maps from them); ``None`` when nothing was readable.
        """
        batch, skipped = split_valid(batch)
        self.evaluator.skip(skipped)
        if batch_size(batch) == 0:
            return None
        scored = []
        for part in self._prompt_parts(batch):
            scores, text = self.score(self.extract_features(part))
            self.evaluator.update(scores, part, keep_pictures=self.max_pictures, class_names=text.class_names)
            scored.append({"scores": scores, "batch": part, "class_names": text.class_names})
        return scored[0] if len(scored) == 1 else {"parts": scored}

    def _prompt_parts(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The batch, or its runs of one dataset each when prompts or head follow the dataset (DAPO, CoPS presets).

        A loader over several target datasets can put the end of one and the start of the next in one batch; the
        runs keep the batch's order.
        """
        if not (self.prompt.reads_dataset or self.head.reads_dataset) or "dataset" not in batch:
            return [batch]
        return dataset_runs(batch)

    validation_step = test_step

    def on_test_epoch_end(self) -> None:
        """Compute per-category and mean metrics; keep them as ``test_results``."""
        self.test_results = self._log_results("test")

    def on_validation_epoch_end(self) -> None:
        """Same as test, logged under ``val/``."""
        self._log_results("val")

    def _log_results(self, stage: str) -> Results:
        """Mean metrics go to the progress table; per-category ones only to the logger (and results.json)."""
        results = self.evaluator.compute()
        for name, value in results.mean.items():
            self.log(f"{stage}/mean/{name}", value)
        if self.logger is not None:
            per_category = {k: v for k, v in results.flat().items() if not k.startswith("mean/")}
            self.logger.log_metrics({f"{stage}/{k}": v for k, v in per_category.items()}, step=self.global_step)
        return results

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Image scores and anomaly maps of a batch."""
        parts = [self.score(self.extract_features(part))[0] for part in self._prompt_parts(batch)]
        return {
            "path": batch.get("path"),
            "image_score": torch.cat([scores.image_score for scores in parts]),
            "anomaly_map": torch.cat([scores.anomaly_map for scores in parts]),
        }

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the zsad version and backbone (compatibility checks) and the provenance (leakage checks)."""
        provenance = self.training_provenance or fit_provenance(None, self.component_specs(), run_seed())
        checkpoint["zsad"] = {"version": __version__, "backbone": self.backbone.spec(), PROVENANCE_KEY: provenance}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose trainable parameters do not match this model."""
        expected = set(self.state_dict())
        found = set(checkpoint.get("state_dict", {}))
        if expected != found:
            missing, unexpected = sorted(expected - found), sorted(found - expected)
            raise CheckpointError(
                f"The checkpoint does not fit this model (missing {missing[:5]}, unexpected {unexpected[:5]}). "
                f"It was saved with components {checkpoint.get('hyper_parameters', {}).get('prompt')}; "
                f"load it with ZSADModule.load_from_checkpoint(path) or the same config."
            )


def check_terms_consumed(text: TextFeatures, losses: Iterable[Loss]) -> None:
    """Refuse synthesizer loss terms that no configured loss weights: they would be silently ignored."""
    consumed = {name for loss in losses for name in loss.consumes}
    unused = sorted(set(text.terms) - consumed)
    if unused:
        raise ConfigError(
            f"The prompt synthesizer computes the loss terms {unused}, but no configured loss uses them. Add the "
            f"matching losses (see `zsad list`), or disable those terms in the synthesizer's options."
        )


def trainable_parameters(module: ZSADModule) -> list[nn.Parameter]:
    """The parameters a fit would train: those of the prompt synthesizer, the head and the losses."""
    parts = (module.prompt, module.head, module.losses)
    return [parameter for part in parts for parameter in part.parameters() if parameter.requires_grad]


def has_trainable_parameters(module: ZSADModule) -> bool:
    """Whether the model has anything to train (``False`` for training-free methods such as WinCLIP)."""
    return bool(trainable_parameters(module))


def count_trainable(module: ZSADModule) -> int:
    """Number of trainable scalars."""
    return sum(parameter.numel() for parameter in trainable_parameters(module))


def parameter_groups(components: dict[str, nn.Module]) -> list[dict[str, Any]]:
    """Trainable parameters in optimizer groups: one per learning-rate scale found in ``lr_scales``."""
    scaled: dict[float, list[nn.Parameter]] = {}
    for component in components.values():
        scales: dict[str, float] = getattr(component, "lr_scales", {})
        for name, parameter in component.named_parameters():
            if parameter.requires_grad:
                scale = next((s for prefix, s in scales.items() if name.startswith(prefix + ".")), 1.0)
                scaled.setdefault(scale, []).append(parameter)
    return [{"params": params, "lr_scale": scale} for scale, params in scaled.items()]


def _drop_frozen_state(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, local_metadata: Any) -> None:
    """The frozen backbone is rebuilt from its spec, so its weights never go into checkpoints."""
    for key in [k for k in state_dict if k.startswith(prefix + FROZEN_PREFIX)]:
        del state_dict[key]


def _ignore_missing_frozen_state(module: nn.Module, incompatible_keys: Any) -> None:
    """Loading a zsad state dict must not complain about the backbone weights it deliberately omits."""
    missing = incompatible_keys.missing_keys
    missing[:] = [key for key in missing if not key.startswith(FROZEN_PREFIX)]
