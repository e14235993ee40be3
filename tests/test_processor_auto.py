"""SiglipProcessor and the Auto classes: same inputs as transformers, files readable both ways, seed snippets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from PIL import Image

import siglip
from siglip.errors import ConfigError, InputError

TEXTS = ["a photo of 2 cats", "A PHOTO OF 2 DOGS!!", ""]


@pytest.fixture(scope="module")
def images():
    return [Image.open(FIXTURES / name) for name in ("chelsea.png", "coffee.png")]


def test_auto_classes_pick_the_right_types(reference_checkpoint):
    assert type(siglip.AutoConfig.from_pretrained(reference_checkpoint)) is siglip.SiglipConfig
    assert type(siglip.AutoModel.from_pretrained(reference_checkpoint)) is siglip.SiglipModel
    assert type(siglip.AutoTokenizer.from_pretrained(reference_checkpoint)) is siglip.SiglipTokenizer
    assert type(siglip.AutoImageProcessor.from_pretrained(reference_checkpoint)) is siglip.SiglipImageProcessor
    fast = siglip.AutoImageProcessor.from_pretrained(reference_checkpoint, use_fast=True)
    assert type(fast) is siglip.SiglipImageProcessorFast
    processor = siglip.AutoProcessor.from_pretrained(reference_checkpoint)
    assert type(processor) is siglip.SiglipProcessor
    classifier = siglip.AutoModelForImageClassification.from_pretrained(reference_checkpoint)
    assert type(classifier) is siglip.SiglipForImageClassification


@pytest.mark.parametrize("padding", ["max_length", True, False])
def test_processor_equals_reference(reference_checkpoint, images, padding):
    import transformers

    ours = siglip.SiglipProcessor.from_pretrained(reference_checkpoint)
    reference = transformers.SiglipProcessor.from_pretrained(reference_checkpoint)
    kwargs = dict(text=TEXTS[:2] if padding is False else TEXTS, images=images, padding=padding, return_tensors="pt")
    if padding is False:
        kwargs["text"] = TEXTS[0]
    got, expected = ours(**kwargs), reference(**kwargs)
    assert sorted(got) == sorted(expected)
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert (got["pixel_values"] - expected["pixel_values"]).abs().max() <= 1e-6


def test_processor_text_or_images_alone_and_numpy(reference_checkpoint, images):
    processor = siglip.AutoProcessor.from_pretrained(reference_checkpoint)
    text_only = processor(text=TEXTS, padding="max_length", return_tensors="np")
    assert set(text_only) == {"input_ids", "attention_mask"} and isinstance(text_only.input_ids, np.ndarray)
    assert text_only.input_ids.shape == (3, 64)
    image_only = processor(images=images, return_tensors="pt")
    assert set(image_only) == {"pixel_values"} and image_only.pixel_values.shape == (2, 3, 32, 32)
    with pytest.raises(InputError):
        processor()


def test_batch_to_casts_only_floating_tensors(reference_checkpoint, images):
    processor = siglip.AutoProcessor.from_pretrained(reference_checkpoint)
    batch = processor(text=TEXTS, images=images, padding="max_length", return_tensors="pt").to(torch.bfloat16)
    assert batch.pixel_values.dtype == torch.bfloat16 and batch.input_ids.dtype == torch.long
    assert batch.to("cpu") is batch


def test_processor_save_load_both_ways(reference_checkpoint, images, tmp_path):
    import transformers

    ours = siglip.AutoProcessor.from_pretrained(reference_checkpoint)
    ours.save_pretrained(tmp_path / "ours")
    reloaded = transformers.AutoProcessor.from_pretrained(tmp_path / "ours")
    ours_again = siglip.AutoProcessor.from_pretrained(tmp_path / "ours")
    kwargs = dict(text=TEXTS, images=images, padding="max_length", return_tensors="pt")
    expected = ours(**kwargs)
    for other in (reloaded, ours_again):
        got = other(**kwargs)
        assert torch.equal(got["input_ids"], expected["input_ids"])
        assert (got["pixel_values"] - expected["pixel_values"]).abs().max() <= 1e-6
    assert ours.batch_decode(expected["input_ids"][:1], skip_special_tokens=True) == reloaded.batch_decode(
        expected["input_ids"][:1], skip_special_tokens=True
    )


def test_seed_snippet_with_siglip(reference_checkpoint, images):
    """The seed's zero-shot snippet with `transformers` replaced by `siglip` gives transformers' numbers."""
    import transformers

    def run(library):
        model = library.AutoModel.from_pretrained(reference_checkpoint)
        processor = library.AutoProcessor.from_pretrained(reference_checkpoint)
        texts = ["a photo of 2 cats", "a photo of 2 dogs"]
        inputs = processor(text=texts, images=images[0], padding="max_length", return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs)
        return torch.sigmoid(outputs.logits_per_image)

    assert (run(siglip) - run(transformers)).abs().max() <= 1e-5


def test_unknown_model_type_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="bert"):
        siglip.AutoModel.from_pretrained(tmp_path)
    with pytest.raises(ConfigError):
        siglip.AutoTokenizer.from_pretrained(tmp_path)
