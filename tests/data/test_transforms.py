"""Tests for image/mask loading and the image/mask transforms (zsad.data.transforms)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zsad.data.transforms import OPENAI_MEAN, OPENAI_STD, ImageTransform, MaskTransform, load_mask, load_rgb
from zsad.errors import ConfigError, DataError


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _row(values: list, dtype: type, mode: str | None = None) -> Image.Image:
    """A 2-row image whose rows are both ``values`` (a 4 x 2 image for four values)."""
    array = np.array([values, values], dtype=dtype)
    return Image.fromarray(array, mode) if mode else Image.fromarray(array)


def _palette_image() -> Image.Image:
    image = Image.new("P", (4, 2))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])  # black, red, green, blue
    image.putdata([1, 2, 3, 0] * 2)
    return image


def _rgb_row(image: Image.Image) -> list[list[int]]:
    assert image.mode == "RGB"
    return np.asarray(image)[0].tolist()


# ------------------------------------------------------------------------------------------- load_rgb


def test_load_rgb_l(tmp_path: Path) -> None:
    out = load_rgb(_save(_row([0, 50, 128, 255], np.uint8), tmp_path / "l.png"))
    assert out.size == (4, 2)
    assert _rgb_row(out) == [[0, 0, 0], [50, 50, 50], [128, 128, 128], [255, 255, 255]]


def test_load_rgb_bilevel(tmp_path: Path) -> None:
    out = load_rgb(_save(_row([0, 1, 0, 1], bool), tmp_path / "one.png"))
    assert _rgb_row(out) == [[0, 0, 0], [255, 255, 255], [0, 0, 0], [255, 255, 255]]


def test_load_rgb_rgb_is_unchanged(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = load_rgb(_save(Image.fromarray(array), tmp_path / "rgb.png"))
    assert out.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(out), array)


def test_load_rgb_palette(tmp_path: Path) -> None:
    out = load_rgb(_save(_palette_image(), tmp_path / "p.png"))
    assert _rgb_row(out) == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("index.png", {"transparency": 1}),  # tRNS with one transparent index
        ("table.png", {"transparency": bytes([255, 0, 255, 255])}),  # tRNS alpha per palette entry
        ("index.gif", {"transparency": 1}),
    ],
)
def test_load_rgb_palette_with_transparency_goes_over_black(tmp_path: Path, name: str, kwargs: dict) -> None:
    path = _save(_palette_image(), tmp_path / name, **kwargs)
    assert Image.open(path).mode == "P"
    assert "transparency" in Image.open(path).info
    out = load_rgb(path)
    # index 1 (red) is fully transparent: black; the others are opaque and keep their colour
    assert _rgb_row(out) == [[0, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]]


def test_load_rgb_rgba_is_composited_over_black(tmp_path: Path) -> None:
    pixels = [[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128], [10, 20, 30, 255]]
    out = load_rgb(_save(_row(pixels, np.uint8, "RGBA"), tmp_path / "rgba.png"))
    assert out.size == (4, 2)
    assert _rgb_row(out) == [[200, 100, 50], [0, 0, 0], [100, 50, 25], [10, 20, 30]]


def test_load_rgb_la_is_composited_over_black(tmp_path: Path) -> None:
    pixels = [[200, 255], [200, 0], [200, 128], [0, 255]]
    out = load_rgb(_save(_row(pixels, np.uint8, "LA"), tmp_path / "la.png"))
    assert _rgb_row(out) == [[200, 200, 200], [0, 0, 0], [100, 100, 100], [0, 0, 0]]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_load_rgb_colour_key_transparency_goes_over_black(tmp_path: Path, mode: str) -> None:
    # a tRNS chunk on an L or RGB PNG marks one colour as transparent, like a transparent palette index
    colour = 50 if mode == "L" else (50, 50, 50)
    image = Image.fromarray(np.array([[0, 50, 128, 255]] * 2, np.uint8)).convert(mode)
    path = _save(image, tmp_path / f"{mode}.png", transparency=colour)
    assert Image.open(path).mode == mode
    assert _rgb_row(load_rgb(path)) == [[0, 0, 0], [0, 0, 0], [128, 128, 128], [255, 255, 255]]


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_load_rgb_cmyk(tmp_path: Path, suffix: str) -> None:
    path = _save(Image.new("CMYK", (6, 4), (0, 255, 255, 0)), tmp_path / f"cmyk{suffix}")
    assert Image.open(path).mode == "CMYK"
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.size == (6, 4)
    np.testing.assert_allclose(np.asarray(out, np.int16)[1, 1], [255, 0, 0], atol=2)


@pytest.mark.parametrize(("suffix", "dtype"), [(".png", "<u2"), (".tif", "<u2"), (".tif", ">u2")])
def test_load_rgb_16_bit_spans_full_range(tmp_path: Path, suffix: str, dtype: str) -> None:
    array = np.array([[1000, 2000, 17000, 41000]] * 2).astype(dtype)
    path = _save(Image.fromarray(array), tmp_path / f"i16{suffix}")
    assert Image.open(path).mode.startswith("I;16")
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.size == (4, 2)
    # min -> 0, max -> 255, linear in between (not a plain cut to the low byte, not a plain /257)
    assert [pixel[0] for pixel in _rgb_row(out)] == [0, 6, 102, 255]
    assert all(len(set(pixel)) == 1 for pixel in _rgb_row(out))


def test_load_rgb_32_bit_int(tmp_path: Path) -> None:
    path = _save(_row([-5, 0, 5, 10], np.int32), tmp_path / "i.tif")
    assert Image.open(path).mode == "I"
    assert _rgb_row(load_rgb(path)) == [[0, 0, 0], [85, 85, 85], [170, 170, 170], [255, 255, 255]]


def test_load_rgb_float(tmp_path: Path) -> None:
    path = _save(_row([-1.0, 0.0, 0.5, 1.0], np.float32), tmp_path / "f.tif")
    assert Image.open(path).mode == "F"
    assert [pixel[0] for pixel in _rgb_row(load_rgb(path))] == [0, 127, 191, 255]


def test_load_rgb_float_ignores_non_finite_values(tmp_path: Path) -> None:
    # one NaN must not turn the whole image black (NaN poisons min/max), nor warn about invalid casts
    path = _save(_row([np.nan, 0.0, 0.5, 1.0], np.float32), tmp_path / "nan.tif")
    with np.errstate(all="raise"):
        out = load_rgb(path)
    assert [pixel[0] for pixel in _rgb_row(out)] == [0, 0, 127, 255]


def test_load_rgb_constant_16_bit_image_does_not_divide_by_zero(tmp_path: Path) -> None:
    path = _save(Image.fromarray(np.full((3, 3), 40000, np.uint16)), tmp_path / "flat.png")
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert len(np.unique(np.asarray(out))) == 1


def test_load_rgb_accepts_str_path(tmp_path: Path) -> None:
    path = _save(_row([1, 2, 3, 4], np.uint8), tmp_path / "s.png")
    assert load_rgb(str(path)).mode == "RGB"


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png_bytes()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("half.png", PNG[: len(PNG) // 2]),
        ("header_only.png", PNG[:60]),
        ("random.png", np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()),
        ("empty.png", b""),
        ("text.jpg", b"this is not a JPEG"),
    ],
)
@pytest.mark.parametrize("loader", [load_rgb, load_mask])
def test_corrupt_files_raise_data_error_naming_the_file(tmp_path: Path, name: str, content: bytes, loader) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(name)) as info:
        loader(path)
    assert str(path) in str(info.value)
    assert "Replace or remove" in str(info.value)


@pytest.mark.parametrize("loader", [load_rgb, load_mask])
def test_missing_file_raises_data_error(tmp_path: Path, loader) -> None:
    with pytest.raises(DataError, match=r"nowhere\.png"):
        loader(tmp_path / "nowhere.png")


# ------------------------------------------------------------------------------------------ load_mask


def test_load_mask_threshold_0_keeps_mvtec_3d_values(tmp_path: Path) -> None:
    path = _save(_row([0, 253, 254, 255, 1, 0], np.uint8), tmp_path / "m.png")
    mask = load_mask(path, threshold=0)
    assert mask.mode == "L"
    assert mask.size == (6, 2)
    assert np.asarray(mask)[0].tolist() == [0, 255, 255, 255, 255, 0]


def test_load_mask_default_threshold_is_0(tmp_path: Path) -> None:
    path = _save(_row([0, 253], np.uint8), tmp_path / "m.png")
    assert np.asarray(load_mask(path))[0].tolist() == [0, 255]


def test_load_mask_threshold_127_splits_jpeg_noise(tmp_path: Path) -> None:
    low, high = np.arange(0, 41), np.arange(200, 256)  # JPEG ringing around 0 and 255
    values = np.concatenate([low, high]).astype(np.uint8)
    path = _save(Image.fromarray(np.stack([values, values])), tmp_path / "m.png")
    out = np.asarray(load_mask(path, threshold=127))[0]
    assert (out[: len(low)] == 0).all()
    assert (out[len(low) :] == 255).all()


def test_load_mask_real_jpeg_round_trip(tmp_path: Path) -> None:
    truth = np.zeros((32, 32), np.uint8)
    truth[8:24, 10:20] = 255
    path = _save(Image.fromarray(truth).convert("RGB"), tmp_path / "m.jpg", quality=60)
    decoded = np.asarray(Image.open(path).convert("L"))
    assert set(np.unique(decoded)) - {0, 255}, "the JPEG should have introduced intermediate values"
    np.testing.assert_array_equal(np.asarray(load_mask(path, threshold=127)), truth)


def test_load_mask_rgb_and_palette_masks(tmp_path: Path) -> None:
    rgb = _save(Image.new("RGB", (3, 3), (255, 255, 255)), tmp_path / "rgb.png")
    assert (np.asarray(load_mask(rgb)) == 255).all()
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.putdata([0, 1])
    assert np.asarray(load_mask(_save(palette, tmp_path / "p.png")))[0].tolist() == [0, 255]


# ------------------------------------------------------------------------------------- ImageTransform


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (10, 128, 240)])
def test_image_transform_normalises_a_constant_image(colour: tuple[int, int, int]) -> None:
    out = ImageTransform(32)(Image.new("RGB", (50, 20), colour))
    assert out.shape == (3, 32, 32)
    assert out.dtype == torch.float32
    expected = (torch.tensor(colour) / 255.0 - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    torch.testing.assert_close(out, expected.view(3, 1, 1).expand(3, 32, 32), atol=1e-5, rtol=0)


def test_image_transform_custom_mean_std() -> None:
    out = ImageTransform(8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(Image.new("RGB", (8, 8), (255, 0, 255)))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, -1.0, 1.0]))


def test_image_transform_default_is_bicubic() -> None:
    assert ImageTransform(32).interpolation.value == "bicubic"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    bicubic = ImageTransform(16)(image)
    reference = torch.from_numpy(np.asarray(image.resize((16, 16), Image.Resampling.BICUBIC), np.float32) / 255.0)
    reference = (reference.permute(2, 0, 1) - torch.tensor(OPENAI_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_STD).view(
        3, 1, 1
    )
    torch.testing.assert_close(bicubic, reference, atol=1e-5, rtol=0)
    assert not torch.allclose(bicubic, ImageTransform(16, "bilinear")(image))


def test_image_transform_squashes_non_square_images() -> None:
    # no aspect preservation: left half red, right half blue stays split down the middle
    array = np.zeros((30, 60, 3), np.uint8)
    array[:, :30, 0] = 255
    array[:, 30:, 2] = 255
    out = ImageTransform(16).denormalize(ImageTransform(16)(Image.fromarray(array)))
    assert out.shape == (3, 16, 16)
    assert (out[0, :, :7] > 0.95).all()
    assert (out[2, :, 9:] > 0.95).all()


def test_image_transform_rejects_unknown_interpolation() -> None:
    with pytest.raises(ConfigError, match="'cubic'") as info:
        ImageTransform(32, "cubic")
    assert "'bicubic'" in str(info.value)
    assert "'bilinear'" in str(info.value)


@pytest.mark.parametrize("batched", [False, True])
def test_denormalize_inverts_the_transform(batched: bool) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    transform = ImageTransform(32)  # same size: no resize error at all
    images = transform(Image.fromarray(array))
    if batched:
        images = images.expand(2, 3, 32, 32)
    restored = transform.denormalize(images)
    assert restored.shape == images.shape
    expected = torch.from_numpy(array).permute(2, 0, 1).float() / 255.0
    torch.testing.assert_close(restored.reshape(-1, 3, 32, 32)[0], expected, atol=1e-5, rtol=0)


def test_denormalize_after_resize_is_close_and_clamped() -> None:
    y, x = np.mgrid[0:64, 0:64]
    smooth = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)  # gentle ramps survive resizing
    transform = ImageTransform(32)
    restored = transform.denormalize(transform(Image.fromarray(smooth)))
    assert restored.min() >= 0.0
    assert restored.max() <= 1.0
    expected = torch.from_numpy(np.array(Image.fromarray(smooth).resize((32, 32), Image.Resampling.BOX)))
    expected = expected.permute(2, 0, 1).float() / 255.0
    assert (restored - expected).abs().max() < 0.03


# -------------------------------------------------------------------------------------- MaskTransform


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (127, 0.0), (128, 1.0), (255, 1.0)])
def test_mask_transform_thresholds_at_one_half(value: int, expected: float) -> None:
    # a constant mask keeps its value through any resize: 127/255 = 0.498 is normal, 128/255 = 0.502 anomalous
    out = MaskTransform(4)(Image.new("L", (9, 9), value))
    assert out.shape == (1, 4, 4)
    assert out.dtype == torch.float32
    assert (out == expected).all()


def test_mask_transform_upsampling_cuts_where_interpolation_crosses_one_half() -> None:
    # 2 x 2 -> 8 x 8, left column anomalous. Output column j samples input x = (j + 0.5) / 4 - 0.5, so bilinear
    # gives 255, 255, 223, 159 (just above half), 96 (just below), 32, 0, 0 along each row
    mask = np.zeros((2, 2), np.uint8)
    mask[:, 0] = 255
    out = MaskTransform(8)(Image.fromarray(mask))
    assert out.shape == (1, 8, 8)
    assert out[0, 0].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert (out[0] == out[0, :1]).all()


def test_mask_transform_downsampling_is_bilinear_not_nearest() -> None:
    # one anomalous column in 8 px weighs 0.25 in the bilinear (triangle) filter: it vanishes at 2 px,
    # whereas nearest-neighbour sampling would hit it and keep a whole anomalous column
    thin = np.zeros((8, 8), np.uint8)
    thin[:, 2] = 255
    assert (MaskTransform(2)(Image.fromarray(thin)) == 0).all()
    thick = np.zeros((8, 8), np.uint8)
    thick[:, :3] = 255  # weight 2.375 / 3.5 = 0.68
    assert MaskTransform(2)(Image.fromarray(thick))[0].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_mask_transform_output_is_binary_for_a_random_mask() -> None:
    mask = (np.random.default_rng(0).random((37, 37)) > 0.5).astype(np.uint8) * 255
    out = MaskTransform(16)(Image.fromarray(mask))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
