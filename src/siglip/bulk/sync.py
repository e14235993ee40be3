"""A sync: compare a source with its collection and plan what to embed, reuse and delete.

Change detection is cheap first: an item whose key, size and modification time (and, for tables, value and
other columns) match its live row is unchanged without reading it. Every other item is read once to hash
its content: the same hash as its live row means only its stat changed (the row is refreshed), a hash any
live row has (a rename, a copy, or a file changed back) reuses that row's embedding without the model, and
only content never seen is embedded. Keys of the collection the source no longer has get tombstones; one
whose content reappears under a new key counts as renamed, not deleted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ..files import open_regular
from ..threads import default_workers
from .sources import SourceItems, is_supported_image
from .webdataset import member_stat, read_member
from .writer import ManifestRow

HASH_BLOCK = 1 << 20
T = TypeVar("T")


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hash_item(source: SourceItems, position: int) -> str:
    """The content hash of item `position` (its file's bytes, a tar member's, or a text's UTF-8); '' when a
    file cannot be read (it is then embedded, and recorded as corrupt)."""
    if source.kind == "text":
        return content_hash(source.items[position].encode("utf-8", "surrogatepass"))
    located = source.locate(position)
    try:
        member = read_member(located)
        if member is not None:
            return content_hash(member)
        digest = hashlib.blake2b(digest_size=16)
        with open_regular(located, "item") as handle:  # a FIFO or a device is refused, never read
            while block := handle.read(HASH_BLOCK):
                digest.update(block)
        return digest.hexdigest()
    except (OSError, KeyError, ValueError):  # InputError is a ValueError: the item is then settled at embed time
        return ""


CHUNK = 512  # items per thread-pool task: one future per item costs more than a stat of a cached file


def map_chunked(function: Callable[[int], T], positions: list[int], workers: int | None) -> list[T]:
    """`[function(p) for p in positions]` on a thread pool, `CHUNK` positions per task (file system calls
    release the GIL, so a slow or network file system is read in parallel)."""

    def run(start: int) -> list[T]:
        return [function(p) for p in positions[start : start + CHUNK]]

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        return [value for part in pool.map(run, range(0, len(positions), CHUNK)) for value in part]


def stat_items(source: SourceItems, workers: int | None = None) -> None:
    """Fill `source.sizes` and `source.mtimes` (-1 for texts' mtime and unreadable files)."""
    if source.kind == "text":
        source.sizes = [len(item.encode("utf-8", "surrogatepass")) for item in source.items]
        source.mtimes = [-1] * len(source.items)
        return

    def stat(position: int) -> tuple[int, int]:
        located = source.locate(position)
        try:
            inside = member_stat(located)
            if inside is not None:
                return inside
            info = os.stat(located)
            return info.st_size, info.st_mtime_ns
        except (OSError, ValueError):
            return -1, -1

    found = map_chunked(stat, list(range(len(source.items))), workers)
    source.sizes = [size for size, _ in found]
    source.mtimes = [mtime for _, mtime in found]


@dataclass
class SyncPlan:
    """What a sync will do. `embed`: source positions to run the model on (each new content once);
    `reuse`: (position, donor) pairs, the donor a live row (its embedding is reused) or a position of `embed`
    (a copy within this sync); `tombstones`: keys to delete; counts for the summary line."""

    source: SourceItems
    embed: list[int] = field(default_factory=list)
    reuse: list[tuple[int, ManifestRow | int]] = field(default_factory=list)
    tombstones: list[str] = field(default_factory=list)
    new: int = 0
    changed: int = 0
    deleted: int = 0
    renamed: int = 0
    duplicates: int = 0
    unchanged: int = 0
    refreshed: int = 0

    @property
    def empty(self) -> bool:
        return not (self.embed or self.reuse or self.tombstones)

    def line(self, corrupt: int | None = None) -> str:
        tail = f", {corrupt} corrupt" if corrupt is not None else ""
        return (
            f"+{self.new} new, {self.changed} changed, {self.deleted} deleted, {self.renamed} renamed (reused), "
            f"{self.duplicates} duplicates (reused){tail}; {self.unchanged} unchanged"
        )


def _hashable(source: SourceItems, position: int) -> bool:
    return source.kind == "text" or is_supported_image(source.items[position])


def _same_stat(old: ManifestRow, source: SourceItems, position: int) -> bool:
    """Unchanged without reading it: same value, size, mtime and other columns (and a known hash, unless the
    item is never hashed: unsupported files)."""
    return (
        (old.hash != "" or not _hashable(source, position))
        and old.path == source.items[position]
        and old.size == source.sizes[position]
        and old.mtime_ns == source.mtimes[position]
        and old.meta == source.meta[position]
    )


def plan_sync(source: SourceItems, live: dict[str, ManifestRow], workers: int | None = None) -> SyncPlan:
    """Compare the scanned `source` with the `live` rows of its collection (empty for a new one)."""
    stat_items(source, workers)
    plan = SyncPlan(source)
    count = len(source.items)
    needs_hash = [
        p for p in range(count) if source.keys[p] not in live or not _same_stat(live[source.keys[p]], source, p)
    ]
    hashes = [live[key].hash if key in live else "" for key in source.keys]
    hashable = [p for p in needs_hash if _hashable(source, p)]
    for position, digest in zip(hashable, map_chunked(lambda p: hash_item(source, p), hashable, workers)):
        hashes[position] = digest
    source.hashes = hashes
    present = set(source.keys)
    donors = {row.hash: row for row in live.values() if row.hash and row.status in ("ok", "corrupt")}
    claimed: set[str] = set()  # gone keys whose content reappeared (renames)
    first_embedding: dict[str, int] = {}  # hash -> position embedded by this sync
    needs = set(needs_hash)
    for position in range(count):
        key, digest = source.keys[position], hashes[position]
        old = live.get(key)
        if position not in needs:
            plan.unchanged += 1
            continue
        if old is not None and (old.hash == digest != "" or (old.hash == "" and old.size == source.sizes[position])):
            plan.unchanged += 1  # only the stat (or the table's other columns) changed, or a legacy row
            plan.refreshed += 1
            plan.reuse.append((position, old))
            continue
        donor: ManifestRow | int | None = donors.get(digest) if digest else None
        if donor is None and digest in first_embedding:
            donor = first_embedding[digest]
        if old is not None:
            plan.changed += 1
        elif isinstance(donor, ManifestRow) and donor.key not in present and donor.key not in claimed:
            plan.renamed += 1
            claimed.add(donor.key)
        elif donor is not None:
            plan.duplicates += 1
        else:
            plan.new += 1
        if donor is None:
            if digest:
                first_embedding[digest] = position
            plan.embed.append(position)
        else:
            plan.reuse.append((position, donor))
    plan.tombstones = [key for key in live if key not in present]
    plan.deleted = len(plan.tombstones) - len(claimed)
    return plan


def change_rows(plan: SyncPlan, embedded: list[ManifestRow]) -> list[ManifestRow]:
    """The change log of a sync: the embedded rows (as their shards recorded them, `embedded` in the order of
    `plan.embed`), the reused ones pointing at their donor's embedding, and the tombstones."""
    source = plan.source
    rows = list(embedded)
    by_position = dict(zip(plan.embed, embedded))
    for position, donor in plan.reuse:
        base = by_position[donor] if isinstance(donor, int) else donor
        rows.append(
            replace(
                base,
                path=source.items[position],
                size=source.sizes[position],
                key=source.keys[position],
                mtime_ns=source.mtimes[position],
                hash=source.hashes[position] or base.hash,
                meta=source.meta[position],
            )
        )
    rows.extend(ManifestRow(key, -1, "deleted", "", -1, -1, key=key) for key in plan.tombstones)
    return rows
