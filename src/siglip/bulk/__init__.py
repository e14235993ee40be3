"""Bulk embedding into collections that change: a folder, text file, table column or webdataset tars ->
segments of sharded embeddings + change logs, resumable, kept in step with the source by syncs.

`embed_source(source, out, model=...)` runs a sync (the first one embeds everything); `collection` is the
folder layout and its live view, `sync` the change detection, `BulkJob` one segment's embedding job;
`run_local` and `ray_runner.run_ray` are the two ways to do the work; `compact` folds segments;
`score` scores image-text pairs; `dedup` finds near-duplicates. See `writer` for the shard files.
"""

from .collection import Collection
from .compact import compact
from .dedup import DuplicateGroups, near_duplicates, write_groups
from .job import BulkJob, JobSpec, JobSummary, Shard, plan_shards, run_local
from .run import embed_source
from .score import ScoreSummary, list_pairs, score_pairs
from .sources import SourceItems, list_source
from .writer import ManifestRow, open_embeddings, read_manifest

__all__ = [
    "BulkJob",
    "Collection",
    "compact",
    "DuplicateGroups",
    "JobSpec",
    "JobSummary",
    "ManifestRow",
    "Shard",
    "SourceItems",
    "embed_source",
    "list_pairs",
    "list_source",
    "near_duplicates",
    "open_embeddings",
    "plan_shards",
    "read_manifest",
    "run_local",
    "ScoreSummary",
    "score_pairs",
    "write_groups",
]
