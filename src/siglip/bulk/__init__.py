"""Bulk embedding: a folder, text file or table column -> sharded embeddings + manifest, resumable.

`embed_source(source, out, model=...)` runs a job; `BulkJob` is its output folder (plan, shards, commits);
`run_local` and `ray_runner.run_ray` are the two ways to do the work. See `writer` for the file layout.
"""

from .job import BulkJob, JobSpec, JobSummary, Shard, plan_shards, run_local
from .run import embed_source
from .sources import SourceItems, list_source
from .writer import ManifestRow, open_embeddings, read_manifest

__all__ = [
    "BulkJob",
    "JobSpec",
    "JobSummary",
    "ManifestRow",
    "Shard",
    "SourceItems",
    "embed_source",
    "list_source",
    "open_embeddings",
    "plan_shards",
    "read_manifest",
    "run_local",
]
