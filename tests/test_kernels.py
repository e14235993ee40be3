"""The CPU kernel layer (siglip/kernels/): what it reads from the CPU agrees with oneDNN, and every dtype is right
on this CPU: int8 (dynamic and static, fp32 and bf16 elsewhere, saved and reloaded, SigLIP and SigLIP2 NaFlex,
towers built by transformers' own initialisation, towers with outlier channels) and bf16.

These are the ISA-sensitive checks: tests/test_isa_matrix.py runs this file again under every lower instruction
set the machine can emulate (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), so an AMX host sees what an AVX2 one does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import FIXTURES, PHOTOS, to_pixel_values
from PIL import Image

import siglip
from siglip import InputError, Siglip2Config, Siglip2Model, SiglipTextModel, SiglipVisionModel
from siglip.kernels import linear as kernels
from siglip.kernels.cpu import INT8_WEIGHT_MAX_REDUCED, cpu_features
from siglip.kernels.int8 import Int8Linear, narrowed_weight, quantize_weight
from siglip.kernels.packed import module_cache
from siglip.kernels.plan import kernel_plan

FEATURES = cpu_features()
needs_int8 = pytest.mark.skipif(not FEATURES.int8_supported, reason=f"no int8 kernels on {FEATURES.onednn_isa}")
CAPTIONS = [
    "a photo of an astronaut",
    "a cat sleeping on a sofa",
    "a red motorcycle on a road",
    "a cup of coffee on a table",
    "a horse in a field",
    "the logo of a software project",
]


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


@pytest.fixture(scope="module")
def photo_pixels() -> torch.Tensor:
    """The fixture photos and their mirror images at 224 px (8 images)."""
    photos = [Image.open(FIXTURES / name).convert("RGB") for name in PHOTOS]
    photos += [photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for photo in photos]
    return torch.stack([to_pixel_values(photo, (224, 224)) for photo in photos])


def transformers_vision_tower(folder, width: int, heads: int, layers: int = 2, outliers: dict | None = None):
    """A SigLIP image tower with transformers' own initialisation, optionally with outlier channels: LayerNorm
    gains (`ln1` before attention, `ln2` before the MLP) or position-embedding channels scaled by a factor."""
    torch.manual_seed(width + heads)
    config = transformers.SiglipVisionConfig(
        hidden_size=width, num_attention_heads=heads, num_hidden_layers=layers, intermediate_size=4 * width
    )
    model = transformers.SiglipVisionModel(config)
    channels = torch.randperm(width)[:3]
    with torch.no_grad():
        for kind, factor in (outliers or {}).items():
            if kind == "embedding":
                model.embeddings.position_embedding.weight[:, channels[:2]] *= factor
            for layer in model.encoder.layers:
                norm = {"ln1": layer.layer_norm1, "ln2": layer.layer_norm2}.get(kind)
                if norm is not None:
                    norm.weight[channels] *= factor
    model.save_pretrained(folder)
    return folder


# ---- what the kernels read from the CPU ----------------------------------------------------------------------
@pytest.mark.skipif(not FEATURES.is_x86 or not FEATURES.onednn_available, reason="oneDNN's x86 ISA report")
def test_cpu_features_agree_with_onednn():
    """The ISA siglip decides by is the one oneDNN runs (its verbose report), caps included."""
    script = (
        "import torch\nx = torch.randn(8, 16)\n"
        "torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(torch.randn(16, 16), 8),"
        " None, 'none', [], '')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True
    )
    lines = [line for line in run.stdout.splitlines() if ",isa:" in line]
    assert lines, run.stdout + run.stderr
    isa = lines[0].split(",isa:", 1)[1]
    assert FEATURES.amx == ("AMX" in isa), isa
    assert FEATURES.native_bf16 == ("bfloat16" in isa), isa
    assert FEATURES.int8_vnni == ("DL Boost" in isa or "AMX" in isa or "VNNI" in isa), isa
    assert FEATURES.level_at_least("AVX512_CORE") == ("AVX-512" in isa or "AVX10" in isa), isa


def test_kernel_plan_and_doctor_say_what_runs():
    plan = {choice.dtype: choice for choice in kernel_plan()}
    assert set(plan) == {"fp32", "bf16", "fp16", "int8"}
    assert plan["int8"].available == FEATURES.int8_supported
    if FEATURES.int8_supported:
        assert ("7-bit" in plan["int8"].gemm) != FEATURES.int8_vnni
    assert ("computed in fp32" in plan["bf16"].gemm) != FEATURES.native_bf16
    run = subprocess.run([sys.executable, "-m", "siglip", "doctor", "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["cpu"]["onednn_isa"] == FEATURES.onednn_isa
    assert report["cpu"]["int8_weight_max"] == FEATURES.int8_weight_max
    assert [k["dtype"] for k in report["kernels"]] == ["fp32", "bf16", "fp16", "int8"]
    text = subprocess.run([sys.executable, "-m", "siglip", "doctor"], capture_output=True, text=True)
    assert text.returncode == 0 and f"oneDNN ISA: {FEATURES.onednn_isa}" in text.stdout


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch without oneDNN: no packed GEMMs")
def test_fp32_gelu_inside_the_gemm_only_from_avx512(monkeypatch):
    """fc1's GELU: oneDNN's post-op from AVX-512 up, a blocked pass after the GEMM below (where the post-op is the
    slower way); either way the numbers are PyTorch's `F.gelu` over `F.linear` (what transformers computes)."""
    from siglip.kernels import packed

    assert packed._FP32_GELU_AFTER == (not FEATURES.level_at_least("AVX512_CORE"))
    fp32 = {choice.dtype: choice for choice in kernel_plan()}["fp32"]
    assert ("then GELU in cache-sized blocks" in fp32.gemm) == packed._FP32_GELU_AFTER
    torch.manual_seed(0)
    layer, inputs = torch.nn.Linear(96, 384), torch.randn(300, 96)
    for after in (True, False):
        monkeypatch.setattr(packed, "_FP32_GELU_AFTER", after)
        module_cache(layer).clear()
        for name, approximate in (("gelu_pytorch_tanh", "tanh"), ("gelu", "none")):
            with torch.inference_mode():
                got = kernels.linear(layer, inputs, name, lambda x, a=approximate: F.gelu(x, approximate=a))
                want = F.gelu(F.linear(inputs, layer.weight, layer.bias), approximate=approximate)
            assert (got - want).abs().max().item() < 1e-5, (after, name)


def test_blocked_gelu_is_pytorchs_tanh_gelu_in_place_and_steps_aside_for_autograd():
    """kernels/gelu.py: x * sigmoid(2u) over blocks of rows equals F.gelu(approximate="tanh") to fp32 rounding,
    over the whole range (large negatives underflow to -0, large positives stay x, NaN stays NaN), in place on a
    CPU fp32 tensor; where autograd needs the graph, or the tensor is not CPU fp32 contiguous, it is F.gelu."""
    from siglip.kernels.gelu import BLOCK_ELEMENTS, gelu_tanh_

    generator = torch.Generator().manual_seed(0)
    rows = 2 * BLOCK_ELEMENTS // 384 + 7  # several blocks and a partial one
    values = torch.randn(rows, 384, generator=generator) * 4
    values[0, :8] = torch.tensor([0.0, -0.0, 1e-30, -60.0, 60.0, 3e4, -3e4, float("nan")])
    want = F.gelu(values.double(), approximate="tanh")
    inputs = values.clone()
    got = gelu_tanh_(inputs)
    assert got.data_ptr() == inputs.data_ptr()  # in place
    finite = want.isfinite()
    assert (got.double() - want)[finite].abs().max().item() < 2e-6
    assert torch.equal(got.isnan(), want.isnan())
    assert (F.gelu(values, approximate="tanh").double() - want)[finite].abs().max().item() < 2e-6  # PyTorch's own
    assert gelu_tanh_(torch.empty(0, 384)).shape == (0, 384)

    sample = values[1:65]  # no NaN
    leaf = sample.clone().requires_grad_()
    gelu_tanh_(leaf * 1).sum().backward()  # autograd: F.gelu's graph, the input untouched
    reference = sample.clone().requires_grad_()
    F.gelu(reference, approximate="tanh").sum().backward()
    assert torch.allclose(leaf.grad, reference.grad)
    for other in (sample.bfloat16(), sample.t(), sample.double()):
        before = other.clone()
        result = gelu_tanh_(other)
        assert torch.equal(other, before) and torch.allclose(result, F.gelu(before, approximate="tanh"))


# ---- int8 ----------------------------------------------------------------------------------------------------
@needs_int8
def test_int8_weights_fit_this_cpus_accumulator():
    """Without VNNI the weights use 7 bits (2 x 255 x 63 fits vpmaddubsw's 16-bit lanes); a checkpoint quantised
    to 8 bits on a VNNI CPU is narrowed for the packed copy, keeping its values within the coarser step."""
    torch.manual_seed(0)
    weight = torch.randn(32, 64)
    quantized, scale = quantize_weight(weight)
    assert int(quantized.abs().max()) == FEATURES.int8_weight_max
    full, full_scale = quantize_weight(weight, 127)
    narrow, narrow_scale = narrowed_weight(full, full_scale, INT8_WEIGHT_MAX_REDUCED)
    assert int(narrow.abs().max()) <= INT8_WEIGHT_MAX_REDUCED
    error = (narrow.float() * narrow_scale[:, None] - weight).abs().max()
    assert error <= 0.75 * narrow_scale.max() + 1e-6  # half a 7-bit step plus half an 8-bit step at most


@needs_int8
@pytest.mark.parametrize("rest", [torch.float32, torch.bfloat16], ids=["fp32-rest", "bf16-rest"])
@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_int8_transformers_initialised_towers(tmp_path, photo_pixels, activations, rest):
    """Towers made by transformers' init at two widths / head counts, real photos: cosine >= 0.999 to fp32."""
    for width, heads in ((256, 2), (384, 6)):
        folder = transformers_vision_tower(tmp_path / f"{width}", width, heads)
        with torch.inference_mode():
            expected = SiglipVisionModel.from_pretrained(folder)(pixel_values=photo_pixels).pooler_output
        calibration = photo_pixels[:4].to(rest) if activations == "static" else None
        model = SiglipVisionModel.from_pretrained(folder, dtype=rest, quantization="int8", calibration=calibration)
        with torch.inference_mode():
            got = model(pixel_values=photo_pixels.to(rest)).pooler_output
        assert got.dtype == rest
        assert cosines(got, expected).min() >= 0.999, (width, heads, cosines(got, expected))


@needs_int8
def test_dynamic_int8_fits_its_rounding_on_synthetic_inputs_and_checks_on_others(tmp_path, photo_pixels, monkeypatch):
    """Without calibration, 7-bit weights (CPUs without VNNI) are rounded with error feedback fitted to synthetic
    inputs (seed 0, damped harder) and the self-check runs on other synthetic inputs; 8-bit weights round plainly."""
    from siglip.quantization import convert

    fits, seeds = [], []
    real_round, real_synthetic = convert.error_feedback_round, convert.synthetic_batches
    monkeypatch.setattr(convert, "error_feedback_round", lambda *a: fits.append(a[3]) or real_round(*a))
    monkeypatch.setattr(convert, "synthetic_batches", lambda m, seed=0: seeds.append(seed) or real_synthetic(m, seed))
    folder = transformers_vision_tower(tmp_path / "tower", 256, 4)
    with torch.inference_mode():
        expected = SiglipVisionModel.from_pretrained(folder)(pixel_values=photo_pixels).pooler_output
    model = SiglipVisionModel.from_pretrained(folder, quantization="int8")
    assert sorted(seeds) == [0, convert.CHECK_SEED]
    inputs = 4 * 2  # q/k/v (one input), out_proj, fc1, fc2 in each of 2 layers
    assert fits == ([convert.SYNTHETIC_DAMPING] * inputs if FEATURES.int8_weight_max < 127 else [])
    with torch.inference_mode():
        got = model(pixel_values=photo_pixels).pooler_output
    assert cosines(got, expected).min() >= 0.999, cosines(got, expected)


@needs_int8
@pytest.mark.parametrize(
    "outliers", [{"ln2": 50.0}, {"embedding": 100.0}, {"ln1": 10.0, "ln2": 20.0}], ids=["ln2x50", "emb100", "ln"]
)
@pytest.mark.parametrize("activations", ["dynamic", "static"])
def test_int8_towers_with_outlier_channels(tmp_path, photo_pixels, outliers, activations):
    """A few LayerNorm-gain or residual-stream channels 10-100x the rest: scale migration (and, where needed,
    float fallback) keeps cosine >= 0.999 on photos the calibration did not see."""
    folder = transformers_vision_tower(tmp_path / "tower", 384, 6, outliers=outliers)
    with torch.inference_mode():
        expected = SiglipVisionModel.from_pretrained(folder)(pixel_values=photo_pixels).pooler_output
    calibration = photo_pixels[:4] if activations == "static" else None
    model = SiglipVisionModel.from_pretrained(folder, quantization="int8", calibration=calibration)
    assert model.config.quantization_config["smoothing"].startswith("smoothquant")
    with torch.inference_mode():
        got = model(pixel_values=photo_pixels).pooler_output
    assert cosines(got, expected).min() >= 0.999, cosines(got, expected)


@needs_int8
def test_int8_text_tower_on_real_captions(tmp_path, reference_checkpoint):
    """The text tower of a transformers-initialised model, real captions through the real tokenizer."""
    torch.manual_seed(3)
    config = transformers.SiglipTextConfig(
        vocab_size=1500, hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4
    )
    transformers.SiglipTextModel(config).save_pretrained(tmp_path)
    tokenizer = siglip.AutoTokenizer.from_pretrained(reference_checkpoint)
    ids = tokenizer(CAPTIONS, padding="max_length", max_length=64, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = SiglipTextModel.from_pretrained(tmp_path)(input_ids=ids).pooler_output
    for calibration in (None, ids[:3]):
        model = SiglipTextModel.from_pretrained(tmp_path, quantization="int8", calibration=calibration)
        with torch.inference_mode():
            got = model(input_ids=ids).pooler_output
        assert cosines(got, expected).min() >= 0.999


@needs_int8
def test_int8_siglip2_naflex_and_reload(tmp_path):
    """SigLIP2 NaFlex int8, calibrated, saved and reloaded: same structure (layers kept float included) and
    numbers; the reloaded model runs on this CPU whatever CPU quantised it."""
    torch.manual_seed(0)
    text = dict(vocab_size=64, hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2)
    vision = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2, patch_size=16)
    Siglip2Model(Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 64})).save_pretrained(
        tmp_path / "float"
    )
    processor = siglip.Siglip2ImageProcessor(patch_size=16, max_num_patches=64)
    photos = [Image.open(FIXTURES / name).convert("RGB") for name in PHOTOS]
    inputs = processor(images=photos, return_tensors="pt")
    with torch.inference_mode():
        expected = Siglip2Model.from_pretrained(tmp_path / "float").get_image_features(**inputs)
    calibration = {name: tensor[:2] for name, tensor in inputs.items()}
    model = Siglip2Model.from_pretrained(tmp_path / "float", quantization="int8", calibration=calibration)
    with torch.inference_mode():
        got = model.get_image_features(**inputs)
    assert cosines(got, expected).min() >= 0.999
    model.save_pretrained(tmp_path / "int8")
    reloaded = Siglip2Model.from_pretrained(tmp_path / "int8")
    kept = model.config.quantization_config["float_layers"]
    assert reloaded.config.quantization_config["float_layers"] == kept
    assert sum(isinstance(m, Int8Linear) for m in reloaded.modules()) == sum(
        isinstance(m, Int8Linear) for m in model.modules()
    )
    with torch.inference_mode():
        assert torch.equal(reloaded.get_image_features(**inputs), got)


@needs_int8
def test_int8_bf16_elsewhere_runs_on_every_cpu(tmp_path, photo_pixels):
    """int8 GEMMs with a bf16 residual: bf16 output where the CPU has it, fp32 then a cast elsewhere (oneDNN
    has no such kernel there: this call raised 'could not create a primitive descriptor' on AVX2)."""
    folder = transformers_vision_tower(tmp_path / "tower", 256, 4)
    model = SiglipVisionModel.from_pretrained(folder, dtype=torch.bfloat16, quantization="int8")
    with torch.inference_mode():
        got = model(pixel_values=photo_pixels[:2].bfloat16()).pooler_output
        expected = SiglipVisionModel.from_pretrained(folder)(pixel_values=photo_pixels[:2]).pooler_output
    assert got.dtype == torch.bfloat16 and cosines(got, expected).min() >= 0.999


@pytest.mark.skipif(FEATURES.int8_supported, reason="int8 runs on this CPU")
def test_int8_refused_clearly_where_it_cannot_run(tmp_path):
    folder = transformers_vision_tower(tmp_path / "tower", 64, 2)
    with pytest.raises(InputError, match="int8 inference needs an x86 CPU with AVX2"):
        SiglipVisionModel.from_pretrained(folder, quantization="int8")


# ---- bf16 ----------------------------------------------------------------------------------------------------
def test_bf16_keeps_half_memory_and_the_numbers(tmp_path, photo_pixels):
    """bf16 weights everywhere; GEMMs in bf16 where the CPU multiplies bf16, in fp32 elsewhere (never the
    emulated bf16 GEMM); cosine > 0.999 to fp32 either way."""
    folder = transformers_vision_tower(tmp_path / "tower", 256, 4)
    model = SiglipVisionModel.from_pretrained(folder, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    fc1 = model.encoder.layers[0].mlp.fc1
    sample = torch.zeros(2, 256, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert module_cache(fc1).usable(sample, fc1.weight) == FEATURES.native_bf16
        assert kernels.compute_dtype(sample) == (torch.bfloat16 if FEATURES.native_bf16 else torch.float32)
        got = model(pixel_values=photo_pixels.bfloat16()).pooler_output
        expected = SiglipVisionModel.from_pretrained(folder)(pixel_values=photo_pixels).pooler_output
    assert got.dtype == torch.bfloat16
    assert cosines(got, expected).min() > 0.999
