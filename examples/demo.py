"""The main job, offline: zero-shot classification and embeddings with the demo model, loaded by Hub id.

The model is `models/siglip-demo-shapes`, a small SigLIP we trained from scratch on synthetic coloured shapes
(`examples/train_demo.py` reproduces it; its accuracies are in its metrics.json and docs/training.md). It is not a
general-purpose model: it knows six shapes, eight colours and three backgrounds, nothing else. The demo stores it
in a Hugging Face Hub-layout cache under .cache/hub and runs the `siglip` CLI on it with HF_HUB_OFFLINE=1, the
same code path as `google/siglip-base-patch16-224` from the Hub:

  1. `siglip classify examples/images --labels <48 colour x shape labels>` (the model's own prompt template,
     "a {}", comes from its config.json);
  2. `siglip embed` for the images and for the labels;
  3. a check of the top-1 labels against examples/images/labels.json: the demo exits with 1 if any is wrong.

    python examples/demo.py            # or: make demo
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "siglip-demo-shapes"
IMAGES = ROOT / "examples" / "images"
CACHE = ROOT / ".cache" / "hub"
OUT = ROOT / "demo_out"
MODEL_ID = "siglip-demo/shapes"


def main() -> int:
    from siglip.hub import store_in_cache

    os.environ["HF_HUB_CACHE"] = str(CACHE)
    store_in_cache(MODEL_DIR, MODEL_ID, cache_dir=CACHE)
    os.environ["HF_HUB_OFFLINE"] = "1"  # from here on, everything is read from the cache by id

    from siglip.cli import main as siglip

    expected = json.loads((IMAGES / "labels.json").read_text())
    labels, template = expected["candidate_labels"], expected["hypothesis_template"]
    print(f"== siglip classify {IMAGES} --labels <{len(labels)} labels> --model {MODEL_ID} --top-k 3")
    code = siglip(["classify", str(IMAGES), "--labels", *labels, "--model", MODEL_ID, "--top-k", "3"])
    OUT.mkdir(exist_ok=True)
    print(f"\n== siglip embed {IMAGES} --out {OUT / 'images.npy'}")
    code = code or siglip(["embed", str(IMAGES), "--model", MODEL_ID, "--out", str(OUT / "images.npy")])
    print(f"\n== siglip embed --text <{len(labels)} labels> --out {OUT / 'labels.npy'}")
    prompts = [template.format(label) for label in labels]
    code = code or siglip(["embed", "--text", *prompts, "--model", MODEL_ID, "--out", str(OUT / "labels.npy")])
    return code or check(expected, template)


def check(expected: dict, template: str) -> int:
    """Top-1 of the Python pipeline (with the model's own template) against labels.json; 1 if any is wrong."""
    from siglip import pipeline

    classify = pipeline("zero-shot-image-classification", model=MODEL_ID)
    if classify.default_template != template:
        print(f"the model's template is {classify.default_template!r}, labels.json says {template!r}")
        return 1
    right = 0
    print("\n== top-1 vs the truth (pipeline API)")
    for name, truth in expected["images"].items():
        best = classify(str(IMAGES / name), candidate_labels=expected["candidate_labels"])
        right += best[0]["label"] == truth
        mark = "ok   " if best[0]["label"] == truth else "WRONG"
        print(f"{mark} {name:24s} {best[0]['label']:18s} {best[0]['score']:.3f}")
    print(f"{right}/{len(expected['images'])} correct")
    return 0 if right == len(expected["images"]) else 1


if __name__ == "__main__":
    sys.exit(main())
