"""Hostile checkpoints and model names: training resume files, mistyped local model paths."""

from __future__ import annotations

import pickle

import pytest
import torch
from test_train import setup_dir, tiny_config  # noqa: F401 - setup_dir is a fixture

import siglip
from siglip.errors import CheckpointError, CheckpointNotFoundError
from siglip.train import checkpoint as ckpt
from siglip.train import train


class _Code:
    """Unpickling this would create a file: code in a checkpoint."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_resume_file_holding_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "last.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": _Code(marker)}, handle)
    with pytest.raises(CheckpointError, match="not run"):
        ckpt.load_checkpoint(path)
    assert not marker.exists()


def test_resume_file_without_model_names_what_is_missing(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"optimizer": {}, "scheduler": {}, "step": 1, "batches_seen": 1, "rng": []}, path)
    with pytest.raises(CheckpointError, match="'model'"):
        ckpt.load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not a dict"):
        ckpt.load_checkpoint(path)


def test_stale_temporary_from_a_killed_write_is_removed_at_start(setup_dir, tmp_path):  # noqa: F811
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = folder / ".last.pt.k1ll3d.tmp"  # what atomic_save leaves when killed between mkstemp and os.replace
    stale.write_bytes(b"partial")
    train(tiny_config(setup_dir, tmp_path, steps=1, warmup_steps=1))
    assert not stale.exists() and not list(folder.glob(".last.pt.*.tmp"))


# ---- mistyped local paths ----------------------------------------------------------------------------------


def test_mistyped_relative_model_path_says_no_such_folder(tmp_path, monkeypatch):
    (tmp_path / "models" / "siglip-demo-shapes").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="no folder models/siglip-demo-shape ") as info:
        siglip.SiglipModel.from_pretrained("models/siglip-demo-shape")
    assert "siglip-demo-shapes" in str(info.value)  # the close existing folder
    for name in ("./siglip-demo-shape", "models/a/b", "../nothing-here"):
        with pytest.raises(CheckpointNotFoundError, match="no folder"):
            siglip.AutoModel.from_pretrained(name)


def test_absolute_nonexistent_path_never_gets_hub_id_text(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no folder") as info:
        siglip.SiglipModel.from_pretrained(str(tmp_path / "absent" / "model"))
    assert "Repo id" not in str(info.value)


# ---- checkpoint files must stay inside the model folder ------------------------------------------------------


@pytest.fixture()
def sharded(tmp_path):
    import json

    from conftest import TINY_CONFIGS

    torch.manual_seed(0)
    folder = tmp_path / "model"
    siglip.SiglipVisionModel(siglip.SiglipVisionConfig(**TINY_CONFIGS["no_vision_head"][1])).save_pretrained(
        folder, max_shard_size="20KB"
    )
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return folder, index


def _write_index(folder, index):
    import json

    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("bad", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_shard_names_outside_the_folder_are_refused(sharded, bad):
    folder, index = sharded
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = bad
    _write_index(folder, index)
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        siglip.SiglipVisionModel.from_pretrained(folder)


def test_symlink_out_of_the_folder_and_subfolder_escape_are_refused(sharded, tmp_path):
    folder, index = sharded
    shard = folder / sorted(set(index["weight_map"].values()))[0]
    outside = tmp_path / "elsewhere.safetensors"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(CheckpointError, match="outside the model folder"):
        siglip.SiglipVisionModel.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        siglip.SiglipVisionModel.from_pretrained(folder, subfolder="../x")


@pytest.mark.parametrize("weight_map", [[], {}, {"a": 3}, "model.safetensors"])
def test_malformed_weight_map_is_a_checkpoint_error(sharded, weight_map):
    folder, index = sharded
    _write_index(folder, {**index, "weight_map": weight_map})
    with pytest.raises(CheckpointError, match="malformed weight_map"):
        siglip.SiglipVisionModel.from_pretrained(folder)


def test_integer_tensor_for_a_float_weight_is_a_checkpoint_error(tmp_path):
    from conftest import TINY_CONFIGS
    from safetensors.torch import load_file, save_file

    siglip.SiglipVisionModel(siglip.SiglipVisionConfig(**TINY_CONFIGS["no_vision_head"][1])).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    for dtype in (torch.int64, torch.bool):
        state["post_layernorm.weight"] = torch.ones_like(state["post_layernorm.weight"], dtype=dtype)
        save_file(state, tmp_path / "model.safetensors")
        with pytest.raises(CheckpointError, match="post_layernorm.weight: checkpoint dtype"):
            siglip.SiglipVisionModel.from_pretrained(tmp_path)


def test_duplicate_key_in_a_shard_the_index_does_not_name_is_an_error(sharded):
    from safetensors.torch import load_file, save_file

    folder, index = sharded
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    key = next(k for k, v in index["weight_map"].items() if v == shards[0])  # named: the first shard
    expected = load_file(folder / shards[0])[key]
    tensors = load_file(folder / shards[-1])
    tensors[key] = torch.full_like(expected, 7.0)  # a stale duplicate in the last shard (read last)
    save_file(tensors, folder / shards[-1])
    with pytest.raises(CheckpointError, match="inconsistent"):  # was: read from the named shard, silently
        siglip.SiglipVisionModel.from_pretrained(folder)


def test_hub_cache_shard_name_with_dotdot_is_a_checkpoint_error(sharded, tmp_path):
    import json

    from siglip.hub import store_in_cache

    folder, index = sharded
    commit = store_in_cache(folder, "org/name", tmp_path / "hub")
    snapshot_index = tmp_path / "hub" / "models--org--name" / "snapshots" / commit / "model.safetensors.index.json"
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../../../../outside.safetensors"
    snapshot_index.unlink()
    snapshot_index.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        siglip.SiglipVisionModel.from_pretrained("org/name", cache_dir=tmp_path / "hub", local_files_only=True)
