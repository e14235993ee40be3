"""open_clip (and timm underneath it) as the oracle for the open_clip and big_vision formats.

Random-weight open_clip SigLIP / SigLIP2 models, saved as open_clip folders, must give the same image and text
embeddings and logits in siglip (<= 1e-5, fp32) on real photos and captions; the `.npz` that `siglip convert`
writes must load in open_clip's own big_vision loader with the same numbers, and in siglip; the Hub folders it
writes must load in transformers with the same numbers; and the open_clip folders it writes must load in
open_clip.

Tiny sizes: open_clip 3.3 builds its vision tower from a *named* timm model, so each tiny case registers one with
timm (`vit_siglip_oracle_*`). The open_clip_config.json that siglip reads spells the same sizes as open_clip's
`timm_model_kwargs` on a named SigLIP ViT, which is what `siglip convert --to open_clip` writes for sizes no
named ViT has. One real named architecture (ViT-B-16-SigLIP) runs as it is.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import pytest

# open_clip needs torchvision, which does not import beside the main venv's CPU torch: these tests run in
# `make interop-test`'s own venv and skip elsewhere.
open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")

import torch  # noqa: E402
from open_clip.model import CustomTextCLIP  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from timm.models import register_model  # noqa: E402
from timm.models.vision_transformer import _create_vision_transformer  # noqa: E402

from siglip import AutoModel, AutoProcessor, AutoTokenizer  # noqa: E402
from siglip.formats.convert import convert  # noqa: E402
from siglip.text.tokenizer import SiglipTokenizer  # noqa: E402

FIXTURES = Path(__file__).parent.parent / "fixtures"
PHOTOS = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg"]
TEXTS = [
    "a photo of a cat",
    "an astronaut in a white suit",
    "a cup of coffee on a table",
    "a rocket on the launch pad at night",
    "Two dogs, running on the beach!",
]
TOLERANCE = 1e-5

# case -> timm ViT kwargs, open_clip text_cfg, tanh GELU (SigLIP2 style), tokenizer ("spiece" / "gemma")
CASES = {
    "siglip_tiny": (
        dict(patch_size=8, img_size=32, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0),
        dict(width=40, heads=2, layers=2, context_length=16, norm_kwargs={"eps": 1e-6}),
        False,
        "spiece",
    ),
    "siglip_odd": (
        dict(patch_size=6, img_size=30, embed_dim=36, depth=3, num_heads=4, mlp_ratio=37 / 36),
        dict(width=32, heads=4, layers=1, context_length=20, mlp_ratio=1.5),
        False,
        "spiece",
    ),
    "siglip2_tiny": (
        dict(patch_size=16, img_size=64, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0),
        dict(
            width=48,
            heads=3,
            layers=3,
            context_length=16,
            norm_kwargs={"eps": 1e-6},
            act_kwargs={"approximate": "tanh"},
        ),
        True,
        "gemma",
    ),
    "siglip2_wide_text": (
        dict(patch_size=8, img_size=40, embed_dim=32, depth=1, num_heads=2, mlp_ratio=3.0),
        dict(
            width=64,
            heads=8,
            layers=2,
            context_length=12,
            norm_kwargs={"eps": 1e-6},
            act_kwargs={"approximate": "tanh"},
        ),
        True,
        "spiece",
    ),
}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


def _register(case: str, vit: dict, tanh: bool) -> str:
    name = f"vit_siglip_oracle_{case}"

    def build(pretrained: bool = False, **kwargs):
        args = dict(vit, class_token=False, global_pool="map", **({"act_layer": "gelu_tanh"} if tanh else {}))
        return _create_vision_transformer(name, pretrained=pretrained, **dict(args, **kwargs))

    build.__name__ = name
    register_model(build)
    return name


REGISTERED = {case: _register(case, vit, tanh) for case, (vit, _, tanh, _) in CASES.items()}


def _model_cfg(case: str, vocab: int, *, for_siglip: bool) -> dict:
    vit, text, tanh, _ = CASES[case]
    vision_cfg = {
        "image_size": vit["img_size"],
        "timm_model_pretrained": False,
        "timm_pool": "map",
        "timm_proj": "none",
    }
    if for_siglip:
        vision_cfg["timm_model_name"] = "vit_base_patch16_siglip_224"
        vision_cfg["timm_model_kwargs"] = {**vit, "act_layer": "gelu_tanh" if tanh else "gelu"}
    else:
        vision_cfg["timm_model_name"] = REGISTERED[case]
    text_cfg = {"vocab_size": vocab, "no_causal_mask": True, "proj_bias": True, "pool_type": "last", **text}
    return {"embed_dim": vit["embed_dim"], "init_logit_bias": -10, "vision_cfg": vision_cfg, "text_cfg": text_cfg}


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """open_clip's init plus noise everywhere (LayerNorms, zero-initialised biases), and a spread-out scale."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.0)
    return model.eval()


def _tokenizer_files(kind: str, folder: Path, spm: Path | None) -> int:
    """Write the tokenizer into `folder` as the timm Hub repos carry it; returns its vocabulary size."""
    if kind == "gemma":
        from test_tokenizer_gemma import build_gemma_checkpoint

        build_gemma_checkpoint(folder)
        return len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    tokenizer = SiglipTokenizer(vocab_file=spm)
    tokenizer.save_pretrained(folder)
    return tokenizer.vocab_size


@pytest.fixture(scope="module")
def spm(tmp_path_factory) -> Path:
    from spm_model import train_sentencepiece_model

    return train_sentencepiece_model(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module")
def photos():
    return [Image.open(FIXTURES / name).convert("RGB") for name in PHOTOS]


def _save_open_clip(model: torch.nn.Module, model_cfg: dict, folder: Path) -> None:
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "squash"}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))


def _open_clip_outputs(model, pixel_values, input_ids):
    with torch.no_grad():
        image, text = model.encode_image(pixel_values), model.encode_text(input_ids)
        logits = (
            model.logit_scale.exp()
            * torch.nn.functional.normalize(text, dim=-1)
            @ torch.nn.functional.normalize(image, dim=-1).T
            + model.logit_bias
        )
    return {"image": image, "text": text, "logits_per_text": logits}


def _siglip_outputs(model, pixel_values, input_ids):
    with torch.no_grad():
        out = model(pixel_values=pixel_values, input_ids=input_ids)
        return {
            "image": model.get_image_features(pixel_values=pixel_values),
            "text": model.get_text_features(input_ids=input_ids),
            "logits_per_text": out.logits_per_text,
        }


def _compare(expected: dict, actual: dict, what: str) -> dict[str, float]:
    """max|diff| per output, within 1e-5 of the output's scale (max(1, max|value|): B/16 features reach ~5)."""
    diffs = {key: max_diff(expected[key], _as_tensor(actual[key])) for key in expected}
    scales = {key: max(1.0, expected[key].abs().max().item()) for key in expected}
    print(f"{what}: " + ", ".join(f"{key} max|diff| {diffs[key]:.2e} (scale {scales[key]:.1f})" for key in diffs))
    assert all(diffs[key] <= TOLERANCE * scales[key] for key in diffs), (what, diffs)
    return diffs


def _as_tensor(value):
    return value if isinstance(value, torch.Tensor) else getattr(value, "pooler_output", value)


@pytest.fixture(scope="module", params=sorted(CASES))
def case_folder(request, tmp_path_factory, spm):
    """(case, the open_clip model, its saved folder for siglip)."""
    case = request.param
    folder = tmp_path_factory.mktemp(case)
    vocab = _tokenizer_files(CASES[case][3], folder, spm)
    torch.manual_seed(0)
    model = _randomise(CustomTextCLIP(**_model_cfg(case, vocab, for_siglip=False)), seed=1)
    _save_open_clip(model, _model_cfg(case, vocab, for_siglip=True), folder)
    return case, model, folder


def _inputs(folder: Path, photos):
    processor = AutoProcessor.from_pretrained(folder)
    batch = processor(text=TEXTS, images=photos, padding="max_length", truncation=True, return_tensors="pt")
    assert "attention_mask" not in batch  # open_clip's text tower runs without one
    return batch["pixel_values"], batch["input_ids"]


def test_open_clip_folder_matches_open_clip(case_folder, photos):
    case, reference, folder = case_folder
    pixel_values, input_ids = _inputs(folder, photos)
    assert input_ids.shape[1] == CASES[case][1]["context_length"]
    ours = AutoModel.from_pretrained(folder)
    _compare(
        _open_clip_outputs(reference, pixel_values, input_ids),
        _siglip_outputs(ours, pixel_values, input_ids),
        f"{case} open_clip folder",
    )


def test_open_clip_preprocessing_matches(case_folder, photos):
    """open_clip's own image transform (torchvision) against our processor for the mapped preprocess_cfg."""
    case, reference, folder = case_folder
    size = CASES[case][0]["img_size"]
    transform = open_clip.image_transform(
        size, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash", interpolation="bicubic"
    )
    theirs = torch.stack([transform(photo) for photo in photos])
    ours = AutoProcessor.from_pretrained(folder).image_processor(photos, return_tensors="pt")["pixel_values"]
    diff = max_diff(theirs, ours)
    print(f"{case} preprocessing max|diff| {diff:.2e}")
    assert diff <= 2 / 255 * 2  # at most two 8-bit steps after the (x - 0.5) / 0.5 normalisation


def test_big_vision_npz_matches_open_clip_loader(case_folder, photos, tmp_path):
    case, reference, folder = case_folder
    if not CASES[case][2]:
        pytest.skip("big_vision's GELU is the tanh approximation; this case uses open_clip's exact GELU")
    written = convert(folder, tmp_path / "npz", to="big_vision")
    (npz,) = [path for path in written if path.suffix == ".npz"]
    pixel_values, input_ids = _inputs(folder, photos)
    expected = _open_clip_outputs(reference, pixel_values, input_ids)
    vocab = reference.text.token_embedding.weight.shape[0]
    fresh = CustomTextCLIP(**_model_cfg(case, vocab, for_siglip=False)).eval()
    open_clip.convert.load_big_vision_weights(fresh, str(npz))
    _compare(expected, _open_clip_outputs(fresh, pixel_values, input_ids), f"{case} npz in open_clip")
    _compare(
        expected, _siglip_outputs(AutoModel.from_pretrained(npz), pixel_values, input_ids), f"{case} npz in siglip"
    )


def test_converted_folder_matches_in_transformers(case_folder, photos, tmp_path):
    transformers = pytest.importorskip("transformers")
    case, reference, folder = case_folder
    convert(folder, tmp_path / "hub")
    pixel_values, input_ids = _inputs(tmp_path / "hub", photos)
    theirs = transformers.AutoModel.from_pretrained(tmp_path / "hub").eval()
    ids = transformers.AutoTokenizer.from_pretrained(tmp_path / "hub")(
        TEXTS, padding="max_length", max_length=input_ids.shape[1], truncation=True, return_tensors="pt"
    )["input_ids"]
    assert torch.equal(ids, input_ids)
    _compare(
        _open_clip_outputs(reference, pixel_values, input_ids),
        _siglip_outputs(theirs, pixel_values, input_ids),
        f"{case} converted folder in transformers",
    )


def test_hub_to_open_clip_loads_in_open_clip(case_folder, photos, tmp_path):
    case, reference, folder = case_folder
    convert(folder, tmp_path / "hub")
    convert(tmp_path / "hub", tmp_path / "oc", to="open_clip")
    convert(tmp_path / "oc", tmp_path / "back")
    for name, tensor in load_file(str(tmp_path / "hub" / "model.safetensors")).items():
        assert torch.equal(tensor, load_file(str(tmp_path / "back" / "model.safetensors"))[name]), name
    settings = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())
    vocab = settings["model_cfg"]["text_cfg"]["vocab_size"]
    model = CustomTextCLIP(**_model_cfg(case, vocab, for_siglip=False)).eval()
    model.load_state_dict(load_file(str(tmp_path / "oc" / "open_clip_model.safetensors")), strict=True)
    pixel_values, input_ids = _inputs(folder, photos)
    expected = _open_clip_outputs(reference, pixel_values, input_ids)
    _compare(expected, _open_clip_outputs(model, pixel_values, input_ids), f"{case} Hub -> open_clip in open_clip")
    # the written timm_model_kwargs rebuild the tower in timm as open_clip's TimmModel does with them
    vision = settings["model_cfg"]["vision_cfg"]
    trunk = timm.create_model(
        vision["timm_model_name"], num_classes=0, global_pool="map", **vision["timm_model_kwargs"]
    ).eval()
    weights = load_file(str(tmp_path / "oc" / "open_clip_model.safetensors"))
    trunk.load_state_dict(
        {k.removeprefix("visual.trunk."): v for k, v in weights.items() if k.startswith("visual.")}, strict=True
    )
    with torch.no_grad():
        _compare({"image": expected["image"]}, {"image": trunk(pixel_values)}, f"{case} timm_model_kwargs in timm")


def test_real_named_architecture(tmp_path, spm, photos):
    """ViT-B-16-SigLIP as open_clip defines it (timm's vit_base_patch16_siglip_224, exact GELU, 32k vocab)."""
    model_cfg = open_clip.get_model_config("ViT-B-16-SigLIP")
    torch.manual_seed(0)
    reference = _randomise(open_clip.create_model("ViT-B-16-SigLIP", pretrained=None), seed=2)
    folder = tmp_path / "b16"
    folder.mkdir()
    _tokenizer_files("spiece", folder, spm)
    _save_open_clip(reference, model_cfg, folder)
    pixel_values, input_ids = _inputs(folder, photos[:2])
    ours = AutoModel.from_pretrained(folder)
    assert ours.config.vision_config.hidden_act == "gelu" and ours.config.text_config.vocab_size == 32000
    expected = _open_clip_outputs(reference, pixel_values, input_ids)
    _compare(expected, _siglip_outputs(ours, pixel_values, input_ids), "ViT-B-16-SigLIP open_clip folder")
    del ours
    convert(folder, tmp_path / "hub")
    convert(tmp_path / "hub", tmp_path / "oc", to="open_clip")
    settings = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())
    assert settings["model_cfg"]["vision_cfg"]["timm_model_name"] == "vit_base_patch16_siglip_224"
    assert "timm_model_kwargs" not in settings["model_cfg"]["vision_cfg"]
    again = open_clip.create_model(f"local-dir:{tmp_path / 'oc'}").eval()
    _compare(expected, _open_clip_outputs(again, pixel_values, input_ids), "ViT-B-16-SigLIP round trip in open_clip")
    assert type(AutoTokenizer.from_pretrained(tmp_path / "hub")).__name__ == "SiglipTokenizer"


# ---- SigLIP2 NaFlex: timm's NaFlexVit in open_clip ----------------------------------------------------------
NAFLEX = dict(
    patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=3.0, act_layer="gelu_tanh", pos_embed_grid_size=(4, 4)
)
NAFLEX_TEXT = dict(
    width=40, heads=4, layers=2, context_length=16, norm_kwargs={"eps": 1e-6}, act_kwargs={"approximate": "tanh"}
)


@register_model
def naflexvit_siglip_oracle(pretrained: bool = False, **kwargs):
    return timm.create_model("naflexvit_base_patch16_siglip", pretrained=pretrained, **dict(NAFLEX, **kwargs))


def _naflex_cfg(vocab: int, *, for_siglip: bool) -> dict:
    vision_cfg = {
        "image_size": 32,
        "timm_model_pretrained": False,
        "timm_pool": "map",
        "timm_proj": "none",
        "timm_model_name": "naflexvit_siglip_oracle",
    }
    if for_siglip:  # open_clip main's fields (3.3.0 has neither): the patch budget and the spelled-out sizes
        vision_cfg.update(
            image_seq_len=24,
            timm_model_name="naflexvit_base_patch16_siglip",
            timm_model_kwargs={**NAFLEX, "pos_embed_grid_size": [4, 4]},
        )
    text_cfg = {"vocab_size": vocab, "no_causal_mask": True, "proj_bias": True, "pool_type": "last", **NAFLEX_TEXT}
    return {"embed_dim": 48, "init_logit_bias": -10, "vision_cfg": vision_cfg, "text_cfg": text_cfg}


def _naflex_inputs(folder: Path, photos):
    """Our Siglip2Processor's patches, and the same patches as open_clip's NaFlex dict (row-major coordinates)."""
    processor = AutoProcessor.from_pretrained(folder)  # Siglip2Processor: 64 tokens unless told (the tiny text has 16)
    batch = processor(text=TEXTS[: len(photos)], images=photos, max_length=16, return_tensors="pt")
    assert batch["pixel_values"].shape[1] == 24 and not batch["pixel_attention_mask"].all()  # padding present
    coords = torch.zeros(*batch["pixel_attention_mask"].shape, 2, dtype=torch.long)
    for row, (height, width) in enumerate(batch["spatial_shapes"].tolist()):
        index = torch.arange(height * width)
        coords[row, : height * width] = torch.stack([index // width, index % width], dim=-1)
    patches = {
        "patches": batch["pixel_values"],
        "patch_coord": coords,
        "patch_valid": batch["pixel_attention_mask"].bool(),
    }
    return batch, patches


def _siglip2_outputs(model, batch):
    image_inputs = {k: batch[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}
    with torch.no_grad():
        out = model(**batch)
        return {
            "image": model.get_image_features(**image_inputs),
            "text": model.get_text_features(input_ids=batch["input_ids"]),
            "logits_per_text": out.logits_per_text,
        }


def test_naflex_open_clip_folder_npz_and_transformers(tmp_path, photos):
    folder = tmp_path / "naflex"
    vocab = _tokenizer_files("gemma", folder, spm=None)
    torch.manual_seed(0)
    reference = _randomise(CustomTextCLIP(**_naflex_cfg(vocab, for_siglip=False)), seed=3)
    _save_open_clip(reference, _naflex_cfg(vocab, for_siglip=True), folder)
    batch, patches = _naflex_inputs(folder, photos)
    expected = _open_clip_outputs(reference, patches, batch["input_ids"])
    ours = AutoModel.from_pretrained(folder)
    assert ours.config.model_type == "siglip2" and ours.config.vision_config.num_patches == 16
    _compare(expected, _siglip2_outputs(ours, batch), "NaFlex open_clip folder")
    # .npz: open_clip's own big_vision loader (its NaFlexVit branch) and siglip
    (npz,) = [p for p in convert(folder, tmp_path / "npz", to="big_vision") if p.suffix == ".npz"]
    if "NaFlexVit" in inspect.getsource(open_clip.convert.load_big_vision_weights):  # open_clip main; not 3.3.0
        fresh = CustomTextCLIP(**_naflex_cfg(vocab, for_siglip=False)).eval()
        open_clip.convert.load_big_vision_weights(fresh, str(npz))
        _compare(expected, _open_clip_outputs(fresh, patches, batch["input_ids"]), "NaFlex npz in open_clip")
    _compare(expected, _siglip2_outputs(AutoModel.from_pretrained(npz), batch), "NaFlex npz in siglip")
    # the Hub folder in transformers
    transformers = pytest.importorskip("transformers")
    convert(folder, tmp_path / "hub")
    theirs = transformers.AutoModel.from_pretrained(tmp_path / "hub").eval()
    _compare(expected, _siglip2_outputs(theirs, batch), "NaFlex converted folder in transformers")
    # and back to open_clip: open_clip loads it, timm rebuilds the tower from the written kwargs
    convert(tmp_path / "hub", tmp_path / "oc", to="open_clip")
    settings = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())
    weights = load_file(str(tmp_path / "oc" / "open_clip_model.safetensors"))
    again = CustomTextCLIP(**_naflex_cfg(vocab, for_siglip=False)).eval()
    again.load_state_dict(weights, strict=True)
    _compare(expected, _open_clip_outputs(again, patches, batch["input_ids"]), "NaFlex Hub -> open_clip in open_clip")
    vision = settings["model_cfg"]["vision_cfg"]
    trunk = timm.create_model(
        vision["timm_model_name"], num_classes=0, global_pool="map", **vision["timm_model_kwargs"]
    ).eval()
    trunk.load_state_dict({k.removeprefix("visual.trunk."): v for k, v in weights.items() if k.startswith("visual.")})
    with torch.no_grad():
        _compare({"image": expected["image"]}, {"image": trunk(patches)}, "NaFlex timm_model_kwargs in timm")
