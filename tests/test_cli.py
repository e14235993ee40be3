"""The `siglip` command end to end, in subprocesses: classify (table, JSON, bad input) and embed (npy, parquet)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FIXTURES

import siglip

LABELS = ["a cat", "a cup of coffee", "a rocket"]


def json_lines(stdout: str) -> list[dict]:
    """`--json` output: one JSON object per line (README: JSON lines)."""
    return [json.loads(line) for line in stdout.splitlines()]


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "siglip", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(FIXTURES / name, folder / name)
    (folder / "notes.txt").write_text("not an image, ignored when a folder is expanded")
    return folder


def test_classify_json_matches_pipeline(reference_checkpoint, image_dir):
    result = run_cli("classify", str(image_dir), "--labels", *LABELS, "--model", str(reference_checkpoint), "--json")
    records = json_lines(result.stdout)
    assert [r["image"].rsplit("/", 1)[1] for r in records] == ["chelsea.png", "coffee.png", "rocket.jpg"]
    pipe = siglip.pipeline(model=str(reference_checkpoint))
    for record in records:
        expected = pipe(record["image"], candidate_labels=LABELS)
        assert [r["label"] for r in record["results"]] == [r["label"] for r in expected]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(record["results"], expected)) <= 1e-6


def test_classify_fast_preprocess_matches_fast_pipeline(reference_checkpoint, image_dir):
    """--fast-preprocess uses the Fast image processor, as pipeline(use_fast=True) does (with --fast-decode too);
    its scores stay close to the exact path's (one uint8 level of resize deviation)."""
    args = ["classify", str(image_dir), "--labels", *LABELS, "--model", str(reference_checkpoint), "--json"]
    checkpoint = str(reference_checkpoint)
    exact = siglip.pipeline(model=checkpoint)
    for options, pipeline_kwargs in (([], {}), (["--fast-decode"], {"fast_decode": True})):
        records = json_lines(run_cli(*args, "--fast-preprocess", *options).stdout)
        pipe = siglip.pipeline(model=checkpoint, use_fast=True, **pipeline_kwargs)
        assert type(pipe.processor.image_processor).__name__ == "SiglipImageProcessorFast"
        for record in records:
            expected = {r["label"]: r["score"] for r in pipe(record["image"], candidate_labels=LABELS)}
            assert all(abs(r["score"] - expected[r["label"]]) <= 1e-6 for r in record["results"])
            if not options:
                reference = {r["label"]: r["score"] for r in exact(record["image"], candidate_labels=LABELS)}
                assert all(abs(r["score"] - reference[r["label"]]) <= 1e-2 for r in record["results"])


def test_classify_table_top_k_and_comma_labels(reference_checkpoint):
    image = str(FIXTURES / "chelsea.png")
    result = run_cli(
        "classify", image, "--labels", "a cat, a dog", "--top-k", "1", "--model", str(reference_checkpoint)
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0] == image and len(lines) == 2
    score, label = lines[1].split(maxsplit=1)
    assert 0.0 <= float(score) <= 1.0 and label in ("a cat", "a dog")


def test_bad_file_stops_with_one_line_naming_it(reference_checkpoint, image_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    args = (
        "classify",
        str(FIXTURES / "chelsea.png"),
        str(broken),
        "--labels",
        "cat",
        "--model",
        str(reference_checkpoint),
    )
    result = run_cli(*args, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "broken.jpg" in result.stderr
    assert "Traceback" not in result.stderr

    skipped = run_cli(*args, "--skip-errors", "--json")
    records = json_lines(skipped.stdout)
    assert "results" in records[0] and "error" in records[1]
    assert "skipped" in skipped.stderr and "broken.jpg" in skipped.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", ","], "labels"),
        (["--labels", "cat", "--top-k", "0"], "top-k"),
        (["--labels", "cat", "--template", "no slot"], "template"),
        (["--labels", "cat", "--model", "/nonexistent/model"], "/nonexistent/model"),
    ],
)
def test_bad_arguments_exit_nonzero(reference_checkpoint, args, message):
    if "--model" not in args:
        args = [*args, "--model", str(reference_checkpoint)]
    result = run_cli("classify", str(FIXTURES / "chelsea.png"), *args, check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_embed_images_npy_and_parquet(reference_checkpoint, image_dir, tmp_path):
    import pyarrow.parquet as pq

    run_cli("embed", str(image_dir), "--model", str(reference_checkpoint), "--out", str(tmp_path / "e.npy"))
    rows = np.load(tmp_path / "e.npy")
    listing = json.loads((tmp_path / "e.inputs.json").read_text())
    assert rows.shape == (3, 32) and len(listing["inputs"]) == 3 and listing["normalized"] is True
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)

    model = siglip.AutoModel.from_pretrained(reference_checkpoint)
    processor = siglip.AutoProcessor.from_pretrained(reference_checkpoint)
    from siglip.image.loading import load_image

    pixels = processor(images=[load_image(p) for p in listing["inputs"]], return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels), dim=-1)
    np.testing.assert_allclose(rows, expected.numpy(), atol=1e-5)

    run_cli("embed", str(image_dir), "--model", str(reference_checkpoint), "--out", str(tmp_path / "e.parquet"))
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column("input").to_pylist() == listing["inputs"]
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist()), rows, atol=1e-6)


def test_embed_texts(reference_checkpoint, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat\na dog on a beach\n" + "very long " * 300 + "\n")
    run_cli("embed", "--text-file", str(texts), "--model", str(reference_checkpoint), "--out", str(tmp_path / "t.npy"))
    rows = np.load(tmp_path / "t.npy")
    assert rows.shape == (3, 32)
    pipe = siglip.pipeline(model=str(reference_checkpoint))
    expected = pipe.label_embeddings(["a cat", "a dog on a beach"], template="{}")
    np.testing.assert_allclose(rows[:2], expected.numpy(), atol=1e-5)


def test_embed_bad_output_and_mixed_inputs(reference_checkpoint, tmp_path):
    result = run_cli("embed", "--text", "a", "--out", str(tmp_path / "x.csv"), check=False)
    assert result.returncode == 2 and "bulk job" in result.stderr  # any other --out name is a bulk folder
    both = run_cli("embed", str(FIXTURES), "--text", "a", "--out", str(tmp_path / "x.npy"), check=False)
    assert both.returncode == 2 and "not both" in both.stderr
