"""Properties that need no oracle: batching, round trips, determinism, checkpointing, dtypes, outputs."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import TINY_CONFIGS, max_diff, random_ids

import siglip

TEXT, VISION = TINY_CONFIGS["projection_differs"]


@pytest.fixture()
def model():
    torch.manual_seed(0)
    model = siglip.SiglipModel(siglip.SiglipConfig(text_config=TEXT, vision_config=VISION)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-3.0)
    return model


@pytest.fixture()
def inputs(pixel_batch):
    return dict(input_ids=random_ids(TEXT["vocab_size"], 3, 16), pixel_values=pixel_batch(VISION["image_size"]))


def test_batch_equals_one_by_one(model, inputs):
    with torch.no_grad():
        batched = model(**inputs)
        for i in range(3):
            single = model(input_ids=inputs["input_ids"][i : i + 1], pixel_values=inputs["pixel_values"][i : i + 1])
            assert max_diff(single.text_embeds[0], batched.text_embeds[i]) <= 1e-5
            assert max_diff(single.image_embeds[0], batched.image_embeds[i]) <= 1e-5


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_save_load_save_load_is_identical(model, inputs, tmp_path):
    model.save_pretrained(tmp_path / "a")
    first = siglip.SiglipModel.from_pretrained(tmp_path / "a")
    first.save_pretrained(tmp_path / "b")
    second = siglip.SiglipModel.from_pretrained(tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    for (name, a), (_, b) in zip(model.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits_per_image, second(**inputs).logits_per_image)


def test_deterministic(model, inputs):
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits_per_text, model(**inputs).logits_per_text)


def test_gradient_checkpointing_same_loss_and_gradients(model, inputs):
    model.train()

    def loss_and_grads():
        model.zero_grad()
        loss = model(**inputs, return_loss=True).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain_grads = loss_and_grads()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    ckpt_loss, ckpt_grads = loss_and_grads()
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    assert max_diff(plain_loss, ckpt_loss) <= 1e-6
    assert plain_grads.keys() == ckpt_grads.keys() and len(plain_grads) > 10
    for name in plain_grads:
        assert max_diff(plain_grads[name], ckpt_grads[name]) <= 1e-6, name


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 0.02), (torch.float16, 0.005)])
def test_half_precision_close_to_fp32(dtype, tolerance, model, inputs, tmp_path):
    """Documented tolerance: normalised embeddings within 0.02 (bf16) / 0.005 (fp16) max abs of fp32."""
    model.save_pretrained(tmp_path)
    half = siglip.SiglipModel.from_pretrained(tmp_path, dtype=dtype)
    assert half.dtype == dtype and half.config.dtype == str(dtype).removeprefix("torch.")
    with torch.no_grad():
        full, low = model(**inputs), half(**inputs)
    assert low.image_embeds.dtype == dtype
    assert max_diff(full.image_embeds, low.image_embeds) <= tolerance
    assert max_diff(full.text_embeds, low.text_embeds) <= tolerance
    cosine = torch.nn.functional.cosine_similarity(full.image_embeds, low.image_embeds.float())
    assert cosine.min() > 0.999


def test_dtype_aliases_and_auto(model, tmp_path):
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    assert siglip.SiglipModel.from_pretrained(tmp_path).dtype == torch.bfloat16  # "auto" keeps the stored dtype
    assert siglip.SiglipModel.from_pretrained(tmp_path, torch_dtype="float32").dtype == torch.float32
    assert siglip.SiglipModel.from_pretrained(tmp_path, dtype=torch.float16, device_map="auto").dtype == torch.float16
    with pytest.raises(siglip.InputError, match="floating-point"):
        siglip.SiglipModel.from_pretrained(tmp_path, dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(siglip.InputError, match="CUDA is not available"):
            siglip.SiglipModel.from_pretrained(tmp_path, device="cuda")


def test_outputs_behave_like_tuples_and_mappings(model, inputs):
    with torch.no_grad():
        output = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(output) == 6  # no loss
    assert torch.equal(output[0], output.logits_per_image) and torch.equal(output["text_embeds"], output.text_embeds)
    logits_per_image, logits_per_text, *_ = output
    assert torch.equal(logits_per_text, logits_per_image.t())
    assert torch.equal(as_tuple[0], output.logits_per_image)
    assert isinstance(as_tuple[4], tuple) and torch.equal(as_tuple[4][0], output.text_model_output.last_hidden_state)
    assert "loss" not in output and set(dict(output)) == set(output.keys())
    with pytest.raises(KeyError):
        output["loss"]


def test_flash_attention_without_package_is_a_clear_error(tmp_path, model):
    pytest.importorskip("torch")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        model.save_pretrained(tmp_path)
        with pytest.raises(siglip.DependencyError, match="flash-attn"):
            siglip.SiglipModel.from_pretrained(tmp_path, attn_implementation="flash_attention_2")
    with pytest.raises(siglip.ConfigError, match="attn_implementation"):
        model.set_attn_implementation("paged")


def test_bad_model_inputs_raise_typed_errors(model, inputs):
    with pytest.raises(siglip.InputError, match="both input_ids and pixel_values"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(siglip.InputError, match="max_position_embeddings"):
        model.get_text_features(input_ids=torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(siglip.InputError, match=r"input_ids must lie in \[0, 128\)"):
        model.get_text_features(input_ids=torch.full((1, 4), 500))
    with pytest.raises(siglip.InputError, match="channels"):
        model.get_image_features(pixel_values=torch.zeros(1, 1, 32, 32))
    with pytest.raises(siglip.InputError, match="shape"):
        model.get_image_features(pixel_values=torch.zeros(3, 32, 32))
    with pytest.raises(siglip.InputError, match="as many texts as images"):
        model(input_ids=inputs["input_ids"][:2], pixel_values=inputs["pixel_values"], return_loss=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 5, 32])
def test_text_features_skip_nothing_the_head_reads(model, batch, dtype):
    """get_text_features runs the last layer at the last position only: the same embedding as the full forward,
    with or without an attention mask, under inference mode, eager attention and CPU streams (batch 32)."""
    model = model.to(dtype)
    ids = random_ids(TEXT["vocab_size"], batch, 16)
    mask = (torch.arange(16)[None] < torch.randint(3, 17, (batch, 1))).long()
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    shape = (batch, model.config.text_config.projection_size)
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        with torch.inference_mode():
            for attention_mask in (None, mask):
                fast = model.get_text_features(input_ids=ids, attention_mask=attention_mask)
                full = model.text_model(input_ids=ids, attention_mask=attention_mask).pooler_output
                assert fast.dtype == full.dtype == dtype and fast.shape == full.shape == shape
                assert max_diff(fast.float(), full.float()) <= tolerance
    hidden = model.get_text_features(input_ids=ids, attention_mask=mask, output_hidden_states=True)  # full forward
    assert max_diff(hidden.float(), full.float()) <= tolerance


def test_text_features_fold_the_last_layers_keys_and_values_into_its_query(model):
    """In fp32 inference the last layer's attention carries each head's query back through W_k and mixes the
    inputs before W_v (layers.SiglipAttention._last_query_folded): k_proj and v_proj never run there, and the
    embedding is the full forward's. A hooked linear (its function known only by calling it) is called, on the
    packed CPU path too."""
    attention = model.text_model.encoder.layers[-1].self_attn
    ids = random_ids(TEXT["vocab_size"], 4, 16)
    mask = (torch.arange(16)[None] < torch.tensor([[16], [9], [3], [12]])).long()
    calls = []
    handles = [
        linear.register_forward_hook(lambda module, args, output, name=name: calls.append(name))
        for name, linear in (("k", attention.k_proj), ("fc1", model.text_model.encoder.layers[0].mlp.fc1))
    ]
    with torch.inference_mode():
        hooked = model.get_text_features(input_ids=ids, attention_mask=mask)
    for handle in handles:
        handle.remove()
    assert calls.count("k") == 1 and calls.count("fc1") == 1  # the plain path: keys projected at every position
    with torch.inference_mode():
        folded = attention._last_query_folded(torch.randn(2, 16, TEXT["hidden_size"]), None, None)
        features = model.get_text_features(input_ids=ids, attention_mask=mask)
        full = model.text_model(input_ids=ids, attention_mask=mask).pooler_output
    assert folded.shape == (2, 1, TEXT["hidden_size"])
    assert max_diff(features, full) <= 1e-5 and max_diff(hooked, full) <= 1e-5


def test_map_head_folds_keys_and_values_into_its_probe(model, inputs):
    """The MAP head's one query per image: in fp32 inference its keys and values are folded into the probe's query
    (kernels.attention.folded_one_query_attention), under autograd projected as the reference does; the pooled
    output is the same, and with a key-padding mask (SigLIP2's padded batches) too."""
    from siglip.kernels import attention

    head = model.vision_model.head
    tokens = torch.randn(3, 10, VISION["hidden_size"], generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(3, 1, 1, 10)
    mask[1, ..., 6:] = torch.finfo(torch.float32).min
    for bias in (None, mask):
        with torch.no_grad():
            assert attention.folding_applies(tokens)
            folded = head(tokens, bias)
        with torch.enable_grad():
            assert not attention.folding_applies(tokens)
            projected = head(tokens, bias).detach()
        assert folded.shape == projected.shape == (3, VISION["hidden_size"])
        assert max_diff(folded, projected) <= 1e-5
    with torch.inference_mode():  # the masked keys are left out, as in the projected form
        alone = head(tokens[1:2, :6])
        folded = head(tokens, mask)
    assert max_diff(alone, folded[1:2]) <= 1e-5


def test_text_features_gradients_equal_the_full_forward(model):
    ids = random_ids(TEXT["vocab_size"], 2, 16)
    grads = []
    for features in (model.get_text_features, lambda **kw: model.text_model(**kw).pooler_output):
        model.zero_grad()
        features(input_ids=ids).square().sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.text_model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert max_diff(grads[0][name], grads[1][name]) <= 1e-4, name


def test_empty_batches_give_empty_features(model):
    with torch.inference_mode():
        text = model.get_text_features(input_ids=torch.zeros(0, 16, dtype=torch.long))
        image = model.get_image_features(pixel_values=torch.zeros(0, 3, VISION["image_size"], VISION["image_size"]))
    assert text.shape == (0, model.config.text_config.projection_size)
    assert image.shape == (0, VISION["hidden_size"])


def test_text_features_call_a_hooked_or_compiled_text_model(model):
    """A forward hook on (or compilation of) the text tower still applies to get_text_features."""
    from siglip.modeling.model import _call_adds_behaviour

    ids = random_ids(TEXT["vocab_size"], 2, 16)
    seen = []
    handle = model.text_model.register_forward_hook(lambda module, args, output: seen.append(output.pooler_output))
    with torch.inference_mode():
        features = model.get_text_features(input_ids=ids)
    handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], features)
    assert not _call_adds_behaviour(model.text_model)
    model.text_model.compile()
    assert _call_adds_behaviour(model.text_model)
    assert _call_adds_behaviour(torch.compile(model.text_model))
