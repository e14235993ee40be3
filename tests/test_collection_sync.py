"""Collections that change (`siglip embed SOURCE --out DIR` re-run): every sync equals a fresh full job over the
new source, search never returns a deleted item, kill -9 during a sync loses and duplicates nothing."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from PIL import Image

import siglip
from siglip.bulk import Collection, compact, embed_source
from siglip.bulk.job import PREFETCH
from siglip.errors import InputError

CORRUPT = FIXTURES / "corrupt" if (FIXTURES / "corrupt").is_dir() else Path("/work/shared/data/corrupt")


def picture(path: Path, seed: int, size: int = 24) -> Path:
    """A small PNG whose content depends on `seed` (distinct seeds give distinct embeddings)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def state_of(folder: Path) -> dict[str, tuple[str, np.ndarray | None]]:
    """key -> (status, embedding or None) of a collection's live items, via `Index.open` and the manifest."""
    collection = Collection.open(folder)
    live = collection.live()
    index = siglip.Index.open(folder) if any(row.status == "ok" for row in live.values()) else None
    vectors = dict(zip(index.keys, index.vectors(np.arange(len(index))))) if index is not None else {}
    assert set(vectors) == {key for key, row in live.items() if row.status == "ok"}
    return {key: (row.status, vectors.get(key)) for key, row in live.items()}


def assert_same_collection(got: Path, expected: Path) -> None:
    """Equal as sets of (key, status, embedding), embeddings within 1e-6."""
    mine, theirs = state_of(got), state_of(expected)
    assert sorted(mine) == sorted(theirs)
    for key, (status, vector) in theirs.items():
        assert mine[key][0] == status, key
        if vector is not None:
            np.testing.assert_allclose(mine[key][1], vector, atol=1e-6, err_msg=key)


def fresh(source: Path, tmp_path: Path, model: Path, **options) -> Path:
    out = tmp_path / f"fresh-{len(list(tmp_path.glob('fresh-*')))}"
    embed_source(source, out, model=str(model), **options)
    return out


def test_sync_after_adds_edits_deletes_renames_copies_corruption_and_a_moved_folder(reference_checkpoint, tmp_path):
    source, out = tmp_path / "photos", tmp_path / "photos.emb"
    for i in range(6):
        picture(source / ("a" if i < 3 else "b") / f"{i}.png", i)
    (source / "notes.txt").write_text("not an image")
    options = dict(model=str(reference_checkpoint), shard_size=2, batch_size=3)
    first = embed_source(source, out, **options)
    assert first.changes.startswith("+7 new, 0 changed, 0 deleted") and (first.ok, first.unsupported) == (6, 1)

    def sync(expected: str) -> None:
        summary = embed_source(source, out, **options)
        assert summary.changes.startswith(expected), summary.changes
        assert_same_collection(out, fresh(source, tmp_path, reference_checkpoint, shard_size=2, batch_size=3))
        index = siglip.Index.open(out)
        present = {os.path.relpath(p, source) for p in map(str, source.rglob("*")) if os.path.isfile(p)}
        assert set(index.keys) <= present  # nothing deleted is searchable
        scores, ids = index.search_arrays(index.vectors(np.arange(len(index))), k=1)
        assert (scores[:, 0] > 0.9999).all()  # every item is found by its own embedding

    picture(source / "a" / "new1.png", 100)
    picture(source / "c" / "new2.png", 101)
    sync("+2 new, 0 changed, 0 deleted, 0 renamed (reused), 0 duplicates (reused), 0 corrupt")

    picture(source / "a" / "0.png", 200)  # edited in place
    before = os.stat(source / "a" / "1.png")
    os.utime(source / "a" / "1.png", ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # touched only
    sync("+0 new, 1 changed, 0 deleted")

    (source / "b" / "3.png").unlink()
    (source / "b" / "4.png").rename(source / "b" / "four.png")
    shutil.copy(source / "b" / "5.png", source / "c" / "copy-of-5.png")
    sync("+0 new, 0 changed, 1 deleted, 1 renamed (reused), 1 duplicates (reused), 0 corrupt")

    shutil.copy(next(CORRUPT.glob("*.gif")), source / "a" / "2.png")  # a good file replaced by a corrupt one
    shutil.copy(next(CORRUPT.glob("*keyerror*")), source / "c" / "bad.tif")
    sync("+1 new, 1 changed, 0 deleted, 0 renamed (reused), 0 duplicates (reused), 2 corrupt")
    assert state_of(out)["a/2.png"][0] == "corrupt"

    (source / "a").rename(source / "moved")  # a folder moved: all renames, no model run
    summary = embed_source(source, out, **options)
    assert summary.changes.startswith(
        "+0 new, 0 changed, 0 deleted, 4 renamed (reused), 0 duplicates (reused), 1 corrupt"
    )
    assert summary.shards == 0 and "moved/new1.png" in state_of(out)
    assert_same_collection(out, fresh(source, tmp_path, reference_checkpoint))


def test_same_size_edit_is_found_by_its_hash_and_a_touch_alone_embeds_nothing(reference_checkpoint, tmp_path):
    source, out = tmp_path / "photos", tmp_path / "out"
    picture(source / "x.bmp", 1)  # BMP: the same dimensions give the same file size
    picture(source / "y.bmp", 2)
    embed_source(source, out, model=str(reference_checkpoint))
    os.utime(source / "y.bmp", ns=(0, 10**18))  # mtime only: hashed, found unchanged, not embedded
    summary = embed_source(source, out, model=str(reference_checkpoint))
    assert summary.changes.startswith("+0 new, 0 changed") and summary.shards == 0
    size, mtime = (source / "x.bmp").stat().st_size, (source / "x.bmp").stat().st_mtime_ns
    picture(source / "x.bmp", 3)
    assert (source / "x.bmp").stat().st_size == size
    os.utime(source / "x.bmp", ns=(mtime, mtime + 1))
    assert embed_source(source, out, model=str(reference_checkpoint)).changes.startswith("+0 new, 1 changed")
    assert_same_collection(out, fresh(source, tmp_path, reference_checkpoint))


def test_kill_9_at_random_points_of_a_sync_then_rerun_equals_a_fresh_job(reference_checkpoint, tmp_path):
    source, out = tmp_path / "photos", tmp_path / "out"
    for i in range(8):
        picture(source / f"{i:02d}.png", i)
    options = dict(model=str(reference_checkpoint), shard_size=2, batch_size=2)
    embed_source(source, out, **options)
    before = state_of(out)
    for i in range(8, 40):  # the sync to be killed: 32 new items in 16 shards, 3 deletions, one rename
        picture(source / f"{i:02d}.png", i)
    for i in range(3):
        (source / f"{i:02d}.png").unlink()
    (source / "05.png").rename(source / "renamed.png")
    command = [sys.executable, "-m", "siglip", "embed", str(source), "--out", str(out), "--model"]
    command += [str(reference_checkpoint), "--shard-size", "2", "--batch-size", "2", "--no-progress"]
    rng = random.Random(0)
    for _ in range(3):  # bounded: three kills, each once a random number of the sync's shards are written
        target = rng.randint(0, 15)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if len(list(out.glob("segments/*/shards/shard-*.parquet"))) >= 4 + target:  # 4: the first sync's
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        now = state_of(out)  # before the commit: the old collection exactly; after it: complete
        if sorted(now) == sorted(before):
            assert all(
                now[k][0] == before[k][0] and (before[k][1] is None or np.allclose(now[k][1], before[k][1]))
                for k in now
            )
        else:
            assert "00.png" not in now and "renamed.png" in now and len(now) == 37
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert_same_collection(out, fresh(source, tmp_path, reference_checkpoint))
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    committed = Collection.open(out).state.segments
    assert sorted(p.relative_to(out).as_posix() for p in (out / "segments").iterdir()) == sorted(committed)


def test_a_writer_removes_what_killed_writers_left_and_keeps_a_running_ones(tmp_path):
    """A kill -9 while the live manifest (or state, or ANN file) is written leaves `.NAME.tmp-PID-RANDOM` in the
    collection folder: the next writer removes it once it holds the lock, but not one of a process still running."""
    from siglip.bulk.collection import writer_lock

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".manifest.parquet.tmp-{ended.stdout.strip()}-0badf00d"
    running = tmp_path / f".state.json.tmp-{os.getpid()}-0badf00d"
    for path in (stale, running):
        path.write_text("partial")
    with writer_lock(tmp_path):
        assert not stale.exists() and running.exists()


def test_legacy_single_job_folder_opens_and_syncs(reference_checkpoint, tmp_path):
    """A folder in the layout before collections (job.json + shards/ at the top, paths as given)."""
    from siglip.bulk.job import BulkJob, run_local
    from siglip.bulk.sources import SourceItems
    from siglip.encode import load_processor

    source, out = tmp_path / "photos", tmp_path / "legacy"
    paths = [str(picture(source / f"{i}.png", i)) for i in range(4)]
    job = BulkJob.create(
        out, SourceItems("image", paths), source_name=str(source), model=str(reference_checkpoint), dim=32, shard_size=3
    )
    model = siglip.AutoModel.from_pretrained(reference_checkpoint).eval()
    run_local(job, model, load_processor(str(reference_checkpoint)))
    job.finish(time.perf_counter(), 0)
    assert (out / "job.json").is_file() and (out / "shards").is_dir() and not (out / "state.json").exists()
    legacy = siglip.Index.open(out)
    assert sorted(legacy.paths) == sorted(paths)

    picture(source / "new.png", 50)
    (source / "0.png").unlink()
    summary = embed_source(source, out, model=str(reference_checkpoint))
    assert summary.changes.startswith("+1 new, 0 changed, 1 deleted") and "3 unchanged" in summary.changes
    assert_same_collection(out, fresh(source, tmp_path, reference_checkpoint))
    assert sorted(siglip.Index.open(out).paths) == sorted(str(p) for p in source.iterdir())
    compact(out)
    assert not (out / "job.json").exists() and not (out / "shards").exists()
    assert_same_collection(out, fresh(source, tmp_path, reference_checkpoint))


def test_model_named_differently_and_another_working_directory_resume(reference_checkpoint, tmp_path, monkeypatch):
    source, out = tmp_path / "photos", tmp_path / "out"
    for i in range(3):
        picture(source / f"{i}.png", i)
    embed_source(source, out, model=str(reference_checkpoint))
    copy = tmp_path / "models" / "same-model"
    shutil.copytree(reference_checkpoint, copy)
    monkeypatch.chdir(tmp_path / "models")
    for name in ("same-model", "./same-model/", str(copy)):
        summary = embed_source(os.path.relpath(source), os.path.relpath(out), model=name)
        assert summary.changes.startswith("+0 new, 0 changed, 0 deleted") and summary.shards == 0
    assert sorted(siglip.Index.open(out).paths) == sorted(str(source / f"{i}.png") for i in range(3))

    other = tmp_path / "other-model"
    shutil.copytree(reference_checkpoint, other)
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")  # another config file
    with pytest.raises(InputError, match="other settings.*model"):
        embed_source(source, out, model=str(other))
    with pytest.raises(InputError, match="other settings.*dtype"):
        embed_source(source, out, model=str(reference_checkpoint), dtype="bf16")
    planned = embed_source(source, out, model=str(other), dry_run=True, rebuild=True)
    assert (
        planned.changes
        == "dry run: would embed 3 items: +3 new, 0 changed, 0 deleted, 0 renamed (reused), 0 duplicates (reused); 0 unchanged"
    )
    assert Collection.open(out).settings.model == str(reference_checkpoint)  # the dry run wrote nothing
    rebuilt = embed_source(source, out, model=str(other), rebuild=True)
    assert rebuilt.changes.startswith("+3 new") and Collection.open(out).settings.model == str(other)


def test_dry_run_writes_nothing(reference_checkpoint, tmp_path):
    source, out = tmp_path / "photos", tmp_path / "out"
    picture(source / "a.png", 1)
    embed_source(source, out, model=str(reference_checkpoint))
    picture(source / "b.png", 2)
    listing = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    planned = embed_source(source, out, model=str(reference_checkpoint), dry_run=True)
    assert planned.changes.startswith("dry run: would embed 1 items: +1 new")
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == listing


def test_memory_bounded_whatever_the_batch_size_and_any_decoder_error_is_recorded(reference_checkpoint, tmp_path):
    source = tmp_path / "photos"
    for i in range(30):
        picture(source / f"{i:02d}.png", i)
    for bad in CORRUPT.iterdir():  # files that make Pillow raise TypeError, struct.error, KeyError
        shutil.copy(bad, source / bad.name)
    summary = embed_source(
        source, tmp_path / "out", model=str(reference_checkpoint), batch_size=10**6, max_batch_size=4, workers=2
    )
    assert summary.ok == 30 and summary.corrupt == len([p for p in CORRUPT.iterdir() if p.suffix != ".md"])
    assert 0 < summary.peak_buffered <= 4 * (PREFETCH + 2) < 30  # never all 30 decoded at once
    assert any("capped at 4" in note for note in summary.notes)
    assert all(row.error for row in summary.failures if row.status == "corrupt")
