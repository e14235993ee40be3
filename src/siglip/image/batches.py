"""Decode and preprocess images in worker threads, batch by batch, ahead of the model.

Pillow's decoders and resamplers release the GIL, so a few threads overlap decoding with the model's matmuls
without the cost of processes. Every consumer of many images (the zero-shot pipeline, `siglip classify`,
`siglip embed`) reads them through `iter_image_batches`, so bad files are handled the same way everywhere.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import ImageError
from ..threads import default_workers

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass
class ImageBatch:
    """One preprocessed batch: `inputs` holds the images at `indices` (positions in the input sequence)."""

    indices: list[int]
    inputs: Any = None
    failures: list[tuple[int, ImageError]] = field(default_factory=list)


def iter_image_batches(
    sources: Sequence[Any],
    preprocess: Callable[[list[Any]], Any],
    batch_size: int = 16,
    *,
    load: Callable[[Any], Any] | None = None,
    skip_errors: bool = False,
    workers: int | None = None,
    prefetch: int = 2,
) -> Iterator[ImageBatch]:
    """Yield `ImageBatch`es in input order while the next `prefetch` batches are decoded in the background.

    `load(source)` turns a source (PIL image, path, URL) into a PIL image (default: `image.loading.load_image`);
    `preprocess(list_of_images)` turns the loaded images into model inputs. An `ImageError` from `load` stops
    the iteration (raised here, naming the file) unless `skip_errors`, in which case it is reported in
    `ImageBatch.failures` and the batch holds the other images (`inputs` is None when none were readable).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if load is None:
        from .loading import load_image as load
    starts = range(0, len(sources), batch_size)

    def prepare(start: int) -> ImageBatch:
        batch = ImageBatch(indices=[])
        images = []
        for index in range(start, min(start + batch_size, len(sources))):
            try:
                images.append(load(sources[index]))
            except Exception as error:  # noqa: BLE001 - with skip_errors, whatever one image raises is skipped
                if not skip_errors:
                    raise
                batch.failures.append((index, _as_image_error(error, sources[index])))
                continue
            batch.indices.append(index)
        if images:
            try:
                batch.inputs = preprocess(images)
            except Exception:
                if not skip_errors:
                    raise
                _preprocess_alone(batch, images, preprocess, sources)
        return batch

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        pending: deque[Future[ImageBatch]] = deque()
        queued = iter(starts)
        for start in queued:
            pending.append(pool.submit(prepare, start))
            if len(pending) > prefetch:
                break
        while pending:
            batch = pending.popleft().result()
            next_start = next(queued, None)
            if next_start is not None:
                pending.append(pool.submit(prepare, next_start))
            yield batch


def _as_image_error(error: Exception, source: Any) -> ImageError:
    if isinstance(error, ImageError):
        return error
    return ImageError(f"cannot read image {source}: {type(error).__name__}: {error}")


def _preprocess_alone(batch: ImageBatch, images: list[Any], preprocess: Callable[[list[Any]], Any], sources) -> None:
    """A batch whose preprocessing failed: each image alone, so that only the culprits are skipped."""
    kept_indices, kept_images = [], []
    for index, image in zip(batch.indices, images):
        try:
            preprocess([image])
        except Exception as error:  # noqa: BLE001 - recorded as this image's failure
            batch.failures.append((index, _as_image_error(error, sources[index])))
            continue
        kept_indices.append(index)
        kept_images.append(image)
    batch.failures.sort(key=lambda failure: failure[0])
    batch.indices = kept_indices
    batch.inputs = preprocess(kept_images) if kept_images else None


def expand_image_paths(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Files as given (URLs kept), folders expanded recursively to their image files, sorted per folder."""
    paths: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        if os.path.isdir(text):
            found = []
            for root, dirs, files in os.walk(text):
                dirs.sort()
                found.extend(
                    os.path.join(root, name) for name in files if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
                )
            paths.extend(sorted(found))
        else:
            paths.append(text)
    return paths
