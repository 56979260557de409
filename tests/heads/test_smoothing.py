"""Gaussian smoothing of anomaly maps: scipy's ``reflect`` border (official) and torch's (the other option).

The official AnomalyCLIP, CoPS and ViP2-CLIP code smooths with ``scipy.ndimage.gaussian_filter(map, sigma,
mode="reflect", truncate=4)`` on float32 maps (methods.md §1 "Smoothing"): the reference here is scipy itself.
"""

from __future__ import annotations

import inspect
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from head_inputs import random_features
from scipy.ndimage import gaussian_filter
from torchvision.transforms.functional import gaussian_blur

from zsad.errors import ConfigError
from zsad.heads import DualBranchHead, MultiClassHead, SAGAHead, TopKHead, WindowHead
from zsad.heads.maps import gaussian_smooth
from zsad.structures import TextFeatures

# (height, width), sigma: the official sizes, a small map, and maps shorter than the kernel radius on some axis
# (sigma 4 has radius 16, sigma 8 radius 32), where scipy reflects the line again and again.
CASES = [
    ((518, 518), 4.0),
    ((518, 518), 8.0),
    ((64, 64), 4.0),
    ((64, 64), 8.0),
    ((37, 20), 8.0),
    ((5, 3), 4.0),
    ((1, 7), 2.0),
    ((1, 1), 3.0),
    ((40, 3), 1.3),
    ((17, 33), 0.1),  # radius 0: the identity
]


def random_maps(shape: tuple[int, int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """float32 maps in [0, 4): the range of AnomalyCLIP's sum of four layer maps."""
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed)) * 4


def scipy_smooth(maps: torch.Tensor, sigma: float, mode: str) -> np.ndarray:
    return np.stack([gaussian_filter(m.numpy(), sigma, mode=mode, truncate=4.0) for m in maps])


def earlier_torch_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """zsad's smoothing before the border option: torchvision's blur, radius cut to fit the map."""
    radius = min(int(4.0 * sigma + 0.5), min(maps.shape[-2:]) - 1)
    size = 2 * radius + 1
    return gaussian_blur(maps.unsqueeze(1), kernel_size=[size, size], sigma=[sigma, sigma]).squeeze(1)


@pytest.mark.parametrize(("shape", "sigma"), CASES, ids=lambda c: str(c))
def test_symmetric_border_equals_scipy_reflect_on_every_pixel(shape, sigma):
    maps = random_maps(shape)
    ours = gaussian_smooth(maps, sigma)  # "symmetric" is the default
    assert ours.dtype == torch.float32 and ours.shape == maps.shape
    reference = scipy_smooth(maps, sigma, "reflect")
    assert reference.dtype == np.float32
    assert np.abs(ours.numpy() - reference).max() <= 1e-6


@pytest.mark.parametrize(("shape", "sigma"), CASES, ids=lambda c: str(c))
def test_reflect_border_reproduces_the_earlier_blur(shape, sigma):
    maps = random_maps(shape, seed=1)
    assert torch.equal(gaussian_smooth(maps, sigma, "reflect"), earlier_torch_blur(maps, sigma))


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_reflect_border_is_scipys_mirror(sigma):
    maps = torch.rand(2, 48, 40, generator=torch.Generator().manual_seed(1))  # larger than the kernel
    ours = gaussian_smooth(maps, sigma, "reflect").numpy()
    np.testing.assert_allclose(ours, scipy_smooth(maps.double(), sigma, "mirror"), atol=1e-5)


def test_borders_differ_only_within_the_kernel_radius_of_the_edge():
    maps, sigma, radius = random_maps((80, 72)), 4.0, 16
    symmetric, reflect = gaussian_smooth(maps, sigma), gaussian_smooth(maps, sigma, "reflect")
    inner = (slice(None), slice(radius, -radius), slice(radius, -radius))
    # inside, only torchvision's fp32 kernel and convolution differ from scipy's float64 ones (values up to 4)
    torch.testing.assert_close(symmetric[inner], reflect[inner], atol=1e-5, rtol=0)
    assert (symmetric - reflect).abs().max() > 1e-3  # at the border, the edge pixel counts twice or once


def test_maps_are_smoothed_independently_in_a_batch():
    maps = random_maps((30, 50), batch=3)
    batched = gaussian_smooth(maps, 4.0)
    for index in range(3):
        assert torch.equal(batched[index], gaussian_smooth(maps[index : index + 1], 4.0)[0])


@pytest.mark.parametrize("border", ["symmetric", "reflect"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_fp32_under_autocast(border, dtype):
    maps = random_maps((24, 20)).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        smoothed = gaussian_smooth(maps, 2.0, border)
    assert smoothed.dtype == torch.float32
    assert torch.equal(smoothed, gaussian_smooth(maps.float(), 2.0, border))


def test_sigma_zero_and_unknown_border():
    maps = random_maps((8, 8))
    assert gaussian_smooth(maps, 0.0) is maps
    with pytest.raises(ConfigError, match="smoothing_border='zero' is unknown"):
        gaussian_smooth(maps, 1.0, "zero")


# ---------------------------------------------------------------- the heads' option
SMOOTHING_HEADS = [DualBranchHead, TopKHead, SAGAHead, MultiClassHead, WindowHead]


@pytest.mark.parametrize("head_class", SMOOTHING_HEADS, ids=lambda c: c.__name__)
def test_every_smoothing_head_declares_the_border_for_the_cli(head_class):
    parameter = inspect.signature(head_class.__init__).parameters["smoothing_border"]
    assert parameter.default == "symmetric"
    annotation = typing.get_type_hints(head_class.__init__)["smoothing_border"]
    assert set(typing.get_args(annotation)) == {"symmetric", "reflect"}
    assert "smoothing_border:" in inspect.getdoc(head_class)
    assert head_class(smoothing_border="reflect").smoothing_border == "reflect"
    with pytest.raises(ConfigError, match="smoothing_border='edge' is unknown"):
        head_class(smoothing_border="edge")


def head_inputs(classes: int = 2) -> tuple:
    g = torch.Generator().manual_seed(0)
    features = random_features(g, 2, (4, 4), 8, layers=(6, 12))
    text = F.normalize(torch.randn(1, classes, 8, generator=g), dim=-1)
    names = ("normal", *(f"defect{i}" for i in range(1, classes)))
    return features, TextFeatures(embeddings=text, class_names=names)


HEADS_WITH_INPUTS = {
    "dual_branch": (lambda **kw: DualBranchHead(**kw), 2),
    "topk": (lambda **kw: TopKHead(k=3, **kw), 2),
    "saga": (lambda **kw: SAGAHead(spatial_weighting=False, neighbor_kernel=3, **kw), 2),
    "multiclass": (lambda **kw: MultiClassHead(linear_maps=False, **kw), 3),
}


@pytest.mark.parametrize("border", ["symmetric", "reflect"])
@pytest.mark.parametrize("name", list(HEADS_WITH_INPUTS))
def test_heads_smooth_their_evaluation_map_with_the_chosen_border(name, border):
    make, classes = HEADS_WITH_INPUTS[name]
    features, text = head_inputs(classes)
    raw = make(sigma=0.0).eval()(features, text, (40, 36)).anomaly_map
    smoothed = make(sigma=4.0, smoothing_border=border).eval()(features, text, (40, 36)).anomaly_map
    assert torch.equal(smoothed, gaussian_smooth(raw, 4.0, border))
    training = make(sigma=4.0, smoothing_border=border).train()(features, text, (40, 36)).anomaly_map
    if name != "saga":  # SAGA's training map is unweighted, so it differs from the raw evaluation map
        assert torch.equal(training, raw)  # no smoothing in training
