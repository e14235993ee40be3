"""Running the app under uvicorn with the limits a public server needs, and the range checks of every numeric
serving option (shared by `create_app` and `siglip serve`).

- `bind_socket(host, port)`: the listening address, bound before the model loads, so that a busy port or a bad
  `--host` is one typed error (`siglip: error: ...`, exit 2), not uvicorn's log lines and exit 3.
- header timeout: a connection must deliver a complete request head within `header_timeout_s` of connecting
  (or of its previous response), else it is closed: slowloris clients that drip header bytes, or connect and
  say nothing, cannot hold sockets for ever. uvicorn's own keep-alive timeout closes idle kept-alive
  connections; the request deadline (`request_timeout_s`, 408/504) covers bodies and work.
- a request the HTTP parser refuses gets a JSON 400 like every other error (uvicorn's is plain text), and the
  Authorization header reaches the app as sent (httptools parser; uvicorn strips its trailing whitespace): the
  API key is compared exactly, so "Bearer KEY " is a wrong key (401).
- `check_options`: nan, infinities, negatives, zero where it makes no sense and absurd sizes are refused with
  an `InputError` naming the option (`--port` for the CLI, `port` for the library).
"""

from __future__ import annotations

import errno
import json
import math
import signal
import socket
from typing import Any

from ..errors import InputError

# option -> (CLI flag, lowest, highest, integer, lowest allowed itself). Bounds are sanity limits, not tuning.
OPTION_RANGES: dict[str, tuple[str, float, float, bool, bool]] = {
    "port": ("--port", 0, 65535, True, True),
    "max_batch_size": ("--max-batch-size", 1, 65536, True, True),
    "max_wait_ms": ("--max-wait-ms", 0, 60_000, False, True),
    "max_queue": ("--max-queue", 1, 10_000_000, True, True),
    "request_timeout_s": ("--request-timeout", 0, 86_400, False, False),
    "stall_timeout_s": ("--stall-timeout", 0, 86_400, False, False),
    "header_timeout_s": ("--header-timeout", 0, 3_600, False, False),
    "keep_alive_timeout_s": ("--keep-alive-timeout", 0, 3_600, False, False),
    "label_cache_size": ("--label-cache-size", 0, 10_000_000, True, True),
    "decode_workers": ("--decode-workers", 1, 1024, True, True),
    "max_body_bytes": ("--max-body-bytes", 1, 1 << 34, True, True),
    "max_items": ("--max-items", 1, 10_000_000, True, True),
    "max_text_chars": ("--max-text-chars", 1, 100_000_000, True, True),
    "max_image_pixels": ("--max-image-pixels", 1, 10_000_000_000, True, True),
    "max_labels": ("--max-labels", 1, 1_000_000, True, True),
    "max_top_k": ("--max-top-k", 1, 10_000_000, True, True),
    "max_url_bytes": ("--max-url-bytes", 1, 1 << 34, True, True),
    "url_timeout_s": ("--url-timeout", 0, 3_600, False, False),
}
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_KEEP_ALIVE_TIMEOUT_S = 5.0


def check_option(name: str, value: Any, cli: bool = False) -> None:
    """`InputError` unless `value` (None: unset) is a finite number in the option's range."""
    if value is None:
        return
    flag, lowest, highest, integer, inclusive = OPTION_RANGES[name]
    shown = flag if cli else name
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise InputError(f"{shown} must be {'an integer' if integer else 'a number'}, got {value!r}")
    low_ok = value >= lowest if inclusive else value > lowest
    if not (math.isfinite(value) and low_ok and value <= highest):
        low = f">= {lowest}" if inclusive else f"> {lowest}"
        raise InputError(f"{shown} must be {low} and <= {highest}, got {value!r}")


def check_options(values: dict[str, Any], cli: bool = False) -> None:
    for name, value in values.items():
        check_option(name, value, cli)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening (uvicorn listens once the model is ready)."""
    check_option("port", port, cli=True)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, ValueError) as error:
        raise InputError(f"--host {host!r} is not an address this machine can bind ({error})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        if error.errno == errno.EADDRINUSE:
            reason = "the address is already in use (another server? pick another --port)"
        raise InputError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def protocol_class(http: str, header_timeout_s: float) -> type:
    """uvicorn's HTTP protocol (`http`: auto, httptools or h11) with a request-head timeout."""
    base: type
    if http == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    else:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
        except ImportError:
            if http == "httptools":
                raise InputError("--http httptools needs the httptools package") from None
            from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class HeadTimeoutProtocol(base):  # type: ignore[misc, valid-type]
        """Closes the connection when no complete request head arrives within `header_timeout_s` of the
        connection (or of the previous response): whatever the client drips, the clock keeps running."""

        _head_timer: Any = None

        def on_header(self, name: bytes, value: bytes) -> None:  # httptools only (h11 strips in its parser)
            super().on_header(name, value)
            if name.lower() == b"authorization":
                self.headers[-1] = (b"authorization", value)  # as sent, trailing whitespace included

        def send_400_response(self, msg: str) -> None:
            error = {"type": "invalid_http", "message": f"the request is not valid HTTP/1.1 ({msg.rstrip('.')})"}
            body = json.dumps({"error": error}).encode()
            head = "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            self.transport.write(head.encode() + body)
            self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is in progress (pipelined): the request deadline covers it
            waiting_for = self.cycle  # the head is complete once a new request cycle exists
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout, waiting_for)

        def _head_timeout(self, waiting_for: Any) -> None:
            self._head_timer = None
            if self.cycle is not waiting_for:
                return  # a request head arrived since: its body and work are under the request deadline
            if not self.transport.is_closing():
                self.transport.close()

    HeadTimeoutProtocol.__name__ = f"HeadTimeout{base.__name__}"
    return HeadTimeoutProtocol


def run_server(
    app: Any,
    sock: socket.socket,
    *,
    http: str = "auto",
    loop: str = "asyncio",
    log_level: str = "info",
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_TIMEOUT_S,
    graceful_shutdown_s: float = 60,
) -> None:
    """Serve `app` on the bound `sock` until SIGTERM/SIGINT (which drain the requests in flight; not an error)."""
    import uvicorn

    check_options({"header_timeout_s": header_timeout_s, "keep_alive_timeout_s": keep_alive_timeout_s})
    config = uvicorn.Config(
        app,
        http=protocol_class(http, header_timeout_s),
        loop=loop,
        log_level=log_level,
        timeout_keep_alive=keep_alive_timeout_s,
        timeout_graceful_shutdown=graceful_shutdown_s,
    )

    class Server(uvicorn.Server):
        # uvicorn re-raises the stop signal after its graceful shutdown, which would end the process with the
        # signal's status: a SIGTERM/SIGINT stop is the normal end here (exit 0).
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list) and sig in (signal.SIGTERM, signal.SIGINT) and sig in captured:
                captured.remove(sig)

    Server(config).run(sockets=[sock])
