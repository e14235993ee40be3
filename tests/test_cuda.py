"""The CUDA paths: parity with transformers on the GPU, loading onto it, the pipeline and bulk embedding there.

Skipped without CUDA (this repository's CI has none); `benchmarks/gpu_check.sh` runs them on a GPU machine.
fp32 must match transformers to 1e-4 (TF32 off). In bf16/fp16 two implementations round differently, so each
is compared with an fp32 CPU reference: our error may be at most twice transformers' own (plus a small floor).
`SIGLIP_TEST_DEVICE=cpu` runs the same tests on the CPU (CUDA-only cases skipped), to check the tests themselves.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from conftest import FIXTURES, PHOTOS, max_diff, random_ids
from test_model_parity import perturb_, reference_model
from test_siglip2_model import VISION_P16, processor_inputs, reference_checkpoint

import siglip
from siglip.kernels.packed import PackedWeights

DEVICE = os.environ.get("SIGLIP_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these)"
)
ON_CUDA = DEVICE.startswith("cuda")
HAS_FLASH = importlib.util.find_spec("flash_attn") is not None
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FLOOR = {"fp32": 0.0, "bf16": 2e-2, "fp16": 3e-3}
# head_dim 16 (flash-attn needs a multiple of 8), several layers so rounding has room to accumulate.
TEXT = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4)
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=64)
OUTPUTS = ("text_embeds", "image_embeds", "logits_per_image")


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 on CUDA means fp32: TF32 matmuls and convolutions would differ from the CPU by ~1e-3."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def implementations(dtype_name: str) -> list[str]:
    """flash-attn takes half precision on CUDA only, when installed."""
    found = ["sdpa", "eager"]
    if ON_CUDA and HAS_FLASH and dtype_name != "fp32":
        found.append("flash_attention_2")
    return found


MATRIX = [(d, i) for d in DTYPES for i in ("sdpa", "eager", "flash_attention_2")]


def skip_unless_available(dtype_name: str, implementation: str) -> None:
    if implementation not in implementations(dtype_name):
        pytest.skip(f"{implementation} in {dtype_name} needs flash-attn on a CUDA GPU")


def to_device(inputs: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(DEVICE, dtype) if v.is_floating_point() else v.to(DEVICE) for k, v in inputs.items()}


def assert_close_to_reference(mine: dict, theirs: dict, exact: dict, dtype_name: str) -> None:
    for key in OUTPUTS:
        ours, ref, truth = mine[key].float().cpu(), theirs[key].float().cpu(), exact[key].float()
        if dtype_name == "fp32":
            assert max_diff(ours, ref) <= 1e-4, key
        else:
            error, reference_error = max_diff(ours, truth), max_diff(ref, truth)
            assert error <= 2 * reference_error + FLOOR[dtype_name], (key, error, reference_error)


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda_siglip")
    model = reference_model(TEXT, VISION)
    perturb_(model)
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("dtype_name,implementation", MATRIX)
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "padding_mask"])
def test_siglip_matches_transformers_on_device(siglip_folder, pixel_batch, dtype_name, implementation, masked):
    skip_unless_available(dtype_name, implementation)
    dtype = DTYPES[dtype_name]
    inputs = dict(input_ids=random_ids(TEXT["vocab_size"], 3, 16), pixel_values=pixel_batch(64, count=3))
    if masked:  # padded texts of 16, 9 and 4 tokens
        inputs["attention_mask"] = (torch.arange(16)[None] < torch.tensor([[16], [9], [4]])).long()
    exact_model = transformers.SiglipModel.from_pretrained(siglip_folder, attn_implementation="eager").eval()
    theirs_model = transformers.SiglipModel.from_pretrained(
        siglip_folder, dtype=dtype, attn_implementation=implementation
    )
    ours_model = siglip.SiglipModel.from_pretrained(
        siglip_folder, dtype=dtype, device=DEVICE, attn_implementation=implementation
    )
    with torch.no_grad():
        exact = exact_model(**inputs)
        theirs = theirs_model.to(DEVICE).eval()(**to_device(inputs, dtype))
        mine = ours_model.eval()(**to_device(inputs, dtype))
    assert mine.text_embeds.device.type == torch.device(DEVICE).type and mine.text_embeds.dtype == dtype
    assert_close_to_reference(mine, theirs, exact, dtype_name)


@pytest.mark.parametrize("dtype_name,implementation", MATRIX)
def test_siglip2_naflex_matches_transformers_on_device(tmp_path, dtype_name, implementation):
    skip_unless_available(dtype_name, implementation)
    dtype = DTYPES[dtype_name]
    exact_model = reference_checkpoint(tmp_path, VISION_P16)  # mixed aspect ratios: every batch has padding
    inputs = dict(processor_inputs(256), input_ids=random_ids(99, 6, 16))
    theirs_model = transformers.Siglip2Model.from_pretrained(tmp_path, dtype=dtype, attn_implementation=implementation)
    ours_model = siglip.Siglip2Model.from_pretrained(
        tmp_path, dtype=dtype, device=DEVICE, attn_implementation=implementation
    )
    with torch.no_grad():
        exact = exact_model(**inputs)
        on_device = to_device(inputs, dtype)
        theirs = theirs_model.to(DEVICE).eval()(**on_device)
        mine = ours_model.eval()(**on_device)
        vision = {k: v for k, v in on_device.items() if k != "input_ids"}
        packed = ours_model.get_image_features(**vision, packed=True)
    assert_close_to_reference(mine, theirs, exact, dtype_name)
    error = max_diff(packed.float().cpu(), exact.vision_model_output.pooler_output)
    reference_error = max_diff(
        theirs.vision_model_output.pooler_output.float().cpu(), exact.vision_model_output.pooler_output
    )
    assert error <= 2 * reference_error + max(FLOOR[dtype_name], 1e-4)


@pytest.mark.parametrize("option", ["device", "device_map"])
def test_loading_onto_the_device_by_name_and_auto(siglip_folder, pixel_batch, option):
    name = DEVICE if option == "device" else ("auto" if ON_CUDA else DEVICE)
    model = siglip.SiglipModel.from_pretrained(siglip_folder, **{option: name}).eval()
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    assert devices == {torch.device(DEVICE).type}
    reference = siglip.SiglipModel.from_pretrained(siglip_folder).eval()
    pixels = pixel_batch(64, count=2)
    with torch.no_grad():
        on_device = model.get_image_features(pixel_values=pixels.to(DEVICE)).cpu()
        assert max_diff(on_device, reference.get_image_features(pixel_values=pixels)) <= 1e-4


@pytest.mark.skipif(not ON_CUDA, reason="the CPU packs weights by design")
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
def test_no_onednn_packing_on_cuda(siglip_folder, pixel_batch, dtype_name):
    model = siglip.SiglipModel.from_pretrained(siglip_folder, dtype=DTYPES[dtype_name], device=DEVICE).eval()
    with torch.inference_mode():
        model(
            input_ids=random_ids(TEXT["vocab_size"], 2, 16).to(DEVICE),
            pixel_values=pixel_batch(64, count=2).to(DEVICE, DTYPES[dtype_name]),
        )
    caches = [v for m in model.modules() for v in vars(m).values() if isinstance(v, PackedWeights)]
    assert caches, "the towers' linears carry PackedWeights caches"
    assert all(cache._value is None for cache in caches)


@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
def test_compiled_model_on_device_equals_eager(siglip_folder, pixel_batch, dtype_name):
    dtype = DTYPES[dtype_name]
    model = siglip.SiglipModel.from_pretrained(siglip_folder, dtype=dtype, device=DEVICE).eval()
    inputs = dict(
        input_ids=random_ids(TEXT["vocab_size"], 3, 16).to(DEVICE),
        pixel_values=pixel_batch(64, count=3).to(DEVICE, dtype),
    )
    with torch.inference_mode():
        eager = model(**inputs)
        compiled = torch.compile(model)(**inputs)
    tolerance = 1e-4 if dtype_name == "fp32" else 3e-2
    for key in OUTPUTS:
        assert max_diff(compiled[key].float(), eager[key].float()) <= tolerance, key


def test_loss_and_backward_on_device(siglip_folder, pixel_batch):
    model = siglip.SiglipModel.from_pretrained(siglip_folder, device=DEVICE).train()
    reference = siglip.SiglipModel.from_pretrained(siglip_folder).train()
    inputs = dict(
        input_ids=random_ids(TEXT["vocab_size"], 4, 16), pixel_values=pixel_batch(64, count=4), return_loss=True
    )
    on_device = {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in inputs.items()}
    loss, expected = model(**on_device).loss, reference(**inputs).loss
    loss.backward()
    expected.backward()
    assert abs(loss.item() - expected.item()) <= 1e-4
    grad, expected_grad = model.logit_scale.grad.cpu(), reference.logit_scale.grad
    assert max_diff(grad, expected_grad) <= 1e-3 * max(1.0, expected_grad.abs().max().item())


def test_pipeline_on_device_equals_cpu(reference_checkpoint):
    labels = ["a cat", "a dog", "a rocket", "coffee"]
    images = [str(FIXTURES / name) for name in PHOTOS]
    on_device = siglip.pipeline(model=str(reference_checkpoint), device=DEVICE)(images, candidate_labels=labels)
    on_cpu = siglip.pipeline(model=str(reference_checkpoint), device="cpu")(images, candidate_labels=labels)
    for mine, expected in zip(on_device, on_cpu):
        assert [r["label"] for r in mine] == [r["label"] for r in expected]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(mine, expected)) <= 1e-4


def test_bulk_embed_on_device_equals_cpu(reference_checkpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(FIXTURES / name, photos / name)
    embeddings = {}
    for device in (DEVICE, "cpu"):
        out = tmp_path / f"out_{device.replace(':', '_')}"
        command = [sys.executable, "-m", "siglip", "embed", str(photos), "--out", str(out), "--no-progress"]
        result = subprocess.run(
            [*command, "--model", str(reference_checkpoint), "--device", device], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        index = siglip.Index.open(out)
        order = np.argsort(index.paths)
        embeddings[device] = index.vectors(np.arange(len(index)))[order]
    assert np.abs(embeddings[DEVICE] - embeddings["cpu"]).max() <= 1e-4
