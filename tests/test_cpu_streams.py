"""CPU inference streams (kernels/streams.py): a batch split across threads gives the same numbers as one batch,
in every inference mode, never where autograd or training needs one batch, and leaves the process's intra-op
thread count as it was."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import TINY_CONFIGS, random_ids

import siglip
from siglip.kernels import streams

TEXT, VISION = TINY_CONFIGS["odd_3_heads"]


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return siglip.SiglipModel(siglip.SiglipConfig(text_config=TEXT, vision_config=VISION)).eval()


@pytest.fixture()
def inputs(pixel_batch):
    pixels = pixel_batch(VISION["image_size"])
    return dict(input_ids=random_ids(TEXT["vocab_size"], 7, 12), pixel_values=torch.cat([pixels, pixels.flip(-1)]))


@pytest.fixture()
def calls(monkeypatch):
    """Counts the encoder calls that ran in streams, with the stream count of each."""
    counts: list[int] = []
    original = streams.run_in_streams

    def counting(count, *arguments):
        counts.append(count)
        return original(count, *arguments)

    monkeypatch.setattr(streams, "run_in_streams", counting)
    yield counts
    streams.set_cpu_streams("auto")


def run(model, inputs, setting, dtype=torch.float32):
    streams.set_cpu_streams(setting)
    return model.to(dtype)(**inputs, output_hidden_states=True, output_attentions=True)


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streams_give_the_numbers_of_one_batch(model, inputs, calls, mode, dtype):
    context = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    with context():
        one = run(model, inputs, 1, dtype)
        assert calls == []
        split = run(model, inputs, 3, dtype)
    assert calls == [3, 3]  # both towers
    for name in ("logits_per_image", "text_embeds", "image_embeds"):
        torch.testing.assert_close(getattr(split, name), getattr(one, name), rtol=0, atol=1e-6)
    for tower in ("text_model_output", "vision_model_output"):
        for field in ("last_hidden_state", "hidden_states", "attentions"):
            a, b = getattr(getattr(split, tower), field), getattr(getattr(one, tower), field)
            for x, y in zip(*((a, b) if isinstance(a, tuple) else ((a,), (b,)))):
                assert x.shape == y.shape and x.shape[0] in (7, len(inputs["pixel_values"]))
                torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    # results made in inference mode are inference tensors; under no_grad they are not (usable with autograd)
    assert split.image_embeds.is_inference() == (mode == "inference_mode")


def test_static_int8_is_identical_in_streams(model, inputs, calls):
    vision = model.vision_model
    vision.quantize("int8", calibration=inputs["pixel_values"])
    with torch.inference_mode():
        streams.set_cpu_streams(1)
        one = vision(pixel_values=inputs["pixel_values"]).pooler_output
        streams.set_cpu_streams(2)
        split = vision(pixel_values=inputs["pixel_values"]).pooler_output
    assert calls == [2]
    assert torch.equal(one, split)


def test_never_where_autograd_training_or_packing_needs_one_batch(model, inputs, calls, pixel_batch):
    streams.set_cpu_streams(2)
    model(**inputs).logits_per_image.sum().backward()  # grad enabled
    model.train()
    with torch.no_grad():
        model(**inputs)  # training mode (dropout would draw other numbers per stream)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(**inputs)
    assert calls == []
    with torch.no_grad():
        model(**inputs)
    assert calls == [2, 2]


def test_auto_needs_enough_rows_per_stream(model, inputs, calls, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    streams.set_cpu_streams("auto")
    with torch.no_grad():
        model(**inputs)  # 7 x 12 and 8 x 25 token rows: far below MIN_STREAM_ROWS
        assert calls == []
        monkeypatch.setattr(streams, "MIN_STREAM_ROWS", 40)
        model(**inputs)  # enough rows, but these towers are far narrower than MIN_STREAM_WIDTH
        assert calls == []
        monkeypatch.setattr(streams, "MIN_STREAM_WIDTH", 1)
        model(**inputs)
    assert calls == [2, 2]


@pytest.mark.parametrize(("width", "rows", "expected"), [(768, 1024, 1), (768, 2048, 2), (64, 2048, 1), (64, 32768, 2)])
def test_auto_asks_narrow_towers_for_more_rows(monkeypatch, width, rows, expected):
    """GEMM work per row grows with the width squared: a width-64 tower needs 16x the rows of a width-256 one."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    streams.set_cpu_streams("auto")
    with torch.no_grad():
        assert streams.stream_count(torch.zeros(rows // 16, 16, width), training=False) == expected


def test_thread_counts_stay_as_they_were(model, inputs, calls):
    before = torch.get_num_threads()
    streams.set_cpu_streams(2)
    with torch.no_grad():
        model(**inputs)
    assert calls and torch.get_num_threads() == before
    seen = []
    fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    fresh.start()
    fresh.join()
    assert seen == [before]  # a thread started later gets the process default, not a stream's count


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5])
def test_bad_setting_is_a_clear_error(bad):
    with pytest.raises(siglip.InputError, match="CPU streams"):
        siglip.set_cpu_streams(bad)


def test_siglip2_naflex_padding_masks_split_with_their_rows(calls):
    from conftest import FIXTURES, PHOTOS
    from PIL import Image

    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=16)
    model = siglip.Siglip2VisionModel(siglip.Siglip2VisionConfig(**vision, num_patches=64)).eval()
    processor = siglip.Siglip2ImageProcessor(patch_size=16, max_num_patches=64)
    photos = [Image.open(FIXTURES / name).convert("RGB") for name in PHOTOS]
    inputs = processor(images=photos, return_tensors="pt")  # several aspect ratios: padded patches differ per row
    assert not inputs["pixel_attention_mask"].all()
    with torch.inference_mode():
        streams.set_cpu_streams(1)
        one = model(**inputs).pooler_output
        streams.set_cpu_streams(2)
        split = model(**inputs).pooler_output
    assert calls == [2]
    torch.testing.assert_close(split, one, rtol=0, atol=1e-6)
