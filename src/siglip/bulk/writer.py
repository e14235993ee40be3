"""Crash-safe files of a bulk embedding job: shards of embeddings and their manifest parts.

Layout of an output folder::

    job.json                        what was planned: source, model, item count, shard size, format
    shards/shard-00000.npy          float32 (n_ok, D) embeddings of the shard's readable items, in item order
    shards/shard-00000.parquet      the shard's manifest part (or .csv): one row per item, ok or not
    manifest.parquet                every part concatenated (written when the job ends)

Every file is written by `files.atomic_write` (a temporary in the same folder, fsynced, moved into place with
`os.replace`, which is atomic on POSIX): a reader (or a resumed job) sees a complete file or none. A shard is
*finished* when its manifest part exists; the part is written after the embeddings, so a kill between the two only
makes the resumed job redo that shard (overwriting its embeddings): nothing is lost, nothing is counted twice.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import TEMPORARY_GLOB, atomic_write, left_by_ended_process

MANIFEST_COLUMNS = ("path", "size", "status", "error", "shard", "row", "key", "mtime_ns", "hash", "segment", "meta")
INT_COLUMNS = ("size", "shard", "row", "mtime_ns")
EMBEDDING_KEY = "embeddings"  # tensor name inside a .safetensors shard
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}


@dataclass
class ManifestRow:
    """One input item: `status` is "ok", "corrupt", "unsupported" (or "deleted" in a collection's change log);
    `row` is its embedding row in the shard (-1 when it has none). For text jobs `path` holds the text and
    `size` its UTF-8 length in bytes. A collection adds the item's `key` (see `sources`), its modification time
    and content `hash` (what a sync compares), the `segment` whose shard holds the embedding ("" = the segment
    of this row) and a table row's other columns as JSON (`meta`). Folders written before collections existed
    lack these columns: they read as empty."""

    path: str
    size: int
    status: str
    error: str
    shard: int
    row: int
    key: str = ""
    mtime_ns: int = -1
    hash: str = ""
    segment: str = ""
    meta: str = ""


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files a killed run left behind (they are never read); a running process's are kept."""
    if folder.is_dir():
        for leftover in folder.glob(TEMPORARY_GLOB):
            if left_by_ended_process(leftover):
                leftover.unlink(missing_ok=True)


def shard_paths(folder: Path, shard: int, fmt: str, manifest_fmt: str) -> tuple[Path, Path]:
    """(embeddings file, manifest part) of shard number `shard`."""
    stem = folder / "shards" / f"shard-{shard:05d}"
    return stem.with_suffix(".npy" if fmt == "npy" else ".safetensors"), stem.with_suffix(f".{manifest_fmt}")


def write_shard_embeddings(path: Path, embeddings: np.ndarray) -> None:
    """Atomically write a float32 (n, D) array as .npy or .safetensors (by suffix)."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)

    def write(temporary: Path) -> None:
        if path.suffix == ".npy":
            with open(temporary, "wb") as handle:
                np.save(handle, embeddings)
        else:
            from safetensors.numpy import save_file

            save_file({EMBEDDING_KEY: embeddings}, str(temporary))

    atomic_write(path, write)


def open_embeddings(path: Path) -> np.ndarray:
    """A read-only memory map of a shard's (n, D) embeddings (.npy or .safetensors)."""
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    with open(path, "rb") as handle:  # safetensors: u64 header length, JSON header, then raw little-endian data
        header_length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_length))
    entry = header[EMBEDDING_KEY]
    if entry["dtype"] not in _SAFETENSORS_DTYPES:
        raise InputError(f"{path}: unsupported embedding dtype {entry['dtype']}")
    start, stop = entry["data_offsets"]
    if stop == start:
        return np.empty(entry["shape"], _SAFETENSORS_DTYPES[entry["dtype"]])
    return np.memmap(
        path, _SAFETENSORS_DTYPES[entry["dtype"]], "r", offset=8 + header_length + start, shape=tuple(entry["shape"])
    )


def write_manifest(path: Path, rows: Sequence[ManifestRow]) -> None:
    """Atomically write manifest rows as Parquet or CSV (by suffix)."""

    def write(temporary: Path) -> None:
        columns = {name: [getattr(row, name) for row in rows] for name in MANIFEST_COLUMNS}
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {"size": pa.int64(), "shard": pa.int32(), "row": pa.int32(), "mtime_ns": pa.int64()}
            arrays = {name: pa.array(values, types.get(name, pa.string())) for name, values in columns.items()}
            pq.write_table(pa.table(arrays), temporary)
        else:
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(MANIFEST_COLUMNS)
                writer.writerows(zip(*columns.values()))

    atomic_write(path, write)


def read_manifest(path: Path) -> list[ManifestRow]:
    """Rows of a manifest (or manifest part) written by `write_manifest`."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        columns = pq.read_table(path).to_pydict()
        records: Iterator[dict[str, Any]] = (dict(zip(columns, values)) for values in zip(*columns.values()))
    else:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
        with handle:
            records = iter(list(csv.DictReader(handle)))
    return [
        ManifestRow(
            **{
                name: (int(record[name]) if name in INT_COLUMNS else record[name] or "")
                for name in MANIFEST_COLUMNS
                if name in record and record[name] is not None
            }
        )
        for record in records
    ]


def manifest_format() -> str:
    """Parquet when pyarrow is installed, else CSV."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return "csv"
    return "parquet"
