"""A collection: the output folder of `siglip embed SOURCE --out DIR`, kept in step with its source by syncs.

Layout (docs/collections.md, "Syncing", says what each sync guarantees)::

    collection.json                     settings every embedding shares: model identity, kind, preprocessing...
    state.json                          the committed segments, in order, the generation and the source root
    segments/00000/job.json             one sync's embedding job (what `job.BulkJob` plans and resumes)
    segments/00000/shards/shard-*.npy   its embeddings and manifest parts
    segments/00000/changes.parquet      its change log: one row per added, changed, reused or deleted key
    manifest.parquet                    the live items (derived after every sync, for people and tools)

A segment is invisible until `state.json` lists it: the state file is written last, atomically, so a reader
(or a killed sync's re-run) sees the collection before or after a sync, never half of one. The live view is
the change logs replayed in order: the last row of a key wins, a "deleted" row (a tombstone) removes it. An
`ok` row points at its embedding by (segment, shard, row), so a renamed or copied file reuses the vector of
an earlier segment. A folder written before collections existed (`job.json` and `shards/` at the top) is a
collection of one legacy segment, ".", and opens and syncs as it is.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import atomic_write
from .job import JOB_FILE, JobSpec, plan_shards
from .sources import TABLE_SUFFIXES, unique_keys
from .writer import (
    ManifestRow,
    manifest_format,
    open_embeddings,
    read_manifest,
    remove_stale_temporaries,
    shard_paths,
    write_manifest,
)

COLLECTION_FILE, STATE_FILE, SEGMENTS, LOCK_FILE = "collection.json", "state.json", "segments", ".lock"
LEGACY = "."


@dataclass
class Settings:
    """What every embedding of a collection shares; a sync with other settings is refused (or `--rebuild`).
    `model` is how the model was named (for people), `model_id` its identity: a digest of its config.json and
    weight file sizes, the same whether it was named by Hub id, relative or absolute path. '' means unknown
    (folders written before collections): not compared."""

    kind: str
    model: str
    model_id: str
    normalized: bool
    dim: int
    preprocessing: str
    dtype: str = ""
    source_type: str = ""
    column: str = ""
    key_column: str = ""

    def differences(self, other: Settings) -> list[str]:
        """'name: X there, Y now' for each compared setting that differs (unknown ones are skipped)."""
        found = []
        for item in fields(Settings):
            if item.name == "model":
                continue
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            if mine != theirs and mine != "" and theirs != "":
                label = f"model ({self.model} there, {other.model} now)" if item.name == "model_id" else None
                found.append(label or f"{item.name}: {mine!r} there, {theirs!r} now")
        return found


@dataclass
class State:
    """What `state.json` records: the committed segments in order; `root` is the folder image items are
    relative to, `source` what was synced last (absolute)."""

    generation: int = 0
    segments: list[str] = field(default_factory=list)
    source: str = ""
    root: str = ""


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=1, ensure_ascii=False), encoding="utf-8"))


class Collection:
    """Read access to a collection folder, and the commit of a sync (`commit`)."""

    def __init__(self, folder: Path, settings: Settings, state: State, legacy: bool) -> None:
        self.folder, self.settings, self.state, self.legacy = folder, settings, state, legacy
        self._specs: dict[str, JobSpec] = {}

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        folder = Path(folder)
        return (folder / COLLECTION_FILE).is_file() or (folder / JOB_FILE).is_file()

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Collection:
        folder = Path(folder)
        if (folder / COLLECTION_FILE).is_file():
            settings = Settings(**json.loads((folder / COLLECTION_FILE).read_text(encoding="utf-8")))
            state_file = folder / STATE_FILE
            state = State(**json.loads(state_file.read_text(encoding="utf-8"))) if state_file.is_file() else State()
            return cls(folder, settings, state, legacy=LEGACY in state.segments)
        if (folder / JOB_FILE).is_file():
            spec = JobSpec(**json.loads((folder / JOB_FILE).read_text(encoding="utf-8")))
            source_type = "table" if spec.source.lower().endswith(TABLE_SUFFIXES) else ""
            settings = Settings(
                spec.kind, spec.model, "", spec.normalized, spec.dim, spec.preprocessing, "", source_type
            )
            return cls(folder, settings, State(0, [LEGACY]), legacy=True)
        raise InputError(
            f"{folder} is not a `siglip embed SOURCE --out DIR` folder (no {COLLECTION_FILE} or {JOB_FILE})"
        )

    @classmethod
    def create(cls, folder: Path, settings: Settings) -> Collection:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / COLLECTION_FILE, asdict(settings))
        return cls(folder, settings, State(), legacy=False)

    # segments ---------------------------------------------------------------------------------------------------

    def spec(self, segment: str) -> JobSpec:
        if segment not in self._specs:
            job_file = self.folder / segment / JOB_FILE
            self._specs[segment] = JobSpec(**json.loads(job_file.read_text(encoding="utf-8")))
        return self._specs[segment]

    def embeddings(self, segment: str, shard: int) -> np.ndarray:
        spec = self.spec(segment)
        return open_embeddings(shard_paths(self.folder / segment, shard, spec.format, spec.manifest)[0])

    def shard_rows(self, segment: str) -> list[ManifestRow]:
        """Manifest rows of a segment's finished shards, in item order."""
        spec = self.spec(segment)
        rows = []
        for shard in plan_shards(spec.count, spec.shard_size):
            part = shard_paths(self.folder / segment, shard.index, spec.format, spec.manifest)[1]
            if part.exists():
                rows.extend(read_manifest(part))
        return rows

    def changes(self, segment: str) -> list[ManifestRow]:
        """A segment's change log, with `segment` filled in on every row that points at an embedding."""
        if segment == LEGACY:
            return self._legacy_changes()
        part = next((self.folder / segment).glob("changes.*"))
        rows = read_manifest(part)
        for row in rows:
            row.segment = row.segment or segment
        return rows

    def _legacy_changes(self) -> list[ManifestRow]:
        """A pre-collection job's rows, keyed as a collection keys them (paths relative to the source)."""
        spec = self.spec(LEGACY)
        rows = self.shard_rows(LEGACY)
        if spec.kind == "text":
            keys = unique_keys([row.path for row in rows])
        else:
            base = spec.source if not spec.source.lower().endswith(TABLE_SUFFIXES) else os.path.dirname(spec.source)
            keys = [os.path.relpath(row.path, base) if base else row.path for row in rows]
        for row, key in zip(rows, keys):
            row.key, row.segment = key, LEGACY
            if self.state.root:  # synced since: items are named relative to the source, as new ones are
                row.path = key if spec.kind == "image" else row.path
        return rows

    def live(self) -> dict[str, ManifestRow]:
        """key -> the row that holds the key's current state (tombstoned keys left out), in commit order."""
        current: dict[str, ManifestRow] = {}
        for segment in self.state.segments:
            for row in self.changes(segment):
                if row.status == "deleted":
                    current.pop(row.key, None)
                else:
                    current.pop(row.key, None)  # re-insert: order follows the latest change
                    current[row.key] = row
        return current

    def unfinished_first_job(self) -> list[ManifestRow]:
        """The finished shards' rows of a first job that never committed (killed before its end), with their
        segment filled in, so that they can be searched as documented; [] once anything is committed. The rows'
        paths stay relative to the job's root (`display_path` uses it when the state has none yet)."""
        if self.state.segments:
            return []
        pending = self.pending_segments()
        if not pending:
            return []
        rows = self.shard_rows(pending[0])
        root = self.spec(pending[0]).root
        for row in rows:
            row.segment = pending[0]
            if self.settings.kind == "image" and root and row.path and not os.path.isabs(row.path):
                row.path = os.path.join(root, row.path)
        return rows

    def display_path(self, row: ManifestRow) -> str:
        """The row's item as a user reads it: an image's path under the source root, or the text."""
        if self.settings.kind == "image" and self.state.root and row.path:
            return os.path.join(self.state.root, row.path)
        return row.path

    def pending_segments(self) -> list[str]:
        """Segment folders no committed state lists: a killed sync's work (resumable) or leftovers."""
        folder = self.folder / SEGMENTS
        names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        return [f"{SEGMENTS}/{name}" for name in names if f"{SEGMENTS}/{name}" not in self.state.segments]

    def next_segment(self) -> str:
        used = [int(s.rsplit("/", 1)[1]) for s in self.state.segments + self.pending_segments() if s != LEGACY]
        return f"{SEGMENTS}/{max(used, default=-1) + 1:05d}"

    # writing ----------------------------------------------------------------------------------------------------

    def commit(self, segment: str, rows: list[ManifestRow], *, source: str, root: str, replace: bool = False) -> None:
        """Make `segment` (its shards already written) part of the collection: its change log, then the state
        file in one atomic rename (the commit point). `replace` makes it the only segment (compaction)."""
        fmt = manifest_format()
        write_manifest(self.folder / segment / f"changes.{fmt}", rows)
        segments = [segment] if replace else [*self.state.segments, segment]
        self.upgrade_legacy()
        state = State(self.state.generation + 1, segments, source, root)
        write_json(self.folder / STATE_FILE, asdict(state))
        self.state = state
        self.legacy = LEGACY in segments

    def set_source(self, source: str, root: str) -> None:
        """Record where the source is now (a sync that changed nothing but was run from elsewhere)."""
        if (source, root) != (self.state.source, self.state.root) and (self.folder / COLLECTION_FILE).is_file():
            self.state = State(self.state.generation, self.state.segments, source, root)
            write_json(self.folder / STATE_FILE, asdict(self.state))

    def upgrade_legacy(self) -> None:
        """Give a legacy folder its collection.json (before its first commit; the legacy files stay)."""
        if not (self.folder / COLLECTION_FILE).is_file():
            write_json(self.folder / COLLECTION_FILE, asdict(self.settings))

    def remove_unlisted(self, keep: str | None = None) -> None:
        """Delete segment folders the state does not list (and legacy files once "." is gone), but `keep`."""
        for segment in self.pending_segments():
            if segment != keep:
                shutil.rmtree(self.folder / segment, ignore_errors=True)
        if LEGACY not in self.state.segments and (self.folder / JOB_FILE).is_file():
            shutil.rmtree(self.folder / "shards", ignore_errors=True)
            (self.folder / JOB_FILE).unlink(missing_ok=True)

    def write_live_manifest(self, live: dict[str, ManifestRow]) -> Path:
        """`manifest.<fmt>`: every live row (derived; rewritten after each sync)."""
        path = self.folder / f"manifest.{manifest_format()}"
        for stale in self.folder.glob("manifest.*"):
            if stale != path:
                stale.unlink()
        write_manifest(path, list(live.values()))
        return path


@contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Hold `DIR/.lock` while writing: a second writer (sync, compact) on the same folder is refused. Temporaries a
    killed writer left in DIR (state, manifest, ANN files) are removed once the lock is held."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise InputError(
                    f"another `siglip embed` or `siglip compact` is writing {folder}: wait for it"
                ) from None
            raise
        remove_stale_temporaries(folder)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
