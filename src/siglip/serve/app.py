"""The HTTP API of `siglip serve`: `create_app(...)` builds a Starlette ASGI app around one model.

Routes (JSON in and out; every error is ``{"error": {"type": str, "message": str, "param": str?}}``):

- ``GET /healthz`` -> ``{"status": "ok"}`` while the process is up (never needs the API key).
- ``GET /readyz`` -> 200 ``{"status": "ready", "model": str, "collections": [...], "hypothesis_template": str}``, or 503
  ``{"status": "unavailable", "reason": str}`` when the model worker is wedged (work pending, no progress for
  ``stall_timeout_s``) or the server is starting/stopping. Never needs the API key.
- ``GET /metrics`` -> Prometheus text: requests/errors by route and type, latency and batch-size histograms,
  queue depth, label-cache hits.
- ``GET /v1/models`` -> ``{"object": "list", "data": [{"id": str, "object": "model", "owned_by": "siglip",
  "hypothesis_template": str}]}`` (the zero-shot template used when a request gives none).
- ``GET /v1/collections`` -> ``{"collections": [{"name", "kind", "count", "dim", "model"}]}``.
- ``POST /v1/embeddings`` (OpenAI-compatible) ``{"input": str | [str | {"text": str} | {"image": str}],
  "model"?: str, "encoding_format"?: "float" | "base64", "normalize"?: bool = true}`` ->
  ``{"object": "list", "model": str, "data": [{"object": "embedding", "index": int, "embedding": [float] | str}],
  "usage": {"prompt_tokens": int, "total_tokens": int}}``. An image is a ``data:`` URI, bare base64 or (with
  ``allow_urls``) an http(s) URL. Text is always tokenised padded to the model's 64 positions; ``usage`` counts
  those positions. base64 is little-endian float32, as OpenAI sends it.
- ``POST /v1/classify`` ``{"image": str} | {"images": [str]}, "candidate_labels": [str] | "a,b",
  "hypothesis_template"?: str, "top_k"?: int`` -> ``{"model": str, "hypothesis_template": str, "results": [[{"label":
  str, "score": float}]]}`` (one sorted list per image; the scores of `siglip.pipeline`, whose default template,
  the model's own, is also the server's unless `--template` says otherwise).
- ``POST /v1/search`` ``{"query": str} | {"image": str}, "k"?: 10, "ann"?: false, "collection"?: str`` and
  ``GET /v1/search?q=...&k=10&ann=false&collection=...`` -> ``{"model": str, "results": [{"id": int,
  "collection": str, "path": str, "row": int, "score": float, "thumbnail": "/v1/items/{id}/thumbnail" | null}]}``.
- ``GET /v1/items/{id}/thumbnail?size=256`` -> image/jpeg (64, 128, 256 or 512 px box) of an image item.
- ``GET /openapi.json``: this API as OpenAPI 3.1, generated from the pydantic models (`openapi`).
- ``GET /`` and ``/static/...``: the web page (no API key needed to load it; its queries send the key).

Status codes: 400 bad input (``param`` names the field or ``input[i]`` item), 401 API key, 404, 408 body too slow, 413 caps
(body, items, text length, pixels), 415 not JSON, 503 + ``Retry-After`` queue full, 504 deadline, 500 internal (no
details; a bug). Request decoding and per-item checks live in `requests`: a bad item fails before any batch.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match, Route

from ..encode import text_length
from ..errors import FetchError, ImageError, InputError
from .batcher import QueueFullError
from .collections import THUMBNAIL_SIZES, ServedCollections
from .engine import Engine, ItemError, load_model
from .metrics import ServeMetrics
from .openapi import openapi_document
from .options import ServeOptions
from .requests import (
    ClientGone,
    check_request_template,
    check_text,
    classify_labels,
    embedding_items,
    read_json,
)
from .schemas import ClassifyRequest, EmbeddingRequest, RequestError, SearchRequest, parse
from .security import ApiKeyMiddleware, TooLargeError, UrlNotAllowedError, UrlPolicy

logger = logging.getLogger("siglip.serve")
RETRY_AFTER_S = 1


def create_app(
    model: Any,
    collections: Sequence[str | os.PathLike] = (),
    *,
    processor: Any = None,
    options: ServeOptions | None = None,
    **kwargs: Any,
) -> Starlette:
    """The ASGI app serving `model` (a Hub id / folder, or a loaded model with `processor=`) and the
    `collections` (folders of `siglip embed ... --out DIR`). Run it with uvicorn (`siglip serve` does).

    The options are a `ServeOptions`, given as `options=` or as its fields in keywords (`max_batch_size=32`,
    `api_key=...`; keywords override fields of `options`). Batching: `max_batch_size` items per model call,
    waiting at most `max_wait_ms` for a batch to fill; `max_queue` items may wait per tower (text, image) before
    requests get 503. Each request must finish within `request_timeout_s` (else 504); `/readyz` turns red when
    work waits `stall_timeout_s` with no model progress. Security: `api_key` (Bearer token), `limits` (caps),
    image URLs only with `allow_urls` (and private addresses only with `allow_private_urls`). `dtype`, `device`,
    `revision`, `use_fast`, `fast_decode` apply when `model` is a name. `hypothesis_template` is the zero-shot
    default when a request gives none (default: the model's own, as `siglip.pipeline` takes it). Every number is
    range-checked (`InputError`), before the model loads.
    """
    options = (replace(options, **kwargs) if options is not None else ServeOptions(**kwargs)).check()
    metrics = ServeMetrics()
    name = options.model_name or (str(model) if isinstance(model, str | os.PathLike) else None)
    model, processor = load_model(
        model,
        processor,
        dtype=options.dtype,
        device=options.device,
        revision=options.revision,
        use_fast=options.use_fast,
        fast_decode=options.fast_decode,
    )
    name = name or getattr(model.config, "name_or_path", None) or "siglip"
    limits = options.limits
    engine = Engine(
        model,
        processor,
        metrics=metrics,
        limits=limits,
        url_policy=UrlPolicy(options.allow_urls, options.allow_private_urls, limits),
        batching=options.batching,
        decode_workers=options.decode_workers,
        label_cache_size=options.label_cache_size,
    )
    library = ServedCollections(list(collections), dim=engine.text_dim)
    template = options.hypothesis_template or engine.classifier.default_template  # the pipeline's: the model's own
    api = _Api(engine, library, metrics, limits, name, options.request_timeout_s, template)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await engine.warm_up()
        engine.start()
        api.accepting = True
        try:
            yield
        finally:
            api.accepting = False
            await engine.stop()

    app = Starlette(
        routes=api.routes(),
        lifespan=lifespan,
        # Exception itself goes to Starlette's outer error middleware (logged there); the expected failures are
        # answered by the inner one and not logged as crashes.
        exception_handlers={
            kind: api.error_response for kind in (InputError, QueueFullError, ClientGone, HTTPException, Exception)
        },
    )
    if options.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=options.api_key)
    app.add_middleware(_MetricsMiddleware, metrics=metrics, routes=app.routes)
    app.state.engine, app.state.collections, app.state.metrics = engine, library, metrics
    return app


class _Api:
    """The route handlers, sharing the engine, collections, metrics and caps."""

    def __init__(self, engine, library, metrics, limits, name, request_timeout_s, template) -> None:
        self.engine, self.library, self.metrics, self.limits = engine, library, metrics, limits
        self.name, self.request_timeout, self.template = name, request_timeout_s, template
        self.accepting = False
        self._openapi: dict[str, Any] | None = None

    def routes(self) -> list[Any]:
        routes = [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/collections", self.collections, methods=["GET"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/classify", self.classify, methods=["POST"]),
            Route("/v1/search", self.search, methods=["GET", "POST"]),
            Route("/v1/items/{item_id:int}/thumbnail", self.thumbnail, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]
        try:
            from .static_files import static_routes
        except ImportError:  # the web page is optional: the API works without it
            return routes
        return routes + static_routes()

    # ---- health and metrics ---------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        reason = None if self.accepting else "the server is starting or stopping"
        reason = reason or self.engine.stalled()
        self.metrics.ready.set(0.0 if reason else 1.0)
        if reason:
            return JSONResponse({"status": "unavailable", "reason": f"model worker: {reason}"}, status_code=503)
        ready = {"status": "ready", "model": self.name, "collections": self.library.describe()}
        return JSONResponse({**ready, "hypothesis_template": self.template})

    async def prometheus(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def models(self, request: Request) -> Response:
        model = {"id": self.name, "object": "model", "owned_by": "siglip", "hypothesis_template": self.template}
        return JSONResponse({"object": "list", "data": [model]})

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = openapi_document()
        return JSONResponse(self._openapi)

    async def collections(self, request: Request) -> Response:
        return JSONResponse({"collections": self.library.describe()})

    # ---- model routes ---------------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        body = parse(EmbeddingRequest, await self.read_json(request))
        items = embedding_items(body, self.limits)
        if body.dimensions is not None and body.dimensions != self.engine.text_dim:
            raise RequestError(
                400, "invalid_request", f"dimensions: this model gives {self.engine.text_dim}", "dimensions"
            )
        rows = await self.guarded(request, self._embed(items, body.normalize))
        data = [
            {"object": "embedding", "index": i, "embedding": _encode_row(row, body.encoding_format)}
            for i, row in enumerate(rows)
        ]
        tokens = text_length(self.engine.model.config) * sum(k == "text" for k, _ in items)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "model": self.name, "data": data, "usage": usage})

    async def _embed(self, items: list[tuple[str, str]], normalize: bool) -> np.ndarray:
        texts = [i for i, (kind, _) in enumerate(items) if kind == "text"]
        images = [i for i, (kind, _) in enumerate(items) if kind == "image"]
        rows: list[Any] = [None] * len(items)

        async def images_part() -> Any:
            try:
                return await self.engine.embed_images([items[i][1] for i in images], normalize)
            except ItemError as error:  # renumber: the item's index in the request, not among the images
                raise _item_error(f"input[{images[error.index]}]", error.error) from None

        parts = await asyncio.gather(
            self.engine.embed_texts([items[i][1] for i in texts], normalize) if texts else _none(),
            images_part() if images else _none(),
        )
        for positions, embeds in zip((texts, images), parts):
            for position, row in zip(positions, embeds if embeds is not None else []):
                rows[position] = row.numpy()
        return np.stack(rows)

    async def classify(self, request: Request) -> Response:
        body = parse(ClassifyRequest, await self.read_json(request))
        field, images = ("image", [body.image]) if body.image is not None else ("images", body.images)
        if len(images) > self.limits.max_items:
            raise RequestError(
                413, "too_many_items", f"{len(images)} images, the cap is {self.limits.max_items}", field
            )
        labels = classify_labels(body, self.limits)
        template = self.template
        if body.hypothesis_template is not None:
            template = check_request_template(body.hypothesis_template, self.limits.max_text_chars)
        try:
            scores = await self.guarded(request, self.engine.classify_scores(images, labels, template))
        except ItemError as error:
            raise _item_error(f"images[{error.index}]" if field == "images" else "image", error.error) from None
        results = []
        for row in scores.tolist():
            ranked = sorted(zip(row, labels), key=lambda pair: -pair[0])[: body.top_k]
            results.append([{"label": label, "score": score} for score, label in ranked])
        return JSONResponse({"model": self.name, "hypothesis_template": template, "results": results})

    async def search(self, request: Request) -> Response:
        if request.method == "GET":
            params = request.query_params
            data: dict[str, Any] = {"query": params.get("q")}
            for key, convert in (("k", int), ("ann", _flag), ("collection", str)):
                if key in params:
                    try:
                        data[key] = convert(params[key])
                    except ValueError:
                        raise RequestError(400, "invalid_request", f"{key}: bad value {params[key]!r}", key) from None
        else:
            data = await self.read_json(request)
        body = parse(SearchRequest, data)
        if body.k > self.limits.max_top_k:
            raise RequestError(400, "invalid_request", f"k: at most {self.limits.max_top_k}", "k")
        if body.query is not None:
            check_text(body.query, "query", self.limits.max_text_chars)

        async def run() -> list[dict[str, Any]]:
            if body.query is not None:
                query = await self.engine.embed_texts([body.query])
            else:
                try:
                    query = await self.engine.embed_images([body.image])
                except ItemError as error:
                    raise _item_error("image", error.error) from None
            search = self.library.search
            return await asyncio.to_thread(search, query[0].numpy(), body.k, ann=body.ann, name=body.collection)

        return JSONResponse({"model": self.name, "results": await self.guarded(request, run())})

    async def thumbnail(self, request: Request) -> Response:
        item_id = request.path_params["item_id"]
        try:
            wanted = int(request.query_params.get("size", "256"))
        except ValueError:
            raise RequestError(400, "invalid_request", "size: an integer", "size") from None
        size = next((s for s in THUMBNAIL_SIZES if s >= wanted), THUMBNAIL_SIZES[-1])
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(self.engine.decode_pool, self.library.thumbnail, item_id, size)
        except KeyError:
            raise RequestError(404, "not_found", f"no image item with id {item_id}", "id") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    # ---- plumbing ---------------------------------------------------------------------------------------
    async def read_json(self, request: Request) -> Any:
        return await read_json(request, self.limits, self.request_timeout)

    async def guarded(self, request: Request, work: Any) -> Any:
        """Await `work`, cancelling it (and so its queued items) when the client disconnects or the deadline
        passes (504)."""
        if not self.accepting:
            work.close()
            raise QueueFullError("the server is stopping")
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(_wait_disconnect(request))
        try:
            done, _ = await asyncio.wait({task, watcher}, timeout=self.request_timeout, return_when="FIRST_COMPLETED")
        finally:
            watcher.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if watcher in done:
            raise ClientGone()
        raise RequestError(504, "timeout", f"the request took longer than {self.request_timeout}s; retry later")

    async def error_response(self, request: Request, error: Exception) -> Response:
        """Every failure as JSON (`RequestError` shape), counted in /metrics by route and type."""
        if isinstance(error, ClientGone):
            self.metrics.errors.inc(_route(request), "client_closed")
            return Response(status_code=499)
        if isinstance(error, RequestError):
            failure = error
        elif isinstance(error, QueueFullError):
            failure = RequestError(503, "overloaded", str(error), headers={"Retry-After": str(RETRY_AFTER_S)})
        elif isinstance(error, HTTPException):
            kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
            failure = RequestError(error.status_code, kind, str(error.detail))
        elif isinstance(error, UrlNotAllowedError):
            failure = RequestError(400, "url_not_allowed", str(error))
        elif isinstance(error, ImageError | FetchError):
            failure = RequestError(400, "invalid_image", str(error))
        elif isinstance(error, InputError):
            failure = RequestError(400, "invalid_request", str(error))
        else:
            logger.exception("internal error on %s", request.url.path)
            failure = RequestError(500, "internal_error", "internal server error (see the server log)")
        self.metrics.errors.inc(_route(request), failure.type)
        return JSONResponse(failure.body(), status_code=failure.status, headers=failure.headers)


def _item_error(param: str, error: InputError) -> RequestError:
    if isinstance(error, UrlNotAllowedError):
        kind = "url_not_allowed"
    else:
        kind = "invalid_image" if isinstance(error, ImageError | FetchError) else "invalid_request"
    status = 413 if isinstance(error, TooLargeError) else 400
    return RequestError(status, kind, f"{param}: {error}", param)


async def _none() -> None:
    return None


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


def _encode_row(row: np.ndarray, encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")
    return float32_decimals(row).tolist()


def float32_decimals(row: np.ndarray) -> np.ndarray:
    """`row`'s float32 values rounded to 9 significant decimal digits, as float64: each prints in at most 9
    digits (a float32 widened to float64 prints 17) and reads back as the same float32, since 9 digits identify
    every float32 (FLT_DECIMAL_DIG): a third less JSON to write, send and parse."""
    values = np.asarray(row, dtype=np.float32).astype(np.float64)
    magnitude = np.abs(values)
    exponent = np.floor(np.log10(magnitude, out=np.zeros_like(values), where=magnitude > 0))
    digits = 8 - exponent
    exact = np.abs(digits) <= 22  # 10**k is exact in float64 for |k| <= 22; other values stay as they are
    scale = np.power(10.0, np.where(exact, digits, 0))
    return np.where(exact, np.round(values * scale) / scale, values)


def _route(request_or_scope: Any) -> str:
    scope = request_or_scope.scope if isinstance(request_or_scope, Request) else request_or_scope
    return scope.get("siglip.route", "other")


class _MetricsMiddleware:
    """Counts requests by route template and status, their latency and how many are in flight."""

    def __init__(self, app: Any, metrics: ServeMetrics, routes: list[Any]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def _template(self, scope: dict) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "other") or "other"
        return "other"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["siglip.route"] = self._template(scope)
        status = {"code": 500}
        started = time.perf_counter()

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.add(1)
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.add(-1)
            self.metrics.requests.inc(route, str(status["code"]))
            self.metrics.latency.observe(time.perf_counter() - started, route)
