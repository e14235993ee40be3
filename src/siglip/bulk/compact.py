"""`compact(DIR)`: fold a collection's segments into one, dropping deleted and replaced embeddings.

Syncs only append (a segment per sync, tombstones for deletions), so a collection that changes often keeps
embeddings nobody can find any more and its reads touch many small shards. Compaction copies the live rows
into a fresh segment, commits a state that lists only it (one atomic rename), then removes the old segments.
A kill before the commit leaves the collection as it was (the half-written segment is removed by the next
writer); after it, readers see the compacted collection; search results are the same before and after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .collection import Collection, writer_lock
from .job import BulkJob, plan_shards
from .sources import SourceItems
from .writer import ManifestRow


@dataclass
class CompactSummary:
    """Segments and stored embedding rows before and after a compaction."""

    segments_before: int
    rows_before: int
    rows_after: int
    items: int

    def line(self) -> str:
        return (
            f"compacted {self.segments_before} segments into 1: {self.rows_before} stored embeddings -> "
            f"{self.rows_after} ({self.items} live items)"
        )


def stored_rows(collection: Collection) -> int:
    """Embedding rows stored in the committed segments (live or not)."""
    segments = collection.state.segments
    return sum(row.status == "ok" for segment in segments for row in collection.shard_rows(segment))


def compact(folder: str | os.PathLike, *, shard_size: int = 4096, fmt: str = "npy") -> CompactSummary:
    """Rewrite the collection in `folder` as one segment of its live rows (see the module docstring)."""
    from .index import refresh_ann

    folder = Path(folder)
    with writer_lock(folder):
        collection = Collection.open(folder)
        live = list(collection.live().values())
        before = (len(collection.state.segments), stored_rows(collection))
        ok = [row for row in live if row.status == "ok"]
        items = SourceItems(
            collection.settings.kind,
            [row.path for row in ok],
            collection.state.root,
            keys=[row.key for row in ok],
            meta=[row.meta for row in ok],
            sizes=[row.size for row in ok],
            mtimes=[row.mtime_ns for row in ok],
            hashes=[row.hash for row in ok],
        )
        segment = collection.next_segment()
        collection.remove_unlisted()
        settings = collection.settings
        job = BulkJob.create(
            folder / segment,
            items,
            source_name=collection.state.source,
            model=settings.model_id,
            dim=settings.dim,
            shard_size=shard_size,
            fmt=fmt,
            normalize=settings.normalized,
            preprocessing=settings.preprocessing,
            root=collection.state.root,
        )
        maps: dict[tuple[str, int], np.ndarray] = {}
        changes: list[ManifestRow] = []
        for shard in plan_shards(len(ok), shard_size):
            members = ok[shard.start : shard.stop]
            vectors = np.empty((len(members), settings.dim), np.float32)
            for i, row in enumerate(members):
                where = (row.segment, row.shard)
                if where not in maps:
                    maps[where] = collection.embeddings(*where)
                vectors[i] = maps[where][row.row]
            rows = [replace(row, segment="", shard=shard.index, row=i) for i, row in enumerate(members)]
            job.commit(shard, vectors, rows)
            changes.extend(rows)
        changes.extend(replace(row, segment="") for row in live if row.status != "ok")
        collection.commit(segment, changes, source=collection.state.source, root=collection.state.root, replace=True)
        collection.remove_unlisted()
        collection.write_live_manifest(collection.live())
        refresh_ann(folder)
    return CompactSummary(before[0], before[1], len(ok), len(live))
