"""`embed_source`: the whole bulk job in one call (what `siglip embed SOURCE --out DIR` runs)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError
from .job import BulkJob, JobSummary, embedding_dim, run_local
from .sources import list_source

# make_bar(total, initial) -> an object with update(n) and close(), e.g. a tqdm bar
ProgressFactory = Callable[[int, int], Any]


def embed_source(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str,
    revision: str | None = None,
    column: str | None = None,
    kind: str = "auto",
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
) -> JobSummary:
    """Embed every item of `source` into shards under `out`, resuming the job already there.

    `source` is a folder of images, a text file (one text per line) or a CSV/Parquet file with `column`
    (texts, or image paths with `kind="image"`). `dtype` is a name of `cli.common.DTYPES`. With `ray`, the
    work runs on Ray Data (`ray_address`: a cluster address, None for a local instance) with `ray_actors`
    model replicas; otherwise in this process with `workers` decoding threads. `use_fast` picks the batched
    torch image processor (`SiglipImageProcessorFast`), `fast_decode` reduced-scale JPEG decoding (both
    approximate, see the README). Returns the job's counts.
    """
    from ..auto import AutoConfig

    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    out = Path(out)
    items = list_source(source, column=column, kind=kind, exclude=out)
    if not items.items:
        raise InputError(f"nothing to embed: {source} holds no items")
    hub = {"revision": revision} if revision else {}
    dim = embedding_dim(AutoConfig.from_pretrained(model, **hub), items.kind)
    modes = [name for name, on in (("fast_decode", fast_decode), ("use_fast", use_fast)) if on]
    job = BulkJob.create(
        out,
        items,
        source_name=str(source),
        model=model,
        dim=dim,
        shard_size=shard_size,
        fmt=fmt,
        normalize=normalize,
        preprocessing="+".join(modes) if modes and items.kind == "image" else "exact",
    )
    pending = job.pending()
    resumed = len(job.shards) - len(pending)
    remaining = sum(shard.stop - shard.start for shard in pending)
    bar = make_bar(len(items.items), len(items.items) - remaining) if make_bar is not None else None
    update = bar.update if bar is not None else None
    try:
        if pending and ray:
            from .ray_runner import run_ray

            run_ray(
                job,
                model,
                address=ray_address,
                revision=revision,
                dtype=dtype,
                device=device,
                batch_size=batch_size,
                actors=ray_actors,
                honor_exif=honor_exif,
                use_fast=use_fast,
                fast_decode=fast_decode,
                progress=update,
            )
        elif pending:
            from ..auto import AutoModel
            from ..cli.common import DTYPES
            from ..encode import load_processor

            processor = load_processor(model, use_fast=use_fast, fast_decode=fast_decode, **hub)
            loaded = AutoModel.from_pretrained(model, dtype=DTYPES[dtype], device=device, **hub).eval()
            run_local(
                job, loaded, processor, batch_size=batch_size, workers=workers, honor_exif=honor_exif, progress=update
            )
    finally:
        if bar is not None:
            bar.close()
    return job.finish(started, resumed)
