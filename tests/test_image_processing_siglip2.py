"""SigLIP2 NaFlex image processor parity with transformers' PIL backend (the reference without torchvision).

Real photos from tests/fixtures at several patch budgets, extreme aspect ratios and images smaller than one
patch: pixel values within 1e-6, identical masks and spatial shapes. The batched torch variant is checked for
its documented deviation (at most one 8-bit level after resizing) and its identical shapes and masks.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from siglip.batch import BatchFeature
from siglip.image.processing_siglip2 import (
    Siglip2ImageProcessor,
    Siglip2ImageProcessorFast,
    get_image_size_for_max_num_patches,
)

transformers = pytest.importorskip("transformers")

from conftest import FIXTURES  # noqa: E402

RGB_PHOTOS = [
    "chelsea.png",
    "astronaut.png",
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
]
ONE_LEVEL = 2 / 255  # one 8-bit level after rescale 1/255 and normalise with std 0.5


def reference_processor(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

        return Siglip2ImageProcessorPil(**kwargs)


def photo(name: str) -> Image.Image:
    with Image.open(FIXTURES / name) as image:
        return image.convert("RGB")


def odd_images() -> dict[str, Image.Image]:
    """Extreme aspect ratios and sub-patch sizes, cut from real photos."""
    astronaut, coffee = photo("astronaut.png"), photo("coffee.png")
    return {
        "1:8": astronaut.crop((0, 0, 64, 512)),
        "8:1": coffee.crop((0, 100, 600, 175)),
        "1:20": astronaut.crop((200, 0, 225, 500)),
        "tiny_5x7": coffee.crop((300, 200, 305, 207)),
        "tiny_1x1": coffee.crop((10, 10, 11, 11)),
        "tiny_15x16": astronaut.crop((100, 100, 115, 116)),
        "exact_patch_grid": astronaut.crop((0, 0, 256, 128)),
    }


def assert_matches_reference(ours: BatchFeature, expected, atol: float = 1e-6) -> None:
    assert ours["pixel_values"].shape == expected["pixel_values"].shape
    assert ours["pixel_values"].dtype == torch.float32
    assert (ours["pixel_values"] - expected["pixel_values"]).abs().max().item() <= atol
    assert torch.equal(ours["pixel_attention_mask"], expected["pixel_attention_mask"])
    assert ours["pixel_attention_mask"].dtype == expected["pixel_attention_mask"].dtype
    assert torch.equal(ours["spatial_shapes"], expected["spatial_shapes"])


@pytest.mark.parametrize("max_num_patches", [64, 256, 576])
def test_photos_match_reference(max_num_patches):
    images = [photo(name) for name in RGB_PHOTOS]
    ours = Siglip2ImageProcessor(max_num_patches=max_num_patches)(images, return_tensors="pt")
    reference = reference_processor(max_num_patches=max_num_patches)(images, return_tensors="pt")
    assert_matches_reference(ours, reference)


@pytest.mark.parametrize("name", list(odd_images()))
def test_extreme_aspect_and_tiny_images_match_reference(name):
    image = odd_images()[name]
    for max_num_patches in (64, 256):
        ours = Siglip2ImageProcessor()(image, max_num_patches=max_num_patches, return_tensors="pt")
        reference = reference_processor()(image, max_num_patches=max_num_patches, return_tensors="pt")
        assert_matches_reference(ours, reference)


def test_patch_size_and_settings_forwarded():
    image = photo("rocket.jpg")
    settings = dict(patch_size=14, max_num_patches=100, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25])
    ours = Siglip2ImageProcessor(**settings)(image, return_tensors="pt")
    assert_matches_reference(ours, reference_processor(**settings)(image, return_tensors="pt"))
    assert ours["pixel_values"].shape == (1, 100, 14 * 14 * 3)


def test_size_search_matches_reference_everywhere():
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        get_image_size_for_max_num_patches as reference_size,
    )

    rng = np.random.default_rng(0)
    for height, width in rng.integers(1, 3000, size=(300, 2)):
        for patch_size, budget in ((16, 256), (14, 729), (16, 64), (32, 1)):
            expected = reference_size(int(height), int(width), patch_size, budget)
            assert get_image_size_for_max_num_patches(int(height), int(width), patch_size, budget) == expected
            assert (expected[0] // patch_size) * (expected[1] // patch_size) <= budget


def test_grayscale_and_alpha_are_converted_to_rgb():
    """The reference rejects 1-channel input (its mean has 3 values); we convert to RGB first."""
    gray = Image.open(FIXTURES / "camera.png")
    assert gray.mode == "L"
    ours = Siglip2ImageProcessor()(gray, return_tensors="pt")
    assert_matches_reference(ours, reference_processor()(gray.convert("RGB"), return_tensors="pt"))
    with Image.open(FIXTURES / "logo.png") as logo:
        assert logo.mode == "RGBA"
        composited = Image.alpha_composite(Image.new("RGBA", logo.size, (255, 255, 255, 255)), logo.convert("RGBA"))
        ours = Siglip2ImageProcessor()(logo, return_tensors="pt")
        assert_matches_reference(ours, reference_processor()(composited.convert("RGB"), return_tensors="pt"))


def test_numpy_and_tensor_inputs():
    image = photo("chelsea.png")
    array = np.array(image)
    expected = Siglip2ImageProcessor()(image, return_tensors="pt")
    for variant in (array, torch.from_numpy(array).permute(2, 0, 1).contiguous()):
        assert_matches_reference(Siglip2ImageProcessor()(variant, return_tensors="pt"), expected, atol=0)


def test_config_round_trip_both_directions(tmp_path):
    ours = Siglip2ImageProcessor(max_num_patches=576, patch_size=14)
    ours.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "Siglip2ImageProcessor" and saved["max_num_patches"] == 576
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = transformers.AutoImageProcessor.from_pretrained(tmp_path / "ours")
    assert (loaded.max_num_patches, loaded.patch_size, loaded.resample) == (576, 14, 2)
    image = photo("coffee.png")
    assert_matches_reference(ours(image, return_tensors="pt"), loaded(image, return_tensors="pt"))

    reference_processor(max_num_patches=64, image_mean=[0.1, 0.2, 0.3]).save_pretrained(tmp_path / "theirs")
    reloaded = Siglip2ImageProcessor.from_pretrained(tmp_path / "theirs")
    assert reloaded.max_num_patches == 64 and list(reloaded.image_mean) == [0.1, 0.2, 0.3]
    expected = reference_processor(max_num_patches=64, image_mean=[0.1, 0.2, 0.3])(image, return_tensors="pt")
    assert_matches_reference(reloaded(image, return_tensors="pt"), expected)
    fast = Siglip2ImageProcessorFast.from_pretrained(tmp_path / "theirs")
    assert fast.max_num_patches == 64


def test_hub_style_config_loads_in_both(tmp_path):
    """A NaFlex checkpoint's file: Fast type name, do_convert_rgb null, processor_class kept on save."""
    config = {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "Siglip2ImageProcessorFast",
        "image_std": [0.5, 0.5, 0.5],
        "max_num_patches": 256,
        "patch_size": 16,
        "processor_class": "Siglip2Processor",
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    image = photo("rocket.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = transformers.AutoImageProcessor.from_pretrained(tmp_path)(image, return_tensors="pt")
    for cls in (Siglip2ImageProcessor, Siglip2ImageProcessorFast):
        loaded = cls.from_pretrained(tmp_path)
        assert loaded.do_convert_rgb is True
        atol = 1e-6 if cls is Siglip2ImageProcessor else 2 * ONE_LEVEL + 1e-6
        assert_matches_reference(loaded(image, return_tensors="pt"), expected, atol=atol)
        loaded.save_pretrained(tmp_path / cls.__name__)
        saved = json.loads((tmp_path / cls.__name__ / "preprocessor_config.json").read_text())
        assert saved["image_processor_type"] == cls.__name__ and saved["processor_class"] == "Siglip2Processor"


def test_fast_variant_deviation_is_at_most_two_levels():
    images = [photo(name) for name in RGB_PHOTOS] + list(odd_images().values())
    for max_num_patches in (64, 256, 576):
        exact = Siglip2ImageProcessor(max_num_patches=max_num_patches)(images, return_tensors="pt")
        fast = Siglip2ImageProcessorFast(max_num_patches=max_num_patches)(images, return_tensors="pt")
        assert torch.equal(fast["pixel_attention_mask"], exact["pixel_attention_mask"])
        assert torch.equal(fast["spatial_shapes"], exact["spatial_shapes"])
        difference = (fast["pixel_values"] - exact["pixel_values"]).abs()
        assert difference.max().item() <= 2 * ONE_LEVEL + 1e-6  # two levels only when upscaling the 1:8 strip
        assert (difference > 1e-6).float().mean().item() < 0.05


def test_fast_variant_float_inputs_take_the_exact_path():
    array = np.array(photo("coffee.png")).astype(np.float32) / 255  # floats in [0, 1], as the reference accepts
    expected = reference_processor()(array, return_tensors="pt")
    assert_matches_reference(Siglip2ImageProcessorFast()(array, return_tensors="pt"), expected)
    assert_matches_reference(Siglip2ImageProcessor()(array, return_tensors="pt"), expected)


def test_return_tensors_none_gives_per_image_lists_like_the_reference():
    images = [photo("rocket.jpg"), odd_images()["tiny_5x7"]]
    ours = Siglip2ImageProcessor()(images)
    reference = reference_processor()(images)
    assert [tuple(s) for s in ours["spatial_shapes"]] == [tuple(s) for s in reference["spatial_shapes"]]
    for got, expected in zip(ours["pixel_values"], reference["pixel_values"]):
        assert isinstance(got, np.ndarray) and np.abs(got - expected).max() <= 1e-6
    for got, expected in zip(ours["pixel_attention_mask"], reference["pixel_attention_mask"]):
        assert np.array_equal(got, expected) and got.dtype == expected.dtype


def test_do_convert_rgb_false_rejects_grayscale_with_a_typed_error():
    from siglip.errors import InputError

    with pytest.raises(InputError, match="do_convert_rgb"):
        Siglip2ImageProcessor(do_convert_rgb=False)(Image.open(FIXTURES / "camera.png"))


def test_fast_variant_takes_a_uint8_batch():
    images = [photo("chelsea.png"), photo("chelsea.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    batch = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images])
    fast = Siglip2ImageProcessorFast()
    assert_matches_reference(fast(batch, return_tensors="pt"), fast(images, return_tensors="pt"), atol=0)


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(image_mean=[0.48, 0.45, 0.4], image_std=[0.26, 0.26, 0.27]), dict(do_rescale=False),
     dict(do_normalize=False), dict(rescale_factor=1 / 127.5, image_mean=1.0, image_std=1.0)],
)  # fmt: skip
def test_fast_value_table_is_exact_without_resize(settings):
    """Without a resize the fast path's lookup table must reproduce the exact path bit for bit."""
    image = odd_images()["exact_patch_grid"]  # 256 x 128: a whole number of patches
    kwargs = dict(do_resize=False, max_num_patches=200, **settings)
    exact = Siglip2ImageProcessor(**kwargs)(image, return_tensors="pt")
    fast = Siglip2ImageProcessorFast(**kwargs)(image, return_tensors="pt")
    assert_matches_reference(fast, exact, atol=0)
    assert_matches_reference(exact, reference_processor(**kwargs)(image, return_tensors="pt"), atol=0)
