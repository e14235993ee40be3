"""Download a URL with a total deadline, a byte cap and checked redirects: the library's one HTTP client.

`fetch_url` exists because `urllib.request.urlopen` fits untrusted URLs badly: its timeout applies to each
socket operation (a server that drips one byte a second keeps a download alive for ever), and its redirect
handler follows redirects to other schemes (``http://`` -> ``ftp://``) with no hook to refuse them. Here:

- `timeout` (a finite number of seconds > 0) is a deadline for the whole exchange (DNS, connect, TLS, headers,
  body, every redirect): the name is resolved on a worker thread that is waited for only until the deadline (a
  slow resolver cannot stretch it), and a watchdog shuts the socket down when it passes, whatever the server does;
- every hop (the first URL and each redirect target) must be http(s), pass `allow_redirect_to` (redirect
  targets only) and `check_address` (each address the host name resolves to, before connecting), so that a
  caller such as an HTTP service can refuse private addresses and re-check every redirect;
- the connection goes to the address that was checked (no second DNS lookup that could answer differently);
- a body longer than `max_bytes` (announced or actual) is refused without reading the rest.

No proxy is used (`HTTP_PROXY` is ignored) and no cookies are kept. Failures raise `FetchError` naming the URL.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from .errors import FetchError

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SCHEMES = ("http", "https")
USER_AGENT = "siglip"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# check_address(host, address): raise (any exception; a SiglipError passes through unchanged) to refuse.
AddressCheck = Callable[[str, IPAddress], None]
# allow_redirect_to(url): False refuses a redirect to that (absolute, http(s)) URL.
RedirectCheck = Callable[[str], bool]


@dataclass
class FetchedURL:
    """A downloaded body and where it finally came from (after redirects)."""

    url: str
    status: int
    content_type: str | None
    data: bytes


def fetch_url(
    url: str,
    *,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    allow_redirect_to: RedirectCheck | None = None,
    check_address: AddressCheck | None = None,
) -> FetchedURL:
    """GET `url` and return its body, all within `timeout` seconds in total.

    Args:
        timeout: seconds for everything, redirects included; past it the download is abandoned.
        max_bytes: largest accepted body.
        max_redirects: redirects followed before giving up.
        allow_redirect_to: called with each redirect target (already known to be http or https); return False
            to refuse it. Redirects to any other scheme are always refused, before any connection.
        check_address: called with (host, address) for every address a hop's host resolves to, before
            connecting; raise to refuse (e.g. private or loopback addresses for a public service).

    Raises:
        FetchError: bad URL or scheme, refused redirect or address, HTTP error status, too many redirects,
            a body over `max_bytes`, a network failure, or the deadline passing.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (0 < timeout < math.inf):
        raise FetchError(f"timeout must be a finite number of seconds > 0, got {timeout!r}.")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise FetchError(f"max_bytes must be an integer >= 0, got {max_bytes!r}.")
    deadline = time.monotonic() + timeout
    current = url
    for _ in range(max_redirects + 1):
        parts = _split(current, url)
        status, headers, data = _exchange(parts, deadline, timeout, max_bytes, check_address, url)
        if status in REDIRECT_STATUSES and headers.get("location"):
            target = urllib.parse.urljoin(current, headers["location"])
            if urllib.parse.urlsplit(target).scheme.lower() not in SCHEMES:
                raise FetchError(f"{url} redirects to {target}: only http and https redirects are followed.")
            if allow_redirect_to is not None and not allow_redirect_to(target):
                raise FetchError(f"{url} redirects to {target}, which is not allowed.")
            current = target
            continue
        if status >= 400:
            raise FetchError(f"{url} answered HTTP {status}.")
        return FetchedURL(current, status, headers.get("content-type"), data)
    raise FetchError(f"{url} redirected more than max_redirects={max_redirects} times.")


@dataclass
class _Parts:
    scheme: str
    host: str
    port: int
    target: str  # path and query, sent in the request line
    url: str


def _split(current: str, original: str) -> _Parts:
    try:
        split = urllib.parse.urlsplit(current)
        port = split.port
    except ValueError as error:
        raise FetchError(f"invalid URL {current}: {error}") from None
    scheme = split.scheme.lower()
    if scheme not in SCHEMES:
        raise FetchError(f"{original}: only http and https URLs can be fetched, not {scheme or 'no scheme'}.")
    if not split.hostname:
        raise FetchError(f"invalid URL {current}: no host.")
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    return _Parts(scheme, split.hostname, port or (443 if scheme == "https" else 80), target, current)


def _lookup(host: str, port: int, deadline: float, original: str) -> list[tuple]:
    """`socket.getaddrinfo` on a daemon thread, waited for until `deadline` only: the system resolver has no
    timeout of its own (a slow DNS server would otherwise stretch the deadline); a late answer is dropped."""
    outcome: list = []

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as error:  # handed to the caller below
            outcome.append(error)

    worker = threading.Thread(target=lookup, name="siglip-dns", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if not outcome:
        raise _timed_out(original)
    if isinstance(outcome[0], OSError | ValueError):  # gaierror, a bad IDNA label, a NUL in the name
        raise FetchError(f"cannot resolve the host of {original} ({host}): {outcome[0]}") from None
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _resolve(parts: _Parts, deadline: float, check_address: AddressCheck | None, original: str) -> list[IPAddress]:
    """Every address the host resolves to (within the deadline), each passed through `check_address` (all
    must pass)."""
    infos = _lookup(parts.host, parts.port, deadline, original)
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if check_address is not None:
        for address in addresses:
            check_address(parts.host, address)
    return addresses


def _connect(parts: _Parts, addresses: list[IPAddress], deadline: float, original: str) -> socket.socket:
    error: OSError | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            return socket.create_connection((str(address), parts.port), timeout=remaining)
        except OSError as failure:
            error = failure
    if error is None:
        raise _timed_out(original)
    raise FetchError(f"cannot connect to {original}: {error}") from None


def _exchange(
    parts: _Parts,
    deadline: float,
    timeout: float,
    max_bytes: int,
    check_address: AddressCheck | None,
    original: str,
) -> tuple[int, dict[str, str], bytes]:
    """One request/response on a fresh connection, cut off at `deadline`; the body is read only for a 2xx."""
    addresses = _resolve(parts, deadline, check_address, original)
    sock = _connect(parts, addresses, deadline, original)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # wakes any blocked recv, TLS or not
        except OSError:
            pass

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.host)
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parts.host, parts.port, timeout=timeout)
        connection.sock = sock  # already connected to the checked address
        connection.request("GET", parts.target, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        response = connection.getresponse()
        headers = {key.lower(): value for key, value in response.getheaders()}
        data = b""
        if 200 <= response.status < 300:
            data = _read_body(response, headers, max_bytes, original)
        if expired.is_set():  # a body without Content-Length simply ends when the socket is shut down
            raise _timed_out(original, timeout)
        return response.status, headers, data
    except FetchError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as error:
        if expired.is_set() or isinstance(error, TimeoutError):
            raise _timed_out(original, timeout) from None
        raise FetchError(f"could not download {original}: {type(error).__name__}: {error}") from None
    finally:
        watchdog.cancel()
        sock.close()


def _read_body(response: http.client.HTTPResponse, headers: dict[str, str], max_bytes: int, original: str) -> bytes:
    announced = headers.get("content-length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        raise FetchError(f"{original} is {announced} bytes, larger than max_bytes={max_bytes}.")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read1(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"{original} is larger than max_bytes={max_bytes}.")
        chunks.append(chunk)
    if response.length:  # the server announced more than it sent before closing (or before the deadline)
        raise http.client.IncompleteRead(b"".join(chunks), response.length)
    return b"".join(chunks)


def _timed_out(original: str, timeout: float | None = None) -> FetchError:
    within = f" within timeout={timeout}s" if timeout is not None else " before the deadline"
    return FetchError(f"{original} did not finish downloading{within} (the timeout covers the whole download).")
