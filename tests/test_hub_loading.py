"""The Hub code path on a cache folder the test builds: offline loading by id, revisions, shards, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TINY_CONFIGS

import siglip
from siglip.hub import HubOptions, resolve_file, store_in_cache

TEXT, VISION = TINY_CONFIGS["odd_3_heads"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = siglip.SiglipModel(siglip.SiglipConfig(text_config=TEXT, vision_config=VISION))
    model.save_pretrained(folder)
    return folder, model


def run_offline(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, so huggingface_hub reads HF_HUB_OFFLINE / HF_HOME at import time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **env_extra})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )


def test_load_by_id_from_hub_cache_offline(saved_model, tmp_path):
    folder, model = saved_model
    store_in_cache(folder, "org/name", tmp_path / "hub")
    code = """
        import torch, siglip
        model = siglip.SiglipModel.from_pretrained("org/name")
        print(float(model.logit_scale.sum() + sum(p.double().sum() for p in model.parameters())))
        config = siglip.SiglipConfig.from_pretrained("org/name")
        vision = siglip.SiglipVisionModel.from_pretrained("org/name", local_files_only=True)
        print(config.vision_config.image_size, vision.config.image_size)
    """
    expected = float(model.logit_scale.detach().sum() + sum(p.detach().double().sum() for p in model.parameters()))
    for env in ({"HF_HUB_CACHE": str(tmp_path / "hub")}, {"HF_HOME": str(tmp_path)}):  # HF_HOME/hub
        result = run_offline(code, env)
        assert result.returncode == 0, result.stderr
        total, sizes = result.stdout.strip().splitlines()
        assert float(total) == pytest.approx(expected, rel=1e-9)
        assert sizes == f"{VISION['image_size']} {VISION['image_size']}"


def test_missing_model_offline_names_the_id_and_the_fix(tmp_path):
    code = """
        import siglip
        try:
            siglip.SiglipModel.from_pretrained("org/absent-model")
        except siglip.CheckpointNotFoundError as error:
            print("ERROR:", error)
    """
    result = run_offline(code, {"HF_HUB_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "org/absent-model" in result.stdout and "local folder" in result.stdout


def test_revision_and_cache_dir_arguments(saved_model, tmp_path):
    folder, model = saved_model
    commit = store_in_cache(folder, "org/name", tmp_path, revision="a" * 40)
    options = HubOptions(revision=commit, cache_dir=tmp_path, local_files_only=True)
    config_path = resolve_file("org/name", "config.json", options)
    assert config_path.parent.name == commit
    loaded = siglip.SiglipModel.from_pretrained("org/name", revision=commit, cache_dir=tmp_path, local_files_only=True)
    assert torch.equal(loaded.logit_bias, model.logit_bias)
    with pytest.raises(siglip.CheckpointNotFoundError):
        siglip.SiglipModel.from_pretrained("org/name", revision="b" * 40, cache_dir=tmp_path, local_files_only=True)


def test_sharded_checkpoint_round_trip_and_transformers_loads_it(saved_model, tmp_path):
    folder, model = saved_model
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    loaded = siglip.SiglipModel.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    transformers = pytest.importorskip("transformers")
    reference = transformers.SiglipModel.from_pretrained(tmp_path)
    assert torch.equal(reference.text_model.head.weight, model.text_model.head.weight)
    # A sharded transformers checkpoint loads too.
    reference.save_pretrained(tmp_path / "ref", max_shard_size="20KB")
    assert (tmp_path / "ref" / "model.safetensors.index.json").exists()
    assert torch.equal(siglip.SiglipModel.from_pretrained(tmp_path / "ref").logit_scale, model.logit_scale)


def test_loading_does_no_initialisation_work(saved_model, monkeypatch):
    """Built on the meta device and assigned the checkpoint's tensors: no weight is initialised then overwritten."""
    folder, model = saved_model
    calls = []
    original = siglip.modeling.init.init_module
    monkeypatch.setattr(siglip.modeling.init, "init_module", lambda module: calls.append(module) or original(module))
    loaded = siglip.SiglipModel.from_pretrained(folder)
    assert calls == []
    assert all(p.device.type == "cpu" for p in loaded.parameters()) and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
