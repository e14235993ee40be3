"""A collection's life after its first embed: filters equal brute force (exact and ANN), a table source syncs
by row key, webdataset tars embed as the same images in a folder do, compaction changes no search result and a
sync after it still equals a fresh job, the ANN graph follows syncs, a bf16 collection's cosines stay <= 1."""

from __future__ import annotations

import csv
import fnmatch
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_collection_sync import assert_same_collection, fresh, picture

import siglip
from siglip.bulk import Collection, embed_source
from siglip.cli import main

pytest.importorskip("usearch")


def brute_force(index: siglip.Index, queries: np.ndarray, mask: np.ndarray, k: int) -> list[list[int]]:
    """The ids of the k best items among `mask`'s by plain float64 cosine, best first."""
    rows = index.vectors(np.arange(len(index))).astype(np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = np.where(mask[None, :], queries @ rows.T, -np.inf)
    best = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, int(mask.sum()))]
    return [list(row) for row in best]


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def photo_table(tmp_path: Path) -> Path:
    """A CSV of 24 image paths in three folders, with a `label` and a `split` column."""
    rows = []
    for i in range(24):
        folder = ("a", "b", "a/deep")[i % 3]
        name = f"{folder}/{i:02d}.{'png' if i % 4 else 'bmp'}"
        picture(tmp_path / name, i)
        rows.append({"path": name, "label": ("cat", "dog")[i % 2], "split": ("train", "test")[i % 5 == 0]})
    table = tmp_path / "photos.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return table


def test_filters_equal_brute_force_exact_and_ann_with_over_fetch(reference_checkpoint, tmp_path):
    out = tmp_path / "out"
    embed_source(photo_table(tmp_path), out, model=str(reference_checkpoint), column="path", kind="image")
    index = siglip.Index.open(out)
    index.build_ann(connectivity=4, expansion_add=64, expansion_search=64, queries=10)
    queries = np.vstack([index.vectors(np.array([1, 5, 17])), np.random.default_rng(0).standard_normal((2, 32))])
    meta = [json.loads(m) for m in index.meta]
    cases = {
        "under a": (dict(under="a"), [k.startswith("a/") for k in index.keys]),
        "under a/deep": (dict(under="a/deep/"), [k.startswith("a/deep/") for k in index.keys]),
        "glob *.bmp": (dict(glob="*.bmp"), [k.endswith(".bmp") for k in index.keys]),
        "glob b/*": (dict(glob="b/*"), [fnmatch.fnmatchcase(k, "b/*") for k in index.keys]),
        "where": (dict(where=["label=dog", "split=test"]), [(m["label"], m["split"]) == ("dog", "test") for m in meta]),
        "all three": (
            dict(under="a", glob="*.png", where=["label=cat"]),
            [k.startswith("a/") and k.endswith(".png") and m["label"] == "cat" for k, m in zip(index.keys, meta)],
        ),
    }
    found = wanted = 0
    for name, (options, expected) in cases.items():
        mask = index.select(**options)
        assert mask.tolist() == expected, name
        assert 0 < mask.sum() < len(index), name
        for k in (1, 3, 50):
            truth = brute_force(index, queries, mask, k)
            scores, ids = index.search_arrays(queries, k, mask=mask)
            assert [list(row) for row in ids] == truth, (name, k)
            assert mask[ids].all() and (scores <= 1.0).all()
            ann_scores, ann_ids = index.search_arrays(queries, k, ann=True, mask=mask)
            assert ann_ids.shape == ids.shape and mask[ann_ids].all(), (name, k)
            exact = np.einsum("qd,qkd->qk", unit(queries), unit(index.vectors(np.arange(len(index))))[ann_ids])
            np.testing.assert_allclose(ann_scores, exact, atol=1e-5)  # candidates re-scored in float32
            assert (np.diff(ann_scores, axis=1) <= 0).all(), (name, k)
            if k >= len(index):  # the fetch covers the collection: ANN must equal exact
                assert [list(row) for row in ann_ids] == truth, (name, k)
            found += sum(len(np.intersect1d(a, t)) for a, t in zip(ann_ids, truth))
            wanted += sum(len(t) for t in truth)
    print(f"filtered ANN recall {found / wanted:.3f}")
    assert found / wanted >= 0.9, f"filtered ANN recall {found / wanted:.3f}"  # a graph of connectivity 4


def test_table_source_syncs_by_row_key(reference_checkpoint, tmp_path):
    table, out = tmp_path / "texts.csv", tmp_path / "out"

    def write(rows: list[tuple[str, str, str]]) -> None:
        with open(table, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "lang"])
            writer.writerows(rows)

    rows = [(f"r{i}", f"text number {i}", "en") for i in range(6)]
    write(rows)
    options = dict(model=str(reference_checkpoint), column="text", key="id", shard_size=2)
    assert embed_source(table, out, **options).changes.startswith("+6 new")
    rows[1] = ("r1", "an edited text", "en")  # edited value: re-embedded under the same key
    rows[2] = ("r2", rows[2][1], "fr")  # another column only: refreshed, not embedded
    del rows[3]  # deleted row
    rows.append(("r9", "a new row", "de"))  # added row
    rows.append(("r10", "text number 0", "en"))  # a new key with a known text: reused
    write(rows)
    summary = embed_source(table, out, **options)
    assert summary.changes.startswith("+1 new, 1 changed, 1 deleted, 0 renamed (reused), 1 duplicates (reused)")
    assert_same_collection(out, fresh(table, tmp_path, reference_checkpoint, column="text", key="id"))
    index = siglip.Index.open(out)
    assert sorted(index.keys) == sorted(row[0] for row in rows)
    assert [index.keys[i] for i in np.nonzero(index.select(where=["lang=fr"]))[0]] == ["r2"]
    assert "text number 3" not in index.paths and "an edited text" in index.paths


def test_webdataset_tars_embed_as_the_same_images_in_a_folder(reference_checkpoint, tmp_path):
    folder, tars = tmp_path / "folder", tmp_path / "tars"
    tars.mkdir()
    names = []
    for i in range(7):
        names.append(picture(folder / f"{i:03d}.png", i).name)
    for number, chunk in enumerate((names[:4], names[4:])):
        with tarfile.open(tars / f"shard-{number}.tar", "w") as archive:
            for name in chunk:
                archive.add(folder / name, arcname=name)
                caption = tmp_path / "caption.txt"
                caption.write_text(f"caption of {name}")
                archive.add(caption, arcname=name.replace(".png", ".txt"))
    options = dict(model=str(reference_checkpoint), shard_size=3, batch_size=2)
    embed_source(folder, tmp_path / "from-folder", **options)
    summary = embed_source(tars, tmp_path / "from-tars", **options)
    assert summary.ok == 7 and Collection.open(tmp_path / "from-tars").settings.source_type == "webdataset"
    plain, packed = siglip.Index.open(tmp_path / "from-folder"), siglip.Index.open(tmp_path / "from-tars")
    assert sorted(k.split("::")[1] for k in packed.keys) == sorted(plain.keys)
    by_name = dict(zip((k.split("::")[1] for k in packed.keys), packed.vectors(np.arange(len(packed)))))
    for key, vector in zip(plain.keys, plain.vectors(np.arange(len(plain)))):
        np.testing.assert_allclose(by_name[key], vector, atol=1e-6, err_msg=key)
    assert embed_source(tars, tmp_path / "from-tars", **options).changes.startswith("+0 new, 0 changed, 0 deleted")


def snapshot(folder: Path, queries: np.ndarray) -> tuple[dict[str, np.ndarray], list, list]:
    index = siglip.Index.open(folder)
    scores, ids = index.search_arrays(queries, k=5)
    rows = dict(zip(index.paths, index.vectors(np.arange(len(index)))))
    return rows, [[index.paths[i] for i in row] for row in ids], scores.tolist()


def test_compact_keeps_search_results_and_a_later_sync_equals_a_fresh_job(reference_checkpoint, tmp_path, capsys):
    source, out = tmp_path / "photos", tmp_path / "out"
    for i in range(8):
        picture(source / f"{i}.png", i)
    options = dict(model=str(reference_checkpoint), shard_size=3)
    embed_source(source, out, **options)
    for i in range(8, 11):
        picture(source / f"{i}.png", i)
    (source / "0.png").unlink()
    picture(source / "1.png", 100)  # edited: its old embedding is dead weight
    embed_source(source, out, **options)
    (source / "2.png").rename(source / "two.png")
    embed_source(source, out, **options)
    assert len(Collection.open(out).state.segments) == 3
    queries = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    before = snapshot(out, queries)

    assert main(["compact", str(out), "--shard-size", "4"]) == 0
    assert "compacted 3 segments into 1: 12 stored embeddings -> 10 (10 live items)" in capsys.readouterr().out
    after = snapshot(out, queries)
    assert sorted(after[0]) == sorted(before[0]) and after[1] == before[1]
    np.testing.assert_allclose(after[2], before[2], atol=1e-6)
    for path, vector in before[0].items():
        np.testing.assert_array_equal(after[0][path], vector)
    assert [p.name for p in (out / "segments").iterdir()] == ["00003"]

    picture(source / "new.png", 50)
    (source / "3.png").unlink()
    assert embed_source(source, out, **options).changes.startswith("+1 new, 0 changed, 1 deleted")
    assert_same_collection(out, fresh(source, tmp_path, reference_checkpoint))


def test_ann_graph_is_rebuilt_by_a_sync_and_never_used_stale(reference_checkpoint, tmp_path):
    source, out = tmp_path / "photos", tmp_path / "out"
    for i in range(10):
        picture(source / f"{i}.png", i)
    options = dict(model=str(reference_checkpoint))
    embed_source(source, out, **options)
    siglip.Index.open(out).build_ann(connectivity=4, queries=5)
    picture(source / "new.png", 77)
    (source / "4.png").unlink()
    summary = embed_source(source, out, **options)
    assert any("rebuilt the ANN index: 10 items" in note for note in summary.notes)
    index = siglip.Index.open(out)
    rows = index.vectors(np.arange(len(index)))
    _, ids = index.search_arrays(rows, k=1, ann=True)
    assert [index.paths[i] for i in ids[:, 0]] == index.paths  # every live item is found by itself
    assert not any(path.endswith("4.png") for path in index.paths)

    (source / "5.png").unlink()  # a sync another tool made stale: the next open refuses the old graph
    ann_files = {name: (out / name).read_bytes() for name in ("ann.usearch", "ann.json")}
    embed_source(source, out, **options)
    for name, data in ann_files.items():
        (out / name).write_bytes(data)
    with pytest.raises(siglip.index.StaleAnnError, match="stale"):
        siglip.Index.open(out).search_arrays(rows[:1], k=1, ann=True)


def test_bf16_collection_cosines_never_exceed_one(reference_checkpoint, tmp_path):
    source, out = tmp_path / "photos", tmp_path / "out"
    for i in range(12):
        picture(source / f"{i}.png", i)
    embed_source(source, out, model=str(reference_checkpoint), dtype="bf16", batch_size=5)
    index = siglip.Index.open(out)
    rows = index.vectors(np.arange(len(index)))
    np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float64), axis=1), 1.0, atol=1e-6)
    assert (rows @ rows.T).max() <= 1.0 + 1e-6  # normalised in fp32: a bf16 normalisation reaches ~1.004
    for ann in (False, True):
        if ann:
            index.build_ann(dtype="bf16", queries=5)
        scores, ids = index.search_arrays(rows * 3.0, k=len(index), ann=ann)
        assert (scores <= 1.0).all() and (scores[:, 0] > 0.99).all()
        assert (ids[:, 0] == np.arange(len(index))).all() or ann
