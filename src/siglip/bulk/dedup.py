"""`near_duplicates(index, threshold)`: groups of near-duplicate items of a collection, in bounded memory.

Two items are near-duplicates when the cosine of their embeddings is >= `threshold` (less float32 rounding,
1e-6, so that `threshold=1` finds exact copies); a group is a connected
component of that relation (single linkage: a chain of near-copies is one group), its representative the
member with the smallest id (the first in collection order), and every member's score is its cosine to the
representative (which may be below the threshold for a member reached through a chain).

Exact mode walks the upper triangle of the similarity matrix in `block` x `block` tiles: each tile is one
bfloat16 matmul (AMX/tensor cores make it several times faster than float32), pairs within `MARGIN` of the
threshold are re-checked in float32, and the rest are dropped, so the result is the float32 one (bfloat16
inputs and output move a cosine of unit vectors by < 0.008 < MARGIN). ANN mode asks the collection's usearch
graph for each item's `k` nearest neighbours instead (fast at millions of items, approximate: pairs the graph
misses are missed). Either way memory holds two tiles, one tile of scores, and an int64 parent per item for
the union-find (8 MB per million items), whatever the collection size.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import atomic_write

MARGIN = 0.02  # candidates from the bfloat16 tile (or the f16 graph) are re-checked in float32 within this
BLOCK = 4096  # rows per tile
ROUNDING = 1e-6  # float32 rounding: an exact copy's cosine may read 0.99999994, still ">= 1.0"


@dataclass
class DuplicateGroups:
    """Items in near-duplicate groups: `ids[i]` (item id of the index) is in group `group[i]` (0, 1, ... in the
    order of their representatives) with cosine `score[i]` to the representative; each group's representative
    comes first (score 1). `items` is how many items were searched."""

    ids: np.ndarray
    group: np.ndarray
    score: np.ndarray
    items: int
    threshold: float
    mode: str

    @property
    def groups(self) -> int:
        return int(self.group[-1]) + 1 if len(self.group) else 0

    def line(self) -> str:
        return (
            f"{len(self.ids)} of {self.items} items in {self.groups} groups of near-duplicates "
            f"(cosine >= {self.threshold}, {self.mode})"
        )


class UnionFind:
    """Disjoint sets over 0..n-1, united a batch of pairs at a time (vectorised); a root is its set's smallest
    member."""

    def __init__(self, count: int) -> None:
        self.parent = np.arange(count, dtype=np.int64)

    def find(self, items: np.ndarray) -> np.ndarray:
        roots = self.parent[items]
        while True:
            above = self.parent[roots]
            if np.array_equal(above, roots):
                return roots
            roots = above

    def union(self, left: np.ndarray, right: np.ndarray) -> None:
        """Unite each left[i] with right[i]: link the larger root under the smaller, until every pair agrees
        (several links onto one root in a round keep the smallest; the others go in the next round)."""
        while len(left):
            a, b = self.find(left), self.find(right)
            apart = a != b
            left, right, a, b = left[apart], right[apart], a[apart], b[apart]
            np.minimum.at(self.parent, np.maximum(a, b), np.minimum(a, b))

    def roots(self) -> np.ndarray:
        """Every item's root (paths fully compressed)."""
        while True:
            above = self.parent[self.parent]
            if np.array_equal(above, self.parent):
                return self.parent
            self.parent = above


def _rows(index: Any, start: int, stop: int) -> np.ndarray:
    """Unit float32 rows `start:stop` of the index: a view of the memory map when they lie in one whole
    shard (no copy), else gathered."""
    offset = 0
    for shard, selection, count in zip(index.shards, index.rows, index.counts):
        if offset <= start and stop <= offset + count and selection is None and index.normalized:
            if shard.dtype == np.float32:
                return np.asarray(shard[start - offset : stop - offset])
        offset += count
    return _gather(index, np.arange(start, stop))


def _exact_pairs(index: Any, threshold: float, block: int, sets: UnionFind, progress: Callable | None) -> None:
    import torch

    count = len(index)
    below = torch.ones(block, block, dtype=torch.bool).tril()  # a diagonal tile's pairs j <= i
    for start in range(0, count, block):
        queries = _rows(index, start, min(start + block, count))
        low = torch.from_numpy(queries).bfloat16()
        for column in range(start, count, block):
            others = queries if column == start else _rows(index, column, min(column + block, count))
            scores = low @ (low if column == start else torch.from_numpy(others).bfloat16()).T
            if column == start:
                scores.masked_fill_(below[: len(queries), : len(queries)], -2.0)
            hit = (scores.amax(dim=1) >= threshold - MARGIN).nonzero().flatten()
            if len(hit):
                rows, columns = (scores[hit] >= threshold - MARGIN).nonzero(as_tuple=True)
                rows, columns = hit[rows].numpy(), columns.numpy()
                exact = np.einsum("nd,nd->n", queries[rows], others[columns])
                keep = exact >= threshold - ROUNDING
                sets.union(start + rows[keep], column + columns[keep])
        if progress is not None:
            progress(len(queries))


def _ann_pairs(index: Any, threshold: float, block: int, k: int, sets: UnionFind, progress: Callable | None) -> None:
    count = len(index)
    k = min(k + 1, count)  # an item's own row is among its neighbours
    for start in range(0, count, block):
        queries = _rows(index, start, min(start + block, count))
        scores, ids = index.search_arrays(queries, k, ann=True)
        mine = np.arange(start, start + len(queries))[:, None]
        rows, columns = np.nonzero((scores >= threshold - MARGIN) & (ids >= 0) & (ids != mine))  # both directions
        if len(rows):
            neighbours = ids[rows, columns]
            unique, inverse = np.unique(neighbours, return_inverse=True)
            exact = np.einsum("nd,nd->n", queries[rows], _gather(index, unique)[inverse])
            keep = exact >= threshold - ROUNDING
            sets.union(start + rows[keep], neighbours[keep])
        if progress is not None:
            progress(len(queries))


def _gather(index: Any, ids: np.ndarray) -> np.ndarray:
    """Unit float32 rows of the sorted ids."""
    from .index import _normalize

    rows = index.vectors(ids)
    return rows if index.normalized else _normalize(rows)


def near_duplicates(
    index: Any,
    threshold: float = 0.95,
    *,
    ann: bool = False,
    k: int = 16,
    block: int = BLOCK,
    progress: Callable[[int], Any] | None = None,
) -> DuplicateGroups:
    """The near-duplicate groups of `index` (a `siglip.Index`, e.g. `Index.open(DIR)`); see the module
    docstring. `ann` uses the graph `siglip index DIR` built (refused when stale), `k` neighbours per item;
    `progress(n)` is called per block of n items searched."""
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"--threshold must be in (0, 1], got {threshold}")
    if block < 1 or k < 1:
        raise InputError(f"block and k must be >= 1, got {block} and {k}")
    sets = UnionFind(len(index))
    if ann:
        index.ann()  # a missing or stale graph is refused before any work
        _ann_pairs(index, threshold, block, k, sets, progress)
    else:
        _exact_pairs(index, threshold, block, sets, progress)
    roots = sets.roots()
    sizes = np.bincount(roots, minlength=len(roots))
    ids = np.nonzero(sizes[roots] > 1)[0]  # ascending, so each group's representative (its root) comes first
    order = np.argsort(roots[ids], kind="stable")
    ids = ids[order]
    representatives = roots[ids]
    group = np.cumsum(np.r_[True, representatives[1:] != representatives[:-1]]) - 1 if len(ids) else ids
    score = np.empty(len(ids), np.float32)
    for start in range(0, len(ids), block):  # cosines to the representatives, a block of members at a time
        members, heads = ids[start : start + block], representatives[start : start + block]
        unique, inverse = np.unique(heads, return_inverse=True)
        sort = np.argsort(members)
        vectors = np.empty((len(members), index.dim), np.float32)
        vectors[sort] = _gather(index, members[sort])
        score[start : start + len(members)] = np.einsum("nd,nd->n", vectors, _gather(index, unique)[inverse])
    score[ids == representatives] = 1.0
    mode = f"ANN, k={k}" if ann else "exact"
    return DuplicateGroups(ids, group.astype(np.int64), np.clip(score, -1.0, 1.0), len(index), threshold, mode)


def write_groups(index: Any, groups: DuplicateGroups, path: str | os.PathLike) -> Path:
    """Write the groups as a table (Parquet for a `.parquet` name, else CSV): `group`, `path`, `key`, `score`
    (cosine to the group's representative, 1 for the representative itself), `representative` (its path)."""
    path = Path(path)
    first = np.r_[True, groups.group[1:] != groups.group[:-1]] if len(groups.ids) else np.zeros(0, bool)
    heads = dict(zip(groups.group[first].tolist(), groups.ids[first].tolist()))
    columns = {
        "group": groups.group.tolist(),
        "path": [index.paths[i] for i in groups.ids],
        "key": [index.keys[i] for i in groups.ids],
        "score": groups.score.tolist(),
        "representative": [index.paths[heads[g]] for g in groups.group.tolist()],
    }

    def write(temporary: Path) -> None:
        if path.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {"group": pa.int64(), "score": pa.float32()}
            table = pa.table({name: pa.array(values, types.get(name, pa.string())) for name, values in columns.items()})
            pq.write_table(table, temporary)
        else:
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(columns)
                writer.writerows(zip(*columns.values()))

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    return path
