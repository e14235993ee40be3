"""Bad checkpoints raise typed errors: never code execution, never a silent partial load."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from conftest import TINY_CONFIGS
from safetensors.torch import load_file, save_file

import siglip

TEXT, VISION = TINY_CONFIGS["no_vision_head"]


@pytest.fixture()
def folder(tmp_path):
    torch.manual_seed(0)
    siglip.SiglipVisionModel(siglip.SiglipVisionConfig(**VISION)).save_pretrained(tmp_path)
    return tmp_path


def load(folder, **kwargs):
    return siglip.SiglipVisionModel.from_pretrained(folder, **kwargs)


def test_truncated_safetensors(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(siglip.CheckpointError, match="not a valid safetensors"):
        load(folder)


def test_garbage_safetensors(folder):
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(siglip.CheckpointError, match="not a valid safetensors"):
        load(folder)


def test_wrong_shape_and_missing_and_unexpected_keys_are_listed(folder):
    state = load_file(folder / "model.safetensors")
    state["post_layernorm.weight"] = torch.ones(7)
    del state["encoder.layers.1.mlp.fc1.bias"]
    state["encoder.layers.9.mlp.fc1.bias"] = torch.ones(3)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(siglip.CheckpointError) as raised:
        load(folder)
    message = str(raised.value)
    assert "missing: encoder.layers.1.mlp.fc1.bias" in message
    assert "unexpected: encoder.layers.9.mlp.fc1.bias" in message
    assert "post_layernorm.weight: checkpoint (7,) vs model (32,)" in message


def test_unknown_model_type(folder):
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "bert"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(siglip.ConfigError, match="model_type 'bert'"):
        load(folder)
    with pytest.raises(siglip.ConfigError, match="model_type 'bert'"):
        siglip.config.config_from_dict(config)


def test_unreadable_config(folder):
    (folder / "config.json").write_text("{not json")
    with pytest.raises(siglip.ConfigError, match="cannot read"):
        load(folder)


class _SideEffect:
    """Unpickling this would create a file: the attack a pickle checkpoint can carry."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_pickle_refused_by_default_and_never_executed(folder, tmp_path_factory):
    marker = tmp_path_factory.mktemp("marker") / "pwned"
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"post_layernorm.weight": _SideEffect(marker)}, handle)
    with pytest.raises(siglip.UnsafeCheckpointError, match="allow_pickle=True"):
        load(folder)
    with pytest.raises(siglip.CheckpointError, match="weights_only=True"):
        load(folder, allow_pickle=True)
    assert not marker.exists()


def test_pickle_of_tensors_loads_when_allowed(folder):
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    model = load(folder, allow_pickle=True)
    assert torch.equal(model.post_layernorm.weight, state["post_layernorm.weight"])


def test_missing_weights_and_missing_folder(folder, tmp_path):
    (folder / "model.safetensors").unlink()
    with pytest.raises(siglip.CheckpointNotFoundError, match="model.safetensors"):
        load(folder)
    with pytest.raises(siglip.CheckpointNotFoundError):
        load(tmp_path / "does-not-exist" / "deeper")


def test_tower_checkpoint_cannot_load_as_two_tower_model(folder):
    with pytest.raises(siglip.ConfigError, match="not a SiglipConfig"):
        siglip.SiglipModel.from_pretrained(folder)
