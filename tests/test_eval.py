"""`siglip eval` on the demo model with synthetic shapes it can recognise (rendered by the training generator):
metrics equal independent computations, the saved probe reproduces the probe, a killed eval resumes without
re-embedding, and every dataset format reads the same samples."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import siglip
from siglip.eval import ModelSpec, compare, evaluate, mcnemar, read_dataset, to_json
from siglip.eval.datasets import EvalData
from siglip.train.synthetic import SHAPES, ShapesDataset

DEMO = Path(__file__).resolve().parents[1] / "models" / "siglip-demo-shapes"
COUNTS = {"train": 24, "test": 18}


def _render(root: Path) -> list[dict]:
    """Class folders root/shapes/SPLIT/SHAPE/NAME.png; returns one record per image (path relative to root)."""
    records = []
    for seed, (split, count) in enumerate(COUNTS.items()):
        dataset = ShapesDataset(count, split="eval", seed=seed + 10)
        for index in range(count):
            image, caption, sample = dataset.sample(index)
            relative = Path("shapes") / split / sample.shape / f"{split}-{index:03d}.png"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / relative)
            records.append(
                dict(
                    image=relative.as_posix(), label=sample.shape, split=split, captions=[caption, f"a {sample.shape}"]
                )
            )
    return records


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("eval-data")
    return root, _render(root)


@pytest.fixture(scope="module")
def demo():
    return siglip.AutoModel.from_pretrained(DEMO), siglip.AutoProcessor.from_pretrained(DEMO)


def _write_formats(root: Path, records: list[dict]) -> dict[str, Path]:
    """The same samples as a CSV, JSON lines, Parquet, a webdataset tar and a Karpathy-split JSON."""
    rows = [
        dict(image=r["image"], label=r["label"], split=r["split"], caption=c) for r in records for c in r["captions"]
    ]
    with open(root / "data.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({key: [row[key] for row in rows] for key in rows[0]}), root / "data.parquet")
    (root / "classnames.txt").write_text("\n".join(SHAPES) + "\n", encoding="utf-8")
    (root / "tars").mkdir()
    with tarfile.open(root / "tars" / "shard-000.tar", "w") as tar:
        for number, record in enumerate(records):
            members = {
                "png": (root / record["image"]).read_bytes(),
                "cls": str(SHAPES.index(record["label"])).encode(),
                "json": json.dumps({"captions": record["captions"]}).encode(),
            }
            for extension, payload in members.items():
                info = tarfile.TarInfo(f"{number:05d}.{extension}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    images = [
        dict(
            filepath=str(Path(r["image"]).parent),
            filename=Path(r["image"]).name,
            split=r["split"],
            sentences=[{"raw": c} for c in r["captions"]],
        )
        for r in records
    ]
    (root / "karpathy.json").write_text(json.dumps({"dataset": "shapes", "images": images}), encoding="utf-8")
    return {name: root / name for name in ("data.csv", "data.jsonl", "data.parquet", "tars", "karpathy.json")}


def _samples(data: EvalData) -> list[tuple]:
    """(image content digest, class name or None, captions, split) per image, sorted by content."""
    from siglip.bulk.webdataset import read_member

    out = []
    for position in range(len(data)):
        located = data.locate(position)
        payload = read_member(located) or Path(located).read_bytes()
        label = data.classnames[data.labels[position]] if data.labels is not None else None
        captions = tuple(data.captions[position]) if data.captions is not None else None
        out.append((hashlib.sha256(payload).hexdigest(), label, captions, data.splits[position]))
    return sorted(out, key=lambda sample: sample[0])


def test_every_format_reads_the_same_samples(shapes, tmp_path):
    root, records = shapes
    paths = _write_formats(root, records) if not (root / "data.csv").exists() else None
    paths = paths or {name: root / name for name in ("data.csv", "data.jsonl", "data.parquet", "tars", "karpathy.json")}
    folders = _samples(read_dataset(root / "shapes"))
    assert len(folders) == sum(COUNTS.values()) and folders[0][1] in SHAPES
    strip = [(digest, label, split) for digest, label, _, split in folders]
    for name in ("data.csv", "data.jsonl", "data.parquet"):
        table = _samples(read_dataset(paths[name]))
        assert [(d, lab, s) for d, lab, _, s in table] == strip, name
        assert all(len(captions) == 2 for _, _, captions, _ in table)
    tars = _samples(read_dataset(paths["tars"], classnames=root / "classnames.txt"))
    assert [(d, lab) for d, lab, _, _ in tars] == [(d, lab) for d, lab, _ in strip]
    karpathy = _samples(read_dataset(paths["karpathy.json"]))
    assert [(d, s) for d, _, _, s in karpathy] == [(d, s) for d, _, s in strip]
    by_digest = {d: c for d, _, c, _ in read_dataset_captions(paths)}
    assert all(captions == by_digest[d] for d, _, captions, _ in tars + karpathy)


def read_dataset_captions(paths: dict[str, Path]) -> list[tuple]:
    return _samples(read_dataset(paths["data.csv"]))


def test_zero_shot_equals_pipeline_top1_image_by_image(shapes, demo, tmp_path):
    root, _ = shapes
    data = read_dataset(root / "shapes")
    model, processor = demo
    [result] = evaluate("zero-shot", data, [ModelSpec(str(DEMO), model=model, processor=processor)], cache_dir=tmp_path)
    test = data.select("test")
    pipe = siglip.ZeroShotImageClassificationPipeline(model, processor)
    predicted = [pipe(test.locate(i), candidate_labels=test.classnames, top_k=1)[0]["label"] for i in range(len(test))]
    right = [label == test.classnames[truth] for label, truth in zip(predicted, test.labels)]
    assert result.outcomes.tolist() == right
    assert result.metrics["acc1"] == pytest.approx(sum(right) / len(right))
    assert result.metrics["acc1"] > 0.6  # the demo model knows its shapes
    assert result.settings["templates"] == ["a {}"] and "max_length=24" in result.settings["padding"]
    record = to_json([result])
    assert {"dataset", "model", "task", "metrics"} <= set(record) and record["task"] == "zeroshot_classification"


def test_retrieval_recall_equals_brute_force(shapes, demo, tmp_path):
    from siglip.encode import encode_texts, iter_encoded_images

    root, records = shapes
    if not (root / "data.csv").exists():
        _write_formats(root, records)
    data = read_dataset(root / "data.csv")
    model, processor = demo
    [result] = evaluate(
        "retrieval", data, [ModelSpec(str(DEMO), model=model, processor=processor)], cache_dir=tmp_path, ks=(1, 2, 5)
    )
    test = data.select("test")
    images = torch.cat(
        [e for _, e in iter_encoded_images(model, processor, [test.locate(i) for i in range(len(test))])]
    )
    texts = [caption for captions in test.captions for caption in captions]
    owner = [i for i, captions in enumerate(test.captions) for _ in captions]
    scores = encode_texts(model, processor, texts) @ images.t()  # (texts, images)
    # Many captions are the same text ("a circle"); the evaluation counts ties for the query (a rank is the number of
    # candidates scoring strictly higher). Scores within `tie` are ties here: an embedding can move by an ulp with
    # its place in a batch (AVX2 GEMM blocking), which orders near-equal scores either way. So each query's rank
    # lies between the near-ties won and the near-ties lost, and so does each recall.
    tie = 1e-5
    own = torch.tensor(owner)
    text_own = scores.gather(1, own[:, None])  # (texts, 1) each caption's score with its image
    others = torch.arange(len(test))[None, :] != own[:, None]
    text_ranks = ((scores > text_own + tie).sum(1), ((scores >= text_own - tie) & others).sum(1))
    owned = own[:, None] == torch.arange(len(test))[None, :]  # (texts, images)
    best = scores.masked_fill(~owned, float("-inf")).max(0).values  # each image's best caption
    image_ranks = ((scores > best + tie).sum(0), ((scores >= best - tie) & ~owned).sum(0))
    for k in (1, 2, 5):
        won, lost = ((ranks < k).double().mean().item() for ranks in text_ranks)
        assert lost - 1e-9 <= result.metrics[f"image_retrieval_recall@{k}"] <= won + 1e-9, k
        won, lost = ((ranks < k).double().mean().item() for ranks in image_ranks)
        assert lost - 1e-9 <= result.metrics[f"text_retrieval_recall@{k}"] <= won + 1e-9, k


def test_saved_probe_reproduces_the_probe(shapes, demo, tmp_path):
    root, _ = shapes
    data = read_dataset(root / "shapes")
    model, processor = demo
    out = tmp_path / "probe"
    [result] = evaluate(
        "linear-probe",
        data,
        [ModelSpec(str(DEMO), model=model, processor=processor)],
        cache_dir=tmp_path / "cache",
        shots=(1, 2),
        seeds=(0, 1),
        save=out,
    )
    assert set(result.details["k_shot"]) == {"1", "2"} and result.metrics["lp_acc1"] > 0.6
    classifier = siglip.AutoModelForImageClassification.from_pretrained(out)
    assert type(classifier).__name__ == "SiglipForImageClassification"
    assert classifier.config.id2label == dict(enumerate(data.classnames))
    test = data.select("test")
    from PIL import Image

    pixels = processor(
        images=[Image.open(test.locate(i)).convert("RGB") for i in range(len(test))], return_tensors="pt"
    )
    with torch.no_grad():
        predictions = classifier(**pixels).logits.argmax(-1).tolist()
    assert predictions == result.details["predictions"]
    assert type(siglip.AutoModel.from_pretrained(out)).__name__ == "SiglipModel"  # every CLI command loads it
    from siglip.cli import main

    assert main(["classify", test.locate(0), "--labels", "red circle", "-m", str(out), "--device", "cpu"]) == 0


def test_killed_eval_resumes_without_reembedding(shapes, demo, tmp_path):
    root, _ = shapes
    data = read_dataset(root / "shapes").select("test")
    model, processor = demo
    seen = []

    def count(module, args, kwargs):
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        seen.append(len(pixels))
        if kill_after is not None and len(seen) > kill_after:
            raise KeyboardInterrupt

    handle = model.vision_model.register_forward_pre_hook(count, with_kwargs=True)
    spec = ModelSpec(str(DEMO), model=model, processor=processor)
    options = dict(cache_dir=tmp_path, batch_size=6, shard_size=6, workers=1)
    try:
        kill_after = 2
        with pytest.raises(KeyboardInterrupt):
            evaluate("zero-shot", data, [spec], **options)
        assert sum(seen[:2]) == 12
        seen.clear()
        kill_after = None
        [resumed] = evaluate("zero-shot", data, [spec], **options)
        assert sum(seen) == len(data) - 12  # only the shard the kill interrupted
        seen.clear()
        [again] = evaluate("zero-shot", data, [spec], templates=["a {}", "a {} shape"], **options)
        assert seen == []  # another prompt set: no image embedded again
    finally:
        handle.remove()
    [fresh] = evaluate("zero-shot", data, [spec], cache_dir=tmp_path / "fresh")
    assert resumed.outcomes.tolist() == fresh.outcomes.tolist()
    assert again.settings["templates"] == ["a {}", "a {} shape"]


def test_cli_json_and_comparison(shapes, tmp_path, capsys):
    from siglip.cli import main

    root, _ = shapes
    out = tmp_path / "results.json"
    argv = ["eval", "zero-shot", str(root / "shapes"), "-m", str(DEMO), "--dtype", "fp32", "--dtype", "bf16"]
    argv += ["--cache-dir", str(tmp_path), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "top1 95% CI" in printed and "vs models" not in printed.split("\n")[0]
    records = json.loads(out.read_text())
    assert [r["pretrained"] for r in records] == ["float32", "bfloat16"]
    assert all({"dataset", "model", "task", "metrics"} <= set(r) for r in records)
    assert "versus_first" in records[1]["siglip"] and 0 <= records[1]["siglip"]["versus_first"]["mcnemar_p"] <= 1


def test_stats():
    a = torch.tensor([True] * 50 + [False] * 50)
    b = torch.tensor([True] * 50 + [True] * 20 + [False] * 30)
    p, a_only, b_only = mcnemar(a, b)
    assert (a_only, b_only) == (0, 20) and p < 1e-5
    comparison = compare(a, b)
    assert comparison.significant and comparison.difference == pytest.approx(0.2)
    assert comparison.low <= 0.2 <= comparison.high
    assert not compare(a, a).significant


def test_guard_rail_warnings(monkeypatch):
    from siglip.encode import check_text_case
    from siglip.eval.zero_shot import check_templates
    from siglip.modeling import text

    monkeypatch.setattr(text, "_warned_short_ids", False)
    model = siglip.AutoModel.from_pretrained(DEMO)
    ids = torch.tensor([[3, 4, 1]])
    with pytest.warns(UserWarning, match="fewer than the 24"):
        first = model.get_text_features(input_ids=ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only, and the numbers are those computed without a warning
        assert torch.equal(model.get_text_features(input_ids=ids), first)
    with pytest.warns(UserWarning, match="has no"):
        check_templates(["a photo"])
    import siglip.encode as encode

    monkeypatch.setattr(encode, "_warned_case", False)
    siglip2 = SimpleNamespace(config=SimpleNamespace(model_type="siglip2"))
    with pytest.warns(UserWarning, match="lowercased"):
        check_text_case(siglip2, SimpleNamespace(tokenizer=SimpleNamespace(lowercase=False)), ["A Cat"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_text_case(siglip2, SimpleNamespace(tokenizer=SimpleNamespace(lowercase=True)), ["A Cat"])


def test_plot(shapes, demo, tmp_path):
    pytest.importorskip("matplotlib")
    from siglip.eval import plot_results

    root, _ = shapes
    model, processor = demo
    results = evaluate(
        "zero-shot",
        read_dataset(root / "shapes"),
        [ModelSpec(str(DEMO), model=model, processor=processor)],
        cache_dir=tmp_path,
    )
    assert plot_results(results, tmp_path / "chart.png").stat().st_size > 1000


def test_webdataset_split_folders_side_files_and_json_list(shapes, tmp_path):
    """CLIP_benchmark's webdataset layout (SPLIT/N.tar, classnames.txt, templates beside them) and a JSON list."""
    root, records = shapes
    wds = tmp_path / "wds"
    for split in COUNTS:
        (wds / split).mkdir(parents=True)
        with tarfile.open(wds / split / "0.tar", "w") as tar:
            for number, record in enumerate(r for r in records if r["split"] == split):
                for extension, payload in (
                    ("png", (root / record["image"]).read_bytes()),
                    ("cls", str(SHAPES.index(record["label"])).encode()),
                ):
                    info = tarfile.TarInfo(f"s{number:04d}.{extension}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    (wds / "classnames.txt").write_text("\n".join(SHAPES) + "\n", encoding="utf-8")
    (wds / "zeroshot_classification_templates.txt").write_text("a {}\na {} shape\n", encoding="utf-8")
    data = read_dataset(wds)
    assert data.templates == ["a {}", "a {} shape"] and data.split_names() == ["test", "train"]
    folders = read_dataset(root / "shapes")
    assert sorted(_samples(data)) == sorted((d, lab, None, s) for d, lab, _, s in _samples(folders))
    listed = tmp_path / "records.json"
    rows = [dict(path=str(root / r["image"]), label=r["label"], split=r["split"]) for r in records]
    listed.write_text(json.dumps(rows), encoding="utf-8")
    assert [(d, lab, s) for d, lab, _, s in _samples(read_dataset(listed))] == [
        (d, lab, s) for d, lab, _, s in _samples(folders)
    ]


def test_feature_tower_matches_the_classifier_siglip2(tmp_path):
    """One pass gives get_image_features and the classifier's (mask-aware, NaFlex) mean-pooled tokens."""
    from siglip.config import Siglip2Config
    from siglip.eval.cache import FeatureTower
    from siglip.modeling.siglip2 import Siglip2Model

    text = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, patch_size=4)
    torch.manual_seed(0)
    Siglip2Model(Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 16})).save_pretrained(tmp_path)
    model = siglip.AutoModel.from_pretrained(tmp_path)
    classifier = siglip.AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=0)
    shapes = torch.tensor([[4, 4], [2, 6], [3, 3]])
    inputs = dict(
        pixel_values=torch.randn(3, 16, 48),
        pixel_attention_mask=(torch.arange(16)[None] < shapes.prod(-1)[:, None]).long(),
        spatial_shapes=shapes,
    )
    with torch.no_grad():
        both = FeatureTower(model).get_image_features(**inputs)
        embeds, pooled = both[:, :32], both[:, 32:]
        assert torch.allclose(embeds, model.get_image_features(**inputs), atol=1e-6)
        assert torch.allclose(pooled, classifier(**inputs).logits, atol=1e-6)


def test_probe_after_zero_shot_embeds_only_the_training_images(shapes, demo, tmp_path):
    root, _ = shapes
    data = read_dataset(root / "shapes")
    model, processor = demo
    spec = ModelSpec(str(DEMO), model=model, processor=processor)
    seen = []
    handle = model.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(len(kwargs["pixel_values"])), with_kwargs=True
    )
    try:
        evaluate("zero-shot", data, [spec], cache_dir=tmp_path)
        assert sum(seen) == COUNTS["test"]
        seen.clear()
        [probe] = evaluate("linear-probe", data, [spec], cache_dir=tmp_path, shots=())
        assert sum(seen) == COUNTS["train"]  # the test split's features come from the zero-shot run's cache entry
    finally:
        handle.remove()
    assert probe.images == COUNTS["test"] and probe.details["train_images"] == COUNTS["train"]
