"""A loaded model as a callable: images in (paths, PIL images or a tensor batch), scores and maps out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import Tensor

from zsad.data.transforms import ImageTransform, load_rgb
from zsad.errors import ConfigError, DataError
from zsad.module import ZSADModule

ImageSource = str | Path | Image.Image
ImageInput = ImageSource | Sequence[ImageSource] | Tensor
"""What a :class:`Detector` accepts: a path, a PIL image, a list of either, or a normalised float tensor batch."""

Size = tuple[int, int]
"""Height and width."""

NO_DEFECT_TYPE = "none"
"""Image-level defect type of an image whose class map marks no pixel as a defect."""


@dataclass
class Prediction:
    """What a :class:`Detector` gives for N images.

    Attributes:
        image_scores: ``[N]`` anomaly scores.
        anomaly_maps: ``[N, H, W]`` anomaly maps at each input image's own size; a list of ``[H_i, W_i]`` maps when
            the images differ in size. ``anomaly_maps[i]`` works either way.
        defect_types: Per-pixel defect class index (0 normal, ``i`` is ``class_names[i]``), laid out like
            ``anomaly_maps``, for heads that give a class map (DAPO); ``None`` otherwise.
        class_names: Names of the class indices of ``defect_types`` (``("normal", *defect words)``), or ``None``.
    """

    image_scores: Tensor
    anomaly_maps: Tensor | list[Tensor]
    defect_types: Tensor | list[Tensor] | None = None
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.image_scores)

    def defect_type(self, index: int) -> str | None:
        """Image-level defect type: the most frequent defect class among the pixels of image ``index``.

        ``"none"`` when no pixel has a defect class; ``None`` without class maps (heads other than DAPO's).
        """
        if self.defect_types is None:
            return None
        classes = self.defect_types[index].flatten()
        classes = classes[classes > 0]
        if not classes.numel():
            return NO_DEFECT_TYPE
        winner = int(torch.bincount(classes).argmax())
        return self.class_names[winner] if self.class_names and winner < len(self.class_names) else str(winner)


def stack_if_same_size(maps: list[Tensor]) -> Tensor | list[Tensor]:
    """One ``[N, H, W]`` tensor when every map has the same size, else the list."""
    return torch.stack(maps) if maps and len({tuple(m.shape) for m in maps}) == 1 else maps


def resize_maps(maps: Tensor, size: Size, nearest: bool = False) -> Tensor:
    """Resize ``[B, H, W]`` maps (bilinear, or nearest for class indices) to ``size``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if nearest:
        return F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0].to(maps.dtype)
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def as_pil(source: ImageSource) -> Image.Image:
    """A path (read with :func:`~zsad.data.transforms.load_rgb`, any mode) or a PIL image, as RGB."""
    return source.convert("RGB") if isinstance(source, Image.Image) else load_rgb(source)


def chunks(count: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` items covering ``range(count)``."""
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


class Detector:
    """A :class:`~zsad.module.ZSADModule` in eval mode with its preprocessing, ready to score images.

    Args:
        module: The model (trained, or a training-free method).
        device: Where to run.
        batch_size: Images per forward pass.
        interpolation: Resize interpolation of the preprocessing (bicubic, as the datamodules).

    Raises:
        ConfigError: A non-square backbone input size or a batch size below 1.
    """

    def __init__(
        self,
        module: ZSADModule,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        interpolation: str = "bicubic",
    ) -> None:
        height, width = module.backbone.image_size
        if height != width:
            raise ConfigError(f"The backbone's input size {height} x {width} is not square; zsad resizes to squares.")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be at least 1.")
        self.module = module.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.transform = ImageTransform(height, interpolation)

    @property
    def image_size(self) -> int:
        """Side of the square images the backbone takes."""
        return self.transform.size

    @torch.no_grad()
    def score_batch(
        self, images: Tensor, class_name: str | None = None, dataset: str | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None, tuple]:
        """Score normalised ``[B, 3, S, S]`` images at the backbone's size (see :meth:`__call__` for the names).

        Returns:
            ``(image_scores [B], anomaly_maps [B, S, S], class_map [B, S, S] or None, class names)``, on the CPU.
        """
        batch: dict = {"image": images.to(self.device)}
        if class_name is not None:  # object name for prompts that use it (WinCLIP)
            batch["category"] = [class_name] * images.shape[0]
        if dataset is not None:  # dataset name for prompts whose words follow it (DAPO's by_dataset test words)
            batch["dataset"] = [dataset] * images.shape[0]
        scores, text = self.module.score(self.module.extract_features(batch))
        class_map = scores.class_map.cpu() if scores.class_map is not None else None
        return scores.image_score.float().cpu(), scores.anomaly_map.float().cpu(), class_map, text.class_names

    def __call__(self, images: ImageInput, class_name: str | None = None, dataset: str | None = None) -> Prediction:
        """Score images.

        Args:
            images: An image path, a PIL image, a list of either, or a float tensor ``[N, 3, H, W]`` (or
                ``[3, H, W]``) already normalised like :class:`~zsad.data.transforms.ImageTransform` does (OpenAI CLIP
                mean and std). Paths and PIL images are preprocessed here; tensors of another size than the
                backbone's are resized (bicubic).
            class_name: Object name for methods whose prompts name the object (WinCLIP: e.g. ``"bottle"``);
                ``None`` uses the method's default.
            dataset: The benchmark the images come from (zsad's name, e.g. ``"visa"``), for prompts whose words
                follow it (DAPO's ``test_vocabulary: by_dataset``); ``None``: unknown (DAPO: the training words).

        Returns:
            A :class:`Prediction` with maps at each input's own size.

        Raises:
            DataError: An unreadable image file, or a tensor that is not a float image batch.
        """
        batches = self._tensor_batches(images) if isinstance(images, Tensor) else self._image_batches(images)
        scores, maps, class_maps, names = [], [], [], None
        for batch, sizes in batches:
            batch_scores, batch_maps, batch_classes, names = self.score_batch(batch, class_name, dataset)
            scores.append(batch_scores)
            for index, size in enumerate(sizes):  # maps back to each input's own size
                maps.append(resize_maps(batch_maps[index : index + 1], size)[0])
                if batch_classes is not None:
                    class_maps.append(resize_maps(batch_classes[index : index + 1], size, nearest=True)[0])
        return Prediction(
            image_scores=torch.cat(scores),
            anomaly_maps=stack_if_same_size(maps),
            defect_types=stack_if_same_size(class_maps) if class_maps else None,
            class_names=names if class_maps else None,
        )

    def _image_batches(self, images: ImageSource | Sequence[ImageSource]) -> Iterator[tuple[Tensor, list[Size]]]:
        """Preprocessed batches of paths or PIL images (read one batch at a time), with the original sizes."""
        sources = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
        if not sources:
            raise DataError("No images to score: the list is empty.")
        for part in chunks(len(sources), self.batch_size):
            pictures = [as_pil(source) for source in sources[part]]
            yield torch.stack([self.transform(p) for p in pictures]), [(p.height, p.width) for p in pictures]

    def _tensor_batches(self, images: Tensor) -> Iterator[tuple[Tensor, list[Size]]]:
        """Batches of a normalised tensor, resized to the backbone's size when needed, with the original size."""
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point() or not len(images):
            raise DataError(
                f"Expected a float image batch [N, 3, H, W] normalised with the CLIP mean and std, got a "
                f"{images.dtype} tensor of shape {tuple(images.shape)}. Pass paths or PIL images to have them "
                "preprocessed."
            )
        size: Size = (images.shape[-2], images.shape[-1])
        side = self.image_size
        for part in chunks(images.shape[0], self.batch_size):
            batch = images[part].float()
            if size != (side, side):
                batch = F.interpolate(batch, size=(side, side), mode="bicubic", align_corners=False)
            yield batch, [size] * batch.shape[0]
