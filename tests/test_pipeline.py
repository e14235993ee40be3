"""Zero-shot pipeline: equal to transformers' pipeline, label embeddings cached, typed errors, URLs."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch
from conftest import FIXTURES
from PIL import Image

import siglip
from siglip.errors import ImageError, InputError

IMAGES = [
    "chelsea.png",
    "astronaut.png",
    "coffee.png",
    "rocket.jpg",
    "camera.png",
    "horse.png",
    "multipage.tif",
    "no_time_for_that_tiny.gif",
]
LABELS = ["a cat", "an astronaut", "a cup of coffee", "a rocket", "a camera man", ""]


@pytest.fixture(scope="module")
def pipe(reference_checkpoint):
    return siglip.pipeline("zero-shot-image-classification", model=str(reference_checkpoint))


@pytest.fixture(scope="module")
def reference_pipe(reference_checkpoint):
    import transformers

    return transformers.pipeline("zero-shot-image-classification", model=str(reference_checkpoint))


def as_dict(results):
    return {item["label"]: item["score"] for item in results}


def test_equal_to_reference_pipeline(pipe, reference_pipe):
    paths = [str(FIXTURES / name) for name in IMAGES]
    ours = pipe(paths, candidate_labels=LABELS)
    for path, result in zip(paths, ours):
        expected = reference_pipe(path, candidate_labels=LABELS)
        assert [item["label"] for item in result] == [item["label"] for item in expected]
        for label, score in as_dict(expected).items():
            assert abs(as_dict(result)[label] - score) <= 1e-5
        assert len({round(item["score"], 3) for item in result}) > 1, "scores must differ for the test to mean much"


def test_template_top_k_and_single_image(pipe, reference_pipe):
    image = Image.open(FIXTURES / "chelsea.png")
    kwargs = dict(candidate_labels=LABELS[:4], hypothesis_template="a picture of {}")
    ours = pipe(image, top_k=2, **kwargs)
    expected = reference_pipe(image, **kwargs)[:2]
    assert [r["label"] for r in ours] == [r["label"] for r in expected]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(ours, expected)) <= 1e-5
    assert ours[0]["score"] >= ours[1]["score"]


def test_labels_encoded_once_across_images_and_calls(pipe):
    pipe.clear_cache()
    calls = {"text": 0, "image": 0}
    model = pipe.model
    original_text, original_image = model.get_text_features, model.get_image_features

    def count(kind, original, *args, **kwargs):
        out = original(*args, **kwargs)
        calls[kind] += out.shape[0]
        return out

    model.get_text_features = functools.partial(count, "text", original_text)
    model.get_image_features = functools.partial(count, "image", original_image)
    try:
        paths = [str(FIXTURES / name) for name in IMAGES]
        pipe(paths, candidate_labels=LABELS)
        pipe(paths[:2], candidate_labels=LABELS[:3])
    finally:
        del model.get_text_features, model.get_image_features
    assert calls["text"] == len(LABELS)  # K text passes, not N x K
    assert calls["image"] == len(IMAGES) + 2


@pytest.mark.parametrize(
    "labels, match",
    [([], "empty"), (None, "empty"), (["cat", 3], "strings"), ([b"cat"], "strings")],
)
def test_bad_labels(pipe, labels, match):
    with pytest.raises(InputError, match=match):
        pipe(str(FIXTURES / "chelsea.png"), candidate_labels=labels)


def test_bad_template_and_top_k(pipe):
    image = str(FIXTURES / "chelsea.png")
    with pytest.raises(InputError, match="hypothesis_template"):
        pipe(image, candidate_labels=["cat"], hypothesis_template="no slot")
    with pytest.raises(InputError, match="top_k"):
        pipe(image, candidate_labels=["cat"], top_k=0)


def test_long_label_is_truncated_not_an_error(pipe):
    results = pipe(str(FIXTURES / "chelsea.png"), candidate_labels=["cat " * 500, "dog"])
    assert len(results) == 2


def test_unreadable_image_names_the_file(pipe, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        pipe([str(FIXTURES / "chelsea.png"), str(broken)], candidate_labels=["cat"])


def test_skip_errors_keeps_order(pipe, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    paths = [str(FIXTURES / "chelsea.png"), str(broken), str(FIXTURES / "coffee.png")]
    results = list(pipe.iter_scores(paths, ["cat", "cup"], skip_errors=True, batch_size=2))
    assert [index for index, _ in results] == [0, 1, 2]
    assert isinstance(results[1][1], ImageError)
    direct = pipe.scores([paths[0], paths[2]], ["cat", "cup"])
    assert torch.allclose(torch.stack([results[0][1], results[2][1]]), direct, atol=1e-6)


@pytest.fixture()
def http_server():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(FIXTURES))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_image_from_url(pipe, http_server):
    from_url = pipe(f"{http_server}/chelsea.png", candidate_labels=LABELS)
    from_file = pipe(str(FIXTURES / "chelsea.png"), candidate_labels=LABELS)
    assert from_url == from_file
    with pytest.raises(ImageError):
        pipe(f"{http_server}/missing.png", candidate_labels=LABELS)


def test_pipeline_with_loaded_model_and_dtype(reference_checkpoint):
    model = siglip.AutoModel.from_pretrained(reference_checkpoint)
    processor = siglip.AutoProcessor.from_pretrained(reference_checkpoint)
    exact = siglip.pipeline(model=model, processor=processor)(str(FIXTURES / "coffee.png"), candidate_labels=LABELS)
    bf16 = siglip.pipeline(model=str(reference_checkpoint), dtype=torch.bfloat16)
    assert bf16.model.dtype == torch.bfloat16
    fast = bf16(str(FIXTURES / "coffee.png"), candidate_labels=LABELS)
    assert max(abs(as_dict(exact)[k] - v) for k, v in as_dict(fast).items()) < 0.05
    with pytest.raises(InputError, match="processor"):
        siglip.pipeline(model=model)
    with pytest.raises(InputError, match="task"):
        siglip.pipeline("image-to-text", model=str(reference_checkpoint))


def test_unidentifiable_file_is_an_image_error(pipe):
    with pytest.raises(ImageError, match="multipage_rgb.tif"):
        pipe(str(FIXTURES / "multipage_rgb.tif"), candidate_labels=["cat"])


@pytest.fixture(scope="module")
def rotated_jpeg(tmp_path_factory):
    """chelsea.png as a JPEG whose EXIF says 'rotate 90' (orientation 6)."""
    path = tmp_path_factory.mktemp("exif") / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(FIXTURES / "chelsea.png").convert("RGB").save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_applied_as_the_reference(pipe, reference_pipe, rotated_jpeg):
    expected = as_dict(reference_pipe(str(rotated_jpeg), candidate_labels=LABELS))
    applied = as_dict(pipe(str(rotated_jpeg), candidate_labels=LABELS))
    assert max(abs(applied[k] - v) for k, v in expected.items()) <= 1e-5
    ((_, stored),) = pipe.iter_scores([str(rotated_jpeg)], LABELS, honor_exif=False)
    from_pil = as_dict(pipe(Image.open(rotated_jpeg), candidate_labels=LABELS))  # PIL inputs are rotated too
    assert max(abs(from_pil[k] - v) for k, v in expected.items()) <= 1e-5
    assert max(abs(a - b) for a, b in zip(stored.tolist(), [applied[label] for label in LABELS])) > 1e-4


def test_transparent_pixels_as_the_reference(pipe, reference_pipe, tmp_path):
    """RGBA: the reference pipeline drops alpha (Pillow convert), whatever colour hides under it."""
    rgba = Image.open(FIXTURES / "chelsea.png").convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    path = tmp_path / "transparent.png"
    rgba.save(path)
    expected = as_dict(reference_pipe(str(path), candidate_labels=LABELS))
    got = as_dict(pipe(str(path), candidate_labels=LABELS))
    assert max(abs(got[k] - v) for k, v in expected.items()) <= 1e-5
