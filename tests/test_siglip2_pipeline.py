"""SigLIP2 end to end: Auto classes, Siglip2Processor, pipeline and CLI on NaFlex and FixRes checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import CHECKPOINT_TEXT, CHECKPOINT_VISION, FIXTURES
from PIL import Image
from test_tokenizer_gemma import build_gemma_checkpoint

import siglip

IMAGES = ["chelsea.png", "rocket.jpg", "coffee.png", "motorcycle_left.png"]  # RGB: the reference rejects "L"
LABELS = ["a cat", "a rocket", "a man with a camera", "A HORSE"]


@pytest.fixture(scope="module")
def naflex_checkpoint(tmp_path_factory):
    """A tiny random NaFlex SigLIP2 + Gemma tokenizer + Siglip2 image processor, saved by transformers."""
    import transformers

    folder = build_gemma_checkpoint(tmp_path_factory.mktemp("naflex"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    vision = {key: value for key, value in CHECKPOINT_VISION.items() if key != "image_size"}
    config = transformers.Siglip2Config(
        text_config={**CHECKPOINT_TEXT, "vocab_size": len(tokenizer)},
        vision_config={**vision, "patch_size": 16, "num_patches": 16},
    )
    torch.manual_seed(0)
    model = transformers.Siglip2Model(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
        model.logit_bias.fill_(-1.0)
    model.save_pretrained(folder)
    # transformers' Siglip2Processor forces patch_size=16, max_num_patches=256 on every call whatever the image
    # processor saved (we follow the saved settings), so the test keeps those defaults.
    image_processor = transformers.Siglip2ImageProcessor()
    transformers.Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fixres_checkpoint(tmp_path_factory):
    """A FixRes SigLIP2 checkpoint: model_type "siglip" with a Gemma tokenizer, as Google publishes them."""
    import transformers

    folder = build_gemma_checkpoint(tmp_path_factory.mktemp("fixres"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    config = transformers.SiglipConfig(
        text_config={**CHECKPOINT_TEXT, "vocab_size": len(tokenizer)}, vision_config=CHECKPOINT_VISION
    )
    torch.manual_seed(1)
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    model.save_pretrained(folder)
    image_processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    transformers.SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_auto_classes_for_naflex(naflex_checkpoint):
    assert type(siglip.AutoModel.from_pretrained(naflex_checkpoint)).__name__ == "Siglip2Model"
    processor = siglip.AutoProcessor.from_pretrained(naflex_checkpoint)
    assert type(processor).__name__ == "Siglip2Processor"
    assert type(processor.image_processor).__name__ == "Siglip2ImageProcessor"
    assert type(processor.tokenizer).__name__ in ("GemmaTokenizer", "Siglip2Tokenizer")


def test_naflex_processor_equals_reference(naflex_checkpoint):
    import transformers

    images = [Image.open(FIXTURES / name) for name in IMAGES]
    ours = siglip.AutoProcessor.from_pretrained(naflex_checkpoint)(text=LABELS, images=images, return_tensors="pt")
    expected = transformers.AutoProcessor.from_pretrained(naflex_checkpoint)(
        text=LABELS, images=images, return_tensors="pt"
    )
    assert sorted(ours) == sorted(expected)
    for key in expected:
        assert (ours[key].float() - expected[key].float()).abs().max() <= 1e-6, key


@pytest.mark.parametrize("which", ["naflex", "fixres"])
def test_pipeline_equals_reference(which, naflex_checkpoint, fixres_checkpoint):
    import transformers

    folder = naflex_checkpoint if which == "naflex" else fixres_checkpoint
    ours = siglip.pipeline(model=str(folder))
    reference = transformers.pipeline("zero-shot-image-classification", model=str(folder))
    paths = [str(FIXTURES / name) for name in IMAGES]
    for path, result in zip(paths, ours(paths, candidate_labels=LABELS)):
        expected = reference(path, candidate_labels=LABELS)
        assert [r["label"] for r in result] == [r["label"] for r in expected]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(result, expected)) <= 1e-5


def test_cli_classify_naflex(naflex_checkpoint):
    image = str(FIXTURES / "chelsea.png")
    command = [sys.executable, "-m", "siglip", "classify", image, "--labels", *LABELS, "--json"]
    result = subprocess.run([*command, "--model", str(naflex_checkpoint)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = siglip.pipeline(model=str(naflex_checkpoint))(image, candidate_labels=LABELS)
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # JSON lines: one object per image
    got = json.loads(lines[0])["results"]
    assert [r["label"] for r in got] == [r["label"] for r in expected]


def test_grayscale_and_rgba_work_where_the_reference_raises(naflex_checkpoint):
    pipe = siglip.pipeline(model=str(naflex_checkpoint))
    results = pipe([str(FIXTURES / "camera.png"), str(FIXTURES / "horse.png")], candidate_labels=LABELS)
    assert all(len(result) == len(LABELS) for result in results)
