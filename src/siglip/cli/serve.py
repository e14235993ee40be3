"""`siglip serve [COLLECTION_DIR ...] --model NAME`: the HTTP service (`siglip.serve.create_app` under uvicorn).

Binds 127.0.0.1 unless `--host` says otherwise (and says so at start-up). SIGTERM (or Ctrl-C) stops accepting
connections, lets the requests in flight finish, and exits 0. Every option is checked before the model loads
(numbers in range, the template, the API key, the address free to bind): a mistake is one `siglip: error:`
line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import InputError
from ..prompt_template import check_template
from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DTYPES, add_format_argument

HEADER_TIMEOUT_S, KEEP_ALIVE_TIMEOUT_S = 10.0, 5.0  # serve.server's defaults (not imported: uvicorn)


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
    add_format_argument(model)
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    net.add_argument("--port", type=int, default=8000, help="port, 0-65535 (default: %(default)s)")
    net.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT_S,
        help="close a connection whose request head has not arrived after this many seconds (default: %(default)s)",
    )
    net.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=KEEP_ALIVE_TIMEOUT_S,
        help="close an idle kept-alive connection after this many seconds (default: %(default)s)",
    )
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
    parser.add_argument("--ray", action="store_true", help="deploy on Ray Serve instead (see docs/serving.md)")
    parser.add_argument(
        "--num-replicas", type=int, default=None, help="with --ray: replicas (default: one per GPU, else 1)"
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # The checks first (light imports: no torch, no starlette), so that a mistake is reported at once.
    from ..serve.security import Limits, check_api_key
    from ..serve.server import bind_socket, check_options, run_server

    numbers = ("max_batch_size", "max_wait_ms", "max_queue", "max_body_bytes", "max_items", "max_text_chars")
    numbers += ("max_image_pixels", "port", "header_timeout_s", "keep_alive_timeout_s")
    values = {name: getattr(args, name.removesuffix("_s")) for name in numbers}
    values.update(request_timeout_s=args.request_timeout, stall_timeout_s=args.stall_timeout)
    check_options(values, cli=True)
    if args.num_replicas is not None and args.num_replicas < 1:
        raise InputError(f"--num-replicas must be >= 1, got {args.num_replicas}")
    if args.template is not None:
        check_template(args.template, "--template (hypothesis_template)")
    if args.api_key is not None:
        check_api_key(args.api_key, "--api-key (or SIGLIP_API_KEY)")
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
    try:
        import uvicorn  # noqa: F401 (the extra's HTTP server: its absence is named here)

        from ..serve import create_app
    except ImportError as error:
        raise InputError(f"siglip serve needs its extra: pip install 'siglip[serve]' ({error})") from None
    sock = bind_socket(args.host, args.port)  # before the model loads: a busy port fails at once
    try:
        app = create_app(args.model, args.collections, **options)
        run_server(
            app,
            sock,
            http=args.http,
            loop=args.loop,
            log_level=args.log_level,
            header_timeout_s=args.header_timeout,
            keep_alive_timeout_s=args.keep_alive_timeout,
        )
    finally:
        sock.close()
    return 0
