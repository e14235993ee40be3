"""Models work however users wrap loading and running: inference_mode / no_grad / grad, loaded inside or
outside either, eager or compiled, fp32 or bf16, SigLIP and SigLIP2 (NaFlex). Every run is compared with the
plain eager fp32 forward of the same weights."""

from __future__ import annotations

import contextlib
import itertools
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

import siglip
from siglip import Siglip2Config, Siglip2Model, SiglipConfig, SiglipModel

TEXT = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=16,
)
VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, patch_size=4)
MODES = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad, "grad": contextlib.nullcontext}
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 0.05}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modes")
    torch.manual_seed(0)
    SiglipModel(SiglipConfig(text_config=TEXT, vision_config={**VISION, "image_size": 16})).save_pretrained(
        folder / "siglip"
    )
    Siglip2Model(Siglip2Config(text_config=TEXT, vision_config={**VISION, "num_patches": 16})).save_pretrained(
        folder / "siglip2"
    )
    return folder


def inputs(kind: str, dtype: torch.dtype, batch: int = 2) -> dict:
    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, 64, (batch, 16), generator=generator)
    if kind == "siglip":
        return dict(input_ids=ids, pixel_values=torch.randn(batch, 3, 16, 16, generator=generator).to(dtype))
    # NaFlex: grids of different shapes, padded to 16 patches
    shapes = torch.tensor([[4, 4], [2, 6], [3, 3], [1, 5]][:batch])
    mask = (torch.arange(16)[None] < shapes.prod(-1)[:, None]).long()
    pixels = torch.randn(batch, 16, 48, generator=generator).to(dtype)
    return dict(input_ids=ids, pixel_values=pixels, pixel_attention_mask=mask, spatial_shapes=shapes)


@pytest.fixture(scope="module")
def expected(checkpoints):
    out = {}
    for kind in ("siglip", "siglip2"):
        model = siglip.AutoModel.from_pretrained(checkpoints / kind)
        model.set_weight_packing(False)
        with torch.no_grad():
            out[kind] = model(**inputs(kind, torch.float32)).logits_per_image
    return out


def run_case(checkpoints, expected, kind, load_mode, run_mode, dtype, compiled):
    with MODES[load_mode]():
        model = siglip.AutoModel.from_pretrained(checkpoints / kind, dtype=dtype)
    if compiled:
        torch._dynamo.reset()
        model.compile()
    with MODES[run_mode]():
        logits = model(**inputs(kind, dtype)).logits_per_image
    assert logits.requires_grad == (run_mode == "grad")
    assert (logits.detach().float() - expected[kind]).abs().max().item() <= TOLERANCE[dtype]
    if run_mode == "grad":  # training from a model loaded anywhere works: gradients reach the weights
        logits.float().sum().backward()
        assert model.vision_model.embeddings.patch_embedding.weight.grad is not None


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_eager_in_every_mode(checkpoints, expected, kind, dtype):
    for load_mode, run_mode in itertools.product(MODES, MODES):
        run_case(checkpoints, expected, kind, load_mode, run_mode, dtype, compiled=False)


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
@pytest.mark.parametrize(
    "load_mode,run_mode,dtype",
    [
        ("inference_mode", "inference_mode", torch.float32),
        ("inference_mode", "no_grad", torch.bfloat16),
        ("no_grad", "inference_mode", torch.bfloat16),
        ("grad", "grad", torch.float32),
    ],
)
def test_compiled_in_modes(checkpoints, expected, kind, load_mode, run_mode, dtype):
    run_case(checkpoints, expected, kind, load_mode, run_mode, dtype, compiled=True)


def test_model_built_inside_inference_mode_runs():
    """A model constructed (not loaded) inside inference_mode holds inference tensors: the packed-weight and
    position-grid caches must not need version counters."""
    with torch.inference_mode():
        torch.manual_seed(0)
        model = Siglip2Model(Siglip2Config(text_config=TEXT, vision_config={**VISION, "num_patches": 16})).eval()
        first = model(**inputs("siglip2", torch.float32)).logits_per_image
        again = model(**inputs("siglip2", torch.float32)).logits_per_image
    assert torch.equal(first, again)


def test_pipeline_built_inside_inference_mode(reference_checkpoint, photos):
    with torch.inference_mode():
        classify = siglip.pipeline("zero-shot-image-classification", model=str(reference_checkpoint))
        inside = classify(photos[0], candidate_labels=["a cat", "a dog"])
    outside = siglip.pipeline("zero-shot-image-classification", model=str(reference_checkpoint))(
        photos[0], candidate_labels=["a cat", "a dog"]
    )
    assert [r["label"] for r in inside] == [r["label"] for r in outside]
    assert all(abs(a["score"] - b["score"]) < 1e-6 for a, b in zip(inside, outside))


def test_compiled_siglip2_many_shapes_no_value_breaks(checkpoints):
    """Compiled NaFlex over many grid shapes and batch sizes: no graph break on a tensor's value, no recompile
    storm (the position grids are gathered eagerly), outputs equal eager."""
    eager = siglip.AutoModel.from_pretrained(checkpoints / "siglip2")
    model = siglip.AutoModel.from_pretrained(checkpoints / "siglip2")
    torch._dynamo.reset()
    counters.clear()
    model.compile()
    cases = [[[4, 4], [2, 6]], [[3, 5], [1, 1], [2, 2]], [[1, 16]], [[2, 7], [4, 3]], [[3, 4]] * 4, [[5, 3], [2, 8]]]
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        for shapes in cases:
            spatial = torch.tensor(shapes)
            mask = (torch.arange(16)[None] < spatial.prod(-1)[:, None]).long()
            batch = dict(
                pixel_values=torch.randn(len(shapes), 16, 48), pixel_attention_mask=mask, spatial_shapes=spatial
            )
            batch["input_ids"] = torch.randint(0, 64, (len(shapes), 16))
            got, want = model(**batch).image_embeds, eager(**batch).image_embeds
            assert (got - want).abs().max().item() < 1e-5
    breaks = " ".join(counters["graph_break"])
    assert "item()" not in breaks and "data-dependent" not in breaks, breaks
    assert not [w for w in caught if "recompile" in str(w.message).lower()]
    bad = dict(batch, spatial_shapes=torch.tensor([[5, 4]] * 2))  # 20 patches do not fit 16
    with pytest.raises(siglip.InputError, match="spatial_shapes"):
        model(**bad)
