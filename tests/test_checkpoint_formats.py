"""open_clip and big_vision checkpoint formats without the peers: round trips, direct loading, errors.

The oracle tests against open_clip itself live in tests/interop/ (`make interop-test`). Here: Hub -> open_clip
-> Hub and Hub -> .npz -> Hub give identical tensors; the converted folders load directly (from_pretrained,
Auto classes, CLI) with the same outputs; transformers loads what `siglip convert` writes; what does not map
fails with a typed error naming the key or field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import max_diff
from safetensors.torch import load_file, save_file

from siglip import AutoModel, AutoProcessor, AutoTokenizer
from siglip.cli import main as cli_main
from siglip.config import Siglip2Config, SiglipConfig
from siglip.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from siglip.formats import detect
from siglip.formats.convert import convert
from siglip.hub import HubOptions
from siglip.image.processing import SiglipImageProcessor
from siglip.kernels.cpu import cpu_features
from siglip.modeling.model import SiglipModel
from siglip.modeling.siglip2 import Siglip2Model
from siglip.text.tokenizer import SiglipTokenizer

TEXT = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=16,
    projection_size=40,
)
VISION = dict(
    hidden_size=40, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
)


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory) -> Path:
    """A tiny random SigLIP in the Hub layout, with its SentencePiece tokenizer and image processor."""
    from spm_model import train_sentencepiece_model

    folder = tmp_path_factory.mktemp("hub")
    tokenizer = SiglipTokenizer(
        vocab_file=train_sentencepiece_model(tmp_path_factory.mktemp("spm")), model_max_length=16
    )
    config = SiglipConfig(text_config={**TEXT, "vocab_size": tokenizer.vocab_size}, vision_config=VISION)
    torch.manual_seed(0)
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _outputs(model, pixel_values, input_ids):
    with torch.no_grad():
        out = model(pixel_values=pixel_values, input_ids=input_ids)
    return out.image_embeds, out.text_embeds, out.logits_per_text


def _assert_same_tensors(a: Path, b: Path) -> None:
    left, right = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert sorted(left) == sorted(right)
    for name in left:
        assert torch.equal(left[name], right[name]), name


def test_open_clip_round_trip_is_identical(hub_folder, tmp_path):
    open_clip_dir, back = tmp_path / "oc", tmp_path / "back"
    convert(hub_folder, open_clip_dir, to="open_clip")
    assert detect(open_clip_dir) == "open_clip"
    keys = load_file(str(open_clip_dir / "open_clip_model.safetensors"))
    assert "visual.trunk.blocks.1.attn.qkv.weight" in keys and "text.text_projection.bias" in keys
    assert keys["logit_scale"].shape == () and keys["visual.trunk.pos_embed"].shape == (1, 16, 40)
    convert(open_clip_dir, back)
    _assert_same_tensors(hub_folder, back)
    ours, theirs = json.loads((hub_folder / "config.json").read_text()), json.loads((back / "config.json").read_text())
    for tower in ("text_config", "vision_config"):
        for key, value in ours[tower].items():
            if key not in ("pad_token_id", "bos_token_id", "eos_token_id", "dtype"):
                assert theirs[tower][key] == value, (tower, key)


def test_open_clip_folder_loads_directly(hub_folder, tmp_path, pixel_batch):
    open_clip_dir = tmp_path / "oc"
    convert(hub_folder, open_clip_dir, to="open_clip")
    reference = SiglipModel.from_pretrained(hub_folder)
    loaded = AutoModel.from_pretrained(open_clip_dir)
    processor = AutoProcessor.from_pretrained(open_clip_dir)
    assert type(processor).__name__ == "SiglipProcessor"
    assert "attention_mask" not in processor(text=["a cat"], padding="max_length", return_tensors="pt")
    texts = ["a photo of a cat", "two dogs on the beach", "a cup of coffee"]
    input_ids = AutoTokenizer.from_pretrained(open_clip_dir)(texts, padding="max_length", return_tensors="pt")[
        "input_ids"
    ]
    expected_ids = AutoTokenizer.from_pretrained(hub_folder)(texts, padding="max_length", return_tensors="pt")[
        "input_ids"
    ]
    assert torch.equal(input_ids, expected_ids)
    pixels = pixel_batch(32)
    for a, b in zip(_outputs(reference, pixels, input_ids), _outputs(loaded, pixels, input_ids)):
        assert max_diff(a, b) == 0.0


def test_big_vision_round_trip_and_direct_load(hub_folder, tmp_path, pixel_batch):
    npz_dir = tmp_path / "bv"
    written = convert(hub_folder, npz_dir, to="big_vision")
    npz = npz_dir / "siglip.npz"
    assert npz in written
    with np.load(npz) as arrays:
        assert arrays["params/img/embedding/kernel"].shape == (8, 8, 3, 40)  # HWIO
        assert arrays["params/img/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"].shape == (
            40,
            4,
            10,
        )
        assert arrays["params/txt/head/kernel"].shape == (32, 40)
    back = tmp_path / "back"
    convert(npz, back)
    _assert_same_tensors(hub_folder, back)
    reference, loaded = SiglipModel.from_pretrained(hub_folder), SiglipModel.from_pretrained(npz)
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    for a, b in zip(_outputs(reference, pixel_batch(32), ids), _outputs(loaded, pixel_batch(32), ids)):
        assert max_diff(a, b) == 0.0


def test_big_vision_stacked_layers_read_like_separate_ones(hub_folder, tmp_path):
    convert(hub_folder, tmp_path / "bv", to="big_vision")
    with np.load(tmp_path / "bv" / "siglip.npz") as arrays:
        flat = dict(arrays)
    stacked: dict[str, np.ndarray] = {}
    for key in list(flat):
        if "encoderblock_" in key:
            head, rest = key.split("encoderblock_", 1)
            index, tail = rest.split("/", 1)
            stacked.setdefault(f"{head}encoderblock/{tail}", {})[int(index)] = flat.pop(key)
    flat.update({key: np.stack([layers[i] for i in sorted(layers)]) for key, layers in stacked.items()})
    scanned = tmp_path / "scanned" / "webli_en_b16_224_0.npz"
    scanned.parent.mkdir()
    np.savez(scanned, **flat)
    with pytest.raises(CheckpointError, match="en tokenizer has 32000 pieces"):  # what the release name says is checked
        SiglipModel.from_pretrained(scanned)
    model = SiglipModel.from_pretrained(scanned, variant="siglip")
    reference = SiglipModel.from_pretrained(hub_folder)
    for (name, a), b in zip(reference.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_siglip2_naflex_big_vision_round_trip(tmp_path):
    from test_tokenizer_gemma import build_gemma_checkpoint

    folder = tmp_path / "hub2"
    build_gemma_checkpoint(folder)
    vision = {k: v for k, v in VISION.items() if k != "image_size"} | {"num_patches": 16}
    vocab = len(AutoTokenizer.from_pretrained(folder))
    config = Siglip2Config(text_config={**TEXT, "vocab_size": vocab}, vision_config=vision)
    torch.manual_seed(1)
    Siglip2Model(config).save_pretrained(folder)
    processor = {"image_processor_type": "Siglip2ImageProcessor", "patch_size": 8, "max_num_patches": 16}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    convert(folder, tmp_path / "bv", to="big_vision")
    npz = tmp_path / "bv" / "siglip2-naflex.npz"
    with np.load(npz) as arrays:
        assert arrays["params/img/pos_embedding"].shape == (4, 4, 40)
        assert arrays["params/img/embedding/kernel"].shape == (192, 40)
    convert(npz, tmp_path / "back")
    _assert_same_tensors(folder, tmp_path / "back")
    assert AutoModel.from_pretrained(npz).config.model_type == "siglip2"
    assert type(AutoTokenizer.from_pretrained(npz)).__name__ == "Siglip2Tokenizer"
    # and through open_clip's NaFlexVit layout: (1, n, n, D) positions, a Linear patch embedding
    convert(folder, tmp_path / "oc", to="open_clip")
    settings = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())
    vision = settings["model_cfg"]["vision_cfg"]
    assert vision["timm_model_name"] == "naflexvit_base_patch16_siglip" and vision["image_seq_len"] == 16
    assert vision["timm_model_kwargs"]["pos_embed_grid_size"] == [4, 4]
    assert load_file(str(tmp_path / "oc" / "open_clip_model.safetensors"))["visual.trunk.embeds.pos_embed"].shape == (
        1,
        4,
        4,
        40,
    )
    processor = AutoProcessor.from_pretrained(tmp_path / "oc")
    assert type(processor).__name__ == "Siglip2Processor" and processor.image_processor.max_num_patches == 16
    convert(tmp_path / "oc", tmp_path / "back_oc")
    _assert_same_tensors(folder, tmp_path / "back_oc")


def test_transformers_loads_converted_folder(hub_folder, tmp_path, pixel_batch):
    transformers = pytest.importorskip("transformers")
    convert(hub_folder, tmp_path / "oc", to="open_clip")
    convert(tmp_path / "oc", tmp_path / "hub")
    theirs = transformers.AutoModel.from_pretrained(tmp_path / "hub").eval()
    ours = AutoModel.from_pretrained(tmp_path / "oc")
    ids = transformers.AutoTokenizer.from_pretrained(tmp_path / "hub")(
        ["a photo of a cat", "a dog"], padding="max_length", return_tensors="pt"
    )["input_ids"]
    for a, b in zip(_outputs(ours, pixel_batch(32), ids), _outputs(theirs, pixel_batch(32), ids)):
        assert max_diff(a, b) <= 1e-5


def test_cli_convert_both_ways(hub_folder, tmp_path, capsys):
    assert cli_main(["convert", str(hub_folder), "--to", "open_clip", "--out", str(tmp_path / "oc")]) == 0
    assert cli_main(["convert", str(tmp_path / "oc"), "--out", str(tmp_path / "hub")]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    _assert_same_tensors(hub_folder, tmp_path / "hub")


# ---- errors -----------------------------------------------------------------------------------------------
def _open_clip_copy(hub_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "oc"
    convert(hub_folder, folder, to="open_clip")
    return folder


def _edit_config(folder: Path, edit) -> None:
    path = folder / "open_clip_config.json"
    settings = json.loads(path.read_text())
    edit(settings)
    path.write_text(json.dumps(settings))


def test_unknown_timm_model_names_the_field(hub_folder, tmp_path):
    folder = _open_clip_copy(hub_folder, tmp_path)
    _edit_config(folder, lambda s: s["model_cfg"]["vision_cfg"].update(timm_model_name="vit_base_patch16_224"))
    with pytest.raises(ConfigError, match="model_cfg.vision_cfg.timm_model_name"):
        SiglipModel.from_pretrained(folder)


def test_causal_text_tower_names_the_field(hub_folder, tmp_path):
    folder = _open_clip_copy(hub_folder, tmp_path)
    _edit_config(folder, lambda s: s["model_cfg"]["text_cfg"].update(no_causal_mask=False))
    with pytest.raises(ConfigError, match="text_cfg.no_causal_mask"):
        AutoModel.from_pretrained(folder)


def test_extra_and_missing_tensors_are_named(hub_folder, tmp_path):
    folder = _open_clip_copy(hub_folder, tmp_path)
    weights = folder / "open_clip_model.safetensors"
    state = load_file(str(weights))
    save_file({**state, "visual.trunk.cls_token": torch.zeros(1, 1, 40)}, str(weights))
    with pytest.raises(CheckpointError, match="visual.trunk.cls_token"):
        SiglipModel.from_pretrained(folder)
    del state["text.ln_final.bias"]
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="text.ln_final.bias"):
        SiglipModel.from_pretrained(folder)


def test_pickle_needs_opt_in(hub_folder, tmp_path, pixel_batch):
    folder = _open_clip_copy(hub_folder, tmp_path)
    weights = folder / "open_clip_model.safetensors"
    torch.save(load_file(str(weights)), folder / "open_clip_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        SiglipModel.from_pretrained(folder)
    model = SiglipModel.from_pretrained(folder, allow_pickle=True)
    reference = SiglipModel.from_pretrained(hub_folder)
    ids = torch.zeros(1, 16, dtype=torch.long)
    assert max_diff(_outputs(model, pixel_batch(32), ids)[2], _outputs(reference, pixel_batch(32), ids)[2]) == 0


def test_big_vision_variant_and_tokenizer_errors(hub_folder, tmp_path):
    convert(hub_folder, tmp_path / "bv", to="big_vision")
    npz = tmp_path / "plain" / "model_final.npz"
    npz.parent.mkdir()
    shutil.copyfile(tmp_path / "bv" / "siglip.npz", npz)
    with pytest.raises(ConfigError, match="variant"):
        SiglipModel.from_pretrained(npz)
    assert SiglipModel.from_pretrained(npz, variant="siglip").config.vision_config.image_size == 32
    with pytest.raises(ConfigError, match="no tokenizer"):
        convert(npz, tmp_path / "out", variant="siglip")
    convert(npz, tmp_path / "out", variant="siglip", tokenizer=str(hub_folder))
    assert (tmp_path / "out" / "spiece.model").is_file()
    from test_tokenizer_gemma import build_gemma_checkpoint

    gemma = build_gemma_checkpoint(tmp_path / "gemma")  # a tokenizer of another size: said, not silently used
    with pytest.warns(UserWarning, match="tokens but the text embedding has 1500 rows"):
        convert(npz, tmp_path / "out2", variant="siglip2", tokenizer=str(gemma))
    with pytest.raises(FileNotFoundError, match="carry no tokenizer"):
        AutoTokenizer.from_pretrained(_lonely_release(tmp_path, npz))


def _lonely_release(tmp_path: Path, npz: Path) -> Path:
    target = tmp_path / "release" / "siglip.npz"
    target.parent.mkdir()
    shutil.copyfile(npz, target)
    return target


DEMO = Path(__file__).parent.parent / "models" / "siglip-demo-shapes"
EXAMPLES = Path(__file__).parent.parent / "examples" / "images"


@pytest.mark.parametrize("target", ["open_clip", "big_vision"])
def test_pipeline_and_cli_take_other_formats(tmp_path, target, capsys):
    """The demo model as an open_clip folder and as a .npz: the zero-shot pipeline and `siglip classify` give the
    Hub folder's scores (its prompt template survives the open_clip round trip)."""
    from siglip import pipeline

    written = convert(DEMO, tmp_path / target, to=target)
    source = tmp_path / target if target == "open_clip" else next(p for p in written if p.suffix == ".npz")
    images = [str(EXAMPLES / "red_square.png"), str(EXAMPLES / "blue_circle.png")]
    labels = ["red square", "blue circle", "green star"]
    template = {} if target == "open_clip" else {"hypothesis_template": "a {}"}  # .npz files carry no prompt
    expected = pipeline(model=str(DEMO))(images, candidate_labels=labels)
    actual = pipeline(model=str(source))(images, candidate_labels=labels, **template)
    for want, got in zip(expected, actual):
        assert [r["label"] for r in want] == [r["label"] for r in got]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(want, got)) <= 1e-6
    command = ["classify", images[0], "--labels", *labels, "--template", "a {}"]
    assert cli_main([*command, "--model", str(DEMO)]) == 0
    reference_output = capsys.readouterr().out
    assert cli_main([*command, "--model", str(source)]) == 0
    assert capsys.readouterr().out == reference_output


def test_open_clip_by_hub_id_from_cache_and_tokenizer_elsewhere(hub_folder, tmp_path, pixel_batch):
    """An open_clip repo in a Hub-layout cache loads by id offline; a folder without tokenizer files takes the
    tokenizer that text_cfg.hf_tokenizer_name names."""
    from siglip.hub import store_in_cache

    folder = _open_clip_copy(hub_folder, tmp_path)
    store_in_cache(folder, "timm/ViT-tiny-SigLIP", tmp_path / "cache")
    hub = {"cache_dir": str(tmp_path / "cache"), "local_files_only": True}
    assert detect("timm/ViT-tiny-SigLIP", HubOptions(**hub)) == "open_clip"
    by_id = AutoModel.from_pretrained("timm/ViT-tiny-SigLIP", **hub)
    tokenizer = AutoTokenizer.from_pretrained("timm/ViT-tiny-SigLIP", **hub)
    reference = SiglipModel.from_pretrained(hub_folder)
    ids = tokenizer(["a photo of a cat"], padding="max_length", return_tensors="pt")["input_ids"]
    assert max_diff(_outputs(by_id, pixel_batch(32), ids)[2], _outputs(reference, pixel_batch(32), ids)[2]) == 0
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copyfile(folder / name, bare / name)
    _edit_config(bare, lambda s: s["model_cfg"]["text_cfg"].update(hf_tokenizer_name=str(hub_folder)))
    assert torch.equal(
        AutoTokenizer.from_pretrained(bare)(["a photo of a cat"], padding="max_length", return_tensors="pt")[
            "input_ids"
        ],
        ids,
    )
    for unreachable in (None, str(tmp_path / "no-such-tokenizer")):  # the model loads, the tokenizer says what to do
        _edit_config(bare, lambda s, name=unreachable: s["model_cfg"]["text_cfg"].update(hf_tokenizer_name=name))
        assert (
            SiglipModel.from_pretrained(bare).config.text_config.vocab_size == reference.config.text_config.vocab_size
        )
        with pytest.raises(FileNotFoundError, match="hf_tokenizer_name"):
            AutoTokenizer.from_pretrained(bare)


def test_several_npz_files_in_a_folder_are_refused(hub_folder, tmp_path):
    convert(hub_folder, tmp_path / "bv", to="big_vision")
    shutil.copyfile(tmp_path / "bv" / "siglip.npz", tmp_path / "bv" / "siglip-i18n.npz")
    with pytest.raises(CheckpointError, match="several .npz files"):
        SiglipModel.from_pretrained(tmp_path / "bv")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("webli_en_b16_224_63724782.npz", ("siglip", "en", False, "b16", 224)),
        ("/data/webli_i18n_so400m_16_256_78061115.npz", ("siglip", "i18n", False, "so400m_16", 256)),
        ("webli_en_so400m_384_58765454.npz", ("siglip", "en", False, "so400m", 384)),
        ("siglip2_g-opt16_384.npz", ("siglip2", "gemma", False, "g-opt16", 384)),
        ("siglip2_so400m16_naflex.npz", ("siglip2", "gemma", True, "so400m16", None)),
        ("siglip2-naflex", ("siglip2", "gemma", True, None, None)),
        ("SigLIP-i18n", ("siglip", "i18n", False, None, None)),
    ],
)
def test_big_vision_variant_names(name, expected):
    from siglip.foreign.big_vision import SIZES, parse_variant

    variant = parse_variant(name)
    assert (variant.family, variant.vocabulary, variant.naflex, variant.size, variant.resolution) == expected
    assert variant.size is None or variant.size in SIZES


@pytest.mark.skipif(not cpu_features().int8_supported, reason="int8 needs an x86 CPU with AVX2")
def test_quantized_foreign_source_carries_normalised_processor_files(hub_folder, tmp_path):
    """`siglip quantize` of an open_clip folder writes the tokenizer and processor files `siglip convert` writes
    (our classes' normalised files, not the view's as stored), and the folder loads on its own."""
    source = _open_clip_copy(hub_folder, tmp_path)
    convert(source, tmp_path / "hub")
    photos = [str(EXAMPLES / "red_square.png")]
    assert cli_main(["quantize", str(source), "--calibration", *photos, "--out", str(tmp_path / "int8")]) == 0
    for name in ("tokenizer_config.json", "preprocessor_config.json", "special_tokens_map.json"):
        assert json.loads((tmp_path / "int8" / name).read_text()) == json.loads((tmp_path / "hub" / name).read_text())
    assert (tmp_path / "int8" / "spiece.model").read_bytes() == (tmp_path / "hub" / "spiece.model").read_bytes()
    ids = AutoTokenizer.from_pretrained(tmp_path / "int8")(["a photo of a cat"], padding="max_length")["input_ids"]
    assert ids == AutoTokenizer.from_pretrained(hub_folder)(["a photo of a cat"], padding="max_length")["input_ids"]
