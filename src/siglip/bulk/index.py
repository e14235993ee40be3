"""Search a bulk-embedded collection: exact (matmul over memory-mapped shards) or approximate (usearch HNSW).

    index = siglip.Index.open("photos.emb")              # the --out folder of `siglip embed SOURCE --out DIR`
    hits = index.search_text(["a dog on a beach"], k=5)[0]
    hits = index.search_image(["query.jpg"], k=5)[0]      # image -> image
    scores, ids = index.search_arrays(query_embeddings, k=10)

Scores are cosine similarities (embeddings and queries are L2-normalised), clipped to [-1, 1]. Exact search
streams every live row through the CPU in chunks, so memory stays bounded whatever the collection size; rows
a sync deleted or replaced are never seen (`Index.open` reads the collection's live view). `build_ann()`
(what `siglip index DIR` runs) writes an HNSW graph to `ann.usearch` and measures its recall@k against exact
search; `search(..., ann=True)` then answers from the graph (its candidates re-scored against the stored float32
rows, so ANN scores equal exact ones), which records the collection state it was built
for: a graph of an older state is refused (`StaleAnnError`), never used. `select(under=, glob=, where=)` gives
a filter mask for `search(..., mask=)`: exact search applies it before the top-k, ANN over-fetches and re-checks.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, InputError

ANN_FILE, ANN_META = "ann.usearch", "ann.json"
CHUNK_ROWS = 65536  # rows of a shard multiplied at once in exact search


@dataclass
class Hit:
    """One search result: the item (a file path, or the text of a text collection), its score and row id."""

    path: str
    score: float
    index: int


@dataclass
class AnnInfo:
    """What `ann.json` records about the graph beside the embeddings."""

    count: int
    dim: int
    dtype: str
    connectivity: int
    expansion_add: int
    expansion_search: int
    build_seconds: float
    recall_at_k: float
    k: int
    queries: int
    generation: int = 0  # the collection state (`state.json` generation) the graph covers


class StaleAnnError(InputError):
    """The ANN graph was built for another state of the collection: rebuild it with `siglip index DIR`."""


def _normalize(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of each row of `scores` (with their `ids`), best first."""
    if scores.shape[1] > k:
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores, ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def _require_usearch() -> Any:
    try:
        from usearch.index import Index as UsearchIndex
    except ImportError:
        raise DependencyError("approximate search needs usearch: pip install 'siglip[ann]'") from None
    return UsearchIndex


class Index:
    """A searchable collection of embeddings: shards (memory maps or arrays) and the item each row belongs to."""

    def __init__(
        self,
        shards: list[np.ndarray],
        paths: list[str],
        *,
        normalized: bool = True,
        model: str | None = None,
        folder: Path | None = None,
        rows: list[np.ndarray | None] | None = None,
        keys: list[str] | None = None,
        meta: list[str] | None = None,
        generation: int = 0,
        root: str = "",
        kind: str = "image",
    ) -> None:
        """`shards[i]` holds embeddings; `rows[i]` (None: all) the rows of it that are items, in id order."""
        self.rows = rows if rows is not None else [None] * len(shards)
        counts = [len(shard) if sel is None else len(sel) for shard, sel in zip(shards, self.rows)]
        if sum(counts) != len(paths):
            raise InputError(f"{sum(counts)} embeddings but {len(paths)} paths")
        self.shards, self.paths, self.normalized = shards, paths, normalized
        self.counts = counts
        self.keys = keys if keys is not None else paths
        self.meta = meta if meta is not None else [""] * len(paths)
        self.model_name, self.folder, self.generation, self.root = model, folder, generation, root
        self.kind = kind  # what the items are: "image" (paths) or "text"
        self.dim = shards[0].shape[1] if shards else 0
        self._ann: Any = None
        self._encoders: dict[tuple[str, str], tuple[Any, Any]] = {}

    @classmethod
    def open(cls, folder: str | Path) -> Index:
        """The live items of a collection (`siglip embed SOURCE --out DIR`), memory-mapped: every item a
        committed sync left, none it deleted (an unfinished first job shows its finished shards)."""
        from .collection import Collection

        for attempt in range(3):
            try:
                return cls._from_collection(Collection.open(folder))
            except FileNotFoundError:  # a compaction replaced the segments meanwhile: read the new state
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _from_collection(cls, collection: Any) -> Index:
        folder = collection.folder
        groups: dict[tuple[str, int], list[Any]] = {}
        live = [row for row in collection.live().values() or collection.unfinished_first_job() if row.status == "ok"]
        for row in live:
            groups.setdefault((row.segment, row.shard), []).append(row)
        order = {segment: i for i, segment in enumerate(collection.state.segments)}
        shards, rows, paths, keys, meta = [], [], [], [], []
        for segment, shard in sorted(groups, key=lambda group: (order.get(group[0], -1), group[1])):
            members = sorted(groups[segment, shard], key=lambda row: row.row)
            embeddings = collection.embeddings(segment, shard)
            if members[-1].row >= len(embeddings):
                raise InputError(f"{folder}/{segment} shard {shard} holds {len(embeddings)} rows, its manifest more")
            selection = np.array([row.row for row in members], dtype=np.int64)
            whole = len(selection) == len(embeddings) and bool((selection == np.arange(len(embeddings))).all())
            shards.append(embeddings)
            rows.append(None if whole else selection)
            paths.extend(collection.display_path(row) for row in members)
            keys.extend(row.key for row in members)
            meta.extend(row.meta for row in members)
        if not paths:
            raise InputError(f"{folder} holds no embeddings yet: run `siglip embed SOURCE --out {folder}` first")
        settings = collection.settings
        return cls(
            shards,
            paths,
            normalized=settings.normalized,
            model=settings.model,
            folder=folder,
            rows=rows,
            keys=keys,
            meta=meta,
            generation=collection.state.generation,
            root=collection.state.root,
            kind=settings.kind,
        )

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, paths: list[str] | None = None) -> Index:
        """An in-memory collection (normalised here); `paths` default to the row numbers."""
        embeddings = _normalize(embeddings)
        return cls([embeddings], paths if paths is not None else [str(i) for i in range(len(embeddings))])

    def __len__(self) -> int:
        return len(self.paths)

    # exact and approximate search --------------------------------------------------------------------------------

    def search_arrays(
        self, queries: Any, k: int = 10, *, ann: bool = False, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k'), best first, k' = min(k, len(self)); `queries` is (Q, D) or (D,).
        `mask` (bool, one per item, see `select`) keeps only the items it marks: k' = min(k, mask.sum()), and
        a query with fewer matches than k' pads with id -1 and score -inf."""
        queries = np.asarray(queries, dtype=np.float32)
        queries = queries[None, :] if queries.ndim == 1 else queries
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(
                f"queries must be (Q, {self.dim}) or ({self.dim},) to match the collection, got {queries.shape}"
            )
        queries = _normalize(queries)
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (len(self),):
                raise InputError(f"mask must hold one bool per item ({len(self)}), got shape {mask.shape}")
        k = min(k, len(self) if mask is None else int(mask.sum()))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, ids = self._search_ann(queries, k, mask) if ann else self._search_exact(queries, k, mask)
        return np.clip(scores, -1.0, 1.0), ids  # stored rows are fp32-normalised; rounding may still pass 1

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first id, float32 unit rows) of every item in id order, in chunks of at most CHUNK_ROWS rows."""
        offset = 0
        for shard, selection, count in zip(self.shards, self.rows, self.counts):
            for start in range(0, count, CHUNK_ROWS):
                stop = min(start + CHUNK_ROWS, count)
                chunk = shard[start:stop] if selection is None else shard[selection[start:stop]]
                chunk = np.asarray(chunk, dtype=np.float32)
                yield offset + start, chunk if self.normalized else _normalize(chunk)
            offset += count

    def _search_exact(self, queries: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        best_scores = np.full((len(queries), 0), -np.inf, np.float32)
        best_ids = np.zeros((len(queries), 0), np.int64)
        for offset, chunk in self.blocks():
            ids = np.arange(offset, offset + len(chunk))
            if mask is not None:
                keep = mask[offset : offset + len(chunk)]
                if not keep.any():
                    continue
                chunk, ids = chunk[keep], ids[keep]
            scores = queries @ chunk.T
            scores, ids = _top_k(scores, np.broadcast_to(ids, scores.shape), k)
            best_scores, best_ids = _top_k(np.hstack([best_scores, scores]), np.hstack([best_ids, ids]), k)
        return best_scores, best_ids

    def _graph_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The graph's k candidates per query, re-scored against the stored float32 rows (the graph keeps f16
        copies, whose rounding would reorder near ties and shift scores) and sorted best first, ties by id."""
        matches = self.ann().search(queries, k)
        ids = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)
        counts = getattr(matches, "counts", None)  # a single query gives `Matches`, several `BatchMatches`
        counts = np.asarray([len(matches)] if counts is None else counts).reshape(-1, 1)
        ids[np.arange(ids.shape[1])[None, :] >= counts] = -1
        scores = np.full(ids.shape, -np.inf, np.float32)
        found = ids >= 0
        unique, inverse = np.unique(ids[found], return_inverse=True)
        rows = self.vectors(unique)
        rows = rows if self.normalized else _normalize(rows)
        scores[found] = np.einsum("ij,ij->i", queries[np.nonzero(found)[0]], rows[inverse.reshape(-1)])
        order = np.lexsort((np.where(found, ids, np.iinfo(np.int64).max), -scores), axis=-1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def _search_ann(self, queries: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """From the graph; with a mask, fetch 4x k, keep the matches the mask marks, and fetch 4x more while a
        query has fewer than k of them; queries still short when the fetch covers the collection go exact."""
        if mask is None:  # fetch 2x k so that the exact re-scoring also settles the k-th place
            scores, ids = self._graph_search(queries, min(len(self), 2 * k))
            return scores[:, :k], ids[:, :k]
        fetch = min(len(self), 4 * k)
        while True:
            scores, ids = self._graph_search(queries, fetch)
            keep = (ids >= 0) & mask[np.maximum(ids, 0)]
            short = keep.sum(axis=1) < k
            if not short.any() or fetch >= len(self):
                break
            fetch = min(len(self), fetch * 4)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # the kept ones first, in score order
        scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        kept = np.take_along_axis(keep, order, 1)
        scores[~kept], ids[~kept] = -np.inf, -1
        if short.any():
            scores[short], ids[short] = self._search_exact(queries[short], k, mask)
        return scores, ids

    def search(
        self, queries: Any, k: int = 10, *, ann: bool = False, mask: np.ndarray | None = None
    ) -> list[list[Hit]]:
        """For each query embedding, its k nearest items (among `mask`'s, when given) as `Hit`s, best first."""
        scores, ids = self.search_arrays(queries, k, ann=ann, mask=mask)
        return [
            [Hit(self.paths[i], float(s), int(i)) for s, i in zip(row_scores, row_ids) if i >= 0]
            for row_scores, row_ids in zip(scores, ids)
        ]

    # filters ----------------------------------------------------------------------------------------------------

    def select(
        self, *, under: str | None = None, glob: str | None = None, where: list[str] | None = None
    ) -> np.ndarray:
        """A bool mask of the items that are under the folder `under` (relative to the source, or absolute),
        whose key or path matches the shell pattern `glob` (`*` also crosses folders), and whose table row has
        each `column=value` of `where` (values compared as strings)."""
        keep = np.ones(len(self), dtype=bool)
        if under is not None:
            base = os.path.relpath(under, self.root) if os.path.isabs(under) and self.root else under
            base = os.path.normpath(base).strip(os.sep)
            base = "" if base == "." else base
            keep &= np.array([not base or k == base or k.startswith(base + os.sep) for k in self.keys], dtype=bool)
        if glob is not None:
            keep &= np.array(
                [fnmatch.fnmatchcase(k, glob) or fnmatch.fnmatchcase(p, glob) for k, p in zip(self.keys, self.paths)],
                dtype=bool,
            )
        for condition in where or []:
            column, separator, value = condition.partition("=")
            if not separator or not column:
                raise InputError(f"--where takes COLUMN=VALUE, got {condition!r}")
            records = [json.loads(m) if m else {} for m in self.meta]
            if not any(column in record for record in records):
                names = sorted({name for record in records for name in record})
                raise InputError(
                    f"no item has a column {column!r}"
                    + (f"; columns: {', '.join(names)}" if names else ": --where needs a CSV/Parquet source")
                )
            keep &= np.array([str(record.get(column)) == value for record in records], dtype=bool)
        return keep

    # queries from texts and images ----------------------------------------------------------------------------

    def encoder(
        self, model: Any = None, processor: Any = None, *, dtype: str = "auto", device: str = "cpu"
    ) -> tuple[Any, Any]:
        """(model, processor) that made the collection, unless given: loaded once per --dtype name `dtype` and
        `device` (by default as stored, on the CPU)."""
        if model is not None and processor is not None:
            return model, processor
        if (dtype, device) not in self._encoders:
            if self.model_name is None:
                raise InputError("this index does not know its model: pass model= and processor=")
            from ..runtime import load_model_and_processor

            self._encoders[dtype, device] = load_model_and_processor(self.model_name, dtype=dtype, device=device)
        return self._encoders[dtype, device]

    def search_text(
        self,
        texts: list[str],
        k: int = 10,
        *,
        ann: bool = False,
        model: Any = None,
        processor: Any = None,
        mask: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """Text -> collection: the k best items for each text (among `mask`'s, see `select`)."""
        from ..encode import encode_texts

        model, processor = self.encoder(model, processor)
        queries = encode_texts(model, processor, list(texts), normalize=False).float().numpy()
        return self.search(queries, k, ann=ann, mask=mask)

    def search_image(
        self,
        images: list[Any],
        k: int = 10,
        *,
        ann: bool = False,
        model: Any = None,
        processor: Any = None,
        mask: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """Image -> collection: the k best items for each image (paths, URLs or PIL images)."""
        from ..encode import iter_encoded_images

        model, processor = self.encoder(model, processor)
        embeddings = [e.float().numpy() for _, e in iter_encoded_images(model, processor, list(images))]
        return self.search(np.concatenate(embeddings), k, ann=ann, mask=mask)

    # the ANN graph -----------------------------------------------------------------------------------------------

    def ann(self) -> Any:
        """The usearch graph saved beside the embeddings (memory-mapped), or the one built in memory."""
        if self._ann is None:
            UsearchIndex = _require_usearch()
            meta = self.folder / ANN_META if self.folder is not None else None
            if meta is None or not meta.exists():
                raise InputError("no ANN index: build one with `siglip index DIR` (or Index.build_ann())")
            info = AnnInfo(**json.loads(meta.read_text(encoding="utf-8")))
            if info.count != len(self) or info.generation != self.generation:
                raise StaleAnnError(
                    f"the ANN index of {self.folder} is stale (built for state {info.generation} with {info.count} "
                    f"items, the collection is at state {self.generation} with {len(self)}): rebuild it with "
                    f"`siglip index {self.folder}` (a sync rebuilds it too)"
                )
            self._ann = UsearchIndex.restore(str(self.folder / ANN_FILE), view=True)
        return self._ann

    def build_ann(
        self,
        *,
        dtype: str = "f16",
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        k: int = 10,
        queries: int = 1000,
        seed: int = 0,
    ) -> AnnInfo:
        """Build the HNSW graph over every row (inner product), measure recall@k against exact search on
        `queries` perturbed collection rows (cosine ~0.9 to their source row), and save both when the
        collection lives in a folder."""
        from ..files import atomic_write

        UsearchIndex = _require_usearch()
        started = time.perf_counter()
        graph = UsearchIndex(
            ndim=self.dim,
            metric="ip",
            dtype=dtype,
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        for offset, chunk in self.blocks():
            graph.add(np.arange(offset, offset + len(chunk), dtype=np.uint64), chunk)
        build_seconds = time.perf_counter() - started
        self._ann = graph
        sample = self.perturbed_queries(queries, seed)
        recall = self.recall(sample, k)
        info = AnnInfo(
            len(self),
            self.dim,
            dtype,
            connectivity,
            expansion_add,
            expansion_search,
            build_seconds,
            recall,
            k,
            len(sample),
            self.generation,
        )
        if self.folder is not None:
            atomic_write(self.folder / ANN_FILE, lambda tmp: graph.save(str(tmp)))
            atomic_write(self.folder / ANN_META, lambda tmp: tmp.write_text(json.dumps(asdict(info), indent=1)))
        return info

    def perturbed_queries(self, count: int, seed: int = 0) -> np.ndarray:
        """`count` random rows with Gaussian noise of norm ~0.5 added (cosine ~0.9 to their row), normalised."""
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(self), size=min(count, len(self)), replace=False))
        picked = self.vectors(rows)
        noise = rng.standard_normal(picked.shape).astype(np.float32) * (0.5 / np.sqrt(self.dim))
        return _normalize(_normalize(picked) + noise)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The float32 rows of items `ids` (sorted ascending), as stored."""
        ids = np.asarray(ids, dtype=np.int64)
        bounds = np.cumsum([0, *self.counts])
        parts = []
        for shard, selection, lo, hi in zip(self.shards, self.rows, bounds[:-1], bounds[1:]):
            local = ids[(ids >= lo) & (ids < hi)] - lo
            parts.append(np.asarray(shard[local if selection is None else selection[local]], dtype=np.float32))
        return np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)

    def recall(self, queries: np.ndarray, k: int = 10) -> float:
        """recall@k of the ANN graph: the share of the exact top-k that the graph's top-k finds."""
        _, exact = self.search_arrays(queries, k)
        _, approximate = self.search_arrays(queries, k, ann=True)
        found = sum(len(np.intersect1d(e, a)) for e, a in zip(exact, approximate))
        return found / exact.size if exact.size else 1.0


def refresh_ann(folder: str | Path) -> str | None:
    """After a sync: rebuild the folder's ANN graph (with its recorded parameters) when it no longer matches
    the collection; returns what was done, None when there is no graph or it is current."""
    folder = Path(folder)
    if not (folder / ANN_META).is_file():
        return None
    info = AnnInfo(**json.loads((folder / ANN_META).read_text(encoding="utf-8")))
    index = Index.open(folder)
    if info.count == len(index) and info.generation == index.generation:
        return None
    rebuilt = index.build_ann(
        dtype=info.dtype,
        connectivity=info.connectivity,
        expansion_add=info.expansion_add,
        expansion_search=info.expansion_search,
        k=info.k,
        queries=info.queries,
    )
    return f"rebuilt the ANN index: {rebuilt.count} items, recall@{rebuilt.k} {rebuilt.recall_at_k:.4f}"
