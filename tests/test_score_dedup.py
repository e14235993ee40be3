"""`siglip score` (pair scores equal the zero-shot pipeline's, resumable, bad rows recorded) and `siglip dedup`
(planted copies and near-copies found; groups equal a brute-force grouping, exact and ANN)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES
from PIL import Image
from test_collection_sync import CORRUPT

import siglip
from siglip.bulk import embed_source, near_duplicates, score_pairs
from siglip.bulk.dedup import UnionFind
from siglip.cli import main
from siglip.errors import InputError

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "horse.png", "retina.jpg", "camera.png"]
TEXTS = ["an astronaut", "a cat", "a cup of coffee", "a rocket", "a horse", "an eye", "a man with a camera"]


def pairs_folder(tmp_path: Path) -> list[dict[str, str]]:
    """Photos copied under tmp_path/pairs/img/, and 14 rows pairing each with its text and another's."""
    (tmp_path / "pairs" / "img").mkdir(parents=True)
    rows = []
    for i, name in enumerate(PHOTOS):
        shutil.copy(FIXTURES / name, tmp_path / "pairs" / "img" / name)
        rows.append({"id": f"p{i}", "image": f"img/{name}", "caption": TEXTS[i]})
        rows.append({"id": f"q{i}", "image": f"img/{name}", "caption": TEXTS[(i + 3) % len(TEXTS)]})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def pipeline_scores(model: Path, images: list[str], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sigmoid score, cosine) of each pair by the zero-shot pipeline (prompt = the text itself)."""
    pipe = siglip.pipeline("zero-shot-image-classification", model=str(model))
    scores = [float(pipe.scores([image], [text], hypothesis_template="{}")[0, 0]) for image, text in zip(images, texts)]
    image_embeds = next(iter(pipe.iter_image_embeddings(images)))[1]
    text_embeds = siglip.encode.encode_texts(pipe.model, pipe.processor, texts)
    return np.array(scores), (image_embeds * text_embeds).sum(-1).float().numpy()


class Interrupt:
    """A progress bar that raises KeyboardInterrupt (Ctrl-C) once `after` items are done."""

    def __init__(self, after: int) -> None:
        self.after, self.done = after, 0

    def update(self, count: int) -> None:
        self.done += count
        if self.done >= self.after:
            raise KeyboardInterrupt

    def close(self) -> None:
        pass


def test_score_equals_the_pipeline_and_resumes_after_an_interruption(reference_checkpoint, tmp_path):
    rows = pairs_folder(tmp_path)
    table = write_csv(tmp_path / "pairs" / "pairs.csv", rows)
    options = dict(model=str(reference_checkpoint), image_column="image", text_column="caption", key="id")
    with pytest.raises(KeyboardInterrupt):
        score_pairs(table, tmp_path / "run", shard_size=3, batch_size=2, make_bar=lambda *_: Interrupt(7), **options)
    done = sorted((tmp_path / "run" / "shards").glob("*.parquet"))
    assert 0 < len(done) < 5 and not (tmp_path / "run" / "scores.parquet").exists()
    resumed = score_pairs(table, tmp_path / "run", shard_size=3, batch_size=2, **options)
    assert (resumed.total, resumed.ok, resumed.shards, resumed.resumed_shards) == (14, 14, 5, len(done))
    whole = score_pairs(table, tmp_path / "whole", shard_size=14, batch_size=14, **options)
    got, expected = pq.read_table(resumed.path).to_pydict(), pq.read_table(whole.path).to_pydict()
    assert got["key"] == [row["id"] for row in rows] and got["status"] == ["ok"] * 14
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-6)

    images = [str(tmp_path / "pairs" / row["image"]) for row in rows]
    scores, cosines = pipeline_scores(reference_checkpoint, images, [row["caption"] for row in rows])
    np.testing.assert_allclose(got["score"], scores, atol=1e-5)
    np.testing.assert_allclose(got["cosine"], cosines, atol=1e-5)
    assert np.ptp(scores) > 0.05  # the scores differ from pair to pair: the comparison means something

    rows[0]["caption"] = "another text"  # the same folder for other pairs: refused, not mixed
    with pytest.raises(InputError, match="different job"):
        score_pairs(write_csv(table, rows), tmp_path / "run", shard_size=3, **options)


def test_score_records_bad_rows_and_reads_parquet_jsonl_and_webdataset(reference_checkpoint, tmp_path):
    rows = pairs_folder(tmp_path)[:4]
    folder = tmp_path / "pairs"
    shutil.copy(next(CORRUPT.glob("*.gif")), folder / "img" / "bad.png")
    (folder / "notes.txt").write_text("not an image")
    bad = [
        ("img/missing.png", "x"),
        ("", "no image"),
        ("notes.txt", "x"),
        ("img/bad.png", "x"),
        ("img/rocket.jpg", None),
        ("https://example.com/a.jpg", "a URL"),
    ]
    records = [{"image": row["image"], "caption": row["caption"]} for row in rows]
    records += [{"image": image, "caption": text} for image, text in bad]
    pq.write_table(
        pa.table({"image": [r["image"] for r in records], "caption": [r["caption"] for r in records]}),
        folder / "pairs.parquet",
    )
    (folder / "pairs.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    results = {}
    for name in ("pairs.parquet", "pairs.jsonl"):
        summary = score_pairs(
            folder / name, tmp_path / name, model=str(reference_checkpoint), image_column="image", text_column="caption"
        )
        assert (summary.total, summary.ok, summary.failed) == (10, 4, 6)
        results[name] = pq.read_table(summary.path).to_pydict()
    table = results["pairs.parquet"]
    assert table["status"][4:] == ["corrupt", "missing", "unsupported", "corrupt", "missing", "missing"]
    assert "does not exist" in table["error"][4] and "no text" in table["error"][8] and "URL" in table["error"][9]
    assert table["score"][4:] == [None] * 6 and table["key"] == [str(i) for i in range(10)]
    np.testing.assert_allclose(results["pairs.jsonl"]["score"][:4], table["score"][:4], atol=1e-7)

    with tarfile.open(tmp_path / "shard-0.tar", "w") as archive:  # the same 4 pairs as webdataset samples
        for i, row in enumerate(rows):
            archive.add(folder / row["image"], arcname=f"{i:04d}.{row['image'].rsplit('.', 1)[1]}")
            caption = tmp_path / "caption.txt"
            caption.write_text(row["caption"])
            archive.add(caption, arcname=f"{i:04d}.txt")
        archive.add(caption, arcname="9999.txt")  # a sample without an image
    assert main(["score", str(tmp_path / "shard-0.tar"), "--out", str(tmp_path / "wds"), "--model",
                 str(reference_checkpoint), "--no-progress"]) == 0  # fmt: skip
    packed = pq.read_table(tmp_path / "wds" / "scores.parquet").to_pydict()
    assert packed["text"][:4] == [row["caption"] for row in rows] and packed["status"][4] == "missing"
    np.testing.assert_allclose(packed["score"][:4], table["score"][:4], atol=1e-6)
    assert main(["score", str(folder / "pairs.csv"), "--out", str(tmp_path / "x")]) == 2  # no such table


# dedup ----------------------------------------------------------------------------------------------------------


def brute_force_groups(rows: np.ndarray, threshold: float) -> set[frozenset[int]]:
    """Connected components (size > 1) of cosine >= threshold, by a plain graph walk over the full matrix."""
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    near = (rows @ rows.T) >= threshold
    seen, groups = set(), set()
    for start in range(len(rows)):
        if start in seen:
            continue
        component, stack = {start}, [start]
        while stack:
            for other in np.nonzero(near[stack.pop()])[0].tolist():
                if other not in component:
                    component.add(other)
                    stack.append(other)
        seen |= component
        if len(component) > 1:
            groups.add(frozenset(component))
    return groups


def as_sets(groups) -> set[frozenset[int]]:
    found: dict[int, set[int]] = {}
    for item, group in zip(groups.ids.tolist(), groups.group.tolist()):
        found.setdefault(group, set()).add(item)
    return {frozenset(members) for members in found.values()}


def test_dedup_equals_a_brute_force_grouping_exact_and_ann():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((300, 16)).astype(np.float32)
    for start in range(0, 60, 6):  # groups of copies, near-copies and chains (a ~ b ~ c, a !~ c at 0.97)
        rows[start + 1] = rows[start]
        rows[start + 2] = rows[start] + 0.05 * rng.standard_normal(16)
        rows[start + 3] = rows[start + 2] + 0.15 * rng.standard_normal(16)
    rows[299] = rows[0]  # a copy far away in id order: another tile
    index = siglip.Index.from_embeddings(rows)
    index.build_ann(connectivity=8, expansion_add=128, expansion_search=128, queries=10)
    paths = [str(i) for i in range(300)]  # the same rows in three shards, one of them a row selection
    parts = [rows[:100], rows[100:101], rows[[*range(101, 300), 0]]]
    shards = siglip.Index(parts, paths, normalized=False, rows=[None, None, np.arange(199)])
    for threshold in (0.97, 0.9):
        truth = brute_force_groups(index.vectors(np.arange(300)), threshold)
        assert len(truth) >= 10 and max(map(len, truth)) < 50
        for options in (dict(block=7), dict(block=64), dict(), dict(ann=True, k=32), dict(block=64, index=shards)):
            groups = near_duplicates(options.pop("index", index), threshold, **options)
            assert as_sets(groups) == truth, (threshold, options)
            first = np.r_[True, groups.group[1:] != groups.group[:-1]]
            assert (groups.score[first] == 1.0).all() and (groups.score <= 1.0).all()
            heads = groups.ids[first][groups.group]
            assert (groups.ids >= heads).all()  # the representative is the group's first item
            expected = np.einsum("nd,nd->n", index.vectors(groups.ids), index.vectors(np.sort(heads))[
                np.searchsorted(np.sort(heads), heads)])  # fmt: skip
            np.testing.assert_allclose(groups.score, np.clip(expected, -1, 1), atol=1e-6)


def test_union_find_batches_with_conflicting_links():
    sets = UnionFind(10)
    sets.union(np.array([9, 8, 7, 3, 5]), np.array([1, 1, 2, 2, 6]))
    sets.union(np.array([2, 6]), np.array([9, 0]))  # {1, 8, 9} + {2, 3, 7}; {5, 6} + {0}; 4 alone
    assert sets.roots().tolist() == [0, 1, 1, 1, 4, 0, 0, 1, 1, 1]


def test_dedup_finds_planted_copies_and_near_copies_in_a_collection(reference_checkpoint, tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    for name in PHOTOS:
        shutil.copy(FIXTURES / name, source / name)
    shutil.copy(FIXTURES / "chelsea.png", source / "copy-of-chelsea.png")
    with Image.open(FIXTURES / "coffee.png") as image:  # near-copies: re-encoded, slightly resized
        image.convert("RGB").save(source / "coffee-reencoded.jpg", quality=90)
        image.resize((image.width - 7, image.height - 5)).save(source / "coffee-smaller.png")
    out = tmp_path / "out"
    embed_source(source, out, model=str(reference_checkpoint))
    index = siglip.Index.open(out)
    rows = index.vectors(np.arange(len(index)))
    cosines = rows @ rows.T
    name = {Path(path).name: i for i, path in enumerate(index.paths)}
    planted = [("chelsea.png", "copy-of-chelsea.png"), ("coffee.png", "coffee-reencoded.jpg"),
               ("coffee.png", "coffee-smaller.png")]  # fmt: skip
    near = min(cosines[name[a], name[b]] for a, b in planted)
    distinct = max(cosines[name[a], name[b]] for a in PHOTOS for b in PHOTOS if a != b)
    assert near > distinct  # the model tells the planted pairs from distinct photos
    threshold = float(near + distinct) / 2
    out_table = tmp_path / "dups.csv"
    assert main(["dedup", str(out), "--threshold", str(threshold), "--out", str(out_table), "--no-progress"]) == 0
    with open(out_table, newline="") as handle:
        table = list(csv.DictReader(handle))
    groups: dict[str, set[str]] = {}
    for row in table:
        groups.setdefault(row["group"], set()).add(Path(row["path"]).name)
    assert sorted(map(sorted, groups.values())) == [
        ["chelsea.png", "copy-of-chelsea.png"],
        ["coffee-reencoded.jpg", "coffee-smaller.png", "coffee.png"],
    ]
    assert as_sets(near_duplicates(index, threshold)) == brute_force_groups(rows, threshold)
    assert main(["dedup", str(out)]) == 0 and (out / "duplicates.parquet").is_file()  # default: beside the shards
    assert pq.read_table(out / "duplicates.parquet").column_names == ["group", "path", "key", "score", "representative"]
    assert main(["dedup", str(out), "--threshold", "1.5"]) == 2
    assert main(["dedup", str(out), "--ann"]) == 2  # no graph built: refused, not silently exact


def test_score_killed_with_sigkill_resumes_to_the_same_table(reference_checkpoint, tmp_path):
    rows = pairs_folder(tmp_path) * 2
    table = write_csv(tmp_path / "pairs" / "pairs.csv", rows)
    command = [sys.executable, "-m", "siglip", "score", str(table), "--image-column", "image", "--text-column"]
    command += ["caption", "--out", str(tmp_path / "run"), "--model", str(reference_checkpoint), "--shard-size", "2"]
    command += ["--batch-size", "2", "--no-progress", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if len(list((tmp_path / "run" / "shards").glob("*.parquet"))) >= 3:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "run" / "scores.parquet").exists()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    resumed = re.search(r"14 shards \((\d+) already done\)", finished.stdout)
    assert resumed and int(resumed.group(1)) >= 3 and "28 scored" in finished.stdout, finished.stdout
    whole = score_pairs(table, tmp_path / "whole", model=str(reference_checkpoint), image_column="image",
                        text_column="caption")  # fmt: skip
    got, expected = (
        pq.read_table(tmp_path / "run" / "scores.parquet").to_pydict(),
        pq.read_table(whole.path).to_pydict(),
    )
    assert got["key"] == expected["key"] and got["status"] == expected["status"]
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-6)
    assert not [p for p in (tmp_path / "run").rglob("*") if ".tmp-" in p.name]
