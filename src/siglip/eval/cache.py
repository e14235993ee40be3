"""Image features of an evaluation, cached on disk and resumable: a bulk job (`bulk.job.BulkJob` + `run_local`,
the same batching, decode threads and atomic shard commits as `siglip embed`) per (model, dtype, preprocessing,
image list).

One image pass stores, per image, the model's image embedding (for zero-shot and retrieval) beside the mean of the
vision tower's last hidden states (what `SiglipForImageClassification` classifies, so the linear probe trains on
exactly the features its saved checkpoint computes). Evaluating another prompt set or another probe, or re-running
after a kill, embeds only the images no finished shard holds. A changed image file (size or modification time)
makes a new cache entry. Folder: `CACHE/<model digest>/<images digest>/` (the images' folder, paths, sizes and
modification times; see `bulk.writer` for the files).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bulk.job import BulkJob, run_local
from ..bulk.writer import open_embeddings, read_manifest
from ..errors import InputError
from ..files import atomic_write
from ..runtime import DTYPES, load_model_and_processor
from .datasets import EvalData

TIMING_FILE = "timing.json"


def default_cache_dir() -> Path:
    """`$SIGLIP_EVAL_CACHE`, else `$XDG_CACHE_HOME/siglip/eval` (default `~/.cache/siglip/eval`)."""
    if os.environ.get("SIGLIP_EVAL_CACHE"):
        return Path(os.environ["SIGLIP_EVAL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "siglip" / "eval"


@dataclass
class ModelSpec:
    """A model to evaluate: a Hub id or folder in a --dtype (`runtime.DTYPES`), loaded on first use. `model` and
    `processor` may be given already loaded (then `name` still identifies the weights for the cache)."""

    name: str
    dtype: str = "auto"
    device: str = "auto"
    revision: str | None = None
    use_fast: bool = False
    fast_decode: bool = False
    model: Any = None
    processor: Any = None
    load_seconds: float = 0.0
    _identity: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(sorted(DTYPES))}, got {self.dtype!r}")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.dtype})" if self.dtype != "auto" else str(self.name)

    def load(self) -> tuple[Any, Any]:
        if self.model is None or self.processor is None:
            started = time.perf_counter()
            self.model, self.processor = load_model_and_processor(
                self.name,
                dtype=self.dtype,
                device=self.device,
                revision=self.revision,
                use_fast=self.use_fast,
                fast_decode=self.fast_decode,
            )
            self.load_seconds = time.perf_counter() - started
        return self.model, self.processor

    def config(self) -> Any:
        if self.model is not None:
            return self.model.config
        from ..auto import AutoConfig

        return AutoConfig.from_pretrained(self.name, revision=self.revision)

    def preprocessing(self) -> str:
        modes = [name for name, on in (("fast_decode", self.fast_decode), ("use_fast", self.use_fast)) if on]
        return "+".join(modes) or "exact"

    def identity(self) -> str:
        """A digest of the weights (`bulk.run.model_identity`), the dtype and the preprocessing."""
        from ..bulk.run import model_identity

        if self._identity is None:
            weights = model_identity(self.name, self.revision)
            text = f"{weights}\0{self.dtype_name()}\0{self.preprocessing()}"
            self._identity = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
        return self._identity

    def dtype_name(self) -> str:
        """The dtype it runs in ("auto" resolved: the loaded model's, else the checkpoint's), e.g. "float32"."""
        if DTYPES[self.dtype] != "auto":
            return DTYPES[self.dtype]
        if self.model is not None:
            return str(self.model.dtype).removeprefix("torch.")
        return str(getattr(self.config(), "dtype", None) or "float32").removeprefix("torch.")


@dataclass
class ImageFeatures:
    """Per image: `embeds` the L2-normalised image embedding, `pooled` the mean of the vision tower's last hidden
    states (fp32 CPU tensors, zeros where `ok` is False: unreadable images, listed in `failures`)."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    ok: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)
    embedded: int = 0  # images embedded by this call (0: all came from the cache)
    images_per_second: float | None = None  # the image pass's throughput, as recorded when the images were embedded
    peak_memory_mib: float | None = None
    folder: Path | None = None


class FeatureTower:
    """What `bulk.job.run_local` calls as `model.get_image_features`: one vision pass giving the image embedding and
    the classifier's mean-pooled tokens side by side (its `pool_tokens`: SigLIP2's is mask-aware)."""

    def __init__(self, model: Any) -> None:
        from ..auto import IMAGE_CLASSIFICATION_CLASSES, import_class

        self.model = model
        self.classifier_class = import_class(IMAGE_CLASSIFICATION_CLASSES[model.config.model_type])

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def get_image_features(self, **inputs: torch.Tensor) -> torch.Tensor:
        self.model._require_vision_head()
        output = self.model.vision_model(**inputs, return_dict=True)
        extra = {key: value for key, value in inputs.items() if key != "pixel_values"}
        pooled_tokens = self.classifier_class.pool_tokens(None, output.last_hidden_state, **extra)
        return torch.cat([output.pooler_output, pooled_tokens], dim=-1)


def image_features(
    data: EvalData,
    spec: ModelSpec,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    shard_size: int = 1024,
    progress: Callable[[int], Any] | None = None,
) -> ImageFeatures:
    """The features of `data`'s images under `spec`, from the cache where finished, embedding the rest."""
    if not len(data):
        raise InputError(f"{data.name} holds no images to evaluate")
    config = spec.config()
    hidden = config.vision_config.hidden_size
    source = data.source_items()
    images = hashlib.blake2b(f"{data.root}\0{source.fingerprint()}\0{shard_size}".encode(), digest_size=12)
    folder = Path(cache_dir or default_cache_dir()) / spec.identity() / images.hexdigest()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _entry_lock(folder):
        return _embed_and_read(folder, data, spec, source, hidden, batch_size, workers, shard_size, progress)


@contextmanager
def _entry_lock(folder: Path) -> Iterator[None]:
    """Hold a lock on one cache entry: a second eval of the same images and model waits, then reads the shards
    the first one wrote (instead of both embedding them)."""
    with open(folder.parent / f".{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _embed_and_read(
    folder: Path,
    data: EvalData,
    spec: ModelSpec,
    source: Any,
    hidden: int,
    batch_size: int,
    workers: int | None,
    shard_size: int,
    progress: Callable[[int], Any] | None,
) -> ImageFeatures:
    job = BulkJob.create(
        folder,
        source,
        source_name=data.name,
        model=spec.identity(),
        dim=2 * hidden,
        shard_size=shard_size,
        normalize=False,
        preprocessing=spec.preprocessing(),
        root=data.root,
    )
    pending = job.pending()
    embedded = sum(shard.stop - shard.start for shard in pending)
    if pending:
        if progress is not None and embedded < len(data):
            progress(len(data) - embedded)  # what the cache already holds
        model, processor = spec.load()
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(model.device)
        started = time.perf_counter()
        run_local(job, FeatureTower(model), processor, batch_size=batch_size, workers=workers, progress=progress)
        _record_timing(folder, embedded, time.perf_counter() - started, _peak_memory_mib(model.device))
    elif progress is not None:
        progress(len(data))
    return _read_features(job, folder, hidden, embedded)


def _read_features(job: BulkJob, folder: Path, hidden: int, embedded: int) -> ImageFeatures:
    count = len(job.source.items)
    matrix = np.zeros((count, 2 * hidden), np.float32)
    ok = np.zeros(count, bool)
    failures = []
    for shard in job.shards:
        embeddings_path, manifest_path = job.paths(shard)
        positions, rows = [], []
        for position, row in zip(range(shard.start, shard.stop), read_manifest(manifest_path)):
            if row.status == "ok":
                positions.append(position)
                rows.append(row.row)
            else:
                failures.append((job.source.items[position], row.error or row.status))
        if positions:
            matrix[positions] = open_embeddings(embeddings_path)[rows]
            ok[positions] = True
    features = torch.from_numpy(matrix)
    embeds = features[:, :hidden]
    norms = embeds.norm(dim=-1, keepdim=True)
    embeds = torch.where(norms > 0, embeds / norms.clamp_min(1e-30), embeds)
    timing = _read_timing(folder)
    seconds, images = timing.get("seconds", 0.0), timing.get("images", 0)
    return ImageFeatures(
        embeds,
        features[:, hidden:].contiguous(),
        ok,
        failures,
        embedded,
        images / seconds if seconds > 0 and images else None,
        timing.get("peak_memory_mib"),
        folder,
    )


def _peak_memory_mib(device: torch.device) -> float:
    """Peak memory of the image pass: the device's allocations on CUDA, else this process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _read_timing(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / TIMING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _record_timing(folder: Path, images: int, seconds: float, peak_mib: float) -> None:
    """Accumulate the images embedded and the seconds it took (a resumed run adds its share)."""
    timing = _read_timing(folder)
    timing = {
        "images": timing.get("images", 0) + images,
        "seconds": timing.get("seconds", 0.0) + seconds,
        "peak_memory_mib": max(timing.get("peak_memory_mib", 0.0), peak_mib),
    }
    atomic_write(folder / TIMING_FILE, lambda tmp: tmp.write_text(json.dumps(timing), encoding="utf-8"))
