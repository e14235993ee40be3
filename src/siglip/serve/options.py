"""What a server is told: `ServeOptions` (every option of `create_app` but the model and its collections) and the
`BatchingOptions` of each tower's batcher, built once and passed down typed instead of as loose keywords.

`create_app(model, collections, **kwargs)` builds `ServeOptions(**kwargs)`; `check()` refuses a bad option before
the model loads. Numbers are range-checked by `server.check_options` (the table `siglip serve` checks its flags by).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..prompt_template import check_template
from .security import Limits, check_api_key
from .server import OPTION_RANGES, check_options


@dataclass(frozen=True)
class BatchingOptions:
    """How a `DynamicBatcher` forms batches and when it counts as stalled."""

    max_batch_size: int = 32  # items per model call
    max_wait_ms: float = 5.0  # how long the oldest item waits for a batch to fill
    max_queue: int = 1024  # items that may wait per tower before requests get 503
    stall_timeout_s: float = 60.0  # work waiting this long with no model progress: /readyz turns red


@dataclass(frozen=True)
class ServeOptions:
    """The options of one server (`create_app`); the defaults are `siglip serve`'s."""

    model_name: str | None = None  # the name clients see (default: the model's Hub id / folder)
    max_batch_size: int = 32  # batching: see BatchingOptions
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    request_timeout_s: float = 60.0  # each request must finish within this (else 504)
    stall_timeout_s: float = 30.0
    api_key: str | None = None  # Bearer token every request must carry
    allow_urls: bool = False  # image items may be http(s) URLs
    allow_private_urls: bool = False  # ... pointing at private addresses too
    limits: Limits = field(default_factory=Limits)  # per-request caps
    dtype: Any = "auto"  # how a model given by name loads (runtime.load_model_and_processor)
    device: Any = "auto"
    revision: str | None = None
    use_fast: bool = False
    fast_decode: bool = False
    hypothesis_template: str | None = None  # the zero-shot default (None: the model's own, as siglip.pipeline)
    label_cache_size: int = 4096  # prompt embeddings kept for zero-shot
    decode_workers: int | None = None  # image decoding threads (None: one per core)

    def __post_init__(self) -> None:
        if self.limits is None:  # create_app(limits=None) means the defaults, as it always did
            object.__setattr__(self, "limits", Limits())

    @property
    def batching(self) -> BatchingOptions:
        return BatchingOptions(self.max_batch_size, self.max_wait_ms, self.max_queue, self.stall_timeout_s)

    def check(self) -> ServeOptions:
        """`InputError` for a bad template, API key or number (before anything loads); returns self."""
        if self.hypothesis_template is not None:
            check_template(self.hypothesis_template)
        if self.api_key is not None:
            check_api_key(self.api_key)
        numbers = {name: getattr(self, name) for name in vars(self) if name in OPTION_RANGES}
        check_options(
            {**numbers, **{name: value for name, value in vars(self.limits).items() if name in OPTION_RANGES}}
        )
        return self
