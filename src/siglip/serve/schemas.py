"""Request and response bodies (pydantic models: requests are validated with them, and /openapi.json is generated
from both), the JSON error shape, and the typed error every route raises.

Errors are JSON: ``{"error": {"type": "invalid_image", "message": "input[2]: image is corrupt ...",
"param": "input[2]"}}`` with a 4xx/5xx status. The message names the bad field or item; it never carries a
stack trace or a server path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InputError


class RequestError(InputError):
    """An error response: HTTP `status`, machine-readable `type`, the field or item at fault (`param`)."""

    def __init__(self, status: int, type_: str, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.param = status, type_, message, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


class Item(BaseModel):
    """One input of a mixed request: ``{"text": "..."}`` or ``{"image": "<data: URI | base64 | http(s) URL>"}``."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    image: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Item:
        if (self.text is None) == (self.image is None):
            raise ValueError('an item is {"text": "..."} or {"image": "..."}, exactly one of them')
        return self


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings`, the OpenAI request plus image items and `normalize`."""

    model_config = ConfigDict(extra="ignore")  # OpenAI clients also send e.g. "user"
    input: str | list[Any]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    normalize: bool = True
    dimensions: int | None = None


class ClassifyRequest(BaseModel):
    """`POST /v1/classify`: zero-shot scores of image(s) against `candidate_labels`."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = None
    images: list[str] | None = Field(default=None, min_length=1)
    candidate_labels: list[str] | str
    hypothesis_template: str | None = None
    top_k: int | None = Field(default=None, ge=1)
    model: str | None = None

    @model_validator(mode="after")
    def _one_image_field(self) -> ClassifyRequest:
        if (self.image is None) == (self.images is None):
            raise ValueError('give "image" (one) or "images" (a list), exactly one of them')
        return self


class SearchRequest(BaseModel):
    """`POST /v1/search` (and `GET /v1/search?q=...&k=...`): a text or an image query over the collections."""

    model_config = ConfigDict(extra="forbid")
    query: str | None = None
    image: str | None = None
    k: int = Field(default=10, ge=1)
    ann: bool = False
    collection: str | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.query is None) == (self.image is None):
            raise ValueError('give "query" (text) or "image", exactly one of them')
        return self


# ---- responses (documentation only: the routes build these dicts directly, for speed) ----------------------


class ErrorDetail(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer of the JSON routes."""

    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingResponse(BaseModel):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: Usage


class LabelScore(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    model: str
    hypothesis_template: str = Field(description="the prompt template used (the request's, else the server's)")
    results: list[list[LabelScore]] = Field(description="one list per image, best label first")


class SearchHit(BaseModel):
    id: int
    collection: str
    path: str
    row: int
    score: float
    thumbnail: str | None


class SearchResponse(BaseModel):
    model: str
    results: list[SearchHit]


class CollectionInfo(BaseModel):
    name: str
    kind: str
    count: int
    dim: int
    model: str | None


class CollectionsResponse(BaseModel):
    collections: list[CollectionInfo]


class ModelInfo(BaseModel):
    id: str
    object: Literal["model"]
    owned_by: str
    hypothesis_template: str = Field(description="the zero-shot template used when a request gives none")


class ModelsResponse(BaseModel):
    object: Literal["list"]
    data: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    model: str | None = None
    collections: list[CollectionInfo] | None = None
    hypothesis_template: str | None = None
    reason: str | None = None


def location(loc: tuple[Any, ...]) -> str:
    """('input', 3, 'image') -> 'input[3].image'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[any]", "list[str]"):
            continue  # pydantic's names of union members, not fields of the request
        else:
            out += f".{part}" if out else str(part)
    return out


def parse(schema: type[BaseModel], data: Any) -> Any:
    """Validate a decoded JSON body against `schema`; a 400 naming the first bad field otherwise."""
    if not isinstance(data, dict):
        raise RequestError(400, "invalid_request", "the request body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        first = problems[0]
        where = location(tuple(first["loc"])) or None
        message = first["msg"].removeprefix("Value error, ")
        raise RequestError(400, "invalid_request", f"{where}: {message}" if where else message, where) from None
