"""Hostile model folders: every field of config.json, preprocessor_config.json, tokenizer_config.json and the
shard index is checked before anything is built, and every failure is a ConfigError / CheckpointError naming
the file and the field, in milliseconds (never a TypeError at the first forward, a RecursionError, a
MemoryError or a model built for minutes)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIGS
from safetensors.torch import load_file, save_file

import siglip
from siglip.errors import CheckpointError, ConfigError, SiglipError

TEXT, VISION = TINY_CONFIGS["no_vision_head"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = siglip.SiglipConfig(text_config=TEXT, vision_config=VISION)
    siglip.SiglipModel(config).save_pretrained(folder)
    siglip.SiglipImageProcessor().save_pretrained(folder)
    return folder


def _copy(folder, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def _edit(path, update):
    data = json.loads(path.read_text())
    update(data)
    path.write_text(json.dumps(data))


def _load_fast(callable_, error_type, *fragments):
    started = time.perf_counter()
    with pytest.raises(error_type) as raised:
        callable_()
    assert time.perf_counter() - started < 5.0
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


CONFIG_CASES = [
    ("vision_config", "hidden_size", "abc"),
    ("vision_config", "num_attention_heads", 0),
    ("vision_config", "patch_size", 0),
    ("vision_config", "patch_size", -8),
    ("text_config", "vocab_size", -5),
    ("vision_config", "layer_norm_eps", "x"),
    ("text_config", "layer_norm_eps", float("nan")),
    ("vision_config", "num_hidden_layers", 1_000_000),
    ("text_config", "hidden_size", True),
    ("text_config", "hidden_size", 32.0),
    ("vision_config", "image_size", None),
    ("vision_config", "vision_use_head", "yes"),
    ("text_config", "num_attention_heads", 5),
    ("vision_config", "intermediate_size", 1 << 19),
]


@pytest.mark.parametrize(("tower", "field", "value"), CONFIG_CASES)
def test_hostile_config_fields_are_config_errors_naming_the_field(model_folder, tmp_path, tower, field, value):
    folder = _copy(model_folder, tmp_path)
    path = folder / "config.json"
    _edit(path, lambda data: data[tower].__setitem__(field, value))
    _load_fast(lambda: siglip.SiglipModel.from_pretrained(folder), ConfigError, str(path), tower, field)
    _load_fast(lambda: siglip.SiglipConfig.from_pretrained(folder), ConfigError, tower)


@pytest.mark.parametrize(
    ("key", "value"),
    [("id2label", ["cat", "dog"]), ("id2label", {"x": "cat"}), ("label2id", {"cat": "zero"}), ("num_labels", -1)],
)
def test_hostile_label_fields(model_folder, tmp_path, key, value):
    folder = _copy(model_folder, tmp_path)
    _edit(folder / "config.json", lambda data: data.__setitem__(key, value))
    _load_fast(lambda: siglip.SiglipForImageClassification.from_pretrained(folder), ConfigError, key)


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "preprocessor_config.json"])
def test_deeply_nested_json_is_a_config_error(model_folder, tmp_path, name):
    folder = _copy(model_folder, tmp_path)
    (folder / name).write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    if name == "config.json":
        _load_fast(lambda: siglip.SiglipModel.from_pretrained(folder), ConfigError, "nests deeper")
    elif name == "preprocessor_config.json":
        _load_fast(lambda: siglip.SiglipImageProcessor.from_pretrained(folder), ConfigError, "nests deeper")
    else:
        from spm_model import train_sentencepiece_model

        from siglip.text.tokenizer import SiglipTokenizer

        train_sentencepiece_model(folder)
        _load_fast(lambda: SiglipTokenizer.from_pretrained(folder), ConfigError, "nests deeper")


def test_moderately_nested_json_is_refused_without_recursion(model_folder, tmp_path):
    folder = _copy(model_folder, tmp_path)
    _edit(folder / "config.json", lambda data: data.__setitem__("extra", json.loads("[" * 500 + "]" * 500)))
    _load_fast(lambda: siglip.SiglipModel.from_pretrained(folder), ConfigError, "nests deeper")


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("size", {"height": 100_000, "width": 100_000}, "size"),
        ("size", {"height": "abc", "width": 3}, "size"),
        ("rescale_factor", "x", "rescale_factor"),
        ("rescale_factor", float("inf"), "rescale_factor"),
        ("resample", "bicubic", "resample"),
        ("resample", 99, "resample"),
        ("image_mean", "x", "image_mean"),
        ("image_std", [0.5, 0.0, 0.5], "image_std"),
        ("do_resize", "yes", "do_resize"),
    ],
)
def test_hostile_preprocessor_settings(model_folder, tmp_path, field, value, shown):
    folder = _copy(model_folder, tmp_path)
    path = folder / "preprocessor_config.json"
    _edit(path, lambda data: data.__setitem__(field, value))
    _load_fast(lambda: siglip.SiglipImageProcessor.from_pretrained(folder), ConfigError, shown, str(path))
    _load_fast(lambda: siglip.SiglipImageProcessorFast.from_pretrained(folder), ConfigError, shown)


@pytest.mark.parametrize(
    ("field", "value"), [("patch_size", 0), ("max_num_patches", -1), ("max_num_patches", 10**9), ("patch_size", "8")]
)
def test_hostile_naflex_settings(tmp_path, field, value):
    from siglip.image.processing_siglip2 import Siglip2ImageProcessor

    Siglip2ImageProcessor().save_pretrained(tmp_path)
    _edit(tmp_path / "preprocessor_config.json", lambda data: data.__setitem__(field, value))
    _load_fast(lambda: Siglip2ImageProcessor.from_pretrained(tmp_path), ConfigError, field)


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    from spm_model import train_sentencepiece_model

    from siglip.text.tokenizer import SiglipTokenizer

    folder = tmp_path_factory.mktemp("tok")
    vocab = train_sentencepiece_model(folder)
    SiglipTokenizer(vocab).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("content", [b"", b"\x00garbage\xff" * 50])
def test_empty_or_garbage_spiece_model_is_a_checkpoint_error(tokenizer_folder, tmp_path, content):
    from siglip.text.tokenizer import SiglipTokenizer

    folder = _copy(tokenizer_folder, tmp_path)
    (folder / "spiece.model").write_bytes(content)
    _load_fast(lambda: SiglipTokenizer.from_pretrained(folder), CheckpointError, "spiece.model")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_max_length", "x"),
        ("model_max_length", -3),
        ("do_lower_case", "no"),
        ("eos_token", 5),
        ("eos_token", {"no_content": 1}),
        ("added_tokens_decoder", ["</s>"]),
        ("added_tokens_decoder", {"x": "</s>"}),
        ("sp_model_kwargs", {"model_file": "/etc/passwd"}),
        ("model_input_names", "input_ids"),
        ("extra_special_tokens", 7),
    ],
)
def test_hostile_tokenizer_config(tokenizer_folder, tmp_path, field, value):
    from siglip.text.tokenizer import SiglipTokenizer

    folder = _copy(tokenizer_folder, tmp_path)
    (folder / "special_tokens_map.json").unlink(missing_ok=True)
    _edit(folder / "tokenizer_config.json", lambda data: data.__setitem__(field, value))
    _load_fast(lambda: SiglipTokenizer.from_pretrained(folder), ConfigError, field, "tokenizer_config.json")


def test_hostile_gemma_tokenizer_files(tmp_path):
    from test_tokenizer_gemma import build_gemma_checkpoint

    from siglip.text.gemma import GemmaTokenizer

    folder = build_gemma_checkpoint(tmp_path / "gemma")
    original = (folder / "tokenizer_config.json").read_text()
    for field, value in [("model_max_length", "x"), ("padding_side", 3), ("added_tokens_decoder", [1])]:
        (folder / "tokenizer_config.json").write_text(original)
        _edit(folder / "tokenizer_config.json", lambda data, f=field, v=value: data.__setitem__(f, v))
        _load_fast(lambda: GemmaTokenizer.from_pretrained(folder), ConfigError, field)
    (folder / "tokenizer_config.json").write_text(original)
    for content in ("", "[1, 2]", '{"model": {"type": "BPE", "vocab": {"a": "x"}}}', "[" * 100_000):
        (folder / "tokenizer.json").write_text(content)
        _load_fast(lambda: GemmaTokenizer.from_pretrained(folder), SiglipError, "tokenizer.json")


@pytest.fixture()
def sharded(tmp_path):
    torch.manual_seed(0)
    siglip.SiglipVisionModel(siglip.SiglipVisionConfig(**VISION)).save_pretrained(tmp_path, max_shard_size=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    return tmp_path, index


def test_a_5000_character_shard_name_is_a_checkpoint_error(sharded):
    folder, index = sharded
    name = "x" * 5000 + ".safetensors"
    index["weight_map"] = {key: name for key in index["weight_map"]}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    _load_fast(lambda: siglip.SiglipVisionModel.from_pretrained(folder), CheckpointError, "too long")


def test_a_deep_shard_index_is_a_checkpoint_error(sharded):
    folder, _ = sharded
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _load_fast(lambda: siglip.SiglipVisionModel.from_pretrained(folder), CheckpointError, "nests deeper")


def test_a_tensor_in_a_shard_the_index_does_not_name_for_it_is_an_error(sharded):
    folder, index = sharded
    shards = sorted(set(index["weight_map"].values()))
    key = next(k for k, v in index["weight_map"].items() if v == shards[0])
    tensors = load_file(folder / shards[-1])
    tensors[key] = torch.full_like(load_file(folder / shards[0])[key], 7.0)  # a stale copy in another shard
    save_file(tensors, folder / shards[-1])
    _load_fast(lambda: siglip.SiglipVisionModel.from_pretrained(folder), CheckpointError, key, shards[-1])


def test_a_tensor_absent_from_the_weight_map_is_an_error(sharded):
    folder, index = sharded
    shards = sorted(set(index["weight_map"].values()))
    key = next(k for k, v in index["weight_map"].items() if v == shards[0])
    del index["weight_map"][key]
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    _load_fast(lambda: siglip.SiglipVisionModel.from_pretrained(folder), CheckpointError, key)


def test_config_objects_refuse_hostile_values_directly():
    with pytest.raises(ConfigError, match="num_attention_heads"):
        siglip.SiglipVisionConfig(num_attention_heads=0)
    with pytest.raises(ConfigError, match="num_patches"):
        siglip.Siglip2VisionConfig(num_patches=-4)
    huge = dict(hidden_size=1 << 16, intermediate_size=1 << 18, num_hidden_layers=1000, num_attention_heads=64)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="billion"):
        siglip.SiglipVisionConfig(**huge)
    assert time.perf_counter() - started < 1.0
    good = siglip.SiglipConfig(text_config=TEXT, vision_config=VISION)
    assert siglip.SiglipConfig.from_dict(good.to_dict()) == good


HOSTILE_VALUES = [-1, 0, "x", 10**12, None, [], {}, True, 1.5, float("inf"), -(10**12), [1, 2], {"a": 1}]
TOWER_FIELDS = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "num_channels",
    "image_size",
    "patch_size",
    "layer_norm_eps",
    "attention_dropout",
    "hidden_act",
    "projection_size",
    "vision_use_head",
    "pad_token_id",
    "eos_token_id",
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "dtype",
    "architectures",
]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sweep_of_hostile_config_values_gives_only_typed_errors_fast(model_folder, tmp_path):
    """Every field x every hostile value, in each tower and at the top: a load either succeeds or raises a
    SiglipError, each in well under a second (hundreds of hostile folders, as an audit would try)."""
    folder = _copy(model_folder, tmp_path)
    path = folder / "config.json"
    original = json.loads(path.read_text())
    untyped, slow, loaded = [], [], 0
    for where in ("text_config", "vision_config", None):
        for field in TOWER_FIELDS:
            for value in HOSTILE_VALUES:
                data = json.loads(json.dumps(original))
                (data if where is None else data[where])[field] = value
                path.write_text(json.dumps(data))
                started = time.perf_counter()
                try:
                    siglip.SiglipModel.from_pretrained(folder)
                    loaded += 1
                except SiglipError:
                    pass
                except Exception as error:  # noqa: BLE001 - what the sweep is looking for
                    untyped.append(f"{where}.{field}={value!r}: {type(error).__name__}: {error}")
                if time.perf_counter() - started > 2.0:
                    slow.append(f"{where}.{field}={value!r}")
    assert untyped == [], "\n".join(untyped)
    assert slow == []
    assert loaded > 0  # values a config may legitimately hold (null for optional fields, ...) still load


@pytest.mark.parametrize("processor", ["SiglipImageProcessor", "SiglipImageProcessorFast", "Siglip2ImageProcessor"])
def test_sweep_of_hostile_preprocessor_values_gives_only_typed_errors(tmp_path, processor):
    from siglip.image.processing_siglip2 import Siglip2ImageProcessor

    cls = Siglip2ImageProcessor if processor == "Siglip2ImageProcessor" else getattr(siglip, processor)
    cls().save_pretrained(tmp_path)
    path = tmp_path / "preprocessor_config.json"
    original = json.loads(path.read_text())
    fields = [*original, "size", "patch_size", "max_num_patches", "num_workers"]
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    untyped = []
    for field in dict.fromkeys(fields):
        for value in [*HOSTILE_VALUES, {"height": 10**6, "width": 10**6}, {"shortest_edge": -4}]:
            path.write_text(json.dumps({**original, field: value}))
            try:
                cls.from_pretrained(tmp_path)(image, return_tensors="pt")
            except SiglipError:
                pass
            except Exception as error:  # noqa: BLE001 - what the sweep is looking for
                untyped.append(f"{field}={value!r}: {type(error).__name__}: {error}")
    assert untyped == [], "\n".join(untyped)


def test_sweep_of_hostile_tokenizer_config_values_gives_only_typed_errors(tokenizer_folder, tmp_path):
    from siglip.text.tokenizer import SiglipTokenizer

    folder = _copy(tokenizer_folder, tmp_path)
    (folder / "special_tokens_map.json").unlink(missing_ok=True)
    path = folder / "tokenizer_config.json"
    original = json.loads(path.read_text())
    untyped = []
    for field in [*original, "additional_special_tokens", "bos_token", "mask_token"]:
        for value in HOSTILE_VALUES:
            path.write_text(json.dumps({**original, field: value}))
            try:
                SiglipTokenizer.from_pretrained(folder)(["a photo of a cat"], padding="max_length")
            except SiglipError:
                pass
            except Exception as error:  # noqa: BLE001 - what the sweep is looking for
                untyped.append(f"{field}={value!r}: {type(error).__name__}: {error}")
    assert untyped == [], "\n".join(untyped)


def test_sweep_of_hostile_gemma_tokenizer_config_values_gives_only_typed_errors(tmp_path):
    from test_tokenizer_gemma import build_gemma_checkpoint

    from siglip.text.gemma import Siglip2Tokenizer

    folder = build_gemma_checkpoint(tmp_path / "gemma")
    path = folder / "tokenizer_config.json"
    original = json.loads(path.read_text())
    untyped = []
    for field in [*original, "model_max_length", "padding_side", "extra_special_tokens"]:
        for value in HOSTILE_VALUES:
            path.write_text(json.dumps({**original, field: value}))
            try:
                Siglip2Tokenizer.from_pretrained(folder)(["a photo of a cat"], padding="max_length", max_length=16)
            except SiglipError:
                pass
            except Exception as error:  # noqa: BLE001 - what the sweep is looking for
                untyped.append(f"{field}={value!r}: {type(error).__name__}: {error}")
    assert untyped == [], "\n".join(untyped)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hostile_structure_of_config_json_through_the_auto_classes(model_folder, tmp_path):
    """model_type / text_config / vision_config of the wrong type or kind: typed errors from every loader."""
    folder = _copy(model_folder, tmp_path)
    path = folder / "config.json"
    original = json.loads(path.read_text())
    values = [None, [], {}, "x", 1, ["siglip"], {"a": 1}, True, "siglip2", "siglip_text_model", "siglip2_vision_model"]
    loaders = [siglip.AutoModel, siglip.AutoConfig, siglip.SiglipModel, siglip.SiglipVisionModel, siglip.SiglipConfig]
    untyped = []
    for key in ("model_type", "text_config", "vision_config"):
        for value in values:
            path.write_text(json.dumps({**original, key: value}))
            for loader in loaders:
                try:
                    loader.from_pretrained(folder)
                except SiglipError:
                    pass
                except Exception as error:  # noqa: BLE001 - what the sweep is looking for
                    untyped.append(f"{key}={value!r} {loader.__name__}: {type(error).__name__}: {error}")
    assert untyped == [], "\n".join(untyped)
