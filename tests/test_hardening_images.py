"""Hostile images through every public entry point: corrupt EXIF blocks, mutated bytes, formats outside the photo
formats, and one lazily opened PIL image shared by threads. Nothing but success or a typed siglip error; the CLI's
--skip-errors skips whatever one image raises."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from fuzz_images import DEMO_MODEL, mutate, run, seeds
from PIL import Image, ImageOps

import siglip
from siglip.errors import ImageError, SiglipError
from siglip.image import formats
from siglip.image.loading import load_image


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siglip", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exif_breakers() -> list[bytes]:
    """Real photos whose pixels decode but whose EXIF block makes Pillow's `ImageOps.exif_transpose` raise
    something other than an ImageError (SyntaxError, struct.error, TypeError, ...): the images that used to
    escape the typed errors and abort `--skip-errors` runs. Found by a seeded search over EXIF-only mutants."""
    rng = random.Random(3)
    found: list[bytes] = []
    candidates = [item for item in seeds() if item[0] == "WEBP"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for number in range(6000):
            fmt, data = candidates[number % len(candidates)]
            mutant = mutate(fmt, data, rng, exif_only=True)
            try:
                image = Image.open(io.BytesIO(mutant))
                image.load()
            except Exception:  # noqa: BLE001, S112 - only mutants whose pixels decode are wanted
                continue
            try:
                ImageOps.exif_transpose(image, in_place=True)
            except Exception:  # noqa: BLE001 - Pillow's own EXIF failure: what we are looking for
                found.append(mutant)
                if len(found) == 4:
                    break
    assert len(found) >= 2, "the seeded search should find EXIF blocks that break Pillow"
    return found


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupt_exif_is_an_image_error_everywhere(exif_breakers, tmp_path):
    from siglip.encode import load_rgb
    from siglip.image.processing_siglip2 import Siglip2ImageProcessor

    processors = [siglip.SiglipImageProcessor(), siglip.SiglipImageProcessorFast(), Siglip2ImageProcessor()]
    for number, data in enumerate(exif_breakers):
        path = tmp_path / f"photo{number}.webp"
        path.write_bytes(data)
        calls = [
            lambda path=path: load_image(path, honor_exif=True),
            lambda data=data: load_image(data, honor_exif=True),
            lambda data=data: load_image(Image.open(io.BytesIO(data)), honor_exif=True),
            lambda path=path: load_rgb(str(path)),
            *[lambda p=p, path=path: p(str(path), return_tensors="pt") for p in processors],
        ]
        for call in calls:
            with pytest.raises(ImageError, match="corrupt"):
                call()


def test_seeded_mutation_fuzz_gives_only_typed_errors():
    """A small fixed count here (every entry point, generic and EXIF-only mutants); `make fuzz` runs 30,000."""
    result = run(count=154, seed=30, with_pipeline=True)
    assert result["untyped"] == [], "\n".join(result["untyped"])
    assert result["outcomes"].get("ok", 0) > 20 and result["outcomes"].get("typed error", 0) > 10
    assert len(result["entry_points"]) == 11


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_skip_errors_cli_skips_images_with_corrupt_exif(exif_breakers, tmp_path):
    good = tmp_path / "good.png"
    Image.open(FIXTURES / "horse.png").save(good)
    bad = []
    for number, data in enumerate(exif_breakers[:2]):
        bad.append(tmp_path / f"bad{number}.webp")
        bad[-1].write_bytes(data)
    paths = [str(good), *map(str, bad)]
    out = tmp_path / "emb.npy"
    result = run_cli("embed", *paths, "--out", str(out), "--model", str(DEMO_MODEL), "--skip-errors")
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert np.load(out).shape[0] == 1 and "bad0.webp" in result.stderr
    result = run_cli("classify", *paths, "--labels", "a circle,a square", "--model", str(DEMO_MODEL), "--skip-errors")
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    result = run_cli("classify", *paths, "--labels", "a circle,a square", "--model", str(DEMO_MODEL))
    assert result.returncode != 0 and "siglip: error:" in result.stderr and "internal error" not in result.stderr


def test_skip_errors_in_batches_skips_whatever_one_image_raises():
    from siglip.image.batches import iter_image_batches

    def load(source):
        if source == "bad-load":
            raise struct_error()
        return source

    def preprocess(images):
        if "bad-preprocess" in images:
            raise KeyError("a processor failure on one image")
        return list(images)

    sources = ["a", "bad-load", "b", "bad-preprocess", "c"]
    batches = list(iter_image_batches(sources, preprocess, batch_size=5, load=load, skip_errors=True))
    assert batches[0].indices == [0, 2, 4] and batches[0].inputs == ["a", "b", "c"]
    assert [index for index, _ in batches[0].failures] == [1, 3]
    assert all(isinstance(error, ImageError) for _, error in batches[0].failures)


def struct_error() -> Exception:
    import struct

    return struct.error("unpack requires a buffer of 4 bytes")


# ---- formats -------------------------------------------------------------------------------------------------

# Formats outside the photo formats that this Pillow can write (PSD, FITS, ICNS... it only reads).
REFUSED = {
    "ICO": "RGBA",
    "PCX": "RGB",
    "SGI": "RGB",
    "TGA": "RGB",
    "IM": "RGB",
    "DIB": "RGB",
    "MSP": "1",
    "XBM": "1",
    "SPIDER": "F",
    "QOI": "RGB",
    "BLP": "P",
    "DDS": "RGB",
    "PPM": "RGB",
    "JPEG2000": "RGB",
    "EPS": "RGB",
}


def _encode(fmt: str, mode: str) -> bytes | None:
    buffer = io.BytesIO()
    try:
        Image.new(mode, (16, 16), 1).save(buffer, fmt)
    except (OSError, KeyError, ValueError):
        return None
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", sorted(REFUSED))
def test_formats_outside_the_photo_formats_are_refused_saying_how_to_allow_them(fmt, tmp_path):
    data = _encode(fmt, REFUSED[fmt])
    if data is None:
        pytest.skip(f"this Pillow cannot write {fmt}")
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    for source in (path, data, "data:image/png;base64," + __import__("base64").b64encode(data).decode()):
        with pytest.raises(ImageError, match="allowed_formats") as raised:
            load_image(source)
        assert "--allow-format" in str(raised.value)
    with pytest.raises(ImageError, match="allowed_formats"):
        siglip.SiglipImageProcessor()(str(path))
    if fmt == "EPS":
        return  # decoding needs Ghostscript
    assert load_image(path, allowed_formats=[fmt]).size == (16, 16)
    assert load_image(data, allowed_formats=["all"]).size == (16, 16)


def test_refusal_names_a_format_it_recognises():
    data = _encode("ICO", "RGBA")
    with pytest.raises(ImageError, match="is a ICO file") as raised:
        load_image(data)
    assert "allowed_formats=[..., 'ICO']" in str(raised.value) and "--allow-format ICO" in str(raised.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "AVIF"])
def test_photo_formats_are_decoded_by_default(fmt):
    from PIL import features

    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    buffer = io.BytesIO()
    Image.open(FIXTURES / "horse.png").convert("RGB").save(buffer, fmt)
    assert load_image(buffer.getvalue()).format in (fmt, "MPO")


def test_allow_formats_extends_the_process_default():
    data = _encode("PCX", "RGB")
    try:
        formats.allow_formats("pcx")
        assert load_image(data).format == "PCX"
    finally:
        formats.reset_allowed_formats()
    with pytest.raises(ImageError):
        load_image(data)
    with pytest.raises(SiglipError, match="unknown image format"):
        formats.allow_formats("NOPE")


def test_cli_allow_format(tmp_path):
    path = tmp_path / "image.pcx"
    Image.open(FIXTURES / "horse.png").convert("RGB").save(path, "PCX")
    labels = ("--labels", "a circle,a square", "--model", str(DEMO_MODEL))
    refused = run_cli("classify", str(path), *labels)
    assert refused.returncode == 2 and "--allow-format PCX" in refused.stderr, refused.stderr
    allowed = run_cli("classify", str(path), *labels, "--allow-format", "PCX", "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout.splitlines()[0])
    unknown = run_cli("classify", str(path), *labels, "--allow-format", "NOPE")
    assert unknown.returncode == 2 and "unknown image format NOPE" in unknown.stderr


# ---- threads -------------------------------------------------------------------------------------------------


def test_one_lazily_opened_image_shared_by_eight_threads(tmp_path):
    path = tmp_path / "big.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(path)  # slow to decode
    processor = siglip.SiglipImageProcessor()
    expected = processor(Image.open(path), return_tensors="pt")["pixel_values"]
    for _ in range(3):
        shared = Image.open(path)
        results: list[object] = [None] * 8
        barrier = threading.Barrier(8)

        def work(slot: int, image=shared, barrier=barrier, results=results) -> None:
            barrier.wait()
            try:
                results[slot] = processor(image, return_tensors="pt")["pixel_values"]
            except Exception as error:  # noqa: BLE001 - recorded and asserted below
                results[slot] = error

        threads = [threading.Thread(target=work, args=(slot,)) for slot in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for result in results:
            assert not isinstance(result, Exception), result
            assert result is not None and bool((result == expected).all())


def test_a_regular_image_path_still_loads(tmp_path):
    link = tmp_path / "link.png"
    link.symlink_to(FIXTURES / "horse.png")
    assert load_image(link).size == load_image(Path(FIXTURES / "horse.png")).size
