"""The speed paths: packed oneDNN linears (default CPU inference), `model.compile()`, bf16, SigLIP2 packing.

Each is checked against the plain path with a stated tolerance, and the checkpoint format is checked to stay the
reference's (fused q/k/v exists only as a packed cache, never in the state dict).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import TINY_CONFIGS, max_diff, random_ids

import siglip
from siglip.kernels import attention
from siglip.kernels import linear as kernels
from siglip.kernels.cpu import cpu_features
from siglip.kernels.packed import EAGER_KERNELS_UNDER_COMPILE, PackedWeights, tensor_key
from siglip.modeling import layers

TEXT, VISION = TINY_CONFIGS["odd_3_heads"]
# fp32 packed vs plain: same math, another summation order.
PACKED_TOL = 1e-5
# compiled (inductor, frozen weights) vs eager, fp32.
COMPILE_TOL = 1e-4


@pytest.fixture()
def model():
    torch.manual_seed(0)
    model = siglip.SiglipModel(siglip.SiglipConfig(text_config=TEXT, vision_config=VISION)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


@pytest.fixture()
def inputs(pixel_batch):
    return dict(input_ids=random_ids(TEXT["vocab_size"], 3, 12), pixel_values=pixel_batch(VISION["image_size"]))


def caches(model: torch.nn.Module) -> list[PackedWeights]:
    return [m.__dict__["packed_weights"] for m in model.modules() if "packed_weights" in m.__dict__]


def plain_outputs(model, inputs):
    model.set_weight_packing(False)
    with torch.no_grad():
        output = model(**inputs)
    model.set_weight_packing(True)
    return output


def test_packed_path_is_used_and_equals_plain(model, inputs):
    plain = plain_outputs(model, inputs)
    assert not any(cache._value is not None for cache in caches(model))
    with torch.no_grad():
        fast = model(**inputs)
    used = [cache for cache in caches(model) if cache._value is not None]
    # Every linear of both towers except the MAP head's query path; q/k/v count once (fused).
    assert len(used) >= 2 * 2 * 4
    for key in ("logits_per_image", "text_embeds", "image_embeds"):
        assert max_diff(fast[key], plain[key]) <= PACKED_TOL, key


def test_packed_cache_follows_in_place_weight_updates(model, inputs):
    with torch.no_grad():
        before = model(**inputs).image_embeds
        model.vision_model.encoder.layers[0].self_attn.k_proj.weight.mul_(1.5)
        model.vision_model.encoder.layers[0].mlp.fc1.bias.add_(0.1)
        after = model(**inputs).image_embeds
    assert max_diff(before, after) > 1e-3
    assert max_diff(after, plain_outputs(model, inputs).image_embeds) <= PACKED_TOL


def test_training_takes_the_differentiable_path(model, inputs):
    """With grad enabled, outputs and gradients are the plain ones (the packed path never sees autograd)."""
    with torch.no_grad():
        model(**inputs)  # fill the caches first
    model.train()
    loss = model(**inputs, return_loss=True).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_weight_packing(False)
    model(**inputs, return_loss=True).loss.backward()
    assert len(grads) > 20
    for name, parameter in model.named_parameters():
        if name in grads:
            assert torch.equal(grads[name], parameter.grad), name


def test_state_dict_keeps_the_reference_names(model, inputs, tmp_path):
    with torch.no_grad():
        expected = model(**inputs).logits_per_image
    reference = transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT, vision_config=VISION))
    assert sorted(model.state_dict()) == sorted(reference.state_dict())
    model.save_pretrained(tmp_path)
    loaded = siglip.SiglipModel.from_pretrained(tmp_path)
    theirs = transformers.SiglipModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert max_diff(loaded(**inputs).logits_per_image, expected) <= PACKED_TOL
        assert max_diff(theirs(**inputs).logits_per_image, expected) <= PACKED_TOL
    clone = copy.deepcopy(model)
    assert all(cache._value is None for cache in caches(clone))
    with torch.no_grad():
        assert max_diff(clone(**inputs).logits_per_image, expected) <= PACKED_TOL


def test_bf16_packed_close_to_fp32(model, inputs, tmp_path):
    model.save_pretrained(tmp_path)
    half = siglip.SiglipModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    with torch.no_grad():
        fast = half(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"].bfloat16())
        full = model(**inputs)
    # packed bf16 GEMMs where the CPU has bf16; elsewhere bf16 weights are multiplied in fp32, nothing packed
    assert any(cache._value is not None for cache in caches(half)) == cpu_features().native_bf16
    for key in ("text_embeds", "image_embeds"):
        cosine = torch.nn.functional.cosine_similarity(fast[key].float(), full[key], dim=-1)
        assert cosine.min() > 0.99, key


def test_compile_matches_eager(model, inputs):
    """`compile()` (inductor between the packed GEMMs, dynamic batch) stays within COMPILE_TOL of eager."""
    with torch.no_grad():
        eager = model(**inputs)
    compiled = copy.deepcopy(model).compile()
    with torch.inference_mode():
        first = compiled(**inputs)
        second = compiled(input_ids=inputs["input_ids"][:2], pixel_values=inputs["pixel_values"][:2])
    for key in ("logits_per_image", "text_embeds", "image_embeds"):
        assert max_diff(first[key], eager[key]) <= COMPILE_TOL, key
    assert max_diff(second.image_embeds, eager.image_embeds[:2]) <= COMPILE_TOL


@pytest.mark.skipif(
    not EAGER_KERNELS_UNDER_COMPILE, reason="PyTorch's AVX2 kernels: inductor compiles the GEMMs itself (packed.py)"
)
def test_compile_keeps_packed_weights_between_calls(model, inputs):
    """The packed-weight caches exist before tracing, so compiled calls reuse them instead of repacking."""
    compiled = copy.deepcopy(model).compile()
    misses = []
    original = PackedWeights.get

    def counting_get(self, weights, biases, rows):
        key = tuple(tensor_key(t) for t in (*weights, *biases) if t is not None)
        misses.append(key != self._key or self._value is None)
        return original(self, weights, biases, rows)

    with torch.inference_mode(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(PackedWeights, "get", counting_get)
        compiled(**inputs)
        first = sum(misses)
        misses.clear()
        compiled(**inputs)
    assert first >= 2 * 2 * 4 and misses and not any(misses)


@pytest.mark.parametrize("masked", [False, True])
def test_blocked_cpu_attention_close_to_sdpa(masked, monkeypatch):
    """bf16 blocked attention (bf16 scores, fp32 softmax) is as close to fp32 SDPA as bf16 SDPA is, block
    boundaries included (a small block budget forces several blocks and a short last one)."""
    monkeypatch.setattr(attention, "CPU_ATTENTION_BLOCK_SCORES", 3 * 4 * 40 * 40)
    torch.manual_seed(1)
    query, key, value = (torch.randn(7, 4, 40, 32) * 0.7 for _ in range(3))
    mask = torch.ones(7, 40, dtype=torch.long)
    mask[1, 25:] = 0
    mask[5, 3:] = 0
    bias32 = layers.key_padding_bias(mask, torch.float32) if masked else None
    bias16 = layers.key_padding_bias(mask, torch.bfloat16) if masked else None
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=bias32)
    half = [t.bfloat16() for t in (query, key, value)]
    blocked = attention.blocked_cpu_attention(*half, bias16, 32**-0.5)
    sdpa = F.scaled_dot_product_attention(*half, attn_mask=bias16)
    assert blocked.shape == expected.shape and blocked.dtype == torch.bfloat16
    assert max_diff(blocked.float(), expected) <= 2 * max_diff(sdpa.float(), expected) + 1e-3
    # One query per sequence (the MAP head's probe) against all keys.
    probe = attention.blocked_cpu_attention(half[0][:, :, :1], half[1], half[2], bias16, 32**-0.5)
    assert (
        max_diff(probe.float(), expected[:, :, :1]) <= 2 * max_diff(sdpa[:, :, :1].float(), expected[:, :, :1]) + 1e-3
    )


def test_blocked_attention_only_for_bf16_cpu_inference(model, inputs, monkeypatch):
    calls = []
    original = attention.blocked_cpu_attention
    monkeypatch.setattr(attention, "blocked_cpu_attention", lambda *args: calls.append(1) or original(*args))
    with torch.no_grad():
        model(**inputs)
    assert not calls  # fp32 stays on SDPA (reference numerics)
    half = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        half(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"].bfloat16())
    if attention._CPU_HAS_NATIVE_BF16:
        assert len(calls) >= 2 * 2  # every layer of both towers (plus the MAP head)
    else:
        assert not calls  # emulated bf16 GEMMs would be several times slower than SDPA
    calls.clear()
    half.train()
    half(
        input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"].bfloat16()
    ).logits_per_image.sum().backward()
    assert not calls  # training keeps SDPA (its backward needs no stored scores)


@pytest.mark.parametrize("amx", [False, True])
def test_long_sequences_take_the_flash_kernel_on_amx(amx, monkeypatch):
    monkeypatch.setattr(attention, "_CPU_HAS_AMX", amx)
    monkeypatch.setattr(attention, "_CPU_HAS_NATIVE_BF16", True)
    short, long = (torch.zeros(2, 4, n, 32, dtype=torch.bfloat16) for n in (64, attention.AMX_FLASH_MIN_QUERIES))
    assert attention._use_blocked_cpu_attention(short, 0.0)
    assert attention._use_blocked_cpu_attention(long, 0.0) is not amx
    assert not attention._use_blocked_cpu_attention(long.float(), 0.0)
    monkeypatch.setattr(attention, "_CPU_HAS_NATIVE_BF16", False)  # AVX2, AVX-512 without bf16: SDPA
    assert not attention._use_blocked_cpu_attention(short, 0.0)


def test_mlp_row_blocks_equal_one_pass(model, monkeypatch):
    """The packed MLP over several row blocks (equal blocks, last one shorter) equals one pass."""
    mlp = model.vision_model.encoder.layers[0].mlp
    torch.manual_seed(2)
    hidden = torch.randn(2, 65, mlp.fc1.in_features)  # 130 rows: blocks of 44, 44, 42
    residual = torch.randn_like(hidden)
    with torch.no_grad():
        whole = mlp(hidden, residual)
        monkeypatch.setattr(kernels, "MLP_ROW_BLOCK", 64)
        blocked = mlp(hidden, residual)
        blocked_no_residual = mlp(hidden)
        plain = mlp.fc2(mlp.activation_fn(mlp.fc1(hidden)))
    assert blocked.shape == whole.shape
    assert max_diff(blocked, whole) <= PACKED_TOL
    assert max_diff(blocked_no_residual, plain) <= PACKED_TOL


def test_segment_attention_bf16_close_to_fp32():
    """SigLIP2's packed attention in bf16 on CPU (blocked path per sequence) stays as close to fp32 as bf16 SDPA."""
    torch.manual_seed(3)
    segments = attention.Segments.from_lengths([5, 17, 9])
    query, key, value = (torch.randn(1, 4, 31, 16) * 0.7 for _ in range(3))
    expected = attention.segment_attention(query, key, value, segments)
    half = attention.segment_attention(*(t.bfloat16() for t in (query, key, value)), segments)
    sdpa_error = max(
        max_diff(
            F.scaled_dot_product_attention(*(t[:, :, s:e].bfloat16() for t in (query, key, value))), expected[:, :, s:e]
        )
        for s, e in segments.bounds
    )
    assert half.dtype == torch.bfloat16 and max_diff(half, expected) <= 2 * sdpa_error + 1e-3
