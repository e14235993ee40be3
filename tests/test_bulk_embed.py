"""Bulk embedding (`siglip embed SOURCE --out DIR`): bad files listed, kill -9 + resume, sources, formats, Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES

import siglip
from siglip.bulk import Collection, embed_source, list_source, read_manifest
from siglip.cli import main as cli_main
from siglip.errors import InputError

GOOD = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "horse.png", "retina.jpg"]


def collect(folder: Path) -> tuple[list, dict[str, np.ndarray]]:
    """(live manifest rows with their paths as users see them, path -> embedding) of a collection, asserting
    each item is listed once and the manifest agrees with `Index.open` and the shards."""
    collection = Collection.open(folder)
    rows = [replace(row, path=collection.display_path(row)) for row in read_manifest(next(folder.glob("manifest.*")))]
    assert len({row.key for row in rows}) == len(rows)
    index = siglip.Index.open(folder)
    vectors = dict(zip(index.paths, index.vectors(np.arange(len(index)))))
    assert len(vectors) == len(index) == sum(row.status == "ok" for row in rows)
    for row in rows:
        if row.status == "ok":  # the manifest's (segment, shard, row) is where the embedding is
            np.testing.assert_array_equal(collection.embeddings(row.segment, row.shard)[row.row], vectors[row.path])
    return rows, vectors


def expected_embeddings(checkpoint: Path, paths: list[str], use_fast: bool = False, draft: bool = False) -> np.ndarray:
    model = siglip.AutoModel.from_pretrained(checkpoint)
    processor = siglip.AutoProcessor.from_pretrained(checkpoint, use_fast=use_fast)
    from siglip.encode import load_rgb

    size = processor.image_processor.draft_size() if draft else None
    pixels = processor(images=[load_rgb(p, draft_size=size) for p in paths], return_tensors="pt").pixel_values
    with torch.no_grad():
        return torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels), dim=-1).numpy()


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    """Good photos (one in a subfolder), a corrupt JPEG, a truncated PNG, a text file and a file with no suffix."""
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "sub").mkdir()
    for i, name in enumerate(GOOD):
        shutil.copy(FIXTURES / name, (folder / "sub" if i == 0 else folder) / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "truncated.png").write_bytes((FIXTURES / "chelsea.png").read_bytes()[:2000])
    (folder / "notes.txt").write_text("not an image")
    (folder / "README").write_text("no suffix")
    return folder


def test_mixed_folder_lists_bad_files_with_reasons(reference_checkpoint, mixed_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(
        [
            "embed",
            str(mixed_dir),
            "--out",
            str(out),
            "--model",
            str(reference_checkpoint),
            "--shard-size",
            "3",
            "--batch-size",
            "2",
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    assert "6 embedded, 2 corrupt, 2 unsupported" in printed.out
    assert "broken.jpg" in printed.err and "notes.txt" in printed.err

    rows, vectors = collect(out)
    assert [row.path for row in rows] == sorted(str(p) for p in mixed_dir.rglob("*") if p.is_file())
    status = {Path(row.path).name: (row.status, row.error) for row in rows}
    assert status["broken.jpg"][0] == status["truncated.png"][0] == "corrupt"
    assert "broken.jpg" in status["broken.jpg"][1] and "truncated" in status["truncated.png"][1]
    assert status["notes.txt"][0] == status["README"][0] == "unsupported"
    assert all(status[name] == ("ok", "") for name in GOOD)
    assert all(row.size == os.path.getsize(row.path) for row in rows)
    assert all(not os.path.isabs(row.key) for row in rows)  # stored relative to the source
    good = [row.path for row in rows if row.status == "ok"]
    np.testing.assert_allclose(
        np.stack([vectors[p] for p in good]), expected_embeddings(reference_checkpoint, good), atol=1e-5
    )

    # re-running resumes: nothing to do, same manifest; another plan in the same folder is refused
    assert (
        cli_main(
            ["embed", str(mixed_dir), "--out", str(out), "--model", str(reference_checkpoint), "--shard-size", "3"]
        )
        == 0
    )
    assert "+0 new, 0 changed, 0 deleted, 0 renamed (reused), 0 duplicates (reused), 0 corrupt; 10 unchanged" in (
        capsys.readouterr().out
    )
    with pytest.raises(InputError, match="other settings.*normalized"):  # embeddings that would not mix
        embed_source(mixed_dir, out, model=str(reference_checkpoint), normalize=False)


def test_fast_preprocessing_options_reach_the_bulk_job(reference_checkpoint, mixed_dir, tmp_path, capsys):
    """`--fast-preprocess --fast-decode` on a bulk job: the Fast image processor and reduced-scale JPEG decoding."""
    out = tmp_path / "out"
    args = ["embed", str(mixed_dir), "--out", str(out), "--model", str(reference_checkpoint), "--batch-size", "4"]
    assert cli_main([*args, "--fast-preprocess", "--fast-decode"]) == 0
    assert "6 embedded, 2 corrupt, 2 unsupported" in capsys.readouterr().out
    rows, vectors = collect(out)
    good = [row.path for row in rows if row.status == "ok"]
    got = np.stack([vectors[p] for p in good])
    np.testing.assert_allclose(
        got, expected_embeddings(reference_checkpoint, good, use_fast=True, draft=True), atol=1e-5
    )
    assert np.abs(got - expected_embeddings(reference_checkpoint, good)).max() > 1e-4  # not the exact path
    with pytest.raises(InputError, match="preprocessing"):  # resuming in another mode would mix embeddings
        embed_source(mixed_dir, out, model=str(reference_checkpoint), use_fast=True)
    assert cli_main([*args, "--fast-decode", "--fast-preprocess"]) == 0  # same mode: a sync, nothing to do
    assert "10 unchanged" in capsys.readouterr().out


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(reference_checkpoint, tmp_path):
    source = tmp_path / "many"
    source.mkdir()
    for i in range(96):  # 96 photos in 24 shards: the job outlives the first shard by a good margin
        shutil.copy(FIXTURES / GOOD[i % len(GOOD)], source / f"{i:03d}_{GOOD[i % len(GOOD)]}")
    (source / "zz_broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "siglip", "embed", str(source), "--out", str(out)]
    command += ["--model", str(reference_checkpoint), "--shard-size", "4", "--batch-size", "4", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = out / "segments" / "00000" / "shards"
    deadline = time.monotonic() + 120
    while not list(shards.glob("shard-*.parquet")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    done_at_kill = len(list(shards.glob("shard-*.parquet")))
    assert 1 <= done_at_kill < 25 and not list(out.glob("manifest.*")), "the kill did not land mid-run"
    # Nothing committed yet: the shards the job finished are searchable, as Index.open documents (issue 30).
    assert len(siglip.Index.open(out)) == 4 * done_at_kill

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({done_at_kill} already done)" in resumed.stdout and "96 embedded, 1 corrupt" in resumed.stdout

    reference = tmp_path / "uninterrupted"
    embed_source(source, reference, model=str(reference_checkpoint), shard_size=4, batch_size=4)
    rows, vectors = collect(out)
    reference_rows, reference_vectors = collect(reference)
    assert [(r.path, r.status, r.shard, r.row) for r in rows] == [
        (r.path, r.status, r.shard, r.row) for r in reference_rows
    ]
    assert sorted(vectors) == sorted(str(p) for p in source.iterdir() if p.suffix != ".jpg" or "broken" not in p.name)
    for path, vector in reference_vectors.items():
        np.testing.assert_allclose(vectors[path], vector, atol=1e-5)
    assert not [p for p in shards.iterdir() if ".tmp-" in p.name]


def test_text_file_and_table_column_sources_safetensors(reference_checkpoint, tmp_path):
    from siglip.encode import encode_texts

    texts = ["a cat", "a dog on a beach", "", "a rocket " * 40, "coffee"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "table.csv").write_text(
        "id,caption\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    assert list_source(tmp_path / "table.csv", column="caption").items == texts

    model = siglip.AutoModel.from_pretrained(reference_checkpoint)
    processor = siglip.AutoProcessor.from_pretrained(reference_checkpoint)
    expected = encode_texts(model, processor, texts).numpy()
    for name, column in (("texts.txt", None), ("table.csv", "caption")):
        out = tmp_path / f"out_{name}"
        summary = embed_source(
            tmp_path / name, out, model=str(reference_checkpoint), column=column, shard_size=2, fmt="safetensors"
        )
        assert (summary.ok, summary.shards) == (5, 3)
        rows, vectors = collect(out)
        assert [row.path for row in rows] == texts
        np.testing.assert_allclose(np.stack([vectors[t] for t in texts]), expected, atol=1e-5)
    with pytest.raises(InputError, match="--column"):
        embed_source(tmp_path / "table.csv", tmp_path / "x", model=str(reference_checkpoint))


def test_ray_runner_gives_the_same_embeddings(reference_checkpoint, mixed_dir, tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    fast = {"use_fast": True, "fast_decode": True}  # preprocessing options travel to the Ray tasks
    embed_source(mixed_dir, local, model=str(reference_checkpoint), shard_size=3, batch_size=2, **fast)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = embed_source(
            mixed_dir, distributed, model=str(reference_checkpoint), shard_size=3, batch_size=2, ray=True, **fast
        )
    finally:
        ray.shutdown()
    assert (summary.ok, summary.corrupt, summary.unsupported) == (6, 2, 2)
    rows, vectors = collect(distributed)
    local_rows, local_vectors = collect(local)
    assert [(r.path, r.status, r.shard, r.row) for r in rows] == [
        (r.path, r.status, r.shard, r.row) for r in local_rows
    ]
    assert sorted(vectors) == sorted(local_vectors)
    for path, vector in local_vectors.items():
        np.testing.assert_allclose(vectors[path], vector, atol=1e-5)
    paths = sorted(local_vectors)
    np.testing.assert_allclose(
        np.stack([vectors[p] for p in paths]),
        expected_embeddings(reference_checkpoint, paths, use_fast=True, draft=True),
        atol=1e-5,
    )


def test_parquet_column_of_image_paths_csv_manifest_and_progress(
    reference_checkpoint, mixed_dir, tmp_path, monkeypatch
):
    """A Parquet column of (relative) image paths, a CSV manifest (what a job without pyarrow writes), and the
    progress bar: created with (total, already done), then advanced to the total."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    import siglip.bulk.collection
    import siglip.bulk.job

    source = tmp_path / "source"
    shutil.copytree(mixed_dir, source)
    names = ["coffee.png", "sub/astronaut.png", "missing.jpg", "notes.txt", "rocket.jpg"]
    pq.write_table(pa.table({"file": names, "n": list(range(5))}), source / "table.parquet")
    assert list_source(source / "table.parquet", column="file").kind == "text"
    monkeypatch.setattr(siglip.bulk.job, "manifest_format", lambda: "csv")
    monkeypatch.setattr(siglip.bulk.collection, "manifest_format", lambda: "csv")
    bars = []

    class Bar:
        def __init__(self, total: int, initial: int) -> None:
            self.total, self.initial, self.count, self.closed = total, initial, initial, False
            bars.append(self)

        def update(self, n: int) -> None:
            self.count += n

        def close(self) -> None:
            self.closed = True

    out = tmp_path / "out"
    run = dict(model=str(reference_checkpoint), column="file", kind="image", shard_size=2, make_bar=Bar)
    summary = embed_source(source / "table.parquet", out, **run)
    assert (summary.total, summary.ok, summary.corrupt, summary.unsupported) == (5, 3, 1, 1)
    assert (bars[0].total, bars[0].initial, bars[0].count, bars[0].closed) == (5, 0, 5, True)
    assert (out / "manifest.csv").is_file() and not list(out.glob("manifest.parquet"))
    rows, vectors = collect(out)
    assert [row.path for row in rows] == [str(source / name) for name in names]
    assert [row.status for row in rows] == ["ok", "ok", "corrupt", "unsupported", "ok"]
    assert "does not exist" in rows[2].error and rows[2].size == -1
    good = [row.path for row in rows if row.status == "ok"]
    np.testing.assert_allclose(
        np.stack([vectors[p] for p in good]), expected_embeddings(reference_checkpoint, good), atol=1e-5
    )

    # a run killed before its commit (no state, one shard part missing) resumes: it redoes only that shard,
    # its bar starting at the items already done
    (out / "segments" / "00000" / "shards" / "shard-00001.csv").unlink()
    for name in ("state.json", "manifest.csv", "segments/00000/changes.csv"):
        (out / name).unlink()
    summary = embed_source(source / "table.parquet", out, **run)
    assert (summary.resumed_shards, bars[1].total, bars[1].initial, bars[1].count) == (2, 5, 3, 5)
    assert [(r.path, r.status, r.error) for r in collect(out)[0]] == [(r.path, r.status, r.error) for r in rows]
