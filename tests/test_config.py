"""Configs: documented defaults, the reference's config.json format in both directions, unknown keys."""

from __future__ import annotations

import json

import pytest
import transformers

import siglip

DOCUMENTED_TEXT_DEFAULTS = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=64,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
    attention_dropout=0.0,
    pad_token_id=1,
    bos_token_id=49406,
    eos_token_id=49407,
    projection_size=768,
)
DOCUMENTED_VISION_DEFAULTS = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=16,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
    attention_dropout=0.0,
    vision_use_head=True,
)


def test_documented_defaults():
    text, vision, both = siglip.SiglipTextConfig(), siglip.SiglipVisionConfig(), siglip.SiglipConfig()
    for key, value in DOCUMENTED_TEXT_DEFAULTS.items():
        assert getattr(text, key) == value == getattr(both.text_config, key), key
    for key, value in DOCUMENTED_VISION_DEFAULTS.items():
        assert getattr(vision, key) == value == getattr(both.vision_config, key), key
    assert both.initializer_factor == 1.0 and both.num_labels == 2 and both.problem_type is None
    assert both.id2label == {0: "LABEL_0", 1: "LABEL_1"} and both.label2id == {"LABEL_0": 0, "LABEL_1": 1}


def test_from_text_vision_configs():
    config = siglip.SiglipConfig.from_text_vision_configs(
        siglip.SiglipTextConfig(hidden_size=64, num_attention_heads=4), {"patch_size": 14, "image_size": 28}
    )
    assert config.text_config.hidden_size == 64 and config.text_config.projection_size == 64
    assert config.vision_config.patch_size == 14


@pytest.mark.parametrize("name", ["composite", "text", "vision"])
def test_reference_reads_our_config_and_we_read_its(name, tmp_path):
    ours = {
        "composite": siglip.SiglipConfig(
            text_config={"vocab_size": 300, "projection_size": 40},
            vision_config={"vision_use_head": False},
            num_labels=3,
            problem_type="multi_label_classification",
        ),
        "text": siglip.SiglipTextConfig(vocab_size=300, projection_size=40),
        "vision": siglip.SiglipVisionConfig(image_size=384, patch_size=14),
    }[name]
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    assert theirs.model_type == ours.model_type
    ref_dict, our_dict = theirs.to_dict(), ours.to_dict()
    for key, value in our_dict.items():
        if isinstance(value, dict) and key.endswith("_config"):
            for sub_key, sub_value in value.items():
                assert ref_dict[key][sub_key] == sub_value, (key, sub_key)
        elif key != "id2label":
            assert ref_dict[key] == value, key
    assert theirs.num_labels == ours.num_labels
    theirs.save_pretrained(tmp_path / "theirs")
    reloaded = type(ours).from_pretrained(tmp_path / "theirs")
    assert reloaded == ours


def test_unknown_keys_survive_round_trip(tmp_path):
    config = siglip.SiglipConfig(text_config={"custom_text_key": [1, 2]}, my_project_key={"a": 1})
    assert config.my_project_key == {"a": 1}
    config.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["my_project_key"] == {"a": 1} and raw["text_config"]["custom_text_key"] == [1, 2]
    again = siglip.SiglipConfig.from_pretrained(tmp_path)
    assert again.my_project_key == {"a": 1} and again.text_config.custom_text_key == [1, 2]
    assert again.to_dict() == config.to_dict()


def test_tower_config_from_composite_checkpoint(tmp_path):
    siglip.SiglipConfig(vision_config={"image_size": 384}).save_pretrained(tmp_path)
    assert siglip.SiglipVisionConfig.from_pretrained(tmp_path).image_size == 384
    assert siglip.SiglipTextConfig.from_pretrained(tmp_path, vocab_size=10).vocab_size == 10


def test_invalid_configs():
    with pytest.raises(siglip.ConfigError, match="divisible"):
        siglip.SiglipTextConfig(hidden_size=50, num_attention_heads=3)
    with pytest.raises(siglip.ConfigError, match="problem_type"):
        siglip.SiglipConfig(problem_type="ranking")
    with pytest.raises(siglip.ConfigError, match="hidden_act"):
        siglip.SiglipModel(siglip.SiglipConfig(text_config={"hidden_act": "swish2", "num_hidden_layers": 1}))
    config = siglip.SiglipConfig()
    config.num_labels = 5
    assert config.id2label[4] == "LABEL_4" and config.label2id["LABEL_4"] == 4
