"""Search a bulk-embedded collection: exact (matmul over memory-mapped shards) or approximate (usearch HNSW).

    index = siglip.Index.open("photos.emb")              # the --out folder of `siglip embed SOURCE --out DIR`
    hits = index.search_text(["a dog on a beach"], k=5)[0]
    hits = index.search_image(["query.jpg"], k=5)[0]      # image -> image
    scores, ids = index.search_arrays(query_embeddings, k=10)

Scores are cosine similarities (embeddings and queries are L2-normalised). Exact search streams every shard
through the CPU in chunks, so memory stays bounded whatever the collection size. `build_ann()` (what
`siglip index DIR` runs) writes an HNSW graph to `ann.usearch` and measures its recall@k against exact search;
`search(..., ann=True)` then answers from the graph.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DependencyError, InputError

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
    ) -> None:
        if sum(len(shard) for shard in shards) != len(paths):
            raise InputError(f"{sum(len(s) for s in shards)} embeddings but {len(paths)} paths")
        self.shards, self.paths, self.normalized = shards, paths, normalized
        self.model_name, self.folder = model, folder
        self.dim = shards[0].shape[1] if shards else 0
        self._ann: Any = None
        self._encoder: tuple[Any, Any] | None = None

    @classmethod
    def open(cls, folder: str | Path) -> Index:
        """The collection in a bulk job's output folder (its finished shards; the job may be incomplete)."""
        from .bulk.job import JOB_FILE, JobSpec, plan_shards
        from .bulk.writer import open_embeddings, read_manifest, shard_paths

        folder = Path(folder)
        if not (folder / JOB_FILE).is_file():
            raise InputError(f"{folder} is not a `siglip embed ... --out DIR` folder (no {JOB_FILE})")
        spec = JobSpec(**json.loads((folder / JOB_FILE).read_text(encoding="utf-8")))
        shards, paths = [], []
        for shard in plan_shards(spec.count, spec.shard_size):
            embeddings_path, manifest_path = shard_paths(folder, shard.index, spec.format, spec.manifest)
            if not manifest_path.exists():
                continue  # not finished yet
            rows = [row for row in read_manifest(manifest_path) if row.status == "ok"]
            embeddings = open_embeddings(embeddings_path)
            if len(rows) != len(embeddings):
                raise InputError(f"{embeddings_path} holds {len(embeddings)} rows, its manifest {len(rows)}")
            if len(rows):
                shards.append(embeddings)
                paths.extend(row.path for row in sorted(rows, key=lambda row: row.row))
        if not paths:
            raise InputError(f"{folder} holds no embeddings yet: run `siglip embed SOURCE --out {folder}` first")
        return cls(shards, paths, normalized=spec.normalized, model=spec.model, folder=folder)

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, paths: list[str] | None = None) -> Index:
        """An in-memory collection (normalised here); `paths` default to the row numbers."""
        embeddings = _normalize(embeddings)
        return cls([embeddings], paths if paths is not None else [str(i) for i in range(len(embeddings))])

    def __len__(self) -> int:
        return len(self.paths)

    # exact and approximate search --------------------------------------------------------------------------------

    def search_arrays(self, queries: Any, k: int = 10, *, ann: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k'), best first, k' = min(k, len(self)); `queries` is (Q, D) or (D,)."""
        queries = np.asarray(queries, dtype=np.float32)
        queries = queries[None, :] if queries.ndim == 1 else queries
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(
                f"queries must be (Q, {self.dim}) or ({self.dim},) to match the collection, got {queries.shape}"
            )
        queries = _normalize(queries)
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        k = min(k, len(self))
        return self._search_ann(queries, k) if ann else self._search_exact(queries, k)

    def _search_exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        best_scores = np.full((len(queries), 0), -np.inf, np.float32)
        best_ids = np.zeros((len(queries), 0), np.int64)
        offset = 0
        for shard in self.shards:
            for start in range(0, len(shard), CHUNK_ROWS):
                chunk = np.asarray(shard[start : start + CHUNK_ROWS], dtype=np.float32)
                chunk = chunk if self.normalized else _normalize(chunk)
                scores = queries @ chunk.T
                ids = np.broadcast_to(np.arange(offset + start, offset + start + len(chunk)), scores.shape)
                scores, ids = _top_k(scores, ids, k)
                best_scores, best_ids = _top_k(np.hstack([best_scores, scores]), np.hstack([best_ids, ids]), k)
            offset += len(shard)
        return best_scores, best_ids

    def _search_ann(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        graph = self.ann()
        matches = graph.search(queries, k)
        ids = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)
        scores = (1.0 - np.asarray(matches.distances, dtype=np.float32)).reshape(len(queries), -1)
        counts = getattr(matches, "counts", None)  # a single query gives `Matches`, several `BatchMatches`
        counts = np.asarray([len(matches)] if counts is None else counts).reshape(-1, 1)
        missing = np.arange(ids.shape[1])[None, :] >= counts
        ids[missing], scores[missing] = -1, -np.inf
        return scores, ids

    def search(self, queries: Any, k: int = 10, *, ann: bool = False) -> list[list[Hit]]:
        """For each query embedding, its k nearest items as `Hit`s, best first."""
        scores, ids = self.search_arrays(queries, k, ann=ann)
        return [
            [Hit(self.paths[i], float(s), int(i)) for s, i in zip(row_scores, row_ids) if i >= 0]
            for row_scores, row_ids in zip(scores, ids)
        ]

    # queries from texts and images ----------------------------------------------------------------------------

    def encoder(self, model: Any = None, processor: Any = None) -> tuple[Any, Any]:
        """(model, processor) that made the collection (loaded once), unless given."""
        if model is not None and processor is not None:
            return model, processor
        if self._encoder is None:
            if self.model_name is None:
                raise InputError("this index does not know its model: pass model= and processor=")
            from .auto import AutoModel, AutoProcessor

            self._encoder = (
                AutoModel.from_pretrained(self.model_name).eval(),
                AutoProcessor.from_pretrained(self.model_name),
            )
        return self._encoder

    def search_text(
        self, texts: list[str], k: int = 10, *, ann: bool = False, model: Any = None, processor: Any = None
    ) -> list[list[Hit]]:
        """Text -> collection: the k best items for each text."""
        from .encode import encode_texts

        model, processor = self.encoder(model, processor)
        return self.search(encode_texts(model, processor, list(texts)).float().numpy(), k, ann=ann)

    def search_image(
        self, images: list[Any], k: int = 10, *, ann: bool = False, model: Any = None, processor: Any = None
    ) -> list[list[Hit]]:
        """Image -> collection: the k best items for each image (paths, URLs or PIL images)."""
        from .encode import iter_encoded_images

        model, processor = self.encoder(model, processor)
        embeddings = [e.float().numpy() for _, e in iter_encoded_images(model, processor, list(images))]
        return self.search(np.concatenate(embeddings), k, ann=ann)

    # the ANN graph -----------------------------------------------------------------------------------------------

    def ann(self) -> Any:
        """The usearch graph saved beside the embeddings (memory-mapped), or the one built in memory."""
        if self._ann is None:
            UsearchIndex = _require_usearch()
            meta = self.folder / ANN_META if self.folder is not None else None
            if meta is None or not meta.exists():
                raise InputError("no ANN index: build one with `siglip index DIR` (or Index.build_ann())")
            info = AnnInfo(**json.loads(meta.read_text(encoding="utf-8")))
            if info.count != len(self):
                raise InputError(f"the ANN index covers {info.count} items, the collection {len(self)}: rebuild it")
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
        from .bulk.writer import atomic_write

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
        offset = 0
        for shard in self.shards:
            for start in range(0, len(shard), CHUNK_ROWS):
                chunk = np.asarray(shard[start : start + CHUNK_ROWS], dtype=np.float32)
                chunk = chunk if self.normalized else _normalize(chunk)
                graph.add(np.arange(offset + start, offset + start + len(chunk), dtype=np.uint64), chunk)
            offset += len(shard)
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
        )
        if self.folder is not None:
            atomic_write(self.folder / ANN_FILE, lambda tmp: graph.save(str(tmp)))
            atomic_write(self.folder / ANN_META, lambda tmp: tmp.write_text(json.dumps(asdict(info), indent=1)))
        return info

    def perturbed_queries(self, count: int, seed: int = 0) -> np.ndarray:
        """`count` random rows with Gaussian noise of norm ~0.5 added (cosine ~0.9 to their row), normalised."""
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(self), size=min(count, len(self)), replace=False))
        picked = np.concatenate(self._rows(rows)) if len(rows) else np.empty((0, self.dim), np.float32)
        noise = rng.standard_normal(picked.shape).astype(np.float32) * (0.5 / np.sqrt(self.dim))
        return _normalize(_normalize(picked) + noise)

    def _rows(self, rows: np.ndarray) -> list[np.ndarray]:
        bounds = np.cumsum([0] + [len(shard) for shard in self.shards])
        return [
            np.asarray(shard[rows[(rows >= lo) & (rows < hi)] - lo], dtype=np.float32)
            for shard, lo, hi in zip(self.shards, bounds[:-1], bounds[1:])
        ]

    def recall(self, queries: np.ndarray, k: int = 10) -> float:
        """recall@k of the ANN graph: the share of the exact top-k that the graph's top-k finds."""
        _, exact = self.search_arrays(queries, k)
        _, approximate = self.search_arrays(queries, k, ann=True)
        found = sum(len(np.intersect1d(e, a)) for e, a in zip(exact, approximate))
        return found / exact.size if exact.size else 1.0
