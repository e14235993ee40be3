"""Image loading and SigLIP image processors: parity with transformers' PIL backend, typed errors, config I/O.

The oracle is `transformers.SiglipImageProcessorPil` (what `SiglipImageProcessor` resolves to without
torchvision). The exact processor must match it to 1e-6 (it is bit-equal in practice); the fast one within
one uint8 level (2/255 after normalisation) with a tiny mean deviation.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siglip.errors import ImageError, InputError
from siglip.image.loading import load_image, to_rgb
from siglip.image.processing import SiglipImageProcessor
from siglip.image.processing_fast import SiglipImageProcessorFast

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

FIXTURES = Path(__file__).parent / "fixtures"
READABLE = sorted(p.name for p in FIXTURES.iterdir() if p.is_file() and p.name != "multipage_rgb.tif")
TOL = 1e-6
LEVEL = 2 / 255 + 1e-5  # one uint8 level after the default normalisation
FAST_MAX, FAST_MEAN = LEVEL, 1e-4  # downscaling: within one level; upscaling: within two


@pytest.fixture(scope="module")
def reference():
    return transformers.SiglipImageProcessorPil()


@pytest.fixture(scope="module")
def exact():
    return SiglipImageProcessor()


@pytest.fixture(scope="module")
def fast():
    return SiglipImageProcessorFast()


def run(processor, images, **kwargs) -> np.ndarray:
    return np.asarray(processor(images, return_tensors="np", **kwargs).pixel_values)


def assert_parity(reference, ours, images, **kwargs) -> None:
    expected, got = run(reference, images, **kwargs), run(ours, images, **kwargs)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def synthetic(mode: str, size: tuple[int, int] = (70, 50), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    if mode == "P_transparent":
        image = rgb.convert("P")
        image.info["transparency"] = 3
        return image
    return rgb.convert(mode)


# ---- parity: files, modes, shapes, input types, settings ----------------------------------------------------


@pytest.mark.parametrize("name", READABLE)
def test_fixture_parity(reference, exact, name):
    path = FIXTURES / name
    assert_parity(reference, exact, Image.open(path))  # the documented usage: a PIL image from Image.open
    assert_parity(reference, exact, load_image(path))  # our loader keeps the mode -> same pixels
    assert_parity(reference, exact, str(path))  # paths: the reference's own loader (EXIF, plain RGB)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "P_transparent", "PA", "CMYK", "1", "I;16", "I", "F"])
def test_mode_parity(reference, exact, mode):
    assert_parity(reference, exact, synthetic(mode))
    assert to_rgb(synthetic(mode)).mode == "RGB"


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (1, 500), (500, 1), (224, 224)])
def test_tiny_and_extreme_aspect_parity(reference, exact, fast, size):
    image = synthetic("RGB", size)
    assert_parity(reference, exact, image)
    assert np.abs(run(fast, image) - run(exact, image)).max() <= 2 * LEVEL


def test_array_and_tensor_inputs(reference, exact):
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    inputs = [
        hwc,
        hwc.transpose(2, 0, 1),  # CHW
        hwc / 255.0,  # float64 in [0, 1]: scaled to uint8 (truncated) before Pillow, as the reference
        (hwc / 255.0).astype(np.float32),
        hwc.astype(np.float32),  # whole-valued floats are taken as 0-255
        torch.from_numpy(hwc.transpose(2, 0, 1).copy()),
        torch.from_numpy(hwc.transpose(2, 0, 1).copy()).float() / 255,
        rng.integers(0, 256, (40, 30, 4), dtype=np.uint8),  # RGBA array: composited on white
        rng.integers(0, 256, (1, 40, 30), dtype=np.uint8),  # grey CHW
        np.stack([hwc, hwc[::-1]]),  # a 4-D batch
    ]
    for item in inputs:
        assert_parity(reference, exact, item)
    assert_parity(reference, exact, [hwc, hwc.transpose(2, 0, 1)], input_data_format=None)
    assert_parity(reference, exact, hwc / 255.0, do_resize=False)


@pytest.mark.parametrize(
    "settings",
    [
        {"size": {"height": 384, "width": 384}},
        {"size": 384},  # int = shortest edge, aspect kept (the reference's rule)
        {"size": {"shortest_edge": 100, "longest_edge": 120}},
        {"do_normalize": False},
        {"do_rescale": False},
        {"do_resize": False},
        {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]},
        {"resample": Image.Resampling.BILINEAR},
        {"resample": Image.Resampling.LANCZOS},
        {"resample": Image.Resampling.NEAREST},
    ],
)
def test_settings_parity(exact, fast, settings):
    image = Image.open(FIXTURES / "chelsea.png")
    reference = transformers.SiglipImageProcessorPil(**settings)
    ours = SiglipImageProcessor(**settings)
    assert_parity(reference, ours, image)
    assert_parity(reference, exact, image, **settings)  # as per-call overrides
    deviation = np.abs(run(fast, image, **settings) - run(ours, image)).max()
    level = (1 / 255 if ours.do_rescale else 1) / (min(ours.image_std) if ours.do_normalize else 1)
    assert deviation <= 2 * level * 1.001


def test_outputs_formats(exact, fast):
    image = Image.open(FIXTURES / "astronaut.png")
    listed = exact([image, image]).pixel_values
    assert isinstance(listed, list) and listed[0].shape == (3, 224, 224) and listed[0].dtype == np.float32
    pt = exact(image, return_tensors="pt").pixel_values
    assert isinstance(pt, torch.Tensor) and pt.shape == (1, 3, 224, 224) and pt.dtype == torch.float32
    last = exact(image, return_tensors="np", data_format="channels_last").pixel_values
    np.testing.assert_array_equal(last[0], pt[0].permute(1, 2, 0).numpy())
    fast_last = fast(image, return_tensors="pt", data_format="channels_last").pixel_values
    assert fast_last.shape == (1, 224, 224, 3) and fast_last.is_contiguous()
    assert isinstance(fast([image, image]).pixel_values, list)
    on_cpu = SiglipImageProcessorFast(device="cpu")(image, return_tensors="pt").pixel_values
    assert torch.equal(on_cpu, fast(image, return_tensors="pt").pixel_values) and on_cpu.device.type == "cpu"
    with pytest.raises(InputError):
        exact(image, not_an_option=1)
    with pytest.raises(InputError):
        exact([synthetic("RGB", (30, 20)), synthetic("RGB", (20, 30))], size=10, return_tensors="pt")


# ---- fast path -------------------------------------------------------------------------------------------------


def test_fast_deviation_bound(exact, fast):
    """Fast vs exact on every fixture: max |diff| <= one uint8 level after normalisation, tiny mean."""
    images = [load_image(FIXTURES / name) for name in READABLE]
    expected, got = run(exact, images), run(fast, images)
    diff = np.abs(got - expected)
    assert diff.max() <= 2 * LEVEL and diff.mean() <= FAST_MEAN, (diff.max(), diff.mean())  # tiny GIF/TIFF upscale
    photos = [index for index, image in enumerate(images) if min(image.size) >= 224]  # downscaled
    assert len(photos) >= 8 and diff[photos].max() <= FAST_MAX
    # batch vs one at a time, float and array inputs go through the same shared preparation
    np.testing.assert_array_equal(run(fast, images[:3]), np.concatenate([run(fast, im) for im in images[:3]]))
    array = np.asarray(images[0].convert("RGB")) / 255.0
    assert np.abs(run(fast, array) - run(exact, array)).max() <= FAST_MAX
    assert np.abs(run(fast, array, do_resize=False) - run(exact, array, do_resize=False)).max() <= 1e-6


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_fast_threaded_batch_equals_general_path(workers, monkeypatch):
    """The per-thread stack + resize + normalise of same-sized uint8 batches gives exactly the general path's
    values (odd batch sizes split unevenly); other batches (mixed sizes, no normalisation) fall back to it."""
    photo = load_image(FIXTURES / "coffee.png").convert("RGB")
    images = [photo.rotate(angle) for angle in (0, 5, 10, 15, 20)]
    mixed = [*images[:2], photo.resize((300, 200))]
    fast = SiglipImageProcessorFast(num_workers=workers)
    threaded = {
        "batch": run(fast, images),
        "bilinear": run(fast, images, resample=Image.Resampling.BILINEAR),
    }
    used = []
    original = SiglipImageProcessorFast._resize_and_normalize_in_threads
    monkeypatch.setattr(
        SiglipImageProcessorFast,
        "_resize_and_normalize_in_threads",
        lambda self, *args: used.append(original(self, *args)) or None,
    )
    np.testing.assert_array_equal(run(fast, images), threaded["batch"])
    np.testing.assert_array_equal(run(fast, images, resample=Image.Resampling.BILINEAR), threaded["bilinear"])
    assert all(batch is not None for batch in used)
    used.clear()
    run(fast, mixed, size={"height": 64, "width": 64})
    run(fast, images[:2], do_normalize=False)
    assert used == [None, None]


def test_fast_reduces_large_images_first(exact, fast, monkeypatch):
    """Images >= 4x the output on both sides are box-reduced by an exact divisor before the torch resize."""
    from siglip.image.processing_fast import reduction_factor

    assert reduction_factor(4000, 3000, 224, 224) == 2  # 3 would leave partial blocks: 4000 % 3 != 0
    assert reduction_factor(4032, 3024, 224, 224) == 3
    assert reduction_factor(1920, 1080, 224, 224) == reduction_factor(4001, 3001, 224, 224) == 1
    photo = load_image(FIXTURES / "chelsea.png").convert("RGB").resize((2000, 1800), Image.Resampling.BICUBIC)
    calls = []
    original = Image.Image.reduce
    monkeypatch.setattr(Image.Image, "reduce", lambda self, factor, *a: calls.append(factor) or original(self, factor))
    diff = np.abs(run(fast, photo) - run(exact, photo))
    assert calls == [2]
    assert diff.max() <= 2 * LEVEL and diff.mean() <= 3e-3, (diff.max(), diff.mean())
    assert run(fast, photo.convert("RGBA")).shape == (1, 3, 224, 224) and calls == [2]  # alpha: never reduced


# ---- preprocessor_config.json ------------------------------------------------------------------------------------


def test_config_round_trips(tmp_path):
    settings = dict(size={"height": 384, "width": 384}, image_mean=[0.1, 0.2, 0.3], do_normalize=False, resample=2)
    transformers.SiglipImageProcessorPil(**settings).save_pretrained(tmp_path / "ref")
    config_path = tmp_path / "ref" / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    config["processor_class"] = "SiglipProcessor"  # an unknown key must survive
    config_path.write_text(json.dumps(config))

    ours = SiglipImageProcessor.from_pretrained(tmp_path / "ref")
    assert ours.size == {"height": 384, "width": 384} and ours.image_mean == [0.1, 0.2, 0.3] and ours.resample == 2
    ours.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "preprocessor_config.json").read_text())
    assert saved == config

    back = transformers.AutoImageProcessor.from_pretrained(tmp_path / "ours")
    assert dict(back.size)["height"] == 384 and tuple(back.image_mean) == (0.1, 0.2, 0.3) and not back.do_normalize
    image = Image.open(FIXTURES / "coffee.png")
    np.testing.assert_allclose(run(ours, image), run(back, image), atol=TOL, rtol=0)

    fast = SiglipImageProcessorFast.from_pretrained(tmp_path / "ours", size={"height": 64, "width": 64})
    assert fast.size == {"height": 64, "width": 64}
    fast.save_pretrained(tmp_path / "fast")
    assert "device" not in json.loads((tmp_path / "fast" / "preprocessor_config.json").read_text())
    assert transformers.AutoImageProcessor.from_pretrained(tmp_path / "fast").size.height == 64
    assert SiglipImageProcessor().to_dict() == transformers.SiglipImageProcessorPil().to_dict() | {
        "resample": 3,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
        "size": {"height": 224, "width": 224},
    }


# ---- loading and typed errors ------------------------------------------------------------------------------------


def test_load_image_sources(tmp_path):
    path = FIXTURES / "rocket.jpg"
    data = path.read_bytes()
    data_uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    for source in (path, str(path), data, io.BytesIO(data), Image.open(path), data_uri):
        assert load_image(source).size == (640, 427)
    gif = load_image(FIXTURES / "no_time_for_that_tiny.gif")
    first = Image.open(FIXTURES / "no_time_for_that_tiny.gif")
    assert getattr(gif, "n_frames", 1) > 1 and np.array_equal(np.asarray(gif), np.asarray(first))
    tif = load_image(FIXTURES / "multipage.tif")
    assert tif.mode == "L" and tif.tell() == 0


def _png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.png", "does not exist"),
        (lambda d: FIXTURES / "multipage_rgb.tif", "not an image format"),  # a real TIFF Pillow cannot read
        (lambda d: _write(d / "text.png", b"this is not an image"), "not an image format"),
        (lambda d: _write(d / "cut.jpg", (FIXTURES / "rocket.jpg").read_bytes()[:4000]), "truncated"),
        (lambda d: _write(d / "cut.png", (FIXTURES / "chelsea.png").read_bytes()[:3000]), "truncated"),
        (lambda d: _write(d / "zero.png", _png(0, 10)), "zero|corrupt|not an image"),
    ],
)
def test_typed_errors_name_the_file(tmp_path, make, match):
    source = make(tmp_path)
    with pytest.raises(ImageError, match=match) as info:
        load_image(source)
    assert Path(source).name in str(info.value)
    assert isinstance(info.value, ValueError)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_zero_size_pil_and_decompression_bomb(monkeypatch):
    with pytest.raises(ImageError, match="zero size"):
        load_image(Image.new("RGB", (0, 5)))
    path = FIXTURES / "chelsea.png"  # 451 x 300 = 135300 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # above: Pillow only warns; we raise
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 2x above: Pillow raises DecompressionBombError
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)
    with pytest.raises(ImageError):
        SiglipImageProcessor()(str(path))


def test_exif_orientation(tmp_path, reference, exact):
    base = Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    base.save(path, exif=exif.tobytes())
    assert load_image(path).size == (40, 20)  # default: orientation ignored, like Image.open
    assert load_image(path, honor_exif=True).size == (20, 40)
    assert_parity(reference, exact, Image.open(path))  # PIL input: the reference ignores EXIF
    assert_parity(reference, exact, str(path))  # path input: the reference applies it
    # A caller's PIL image is rotated into a new image (the caller's stays as it is); an upright one is not copied.
    opened = Image.open(path)
    rotated = load_image(opened, honor_exif=True)
    assert rotated.size == (20, 40) and opened.size == (40, 20)
    np.testing.assert_array_equal(np.asarray(rotated), np.asarray(load_image(path, honor_exif=True)))
    assert load_image(base, honor_exif=True) is base


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "L"])
def test_exif_orientation_every_mode(tmp_path, reference, exact, mode):
    """Paths of palette, alpha and grey PNGs with every rotating orientation: equal to the reference's loader."""
    image = synthetic(mode, (40, 20))
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"{mode}_{orientation}.png"
        image.save(path, exif=exif.tobytes())
        assert_parity(reference, exact, str(path))
