"""Which image formats are decoded: the ones people photograph and scan, unless the caller allows more.

Pillow reads some forty formats, most of them rare (FITS, PSD, ICO, ICNS, JPEG 2000, SGI, SPIDER, TGA, DDS, BLP,
QOI, XBM, MSP, PCX, IM, DIB, ...), each parser one more place for a hostile file to reach. By default only
`DEFAULT_FORMATS` are tried: JPEG (with MPO, the multi-picture JPEG phones write), PNG, WebP, GIF, TIFF and BMP,
plus HEIF and AVIF where a Pillow plugin for them is installed. Anything else is refused with an `ImageError`
that names the format (recognised from its magic bytes only, no parser runs) and how to allow it:

- `load_image(..., allowed_formats=["PNG", "ICO"])` for one call (None: the process default);
- `allow_formats("ICO", "PSD")` to extend the process default (the CLI's ``--allow-format``), or the
  environment variable ``SIGLIP_ALLOW_FORMATS=ICO,PSD``; ``all`` allows every format Pillow reads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

from PIL import Image

from ..errors import ImageError, InputError

DEFAULT_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "AVIF")
ALL = "ALL"
_extra: set[str] = set()
_lock = threading.Lock()


def _from_env() -> set[str]:
    return {name.strip().upper() for name in os.environ.get("SIGLIP_ALLOW_FORMATS", "").split(",") if name.strip()}


def known_formats() -> list[str]:
    """Every format Pillow (with its installed plugins) can open."""
    Image.init()
    return sorted(Image.OPEN)


def allow_formats(*names: str) -> None:
    """Add formats to the process default (e.g. ``allow_formats("ICO")``; ``"all"`` allows every format).

    Raises InputError for a name Pillow does not know."""
    wanted = {name.strip().upper() for name in names if name.strip()}
    unknown = sorted(wanted - set(known_formats()) - {ALL, "MPO"})
    if unknown:
        raise InputError(f"unknown image format {', '.join(unknown)}; Pillow here reads: {', '.join(known_formats())}")
    with _lock:
        _extra.update(wanted)


def reset_allowed_formats() -> None:
    """Back to `DEFAULT_FORMATS` (plus ``SIGLIP_ALLOW_FORMATS``)."""
    with _lock:
        _extra.clear()


def resolve_formats(allowed: Iterable[str] | None) -> tuple[str, ...] | None:
    """The Pillow format ids to try for `allowed` (None: the process default); None means every format."""
    if allowed is None:
        with _lock:
            names = {*DEFAULT_FORMATS, *_extra, *_from_env()}
    elif isinstance(allowed, str):
        names = {allowed.upper()}
    else:
        names = {str(name).upper() for name in allowed}
    if ALL in names:
        return None
    registered = set(known_formats())
    # MPO is opened by the JPEG plugin; a name without an installed plugin (HEIF, AVIF) is skipped.
    return tuple(sorted(name for name in names | ({"JPEG"} if "MPO" in names else set()) if name in registered))


def refused(data_prefix: bytes, name: str, tried: tuple[str, ...]) -> ImageError:
    """The error for bytes none of the `tried` formats accepted: names the format if its magic bytes say."""
    fmt = sniff(data_prefix, exclude=tried)
    allowed = ", ".join(tried)
    if fmt is None:
        return ImageError(
            f"{name} is not an image format siglip reads (allowed: {allowed}): it is corrupt, or in a format not "
            f"decoded by default. To decode another format Pillow reads, pass allowed_formats=[...] "
            f"(CLI: --allow-format NAME, or SIGLIP_ALLOW_FORMATS=NAME)."
        )
    return ImageError(
        f"{name} is a {fmt} file, a format siglip does not decode by default (allowed: {allowed}). If you trust "
        f"it, pass allowed_formats=[..., {fmt!r}] (CLI: --allow-format {fmt}, or SIGLIP_ALLOW_FORMATS={fmt})."
    )


def sniff(prefix: bytes, exclude: Iterable[str] = ()) -> str | None:
    """The format whose magic bytes start `prefix` (Pillow's `accept` checks only: no parser runs), or None."""
    excluded = set(exclude)
    Image.init()
    for fmt in Image.ID:
        factory_accept = Image.OPEN.get(fmt)
        if fmt in excluded or factory_accept is None or factory_accept[1] is None:
            continue
        try:
            if factory_accept[1](prefix) is True:
                return fmt
        except Exception:  # noqa: BLE001, S112 - a magic-byte check that fails is simply no match
            continue
    return None
