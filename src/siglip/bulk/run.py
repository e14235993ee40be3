"""`embed_source`: a whole sync in one call (what `siglip embed SOURCE --out DIR` runs).

The first run embeds every item; a re-run of the same source into the same folder syncs it (see `sync`):
only new and changed content is embedded, renamed and copied files reuse their embedding, deleted ones
are tombstoned, and a sync killed at any moment resumes (its finished shards are kept) or leaves the
collection as it was before it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError, SiglipError
from ..files import read_regular
from ..runtime import canonical_dtype
from .collection import COLLECTION_FILE, LOCK_FILE, STATE_FILE, Collection, Settings, writer_lock
from .job import FORMATS, JOB_FILE, MAX_BATCH_SIZE, BulkJob, JobSummary, embedding_dim, run_local
from .sources import TABLE_SUFFIXES, SourceItems, list_source
from .sync import SyncPlan, change_rows, plan_sync

# make_bar(total, initial) -> an object with update(n) and close(), e.g. a tqdm bar
ProgressFactory = Callable[[int, int], Any]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")


def model_identity(model: str, revision: str | None = None) -> str:
    """A digest of the model's config.json and the names and sizes of its weight files: the same whether the
    model is named by Hub id, by a relative or an absolute path, or copied elsewhere."""
    from ..hub import HubOptions, resolve_file

    config = resolve_file(model, "config.json", HubOptions(revision=revision))
    digest = hashlib.blake2b(read_regular(config, 16 * 1024 * 1024, "the config file", ConfigError), digest_size=16)
    for path in sorted(config.parent.iterdir()):
        if path.name.endswith(WEIGHT_SUFFIXES) and path.is_file():
            digest.update(f"\0{path.name}\0{path.stat().st_size}".encode())
    return digest.hexdigest()


def source_type(source: Path, items: SourceItems) -> str:
    if source.suffix.lower() in TABLE_SUFFIXES:
        return "table"
    if any("::" in item for item in items.items[:1]):
        return "webdataset"
    return "folder" if source.is_dir() else "text"


def check_settings(collection: Collection, settings: Settings, revision: str | None) -> None:
    """Refuse a sync whose embeddings would not match the collection's (or say how to rebuild)."""
    recorded = collection.settings
    if collection.legacy and not recorded.model_id:  # a pre-collection folder names its model only by string
        try:
            recorded.model_id = model_identity(recorded.model, revision)
        except SiglipError:
            recorded.model_id = "unresolvable:" + recorded.model
    differences = recorded.differences(settings)
    if differences:
        raise InputError(
            f"{collection.folder} holds a collection made with other settings ({'; '.join(differences)}): "
            "its embeddings would not mix with these. Use the same options, --rebuild to re-embed everything, "
            "or a new --out"
        )


def clear_collection(out: Path) -> None:
    """What `--rebuild` removes: everything a collection writes (not foreign files, not the lock)."""
    if not out.is_dir():
        return
    for name in (COLLECTION_FILE, STATE_FILE, JOB_FILE):
        (out / name).unlink(missing_ok=True)
    for folder in ("segments", "shards"):
        shutil.rmtree(out / folder, ignore_errors=True)
    for pattern in ("manifest.*", "ann.*"):
        for path in out.glob(pattern):
            path.unlink()


def embed_source(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str,
    revision: str | None = None,
    column: str | None = None,
    kind: str = "auto",
    key: str | None = None,
    shard_size: int = 4096,
    fmt: str = "npy",
    batch_size: int = 32,
    dtype: str = "auto",
    device: str = "cpu",
    normalize: bool = True,
    workers: int | None = None,
    honor_exif: bool = True,
    use_fast: bool = False,
    fast_decode: bool = False,
    ray: bool = False,
    ray_address: str | None = None,
    ray_actors: int = 1,
    make_bar: ProgressFactory | None = None,
    dry_run: bool = False,
    rebuild: bool = False,
    max_batch_size: int = MAX_BATCH_SIZE,
) -> JobSummary:
    """Embed `source` into the collection `out`, or sync the collection already there.

    `source` is a folder of images (or of webdataset `.tar`s), a text file (one text per line) or a CSV/Parquet
    file with `column` (texts, or image paths with `kind="image"`; `key` names its row-key column). `dtype`
    is a name of `runtime.DTYPES`. With `ray`, the embedding runs on Ray Data (`ray_address`: a cluster
    address, None for a local instance) with `ray_actors` model replicas; otherwise in this process with
    `workers` decoding threads. `use_fast` picks the batched torch image processor, `fast_decode` reduced-scale
    JPEG decoding (both approximate: docs/preprocessing.md). `dry_run` plans without writing; `rebuild`
    discards the collection first. `batch_size` is capped at `max_batch_size` (memory), with a note in the summary.
    Returns the counts of the live collection and, in `changes`, what this sync did.
    """
    from ..auto import AutoConfig

    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    if shard_size < 1:
        raise InputError(f"shard size must be >= 1, got {shard_size}")
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}, got {fmt!r}")
    started = time.perf_counter()
    out, source_path = Path(out), Path(source)
    items = list_source(source, column=column, kind=kind, exclude=out, key=key)
    if not items.items:
        raise InputError(f"nothing to embed: {source} holds no items")
    config = AutoConfig.from_pretrained(model, revision=revision)
    modes = [name for name, on in (("fast_decode", fast_decode), ("use_fast", use_fast)) if on]
    settings = Settings(
        kind=items.kind,
        model=str(model),
        model_id=model_identity(str(model), revision),
        normalized=normalize,
        dim=embedding_dim(config, items.kind),
        preprocessing="+".join(modes) if modes and items.kind == "image" else "exact",
        dtype=canonical_dtype(dtype, config),
        source_type=source_type(source_path, items),
        column=column or "",
        key_column=key or "",
    )
    notes = []
    if batch_size > max_batch_size:
        notes.append(f"--batch-size {batch_size} capped at {max_batch_size} (decoded images held in memory)")
    if dry_run:
        collection = Collection.open(out) if Collection.exists(out) and not rebuild else None
        if collection is not None:
            check_settings(collection, settings, revision)
        plan = plan_sync(items, collection.live() if collection else {}, workers)
        summary = JobSummary(len(items.items), 0, 0, 0, 0, 0, time.perf_counter() - started, notes=notes)
        summary.changes = f"dry run: would embed {len(plan.embed)} items: {plan.line()}"
        return summary
    with writer_lock(out):
        if rebuild:
            clear_collection(out)
        if Collection.exists(out):
            collection = Collection.open(out)
            check_settings(collection, settings, revision)
        elif any(path.name != LOCK_FILE for path in out.iterdir()):
            raise InputError(f"output folder {out} is not empty and holds no collection: choose a new or empty folder")
        else:
            collection = Collection.create(out, settings)
        live = collection.live()
        plan = plan_sync(items, live, workers)
        shards = resumed = peak = 0
        if plan.empty:
            collection.set_source(os.path.abspath(source), items.root)
        else:
            job = _segment_job(collection, plan, settings, str(source), shard_size, fmt)
            shards, resumed = len(job.shards), len(job.shards) - len(job.pending())
            runner = Runner(
                str(model),
                revision,
                dtype,
                device,
                batch_size,
                workers,
                honor_exif,
                use_fast,
                fast_decode,
                ray,
                ray_address,
                ray_actors,
                max_batch_size,
            )
            peak = runner.run(job, make_bar)
            embedded = collection.shard_rows(job.out.relative_to(out).as_posix())
            rows = change_rows(plan, embedded)
            collection.commit(
                job.out.relative_to(out).as_posix(), rows, source=os.path.abspath(source), root=items.root
            )
            collection.remove_unlisted()
            live = collection.live()
        collection.write_live_manifest(live)
        from .index import refresh_ann

        note = refresh_ann(out)
        if note:
            notes.append(note)
    failures = [row for row in live.values() if row.status != "ok"]
    count = {status: sum(row.status == status for row in live.values()) for status in ("ok", "corrupt", "unsupported")}
    summary = JobSummary(
        len(live),
        shards=shards,
        resumed_shards=resumed,
        seconds=time.perf_counter() - started,
        failures=failures,
        peak_buffered=peak,
        notes=notes,
        **count,
    )
    new_corrupt = sum(row.status == "corrupt" for row in rows) if not plan.empty else 0
    summary.changes = plan.line(corrupt=new_corrupt)
    summary.plan = plan
    return summary


def _segment_job(
    collection: Collection, plan: SyncPlan, settings: Settings, source_name: str, shard_size: int, fmt: str
) -> BulkJob:
    """The embedding job of this sync: a killed sync's pending segment when it planned the very same work,
    else a new segment (other leftovers are removed)."""
    subset = plan.source.subset(plan.embed)
    options = dict(
        source_name=source_name,
        model=settings.model_id,
        dim=settings.dim,
        shard_size=shard_size,
        fmt=fmt,
        normalize=settings.normalized,
        preprocessing=settings.preprocessing,
        root=plan.source.root,
    )
    for segment in reversed(collection.pending_segments()):
        try:
            job = BulkJob.create(collection.folder / segment, subset, **options)
        except InputError:
            continue
        collection.remove_unlisted(keep=segment)
        return job
    segment = collection.next_segment()
    collection.remove_unlisted()
    return BulkJob.create(collection.folder / segment, subset, **options)


@dataclass
class Runner:
    """How a sync's embedding job runs: the model and where (this process or Ray), and its batching."""

    model: str
    revision: str | None
    dtype: str
    device: str
    batch_size: int
    workers: int | None
    honor_exif: bool
    use_fast: bool
    fast_decode: bool
    ray: bool
    ray_address: str | None
    ray_actors: int
    max_batch_size: int

    def run(self, job: BulkJob, make_bar: ProgressFactory | None) -> int:
        """Embed the job's pending shards; returns the peak of decoded images held (0 on Ray)."""
        pending = job.pending()
        total = len(job.source.items)
        remaining = sum(shard.stop - shard.start for shard in pending)
        bar = make_bar(total, total - remaining) if make_bar is not None and total else None
        update = bar.update if bar is not None else None
        try:
            if pending and self.ray:
                from .ray_runner import run_ray

                run_ray(
                    job,
                    self.model,
                    address=self.ray_address,
                    revision=self.revision,
                    dtype=self.dtype,
                    device=self.device,
                    batch_size=min(self.batch_size, self.max_batch_size),
                    actors=self.ray_actors,
                    honor_exif=self.honor_exif,
                    use_fast=self.use_fast,
                    fast_decode=self.fast_decode,
                    progress=update,
                )
            elif pending:
                from ..runtime import load_model_and_processor

                model, processor = load_model_and_processor(
                    self.model,
                    dtype=self.dtype,
                    device=self.device,
                    revision=self.revision,
                    use_fast=self.use_fast,
                    fast_decode=self.fast_decode,
                )
                gauge = run_local(
                    job,
                    model,
                    processor,
                    batch_size=self.batch_size,
                    workers=self.workers,
                    honor_exif=self.honor_exif,
                    progress=update,
                    max_batch_size=self.max_batch_size,
                )
                return gauge.peak
        finally:
            if bar is not None:
                bar.close()
        return 0
