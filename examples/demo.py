"""The main job, offline: zero-shot scores and embeddings from a model loaded by Hub id.

No pretrained weights can be downloaded on this machine, so this demo builds a tiny SigLIP model with
RANDOM weights (and a SentencePiece vocabulary trained on a few sentences), stores it in a Hugging Face
Hub-layout cache under .cache/hub, and then runs the `siglip` CLI on it with HF_HUB_OFFLINE=1, exactly as it
would run on `google/siglip-base-patch16-224`. The scores are meaningless; every code path is the real one.

    python examples/demo.py            # or: make demo
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "hub"
OUT = ROOT / "demo_out"
MODEL_ID = "siglip-demo/random-tiny"
IMAGES = ROOT / "tests" / "fixtures"
LABELS = ["a cat", "a horse", "a rocket", "a cup of coffee", "an astronaut", "a motorcycle"]
SENTENCES = [f"this is a photo of {label}." for label in LABELS] + [
    "a photo of a cat sitting on a sofa",
    "two dogs playing in the snow",
    "the rocket launches at dawn",
    "coffee in a white cup on a wooden table",
    "an astronaut floating in space",
]


def train_vocabulary(folder: Path) -> None:
    """A ~120-piece unigram SentencePiece model in SigLIP's layout (<pad>=0, </s>=1, <unk>=2)."""
    from siglip.vocabulary import train_spiece_model

    with tempfile.TemporaryDirectory() as scratch:
        model = train_spiece_model(SENTENCES * 20, f"{scratch}/spiece", 120, hard_vocab_limit=False)
        (folder / "spiece.model").write_bytes(Path(model).read_bytes())


def build_random_checkpoint() -> None:
    """Save a random tiny SigLIP + its processor files, then place them in the Hub cache as MODEL_ID."""
    import torch

    from siglip import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer
    from siglip.hub import store_in_cache

    torch.manual_seed(0)
    config = SiglipConfig(
        text_config={"vocab_size": 120, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 64},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 224, "patch_size": 32},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        SiglipModel(config).save_pretrained(folder)
        train_vocabulary(folder)
        tokenizer = SiglipTokenizer(vocab_file=str(folder / "spiece.model"))
        SiglipProcessor(SiglipImageProcessor(), tokenizer).save_pretrained(folder)
        store_in_cache(folder, MODEL_ID, cache_dir=CACHE)


def main() -> int:
    os.environ["HF_HUB_CACHE"] = str(CACHE)
    if not (CACHE / ("models--" + MODEL_ID.replace("/", "--"))).exists():
        build_random_checkpoint()
    os.environ["HF_HUB_OFFLINE"] = "1"  # from here on, everything is read from the cache by id

    from siglip.cli import main as siglip

    images = str(IMAGES)
    print(f"== siglip classify {images} --labels ... --model {MODEL_ID}   (RANDOM weights: scores are noise)")
    code = siglip(["classify", images, "--labels", *LABELS, "--model", MODEL_ID, "--top-k", "2", "--skip-errors"])
    OUT.mkdir(exist_ok=True)
    print(f"\n== siglip embed {images} --out {OUT / 'images.npy'}")
    code = code or siglip(["embed", images, "--model", MODEL_ID, "--out", str(OUT / "images.npy"), "--skip-errors"])
    print(f"\n== siglip embed --text ... --out {OUT / 'labels.npy'}")
    code = code or siglip(["embed", "--text", *LABELS, "--model", MODEL_ID, "--out", str(OUT / "labels.npy")])
    return code


if __name__ == "__main__":
    sys.exit(main())
