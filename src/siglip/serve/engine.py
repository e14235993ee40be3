"""The serving engine: a `Backend` (the PyTorch model), a text and an image batcher on one model thread, decode
worker threads, and the bounded label-embedding cache of zero-shot classification.

Request handlers only `await` the engine: decoding and preprocessing run on `decode_pool` threads, model
batches on the single `model_executor` thread (inside `torch.inference_mode()`), so the event loop never
blocks. Numbers come from the library's own code paths: text goes through `encode.encode_texts` (always padded
to the model's 64 positions), images through `encode.load_rgb` + the model's processor, zero-shot logits
through the pipeline's `logits`, so the server gives what `siglip.pipeline` and `siglip.Index` give.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from ..encode import draft_size, load_rgb
from ..errors import ImageError, InputError
from ..image.formats import refused, resolve_formats
from ..modeling.model import l2_normalize
from ..threads import default_workers
from ..zero_shot import pipeline
from .backend import Backend, TorchBackend
from .batcher import DynamicBatcher
from .metrics import ServeMetrics
from .options import BatchingOptions
from .requests import image_payload
from .security import Limits, TooLargeError, UrlPolicy


def load_model(
    model: Any,
    processor: Any = None,
    *,
    dtype: Any = "auto",
    device: Any = "auto",
    revision: str | None = None,
    use_fast: bool = False,
    fast_decode: bool = False,
) -> tuple[Any, Any]:
    """(model, processor) in eval mode: `model` is a Hub id / folder (loaded here, outside inference mode) or a
    loaded model, which then needs its `processor`."""
    if isinstance(model, str | os.PathLike):
        from ..runtime import load_model_and_processor

        return load_model_and_processor(
            model,
            dtype=dtype,
            device=device,
            revision=revision,
            use_fast=use_fast,
            fast_decode=fast_decode,
            processor=processor,
        )
    if processor is None:
        raise InputError("create_app(model=<loaded model>) needs processor= as well")
    return model.eval(), processor


class LabelCache:
    """Prompt text -> normalised text embedding, least recently used dropped beyond `capacity`."""

    def __init__(self, capacity: int, metrics: ServeMetrics) -> None:
        self.capacity, self.metrics = capacity, metrics
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        metrics.cache_size.set(lambda: float(len(self._entries)))

    def get(self, prompt: str) -> torch.Tensor | None:
        embedding = self._entries.get(prompt)
        self.metrics.cache.inc("hit" if embedding is not None else "miss")
        if embedding is not None:
            self._entries.move_to_end(prompt)
        return embedding

    def put(self, prompt: str, embedding: torch.Tensor) -> None:
        self._entries[prompt] = embedding
        self._entries.move_to_end(prompt)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


class Engine:
    """A loaded model + processor served through two dynamic batchers that run its `backend` (by default the
    model itself, `TorchBackend`); the processor prepares images, the model's config and logit parameters give
    the embedding width and the zero-shot scores."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        metrics: ServeMetrics,
        limits: Limits,
        url_policy: UrlPolicy,
        batching: BatchingOptions | None = None,
        decode_workers: int | None = None,
        label_cache_size: int = 4096,
        backend: Backend | None = None,
    ) -> None:
        self.model, self.processor = model.eval(), processor
        self.backend = backend or TorchBackend(self.model, processor)
        self.metrics, self.limits, self.url_policy = metrics, limits, url_policy
        self.classifier = pipeline(model=self.model, processor=processor)  # its logits(): the pipeline's numbers
        self.text_dim = model.config.text_config.projection_size or model.config.text_config.hidden_size
        self.model_executor = ThreadPoolExecutor(1, thread_name_prefix="siglip-model")
        self.decode_pool = ThreadPoolExecutor(decode_workers or default_workers(), thread_name_prefix="siglip-decode")
        batching = batching or BatchingOptions()
        self.text = DynamicBatcher("text", self.backend.embed_texts, self.model_executor, batching, metrics=metrics)
        self.image = DynamicBatcher("image", self.backend.embed_images, self.model_executor, batching, metrics=metrics)
        self.labels = LabelCache(label_cache_size, metrics)
        self.max_pending_decodes = batching.max_queue
        self._pending_decodes = 0
        self._draft = draft_size(processor)

    # ---- life cycle -------------------------------------------------------------------------------------
    async def warm_up(self) -> None:
        """Run both towers once at batch sizes 1 and 2 before the first request (kernel set-up, weight packing,
        first-call allocations), so that neither the first client nor the first small batches pay for it."""
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (128, 128, 128)).save(buffer, format="PNG")
        image = await asyncio.get_running_loop().run_in_executor(
            self.decode_pool, self.prepare_image, buffer.getvalue()
        )

        def run() -> None:
            for size in (1, 2):
                self.backend.embed_texts(["warm-up"] * size)
                self.backend.embed_images([image] * size)

        await asyncio.get_running_loop().run_in_executor(self.model_executor, run)

    def start(self) -> None:
        self.text.start()
        self.image.start()

    async def stop(self) -> None:
        await self.text.stop()
        await self.image.stop()
        self.model_executor.shutdown(wait=True)
        self.decode_pool.shutdown(wait=True, cancel_futures=True)

    def stalled(self) -> str | None:
        return self.text.stalled() or self.image.stalled()

    # ---- decoding (worker threads) ------------------------------------------------------------------------
    def check_pixels(self, data: bytes) -> None:
        """Refuse images over the pixel cap from their header, before any pixel is decoded."""
        formats = resolve_formats(None)  # the formats the decoder accepts: another format's parser never runs
        try:
            with Image.open(io.BytesIO(data), formats=formats) as header:
                width, height = header.size
        except UnidentifiedImageError:
            if formats is None:
                raise ImageError("image is not a format Pillow can read") from None
            raise refused(data[:16], "image", formats) from None
        except Image.DecompressionBombError:
            raise TooLargeError(
                f"image is too large (decompression bomb; cap {self.limits.max_image_pixels} pixels)"
            ) from None
        except Exception as error:  # Pillow's plugins raise many types on bad headers
            raise ImageError(f"image is not a format Pillow can read ({type(error).__name__})") from None
        if width * height > self.limits.max_image_pixels:
            raise TooLargeError(
                f"image is {width}x{height} = {width * height} pixels, above this server's cap of "
                f"{self.limits.max_image_pixels}"
            )

    def prepare_image(self, source: str | bytes) -> dict[str, torch.Tensor]:
        """Bytes or a request's image string -> the processor's tensors for one image (batch of 1)."""
        data = source if isinstance(source, bytes) else image_payload(source, self.url_policy)
        if not data:
            raise ImageError("image is empty (0 bytes)")
        self.check_pixels(data)
        try:
            image = load_rgb(data, honor_exif=True, draft_size=self._draft)
            return dict(self.processor(images=[image], return_tensors="pt"))
        except InputError:
            raise
        except Exception as error:  # a decoder or EXIF path outside the typed errors: still this item's fault
            raise ImageError(f"image could not be decoded ({type(error).__name__})") from None

    async def decode(self, sources: Sequence[str | bytes]) -> list[dict[str, torch.Tensor]]:
        """Decode every image on the worker threads; the first bad one raises `ItemError` naming its index."""
        if self._pending_decodes + len(sources) > self.max_pending_decodes:
            from .batcher import QueueFullError

            raise QueueFullError(f"too many images waiting to be decoded ({self._pending_decodes})")
        loop = asyncio.get_running_loop()
        self._pending_decodes += len(sources)
        futures = [loop.run_in_executor(self.decode_pool, self.prepare_image, source) for source in sources]
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            self._pending_decodes -= len(sources)
            for future in futures:
                future.cancel()
        for index, result in enumerate(results):
            if isinstance(result, InputError):
                raise ItemError(index, result)
            if isinstance(result, BaseException):
                raise result
        return list(results)

    # ---- what the routes call -----------------------------------------------------------------------------
    async def embed_texts(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        rows = torch.stack(await self.text.run(list(texts)))
        return l2_normalize(rows) if normalize else rows

    async def embed_images(self, sources: Sequence[str | bytes], normalize: bool = True) -> torch.Tensor:
        rows = torch.stack(await self.image.run(await self.decode(sources)))
        return l2_normalize(rows) if normalize else rows

    async def label_embeddings(self, labels: Sequence[str], template: str) -> torch.Tensor:
        """(K, D) normalised prompt embeddings; only prompts missing from the cache go to the text batcher."""
        prompts = [template.format(label) for label in labels]
        found = {prompt: self.labels.get(prompt) for prompt in dict.fromkeys(prompts)}
        missing = [prompt for prompt, embedding in found.items() if embedding is None]
        if missing:
            for prompt, embedding in zip(missing, await self.embed_texts(missing)):
                self.labels.put(prompt, embedding)
                found[prompt] = embedding
        return torch.stack([found[prompt] for prompt in prompts])

    async def classify_scores(
        self, sources: Sequence[str | bytes], labels: Sequence[str], template: str
    ) -> torch.Tensor:
        """(N images, K labels) sigmoid scores, as `siglip.pipeline` computes them."""
        image_embeds, text_embeds = await asyncio.gather(
            self.embed_images(sources), self.label_embeddings(labels, template)
        )
        dtype = self.model.logit_scale.dtype
        with torch.inference_mode():
            logits = self.classifier.logits(image_embeds.to(dtype), text_embeds.to(dtype))
            return torch.sigmoid(logits).float()


class ItemError(InputError):
    """Item `index` of a request is bad; `error` says why (the request fails with a 4xx naming the item)."""

    def __init__(self, index: int, error: InputError) -> None:
        super().__init__(f"item {index}: {error}")
        self.index, self.error = index, error
