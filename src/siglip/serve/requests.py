"""From bytes on the wire to checked request items: everything about one request that can be refused before any
of its items joins a batch.

- the body: its content type and charset, the body cap (413, refused before it is all read), the deadline for
  it to arrive (408), UTF-8, JSON syntax and nesting depth (400; a 100k-deep body is refused, not a
  RecursionError);
- the request model (pydantic, `schemas`), then each item on its own: text length (413) and validity (a lone
  surrogate such as "\\ud800" is not text a tokenizer can take: 400), the prompt template, image strings left to
  the decoder (which fails per item, before the batch);
- an image item's payload (`image_payload`: data URI, bare base64 or a URL the policy allows), read on a decode
  thread.

Every refusal is a `RequestError` whose `param` names the field or the item (`input[3]`, `candidate_labels[1]`,
`hypothesis_template`, `content-type`), so that one bad item fails its own request and never a batch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request

from ..errors import ImageError
from ..prompt_template import template_problem
from .schemas import ClassifyRequest, EmbeddingRequest, Item, RequestError
from .security import Limits, UrlPolicy

LARGE_JSON = 1 << 20  # bodies above this are parsed on a worker thread
DRAIN_FACTOR = 2  # a body up to this many times the cap is read (and dropped) before the 413
MAX_JSON_DEPTH = 32  # the deepest request is 4 levels; this leaves room and refuses hostile nesting
# Bodies are JSON whatever the client labels them: curl -d sends form-urlencoded, some clients text/plain.
JSON_MEDIA_TYPES = frozenset({"application/json", "text/json", "text/plain", "application/x-www-form-urlencoded"})
CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


class ClientGone(Exception):
    """The client disconnected: its work was cancelled and no response is sent."""


# ---- the body ------------------------------------------------------------------------------------------------


def check_content_type(value: str | None) -> None:
    """415 unless the body is labelled as JSON (or as something JSON is commonly sent as) in UTF-8."""
    if not value:
        return
    media_type, *params = (part.strip() for part in value.split(";"))
    media_type = media_type.lower()
    if media_type not in JSON_MEDIA_TYPES and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise RequestError(
            415,
            "unsupported_media_type",
            f"the body must be JSON (application/json), not {value[:100]!r}",
            "content-type",
        )
    for param in params:
        key, _, charset = param.partition("=")
        if key.strip().lower() == "charset" and charset.strip().strip('"').lower() not in CHARSETS:
            raise RequestError(
                415, "unsupported_media_type", f"the body must be UTF-8, not charset={charset[:40]!r}", "content-type"
            )


async def read_json(request: Request, limits: Limits, timeout: float) -> Any:
    """The body as JSON, refused past the body cap (413) before it is all read, or when it does not arrive
    within the request deadline (408: a client dripping its body cannot hold a connection for ever)."""
    check_content_type(request.headers.get("content-type"))
    try:
        body = await asyncio.wait_for(_read_body(request, limits.max_body_bytes), timeout)
    except TimeoutError:
        raise RequestError(408, "timeout", f"the body did not arrive within {timeout}s") from None
    if len(body) > LARGE_JSON:
        return await asyncio.to_thread(decode_json, bytes(body))
    return decode_json(body)


def decode_json(body: bytes | bytearray) -> Any:
    """UTF-8 JSON of at most `MAX_JSON_DEPTH` levels (NaN and Infinity refused): a 400 otherwise."""
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, "invalid_json", f"the body is not UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError(400, "invalid_json", f"the body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON ({_json_reason(error)})") from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise RequestError(400, "invalid_json", f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_reason(error: ValueError) -> str:
    return str(error)[:200] if isinstance(error, json.JSONDecodeError) or "not JSON" in str(error) else "ValueError"


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


async def _read_body(request: Request, cap: int) -> bytearray:
    declared = request.headers.get("content-length", "")
    too_large = RequestError(413, "body_too_large", f"the body exceeds this server's cap of {cap} bytes")
    if declared.isdigit() and int(declared) > DRAIN_FACTOR * cap:
        raise too_large  # answered at once; the connection is closed with the body unread
    body, seen = bytearray(), 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_FACTOR * cap:
                raise too_large
            if seen <= cap:
                body += chunk
    except ClientDisconnect:
        raise ClientGone() from None
    if seen > cap:  # read to the end (not kept) so that the client, still sending, surely gets the 413
        raise too_large
    return body


# ---- items -----------------------------------------------------------------------------------------------------


def check_text(text: str, where: str, max_chars: int) -> str:
    """A text item as the tokenizer will take it: within the length cap (413) and valid Unicode (400)."""
    if len(text) > max_chars:
        raise RequestError(
            413, "text_too_long", f"{where}: {len(text)} characters, this server's cap is {max_chars}", where
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RequestError(
            400,
            "invalid_text",
            f"{where}: character {error.start} is an unpaired surrogate ({text[error.start]!r}), not valid Unicode",
            where,
        ) from None
    return text


def check_request_template(template: str, max_chars: int) -> str:
    """A request's `hypothesis_template`: the library's template check, as a 400 naming the field."""
    problem = template_problem(template)
    if problem is not None:
        raise RequestError(400, "invalid_request", f"hypothesis_template {problem}", "hypothesis_template")
    return check_text(template, "hypothesis_template", max_chars)


def embedding_items(request: EmbeddingRequest, limits: Limits) -> list[tuple[str, str]]:
    """The request's inputs as ("text" | "image", value) pairs, each checked; a 4xx naming the first bad item."""
    values = [request.input] if isinstance(request.input, str) else request.input
    if not values:
        raise RequestError(400, "invalid_request", "input is empty: give a string or a list of inputs", "input")
    if len(values) > limits.max_items:
        raise RequestError(
            413, "too_many_items", f"input has {len(values)} items, this server's cap is {limits.max_items}", "input"
        )
    items = []
    for index, value in enumerate(values):
        where = f"input[{index}]" if not isinstance(request.input, str) else "input"
        if isinstance(value, str):
            kind, content = "text", value
        elif isinstance(value, dict):
            try:
                item = Item.model_validate(value)
            except ValidationError:
                raise RequestError(
                    400, "invalid_request", f'{where}: an item is {{"text": "..."}} or {{"image": "..."}}', where
                ) from None
            kind, content = ("text", item.text) if item.text is not None else ("image", item.image)
        else:
            raise RequestError(
                400,
                "invalid_request",
                f"{where}: expected a string or an object with 'text' or 'image', got {type(value).__name__} "
                "(token ids are not accepted: send the text)",
                where,
            )
        items.append((kind, check_text(content, where, limits.max_text_chars) if kind == "text" else content))
    return items


def classify_labels(body: ClassifyRequest, limits: Limits) -> list[str]:
    """The candidate labels (a list, or one comma-separated string), each checked."""
    labels = body.candidate_labels
    labels = [label.strip() for label in labels.split(",")] if isinstance(labels, str) else labels
    if not labels or len(labels) > limits.max_labels:
        raise RequestError(
            400, "invalid_request", f"give 1 to {limits.max_labels} candidate labels", "candidate_labels"
        )
    return [check_text(label, f"candidate_labels[{i}]", limits.max_text_chars) for i, label in enumerate(labels)]


_URLSAFE = str.maketrans("-_", "+/")


def image_payload(source: str, url_policy: UrlPolicy) -> bytes:
    """The encoded image of a request item: a data URI, bare base64, or an http(s) URL (fetched if `url_policy`
    allows it). Runs on a decode thread: a URL fetch blocks."""
    if source.startswith(("http://", "https://")) or "://" in source[:16]:
        return url_policy.fetch(source)
    if source.startswith("data:"):
        header, comma, payload = source.partition(",")
        if not comma:
            raise ImageError("image is a data: URI without the ',' that starts its payload (data:MIME;base64,...)")
        if not header.endswith(";base64"):
            raise ImageError("image is a data: URI that is not base64 (data:MIME;base64,...)")
    else:
        payload = source
    try:  # standard or URL-safe alphabet; whitespace (line breaks) ignored
        return base64.b64decode(payload.translate(_URLSAFE).encode("ascii"), validate=False)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ImageError("image is neither a data: URI, valid base64 nor an http(s) URL") from None
