"""Training: the loss falls, exact resume, torchrun DDP, LiT, caption-file and tar data, atomic checkpoints,
and the shipped demo model classifying the shipped example images."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from siglip.errors import ImageError, InputError
from siglip.train import TrainConfig, train
from siglip.train import checkpoint as ckpt
from siglip.train.data import CaptionFileDataset, EpochBatchSampler, TarShardStream, iter_tar_samples
from siglip.train.loop import lr_multiplier
from siglip.train.synthetic import COLOURS, HELD_OUT, SHAPES, ShapesDataset, train_vocabulary

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "models" / "siglip-demo-shapes"
EXAMPLE_IMAGES = ROOT / "examples" / "images"
TINY = {
    "model_type": "siglip",
    "text_config": dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
    ),
    "vision_config": dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    ),
}


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory) -> Path:
    """A from-scratch setup: tiny config.json and a SentencePiece vocabulary of the synthetic captions."""
    folder = tmp_path_factory.mktemp("train_setup")
    (folder / "config.json").write_text(json.dumps(TINY))
    train_vocabulary(str(folder / "spiece"), vocab_size=96)
    return folder


def tiny_config(setup_dir: Path, output: Path, **overrides) -> TrainConfig:
    options = dict(
        output_dir=str(output),
        config=str(setup_dir / "config.json"),
        tokenizer=str(setup_dir / "spiece.model"),
        data="synthetic",
        steps=8,
        batch_size=16,
        warmup_steps=2,
        lr=2e-3,
        log_every=1,
        save_every=0,
        quiet=True,
    )
    return TrainConfig(**{**options, **overrides})


def read_log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]


def test_loss_falls_and_output_loads(setup_dir, tmp_path):
    from siglip import AutoModel, AutoProcessor, SiglipModel

    summary = train(
        tiny_config(setup_dir, tmp_path, steps=40, warmup_steps=5, eval_data="synthetic:eval", eval_samples=64)
    )
    losses = [record["loss"] for record in read_log(tmp_path) if "loss" in record and "step" in record]
    assert len(losses) >= 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert {"zeroshot_shape", "zeroshot_colour_unseen", "i2t_recall@1"} <= set(summary["eval"])
    logged = read_log(tmp_path)
    assert any("eval" in record for record in logged)
    assert all(key in logged[2] for key in ("lr", "samples_per_s", "loss"))
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, SiglipModel)
    for name in ("config.json", "model.safetensors", "spiece.model", "preprocessor_config.json"):
        assert (tmp_path / name).is_file()
    # The saved processor feeds the model what training fed it: padded ids, no attention mask.
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert set(processor(text=["a red circle"], padding="max_length")) == {"input_ids"}


def test_from_scratch_uses_paper_logit_init(setup_dir, tmp_path):
    train(tiny_config(setup_dir, tmp_path, steps=1, lr=1e-9, warmup_steps=1))
    weights = load_file(tmp_path / "model.safetensors")
    assert weights["logit_scale"].item() == pytest.approx(math.log(10), abs=1e-4)
    assert weights["logit_bias"].item() == pytest.approx(-10, abs=1e-4)


def test_stop_and_resume_equals_uninterrupted(setup_dir, tmp_path):
    common = dict(steps=10, deterministic=True, grad_accum=2)
    train(tiny_config(setup_dir, tmp_path / "straight", **common))
    interrupted = tmp_path / "interrupted"
    train(tiny_config(setup_dir, interrupted, stop_at=4, **common))
    assert not (interrupted / "model.safetensors").exists()
    state = ckpt.load_checkpoint(interrupted / "checkpoints" / "last.pt")
    assert (state["step"], state["batches_seen"]) == (4, 8)
    train(tiny_config(setup_dir, interrupted, resume="auto", **common))
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(interrupted / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_lit_leaves_image_tower_unchanged(setup_dir, tmp_path):
    base = tmp_path / "base"
    train(tiny_config(setup_dir, base, steps=2))
    tuned = tmp_path / "lit"
    train(
        TrainConfig(
            output_dir=str(tuned),
            model=str(base),
            data="synthetic",
            steps=4,
            batch_size=16,
            warmup_steps=1,
            lr=5e-3,
            lock_image=True,
            quiet=True,
            save_every=0,
        )
    )
    before, after = load_file(base / "model.safetensors"), load_file(tuned / "model.safetensors")
    vision = [name for name in before if name.startswith("vision_model.")]
    assert vision and all(torch.equal(before[name], after[name]) for name in vision)
    assert not torch.equal(before["text_model.head.weight"], after["text_model.head.weight"])
    assert not torch.equal(before["logit_bias"], after["logit_bias"])


def test_text_tower_lock_and_sharper_attention_init(setup_dir, tmp_path):
    """--lock-text-steps keeps the text tower at its initial weights while the image tower trains;
    --text-attention-init-scale multiplies the text tower's initial query/key weights."""
    from siglip.train.loop import build_model_and_processor

    plain = build_model_and_processor(tiny_config(setup_dir, tmp_path / "a"))[0]
    sharp = build_model_and_processor(tiny_config(setup_dir, tmp_path / "b", text_attention_init_scale=4.0))[0]
    for name in ("q_proj", "k_proj"):
        weight = getattr(plain.text_model.encoder.layers[0].self_attn, name).weight
        assert torch.allclose(getattr(sharp.text_model.encoder.layers[0].self_attn, name).weight, 4 * weight)
    assert torch.equal(plain.text_model.encoder.layers[0].self_attn.v_proj.weight,
                       sharp.text_model.encoder.layers[0].self_attn.v_proj.weight)  # fmt: skip
    assert torch.equal(plain.vision_model.encoder.layers[0].self_attn.q_proj.weight,
                       sharp.vision_model.encoder.layers[0].self_attn.q_proj.weight)  # fmt: skip

    locked, later = tmp_path / "locked", tmp_path / "later"
    train(tiny_config(setup_dir, locked, steps=3, lock_text_steps=3, text_attention_init_scale=4.0))
    train(tiny_config(setup_dir, later, steps=3, lock_text_steps=2, text_attention_init_scale=4.0))
    init = sharp.state_dict()
    after, unlocked = load_file(locked / "model.safetensors"), load_file(later / "model.safetensors")
    text = [name for name in after if name.startswith("text_model.")]
    assert text and all(torch.equal(after[name], init[name]) for name in text)
    assert not torch.equal(after["vision_model.head.probe"], init["vision_model.head.probe"])
    assert not torch.equal(unlocked["text_model.head.weight"], init["text_model.head.weight"])  # trains from step 3
    with pytest.raises(InputError, match="lock-text-steps"):
        tiny_config(setup_dir, tmp_path / "c", lock_text_steps=-1).check()


def write_images(folder: Path, count: int) -> list[tuple[str, str]]:
    """Synthetic PNGs on disk with their captions: (file name, caption)."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = ShapesDataset(split="train", image_size=40)
    rows = []
    for index in range(count):
        image, caption = dataset[index]
        image.save(folder / f"img{index:03d}.png")
        rows.append((f"img{index:03d}.png", caption))
    return rows


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_train_from_caption_file(setup_dir, tmp_path, kind):
    rows = write_images(tmp_path / "data" / "images", 24)
    if kind == "csv":
        path = tmp_path / "data" / "captions.csv"
        with path.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["image", "caption"])
            writer.writerows([(f"images/{name}", caption) for name, caption in rows])
    else:
        path = tmp_path / "data" / "captions.jsonl"
        path.write_text("".join(json.dumps({"path": f"images/{n}", "text": c}) + "\n" for n, c in rows))
    summary = train(
        tiny_config(
            setup_dir,
            tmp_path / "out",
            data=str(tmp_path / "data"),
            steps=3,
            batch_size=8,
            eval_data=str(path),
            eval_samples=16,
        )
    )
    assert summary["step"] == 3 and "i2t_recall@1" in summary["eval"]


def write_shard(path: Path, rows: list[tuple[str, str]], images: Path) -> None:
    with tarfile.open(path, "w") as archive:
        for name, caption in rows:
            key = Path(name).stem
            archive.add(images / name, arcname=f"{key}.png")
            text = images / f"{key}.txt"
            text.write_text(caption)
            archive.add(text, arcname=f"{key}.txt")


def test_tar_shards_stream_shard_and_resume(setup_dir, tmp_path):
    images = tmp_path / "images"
    rows = write_images(images, 12)
    shards = [tmp_path / "shard-000.tar", tmp_path / "shard-001.tar"]
    write_shard(shards[0], rows[:6], images)
    write_shard(shards[1], rows[6:], images)
    samples = list(iter_tar_samples(str(shards[0])))
    assert [caption for _, caption in samples] == [caption for _, caption in rows[:6]]
    assert samples[0][0].size == (40, 40)
    # Two ranks: disjoint shards, together all samples; skipping 2 batches drops exactly the first 2 x 2 samples.
    names = [str(s) for s in shards]
    per_rank = [[c for _, c in TarShardStream(names, 2, rank, 2, repeat=False)] for rank in range(2)]
    assert sorted(per_rank[0] + per_rank[1]) == sorted(c for _, c in rows)
    assert [c for _, c in TarShardStream(names, 2, 0, 2, skip_batches=2, repeat=False)] == per_rank[0][4:]
    # More readers than shards: sample-level split.
    per_reader = [[c for _, c in TarShardStream(names[:1], 1, rank, 3, repeat=False)] for rank in range(3)]
    assert sum(per_reader, []) != [] and sorted(sum(per_reader, [])) == sorted(c for _, c in rows[:6])
    summary = train(
        tiny_config(setup_dir, tmp_path / "out", data=str(tmp_path / "shard-{000..001}.tar"), steps=3, batch_size=4)
    )
    assert summary["step"] == 3


def test_corrupt_training_images_are_typed_errors_or_skipped(tmp_path):
    """Training images go through the hardened loader: a corrupt file in a caption list is an ImageError naming
    it; a corrupt sample in a tar shard is skipped with a warning, the same way on every pass."""
    images = tmp_path / "images"
    rows = write_images(images, 4)
    (images / rows[1][0]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature, nothing behind it
    listing = tmp_path / "captions.csv"
    listing.write_text("image,caption\n" + "".join(f"images/{name},{caption}\n" for name, caption in rows))
    dataset = CaptionFileDataset(listing)
    assert dataset[0][0].mode == "RGB"
    with pytest.raises(ImageError, match=rows[1][0]):
        dataset[1]
    write_shard(tmp_path / "shard.tar", rows, images)
    with pytest.warns(UserWarning, match="img001 skipped"):
        samples = list(iter_tar_samples(str(tmp_path / "shard.tar")))
    assert [caption for _, caption in samples] == [rows[0][1], rows[2][1], rows[3][1]]


def test_epoch_sampler_resumes_mid_epoch():
    straight = EpochBatchSampler(10, 3, seed=1)
    batches = [batch for batch, _ in zip(straight, range(7))]
    assert len({i for batch in batches[:3] for i in batch}) == 9  # one epoch: 3 batches, no repeats
    resumed = [batch for batch, _ in zip(EpochBatchSampler(10, 3, seed=1, start=4), range(3))]
    assert resumed == batches[4:]


def test_lr_schedule():
    config = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, config) == pytest.approx(0.1)
    assert lr_multiplier(9, config) == pytest.approx(1.0)
    assert lr_multiplier(60, config) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(110, config) == pytest.approx(0.1)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.pt"
    ckpt.atomic_save({"step": 1, "weights": torch.ones(3)}, target)

    def failing_save(payload, stream):
        stream.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_save({"step": 2}, target)
    assert os.listdir(target.parent) == ["last.pt"]  # no temporary left behind
    assert torch.load(target, weights_only=True)["step"] == 1  # the previous file is intact (not a full resume state)


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = ckpt.capture_rng_state()
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    ckpt.restore_rng_state(state)
    assert torch.equal(torch.rand(2), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1]) and random.random() == expected[2]


def test_torchrun_ddp(setup_dir, tmp_path):
    output = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "siglip.train",
        "--output-dir",
        str(output),
        "--config",
        str(setup_dir / "config.json"),
        "--tokenizer",
        str(setup_dir / "spiece.model"),
        "--data",
        "synthetic",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--warmup-steps",
        "1",
        "--threads",
        "1",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    from siglip import AutoModel, SiglipProcessor

    model = AutoModel.from_pretrained(output)
    processor = SiglipProcessor.from_pretrained(output)
    inputs = processor(text=["a red circle"], padding="max_length", max_length=16, return_tensors="pt")
    assert model.get_text_features(**inputs).shape == (1, 32)
    assert read_log(output)[0]["world_size"] == 2


def test_held_out_combinations_never_in_training():
    dataset = ShapesDataset(split="train")
    seen = {(sample.colour, sample.shape) for sample in (dataset.sample(i)[2] for i in range(2000))}
    assert len(HELD_OUT) == len(COLOURS) and not seen & HELD_OUT and len(seen) == len(COLOURS) * len(SHAPES) - 8
    assert {shape for _, shape in HELD_OUT} == set(SHAPES)  # every shape is unseen in some colour


def test_cli_train_command(setup_dir, tmp_path, capsys):
    from siglip.cli import main

    output = tmp_path / "cli"
    common = ["--config", str(setup_dir / "config.json"), "--tokenizer", str(setup_dir / "spiece.model")]
    argv = ["train", "--output-dir", str(output), *common, "--data", "synthetic", "--steps", "2"]
    assert main([*argv, "--batch-size", "4", "--warmup-steps", "1", "--log-every", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summary"]
    assert summary["step"] == 2 and (output / "model.safetensors").is_file()
    assert [record["step"] for record in read_log(output) if "lr" in record] == [1, 2]
    # An input mistake is a one-line error with exit code 2, not a traceback.
    assert main(["train", "--output-dir", str(tmp_path / "x"), *common]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_shipped_demo_model_classifies_example_images():
    """Top-1 among the 48 colour x shape labels on the shipped example images (ten seen combinations, chosen before
    training, rendered large on fixed backgrounds), through the pipeline a user calls: all ten right. A broken
    load, tokenizer or preprocessing path falls to chance (1/48)."""
    from siglip import pipeline

    classify = pipeline("zero-shot-image-classification", model=str(DEMO_MODEL))
    expected = json.loads((EXAMPLE_IMAGES / "labels.json").read_text())
    images, candidates = expected["images"], expected["candidate_labels"]
    assert len(images) == 10 and len(candidates) == len(COLOURS) * len(SHAPES)
    assert not {tuple(label.split()) for label in images.values()} & HELD_OUT
    predicted = {
        name: classify(
            str(EXAMPLE_IMAGES / name), candidate_labels=candidates, hypothesis_template=expected["hypothesis_template"]
        )[0]["label"]
        for name in images
    }
    assert predicted == images


def test_shipped_demo_model_pipeline_agrees_with_training_evaluation():
    """The pipeline (what users call) and the training loop's evaluation hook (what metrics.json reports) give the
    same top-1 on fresh images: the saved tokenizer returns no attention mask, as the model was trained."""
    from siglip import pipeline
    from siglip.train.evaluate import build_eval_set, evaluate

    classify = pipeline("zero-shot-image-classification", model=str(DEMO_MODEL))
    source = ShapesDataset(split="eval", seed=5, image_size=32)
    samples = [source.sample(index) for index in range(96)]
    candidates = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
    predicted = [
        classify(image, candidate_labels=candidates, hypothesis_template="a {}")[0]["label"] for image, *_ in samples
    ]
    pipeline_accuracy = sum(p == sample.combo for p, (*_, sample) in zip(predicted, samples)) / len(samples)
    hook = evaluate(classify.model, build_eval_set(source, classify.processor, len(samples)), classify.processor)
    assert pipeline_accuracy == pytest.approx(hook["zeroshot_combo"], abs=1e-6)  # one image = 0.0104
    assert pipeline_accuracy > 0.85


def test_shipped_demo_model_metrics_hold_on_fresh_images():
    """metrics.json (what the README quotes) is train_demo.py's evaluation; a fresh sample agrees with it."""
    from siglip import AutoModel, AutoProcessor
    from siglip.train.evaluate import build_eval_set, evaluate

    metrics = json.loads((DEMO_MODEL / "metrics.json").read_text())
    assert metrics["held_out"]["zeroshot_combo"] > 0.85  # chance: 1/48
    assert metrics["unseen_combinations"]["zeroshot_combo"] > 0.3  # combinations never seen in training
    assert metrics["unseen_combinations"]["zeroshot_shape"] > 0.5  # chance: 1/6
    model, processor = AutoModel.from_pretrained(DEMO_MODEL), AutoProcessor.from_pretrained(DEMO_MODEL)
    fresh = evaluate(
        model, build_eval_set(ShapesDataset(split="eval", seed=77, image_size=32), processor, 400), processor
    )
    assert abs(fresh["zeroshot_combo"] - metrics["held_out"]["zeroshot_combo"]) < 0.06, fresh
    assert fresh["zeroshot_colour"] > 0.95 and fresh["zeroshot_shape"] > 0.85, fresh
