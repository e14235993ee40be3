"""big_vision `.npz` checkpoints: the SigLIP / SigLIP2 releases and what big_vision users fine-tune.

An `.npz` holds big_vision's flattened parameter tree (`params/img/Transformer/encoderblock_0/...`), flax layouts:
Dense kernels (in, out), attention kernels (in, heads, head_dim) / (heads, head_dim, out), the patch conv HWIO,
`t` = log of the logit scale and `b` its bias. Layers may be stored stacked (`encoderblock/...` with a leading
layer axis, scan=True); they are read as `encoderblock_{i}`. Sizes come from the shapes; what the shapes cannot
say (SigLIP or SigLIP2, NaFlex, the tokenizer) comes from the variant: the file name as big_vision names its
releases (`webli_en_b16_224_63724782.npz`, `webli_i18n_so400m_16_256_78061115.npz`, `siglip2_b16_256.npz`,
`siglip2_so400m16_naflex.npz`) or given explicitly (`siglip`, `siglip-i18n`, `siglip2`, `siglip2-naflex`, or a
release name).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from .namemap import Rule, Towers, pair, rule

PREFIX = "params/"
_V, _T = "vision_model.", "text_model."
_HL = "encoder.layers.{}."


def _encoder_rules(hub: str, other: str, tower: str) -> list[Rule]:
    """One encoder block of either tower: big_vision's Encoder1DBlock against the reference's layer."""
    block, attention = f"{other}encoderblock_{{}}/", f"{other}encoderblock_{{}}/MultiHeadDotProductAttention_0/"
    layer = f"{hub}{_HL}"
    rules = [*pair(f"{layer}layer_norm1", f"{block}LayerNorm_0/scale", f"{block}LayerNorm_0/bias", tower=tower)]
    for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
        rules += pair(
            f"{layer}self_attn.{ours}_proj",
            f"{attention}{theirs}/kernel",
            f"{attention}{theirs}/bias",
            "heads_in",
            "heads_bias",
            tower=tower,
        )
    rules += pair(
        f"{layer}self_attn.out_proj", f"{attention}out/kernel", f"{attention}out/bias", "heads_out", tower=tower
    )
    rules += pair(f"{layer}layer_norm2", f"{block}LayerNorm_1/scale", f"{block}LayerNorm_1/bias", tower=tower)
    for index in (0, 1):
        rules += pair(
            f"{layer}mlp.fc{index + 1}",
            f"{block}MlpBlock_0/Dense_{index}/kernel",
            f"{block}MlpBlock_0/Dense_{index}/bias",
            "dense",
            tower=tower,
        )
    rules += pair(
        f"{hub}{'post_layernorm' if tower == 'vision' else 'final_layer_norm'}",
        f"{other}encoder_norm/scale",
        f"{other}encoder_norm/bias",
        tower=tower,
    )
    return rules


_MAP, _MHA = "img/MAPHead_0/", "img/MAPHead_0/MultiHeadDotProductAttention_0/"
_COMMON: list[Rule] = [
    rule("logit_scale", "t"),
    rule("logit_bias", "b"),
    *pair(f"{_V}embeddings.patch_embedding", "img/embedding/kernel", "img/embedding/bias", "conv_hwio"),
    rule(f"{_V}embeddings.position_embedding.weight", "img/pos_embedding", "squeeze0"),
    *_encoder_rules(_V, "img/Transformer/", "vision"),
    rule(f"{_V}head.probe", f"{_MAP}probe"),
    rule(
        f"{_V}head.attention.in_proj_weight",
        tuple(f"{_MHA}{n}/kernel" for n in ("query", "key", "value")),
        "heads_in",
        tower="vision",
    ),
    rule(
        f"{_V}head.attention.in_proj_bias",
        tuple(f"{_MHA}{n}/bias" for n in ("query", "key", "value")),
        "heads_bias",
        tower="vision",
    ),
    *pair(f"{_V}head.attention.out_proj", f"{_MHA}out/kernel", f"{_MHA}out/bias", "heads_out", tower="vision"),
    *pair(f"{_V}head.layernorm", f"{_MAP}LayerNorm_0/scale", f"{_MAP}LayerNorm_0/bias"),
    *pair(f"{_V}head.mlp.fc1", f"{_MAP}MlpBlock_0/Dense_0/kernel", f"{_MAP}MlpBlock_0/Dense_0/bias", "dense"),
    *pair(f"{_V}head.mlp.fc2", f"{_MAP}MlpBlock_0/Dense_1/kernel", f"{_MAP}MlpBlock_0/Dense_1/bias", "dense"),
    rule(f"{_T}embeddings.token_embedding.weight", "txt/Embed_0/embedding"),
    rule(f"{_T}embeddings.position_embedding.weight", "txt/pos_embedding", "squeeze0"),
    *_encoder_rules(_T, "txt/Encoder_0/", "text"),
    *pair(f"{_T}head", "txt/head/kernel", "txt/head/bias", "dense"),
]
# FixRes: a conv patch embedding and a (1, N, D) table. NaFlex: a Dense over (ph, pw, c) patches, an (n, n, D) grid.
_NAFLEX_STEM = {
    f"{_V}embeddings.patch_embedding.weight": rule(
        f"{_V}embeddings.patch_embedding.weight", "img/embedding/kernel", "dense"
    ),
    f"{_V}embeddings.position_embedding.weight": rule(
        f"{_V}embeddings.position_embedding.weight", "img/pos_embedding", "grid"
    ),
}


def rules(naflex: bool) -> list[Rule]:
    if not naflex:
        return _COMMON
    return [_NAFLEX_STEM.get(item.hub[0], item) for item in _COMMON]


# ---- the variant ------------------------------------------------------------------------------------------
# big_vision's size names -> (width, patch); the text tower of each release has the image tower's width,
# except g-opt (its text is So400m's).
SIZES = {
    "b16": (768, 16),
    "b32": (768, 32),
    "l16": (1024, 16),
    "so400m": (1152, 14),
    "so400m14": (1152, 14),
    "so400m16": (1152, 16),
    "so400m_16": (1152, 16),
    "g-opt16": (1536, 16),
}
VOCABULARIES = {"en": 32_000, "i18n": 250_000, "gemma": 256_000}
SIGLIP_NAME = re.compile(r"webli_(en|i18n)_(b16|l16|so400m(?:_16)?)_(\d+)(?:_\d+)?")
SIGLIP2_NAME = re.compile(r"siglip2_(b16|b32|l16|so400m14|so400m16|g-opt16)_(\d+|naflex)")
FAMILIES = {
    "siglip": ("siglip", "en", False),
    "siglip-i18n": ("siglip", "i18n", False),
    "siglip2": ("siglip2", "gemma", False),
    "siglip2-naflex": ("siglip2", "gemma", True),
}


@dataclass(frozen=True)
class Variant:
    """What a big_vision checkpoint is, beyond its shapes."""

    family: str  # "siglip" or "siglip2"
    vocabulary: str  # "en" (c4 SentencePiece, 32k), "i18n" (mc4 SentencePiece, 250k), "gemma" (256k)
    naflex: bool = False
    size: str | None = None  # big_vision size name ("b16", "so400m"), when the name gives one
    resolution: int | None = None

    @property
    def tokenizer_file(self) -> str:
        return "tokenizer.json" if self.vocabulary == "gemma" else "spiece.model"


def parse_variant(name: str) -> Variant:
    """A variant from a release file name (any folder, `.npz` or not) or a family name; ConfigError otherwise."""
    stem = re.sub(r"\.npz$", "", str(name).replace("\\", "/").rsplit("/", 1)[-1])
    if stem.lower() in FAMILIES:
        family, vocabulary, naflex = FAMILIES[stem.lower()]
        return Variant(family, vocabulary, naflex)
    if match := SIGLIP_NAME.match(stem):
        return Variant("siglip", match.group(1), False, match.group(2), int(match.group(3)))
    if match := SIGLIP2_NAME.match(stem):
        naflex = match.group(2) == "naflex"
        return Variant("siglip2", "gemma", naflex, match.group(1), None if naflex else int(match.group(2)))
    raise ConfigError(
        f"cannot tell the big_vision variant from {stem!r}: name the file as big_vision names its releases "
        f"(webli_en_b16_224_*.npz, webli_i18n_so400m_16_256_*.npz, siglip2_b16_256.npz, siglip2_so400m16_naflex.npz) "
        f"or pass variant= one of {sorted(FAMILIES)} (--variant on the command line)."
    )


def _shape(shapes: dict[str, tuple[int, ...]], key: str, source: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"{source} has no tensor {key}: not a big_vision SigLIP checkpoint.")
    return shapes[key]


def _depth(shapes: dict[str, tuple[int, ...]], prefix: str, source: str) -> int:
    found = {int(m.group(1)) for key in shapes if (m := re.match(re.escape(prefix) + r"encoderblock_(\d+)/", key))}
    if not found or found != set(range(len(found))):
        raise CheckpointError(f"{source}: the layers under {prefix}encoderblock_N are missing or not numbered 0..N-1.")
    return len(found)


def _tower(shapes: dict[str, tuple[int, ...]], prefix: str, source: str) -> dict[str, int]:
    block = f"{prefix}encoderblock_0/"
    query = _shape(shapes, f"{block}MultiHeadDotProductAttention_0/query/kernel", source)
    return {
        "hidden_size": query[0],
        "num_attention_heads": query[1],
        "intermediate_size": _shape(shapes, f"{block}MlpBlock_0/Dense_0/kernel", source)[1],
        "num_hidden_layers": _depth(shapes, prefix, source),
        "hidden_act": "gelu_pytorch_tanh",  # flax's nn.gelu default is the tanh approximation
        "layer_norm_eps": 1e-6,
    }


def hub_config(shapes: dict[str, tuple[int, ...]], variant: Variant, source: str) -> dict[str, Any]:
    """The Hub config.json dict: sizes from the (un-prefixed, unstacked) shapes, the rest from the variant."""
    vision = _tower(shapes, "img/Transformer/", source)
    text = _tower(shapes, "txt/Encoder_0/", source)
    kernel = _shape(shapes, "img/embedding/kernel", source)
    positions = _shape(shapes, "img/pos_embedding", source)
    if variant.naflex:
        if len(kernel) != 2 or len(positions) != 3:
            raise CheckpointError(
                f"{source}: img/embedding/kernel {kernel} is not a NaFlex patch Dense (variant {variant})."
            )
        vision.update(patch_size=round((kernel[0] / 3) ** 0.5), num_patches=positions[0] * positions[1])
    else:
        if len(kernel) != 4:
            raise CheckpointError(
                f"{source}: img/embedding/kernel {kernel} is not a conv kernel; a NaFlex file "
                f"needs the variant siglip2-naflex."
            )
        vision.update(patch_size=kernel[0], image_size=round(positions[1] ** 0.5) * kernel[0])
    _shape(shapes, "img/MAPHead_0/probe", source)
    vocab, _ = _shape(shapes, "txt/Embed_0/embedding", source)
    text.update(
        vocab_size=vocab,
        max_position_embeddings=_shape(shapes, "txt/pos_embedding", source)[1],
        projection_size=_shape(shapes, "txt/head/kernel", source)[1],
    )
    text.update(pad_token_id=0 if variant.vocabulary == "gemma" else 1, eos_token_id=1)  # Gemma pads with <pad>
    if variant.size is not None:  # a release: its vocabulary and size are known (the 250k / 256k mix-up)
        if vocab != VOCABULARIES[variant.vocabulary]:
            raise CheckpointError(
                f"{source}: the variant's {variant.vocabulary} tokenizer has {VOCABULARIES[variant.vocabulary]} "
                f"pieces but txt/Embed_0/embedding has {vocab} rows."
            )
        width, patch = SIZES[variant.size]
        if (vision["hidden_size"], vision["patch_size"]) != (width, patch):
            raise CheckpointError(
                f"{source}: the variant says {variant.size} (width {width}, patch {patch}) but img/embedding/kernel "
                f"gives width {vision['hidden_size']}, patch {vision['patch_size']}."
            )
    if variant.resolution is not None and vision.get("image_size") != variant.resolution:
        raise CheckpointError(
            f"{source}: the variant says {variant.resolution} px but img/pos_embedding gives "
            f"{vision.get('image_size')} px."
        )
    model_type = "siglip2" if variant.naflex else "siglip"
    architecture = "Siglip2Model" if variant.naflex else "SiglipModel"
    return {"model_type": model_type, "architectures": [architecture], "text_config": text, "vision_config": vision}


def towers(config: dict[str, Any]) -> Towers:
    text, vision = config["text_config"], config["vision_config"]
    return Towers(
        layers={"text": text["num_hidden_layers"], "vision": vision["num_hidden_layers"]},
        heads={"text": text["num_attention_heads"], "vision": vision["num_attention_heads"]},
    )


# ---- the file ---------------------------------------------------------------------------------------------
class NpzReader:
    """Lazy access to an `.npz` by un-prefixed, unstacked name (`img/Transformer/encoderblock_3/...`)."""

    def __init__(self, path: str) -> None:
        import numpy as np

        try:
            self.archive = np.load(path, allow_pickle=False)
            headers = _headers(path)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise CheckpointError(f"{path} is not a readable .npz file ({error}).") from None
        self.path = path
        self.sources: dict[str, tuple[str, int | None]] = {}  # name -> (npz key, index in a stacked array)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._stacked: tuple[str, Any] | None = None  # the last stacked array read (layers are read in order)
        for key, shape in headers.items():
            name = key.removeprefix(PREFIX)
            if "encoderblock/" in name:  # scan=True: one array with a leading layer axis
                for index in range(shape[0]):
                    unstacked = name.replace("encoderblock/", f"encoderblock_{index}/")
                    self.sources[unstacked] = (key, index)
                    self.shapes[unstacked] = shape[1:]
            else:
                self.sources[name] = (key, None)
                self.shapes[name] = shape

    def read(self, name: str) -> torch.Tensor:
        import numpy as np

        key, index = self.sources[name]
        if index is None:
            array = self.archive[key]
        else:
            if self._stacked is None or self._stacked[0] != key:
                self._stacked = (key, self.archive[key])
            array = self._stacked[1][index]
        if array.dtype.kind != "f":
            raise CheckpointError(f"{self.path}: {key} has dtype {array.dtype}, not floating point.")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _headers(path: str) -> dict[str, tuple[int, ...]]:
    """Array shapes from the `.npy` headers inside the zip, without reading the data."""
    import numpy as np

    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, _ = read(member)
            shapes[info.filename.removesuffix(".npy")] = tuple(shape)
    return shapes


def write_npz(tensors: dict[str, torch.Tensor], path: str) -> None:
    """Write `params/`-prefixed fp32 arrays, one per layer (scan=False), as big_vision's `save` does."""
    import numpy as np

    np.savez(path, **{PREFIX + name: tensor.detach().float().cpu().numpy() for name, tensor in tensors.items()})
