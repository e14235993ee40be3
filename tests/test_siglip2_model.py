"""SigLIP2 (NaFlex) parity with transformers on random weights, in both checkpoint directions.

Inputs come from transformers' Siglip2 image processor (PIL backend) on real photos at 64, 256 and 576 patches,
and from synthesized patch sequences covering 1:8 and 8:1 grids, one-patch images and batches mixing them. The
packed path is checked against the padded one, and a NaFlex checkpoint is loaded from a Hub-layout cache offline.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers
from conftest import FIXTURES, max_diff, random_ids
from PIL import Image
from test_hub_loading import run_offline

from siglip.config import CONFIG_CLASSES, Siglip2Config, Siglip2VisionConfig
from siglip.errors import InputError
from siglip.hub import store_in_cache
from siglip.modeling.siglip2 import (
    Siglip2ForImageClassification,
    Siglip2Model,
    Siglip2TextModel,
    Siglip2VisionModel,
)

TOL = 1e-5
TEXT = dict(vocab_size=99, hidden_size=48, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3)
# Patch 16 for processor-made inputs; a 4x4 position grid, resized up to every image's grid.
VISION_P16 = dict(hidden_size=48, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3, num_patches=16)
# Patch 4 for synthesized inputs; an 8x8 position grid.
VISION_P4 = dict(
    hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4, patch_size=4, num_patches=64
)


def perturb_(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)


def reference_checkpoint(folder, vision_kwargs, cls=transformers.Siglip2Model, seed=0, **config_kwargs):
    """Random transformers model, saved to `folder`; returns it reloaded with eager attention."""
    torch.manual_seed(seed)
    config = transformers.Siglip2Config(text_config=TEXT, vision_config=vision_kwargs, **config_kwargs)
    model = cls(config).eval()
    perturb_(model)
    if hasattr(model, "logit_scale"):
        with torch.no_grad():
            model.logit_scale.fill_(2.3)
            model.logit_bias.fill_(-1.7)
    model.save_pretrained(folder)
    return cls.from_pretrained(folder, attn_implementation="eager").eval()


def processor_inputs(max_num_patches: int) -> dict[str, torch.Tensor]:
    """Real photos, 1:8 and 8:1 crops and a 5x5 image through the reference NaFlex processor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil
    photo = Image.open(FIXTURES / "chelsea.png").convert("RGB")
    images = [
        photo,
        Image.open(FIXTURES / "astronaut.png").convert("RGB"),
        photo.crop((0, 0, 296, 37)),  # 8:1
        photo.crop((0, 0, 37, 296)),  # 1:8
        photo.resize((5, 5)),  # smaller than one patch
    ]
    processor = Siglip2ImageProcessorPil()
    return dict(processor(images=images, max_num_patches=max_num_patches, return_tensors="pt"))


def synthetic_inputs(grids: list[tuple[int, int]], length: int, patch_size: int = 4, seed: int = 0):
    """Random patch sequences padded to `length`, the processor's layout (valid rows first, zero padding)."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(len(grids), length, 3 * patch_size**2, generator=generator)
    mask = torch.zeros(len(grids), length, dtype=torch.int32)
    for row, (height, width) in enumerate(grids):
        mask[row, : height * width] = 1
    return dict(
        pixel_values=pixel_values * mask[..., None],
        pixel_attention_mask=mask,
        spatial_shapes=torch.tensor(grids, dtype=torch.long),
    )


# 1x1 (smaller than a patch), 1:8, 8:1, full 8x8, odd 3x5, repeated shapes.
MIXED_GRIDS = [(1, 1), (2, 16), (16, 2), (8, 8), (3, 5), (2, 16), (1, 1)]


def assert_outputs_equal(mine, theirs, keys=("last_hidden_state", "pooler_output")) -> None:
    for key in keys:
        assert max_diff(mine[key], theirs[key]) <= TOL, key
    for name in ("hidden_states", "attentions"):
        if getattr(theirs, name, None) is not None and getattr(mine, name, None) is not None:
            assert len(mine[name]) == len(theirs[name]), name
            for a, b in zip(mine[name], theirs[name]):
                assert max_diff(a, b) <= TOL, name


def compare_two_tower(ours, ref, vision_inputs) -> None:
    batch = vision_inputs["pixel_values"].shape[0]
    inputs = dict(vision_inputs, input_ids=random_ids(TEXT["vocab_size"], batch, 16))
    flags = dict(output_hidden_states=True, output_attentions=True, return_loss=True)
    with torch.no_grad():
        mine, theirs = ours(**inputs, **flags), ref(**inputs, **flags)
        for key in ("loss", "logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
            assert max_diff(mine[key], theirs[key]) <= TOL, key
        assert_outputs_equal(mine.vision_model_output, theirs.vision_model_output)
        assert_outputs_equal(mine.text_model_output, theirs.text_model_output)
        image_features = ours.get_image_features(**vision_inputs)
        assert isinstance(image_features, torch.Tensor)
        assert max_diff(image_features, theirs.vision_model_output.pooler_output) <= TOL
        packed_features = ours.get_image_features(**vision_inputs, packed=True)
        assert max_diff(packed_features, theirs.vision_model_output.pooler_output) <= TOL
        text_features = ours.get_text_features(input_ids=inputs["input_ids"])
        assert max_diff(text_features, theirs.text_model_output.pooler_output) <= TOL


@pytest.mark.parametrize("max_num_patches", [64, 256, 576])
def test_transformers_checkpoint_on_processor_inputs(max_num_patches, tmp_path):
    ref = reference_checkpoint(tmp_path, VISION_P16)
    ours = Siglip2Model.from_pretrained(tmp_path)
    inputs = processor_inputs(max_num_patches)
    assert inputs["pixel_values"].shape[1] == max_num_patches
    compare_two_tower(ours, ref, inputs)


def test_transformers_checkpoint_on_synthetic_mixed_grids(tmp_path):
    ref = reference_checkpoint(tmp_path, VISION_P4)
    ours = Siglip2Model.from_pretrained(tmp_path, attn_implementation="eager")
    compare_two_tower(ours, ref, synthetic_inputs(MIXED_GRIDS, length=72))
    sdpa = Siglip2Model.from_pretrained(tmp_path)
    compare_two_tower(sdpa, ref, synthetic_inputs([(8, 1), (1, 8), (6, 6)], length=36, seed=2))


def test_our_checkpoint_loads_in_transformers(tmp_path):
    torch.manual_seed(5)
    ours = Siglip2Model(Siglip2Config(text_config=TEXT, vision_config=VISION_P4)).eval()
    perturb_(ours, seed=6)
    ours.save_pretrained(tmp_path)
    ref = transformers.Siglip2Model.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert set(ref.state_dict()) == set(ours.state_dict())
    compare_two_tower(ours, ref, synthetic_inputs(MIXED_GRIDS, length=64, seed=3))


def test_towers_from_full_and_standalone_checkpoints(tmp_path):
    reference_checkpoint(tmp_path / "full", VISION_P4)
    vision_inputs = synthetic_inputs(MIXED_GRIDS, length=64)
    text_inputs = dict(input_ids=random_ids(TEXT["vocab_size"], 3, 12))
    for ours_cls, ref_cls, inputs in (
        (Siglip2VisionModel, transformers.Siglip2VisionModel, vision_inputs),
        (Siglip2TextModel, transformers.Siglip2TextModel, text_inputs),
    ):
        tower = ref_cls.from_pretrained(tmp_path / "full").eval()
        tower.save_pretrained(tmp_path / ref_cls.__name__)
        with torch.no_grad():
            expected = tower(**inputs, output_hidden_states=True)
            for source in ("full", ref_cls.__name__):
                ours = ours_cls.from_pretrained(tmp_path / source)
                assert_outputs_equal(ours(**inputs, output_hidden_states=True), expected)
        ours.save_pretrained(tmp_path / f"ours-{ref_cls.__name__}")
        reloaded = ref_cls.from_pretrained(tmp_path / f"ours-{ref_cls.__name__}").eval()
        with torch.no_grad():
            assert max_diff(reloaded(**inputs).last_hidden_state, expected.last_hidden_state) <= TOL


@pytest.mark.parametrize(
    "num_labels, problem_type, labels",
    [
        (3, None, torch.tensor([0, 2, 1, 1, 0, 2, 1])),
        (1, None, torch.linspace(-1, 2, 7)),
        (3, "multi_label_classification", (torch.arange(21).reshape(7, 3) % 2).float()),
    ],
)
def test_image_classification_parity(num_labels, problem_type, labels, tmp_path):
    ref = reference_checkpoint(
        tmp_path,
        VISION_P4,
        cls=transformers.Siglip2ForImageClassification,
        num_labels=num_labels,
        problem_type=problem_type,
    )
    ours = Siglip2ForImageClassification.from_pretrained(tmp_path)
    inputs = synthetic_inputs(MIXED_GRIDS, length=72)
    with torch.no_grad():
        theirs = ref(**inputs, labels=labels, output_hidden_states=True)
        for packed in (False, True):
            mine = ours(**inputs, labels=labels, output_hidden_states=True, packed=packed)
            assert max_diff(mine.logits, theirs.logits) <= TOL
            assert max_diff(mine.loss, theirs.loss) <= TOL
        unmasked = dict(inputs, pixel_attention_mask=None)
        assert max_diff(ours(**unmasked).logits, ref(**unmasked).logits) <= TOL


def test_packed_equals_padded_on_valid_rows_and_zero_on_padding():
    torch.manual_seed(0)
    model = Siglip2VisionModel(Siglip2VisionConfig(**VISION_P4)).eval()
    perturb_(model)
    inputs = synthetic_inputs(MIXED_GRIDS, length=64, seed=4)
    valid = inputs["pixel_attention_mask"].bool()
    with torch.no_grad():
        padded = model(**inputs, output_hidden_states=True)
        packed = model(**inputs, output_hidden_states=True, packed=True)
    assert max_diff(packed.pooler_output, padded.pooler_output) <= TOL
    for mine, theirs in zip(
        (packed.last_hidden_state, *packed.hidden_states), (padded.last_hidden_state, *padded.hidden_states)
    ):
        assert max_diff(mine[valid], theirs[valid]) <= TOL
        assert not mine[~valid].any()
    assert len(packed.hidden_states) == len(padded.hidden_states)


def test_packed_path_input_errors():
    model = Siglip2VisionModel(Siglip2VisionConfig(**VISION_P4)).eval()
    inputs = synthetic_inputs([(2, 2), (3, 3)], length=12)
    with pytest.raises(InputError, match="attention maps"):
        model(**inputs, packed=True, output_attentions=True)
    holes = inputs["pixel_attention_mask"].clone()
    holes[0, 1] = 0
    with pytest.raises(InputError, match="ones then zeros"):
        model(**dict(inputs, pixel_attention_mask=holes), packed=True)
    with pytest.raises(InputError, match="spatial_shapes"):
        model(inputs["pixel_values"], inputs["pixel_attention_mask"], torch.tensor([[4, 4], [3, 3]]))
    with pytest.raises(InputError, match="pixel_values"):
        model(inputs["pixel_values"][..., :10], inputs["pixel_attention_mask"], inputs["spatial_shapes"])


def test_position_grid_resized_once_per_shape_and_cached(monkeypatch):
    model = Siglip2VisionModel(Siglip2VisionConfig(**VISION_P4)).eval()
    embeddings = model.embeddings
    calls = []
    original = torch.nn.functional.interpolate
    monkeypatch.setattr(
        torch.nn.functional, "interpolate", lambda *a, **k: calls.append(k["size"]) or original(*a, **k)
    )
    inputs = synthetic_inputs(MIXED_GRIDS, length=64)
    with torch.no_grad():
        first = model(**inputs).pooler_output
        assert sorted(calls) == sorted(set(MIXED_GRIDS))  # 7 images, 5 shapes: 5 resizes
        assert max_diff(model(**inputs).pooler_output, first) == 0
        assert len(calls) == 5  # second call served from the cache
        embeddings.position_embedding.weight.mul_(1.5)  # in-place update invalidates the cache
        assert max_diff(model(**inputs).pooler_output, first) > 0
        assert len(calls) == 10
    # With gradients the cache is bypassed and the table receives them.
    model.train()
    model(**inputs).pooler_output.sum().backward()
    assert embeddings.position_embedding.weight.grad.abs().sum() > 0


def test_configs_round_trip_with_transformers():
    for name in ("siglip2", "siglip2_text_model", "siglip2_vision_model"):
        assert CONFIG_CLASSES[name].model_type == name
    reference = transformers.Siglip2Config(text_config=TEXT, vision_config=VISION_P4).to_dict()
    ours = Siglip2Config.from_dict(reference)
    assert ours.vision_config.num_patches == 64 and ours.vision_config.patch_size == 4
    written = ours.to_dict()
    assert "image_size" not in written["vision_config"]
    for key in ("text_config", "vision_config"):
        for field, value in written[key].items():
            assert reference[key][field] == value, (key, field)
    assert Siglip2VisionConfig().num_patches == 256
    with pytest.raises(ValueError, match="perfect square"):
        Siglip2VisionConfig(num_patches=250)


def test_naflex_checkpoint_from_hub_cache_offline(tmp_path):
    ref = reference_checkpoint(tmp_path / "model", VISION_P4)
    store_in_cache(tmp_path / "model", "google/tiny-siglip2-naflex", tmp_path / "hub")
    inputs = synthetic_inputs(MIXED_GRIDS, length=72)
    torch.save(inputs, tmp_path / "inputs.pt")
    code = f"""
        import torch
        from siglip.modeling.siglip2 import Siglip2Model, Siglip2VisionModel
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        model = Siglip2Model.from_pretrained("google/tiny-siglip2-naflex")
        vision = Siglip2VisionModel.from_pretrained("google/tiny-siglip2-naflex", local_files_only=True)
        with torch.no_grad():
            torch.save([model.get_image_features(**inputs), vision(**inputs).pooler_output], {str(tmp_path / "out.pt")!r})
    """
    result = run_offline(code, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = ref.get_image_features(**inputs).pooler_output
    for features in torch.load(tmp_path / "out.pt"):
        assert max_diff(features, expected) <= TOL
