"""Image loading and RGB conversion: every way an image enters the library, with typed errors.

`load_image` turns a PIL image, a path, an http(s) URL, a `data:image/...;base64,` URI, raw bytes or a binary
file object into a fully decoded PIL image (first frame of animated or multi-page files), and raises
`ImageError` naming the source for anything unreadable: missing, corrupt or truncated files, unsupported
formats, decompression bombs and zero-size images. Whatever a decoder raises on bad bytes (Pillow's plugins
also raise `TypeError`, `KeyError`, `struct.error`, ...) becomes an `ImageError`. It keeps the image's mode
(RGBA, L, P, ...): RGB conversion is the image processor's job (`to_rgb`), exactly as when the reference is
handed `Image.open(path)`.

Memory cap: before decoding, the header's width x height and mode give the bytes the decoded frame and its RGB
copy will take (`decoded_bytes`: Pillow stores RGB in 4 bytes a pixel); beyond `MAX_DECODED_BYTES` (256 MiB by
default, e.g. a 64-megapixel RGB photo; environment variable ``SIGLIP_MAX_DECODED_BYTES``, or the
`max_decoded_bytes` argument) the image is refused with `ImageError`. This is on top of Pillow's pixel-count
limit (`Image.MAX_IMAGE_PIXELS`), which a 68-byte PNG of 1 x 89,000,000 pixels passes while needing ~356 MB.
URLs are downloaded by `siglip.fetch.fetch_url` (a total deadline, http(s) redirects only).

`to_rgb` is the reference's conversion: images with an alpha band or a transparency key are composited onto
white, everything else goes through Pillow's `convert("RGB")`. What that means for wide modes:

- ``I;16`` and ``I`` (16/32-bit integers): values are clipped to [0, 255], not rescaled, so a typical 16-bit
  image comes out almost white. Rescale it yourself (e.g. ``arr >> 8``) if that is not what you want.
- ``F`` (32-bit float): clipped to [0, 255] and truncated towards zero (0.6 -> 0, 254.7 -> 254).
- ``1`` becomes 0/255, ``CMYK`` uses Pillow's naive (profile-free) CMYK -> RGB formula, ``P`` maps through the
  palette (composited on white when the palette has a transparency key), ``LA``/``PA``/``RGBA`` composite on white.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import FetchError, ImageError
from ..fetch import DEFAULT_MAX_BYTES, fetch_url
from ..files import read_regular
from .formats import refused, resolve_formats

ImageSource = Image.Image | str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]


def _max_decoded_bytes_from_env() -> int:
    value = os.environ.get("SIGLIP_MAX_DECODED_BYTES", "")
    return int(value) if value.strip().isdigit() else 256 * 1024 * 1024


# Largest decoded frame + RGB copy accepted (bytes); set it, or SIGLIP_MAX_DECODED_BYTES, to change the default.
MAX_DECODED_BYTES = _max_decoded_bytes_from_env()
# Largest image file read from disk (bytes); URLs have their own cap (`max_bytes`).
MAX_FILE_BYTES = 1 << 30
# Bytes per pixel of Pillow's in-memory storage, by mode (every mode not listed takes 4).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    """Bytes Pillow needs to hold a decoded `size` image in `mode`, plus its RGB copy unless it already is RGB."""
    pixels = size[0] * size[1]
    frame = pixels * _PIXEL_BYTES.get(mode, 4)
    return frame if mode == "RGB" else frame + pixels * 4


def has_alpha(image: Image.Image) -> bool:
    """True when `image` carries transparency: an alpha band (RGBA, LA, PA, La, ...) or a palette/colour key."""
    return "A" in image.getbands() or image.info.get("transparency") is not None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB the way the reference does (transparency composited onto white)."""
    if has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _describe(source: Any) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, str) and source.startswith("data:"):
        return source[:40] + "..."
    name = getattr(source, "name", None)
    return str(name if name is not None and not isinstance(source, (str, os.PathLike)) else source)


def _read_source(source: Any, timeout: float, max_bytes: int) -> bytes | IO[bytes]:
    """Bytes or a binary file object holding the encoded image."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        try:
            return fetch_url(source, timeout=timeout, max_bytes=max_bytes).data
        except FetchError as error:
            raise ImageError(f"could not download image {source}: {error}") from None
    if isinstance(source, str) and source.startswith("data:"):
        try:
            return base64.b64decode(source.split(",", 1)[1], validate=False)
        except (IndexError, binascii.Error) as error:
            raise ImageError(f"invalid data URI {_describe(source)}: {error}") from None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir() or not os.path.exists(path):
            what = "is a directory, not an image file" if path.is_dir() else "does not exist"
            raise ImageError(f"image file {path} {what}.")
        # Regular files only (a FIFO or /dev/zero named x.jpg is refused, never read), at most MAX_FILE_BYTES.
        return read_regular(path, MAX_FILE_BYTES, "image file", ImageError)
    if hasattr(source, "read"):
        return source
    raise ImageError(
        f"cannot load an image from {type(source).__name__}: pass a PIL image, a path, an http(s) URL, "
        f"a data URI, bytes or a binary file object."
    )


def check_image(image: Image.Image, name: str = "image", max_decoded_bytes: int | None = None) -> Image.Image:
    """Raise `ImageError` for zero-size images, images over Pillow's MAX_IMAGE_PIXELS and images whose decoded
    frame (+ RGB copy) would take more than `max_decoded_bytes` (default `MAX_DECODED_BYTES`); else return it.

    Only the size and mode are read, so it runs on a freshly opened file before any pixel is decoded."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name} has zero size ({width}x{height}).")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ImageError(
            f"{name} has {width}x{height} = {width * height} pixels, more than Image.MAX_IMAGE_PIXELS={limit} "
            f"(possible decompression bomb). Raise PIL.Image.MAX_IMAGE_PIXELS if you trust this file."
        )
    cap = MAX_DECODED_BYTES if max_decoded_bytes is None else max_decoded_bytes
    needed = decoded_bytes(image.size, image.mode)
    if needed > cap:
        raise ImageError(
            f"{name} ({width}x{height}, mode {image.mode}) needs {needed / 2**20:.0f} MiB to decode and convert, "
            f"more than the limit of {cap / 2**20:.0f} MiB (max_decoded_bytes; possible decompression bomb). "
            f"Raise siglip.image.loading.MAX_DECODED_BYTES or SIGLIP_MAX_DECODED_BYTES if you trust this file."
        )
    return image


def _decode(
    data: bytes | IO[bytes],
    name: str,
    draft_size: tuple[int, int] | None = None,
    max_decoded_bytes: int | None = None,
    allowed_formats: Iterable[str] | None = None,
) -> Image.Image:
    """Open and fully decode the first frame; every decoder failure becomes an ImageError naming `name`.
    Only `allowed_formats` are tried (`image.formats`); other formats are refused before any parser runs."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    formats = resolve_formats(allowed_formats)
    with decoder_errors(name):
        try:
            image = Image.open(stream, formats=formats)
        except UnidentifiedImageError:
            if formats is None:
                raise
            try:
                stream.seek(0)
                prefix = stream.read(16)
            except (OSError, ValueError):
                prefix = b""
            raise refused(prefix, name, formats) from None
        if draft_size is not None and image.format == "JPEG":
            check_image(image, name, max_decoded_bytes=2**62)  # pixel limit; the memory cap applies to the draft
            image.draft("RGB", draft_size)  # DCT scaling: decode at 1/2, 1/4 or 1/8 size, never below draft_size
        check_image(image, name, max_decoded_bytes)  # before decoding, so a bomb never allocates its pixels
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animated GIF / multi-page TIFF: the first frame, as Image.open presents it
        image.load()
    return image


@contextmanager
def decoder_errors(name: str) -> Iterator[None]:
    """Any exception a decoder raises inside the block becomes an `ImageError` naming the image.

    Pillow's plugins raise OSError, SyntaxError or ValueError for most bad data, but also TypeError, KeyError,
    IndexError, struct.error, ZeroDivisionError, ... from deep inside a format's parser (found by fuzzing); a
    file is untrusted input, so all of them are caught (BaseExceptions such as KeyboardInterrupt are not)."""
    try:
        yield
    except ImageError:
        raise
    except Exception as error:  # noqa: BLE001 - see the docstring
        raise _typed(error, name) from None


def _typed(error: Exception, name: str) -> ImageError:
    if isinstance(error, UnidentifiedImageError):
        return ImageError(f"{name} is not an image format Pillow can read (unsupported or corrupt).")
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageError(f"{name} is too large (possible decompression bomb): {error}")
    if isinstance(error, OSError) and "Ghostscript" in str(error):
        return ImageError(
            f"{name} is PostScript (EPS), which Pillow renders with Ghostscript, and Ghostscript (the `gs` "
            f"program) is not installed: install it (e.g. apt-get install ghostscript) or convert the file to PNG."
        )
    if isinstance(error, MemoryError):
        return ImageError(f"{name} could not be decoded: out of memory.")
    return ImageError(f"{name} is corrupt or truncated ({type(error).__name__}: {error}).")


def _pil_name(image: Image.Image) -> str:
    filename = getattr(image, "filename", "")
    return f"PIL image {filename}" if filename else "PIL image"


def load_image(
    source: ImageSource,
    *,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    honor_exif: bool = False,
    draft_size: tuple[int, int] | None = None,
    max_decoded_bytes: int | None = None,
    allowed_formats: Iterable[str] | None = None,
) -> Image.Image:
    """Load `source` as a decoded PIL image in its own mode (use `to_rgb` or a processor to get RGB).

    Args:
        source: a PIL image (checked, decoded if it was opened lazily, and returned), a path, an http(s) URL, a
            ``data:image/...;base64,`` URI, raw bytes or a binary file object.
        timeout: seconds for a URL download in total (a deadline, not per read); redirects go to http(s) only.
        max_bytes: largest accepted URL download.
        honor_exif: apply the EXIF orientation tag (`ImageOps.exif_transpose`). Off by default because the
            reference ignores it for the images it is handed (a PIL image from ``Image.open``).
        draft_size: (width, height) for fast approximate decoding: a JPEG is decoded at the smallest of 1/8,
            1/4, 1/2 or full scale that is still at least this large in both dimensions (libjpeg's DCT scaling,
            `Image.draft`), several times faster on large photos; the pixels then differ slightly from a full
            decode followed by a resize. Other formats, and PIL images, are unaffected. None (default): exact.
        max_decoded_bytes: refuse images whose decoded frame plus RGB copy would exceed this many bytes
            (`decoded_bytes`), checked from the header before decoding. None: `MAX_DECODED_BYTES` (256 MiB).
        allowed_formats: Pillow format names to decode (e.g. ``["PNG", "ICO"]``, ``["all"]``). None: the process
            default, JPEG/PNG/WebP/GIF/TIFF/BMP (+ HEIF/AVIF with a plugin); see `image.formats`. Ignored for
            PIL images (the caller opened them).

    Raises:
        ImageError: missing/corrupt/truncated/unsupported file (whatever the decoder or the EXIF parser raised),
            a format not allowed, a FIFO/device/other non-regular file, a file over `MAX_FILE_BYTES`, failed
            download, decompression bomb or an image over the memory cap, zero size.
    """
    name = _describe(source)
    owned = not isinstance(source, Image.Image)
    if not owned:
        name = _pil_name(source)
        # One lock per PIL image: threads handed the same lazily opened image must not decode it at once
        # (Pillow's load() is not thread-safe; the second thread would read a half-consumed file).
        with _image_lock(source), decoder_errors(name):
            image = check_image(source, name, max_decoded_bytes)
            image.load()  # a lazily opened file decodes here (a no-op for a loaded image), with typed errors
            if honor_exif:
                image = _apply_orientation(image, owned=False)
        return image
    name = f"image {name}"
    image = _decode(_read_source(source, timeout, max_bytes), name, draft_size, max_decoded_bytes, allowed_formats)
    if honor_exif:
        with decoder_errors(name):  # a corrupt EXIF block raises SyntaxError, struct.error, ... from Pillow
            image = _apply_orientation(image, owned=True)
    return image


_LOCKS_GUARD = threading.Lock()


def _image_lock(image: Image.Image) -> threading.Lock:
    """The image's own lock, kept on the image itself (PIL images are unhashable; a copy gets a new one)."""
    lock = image.__dict__.get("_siglip_load_lock")
    if lock is None:
        with _LOCKS_GUARD:
            lock = image.__dict__.setdefault("_siglip_load_lock", threading.Lock())
    return lock


def _apply_orientation(image: Image.Image, owned: bool) -> Image.Image:
    """`ImageOps.exif_transpose` without its full-size copy when there is nothing to do (most photos): an image
    we decoded ourselves is transposed in place; a caller's image is only copied when it must be rotated.
    Callers run it under `decoder_errors`: a corrupt EXIF block is an ImageError like any corrupt data."""
    if owned:
        ImageOps.exif_transpose(image, in_place=True)
        return image
    if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:  # 1 (or absent): upright
        return image
    return ImageOps.exif_transpose(image)
