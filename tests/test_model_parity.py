"""Parity with transformers on random weights and real photos, in both checkpoint directions."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import TINY_CONFIGS, max_diff, random_ids

import siglip

TOL = 1e-5


def reference_model(text_kwargs, vision_kwargs, seed=0, cls=transformers.SiglipModel, **config_kwargs):
    torch.manual_seed(seed)
    config = transformers.SiglipConfig(text_config=text_kwargs, vision_config=vision_kwargs, **config_kwargs)
    model = cls(config).eval()
    with torch.no_grad():  # the reference initialises scale and bias to 0: make them informative
        if hasattr(model, "logit_scale"):
            model.logit_scale.fill_(2.3)
            model.logit_bias.fill_(-1.7)
    return model


def perturb_(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every parameter (including zero-initialised biases and LayerNorms) a random offset."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)


def assert_tower_outputs_equal(ours, ref, with_attentions: bool) -> None:
    assert max_diff(ours.last_hidden_state, ref.last_hidden_state) <= TOL
    if ref.pooler_output is None:
        assert ours.pooler_output is None
    else:
        assert max_diff(ours.pooler_output, ref.pooler_output) <= TOL
    assert len(ours.hidden_states) == len(ref.hidden_states)
    for mine, theirs in zip(ours.hidden_states, ref.hidden_states):
        assert max_diff(mine, theirs) <= TOL
    if with_attentions:
        assert len(ours.attentions) == len(ref.attentions)
        for mine, theirs in zip(ours.attentions, ref.attentions):
            assert max_diff(mine, theirs) <= TOL


def compare_two_tower(ours, ref, text_kwargs, vision_kwargs, pixel_batch) -> None:
    size = vision_kwargs["image_size"]
    pixel_values = pixel_batch(size, count=3)
    input_ids = random_ids(text_kwargs["vocab_size"], 3, text_kwargs.get("max_position_embeddings", 64))
    inputs = dict(input_ids=input_ids, pixel_values=pixel_values, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        if vision_kwargs.get("vision_use_head", True):
            mine, theirs = ours(**inputs, return_loss=True), ref(**inputs, return_loss=True)
            for key in ("loss", "logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
                assert max_diff(mine[key], theirs[key]) <= TOL, key
            assert_tower_outputs_equal(mine.vision_model_output, theirs.vision_model_output, True)
            assert_tower_outputs_equal(mine.text_model_output, theirs.text_model_output, True)
            text_features = ours.get_text_features(input_ids=input_ids)
            assert max_diff(text_features, theirs.text_model_output.pooler_output) <= TOL
            image_features = ours.get_image_features(pixel_values=pixel_values)
            assert max_diff(image_features, theirs.vision_model_output.pooler_output) <= TOL
        else:
            vision = dict(pixel_values=pixel_values, output_hidden_states=True, output_attentions=True)
            assert_tower_outputs_equal(ours.vision_model(**vision), ref.vision_model(**vision), True)
            text = dict(input_ids=input_ids, output_hidden_states=True, output_attentions=True)
            assert_tower_outputs_equal(ours.text_model(**text), ref.text_model(**text), True)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_transformers_checkpoint_loads_with_identical_outputs(name, tmp_path, pixel_batch):
    text_kwargs, vision_kwargs = TINY_CONFIGS[name]
    ref = reference_model(text_kwargs, vision_kwargs)
    perturb_(ref)
    ref.save_pretrained(tmp_path)
    ours = siglip.SiglipModel.from_pretrained(tmp_path)
    ref = transformers.SiglipModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    compare_two_tower(ours, ref, text_kwargs, vision_kwargs, pixel_batch)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_our_checkpoint_loads_in_transformers_with_identical_outputs(name, tmp_path, pixel_batch):
    text_kwargs, vision_kwargs = TINY_CONFIGS[name]
    torch.manual_seed(3)
    ours = siglip.SiglipModel(siglip.SiglipConfig(text_config=text_kwargs, vision_config=vision_kwargs)).eval()
    perturb_(ours, seed=4)
    ours.save_pretrained(tmp_path)
    ref = transformers.SiglipModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    compare_two_tower(ours, ref, text_kwargs, vision_kwargs, pixel_batch)


def test_full_size_base_patch16_224(tmp_path, pixel_batch):
    """The default config (google/siglip-base-patch16-224 layout, 203M parameters) end to end."""
    ref = reference_model({}, {})
    ref.save_pretrained(tmp_path)
    ours = siglip.SiglipModel.from_pretrained(tmp_path)
    pixel_values = pixel_batch(224, count=2)
    input_ids = random_ids(32000, 2, 64)
    with torch.no_grad():
        mine = ours(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
        theirs = ref(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    for key in ("loss", "logits_per_image", "text_embeds", "image_embeds"):
        assert max_diff(mine[key], theirs[key]) <= TOL, key
    assert max_diff(mine.vision_model_output.last_hidden_state, theirs.vision_model_output.last_hidden_state) <= TOL
    assert max_diff(mine.text_model_output.last_hidden_state, theirs.text_model_output.last_hidden_state) <= TOL


def test_tower_models_match_reference_towers(tmp_path, pixel_batch):
    """SiglipTextModel / SiglipVisionModel from a full checkpoint, and from their own standalone checkpoints."""
    text_kwargs, vision_kwargs = TINY_CONFIGS["odd_3_heads"]
    ref = reference_model(text_kwargs, vision_kwargs)
    perturb_(ref)
    ref.save_pretrained(tmp_path / "full")
    pixel_values = pixel_batch(vision_kwargs["image_size"])
    input_ids = random_ids(text_kwargs["vocab_size"], 3, 12)
    for ours_cls, ref_cls, inputs in (
        (siglip.SiglipVisionModel, transformers.SiglipVisionModel, dict(pixel_values=pixel_values)),
        (siglip.SiglipTextModel, transformers.SiglipTextModel, dict(input_ids=input_ids)),
    ):
        reference_tower = ref_cls.from_pretrained(tmp_path / "full").eval()
        reference_tower.save_pretrained(tmp_path / ref_cls.__name__)
        with torch.no_grad():
            expected = reference_tower(**inputs, output_hidden_states=True)
            for source in ("full", ref_cls.__name__):
                ours = ours_cls.from_pretrained(tmp_path / source)
                assert_tower_outputs_equal(ours(**inputs, output_hidden_states=True), expected, False)
        ours.save_pretrained(tmp_path / f"ours-{ref_cls.__name__}")
        reloaded = ref_cls.from_pretrained(tmp_path / f"ours-{ref_cls.__name__}").eval()
        with torch.no_grad():
            assert max_diff(reloaded(**inputs).last_hidden_state, expected.last_hidden_state) <= TOL


@pytest.mark.parametrize(
    "num_labels, problem_type, labels",
    [
        (3, None, torch.tensor([0, 2, 1])),
        (1, None, torch.tensor([0.5, -1.0, 2.0])),
        (3, "multi_label_classification", torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0]])),
        (4, "regression", torch.randn(3, 4, generator=torch.Generator().manual_seed(0))),
    ],
)
def test_image_classification_parity(num_labels, problem_type, labels, tmp_path, pixel_batch):
    text_kwargs, vision_kwargs = TINY_CONFIGS["projection_differs"]
    ref = reference_model(
        text_kwargs,
        vision_kwargs,
        cls=transformers.SiglipForImageClassification,
        num_labels=num_labels,
        problem_type=problem_type,
    )
    perturb_(ref)
    ref.save_pretrained(tmp_path)
    ours = siglip.SiglipForImageClassification.from_pretrained(tmp_path)
    ref = transformers.SiglipForImageClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    pixel_values = pixel_batch(vision_kwargs["image_size"])
    with torch.no_grad():
        mine = ours(pixel_values=pixel_values, labels=labels, output_hidden_states=True, output_attentions=True)
        theirs = ref(pixel_values=pixel_values, labels=labels, output_hidden_states=True, output_attentions=True)
    assert max_diff(mine.logits, theirs.logits) <= TOL
    assert max_diff(mine.loss, theirs.loss) <= TOL
    for a, b in zip(mine.hidden_states + mine.attentions, theirs.hidden_states + theirs.attentions):
        assert max_diff(a, b) <= TOL


def test_classifier_over_two_tower_checkpoint_is_initialised_with_warning(tmp_path, pixel_batch):
    text_kwargs, vision_kwargs = TINY_CONFIGS["odd_3_heads"]
    reference_model(text_kwargs, vision_kwargs).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="newly initialized.*classifier"):
        model = siglip.SiglipForImageClassification.from_pretrained(tmp_path)
    assert model.classifier.weight.device.type == "cpu" and torch.isfinite(model.classifier.weight).all()
    logits = model(pixel_values=pixel_batch(vision_kwargs["image_size"])).logits
    assert logits.shape == (3, 2)


def test_interpolate_pos_encoding_non_square(tmp_path, pixel_batch):
    text_kwargs, vision_kwargs = TINY_CONFIGS["odd_3_heads"]
    ref = reference_model(text_kwargs, vision_kwargs)
    perturb_(ref)
    ref.save_pretrained(tmp_path)
    ours = siglip.SiglipModel.from_pretrained(tmp_path)
    for height, width in ((42, 66), (18, 30), (30, 30)):
        pixel_values = pixel_batch(height, width)
        with torch.no_grad():
            mine = ours.vision_model(pixel_values, interpolate_pos_encoding=True)
            theirs = ref.vision_model(pixel_values, interpolate_pos_encoding=True)
        assert max_diff(mine.last_hidden_state, theirs.last_hidden_state) <= TOL
        assert max_diff(mine.pooler_output, theirs.pooler_output) <= TOL
    with pytest.raises(siglip.InputError, match="interpolate_pos_encoding"):
        ours.vision_model(pixel_batch(42, 66))


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_padded_attention_mask(implementation, tmp_path):
    text_kwargs, vision_kwargs = TINY_CONFIGS["odd_3_heads"]
    ref = reference_model(text_kwargs, vision_kwargs)
    perturb_(ref)
    ref.save_pretrained(tmp_path)
    ours = siglip.SiglipTextModel.from_pretrained(tmp_path, attn_implementation=implementation)
    ref = transformers.SiglipTextModel.from_pretrained(tmp_path, attn_implementation=implementation).eval()
    input_ids = random_ids(text_kwargs["vocab_size"], 3, 9)
    attention_mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])
    with torch.no_grad():
        mine = ours(input_ids=input_ids, attention_mask=attention_mask)
        theirs = ref(input_ids=input_ids, attention_mask=attention_mask)
    assert max_diff(mine.last_hidden_state, theirs.last_hidden_state) <= TOL
    assert max_diff(mine.pooler_output, theirs.pooler_output) <= TOL


def test_eager_and_sdpa_agree(tmp_path, pixel_batch):
    text_kwargs, vision_kwargs = TINY_CONFIGS["projection_differs"]
    ours = siglip.SiglipModel(siglip.SiglipConfig(text_config=text_kwargs, vision_config=vision_kwargs)).eval()
    perturb_(ours)
    ours.save_pretrained(tmp_path)
    eager = siglip.SiglipModel.from_pretrained(tmp_path, attn_implementation="eager")
    assert eager.config.attn_implementation == "eager"
    inputs = dict(
        input_ids=random_ids(text_kwargs["vocab_size"], 3, 16),
        pixel_values=pixel_batch(vision_kwargs["image_size"]),
        attention_mask=torch.tensor([[1] * 16, [1] * 10 + [0] * 6, [1] * 16]),
    )
    with torch.no_grad():
        a, b = ours(**inputs, return_loss=True), eager(**inputs, return_loss=True)
    for key in ("loss", "logits_per_image", "text_embeds", "image_embeds"):
        assert max_diff(a[key], b[key]) <= TOL
    assert max_diff(a.vision_model_output.last_hidden_state, b.vision_model_output.last_hidden_state) <= TOL
