"""`siglip serve [COLLECTION_DIR ...] --model NAME`: the HTTP service (`siglip.serve.create_app` under uvicorn).

Binds 127.0.0.1 unless `--host` says otherwise (and says so at start-up). SIGTERM (or Ctrl-C) stops accepting
connections, lets the requests in flight finish, and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from ..errors import InputError
from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DTYPES


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "serve",
        help="serve embeddings, zero-shot and search over HTTP (with a web page)",
        description="An HTTP service: /v1/embeddings (OpenAI-compatible), /v1/classify, /v1/search, a web page at /.",
    )
    parser.add_argument("collections", nargs="*", metavar="COLLECTION_DIR", help="`siglip embed ... --out DIR` folders")
    model = parser.add_argument_group("model")
    model.add_argument("--model", "-m", default=DEFAULT_MODEL, help="Hub id or local folder (default: %(default)s)")
    model.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    model.add_argument("--device", default=DEFAULT_DEVICE, help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    model.add_argument("--dtype", default="auto", choices=sorted(DTYPES), help="weights/activations dtype")
    model.add_argument("--fast-decode", action="store_true", help="decode JPEGs at a reduced scale (approximate)")
    model.add_argument("--fast-preprocess", action="store_true", help="batched torch image resize (approximate)")
    model.add_argument("--template", default=None, help="default zero-shot hypothesis template, e.g. 'a photo of {}'")
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    net.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    net.add_argument(
        "--http", default="auto", choices=["auto", "httptools", "h11"], help="uvicorn's HTTP parser (auto: httptools)"
    )
    # asyncio's loop: with the model and decode threads waking it, it served 8-20 % more than uvloop on 2 cores
    # (benchmarks/results_serve.md)
    net.add_argument(
        "--loop", default="asyncio", choices=["auto", "uvloop", "asyncio"], help="event loop (default: %(default)s)"
    )
    batching = parser.add_argument_group("batching")
    batching.add_argument("--max-batch-size", type=int, default=32, help="items per model batch (default: 32)")
    batching.add_argument("--max-wait-ms", type=float, default=5.0, help="wait for a batch to fill (default: 5)")
    batching.add_argument("--max-queue", type=int, default=1024, help="items waiting per tower before 503")
    batching.add_argument("--request-timeout", type=float, default=60.0, help="per-request deadline, s (504)")
    batching.add_argument("--stall-timeout", type=float, default=30.0, help="/readyz red after this long stalled")
    security = parser.add_argument_group("security")
    security.add_argument(
        "--api-key", default=os.environ.get("SIGLIP_API_KEY"), help="Bearer token required (env SIGLIP_API_KEY)"
    )
    security.add_argument("--allow-urls", action="store_true", help="accept http(s) image URLs (off by default)")
    security.add_argument("--allow-private-urls", action="store_true", help="also loopback/private URL addresses")
    security.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024, help="request body cap")
    security.add_argument("--max-items", type=int, default=256, help="inputs per request cap")
    security.add_argument("--max-text-chars", type=int, default=10_000, help="characters per text cap")
    security.add_argument("--max-image-pixels", type=int, default=50_000_000, help="pixels per image cap")
    parser.add_argument("--ray", action="store_true", help="deploy on Ray Serve instead (see the README)")
    parser.add_argument(
        "--num-replicas", type=int, default=None, help="with --ray: replicas (default: one per GPU, else 1)"
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import Limits, create_app
    except ImportError as error:
        raise InputError(f"siglip serve needs its extra: pip install 'siglip[serve]' ({error})") from None
    for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_items", "max_text_chars", "max_image_pixels"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_items=args.max_items,
        max_text_chars=args.max_text_chars,
        max_image_pixels=args.max_image_pixels,
    )
    options = dict(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        request_timeout_s=args.request_timeout,
        stall_timeout_s=args.stall_timeout,
        api_key=args.api_key,
        allow_urls=args.allow_urls,
        allow_private_urls=args.allow_private_urls,
        limits=limits,
        dtype=args.dtype,
        device=args.device,
        revision=args.revision,
        use_fast=args.fast_preprocess,
        fast_decode=args.fast_decode,
        **({"hypothesis_template": args.template} if args.template else {}),
    )
    where = "this machine only" if args.host in ("127.0.0.1", "localhost", "::1") else "REACHABLE FROM THE NETWORK"
    print(f"siglip serve: binding {args.host}:{args.port} ({where}; --host changes it)", file=sys.stderr)
    if args.api_key is None and where != "this machine only":
        print("siglip serve: warning: no --api-key: anyone who can reach the port can use it", file=sys.stderr)
    if args.ray:  # the same app, as Ray Serve replicas
        from ..serve.ray_deployment import run_cli

        return run_cli(args, options)
    app = create_app(args.model, args.collections, **options)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http=args.http,
        loop=args.loop,
        log_level=args.log_level,
        timeout_graceful_shutdown=60,
    )
    _GracefulServer(config).run()
    return 0


class _GracefulServer:
    """uvicorn's server, except that a SIGTERM/SIGINT stop is a normal end (exit 0): uvicorn re-raises the
    signal after its graceful shutdown, which would end the process with the signal's status instead."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list) and sig in (signal.SIGTERM, signal.SIGINT) and sig in captured:
                    captured.remove(sig)

        self.server = Server(config)

    def run(self) -> None:
        self.server.run()
