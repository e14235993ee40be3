"""What makes the server safe to expose: the API key, the size caps, and the policy for image URLs.

- `ApiKeyMiddleware`: `Authorization: Bearer KEY` on every route except the public ones (/healthz, /readyz
  and the static web page, which holds no data), compared byte for byte in constant time: a key with extra
  whitespace, another case or a second Authorization header is a wrong key (401). `check_api_key` refuses, at
  start-up, a key that HTTP cannot carry unchanged (surrounding whitespace, control or non-ASCII characters).
- `Limits`: body bytes, items per request, text length, image pixels (read from the header, before decoding),
  labels per request, URL download bytes and time.
- `UrlPolicy`: URL inputs are refused unless allowed. When allowed, only http(s), downloaded by
  `siglip.fetch.fetch_url` (total deadline, byte cap, redirects to other schemes refused, no proxy, the
  connection made to the very address that was checked) with this module's address check on every hop (the
  first URL and each redirect): every address the host resolves to must be outside the loopback / private /
  link-local / multicast / reserved ranges, unless private addresses are allowed.
  "Private" means every address that is not globally routable (`ipaddress`'s `is_global`: loopback, RFC 1918,
  carrier-grade NAT 100.64.0.0/10 with its cloud metadata addresses, link-local, benchmarking, documentation,
  reserved ...), multicast, `EXTRA_BLOCKED` below, and IPv6 addresses that embed a private IPv4 one
  (IPv4-mapped, NAT64, 6to4, Teredo).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..errors import ImageError, InputError

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
# Refused whatever the running Python's `is_global` says of them (its tables changed across versions).
EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598): 100.100.100.200 is a cloud metadata address
        "192.0.0.0/24",
        "198.18.0.0/15",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "100::/64",  # discard-only
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


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


def check_api_key(key: str, name: str = "api_key") -> str:
    """`key` if HTTP carries it unchanged in `Authorization: Bearer KEY`, else `InputError`: header values lose
    their surrounding whitespace on the way, and control or non-ASCII characters are refused or mangled, so such
    a key could never match what a client sends."""
    if not isinstance(key, str) or not key:
        raise InputError(f"{name} must be a non-empty string")
    if key != key.strip() or not all(" " <= char <= "~" for char in key):
        raise InputError(
            f"{name} must be printable ASCII without surrounding whitespace (HTTP cannot carry it unchanged); "
            f"got {len(key)} characters"
        )
    return key


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class ApiKeyMiddleware:
    """ASGI middleware: 401 unless `Authorization: Bearer <api_key>` (constant-time compare) on non-public routes."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            return await self.app(scope, receive, send)
        given = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(given) == 1 and hmac.compare_digest(given[0], self.expected):
            return await self.app(scope, receive, send)
        body = json.dumps(
            {"error": {"type": "unauthorized", "message": "missing or wrong API key: send 'Authorization: Bearer KEY'"}}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# ---- URL inputs -------------------------------------------------------------------------------------------


def is_private_address(address: str) -> bool:
    """Whether an IP address is one a server must not be tricked into calling: anything not globally routable
    (loopback, private, carrier-grade NAT, link-local, reserved, unspecified, ...), multicast, `EXTRA_BLOCKED`,
    or an IPv6 address that embeds such an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(inner is not None and is_private_address(str(inner)) for inner in embedded):
            return True
        if ip.ipv4_mapped is not None or ip in NAT64:
            return False  # judged by the IPv4 address it carries, which is public
    return bool(not ip.is_global or ip.is_multicast or any(ip in network for network in EXTRA_BLOCKED))


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
                f"image URL host {host} resolves to a private or otherwise non-global address ({address}); refused "
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
