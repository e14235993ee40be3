"""open_clip / timm SigLIP checkpoints: `open_clip_config.json` + `open_clip_model.safetensors` (or the pickle).

open_clip builds SigLIP from timm's ViT (`visual.trunk.*`, packed `attn.qkv`, a MAP head `attn_pool` with a
separate query `q` and packed `kv`) and its own text transformer (`text.*`, nn.MultiheadAttention's packed
`in_proj`, pooling the last token, no causal mask, `text_projection` with a bias); SigLIP2 NaFlex from timm's
NaFlexVit (`embeds.proj` over (ph, pw, c) patches, a (1, n, n, D) position grid resized per image, bilinear with
antialias). The math is the reference's; only names and packing differ, plus two settings the config carries:
GELU exact or tanh (`act_kwargs`, timm's `act_layer`) and the text LayerNorm epsilon (`norm_kwargs`).
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConfigError
from .namemap import Rule, Towers, pair, rule

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

_V, _T = "vision_model.", "text_model."
_VL, _TL = "visual.trunk.blocks.{}.", "text.transformer.resblocks.{}."
_HL = "encoder.layers.{}."
_QKV = tuple(f"{_HL}self_attn.{p}_proj" for p in "qkv")

RULES: list[Rule] = [
    rule("logit_scale", "logit_scale", "scalar"),
    rule("logit_bias", "logit_bias", "scalar"),
    # vision: timm ViT
    *pair(
        f"{_V}embeddings.patch_embedding", "visual.trunk.patch_embed.proj.weight", "visual.trunk.patch_embed.proj.bias"
    ),
    rule(f"{_V}embeddings.position_embedding.weight", "visual.trunk.pos_embed", "squeeze0"),
    *pair(f"{_V}{_HL}layer_norm1", f"{_VL}norm1.weight", f"{_VL}norm1.bias", tower="vision"),
    rule(tuple(f"{_V}{n}.weight" for n in _QKV), f"{_VL}attn.qkv.weight", tower="vision"),
    rule(tuple(f"{_V}{n}.bias" for n in _QKV), f"{_VL}attn.qkv.bias", tower="vision"),
    *pair(f"{_V}{_HL}self_attn.out_proj", f"{_VL}attn.proj.weight", f"{_VL}attn.proj.bias", tower="vision"),
    *pair(f"{_V}{_HL}layer_norm2", f"{_VL}norm2.weight", f"{_VL}norm2.bias", tower="vision"),
    *pair(f"{_V}{_HL}mlp.fc1", f"{_VL}mlp.fc1.weight", f"{_VL}mlp.fc1.bias", tower="vision"),
    *pair(f"{_V}{_HL}mlp.fc2", f"{_VL}mlp.fc2.weight", f"{_VL}mlp.fc2.bias", tower="vision"),
    *pair(f"{_V}post_layernorm", "visual.trunk.norm.weight", "visual.trunk.norm.bias"),
    # vision: timm's MAP head (AttentionPoolLatent)
    rule(f"{_V}head.probe", "visual.trunk.attn_pool.latent"),
    rule(
        f"{_V}head.attention.in_proj_weight",
        ("visual.trunk.attn_pool.q.weight", "visual.trunk.attn_pool.kv.weight"),
        parts=(1, 2),
    ),
    rule(
        f"{_V}head.attention.in_proj_bias",
        ("visual.trunk.attn_pool.q.bias", "visual.trunk.attn_pool.kv.bias"),
        parts=(1, 2),
    ),
    *pair(f"{_V}head.attention.out_proj", "visual.trunk.attn_pool.proj.weight", "visual.trunk.attn_pool.proj.bias"),
    *pair(f"{_V}head.layernorm", "visual.trunk.attn_pool.norm.weight", "visual.trunk.attn_pool.norm.bias"),
    *pair(f"{_V}head.mlp.fc1", "visual.trunk.attn_pool.mlp.fc1.weight", "visual.trunk.attn_pool.mlp.fc1.bias"),
    *pair(f"{_V}head.mlp.fc2", "visual.trunk.attn_pool.mlp.fc2.weight", "visual.trunk.attn_pool.mlp.fc2.bias"),
    # text: open_clip's TextTransformer
    rule(f"{_T}embeddings.token_embedding.weight", "text.token_embedding.weight"),
    rule(f"{_T}embeddings.position_embedding.weight", "text.positional_embedding"),
    *pair(f"{_T}{_HL}layer_norm1", f"{_TL}ln_1.weight", f"{_TL}ln_1.bias", tower="text"),
    rule(tuple(f"{_T}{n}.weight" for n in _QKV), f"{_TL}attn.in_proj_weight", tower="text"),
    rule(tuple(f"{_T}{n}.bias" for n in _QKV), f"{_TL}attn.in_proj_bias", tower="text"),
    *pair(f"{_T}{_HL}self_attn.out_proj", f"{_TL}attn.out_proj.weight", f"{_TL}attn.out_proj.bias", tower="text"),
    *pair(f"{_T}{_HL}layer_norm2", f"{_TL}ln_2.weight", f"{_TL}ln_2.bias", tower="text"),
    *pair(f"{_T}{_HL}mlp.fc1", f"{_TL}mlp.c_fc.weight", f"{_TL}mlp.c_fc.bias", tower="text"),
    *pair(f"{_T}{_HL}mlp.fc2", f"{_TL}mlp.c_proj.weight", f"{_TL}mlp.c_proj.bias", tower="text"),
    *pair(f"{_T}final_layer_norm", "text.ln_final.weight", "text.ln_final.bias"),
    *pair(f"{_T}head", "text.text_projection.weight", "text.text_projection.bias"),
]

# NaFlex towers (timm's NaFlexVit): a Linear over (ph, pw, c) patches and a (1, n, n, D) position grid.
_NAFLEX_STEM = {
    f"{_V}embeddings.patch_embedding.weight": rule(
        f"{_V}embeddings.patch_embedding.weight", "visual.trunk.embeds.proj.weight"
    ),
    f"{_V}embeddings.patch_embedding.bias": rule(
        f"{_V}embeddings.patch_embedding.bias", "visual.trunk.embeds.proj.bias"
    ),
    f"{_V}embeddings.position_embedding.weight": rule(
        f"{_V}embeddings.position_embedding.weight", "visual.trunk.embeds.pos_embed", "batch_grid"
    ),
}


def rules(naflex: bool) -> list[Rule]:
    """The table for a FixRes tower (timm's VisionTransformer) or a NaFlex one (NaFlexVit)."""
    return [_NAFLEX_STEM.get(item.hub[0], item) for item in RULES] if naflex else RULES


# timm's SigLIP ViTs, `vit_{size}_patch{P}_siglip_{res}`: size -> (width, depth, heads, mlp_ratio).
TIMM_SIZES = {
    "base": (768, 12, 12, 4.0),
    "large": (1024, 24, 16, 4.0),
    "so400m": (1152, 27, 16, 3.7362),
    "giantopt": (1536, 40, 16, 4.0),
}
# The SigLIP2-only timm variants are defined with act_layer='gelu_tanh'; the others use exact GELU.
TIMM_TANH = {("base", 32), ("so400m", 16), ("giantopt", 16)}
TIMM_NAME = re.compile(r"vit_(base|large|so400m|giantopt)_patch(\d+)_siglip_(\d+)")
TIMM_NAFLEX_NAME = re.compile(r"naflexvit_(base|so400m)_patch(\d+)_siglip")  # defined with gelu_tanh, 16x16 grid
TIMM_KWARGS = {"embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "act_layer", "global_pool"}
FIXRES_KWARGS = TIMM_KWARGS | {"img_size", "class_token"}
NAFLEX_KWARGS = TIMM_KWARGS | {"pos_embed_grid_size", "pos_embed_interp_mode"}
TIMM_ACTS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
# Our preprocessor's PIL resample codes for open_clip's interpolation names.
RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}


def towers(config: dict[str, Any]) -> Towers:
    text, vision = config["text_config"], config["vision_config"]
    return Towers(
        layers={"text": text["num_hidden_layers"], "vision": vision["num_hidden_layers"]},
        heads={"text": text["num_attention_heads"], "vision": vision["num_attention_heads"]},
    )


def _field(section: dict[str, Any], key: str, where: str, default: Any = ConfigError) -> Any:
    if key in section and section[key] is not None:
        return section[key]
    if default is ConfigError:
        raise ConfigError(f"{where}.{key} is missing: open_clip_config.json must give it.")
    return default


def _expect(section: dict[str, Any], key: str, where: str, allowed: tuple, default: Any) -> None:
    value = section.get(key, default)
    if value not in allowed:
        raise ConfigError(
            f"{where}.{key} is {value!r}; a SigLIP checkpoint has {' or '.join(map(repr, allowed))}, and siglip "
            f"maps nothing else."
        )


def _mlp(width: int, ratio: float) -> int:
    return int(width * ratio)


def vision_config(vision: dict[str, Any], where: str = "model_cfg.vision_cfg") -> dict[str, Any]:
    """timm ViT settings (a named SigLIP ViT or NaFlexVit, then `timm_model_kwargs` overrides) -> our vision config."""
    name = _field(vision, "timm_model_name", where)
    fixres, naflex = TIMM_NAME.fullmatch(name), TIMM_NAFLEX_NAME.fullmatch(name)
    if not (fixres or naflex):
        raise ConfigError(
            f"{where}.timm_model_name is {name!r}; siglip maps timm's SigLIP ViTs (vit_{{base,large,so400m,"
            f"giantopt}}_patch{{N}}_siglip_{{res}}, naflexvit_{{base,so400m}}_patch{{N}}_siglip); GAP variants "
            f"have no MAP head."
        )
    _expect(vision, "timm_pool", where, ("map",), "avg")
    _expect(vision, "timm_proj", where, ("none", "", None), "linear")
    match = fixres or naflex
    size, patch = match.group(1), int(match.group(2))
    width, depth, heads, ratio = TIMM_SIZES[size]
    act = "gelu_tanh" if naflex or (size, patch) in TIMM_TANH else "gelu"
    kwargs = dict(vision.get("timm_model_kwargs") or {})
    unknown = sorted(set(kwargs) - (NAFLEX_KWARGS if naflex else FIXRES_KWARGS))
    if unknown:
        raise ConfigError(f"{where}.timm_model_kwargs.{unknown[0]} has no counterpart in a SigLIP vision config.")
    if kwargs.get("class_token", False) or kwargs.get("global_pool", "map") != "map":
        raise ConfigError(f"{where}.timm_model_kwargs: SigLIP has no class token and a 'map' pool.")
    act = kwargs.get("act_layer", act)
    if act not in TIMM_ACTS:
        raise ConfigError(f"{where}.timm_model_kwargs.act_layer {act!r} is not one of {sorted(TIMM_ACTS)}.")
    width = kwargs.get("embed_dim", width)
    config = {
        "hidden_size": width,
        "num_hidden_layers": kwargs.get("depth", depth),
        "num_attention_heads": kwargs.get("num_heads", heads),
        "intermediate_size": _mlp(width, kwargs.get("mlp_ratio", ratio)),
        "patch_size": kwargs.get("patch_size", patch),
        "hidden_act": TIMM_ACTS[act],
        "layer_norm_eps": 1e-6,
    }
    if naflex:
        if kwargs.get("pos_embed_interp_mode", "bilinear") != "bilinear":
            raise ConfigError(f"{where}.timm_model_kwargs.pos_embed_interp_mode: SigLIP2 resizes positions bilinearly.")
        rows, cols = kwargs.get("pos_embed_grid_size", (16, 16))
        if rows != cols:
            raise ConfigError(f"{where}.timm_model_kwargs.pos_embed_grid_size must be square, got {(rows, cols)}.")
        return {**config, "num_patches": rows * cols}
    image_size = kwargs.get("img_size", vision.get("image_size", int(fixres.group(3))))
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise ConfigError(f"{where}.image_size {image_size} is not square; SigLIP FixRes towers are.")
        image_size = image_size[0]
    return {**config, "image_size": int(image_size)}


def text_config(text: dict[str, Any], embed_dim: int, where: str = "model_cfg.text_cfg") -> dict[str, Any]:
    """open_clip's TextTransformer settings -> our text config dict (refusing what SigLIP's tower is not)."""
    if text.get("hf_model_name"):
        raise ConfigError(f"{where}.hf_model_name is set: a Hugging Face text tower is not SigLIP's.")
    _expect(text, "pool_type", where, ("last",), "argmax")
    _expect(text, "no_causal_mask", where, (True,), False)
    _expect(text, "proj_bias", where, (True,), False)
    _expect(text, "proj_type", where, ("linear",), "linear")
    _expect(text, "embed_cls", where, (False,), False)
    approximate = (text.get("act_kwargs") or {}).get("approximate", "none")
    width = _field(text, "width", where, 512)
    return {
        "vocab_size": _field(text, "vocab_size", where),
        "hidden_size": width,
        "num_hidden_layers": _field(text, "layers", where, 12),
        "num_attention_heads": _field(text, "heads", where, 8),
        "intermediate_size": _mlp(width, text.get("mlp_ratio", 4.0)),
        "max_position_embeddings": _field(text, "context_length", where, 77),
        "projection_size": embed_dim,
        "hidden_act": "gelu_pytorch_tanh" if approximate == "tanh" else "gelu",
        "layer_norm_eps": (text.get("norm_kwargs") or {}).get("eps", 1e-5),
    }


def hub_config(open_clip_config: dict[str, Any], source: str) -> dict[str, Any]:
    """`open_clip_config.json` -> the Hub `config.json` dict (model_type "siglip": FixRes SigLIP and SigLIP2)."""
    model = open_clip_config.get("model_cfg")
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: {CONFIG_FILE} has no model_cfg object.")
    embed_dim = _field(model, "embed_dim", "model_cfg")
    vision = vision_config(_field(model, "vision_cfg", "model_cfg"))
    text = text_config(_field(model, "text_cfg", "model_cfg"), embed_dim)
    if vision["hidden_size"] != embed_dim:
        raise ConfigError(
            f"model_cfg.embed_dim ({embed_dim}) differs from the vision width ({vision['hidden_size']}): SigLIP's "
            f"vision tower has no projection."
        )
    naflex = "num_patches" in vision  # SigLIP2 NaFlex; FixRes SigLIP2 is model_type "siglip", as on the Hub
    config = {
        "model_type": "siglip2" if naflex else "siglip",
        "architectures": ["Siglip2Model" if naflex else "SiglipModel"],
        "text_config": text,
        "vision_config": vision,
    }
    if open_clip_config.get("hypothesis_template"):  # siglip's zero-shot prompt, kept by `siglip convert`
        config["hypothesis_template"] = open_clip_config["hypothesis_template"]
    return config


def preprocess(open_clip_config: dict[str, Any], vision: dict[str, Any]) -> dict[str, Any]:
    """`preprocess_cfg` (+ the NaFlex sequence length) -> `preprocessor_config.json`."""
    settings = open_clip_config.get("preprocess_cfg") or {}
    where = "preprocess_cfg"
    naflex = "num_patches" in vision
    interpolation = settings.get("interpolation", "bilinear" if naflex else "bicubic")
    if interpolation not in RESAMPLE:
        raise ConfigError(f"{where}.interpolation {interpolation!r} is not one of {sorted(RESAMPLE)}.")
    common = {
        "resample": RESAMPLE[interpolation],
        "image_mean": list(settings.get("mean", (0.5, 0.5, 0.5))),
        "image_std": list(settings.get("std", (0.5, 0.5, 0.5))),
    }
    if naflex:  # aspect-preserving resize to a patch budget: open_clip's image_seq_len
        budget = open_clip_config["model_cfg"]["vision_cfg"].get("image_seq_len") or vision["num_patches"]
        return {
            "image_processor_type": "Siglip2ImageProcessor",
            "patch_size": vision["patch_size"],
            "max_num_patches": int(budget),
            **common,
        }
    _expect(settings, "resize_mode", where, ("squash",), "squash")
    size = settings.get("size", vision["image_size"])
    if isinstance(size, (list, tuple)):
        size = size[0]
    return {"image_processor_type": "SiglipImageProcessor", "size": {"height": int(size), "width": int(size)}, **common}


# ---- the reverse direction ------------------------------------------------------------------------------
def _ratio(width: int, hidden: int) -> float:
    """An mlp_ratio with int(width * ratio) == hidden exactly (open_clip and timm truncate)."""
    ratio = hidden / width
    return ratio if _mlp(width, ratio) == hidden else (hidden + 0.5) / width


def open_clip_config(config: dict[str, Any], preprocessor: dict[str, Any], tokenizer: str) -> dict[str, Any]:
    """The Hub config (+ preprocessor settings) -> `open_clip_config.json` (a named timm ViT when one fits)."""
    text, vision = config["text_config"], config["vision_config"]
    if not vision.get("vision_use_head", True):
        raise ConfigError("vision_config.vision_use_head is false: open_clip's SigLIP always has the MAP head.")
    naflex = config.get("model_type") == "siglip2"
    if config.get("model_type") not in ("siglip", "siglip2"):
        raise ConfigError(f"model_type {config.get('model_type')!r} has no open_clip counterpart.")
    width, patch = vision["hidden_size"], vision["patch_size"]
    act = {value: key for key, value in TIMM_ACTS.items()}.get(vision.get("hidden_act", "gelu_pytorch_tanh"))
    if act is None:
        raise ConfigError(f"vision_config.hidden_act {vision.get('hidden_act')!r} has no timm counterpart.")
    wanted = (width, vision["num_hidden_layers"], vision["num_attention_heads"], vision["intermediate_size"])
    named = [(size, (w, d, h, _mlp(w, r))) for size, (w, d, h, r) in TIMM_SIZES.items()]
    match = next((size for size, sizes in named if sizes == wanted), None)
    vision_cfg: dict[str, Any] = {"timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"}
    kwargs = {
        "embed_dim": width,
        "depth": wanted[1],
        "num_heads": wanted[2],
        "mlp_ratio": _ratio(width, wanted[3]),
        "patch_size": patch,
        "act_layer": act,
    }
    if naflex:
        side = round(vision["num_patches"] ** 0.5)
        vision_cfg.update(image_size=side * patch, image_seq_len=preprocessor.get("max_num_patches", side * side))
        if match in ("base", "so400m") and act == "gelu_tanh" and side == 16:
            vision_cfg["timm_model_name"] = f"naflexvit_{match}_patch{patch}_siglip"
        else:  # sizes no named NaFlexVit has: a named one with every size overridden (timm_model_kwargs)
            vision_cfg["timm_model_name"] = "naflexvit_base_patch16_siglip"
            vision_cfg["timm_model_kwargs"] = {**kwargs, "pos_embed_grid_size": [side, side]}
    else:
        resolution = vision["image_size"]
        vision_cfg["image_size"] = resolution
        if match and ("gelu_tanh" if (match, patch) in TIMM_TANH else "gelu") == act:
            vision_cfg["timm_model_name"] = f"vit_{match}_patch{patch}_siglip_{resolution}"
        else:  # sizes no named ViT has: a named one with every size overridden (open_clip's timm_model_kwargs)
            vision_cfg["timm_model_name"] = "vit_base_patch16_siglip_224"
            vision_cfg["timm_model_kwargs"] = {**kwargs, "img_size": resolution}
    text_act = text.get("hidden_act", "gelu_pytorch_tanh")
    if text_act not in ("gelu", "gelu_pytorch_tanh"):
        raise ConfigError(f"text_config.hidden_act {text_act!r} has no open_clip counterpart.")
    text_cfg = {
        "context_length": text.get("max_position_embeddings", 64),
        "vocab_size": text["vocab_size"],
        "hf_tokenizer_name": tokenizer,
        "tokenizer_kwargs": {"clean": "canonicalize"},
        "width": text["hidden_size"],
        "heads": text["num_attention_heads"],
        "layers": text["num_hidden_layers"],
        "mlp_ratio": _ratio(text["hidden_size"], text["intermediate_size"]),
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": text.get("layer_norm_eps", 1e-6)},
    }
    if text_act == "gelu_pytorch_tanh":
        text_cfg["act_kwargs"] = {"approximate": "tanh"}
    if vision.get("layer_norm_eps", 1e-6) != 1e-6:
        raise ConfigError("vision_config.layer_norm_eps is not 1e-6, which timm's SigLIP ViTs fix.")
    model_cfg = {
        "embed_dim": text.get("projection_size") or text["hidden_size"],
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": vision_cfg,
        "text_cfg": text_cfg,
    }
    if model_cfg["embed_dim"] != width:
        raise ConfigError("text_config.projection_size differs from the vision width; open_clip needs them equal.")
    names = {value: key for key, value in RESAMPLE.items()}
    preprocess_cfg = {
        "mean": list(preprocessor.get("image_mean", (0.5, 0.5, 0.5))),
        "std": list(preprocessor.get("image_std", (0.5, 0.5, 0.5))),
        "interpolation": names.get(preprocessor.get("resample", 2 if naflex else 3), "bicubic"),
    }
    if not naflex:
        preprocess_cfg["resize_mode"] = "squash"
    settings = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    if config.get("hypothesis_template"):  # open_clip ignores it; siglip reads it back
        settings["hypothesis_template"] = config["hypothesis_template"]
    return settings
