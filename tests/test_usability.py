"""First-user findings outside the CLI: tokenizer advice, scores without grad, a model's own prompt template,
and fast weight initialisation with the reference's truncated-normal distribution."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import siglip
from siglip.errors import InputError
from siglip.modeling.init import TRUNCATED_STD, truncated_normal_

DEMO = Path(__file__).resolve().parent.parent / "models" / "siglip-demo-shapes"
IMAGE = str(DEMO.parent.parent / "examples" / "images" / "blue_circle.png")


def test_max_length_padding_without_truncation_says_pass_truncation():
    tokenizer = siglip.AutoTokenizer.from_pretrained(DEMO)
    texts = ["a red circle", "a red circle " * 40]
    with pytest.raises(InputError, match=r"pass truncation=True") as raised:
        tokenizer(texts, padding="max_length", return_tensors="pt")
    assert "padding=True or padding='max_length'" not in str(raised.value)
    assert tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt").input_ids.shape[0] == 2


def test_scores_do_not_require_grad_and_template_comes_from_the_model():
    pipe = siglip.pipeline(model=str(DEMO))
    assert pipe.default_template == "a {}"  # config.json: "hypothesis_template"
    scores = pipe.scores([IMAGE], ["blue circle", "red square"])
    assert not scores.requires_grad and scores.numpy().shape == (1, 2)
    assert torch.equal(scores, pipe.scores([IMAGE], ["blue circle", "red square"], "a {}"))
    assert pipe(IMAGE, candidate_labels=["blue circle", "red square"])[0]["label"] == "blue circle"
    with pytest.raises(InputError, match="hypothesis_template"):
        pipe(IMAGE, candidate_labels=["x"], hypothesis_template="no slot")


def test_models_without_a_template_use_the_reference_default():
    model = siglip.SiglipModel(siglip.SiglipConfig(text_config=dict(hidden_size=16, intermediate_size=16,
        num_hidden_layers=1, num_attention_heads=2), vision_config=dict(hidden_size=16, intermediate_size=16,
        num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8)))  # fmt: skip
    from siglip.zero_shot import DEFAULT_TEMPLATE, model_template

    assert model_template(model) == DEFAULT_TEMPLATE == "This is a photo of {}."


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_truncated_normal_matches_the_distribution(dtype):
    """The inverse-CDF draw: within +-2 scale, std 0.8796 * scale, CDF of the truncated normal (KS < 0.01)."""
    torch.manual_seed(0)
    scale = 0.05
    x = truncated_normal_(torch.empty(400, 500, dtype=dtype), scale).float().flatten()
    assert x.abs().max() <= 2 * scale * (1 + 1e-2)
    assert abs(x.mean()) < 1e-3 and abs(x.std() / scale - TRUNCATED_STD) < 5e-3
    points = torch.linspace(-1.9, 1.9, 39)
    phi = torch.special.ndtr
    expected = (phi(points) - phi(torch.tensor(-2.0))) / (phi(torch.tensor(2.0)) - phi(torch.tensor(-2.0)))
    empirical = (x[None, :] <= points[:, None] * scale).float().mean(1)
    assert (empirical - expected).abs().max() < 1e-2


def test_model_init_lecun_normal_statistics_on_a_small_config():
    """Linear/conv weights outside attention and MLP: truncated at 2 std' with std 1/sqrt(fan_in)."""
    torch.manual_seed(0)
    config = siglip.SiglipConfig(
        text_config=dict(hidden_size=256, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         projection_size=256),
        vision_config=dict(hidden_size=256, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
    )  # fmt: skip
    model = siglip.SiglipModel(config)
    for weight in (model.text_model.head.weight, model.vision_model.embeddings.patch_embedding.weight):
        fan_in = weight[0].numel()
        std = 1 / math.sqrt(fan_in)
        assert weight.abs().max() <= 2 * std / TRUNCATED_STD * (1 + 1e-5)
        assert abs(weight.std().item() / std - 1) < 0.03
