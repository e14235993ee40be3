"""What makes the server safe to expose: the API key, the size caps, and the policy for image URLs.

- `ApiKeyMiddleware`: `Authorization: Bearer KEY` on every route except the public ones (/healthz, /readyz
  and the static web page, which holds no data), compared in constant time.
- `Limits`: body bytes, items per request, text length, image pixels (read from the header, before decoding),
  labels per request, URL download bytes and time.
- `UrlPolicy`: URL inputs are refused unless allowed. When allowed, only http(s), downloaded by
  `siglip.fetch.fetch_url` (total deadline, byte cap, redirects to other schemes refused, no proxy, the
  connection made to the very address that was checked) with this module's address check on every hop (the
  first URL and each redirect): every address the host resolves to must be outside the loopback / private /
  link-local / multicast / reserved ranges, unless private addresses are allowed.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..errors import ImageError

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for; each one refuses with a 4xx naming the cap."""

    max_body_bytes: int = 32 * 1024 * 1024
    max_items: int = 256
    max_text_chars: int = 10_000
    max_image_pixels: int = 50_000_000
    max_labels: int = 256
    max_top_k: int = 1000
    max_url_bytes: int = 16 * 1024 * 1024
    url_timeout_s: float = 10.0


class TooLargeError(ImageError):
    """An image over the server's pixel cap (or a decompression bomb), refused from its header (HTTP 413)."""


class UrlNotAllowedError(ImageError):
    """An image URL the server's policy refuses: URLs off, a non-http(s) scheme, or a private address."""


# ---- the API key ------------------------------------------------------------------------------------------


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class ApiKeyMiddleware:
    """ASGI middleware: 401 unless `Authorization: Bearer <api_key>` (constant-time compare) on non-public routes."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        body = json.dumps(
            {"error": {"type": "unauthorized", "message": "missing or wrong API key: send 'Authorization: Bearer KEY'"}}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# ---- URL inputs -------------------------------------------------------------------------------------------


def is_private_address(address: str) -> bool:
    """Whether an IP address is one a server must not be tricked into calling: loopback, private, link-local,
    multicast, reserved or unspecified (IPv4-mapped IPv6 addresses are judged by their IPv4 part)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


class UrlPolicy:
    """Which image URLs the server fetches, and the fetch itself (`fetch(url) -> bytes`)."""

    def __init__(self, allow_urls: bool = False, allow_private_urls: bool = False, limits: Limits | None = None):
        self.allow_urls, self.allow_private = allow_urls, allow_private_urls
        self.limits = limits or Limits()

    def check_url(self, url: str) -> None:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise UrlNotAllowedError(f"only http(s) image URLs are fetched, not {scheme or 'this'}: {url[:200]}")
        if not self.allow_urls:
            raise UrlNotAllowedError("image URLs are disabled on this server (start it with --allow-urls)")

    def check_address(self, host: str, address: Any) -> None:
        if not self.allow_private and is_private_address(str(address)):
            raise UrlNotAllowedError(
                f"image URL host {host} resolves to a private, loopback or link-local address; refused "
                "(the server allows those only with --allow-private-urls)"
            )

    def fetch(self, url: str) -> bytes:
        """The body of `url` under this policy: `siglip.fetch.fetch_url` (total deadline, byte cap, http(s)-only
        redirects, connection to the checked address) with this policy's address check on every hop."""
        from ..fetch import fetch_url

        self.check_url(url)
        limits = self.limits
        fetched = fetch_url(
            url, timeout=limits.url_timeout_s, max_bytes=limits.max_url_bytes, check_address=self.check_address
        )
        return fetched.data
