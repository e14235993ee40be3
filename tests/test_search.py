"""Search (`siglip.Index`, `siglip search`, `siglip index`): planted neighbours, ANN recall, CLI end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from PIL import Image

import siglip
from siglip import index as index_module
from siglip.bulk import embed_source
from siglip.errors import InputError

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "horse.png", "retina.jpg"]
TEXTS = ["a cat", "a dog on a beach", "a cup of coffee", "a rocket", "an astronaut", "a horse in a field"]


def planted_collection(count: int = 500, dim: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random unit rows, with rows 10..14 set to cos(theta_j) q + sin(theta_j) u_j for a query q and unit u_j
    orthogonal to q: their scores against q are exactly cos(theta_j), above every other row's (|cos| < 0.8)."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((count, dim))
    query = rng.standard_normal(dim)
    query /= np.linalg.norm(query)
    rows -= 0.9 * np.outer(rows @ query, query)  # keep the random rows away from q
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    assert np.abs(rows @ query).max() < 0.8
    cosines = np.array([0.99, 0.97, 0.95, 0.9, 0.85])
    for j, cosine in enumerate(cosines):
        side = rows[100 + j] - (rows[100 + j] @ query) * query
        side /= np.linalg.norm(side)
        rows[10 + j] = cosine * query + np.sqrt(1 - cosine**2) * side
    return rows.astype(np.float32), query.astype(np.float32), cosines


def test_exact_search_returns_planted_neighbours_across_shards_and_chunks(monkeypatch):
    rows, query, cosines = planted_collection()
    monkeypatch.setattr(index_module, "CHUNK_ROWS", 7)  # many chunks per shard: the running top-k merge is used
    shards = [rows[:123], rows[123:124], rows[124:]]
    collection = siglip.Index(shards, [f"item{i}" for i in range(len(rows))])
    assert len(collection) == 500 and collection.dim == 24

    hits = collection.search(query * 3.0, k=5)[0]  # queries are normalised
    assert [hit.path for hit in hits] == [f"item{i}" for i in range(10, 15)]
    assert [hit.index for hit in hits] == list(range(10, 15))
    np.testing.assert_allclose([hit.score for hit in hits], cosines, atol=1e-5)

    # several queries at once agree with a brute-force ranking
    others = np.random.default_rng(1).standard_normal((4, 24)).astype(np.float32)
    queries = np.vstack([query, others])
    scores, ids = collection.search_arrays(queries, k=8)
    normalised = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    brute = normalised @ rows.T
    np.testing.assert_array_equal(ids, np.argsort(-brute, axis=1)[:, :8])
    np.testing.assert_allclose(scores, np.take_along_axis(brute, ids, 1), atol=1e-5)

    assert collection.search_arrays(query, k=10_000)[1].shape == (1, 500)  # k is capped at the collection size
    with pytest.raises(InputError, match="k must be"):
        collection.search_arrays(query, k=0)
    with pytest.raises(InputError, match=r"\(Q, 24\)"):
        collection.search_arrays(np.ones((2, 16), np.float32))  # 32 values must not be reshaped into one query
    with pytest.raises(InputError, match="no ANN index"):
        collection.search_arrays(query, ann=True)


def test_ann_recall_at_10_against_exact_search():
    pytest.importorskip("usearch")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((60, 64))  # clustered, as real embeddings are
    rows = centers[rng.integers(0, 60, 6000)] + 0.7 * rng.standard_normal((6000, 64))
    collection = siglip.Index.from_embeddings(rows.astype(np.float32))
    info = collection.build_ann(queries=300)
    assert (info.count, info.dim, info.k, info.queries) == (6000, 64, 10, 300)
    queries = collection.perturbed_queries(300, seed=7)
    assert info.recall_at_k >= 0.95 and collection.recall(queries, 10) >= 0.95

    exact_scores, exact_ids = collection.search_arrays(queries, k=10)
    ann_scores, ann_ids = collection.search_arrays(queries, k=10, ann=True)
    found = sum(len(np.intersect1d(e, a)) for e, a in zip(exact_ids, ann_ids)) / exact_ids.size
    assert found == pytest.approx(collection.recall(queries, 10))
    assert (ann_ids[:, 0] == exact_ids[:, 0]).mean() >= 0.98
    # the graph's scores are cosines (f16 storage): where both found an item, they agree
    same = ann_ids[:, :1] == exact_ids[:, :1]
    np.testing.assert_allclose(ann_scores[:, :1][same], exact_scores[:, :1][same], atol=2e-3)


@pytest.fixture(scope="module")
def photo_collection(reference_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """(source folder of photos, the bulk job's output folder)."""
    source = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(FIXTURES / name, source / name)
    out = tmp_path_factory.mktemp("collection") / "emb"
    summary = embed_source(source, out, model=str(reference_checkpoint), shard_size=4, batch_size=4)
    assert summary.ok == len(PHOTOS) and summary.shards == 2
    return source, out


def near_duplicate(path: Path, target: Path) -> Path:
    """A JPEG re-encode of a photo, cropped by a few pixels: its nearest neighbour should be the original."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    image.crop((3, 2, width - 2, height - 3)).save(target, quality=80)
    return target


def test_index_open_image_to_image_and_text_to_image(reference_checkpoint, photo_collection, tmp_path):
    source, out = photo_collection
    collection = siglip.Index.open(out)
    assert len(collection) == len(PHOTOS) and collection.model_name == str(reference_checkpoint)
    assert sorted(collection.paths) == sorted(str(source / name) for name in PHOTOS)

    queries = [near_duplicate(source / name, tmp_path / f"query_{Path(name).stem}.jpg") for name in PHOTOS]
    for name, hits in zip(PHOTOS, collection.search_image(queries, k=3)):
        assert hits[0].path == str(source / name), [(h.path, h.score) for h in hits]
        assert hits[0].score > 0.95 and hits[0].score >= hits[1].score >= hits[2].score

    # text -> image: the same ranking as scoring every photo with the model directly
    model = siglip.AutoModel.from_pretrained(reference_checkpoint)
    processor = siglip.AutoProcessor.from_pretrained(reference_checkpoint)
    from siglip.encode import encode_texts, iter_encoded_images

    images = np.concatenate([e.numpy() for _, e in iter_encoded_images(model, processor, collection.paths)])
    texts = encode_texts(model, processor, TEXTS[:2]).numpy()
    for text, hits in zip(texts, collection.search_text(TEXTS[:2], k=len(PHOTOS))):
        scores = images @ text
        assert [hit.path for hit in hits] == [collection.paths[i] for i in np.argsort(-scores)]
        np.testing.assert_allclose([hit.score for hit in hits], np.sort(scores)[::-1], atol=1e-5)


def test_text_collection_finds_each_text_itself(reference_checkpoint, tmp_path):
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "texts"
    embed_source(tmp_path / "texts.txt", out, model=str(reference_checkpoint), shard_size=4, fmt="safetensors")
    collection = siglip.Index.open(out)
    for text, hits in zip(TEXTS, collection.search_text(TEXTS, k=2)):
        assert hits[0].path == text and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[1].score < 0.9999


def test_index_open_refuses_what_is_not_a_collection(tmp_path):
    with pytest.raises(InputError, match="job.json"):
        siglip.Index.open(tmp_path)


# the command line, in subprocesses ------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siglip", *args], capture_output=True, text=True, timeout=300)


def test_cli_embed_index_search_table_and_json(reference_checkpoint, tmp_path):
    pytest.importorskip("usearch")
    source, out = tmp_path / "photos", tmp_path / "emb"
    source.mkdir()
    for name in PHOTOS:
        shutil.copy(FIXTURES / name, source / name)
    embedded = run_cli("embed", str(source), "--out", str(out), "--model", str(reference_checkpoint), "--no-progress")
    assert embedded.returncode == 0, embedded.stderr
    assert "6 items: 6 embedded, 0 corrupt, 0 unsupported" in embedded.stdout

    built = run_cli("index", str(out), "--recall-queries", "6")
    assert built.returncode == 0, built.stderr
    assert "indexed 6 vectors" in built.stdout and "recall@10 vs exact search: 1.0000" in built.stdout
    assert (out / "ann.usearch").is_file() and json.loads((out / "ann.json").read_text())["count"] == 6

    query = near_duplicate(source / "coffee.png", tmp_path / "query.jpg")
    for extra in ([], ["--ann"]):
        result = run_cli("search", str(out), "--image", str(query), "--json", "-k", "3", *extra)
        assert result.returncode == 0, result.stderr
        (record,) = [json.loads(line) for line in result.stdout.splitlines()]  # JSON lines: one per query
        assert record["query"] == str(query) and len(record["results"]) == 3
        assert record["results"][0]["path"] == str(source / "coffee.png") and record["results"][0]["score"] > 0.95

    table = run_cli("search", str(out), "a cup of coffee", "a rocket", "--top-k", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert [lines[0], lines[3]] == ["a cup of coffee", "a rocket"] and len(lines) == 6
    for line, rank in zip(lines[1:3] + lines[4:6], (1, 2, 1, 2)):
        number, score, path = line.split(maxsplit=2)
        assert int(number) == rank and -1.0 <= float(score) <= 1.0 and Path(path).parent == source
    expected = siglip.Index.open(out).search_text(["a rocket"], k=2)[0]
    assert [line.split(maxsplit=2)[2] for line in lines[4:6]] == [hit.path for hit in expected]


@pytest.mark.parametrize(
    "args, message",
    [
        (["{empty}", "a cat"], "job.json"),
        (["{out}"], "not both and not neither"),
        (["{out}", "a cat", "--image", "{photo}"], "not both and not neither"),
        (["{out}", "a cat", "--top-k", "0"], "--top-k"),
        (["{out}", "--image", "{missing}"], "missing.jpg"),
        (["{out}", "a cat", "--ann"], "siglip index"),
    ],
)
def test_cli_search_bad_input_exits_2_with_one_line(photo_collection, tmp_path, args, message):
    _, out = photo_collection
    values = {
        "empty": str(tmp_path),
        "out": str(out),
        "photo": str(FIXTURES / "chelsea.png"),
        "missing": str(tmp_path / "missing.jpg"),
    }
    result = run_cli("search", *[arg.format(**values) for arg in args])
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("siglip: error: ") and "Traceback" not in result.stderr


def test_cli_index_bad_input_exits_2(tmp_path):
    for args, message in (
        (["index", str(tmp_path)], "job.json"),
        (["index", str(tmp_path), "--connectivity", "0"], ">= 1"),
    ):
        result = run_cli(*args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
