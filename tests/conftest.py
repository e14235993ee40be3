"""Shared fixtures: tiny model configs, real photos as pixel tensors, and the transformers oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
PHOTOS = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg"]

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

# name -> (text config kwargs, vision config kwargs). The acceptance configurations of the core issue.
TINY_CONFIGS = {
    "odd_3_heads": (
        dict(
            vocab_size=99,
            hidden_size=48,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=3,
            max_position_embeddings=20,
        ),
        dict(
            hidden_size=48,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=3,
            image_size=30,
            patch_size=6,
        ),
    ),
    "projection_differs": (
        dict(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            projection_size=40,
            max_position_embeddings=16,
        ),
        dict(
            hidden_size=40,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
    ),
    "no_vision_head": (
        dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2),
        dict(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=24,
            patch_size=4,
            vision_use_head=False,
        ),
    ),
}


def to_pixel_values(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """The reference preprocessing in plain PIL/numpy: RGB, bicubic resize, /255, (x - 0.5) / 0.5."""
    array = np.asarray(image.convert("RGB").resize((size[1], size[0]), Image.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy((array - 0.5) / 0.5).permute(2, 0, 1)


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    return [Image.open(FIXTURES / name) for name in PHOTOS]


@pytest.fixture(scope="session")
def pixel_batch(photos):
    """Callable: real photos as a (n, 3, height, width) batch."""

    def make(height: int, width: int | None = None, count: int = 3) -> torch.Tensor:
        return torch.stack([to_pixel_values(photo, (height, width or height)) for photo in photos[:count]])

    return make


def random_ids(vocab_size: int, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, length), generator=generator)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


# A complete checkpoint as transformers writes it: tiny random SiglipModel + SentencePiece tokenizer + image
# processor files. Zero-shot pipeline, processor, Auto-class and CLI tests load it from disk.
CHECKPOINT_TEXT = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2)
CHECKPOINT_VISION = dict(
    hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)


@pytest.fixture(scope="session")
def reference_checkpoint(tmp_path_factory) -> Path:
    import transformers
    from spm_model import train_sentencepiece_model

    folder = tmp_path_factory.mktemp("reference_checkpoint")
    tokenizer = transformers.SiglipTokenizer(vocab_file=str(train_sentencepiece_model(folder / "spm")))
    image_processor = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    config = transformers.SiglipConfig(
        text_config={**CHECKPOINT_TEXT, "vocab_size": tokenizer.vocab_size}, vision_config=CHECKPOINT_VISION
    )
    torch.manual_seed(0)
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():  # spread the scores out so that comparisons and rankings mean something
        model.logit_scale.fill_(3.0)
        model.logit_bias.fill_(-1.0)
    model.save_pretrained(folder)
    transformers.SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


# tests/test_isa_matrix.py's results, one line per emulated ISA level, shown at the end of the run.
ISA_MATRIX: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    from siglip.kernels.cpu import cpu_features

    if ISA_MATRIX:
        features = cpu_features()
        terminalreporter.section(f"ISA matrix (this CPU: {features.model}, oneDNN {features.onednn_isa})")
        for line in ISA_MATRIX:
            terminalreporter.write_line(line)
