"""Parallel exact preprocessing (equal to serial and to the reference) and the opt-in fast JPEG decoding mode.

Large JPEGs are made here from the real photos in tests/fixtures (upscaled, saved at quality 90). Fast decoding
is checked for what it promises: smaller decodes, pixels close to the exact path, and image embeddings of a
small random-weight SigLIP vision tower (224x224, patch 16) within cosine 0.999 of the exact path's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from PIL import Image

import siglip
from siglip import SiglipVisionConfig, SiglipVisionModel
from siglip.encode import iter_encoded_images
from siglip.image.loading import load_image
from siglip.image.processing import SiglipImageProcessor
from siglip.image.processing_fast import SiglipImageProcessorFast

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "retina.jpg"]


@pytest.fixture(scope="module")
def large_jpegs(tmp_path_factory) -> list[str]:
    """Each photo upscaled to 1600 px on its long side (one also rotated by EXIF), JPEG quality 90."""
    folder = tmp_path_factory.mktemp("large_jpegs")
    paths = []
    for index, name in enumerate(PHOTOS):
        image = Image.open(FIXTURES / name).convert("RGB")
        scale = 1600 / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        path = folder / f"{index}_{name.rsplit('.', 1)[0]}.jpg"
        exif = Image.Exif()
        if index == 1:
            exif[0x0112] = 6  # rotate 90 degrees when shown
        image.save(path, quality=90, exif=exif)
        paths.append(str(path))
    return paths


def mixed_inputs() -> list:
    """PIL images of several modes and sizes, arrays, and file paths: every route of the exact processor."""
    images = [Image.open(FIXTURES / name) for name in ("astronaut.png", "logo.png", "no_time_for_that_tiny.gif")]
    images += [Image.open(FIXTURES / "chelsea.png").convert(mode) for mode in ("L", "LA", "CMYK", "1", "P")]
    images += [np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)]
    return images + [str(FIXTURES / "rocket.jpg"), str(FIXTURES / "multipage.tif")]


def test_parallel_exact_equals_serial_and_reference():
    import transformers

    reference = transformers.SiglipImageProcessor()
    serial = SiglipImageProcessor(num_workers=1)(mixed_inputs(), return_tensors="np").pixel_values
    parallel = SiglipImageProcessor(num_workers=2)(mixed_inputs(), return_tensors="np").pixel_values
    assert parallel.dtype == np.float32 and parallel.shape == (len(mixed_inputs()), 3, 224, 224)
    np.testing.assert_array_equal(parallel, serial)
    expected = np.asarray(reference(mixed_inputs(), return_tensors="np").pixel_values)
    np.testing.assert_array_equal(parallel, expected)
    # other settings take the same lookup-table route and stay bit-equal
    options = dict(size={"shortest_edge": 50}, image_mean=[0.48, 0.45, 0.4], image_std=[0.26, 0.26, 0.27])
    for kwargs in (options, dict(do_normalize=False), dict(do_rescale=False), dict(resample=2)):
        ours = SiglipImageProcessor(**kwargs)(mixed_inputs()[:4]).pixel_values
        theirs = reference.__class__(**kwargs)(mixed_inputs()[:4]).pixel_values
        for got, want in zip(ours, theirs):
            np.testing.assert_array_equal(got, np.asarray(want))


def test_same_lazy_image_listed_twice():
    image = Image.open(FIXTURES / "rocket.jpg")  # not decoded yet: two threads must not decode it at once
    out = SiglipImageProcessor(num_workers=2)([image, image, image], return_tensors="pt").pixel_values
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_fast_decode_is_opt_in_and_not_saved(large_jpegs, tmp_path):
    import transformers

    processor = SiglipImageProcessor()
    assert processor.fast_decode is False
    expected = transformers.SiglipImageProcessor()(large_jpegs[:2], return_tensors="np").pixel_values
    np.testing.assert_array_equal(processor(large_jpegs[:2], return_tensors="np").pixel_values, expected)
    processor.fast_decode = True
    processor.save_pretrained(tmp_path)
    assert "fast_decode" not in (tmp_path / "preprocessor_config.json").read_text()
    assert SiglipImageProcessor.from_pretrained(tmp_path).fast_decode is False
    assert SiglipImageProcessor(fast_decode=True).fast_decode is True


def test_draft_decoding_reduces_size_but_not_below_target(large_jpegs):
    for path in large_jpegs:
        full = load_image(path)
        small = load_image(path, draft_size=(224, 224))
        assert small.width < full.width and small.height < full.height
        assert min(small.size) >= 224
    png = FIXTURES / "astronaut.png"  # not a JPEG: decoded exactly
    assert load_image(png, draft_size=(64, 64)).size == load_image(png).size
    assert SiglipImageProcessor(size={"shortest_edge": 300}).draft_size() == (300, 300)


@pytest.mark.parametrize("processor_class", [SiglipImageProcessor, SiglipImageProcessorFast])
def test_fast_decode_close_to_exact(large_jpegs, processor_class):
    exact = processor_class()(large_jpegs, return_tensors="pt").pixel_values
    fast = processor_class(fast_decode=True)(large_jpegs, return_tensors="pt").pixel_values
    assert fast.shape == exact.shape
    difference = (fast - exact).abs()
    assert 0 < difference.mean() < 0.02, difference.mean()  # in [-1, 1] units; 0.02 is ~2.5 uint8 levels
    torch.manual_seed(0)
    config = SiglipVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, patch_size=16
    )
    model = SiglipVisionModel(config).eval()
    with torch.no_grad():
        cosine = torch.cosine_similarity(model(exact).pooler_output, model(fast).pooler_output)
    assert cosine.min() >= 0.999, cosine


def test_pipeline_and_encoder_fast_decode(reference_checkpoint, large_jpegs):
    pipe = siglip.pipeline("zero-shot-image-classification", model=str(reference_checkpoint))
    fast = siglip.pipeline("zero-shot-image-classification", model=str(reference_checkpoint), fast_decode=True)
    assert fast.processor.image_processor.fast_decode and not pipe.processor.image_processor.fast_decode
    labels = ["a cat", "an astronaut", "a rocket"]
    exact_scores = pipe.scores(large_jpegs, labels)
    fast_scores = fast.scores(large_jpegs, labels)
    assert not torch.equal(exact_scores, fast_scores)  # the fast mode really decoded differently
    assert (exact_scores - fast_scores).abs().max() < 0.05
    seen = []
    original = fast.processor.image_processor.__class__.fetch_image

    def spy(self, image, draft_size=None):
        seen.append(image.size if hasattr(image, "size") else image)
        return original(self, image, draft_size)

    fast.processor.image_processor.__class__.fetch_image = spy
    try:
        for batch, _ in iter_encoded_images(fast.model, fast.processor, large_jpegs[:2], batch_size=2):
            assert batch.indices == [0, 1]
    finally:
        fast.processor.image_processor.__class__.fetch_image = original
    assert all(max(size) < 1600 for size in seen)  # the loader handed over draft-decoded images
