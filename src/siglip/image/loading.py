"""Image loading and RGB conversion: every way an image enters the library, with typed errors.

`load_image` turns a PIL image, a path, an http(s) URL, a `data:image/...;base64,` URI, raw bytes or a binary
file object into a fully decoded PIL image (first frame of animated or multi-page files), and raises
`ImageError` naming the source for anything unreadable: missing, corrupt or truncated files, unsupported
formats, decompression bombs and zero-size images. It keeps the image's mode (RGBA, L, P, ...): RGB
conversion is the image processor's job (`to_rgb`), exactly as when the reference is handed `Image.open(path)`.

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
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # URL downloads larger than this are refused
ImageSource = Image.Image | str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]


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


def _fetch_url(url: str, timeout: float, max_bytes: int) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "siglip-image-loader"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as error:
        raise ImageError(f"could not download image {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ImageError(f"could not download image {url} (timeout {timeout}s): {reason}") from None
    if len(data) > max_bytes:
        raise ImageError(f"image {url} is larger than max_bytes={max_bytes}; raise max_bytes to accept it.")
    return data


def _read_source(source: Any, timeout: float, max_bytes: int) -> bytes | IO[bytes]:
    """Bytes or a binary file object holding the encoded image."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return _fetch_url(source, timeout, max_bytes)
    if isinstance(source, str) and source.startswith("data:"):
        try:
            return base64.b64decode(source.split(",", 1)[1], validate=False)
        except (IndexError, binascii.Error) as error:
            raise ImageError(f"invalid data URI {_describe(source)}: {error}") from None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            what = "is a directory, not an image file" if path.is_dir() else "does not exist"
            raise ImageError(f"image file {path} {what}.")
        try:
            return path.read_bytes()
        except OSError as error:
            raise ImageError(f"could not read image file {path}: {error}") from None
    if hasattr(source, "read"):
        return source
    raise ImageError(
        f"cannot load an image from {type(source).__name__}: pass a PIL image, a path, an http(s) URL, "
        f"a data URI, bytes or a binary file object."
    )


def check_image(image: Image.Image, name: str = "image") -> Image.Image:
    """Raise `ImageError` for zero-size images or images larger than Pillow's MAX_IMAGE_PIXELS; else return it."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name} has zero size ({width}x{height}).")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ImageError(
            f"{name} has {width}x{height} = {width * height} pixels, more than Image.MAX_IMAGE_PIXELS={limit} "
            f"(possible decompression bomb). Raise PIL.Image.MAX_IMAGE_PIXELS if you trust this file."
        )
    return image


def _decode(data: bytes | IO[bytes], name: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open and fully decode the first frame; every Pillow failure becomes an ImageError naming `name`."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        image = Image.open(stream)
        check_image(image, name)  # before decoding, so a bomb never allocates its pixels
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)  # DCT scaling: decode at 1/2, 1/4 or 1/8 size, never below draft_size
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animated GIF / multi-page TIFF: the first frame, as Image.open presents it
        image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image format Pillow can read (unsupported or corrupt).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{name} is too large (possible decompression bomb): {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as error:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated"), SyntaxError
        # ("broken PNG file") or ValueError, depending on the codec.
        raise ImageError(f"{name} is corrupt or truncated ({type(error).__name__}: {error}).") from None
    return image


def load_image(
    source: ImageSource,
    *,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    honor_exif: bool = False,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Load `source` as a decoded PIL image in its own mode (use `to_rgb` or a processor to get RGB).

    Args:
        source: a PIL image (checked and returned), a path, an http(s) URL, a ``data:image/...;base64,`` URI,
            raw bytes or a binary file object.
        timeout: seconds before a URL download is abandoned.
        max_bytes: largest accepted URL download.
        honor_exif: apply the EXIF orientation tag (`ImageOps.exif_transpose`). Off by default because the
            reference ignores it for the images it is handed (a PIL image from ``Image.open``).
        draft_size: (width, height) for fast approximate decoding: a JPEG is decoded at the smallest of 1/8,
            1/4, 1/2 or full scale that is still at least this large in both dimensions (libjpeg's DCT scaling,
            `Image.draft`), several times faster on large photos; the pixels then differ slightly from a full
            decode followed by a resize. Other formats, and PIL images, are unaffected. None (default): exact.

    Raises:
        ImageError: missing/corrupt/truncated/unsupported file, failed download, decompression bomb, zero size.
    """
    name = _describe(source)
    if isinstance(source, Image.Image):
        image = check_image(source, name="PIL image")
    else:
        image = _decode(_read_source(source, timeout, max_bytes), f"image {name}", draft_size)
    if honor_exif:
        image = _apply_orientation(image, owned=not isinstance(source, Image.Image))
    return image


def _apply_orientation(image: Image.Image, owned: bool) -> Image.Image:
    """`ImageOps.exif_transpose` without its full-size copy when there is nothing to do (most photos): an image
    we decoded ourselves is transposed in place; a caller's image is only copied when it must be rotated."""
    if owned:
        ImageOps.exif_transpose(image, in_place=True)
        return image
    if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:  # 1 (or absent): upright
        return image
    return ImageOps.exif_transpose(image)
