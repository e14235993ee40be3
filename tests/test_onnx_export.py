"""`siglip export` / `export_onnx`: ONNX Runtime against the torch model on real photos, for SigLIP (both
towers), SigLIP2 FixRes (model_type siglip + Gemma tokenizer) and SigLIP2 NaFlex (several aspect ratios and patch
budgets, the position-grid resize inside the graph); fp32 parity <= 1e-4, fp16 / int8 cosine >= 0.999; dynamic
batch 1 and 3; the CLI end to end; bad exports are errors that leave no file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, PHOTOS
from PIL import Image
from test_siglip2_pipeline import fixres_checkpoint, naflex_checkpoint  # noqa: F401  (shared checkpoint fixtures)

import siglip
from siglip.errors import ConfigError, ExportError
from siglip.export import export_onnx
from siglip.export.naflex import NaflexPositions

ort = pytest.importorskip("onnxruntime")

TEXTS = ["a photo of a cat", "an astronaut", "a cup of coffee on a table", "a rocket launch"]
SUFFIX = {"fp32": "", "fp16": "_fp16", "int8": "_int8"}


def session(folder, tower, dtype):
    return ort.InferenceSession(str(folder / f"{tower}_model{SUFFIX[dtype]}.onnx"), providers=["CPUExecutionProvider"])


def compare(actual: np.ndarray, expected: torch.Tensor, dtype: str) -> None:
    actual_t = torch.from_numpy(actual)
    assert actual_t.shape == expected.shape
    if dtype == "fp32":
        assert (actual_t - expected).abs().max().item() <= 1e-4
    else:
        assert F.cosine_similarity(actual_t.double(), expected.double(), dim=-1).min().item() >= 0.999


@pytest.fixture(scope="module")
def exports(tmp_path_factory, reference_checkpoint, fixres_checkpoint):  # noqa: F811
    """(kind, dtype) -> export folder of both towers; built on first use."""
    folders = {}
    sources = {"siglip": reference_checkpoint, "fixres": fixres_checkpoint}

    def get(kind: str, dtype: str):
        if (kind, dtype) not in folders:
            out = tmp_path_factory.mktemp(f"{kind}_{dtype}")
            export_onnx(sources[kind], out, dtype=dtype)
            folders[kind, dtype] = out
        return sources[kind], folders[kind, dtype]

    return get


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("kind", ["siglip", "fixres"])
def test_two_tower_parity_on_real_photos(kind, dtype, exports):
    source, folder = exports(kind, dtype)
    model = siglip.AutoModel.from_pretrained(source).eval()
    processor = siglip.AutoProcessor.from_pretrained(folder)  # the processor files travelled with the graphs
    photos = [Image.open(FIXTURES / name) for name in PHOTOS[:3]]
    text_session, vision_session = session(folder, "text", dtype), session(folder, "vision", dtype)
    assert [i.name for i in text_session.get_inputs()] == ["input_ids"]
    assert [i.name for i in vision_session.get_inputs()] == ["pixel_values"]
    assert [o.name for o in text_session.get_outputs()] == ["text_embeds"]
    assert vision_session.get_outputs()[0].name == "image_embeds"
    for count in (1, 3):  # dynamic batch
        length = model.config.text_config.max_position_embeddings
        text = processor(
            text=TEXTS[:count], padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        )
        ids = text["input_ids"]
        pixels = processor(images=photos[:count], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            text_expected, image_expected = model.get_text_features(ids), model.get_image_features(pixels)
        compare(text_session.run(None, {"input_ids": ids.numpy()})[0], text_expected, dtype)
        compare(vision_session.run(None, {"pixel_values": pixels.numpy()})[0], image_expected, dtype)


@pytest.fixture(scope="module")
def naflex_exports(tmp_path_factory, naflex_checkpoint):  # noqa: F811
    folders = {}

    def get(dtype: str):
        if dtype not in folders:
            folders[dtype] = tmp_path_factory.mktemp(f"naflex_{dtype}")
            written = export_onnx(naflex_checkpoint, folders[dtype], tower="vision", dtype=dtype)
            assert [item.path.name for item in written] == [f"vision_model{SUFFIX[dtype]}.onnx"]
        return folders[dtype]

    return get


def naflex_images() -> list[Image.Image]:
    """Real photos at several aspect ratios, down to a 1:40 strip (one patch column at small budgets)."""
    cat, rocket, coffee = (
        Image.open(FIXTURES / name).convert("RGB") for name in ("chelsea.png", "rocket.jpg", "coffee.png")
    )
    return [cat, rocket, coffee.crop((0, 0, 600, 150)), rocket.crop((200, 0, 216, 640))]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_naflex_parity_across_budgets_and_aspect_ratios(dtype, naflex_checkpoint, naflex_exports):  # noqa: F811
    folder = naflex_exports(dtype)
    model = siglip.AutoModel.from_pretrained(naflex_checkpoint).eval()
    processor = siglip.AutoProcessor.from_pretrained(folder).image_processor
    vision = session(folder, "vision", dtype)
    names = ["pixel_values", "pixel_attention_mask", "spatial_shapes"]
    assert [i.name for i in vision.get_inputs()] == names
    images = naflex_images()
    one_column_seen = False
    for budget in (64, 128, 256):
        for batch in (images[:1], images[1:]):  # batch sizes 1 and 3
            inputs = processor(images=batch, max_num_patches=budget, return_tensors="pt")
            one_column_seen |= bool((inputs["spatial_shapes"][:, 1] == 1).any())
            with torch.no_grad():
                expected = model.get_image_features(**{name: inputs[name] for name in names})
            compare(vision.run(None, {name: inputs[name].numpy() for name in names})[0], expected, dtype)
    assert one_column_seen  # the strip exercises the one-column resize


def test_position_resize_matrix_equals_the_models_resize():
    """The graph's resize-as-weights equals the model's antialiased F.interpolate for every grid up to 24x24."""
    config = siglip.Siglip2VisionConfig(hidden_size=8, num_attention_heads=2, num_patches=64, patch_size=4)
    torch.manual_seed(0)
    embeddings = siglip.Siglip2VisionModel(config).embeddings
    torch.nn.init.normal_(embeddings.position_embedding.weight)
    shapes = torch.tensor([(rows, cols) for rows in range(1, 25) for cols in range(1, 25)])
    with torch.no_grad():
        for chunk in shapes.split(96):
            length = int(chunk.prod(-1).max()) + 2  # with padding rows
            expected = embeddings.positions(chunk, length)
            assert (NaflexPositions(embeddings)(chunk, length) - expected).abs().max().item() <= 1e-5


def test_torch_one_column_resize_quirk_is_still_there():
    """naflex.py reproduces PyTorch's CPU antialias kernel giving every row the first row's value when the output
    is one column wide. If this test fails, PyTorch fixed it: drop the reproduction in siglip/export/naflex.py."""
    grid = torch.arange(16.0).reshape(1, 1, 4, 4)
    resized = F.interpolate(grid, size=(3, 1), mode="bilinear", align_corners=False, antialias=True)[0, 0, :, 0]
    assert resized[0] == resized[1] == resized[2]


def test_cli_end_to_end(tmp_path, reference_checkpoint):
    out = tmp_path / "onnx"
    command = [
        sys.executable,
        "-m",
        "siglip",
        "export",
        str(reference_checkpoint),
        "--format",
        "onnx",
        "--out",
        str(out),
    ]
    result = subprocess.run([*command, "--tower", "text", "--opset", "18"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "text_model.onnx" in result.stdout and "max diff" in result.stdout
    files = {path.name for path in out.iterdir()}
    assert {
        "text_model.onnx",
        "config.json",
        "spiece.model",
        "tokenizer_config.json",
    } <= files
    assert {"preprocessor_config.json", "processor_config.json"} & files  # transformers 5 writes the latter
    assert "vision_model.onnx" not in files and not any(name.startswith(".siglip-export") for name in files)
    import onnx

    proto = onnx.load(str(out / "text_model.onnx"))
    assert proto.opset_import[0].version == 18
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert metadata["siglip.normalized"] == "false" and float(metadata["siglip.logit_scale"]) == pytest.approx(3.0)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_unsupported_opset_is_an_error_and_leaves_no_file(tmp_path, reference_checkpoint):
    out = tmp_path / "bad"
    command = [sys.executable, "-m", "siglip", "export", str(reference_checkpoint), "--out", str(out), "--opset", "9"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert "opset 9" in result.stderr and "scaled_dot_product_attention" in result.stderr
    assert result.stdout == ""  # no IR dump
    assert list(out.iterdir()) == []


def test_int8_that_cannot_reach_the_cosine_is_refused(tmp_path):
    """A text tower with an outlier channel before its head (per-tensor int8 activations cannot hold it)."""
    config = siglip.SiglipConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=12),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
    )  # fmt: skip
    torch.manual_seed(0)
    model = siglip.SiglipModel(config).eval()
    with torch.no_grad():
        model.text_model.final_layer_norm.weight[0] = 3000.0  # an outlier feature the head barely uses
        model.text_model.head.weight[:, 0] /= 3000.0
    with pytest.raises(ExportError, match="cosine"):
        export_onnx(model, tmp_path, tower="text", dtype="int8")
    assert not any(path.suffix == ".onnx" for path in tmp_path.iterdir())
    assert not any(path.name.startswith(".siglip-export") for path in tmp_path.iterdir())
    written = export_onnx(model, tmp_path, tower="text", dtype="fp32")  # the same model exports fine in fp32
    assert written[0].parity.max_abs_diff <= 1e-4


def test_vision_tower_without_head_is_refused(tmp_path):
    config = siglip.SiglipConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8, vision_use_head=False),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="vision_use_head"):
        export_onnx(siglip.SiglipModel(config), tmp_path, tower="vision")


def test_library_imports_no_onnx_at_module_level():
    code = "import sys, siglip, siglip.export, siglip.cli.export; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
