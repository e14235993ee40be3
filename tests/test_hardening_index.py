"""`Index.open` of a first bulk job killed before its end opens the shards it finished, as documented."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from conftest import FIXTURES

import siglip
from siglip.cli import main as cli_main

DEMO_MODEL = Path(__file__).parent.parent / "models" / "siglip-demo-shapes"
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "horse.png", "rocket.jpg"]


def test_index_open_of_an_interrupted_first_job_shows_its_finished_shards(tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    for name in PHOTOS:
        shutil.copy(FIXTURES / name, source / name)
    out = tmp_path / "photos.emb"
    assert cli_main(["embed", str(source), "--out", str(out), "--model", str(DEMO_MODEL), "--shard-size", "2"]) == 0
    complete = siglip.Index.open(out)
    assert len(complete) == len(PHOTOS)

    # What a kill -9 during the first job leaves: no state.json (the commit point), no change log, no live
    # manifest, and only the shards finished so far (here the first two of three).
    (out / "state.json").unlink()
    for stale in [*out.glob("manifest.*"), *out.glob("segments/*/changes.*")]:
        stale.unlink()
    for last in (out / "segments" / "00000").rglob("*-00002.*"):
        last.unlink()
    index = siglip.Index.open(out)
    assert len(index) == 4
    assert sorted(os.path.basename(path) for path in index.paths) == sorted(PHOTOS)[:4]
    assert all(os.path.isfile(path) for path in index.paths)
    by_path = dict(zip(complete.paths, complete.vectors(np.arange(len(complete)))))
    np.testing.assert_array_equal(index.vectors(np.arange(4)), np.stack([by_path[p] for p in index.paths]))
    hits = index.search_arrays(index.vectors(np.arange(1)), k=1)[1]
    assert hits[0, 0] == 0
