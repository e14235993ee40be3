"""The int8 CPU path (siglip/quantization/): accuracy against fp32 on real photos and the demo model's held-out
images, save / reload of a quantized model, the CLI's --dtype int8, and the errors it gives off CPU or misused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, PHOTOS, to_pixel_values
from PIL import Image

import siglip
from siglip import (
    AutoModel,
    AutoProcessor,
    InputError,
    Siglip2Config,
    Siglip2Model,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from siglip.quantization import Int8Linear, int8_linear

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "siglip-demo-shapes"
EXAMPLES = ROOT / "examples" / "images"


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


def assert_int8_layout(model: torch.nn.Module, activations: str, linears: int, most_float: int) -> None:
    """Every encoder linear is int8 but those the self-check kept float (recorded, `most_float` at most: on CPUs
    without VNNI the 7-bit weights send some back); static scales but where it moved an input to per-call scales."""
    record = model.config.quantization_config
    kept, dynamic = record["float_layers"], record.get("dynamic_layers", [])
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == linears - len(kept)
    assert len(kept) <= most_float, kept
    assert all(isinstance(model.get_submodule(name), torch.nn.Linear) for name in kept)
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            assert module.is_static == (activations == "static" and name not in dynamic), name


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory) -> Path:
    """A random SigLIP image tower of the base width (768, 12 heads) at 224 px, 3 layers for test speed."""
    folder = tmp_path_factory.mktemp("int8") / "vision"
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(num_hidden_layers=3)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def photo_pixels() -> torch.Tensor:
    photos = [Image.open(FIXTURES / name).convert("RGB") for name in PHOTOS]
    flipped = [photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for photo in photos]
    return torch.stack([to_pixel_values(photo, (224, 224)) for photo in photos + flipped])


@pytest.fixture(scope="module")
def fp32_photo_embeddings(vision_dir, photo_pixels) -> torch.Tensor:
    with torch.inference_mode():
        return SiglipVisionModel.from_pretrained(vision_dir)(pixel_values=photo_pixels).pooler_output


@pytest.mark.parametrize("rest", [torch.float32, torch.bfloat16], ids=["fp32-rest", "bf16-rest"])
@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_image_tower_cosine_on_real_photos(vision_dir, photo_pixels, fp32_photo_embeddings, activations, rest):
    # static scales come from the first two photos only; all eight (the four and their mirror images) are measured
    calibration = photo_pixels[:2].to(rest) if activations == "static" else None
    model = SiglipVisionModel.from_pretrained(vision_dir, dtype=rest, quantization="int8", calibration=calibration)
    assert_int8_layout(model, activations, linears=3 * 6, most_float=6)
    with torch.inference_mode():
        embeddings = model(pixel_values=photo_pixels.to(rest)).pooler_output
    similarity = cosines(embeddings, fp32_photo_embeddings)
    assert similarity.min() >= 0.999, similarity
    assert similarity.mean() >= 0.9995, similarity


@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_casting_a_quantized_model_keeps_fp32_scales_and_runs_in_every_dtype(
    vision_dir, photo_pixels, fp32_photo_embeddings, activations
):
    model = SiglipVisionModel.from_pretrained(vision_dir)
    model.quantize("int8", calibration=photo_pixels[:2] if activations == "static" else None)
    scales = {name: b.clone() for name, b in model.named_buffers() if b.is_floating_point() and ".layers." in name}
    for cast in (lambda m: m.to(torch.bfloat16), lambda m: m.half(), lambda m: m.float()):
        model = cast(model)
        dtype = model.embeddings.patch_embedding.weight.dtype
        for name, buffer in model.named_buffers():
            if name in scales:  # weight_scale, bias, input_scale: fp32 and unchanged whatever the model's dtype
                assert buffer.dtype == torch.float32 and torch.equal(buffer, scales[name]), name
        with torch.inference_mode():
            embeddings = model(pixel_values=photo_pixels.to(dtype)).pooler_output
        assert embeddings.dtype == dtype
        similarity = cosines(embeddings, fp32_photo_embeddings)
        assert similarity.min() >= 0.999, (dtype, similarity)


def test_int8_runs_with_autograd_on_and_refuses_backward_clearly(vision_dir, photo_pixels):
    model = SiglipVisionModel.from_pretrained(vision_dir, quantization="int8", calibration=photo_pixels[:2])
    with torch.inference_mode():
        expected = model(pixel_values=photo_pixels[:3]).pooler_output
    embeddings = model(pixel_values=photo_pixels[:3]).pooler_output  # no no_grad: parameters require grad
    assert embeddings.requires_grad
    torch.testing.assert_close(embeddings.detach(), expected, rtol=0, atol=1e-5)  # float parts: plain path
    with pytest.raises(InputError, match="no backward pass"):  # not PyTorch's warning and wrong gradients
        embeddings.sum().backward()
    with pytest.raises(InputError, match="already quantized.*load the float checkpoint"):
        model.quantize("int8", calibration=photo_pixels[:2])


def test_quantize_a_loaded_model_matches_from_pretrained(vision_dir, photo_pixels):
    loaded = SiglipVisionModel.from_pretrained(vision_dir)
    assert loaded.quantize("int8") is loaded
    direct = SiglipVisionModel.from_pretrained(vision_dir, quantization="int8")
    with torch.inference_mode():
        assert torch.equal(
            loaded(pixel_values=photo_pixels).pooler_output, direct(pixel_values=photo_pixels).pooler_output
        )


@pytest.fixture(scope="module")
def demo_eval():
    from siglip.train.evaluate import build_eval_set
    from siglip.train.synthetic import COLOURS, SHAPES, ShapesDataset

    processor = AutoProcessor.from_pretrained(DEMO)
    side = AutoModel.from_pretrained(DEMO).config.vision_config.image_size
    # fresh held-out renderings (split "eval"), 48 colour x shape prompts in the model's own template "a {}"
    images = build_eval_set(ShapesDataset(split="eval", seed=1234, image_size=side), processor, 500).pixel_values
    prompts = [f"a {colour} {shape}" for colour in COLOURS for shape in SHAPES]
    ids = processor(text=prompts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
    return images, ids["input_ids"]


def zero_shot(model, images: torch.Tensor, ids: torch.Tensor, dtype: torch.dtype = torch.float32):
    with torch.inference_mode():
        image_embeds = F.normalize(model.get_image_features(pixel_values=images.to(dtype)).float(), dim=-1)
        text_embeds = F.normalize(model.get_text_features(input_ids=ids).float(), dim=-1)
    return image_embeds, (image_embeds @ text_embeds.T).argmax(dim=1)


@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_demo_model_zero_shot_top1_agrees_with_fp32(demo_eval, activations):
    images, ids = demo_eval
    reference_embeds, reference = zero_shot(AutoModel.from_pretrained(DEMO), images, ids)
    calibration = {"pixel_values": images[-16:], "input_ids": ids[:16]} if activations == "static" else None
    model = AutoModel.from_pretrained(DEMO, quantization="int8", calibration=calibration)
    embeds, predicted = zero_shot(model, images, ids)
    agreement = (predicted == reference).float().mean().item()
    assert agreement >= 0.99, agreement
    assert cosines(embeds, reference_embeds).mean() >= 0.9995


def test_save_and_reload_keeps_int8_tensors(tmp_path, demo_eval):
    images, ids = demo_eval
    calibration = {"pixel_values": images[:16], "input_ids": ids[:16]}
    model = AutoModel.from_pretrained(DEMO, dtype=torch.bfloat16, quantization="int8", calibration=calibration)
    model.save_pretrained(tmp_path / "int8")
    header_length = int.from_bytes((tmp_path / "int8" / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((tmp_path / "int8" / "model.safetensors").read_bytes()[8 : 8 + header_length])
    layer = "vision_model.encoder.layers.0.mlp.fc1"
    assert header[f"{layer}.weight"]["dtype"] == "I8"
    assert header[f"{layer}.weight_scale"]["dtype"] == "F32"
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    record = config["quantization_config"]
    assert record["quant_method"] == "int8" and record["activations"] == "static"
    assert isinstance(record["float_layers"], list) and record["smoothing"].startswith("smoothquant")

    reloaded = AutoModel.from_pretrained(tmp_path / "int8")  # the int8 structure comes back from config.json
    assert [type(m) for m in reloaded.modules()] == [type(m) for m in model.modules()]  # kept-float layers too
    assert isinstance(reloaded.vision_model.encoder.layers[0].mlp.fc1, Int8Linear)
    assert reloaded.vision_model.encoder.layers[0].mlp.fc1.is_static
    with torch.inference_mode():
        for before, after in zip(
            zero_shot(model, images, ids, torch.bfloat16), zero_shot(reloaded, images, ids, torch.bfloat16)
        ):
            assert torch.equal(before, after)
    with pytest.raises(InputError, match="already quantized"):
        reloaded.quantize("int8")


def test_siglip2_naflex_int8(tmp_path):
    torch.manual_seed(0)
    text = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, patch_size=16)
    Siglip2Model(Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 64})).save_pretrained(tmp_path)
    processor = siglip.Siglip2ImageProcessor(patch_size=16, max_num_patches=64)
    photos = [Image.open(FIXTURES / name).convert("RGB") for name in PHOTOS]
    inputs = processor(images=photos, return_tensors="pt")
    reference = Siglip2Model.from_pretrained(tmp_path)
    dynamic = Siglip2Model.from_pretrained(tmp_path, quantization="int8")
    calibration = {name: tensor[:2] for name, tensor in inputs.items()}  # NaFlex inputs of two photos
    static = Siglip2Model.from_pretrained(tmp_path, quantization="int8", calibration=calibration)
    assert static.vision_model.encoder.layers[1].mlp.fc2.is_static
    with torch.inference_mode():
        expected = reference.get_image_features(**inputs)
        for model in (dynamic, static):
            assert cosines(model.get_image_features(**inputs), expected).min() >= 0.999


def test_loaded_and_run_inside_inference_mode_and_compiled(vision_dir, photo_pixels):
    with torch.inference_mode():
        model = SiglipVisionModel.from_pretrained(vision_dir, quantization="int8")
        eager = model(pixel_values=photo_pixels[:2]).pooler_output
        compiled = SiglipVisionModel.from_pretrained(vision_dir, quantization="int8").compile()
        got = compiled(pixel_values=photo_pixels[:2]).pooler_output
    # inductor fuses the float ops around the int8 GEMMs (LayerNorm, softmax): equal up to rounding
    assert cosines(got, eager).min() >= 0.99999
    assert (got - eager).abs().max() <= 1e-3 * eager.abs().max()


def test_int8_runs_under_a_warnings_as_errors_filter_set_after_import(vision_dir):
    """pytest's `filterwarnings = error` (or `warnings.simplefilter("error")`) is set after siglip is imported and
    overrides siglip's own filter: PyTorch's one-time deprecation notice of torch.quantize_per_tensor, raised as an
    error, broke the first int8 forward pass. A fresh process, as the notice is once per process."""
    script = (
        "import warnings, torch\n"
        "from siglip import SiglipVisionModel\n"
        "warnings.simplefilter('error')\n"
        f"model = SiglipVisionModel.from_pretrained({str(vision_dir)!r}, quantization='int8')\n"
        "with torch.inference_mode():\n"
        "    print(tuple(model(pixel_values=torch.randn(1, 3, 224, 224)).pooler_output.shape))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(1, 768)"


def test_int8_refuses_other_devices_and_methods(vision_dir):
    with pytest.raises(InputError, match="CPU only"):
        SiglipVisionModel.from_pretrained(vision_dir, quantization="int8", device="meta")
    with pytest.raises(InputError, match="quantization must be"):
        SiglipVisionModel.from_pretrained(vision_dir, quantization="int4")
    model = SiglipVisionModel.from_pretrained(vision_dir)
    with pytest.raises(InputError, match="method='int8'"):
        model.quantize("fp8")
    with pytest.raises(InputError, match="CPU only"):
        model.to("meta").quantize("int8")
    layer = Int8Linear.from_linear(torch.nn.Linear(8, 4))
    with pytest.raises(InputError, match="CPU only"):
        int8_linear([layer], torch.zeros(2, 8, device="meta"))
    with pytest.raises(InputError, match="calibration must be"):
        SiglipVisionModel.from_pretrained(vision_dir, quantization="int8", calibration=["not an image tensor"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int8_refuses_cuda(vision_dir):
    with pytest.raises(InputError, match="CPU only"):
        SiglipVisionModel.from_pretrained(vision_dir, quantization="int8", device="cuda")


def test_int8_checkpoint_with_wrong_integer_dtype_is_refused(tmp_path, vision_dir):
    from safetensors.torch import load_file, save_file

    model = SiglipVisionModel.from_pretrained(vision_dir, quantization="int8")
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    name = "encoder.layers.0.mlp.fc1.weight"
    tensors[name] = tensors[name].to(torch.int32)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(siglip.CheckpointError, match="I32"):
        SiglipVisionModel.from_pretrained(tmp_path)


def test_full_model_text_and_image_towers_quantize(photo_pixels, tmp_path):
    torch.manual_seed(1)
    text = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, patch_size=32)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config={**vision, "image_size": 224})).eval()
    ids = torch.randint(1, 64, (4, 16))
    with torch.inference_mode():
        expected = model(input_ids=ids, pixel_values=photo_pixels[:4])
    model.quantize("int8", calibration={"input_ids": ids[:2], "pixel_values": photo_pixels[:2]})
    # each tower measured on its own calibration inputs; what the self-check kept float or moved to per-call scales
    # is recorded and counted (q, k and v share one quantised input: they step back together)
    record = model.config.quantization_config
    kept, dynamic = record["float_layers"], record["dynamic_layers"]
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 2 * 2 * 6 - len(kept)
    assert len(kept) <= 4 and all(isinstance(model.get_submodule(name), torch.nn.Linear) for name in kept)
    assert not set(kept) & set(dynamic)
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            assert module.is_static == (name not in dynamic), name
    for name in dynamic:
        if name.endswith("q_proj"):
            assert {name[:-6] + "k_proj", name[:-6] + "v_proj"} <= set(dynamic) | set(kept)
    with torch.inference_mode():
        got = model(input_ids=ids, pixel_values=photo_pixels[:4])
    assert cosines(got.text_embeds, expected.text_embeds).min() >= 0.999
    assert cosines(got.image_embeds, expected.image_embeds).min() >= 0.999
    model.save_pretrained(tmp_path)  # per-call scales are saved as such (an input scale of 0) and reload the same
    reloaded = SiglipModel.from_pretrained(tmp_path)
    modes = {name: m.is_static for name, m in reloaded.named_modules() if isinstance(m, Int8Linear)}
    assert modes == {name: m.is_static for name, m in model.named_modules() if isinstance(m, Int8Linear)}
    with torch.inference_mode():
        again = reloaded(input_ids=ids, pixel_values=photo_pixels[:4])
    assert torch.equal(again.logits_per_image, got.logits_per_image)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siglip", *args], capture_output=True, text=True, timeout=300)


def test_cli_classify_int8_gives_the_fp32_answers():
    labels = json.loads((EXAMPLES / "labels.json").read_text())
    common = ["classify", str(EXAMPLES), "-m", str(DEMO), "--labels", *labels["candidate_labels"], "--json"]
    answers = {}
    for dtype in ("fp32", "int8"):
        result = run_cli(*common, "--dtype", dtype)
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        answers[dtype] = {Path(r["image"]).name: r["results"][0]["label"] for r in records}
    assert answers["int8"] == answers["fp32"]
    assert answers["int8"] == labels["images"]


def test_serve_engine_loads_int8():
    from siglip.serve.engine import load_model

    model, _ = load_model(str(DEMO), dtype="int8")
    assert isinstance(model.vision_model.encoder.layers[0].mlp.fc2, Int8Linear)
    assert next(model.parameters()).device.type == "cpu"


def test_cli_quantize_writes_a_calibrated_folder_every_command_loads(tmp_path):
    out = tmp_path / "demo-int8"
    result = run_cli("quantize", str(DEMO), "--calibration", str(EXAMPLES), "--max-images", "6", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "calibrated on 6 image(s) only" in result.stderr
    assert {"config.json", "model.safetensors", "spiece.model", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()
    }
    model = AutoModel.from_pretrained(out, device="auto")  # int8 runs on CPU: "auto" means the CPU
    assert model.device.type == "cpu"
    # the demo's text tower (sharp attention from its training recipe) keeps most of its linears float
    assert_int8_layout(model, "static", linears=2 * 4 * 6, most_float=24)
    labels = json.loads((EXAMPLES / "labels.json").read_text())
    result = run_cli("classify", str(EXAMPLES), "-m", str(out), "--labels", *labels["candidate_labels"], "--json")
    assert result.returncode == 0, result.stderr
    answers = {Path(r["image"]).name: r["results"][0]["label"] for r in map(json.loads, result.stdout.splitlines())}
    assert answers == labels["images"]
    missing = run_cli("quantize", str(DEMO), "--calibration", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "error" in missing.stderr


def test_calibration_batch_default_texts_and_image_tower_only(vision_dir):
    from siglip.quantization.calibration import DEFAULT_TEXTS, calibration_batch

    model, processor = AutoModel.from_pretrained(DEMO), AutoProcessor.from_pretrained(DEMO)
    photos = [Image.open(FIXTURES / name).convert("RGB") for name in PHOTOS]
    batch = calibration_batch(model, processor, photos)
    assert batch["pixel_values"].shape[0] == len(photos)
    assert batch["input_ids"].shape == (len(DEFAULT_TEXTS), model.config.text_config.max_position_embeddings)
    vision = SiglipVisionModel.from_pretrained(vision_dir)
    with pytest.raises(InputError, match="at least one image"):
        calibration_batch(vision, siglip.SiglipImageProcessor(), [])


def test_pipeline_with_int8_model_kwargs():
    labels = json.loads((EXAMPLES / "labels.json").read_text())
    pipe = siglip.pipeline(model=str(DEMO), model_kwargs={"quantization": "int8"})
    assert isinstance(pipe.model.vision_model.encoder.layers[0].mlp.fc1, Int8Linear)
    best = pipe(str(EXAMPLES / "red_square.png"), candidate_labels=labels["candidate_labels"])[0]
    assert best["label"] == labels["images"]["red_square.png"]


def test_onnx_export_of_an_int8_model_is_refused_clearly(vision_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from siglip.export import export_onnx

    model = SiglipVisionModel.from_pretrained(vision_dir, quantization="int8")
    with pytest.raises(InputError, match="export the float checkpoint"):
        export_onnx(model, tmp_path / "onnx", tower="vision")


def test_text_calibration_covers_every_position_of_the_last_layer():
    """get_text_features runs the last layer at the last position only; static scales are calibrated on the full
    forward, so that text_model(...) (every position) is as accurate as the pooled embedding."""
    torch.manual_seed(2)
    text = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, patch_size=32)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config={**vision, "image_size": 64})).eval()
    ids = torch.randint(1, 64, (4, 16))
    seen = []
    fc1 = model.text_model.encoder.layers[-1].mlp.fc1
    handle = fc1.register_forward_pre_hook(lambda module, args: seen.append(torch.aminmax(args[0].float())))
    model.set_weight_packing(False)
    with torch.no_grad():
        expected = model.text_model(input_ids=ids).last_hidden_state
    handle.remove()
    model.set_weight_packing(True)
    model.quantize("int8", calibration=ids, min_cosine=None)  # the scales alone (no layer kept float)
    from siglip.kernels.int8 import activation_qparams
    from siglip.quantization.convert import CALIBRATION_MARGIN

    quantized = model.text_model.encoder.layers[-1].mlp.fc1
    low, high = (min(seen[0].min.item(), 0.0), max(seen[0].max.item(), 0.0))  # over all 16 positions
    scale, zero_point = activation_qparams(low * CALIBRATION_MARGIN, high * CALIBRATION_MARGIN)
    assert quantized.input_scale.item() == pytest.approx(scale, rel=1e-5)
    assert quantized.input_zero_point.item() == zero_point
    with torch.inference_mode():
        got = model.text_model(input_ids=ids).last_hidden_state
    assert cosines(got.flatten(0, 1), expected.flatten(0, 1)).min() >= 0.999


def test_error_feedback_rounding_beats_plain_rounding_on_unseen_inputs():
    """quantization/rounding.py (GPTQ-style): the same scales and integer range as plain rounding, a smaller output
    error on inputs it did not see (correlated channels, one channel always 0), at 7 and 8 bits."""
    from siglip.kernels.int8 import quantize_weight
    from siglip.quantization.rounding import error_feedback_round

    torch.manual_seed(0)
    inputs = torch.randn(4096, 64) @ torch.randn(64, 64)
    inputs[:, 5] = 0.0
    seen, unseen = inputs[:2048], inputs[2048:]
    weight = torch.randn(32, 64)
    expected = unseen @ weight.T

    def error(integers: torch.Tensor, scale: torch.Tensor) -> float:
        return float((unseen @ (integers.float() * scale[:, None]).T - expected).norm() / expected.norm())

    for limit in (63, 127):
        plain, plain_scale = quantize_weight(weight, limit)
        rounded, scale = error_feedback_round(weight, seen.T @ seen, limit)
        assert rounded.dtype == torch.int8 and int(rounded.abs().max()) <= limit
        assert torch.allclose(scale, plain_scale)
        assert error(rounded, scale) < 0.8 * error(plain, plain_scale), (limit, error(rounded, scale))


def test_narrow_towers_are_told_int8_brings_no_speed(tmp_path, capsys):
    """Below the width from which int8 GEMMs beat fp32 on this CPU (kernels/int8.py, INT8_MIN_WIDTH_*: 96 without
    VNNI, 64 with), quantize("int8") says so with the measured reason, and --dtype int8 (runtime.load_model) runs
    the float model with a one-line notice. At the demo's width (128) neither happens: it loads as int8."""
    import warnings

    from siglip.kernels.cpu import cpu_features
    from siglip.runtime import load_model

    torch.manual_seed(0)
    config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=16)  # fmt: skip
    SiglipVisionModel(config).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"int8 will not make this model faster .* at width 32 .* measured"):
        quantized = SiglipVisionModel.from_pretrained(tmp_path).quantize("int8")
    assert any(isinstance(m, Int8Linear) for m in quantized.modules())  # asked for explicitly: done
    model = load_model(tmp_path, dtype="int8")
    notice = capsys.readouterr().err
    rest = "bfloat16" if cpu_features().native_bf16 else "float32"  # the float dtype an int8 model keeps
    assert "siglip: notice: int8 will not make this model faster" in notice and f"running {rest} instead" in notice
    assert not any(isinstance(module, Int8Linear) for module in model.modules())
    assert notice.count("\n") == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        demo = load_model(DEMO, dtype="int8")
    assert isinstance(demo.vision_model.encoder.layers[0].mlp.fc2, Int8Linear)
    assert not [w for w in caught if "will not make" in str(w.message)]
    assert "notice" not in capsys.readouterr().err
