"""Seeded mutation fuzz of every public image entry point: nothing but success or a typed siglip error.

Seeds are real photos from tests/fixtures, re-encoded small as JPEG, PNG, WebP and TIFF, each carrying an EXIF
block (orientation, camera tags, a GPS IFD). Two kinds of mutants: generic byte mutations (flips, random runs,
truncation, duplication) anywhere, and EXIF-only mutations that touch nothing but the EXIF payload (the PNG
chunk CRC fixed afterwards, so the mutant reaches the EXIF parser). Each mutant goes through one entry point,
round-robin: `load_image` (path, bytes, data URI, file object, a lazily opened PIL image), the three image
processors given paths and lazily opened PIL images, `encode.load_rgb` (what bulk jobs and the CLI use), and
the zero-shot pipeline.

The test suite runs a small fixed count (tests/test_hardening_images.py); `make fuzz` runs many:

    .venv/bin/python tests/fuzz_images.py --count 30000 [--seed 0]
"""

from __future__ import annotations

import argparse
import base64
import io
import random
import struct
import sys
import tempfile
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
DEMO_MODEL = Path(__file__).parent.parent / "models" / "siglip-demo-shapes"
PHOTOS = ("rocket.jpg", "chelsea.png", "coffee.png", "astronaut.png")


def exif_block(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "siglip-camera"  # Make
    exif[0x0110] = "model 1"  # Model
    exif[0x0132] = "2026:01:02 03:04:05"  # DateTime
    exif[0x011A] = 72.0  # XResolution
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (48.0, 51.0, 24.0)
    return exif


def seeds() -> list[tuple[str, bytes]]:
    """(format, encoded bytes) of small real photos with EXIF, in four formats."""
    out = []
    for index, name in enumerate(PHOTOS):
        with Image.open(FIXTURES / name) as photo:
            image = photo.convert("RGB").resize((48, 32))
        for fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
            buffer = io.BytesIO()
            image.save(buffer, fmt, exif=exif_block(1 + (index + len(out)) % 8))
            out.append((fmt, buffer.getvalue()))
    return out


def exif_span(fmt: str, data: bytes) -> tuple[int, int] | None:
    """(start, end) of the EXIF payload inside `data`, or None (TIFF: the whole file is tags)."""
    if fmt == "JPEG":
        at = data.find(b"Exif\x00\x00")
        if at < 4:
            return None
        length = struct.unpack(">H", data[at - 2 : at])[0]
        return at + 6, at - 2 + length
    if fmt == "WEBP":
        at = data.find(b"EXIF")
        if at < 0:
            return None
        size = struct.unpack("<I", data[at + 4 : at + 8])[0]
        return at + 8, at + 8 + size
    if fmt == "PNG":
        at = data.find(b"eXIf")
        if at < 4:
            return None
        size = struct.unpack(">I", data[at - 4 : at])[0]
        return at + 4, at + 4 + size
    return 8, len(data)  # TIFF: everything after the header is an IFD or tag data


def _fix_png_crc(fmt: str, data: bytearray) -> bytes:
    if fmt == "PNG":
        at = data.find(b"eXIf")
        if at >= 4:
            size = struct.unpack(">I", data[at - 4 : at])[0]
            crc = zlib.crc32(bytes(data[at : at + 4 + size])) & 0xFFFFFFFF
            data[at + 4 + size : at + 8 + size] = struct.pack(">I", crc)
    return bytes(data)


def mutate(fmt: str, data: bytes, rng: random.Random, exif_only: bool) -> bytes:
    mutant = bytearray(data)
    low, high = (exif_span(fmt, data) or (0, len(data))) if exif_only else (0, len(data))
    if high - low < 2:
        low, high = 0, len(data)
    kind = rng.randrange(4 if not exif_only else 3)
    if kind == 0:  # a few random bytes
        for _ in range(rng.randint(1, 6)):
            mutant[rng.randrange(low, high)] = rng.randrange(256)
    elif kind == 1:  # an interesting 16/32-bit value (sizes, counts, offsets, types)
        at = rng.randrange(low, max(low + 1, high - 4))
        value = rng.choice([0, 1, 2, 5, 7, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000])
        mutant[at : at + 4] = struct.pack(rng.choice(["<I", ">I"]), value)[: min(4, high - at)]
    elif kind == 2:  # a run of random bytes
        at = rng.randrange(low, high)
        length = min(rng.randint(1, 12), high - at)
        mutant[at : at + length] = bytes(rng.randrange(256) for _ in range(length))
    else:  # truncation or duplication, anywhere
        at = rng.randrange(1, len(mutant))
        mutant = mutant[:at] if rng.random() < 0.5 else mutant[:at] + mutant[at - rng.randint(1, at) : at] + mutant[at:]
    return _fix_png_crc(fmt, mutant) if exif_only else bytes(mutant)


def entry_points(folder: Path, with_pipeline: bool) -> dict[str, Callable[[bytes], Any]]:
    """name -> call(mutant bytes): every public way an image enters the library."""
    import siglip
    from siglip.encode import load_rgb
    from siglip.image.loading import load_image
    from siglip.image.processing_siglip2 import Siglip2ImageProcessor

    counter = iter(range(10**9))

    def as_file(data: bytes, suffix: str = ".jpg") -> Path:
        path = folder / f"m{next(counter) % 64}{suffix}"
        path.write_bytes(data)
        return path

    plain, fast, naflex = siglip.SiglipImageProcessor(), siglip.SiglipImageProcessorFast(), Siglip2ImageProcessor()
    points: dict[str, Callable[[bytes], Any]] = {
        "load_image(path)": lambda d: load_image(as_file(d), honor_exif=True),
        "load_image(bytes)": lambda d: load_image(d, honor_exif=True),
        "load_image(data URI)": lambda d: load_image("data:image/jpeg;base64," + base64.b64encode(d).decode()),
        "load_image(file object)": lambda d: load_image(io.BytesIO(d), honor_exif=True),
        "load_image(lazy PIL)": lambda d: load_image(_lazy(d), honor_exif=True),
        "load_rgb(path)": lambda d: load_rgb(as_file(d)),
        "SiglipImageProcessor(path)": lambda d: plain(str(as_file(d)), return_tensors="pt"),
        "SiglipImageProcessor(lazy PIL)": lambda d: plain(_lazy(d), return_tensors="pt"),
        "SiglipImageProcessorFast(path)": lambda d: fast(str(as_file(d)), return_tensors="pt"),
        "Siglip2ImageProcessor(path)": lambda d: naflex(str(as_file(d)), return_tensors="pt"),
    }
    if with_pipeline:
        classifier = siglip.pipeline(model=str(DEMO_MODEL))
        points["pipeline(path)"] = lambda d: classifier(str(as_file(d)), candidate_labels=["a circle", "a square"])
    return points


def _lazy(data: bytes) -> Any:
    """What a user hands over after `Image.open(...)`: a lazily decoded image (opening may already fail)."""
    from siglip.errors import ImageError

    try:
        return Image.open(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - the user's own Image.open failing is not ours to judge
        raise ImageError(f"PIL.Image.open failed: {error}") from None


def run(count: int, seed: int = 0, with_pipeline: bool = True, progress: bool = False) -> dict[str, Any]:
    """Fuzz `count` mutants round-robin over the entry points; returns outcome counts and the untyped failures."""
    from siglip.errors import SiglipError

    rng = random.Random(seed)
    sources = seeds()
    outcomes: Counter[str] = Counter()
    untyped: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points = list(entry_points(Path(tmp), with_pipeline).items())
        for number in range(count):
            fmt, data = sources[number % len(sources)]
            exif_only = number % 2 == 0
            mutant = mutate(fmt, data, rng, exif_only)
            name, call = points[number % len(points)]
            try:
                call(mutant)
                outcomes["ok"] += 1
            except SiglipError:
                outcomes["typed error"] += 1
            except Exception as error:  # noqa: BLE001 - what the fuzz is looking for
                outcomes["UNTYPED"] += 1
                untyped.append(f"{name} [{fmt}, {'exif' if exif_only else 'generic'}]: {type(error).__name__}: {error}")
            if progress and number and number % 1000 == 0:
                print(f"{number} calls, {dict(outcomes)}", file=sys.stderr)
    return {
        "calls": count,
        "outcomes": dict(outcomes),
        "untyped": untyped,
        "entry_points": [name for name, _ in points],
        "seconds": time.perf_counter() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=30000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pipeline", action="store_true")
    args = parser.parse_args()
    result = run(args.count, args.seed, with_pipeline=not args.no_pipeline, progress=True)
    print(
        f"{result['calls']} fuzzed calls over {len(result['entry_points'])} entry points in {result['seconds']:.0f} s"
    )
    print(f"outcomes: {result['outcomes']}")
    for line in result["untyped"][:50]:
        print("UNTYPED", line)
    print(f"{len(result['untyped'])} untyped")
    return 1 if result["untyped"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent.parent / "src"))
    sys.exit(main())
