"""A resumable bulk embedding job: plan shards from the source's fixed item order, write each one atomically.

`BulkJob` owns the output folder (see `writer` for the layout): it records the plan in `job.json`, tells which
shards are still to do, commits finished shards and writes the final manifest. The work itself is done by
`run_local` (threads decode while the model runs, this module) or `bulk.ray_runner.run_ray` (Ray Data);
both hand their results to the same `ShardAssembler`, so their output is the same.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, InputError
from ..files import atomic_write
from .sources import SourceItems, is_supported_image, unreadable_reason
from .writer import (
    ManifestRow,
    manifest_format,
    read_manifest,
    remove_stale_temporaries,
    shard_paths,
    write_manifest,
    write_shard_embeddings,
)

JOB_FILE = "job.json"
FORMATS = ("npy", "safetensors")


@dataclass(frozen=True)
class Shard:
    """Items `start:stop` of the ordered source, written as shard number `index`."""

    index: int
    start: int
    stop: int


def plan_shards(count: int, shard_size: int) -> list[Shard]:
    """Cut `count` items into consecutive shards of `shard_size` (the last one shorter)."""
    if shard_size < 1:
        raise InputError(f"shard size must be >= 1, got {shard_size}")
    return [Shard(i, start, min(start + shard_size, count)) for i, start in enumerate(range(0, count, shard_size))]


def embedding_dim(config: Any, kind: str) -> int:
    """Width of the embeddings a model gives for `kind` ("image" or "text")."""
    if kind == "text":
        return config.text_config.projection_size or config.text_config.hidden_size
    return config.vision_config.hidden_size


@dataclass
class JobSpec:
    """What `job.json` records; a resumed run must plan the very same job."""

    source: str
    kind: str
    count: int
    fingerprint: str
    shard_size: int
    format: str
    manifest: str
    model: str
    normalized: bool
    dim: int
    preprocessing: str = "exact"  # "exact", or "+"-joined "fast_decode" / "use_fast" (approximate modes)
    root: str = ""  # the folder image items are relative to ("" for texts and jobs made before collections)


@dataclass
class JobSummary:
    """Counts of a finished job, from its manifest."""

    total: int
    ok: int
    corrupt: int
    unsupported: int
    shards: int
    resumed_shards: int
    seconds: float
    failures: list[ManifestRow] = field(default_factory=list)
    peak_buffered: int = 0  # most decoded images held at once (bounded whatever the batch size)
    notes: list[str] = field(default_factory=list)  # warnings for the user (e.g. a capped batch size)
    changes: str = ""  # what the sync did: "+120 new, 3 changed, 7 deleted, ..."
    plan: Any = None  # the `sync.SyncPlan` it carried out

    def line(self) -> str:
        return (
            f"{self.total} items: {self.ok} embedded, {self.corrupt} corrupt, {self.unsupported} unsupported; "
            f"{self.shards} shards ({self.resumed_shards} already done) in {self.seconds:.1f}s"
        )


class BulkJob:
    """The output folder of one job: plan, progress and commits."""

    def __init__(self, out: str | os.PathLike, source: SourceItems, spec: JobSpec) -> None:
        self.out = Path(out)
        self.source = source
        self.spec = spec
        self.shards = plan_shards(spec.count, spec.shard_size)

    @classmethod
    def create(
        cls,
        out: str | os.PathLike,
        source: SourceItems,
        *,
        source_name: str,
        model: str,
        dim: int,
        shard_size: int = 4096,
        fmt: str = "npy",
        normalize: bool = True,
        preprocessing: str = "exact",
        root: str = "",
    ) -> BulkJob:
        """Start a job in `out`, or resume the one there (which must have the same plan, preprocessing included:
        embeddings from the exact and the approximate image paths never mix in one job)."""
        if fmt not in FORMATS:
            raise InputError(f"format must be one of {FORMATS}, got {fmt!r}")
        spec = JobSpec(
            source=str(source_name),
            kind=source.kind,
            count=len(source.items),
            fingerprint=source.fingerprint(),
            shard_size=shard_size,
            format=fmt,
            manifest=manifest_format(),
            model=str(model),
            normalized=normalize,
            dim=dim,
            preprocessing=preprocessing,
            root=root,
        )
        out = Path(out)
        job_file = out / JOB_FILE
        if job_file.exists():
            spec = cls._check_resume(job_file, spec)
        elif out.exists() and any(out.iterdir()):
            raise InputError(f"output folder {out} is not empty and holds no {JOB_FILE}: choose a new or empty folder")
        else:
            (out / "shards").mkdir(parents=True, exist_ok=True)
            atomic_write(job_file, lambda tmp: tmp.write_text(json.dumps(asdict(spec), indent=1), encoding="utf-8"))
        remove_stale_temporaries(out)
        remove_stale_temporaries(out / "shards")
        return cls(out, source, spec)

    @staticmethod
    def _check_resume(job_file: Path, planned: JobSpec) -> JobSpec:
        recorded = JobSpec(**json.loads(job_file.read_text(encoding="utf-8")))
        planned_fields = [item.name for item in fields(JobSpec) if item.name not in ("source", "manifest", "root")]
        for name in planned_fields:  # all but the source's name and root, and the manifest format (recorded wins)
            if getattr(recorded, name) != getattr(planned, name):
                raise InputError(
                    f"{job_file.parent} holds a different job ({name}: {getattr(recorded, name)!r} there, "
                    f"{getattr(planned, name)!r} now); resume with the same source and options, or use a new --out"
                )
        return recorded  # its manifest format wins, so a resumed job never mixes formats

    def paths(self, shard: Shard) -> tuple[Path, Path]:
        return shard_paths(self.out, shard.index, self.spec.format, self.spec.manifest)

    def is_done(self, shard: Shard) -> bool:
        return self.paths(shard)[1].exists()

    def pending(self) -> list[Shard]:
        return [shard for shard in self.shards if not self.is_done(shard)]

    def commit(self, shard: Shard, embeddings: np.ndarray, rows: Sequence[ManifestRow]) -> None:
        """Write a finished shard: embeddings first, then its manifest part (which marks it done)."""
        embeddings_path, manifest_path = self.paths(shard)
        write_shard_embeddings(embeddings_path, embeddings.reshape(-1, self.spec.dim))
        write_manifest(manifest_path, rows)

    def finish(self, started: float, resumed: int) -> JobSummary:
        """Concatenate the manifest parts into `manifest.<fmt>` and count the outcomes."""
        rows = [row for shard in self.shards for row in read_manifest(self.paths(shard)[1])]
        write_manifest(self.out / f"manifest.{self.spec.manifest}", rows)
        count = {status: sum(row.status == status for row in rows) for status in ("ok", "corrupt", "unsupported")}
        return JobSummary(
            total=len(rows),
            shards=len(self.shards),
            resumed_shards=resumed,
            seconds=time.perf_counter() - started,
            failures=[row for row in rows if row.status != "ok"],
            **count,
        )


class ShardAssembler:
    """Collects per-item results of pending shards (in any order) and commits each shard once it is complete."""

    def __init__(self, job: BulkJob, shards: Sequence[Shard]) -> None:
        self.job = job
        self.shards = {shard.index: shard for shard in shards}
        self.results: dict[int, dict[int, tuple[str, str, np.ndarray | None]]] = {s.index: {} for s in shards}
        self.committed = 0

    def add(self, shard: int, position: int, status: str, error: str = "", embedding: np.ndarray | None = None) -> None:
        """Record item `position` (index in the source) of `shard`; commit the shard when it is complete."""
        results = self.results[shard]
        results[position] = (status, error, embedding)
        if len(results) == self.shards[shard].stop - self.shards[shard].start:
            self._commit(self.shards.pop(shard), self.results.pop(shard))

    def _commit(self, shard: Shard, results: dict[int, tuple[str, str, np.ndarray | None]]) -> None:
        rows, vectors = [], []
        source = self.job.source
        for position in range(shard.start, shard.stop):
            status, error, embedding = results[position]
            row = -1
            if status == "ok":
                row = len(vectors)
                vectors.append(embedding)
            size = source.sizes[position] if source.sizes else item_size(source.locate(position), source.kind)
            rows.append(
                ManifestRow(
                    source.items[position],
                    size,
                    status,
                    error,
                    shard.index,
                    row,
                    key=source.keys[position],
                    mtime_ns=source.mtimes[position] if source.mtimes else -1,
                    hash=source.hashes[position] if source.hashes else "",
                    meta=source.meta[position],
                )
            )
        matrix = np.stack(vectors) if vectors else np.empty((0, self.job.spec.dim), np.float32)
        self.job.commit(shard, matrix, rows)
        self.committed += 1


def item_size(item: str, kind: str) -> int:
    """File size in bytes (-1 if it cannot be read), or a text's UTF-8 length."""
    if kind == "text":
        return len(item.encode("utf-8", "surrogatepass"))
    try:
        return os.stat(item).st_size
    except OSError:
        return -1


MAX_BATCH_SIZE = 256  # images per forward pass at most: decoded batches in flight are what bounds memory
PREFETCH = 2  # batches decoded ahead of the model


class BufferGauge:
    """Counts decoded images not yet embedded (thread-safe) and remembers the peak: the job's memory bound."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current = self.peak = 0

    def add(self, count: int) -> None:
        with self.lock:
            self.current += count
            self.peak = max(self.peak, self.current)


def fp32_features(features: Any, normalize: bool) -> np.ndarray:
    """Model features as float32 rows, L2-normalised in float32 (a bf16 normalisation leaves norms up to ~1.004,
    cosines above 1)."""
    from ..modeling.model import l2_normalize

    features = features.float()
    return (l2_normalize(features) if normalize else features).cpu().numpy()


def item_loader(source: SourceItems, processor: Any, honor_exif: bool) -> Callable[[int], Any]:
    """`load(position)`: item `position` decoded and preprocessed alone (a batch of one). Whatever goes wrong
    with one item (a decoder's TypeError, struct.error or KeyError as much as an ImageError) becomes an
    `ImageError` naming it, so the job records it in the manifest and goes on."""
    from ..encode import draft_size, load_rgb
    from .webdataset import read_member

    draft = draft_size(processor)

    def load(position: int) -> Any:
        located = source.locate(position)
        reason = _special(source, position)  # stat in the worker threads, in parallel
        if reason is not None:
            raise UnsupportedItemError(reason)
        try:
            image = load_rgb(read_member(located) or located, honor_exif=honor_exif, draft_size=draft)
            return dict(processor(images=[image], return_tensors="pt"))
        except ImageError:
            raise
        except Exception as error:  # noqa: BLE001 - any per-item failure is recorded, never fatal
            raise ImageError(f"cannot read image {located}: {type(error).__name__}: {error}") from None

    return load


class UnsupportedItemError(ImageError):
    """An item that is not a regular file (a FIFO, a device behind a symlink, a directory): recorded as
    "unsupported" with this reason, never opened."""


def _special(source: SourceItems, position: int) -> str | None:
    """Why a folder item is not a regular file (FIFO, device, directory, gone), or None (tar members: None)."""
    from .webdataset import split_member

    located = source.locate(position)
    return None if split_member(located) is not None else unreadable_reason(located)


def _stack(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {key: torch.cat([one[key] for one in inputs]) for key in inputs[0]}


def run_local(
    job: BulkJob,
    model: Any,
    processor: Any,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    honor_exif: bool = True,
    progress: Callable[[int], Any] | None = None,
    max_batch_size: int = MAX_BATCH_SIZE,
    settled: dict[int, tuple[str, str]] | None = None,
    to_rows: Callable[[list[int], np.ndarray], np.ndarray] | None = None,
) -> BufferGauge:
    """Embed the job's pending shards in this process: worker threads decode upcoming batches while the model
    runs (`image.batches.iter_image_batches`); each shard is committed as soon as its last item is done.
    `batch_size` is capped at `max_batch_size` (the caller warns), so at most (PREFETCH + 2) x that many decoded
    images are held at once whatever was asked. Returns the gauge of decoded images held.

    Image jobs only: `settled` maps source positions whose outcome is known without decoding to their
    (status, error), recorded as they are; `to_rows(positions, embeddings)` turns each batch's embeddings into
    the rows the shards store (`bulk.score` stores a pair's score and cosine instead of the embedding)."""
    import torch

    from ..encode import encode_texts, model_inputs
    from ..image.batches import iter_image_batches

    batch_size = min(batch_size, max_batch_size)
    gauge = BufferGauge()
    pending = job.pending()
    assembler = ShardAssembler(job, pending)
    items, normalize = job.source.items, job.spec.normalized
    if job.spec.kind == "text":
        for shard in pending:
            texts = items[shard.start : shard.stop]
            features = encode_texts(model, processor, texts, batch_size, normalize=False, progress=progress)
            for position, vector in zip(range(shard.start, shard.stop), fp32_features(features, normalize)):
                assembler.add(shard.index, position, "ok", embedding=vector)
        return gauge
    # (shard, source position) of every item the decoders will see; unsupported files are settled right away.
    owners: list[tuple[int, int]] = []
    for shard in pending:
        for position in range(shard.start, shard.stop):
            if settled and position in settled:
                assembler.add(shard.index, position, *settled[position])
                if progress is not None:
                    progress(1)
            elif is_supported_image(items[position]):
                owners.append((shard.index, position))
            else:
                suffix = os.path.splitext(items[position])[1] or "(none)"
                assembler.add(shard.index, position, "unsupported", f"not an image file (suffix {suffix})")
                if progress is not None:
                    progress(1)
    load = item_loader(job.source, processor, honor_exif)

    def counted_load(position: int) -> Any:
        inputs = load(position)
        gauge.add(1)
        return inputs

    positions = [position for _, position in owners]
    batches = iter_image_batches(
        positions, _stack, batch_size, load=counted_load, skip_errors=True, workers=workers, prefetch=PREFETCH
    )
    for batch in batches:
        for index, error in batch.failures:  # a FIFO or a device named x.jpg is "unsupported", never read
            status = "unsupported" if isinstance(error, UnsupportedItemError) else "corrupt"
            assembler.add(*owners[index], status, str(error))
        if batch.inputs is not None:
            with torch.inference_mode():
                features = model.get_image_features(**model_inputs(batch.inputs, model.device, model.dtype))
            vectors = fp32_features(features, normalize)
            if to_rows is not None:
                vectors = to_rows([owners[index][1] for index in batch.indices], vectors)
            for index, vector in zip(batch.indices, vectors):
                assembler.add(*owners[index], "ok", embedding=vector)
            gauge.add(-len(batch.indices))
        if progress is not None:
            progress(len(batch.indices) + len(batch.failures))
    return gauge
