"""`score_pairs`: the model's sigmoid score and cosine for every image-text pair of a table or of webdataset tars
(what `siglip score PAIRS` runs: the DataComp-style filter people run on crawled data).

A pair scores as the zero-shot pipeline scores an image against one label: `sigmoid(cos * exp(logit_scale) +
logit_bias)`, with both embeddings L2-normalised in float32. The work is a `job.BulkJob` like any bulk
embedding (same plan, same atomic shard commits, same resume): each shard stores the (score, cosine) rows of
its readable pairs instead of embeddings, its manifest part the status of every pair. A killed or interrupted
run resumes from its finished shards when re-run with the same source and options. When every shard is done,
`scores.parquet` is streamed from the shards, one row per pair in source order: `key`, `image`, `text`,
`score`, `cosine`, `status` ("ok", "corrupt", "unsupported", "missing") and `error`. A bad pair (no image, no
text, an unreadable or unsupported file) is recorded with its reason, never fatal.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, InputError
from ..files import atomic_write
from .job import MAX_BATCH_SIZE, BulkJob, fp32_features, run_local
from .sources import SourceItems, read_table, table_column
from .webdataset import MEMBER_SEPARATOR, caption, image_member, is_webdataset, list_tars, samples
from .writer import read_manifest

SCORES_FILE = "scores.parquet"
PAIR_TABLES = (".csv", ".parquet", ".jsonl", ".json")
MISSING = "missing"  # status of a pair without an image or a text


@dataclass
class PairItems(SourceItems):
    """Image items (paths relative to `root`, or `TAR::MEMBER`) with the text each is paired with; `problems`
    maps positions of pairs that cannot be scored to the reason."""

    texts: list[str] = field(default_factory=list)
    problems: dict[int, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """The items' fingerprint, texts included: a resumed run must score the very same pairs."""
        digest = hashlib.sha256(super().fingerprint().encode())
        for text in self.texts:
            digest.update(b"\0" + text.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()


def list_pairs(
    source: str | os.PathLike, image_column: str | None = None, text_column: str | None = None, key: str | None = None
) -> PairItems:
    """The pairs of `source`: a CSV/Parquet/JSON-lines table (`image_column` holds image paths, relative ones
    taken from the table's folder; `text_column` the texts; `key` a row-key column, default the row number),
    or webdataset tars (a `.tar` or a folder of them: each sample's image with its `.txt` or `.json` caption)."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"pairs source {path} does not exist: give a CSV/Parquet/JSONL table or webdataset tars")
    if is_webdataset(path):
        if image_column or text_column or key:
            raise InputError("webdataset tars pair each sample's image with its caption: drop the column options")
        return _webdataset_pairs(path)
    if path.suffix.lower() not in PAIR_TABLES:
        raise InputError(f"pairs source {path} must be a .csv, .parquet or .jsonl table, or webdataset tars")
    if not image_column or not text_column:
        raise InputError(f"{path} is a table: name its columns with --image-column and --text-column")
    table = read_table(path)
    images, texts = table_column(table, image_column, path), table_column(table, text_column, path)
    keys = table_column(table, key, path) if key else [str(row) for row in range(len(images))]
    if len(set(keys)) != len(keys):
        raise InputError(f"--key column {key!r} of {path} repeats values: a row key must be unique")
    raw_texts = table[text_column]
    problems = {}
    for position, (image, text) in enumerate(zip(images, raw_texts)):
        if not image:
            problems[position] = f"no image in column {image_column!r}"
        elif image.startswith(("http://", "https://")):
            problems[position] = "a URL: download the images first (e.g. to webdataset tars); score reads local files"
        elif text is None or (isinstance(text, float) and text != text):  # None or NaN: a missing value
            problems[position] = f"no text in column {text_column!r}"
    return PairItems("image", images, os.path.abspath(path.parent), keys=keys, texts=texts, problems=problems)


def _webdataset_pairs(path: Path) -> PairItems:
    root = path.parent if path.is_file() else path
    items, keys, texts, problems = [], [], [], {}
    for tar in list_tars(path):
        relative = os.path.relpath(tar, root)
        for sample, members in samples(tar).items():
            image = image_member(members)
            if image is None:
                problems[len(items)] = "sample has no image member"
            elif "txt" not in members and "json" not in members:
                problems[len(items)] = "sample has no .txt or .json caption"
            items.append(f"{relative}{MEMBER_SEPARATOR}{image}" if image else "")
            keys.append(f"{relative}{MEMBER_SEPARATOR}{sample}")
            texts.append(caption(str(tar), members))
    return PairItems("image", items, os.path.abspath(root), keys=keys, texts=texts, problems=problems)


@dataclass
class ScoreSummary:
    """Counts of a finished scoring run and where its table is."""

    total: int
    ok: int
    failed: int
    shards: int
    resumed_shards: int
    seconds: float
    path: Path
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.total} pairs: {self.ok} scored, {self.failed} not (status != ok); {self.shards} shards "
            f"({self.resumed_shards} already done) in {self.seconds:.1f}s"
        )


def pair_scorer(model: Any, processor: Any, texts: list[str], batch_size: int) -> Callable[..., np.ndarray]:
    """`to_rows(positions, image_embeddings)` for `job.run_local`: (score, cosine) of each image with its text,
    as the pipeline computes the score (cosine * exp(logit_scale) + logit_bias, then the sigmoid)."""
    import torch

    from ..encode import encode_texts

    scale = float(model.logit_scale.detach().float().exp())
    bias = float(model.logit_bias.detach().float())

    def to_rows(positions: list[int], images: np.ndarray) -> np.ndarray:
        features = encode_texts(model, processor, [texts[p] for p in positions], batch_size, normalize=False)
        cosine = torch.from_numpy(np.einsum("nd,nd->n", images, fp32_features(features, True)))
        score = torch.sigmoid(cosine * scale + bias)
        return torch.stack([score, cosine.clamp(-1.0, 1.0)], 1).numpy()

    return to_rows


def score_pairs(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str,
    image_column: str | None = None,
    text_column: str | None = None,
    key: str | None = None,
    revision: str | None = None,
    shard_size: int = 4096,
    batch_size: int = 32,
    dtype: str = "auto",
    device: str = "cpu",
    workers: int | None = None,
    honor_exif: bool = True,
    use_fast: bool = False,
    fast_decode: bool = False,
    make_bar: Callable[[int, int], Any] | None = None,
    max_batch_size: int = MAX_BATCH_SIZE,
) -> ScoreSummary:
    """Score every pair of `source` (see `list_pairs`) into the folder `out` (job files + `scores.parquet`),
    resuming the run already there. `dtype` is a name of `runtime.DTYPES`; `use_fast` / `fast_decode` are the
    approximate preprocessing modes of `embed_source`; `make_bar(total, initial)` gives a progress bar."""
    from ..auto import AutoConfig
    from ..runtime import canonical_dtype, load_model_and_processor
    from .run import model_identity

    _require_pyarrow()
    if batch_size < 1 or shard_size < 1:
        raise InputError(f"batch size and shard size must be >= 1, got {batch_size} and {shard_size}")
    started = time.perf_counter()
    pairs = list_pairs(source, image_column, text_column, key)
    if not pairs.items:
        raise InputError(f"nothing to score: {source} holds no pairs")
    config = AutoConfig.from_pretrained(model, revision=revision)
    identity = f"{model_identity(model, revision)}:{canonical_dtype(dtype, config)}"
    modes = "+".join(name for name, on in (("fast_decode", fast_decode), ("use_fast", use_fast)) if on) or "exact"
    job = BulkJob.create(
        out,
        pairs,
        source_name=os.path.abspath(source),
        model=identity,
        dim=2,
        shard_size=shard_size,
        preprocessing=modes,
        root=pairs.root,
    )
    pending = job.pending()
    notes = [f"--batch-size {batch_size} capped at {max_batch_size}"] if batch_size > max_batch_size else []
    if pending:
        encoder, processor = load_model_and_processor(
            model, dtype=dtype, device=device, revision=revision, use_fast=use_fast, fast_decode=fast_decode
        )
        remaining = sum(shard.stop - shard.start for shard in pending)
        bar = make_bar(len(pairs.items), len(pairs.items) - remaining) if make_bar is not None else None
        try:
            run_local(
                job,
                encoder,
                processor,
                batch_size=batch_size,
                workers=workers,
                honor_exif=honor_exif,
                progress=bar.update if bar is not None else None,
                max_batch_size=max_batch_size,
                settled={position: (MISSING, reason) for position, reason in pairs.problems.items()},
                to_rows=pair_scorer(encoder, processor, pairs.texts, batch_size),
            )
        finally:
            if bar is not None:
                bar.close()
    total, ok = write_scores(job, pairs)
    return ScoreSummary(
        total,
        ok,
        total - ok,
        len(job.shards),
        len(job.shards) - len(pending),
        time.perf_counter() - started,
        job.out / SCORES_FILE,
        notes,
    )


def write_scores(job: BulkJob, pairs: PairItems) -> tuple[int, int]:
    """Stream `scores.parquet` from the finished shards (one shard in memory at a time); (pairs, scored)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("key", pa.string()),
            ("image", pa.string()),
            ("text", pa.string()),
            ("score", pa.float32()),
            ("cosine", pa.float32()),
            ("status", pa.string()),
            ("error", pa.string()),
        ]
    )
    counts = [0, 0]

    def write(temporary: Path) -> None:
        with pq.ParquetWriter(temporary, schema) as writer:
            for shard in job.shards:
                values_path, part = job.paths(shard)
                rows, values = read_manifest(part), np.load(values_path)
                where = np.array([row.status == "ok" for row in rows], dtype=bool)
                ok = np.array([row.row for row in rows if row.status == "ok"], dtype=np.int64)
                score, cosine = np.zeros((2, len(rows)), np.float32)
                score[where], cosine[where] = values[ok, 0], values[ok, 1]
                columns = [
                    pairs.keys[shard.start : shard.stop],
                    pairs.items[shard.start : shard.stop],
                    pairs.texts[shard.start : shard.stop],
                    pa.array(score, mask=~where),  # null for pairs that were not scored
                    pa.array(cosine, mask=~where),
                    [row.status for row in rows],
                    [row.error for row in rows],
                ]
                writer.write_table(pa.table(dict(zip(schema.names, columns)), schema=schema))
                counts[0] += len(rows)
                counts[1] += int(where.sum())

    atomic_write(job.out / SCORES_FILE, write)
    return counts[0], counts[1]


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DependencyError("siglip score writes Parquet: pip install 'siglip[parquet]'") from None
