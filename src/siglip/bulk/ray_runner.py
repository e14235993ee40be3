"""The bulk job on Ray Data: CPU tasks decode and preprocess, actors holding the model embed.

    items of pending shards --map_batches(decode_images, CPU tasks)--> pixel arrays + status
                            --map_batches(ImageEmbedder, actor pool)--> embeddings + status
                            --> driver: ShardAssembler commits each shard atomically, as run_local does

The driver plans, writes and resumes exactly as the local runner (same `BulkJob`), so the output folder is
the same whichever runner made it, and a job killed on Ray can be resumed locally or the reverse. Image
paths must be readable from every node (a shared file system); the output folder is written by the driver.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import DependencyError, ImageError
from .job import BulkJob, ShardAssembler, fp32_features
from .sources import is_supported_image, unreadable_reason

STATUS, ERROR = "status", "error"


def require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DependencyError("--ray needs Ray Data: pip install 'siglip[ray]'") from None
    return ray


@functools.lru_cache(maxsize=4)
def _processor(model: str, revision: str | None, use_fast: bool = False, fast_decode: bool = False) -> Any:
    """One processor per worker process (Ray reuses workers across tasks)."""
    from ..encode import load_processor

    return load_processor(model, use_fast=use_fast, fast_decode=fast_decode, revision=revision)


def decode_images(
    batch: dict[str, np.ndarray],
    model: str,
    revision: str | None,
    honor_exif: bool,
    use_fast: bool = False,
    fast_decode: bool = False,
) -> dict[str, np.ndarray]:
    """A Ray Data CPU task: decode and preprocess a batch of image paths. Rows that cannot be read keep their
    place with a status and an error, and the model inputs of a blank image (the actor skips them)."""
    from PIL import Image

    from ..encode import draft_size, load_rgb
    from .webdataset import read_member, split_member

    processor = _processor(model, revision, use_fast, fast_decode)
    draft = draft_size(processor)
    statuses, errors, images = [], [], []
    for path in batch["item"]:
        status, error, image = "ok", "", None
        if not is_supported_image(path):
            status, error = "unsupported", f"not an image file (suffix {os.path.splitext(path)[1] or '(none)'})"
        elif split_member(path) is None and (reason := unreadable_reason(path)) is not None:
            status, error = "unsupported", reason  # a FIFO or a device named x.jpg: never read
        else:
            try:
                image = load_rgb(read_member(path) or path, honor_exif=honor_exif, draft_size=draft)
                image.load()
            except ImageError as failure:
                status, error = "corrupt", str(failure)
            except Exception as failure:  # noqa: BLE001 - any per-item failure is recorded, never fatal
                status, error = "corrupt", f"cannot read image {path}: {type(failure).__name__}: {failure}"
        statuses.append(status)
        errors.append(error)
        images.append(image)
    blank = Image.new("RGB", (8, 8))
    inputs = processor(images=[image if image is not None else blank for image in images], return_tensors="np")
    out = {key: batch[key] for key in ("shard", "position")}
    out.update({f"input.{key}": np.asarray(value) for key, value in dict(inputs).items()})
    out[STATUS], out[ERROR] = np.array(statuses, dtype=object), np.array(errors, dtype=object)
    return out


class _Embedder:
    """Holds the model in a Ray actor; subclasses say what they embed."""

    def __init__(self, model: str, revision: str | None, dtype: str, device: str, normalize: bool) -> None:
        import torch

        from ..runtime import load_model

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.model = load_model(model, dtype=dtype, device=device, revision=revision)
        self.model_name, self.revision, self.normalize = model, revision, normalize


class ImageEmbedder(_Embedder):
    """Ray actor: model inputs of decoded rows -> embeddings (zeros for rows that failed to decode)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from ..encode import model_inputs

        ok = np.flatnonzero(batch[STATUS] == "ok")
        dim = self.model.config.vision_config.hidden_size
        embeddings = np.zeros((len(batch[STATUS]), dim), np.float32)
        if len(ok):
            inputs = {
                key[6:]: torch.from_numpy(np.ascontiguousarray(value[ok]))
                for key, value in batch.items()
                if key.startswith("input.")
            }
            with torch.inference_mode():
                features = self.model.get_image_features(**model_inputs(inputs, self.model.device, self.model.dtype))
            embeddings[ok] = fp32_features(features, self.normalize)
        return {**{key: batch[key] for key in ("shard", "position", STATUS, ERROR)}, "embedding": embeddings}


class TextEmbedder(_Embedder):
    """Ray actor: texts -> embeddings, tokenized as `encode.encode_texts` does."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..encode import encode_texts

        texts = [str(text) for text in batch["item"]]
        processor = _processor(self.model_name, self.revision)
        features = encode_texts(self.model, processor, texts, max(1, len(texts)), normalize=False)
        ok = np.array(["ok"] * len(texts), dtype=object)
        return {
            "shard": batch["shard"],
            "position": batch["position"],
            STATUS: ok,
            ERROR: np.array([""] * len(texts), dtype=object),
            "embedding": fp32_features(features, self.normalize),
        }


def run_ray(
    job: BulkJob,
    model: str,
    *,
    address: str | None = None,
    revision: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    batch_size: int = 32,
    actors: int = 1,
    honor_exif: bool = True,
    use_fast: bool = False,
    fast_decode: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> None:
    """Embed the job's pending shards on a Ray cluster (`address`: "auto", "ray://host:10001", or None for
    the running/a new local instance); results stream back to this process, which commits the shards."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False)
    pending = job.pending()
    if not pending:
        return
    records = [
        {"shard": shard.index, "position": position, "item": job.source.locate(position)}
        for shard in pending
        for position in range(shard.start, shard.stop)
    ]
    dataset = ray.data.from_items(records, override_num_blocks=max(1, len(records) // (batch_size * 4)))
    options = {"revision": revision, "dtype": dtype, "device": device, "normalize": job.spec.normalized}
    actor_args = {"concurrency": actors, "num_gpus": 1 if device.startswith("cuda") else 0, "batch_size": batch_size}
    if job.spec.kind == "image":
        dataset = dataset.map_batches(
            decode_images,
            batch_size=batch_size,
            fn_kwargs={
                "model": model,
                "revision": revision,
                "honor_exif": honor_exif,
                "use_fast": use_fast,
                "fast_decode": fast_decode,
            },
        )
        dataset = dataset.map_batches(
            ImageEmbedder, fn_constructor_args=(model,), fn_constructor_kwargs=options, **actor_args
        )
    else:
        dataset = dataset.map_batches(
            TextEmbedder, fn_constructor_args=(model,), fn_constructor_kwargs=options, **actor_args
        )
    assembler = ShardAssembler(job, pending)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for shard, position, status, error, vector in zip(
            batch["shard"], batch["position"], batch[STATUS], batch[ERROR], batch["embedding"]
        ):
            assembler.add(int(shard), int(position), str(status), str(error), vector if status == "ok" else None)
        if progress is not None:
            progress(len(batch["shard"]))
