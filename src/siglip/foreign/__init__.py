"""Other checkpoint formats: open_clip / timm folders and big_vision `.npz` files, read in the Hub's terms.

The format is read from the files present, never from weight names: `config.json` means the Hub layout,
`open_clip_config.json` open_clip, a `.npz` file (or a folder with exactly one) big_vision. `open_foreign` gives
such a source as a `Foreign`: the Hub config and preprocessor dicts, where its tokenizer is, and its weights
renamed to the Hub's names (foreign/namemap.py). `view.hub_view` writes the Hub metadata files from it, which
`hub.resolve_file` serves in place of the source's own; so from_pretrained, the Auto classes, the pipeline and
every CLI command take these sources as they are. All of it sits in the I/O tier, beside hub.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError, UnsafeCheckpointError
from ..hub_files import HUB_ID, HubOptions, resolve_stored_file
from . import big_vision, namemap, open_clip


@dataclass
class Foreign:
    """A checkpoint in another format, described in the Hub's terms."""

    format: str  # "open_clip" or "big_vision"
    source: str
    config: dict[str, Any]  # the Hub config.json dict
    preprocessor: dict[str, Any]  # preprocessor_config.json
    tokenizer: str | None  # where the tokenizer files are (folder or Hub id); None: the format has none
    tokenizer_file: str  # "spiece.model" (SiglipTokenizer) or "tokenizer.json" (Gemma)
    read_weights: Callable[[], dict[str, torch.Tensor]]  # Hub-named tensors
    missing_tokenizer: str = ""  # what to do when `tokenizer` is None
    tokenizer_options: HubOptions = HubOptions()  # how to reach `tokenizer` (the source's own Hub options)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.read_weights()


def detect(name_or_path: str | os.PathLike, options: HubOptions | None = None) -> str:
    """ "hub", "open_clip" or "big_vision", from the files present."""
    options = options or HubOptions()
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return "big_vision" if path.suffix == ".npz" else "hub"
    if path.is_dir():
        if (path / options.subfolder / "config.json").is_file():
            return "hub"
        if (path / open_clip.CONFIG_FILE).is_file():
            return "open_clip"
        found = sorted(path.glob("*.npz"))
        if len(found) > 1:
            raise CheckpointError(
                f"{path} holds several .npz files ({', '.join(p.name for p in found[:5])}) and no config.json: "
                f"pass the path of the one to load."
            )
        return "big_vision" if found else "hub"
    if not HUB_ID.fullmatch(str(name_or_path)):
        return "hub"  # the Hub loader's own error follows
    key = (str(name_or_path), options.revision, str(options.cache_dir), options.local_files_only)
    if key not in _HUB_FORMATS:
        if resolve_stored_file(name_or_path, "config.json", options, required=False) is not None:
            _HUB_FORMATS[key] = "hub"
        elif resolve_stored_file(name_or_path, open_clip.CONFIG_FILE, options, required=False) is not None:
            _HUB_FORMATS[key] = "open_clip"
        else:
            _HUB_FORMATS[key] = "hub"
    return _HUB_FORMATS[key]


_HUB_FORMATS: dict[tuple, str] = {}


def open_foreign(
    name_or_path: str | os.PathLike,
    options: HubOptions | None = None,
    *,
    allow_pickle: bool = False,
    variant: str | None = None,
) -> Foreign | None:
    """The source as a `Foreign` checkpoint, or None when it is in the Hub layout."""
    options = options or HubOptions()
    kind = detect(name_or_path, options)
    if kind == "open_clip":
        return _open_clip(name_or_path, options, allow_pickle)
    if kind == "big_vision":
        return _big_vision(name_or_path, variant)
    return None


# ---- open_clip --------------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read {what} {path}: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must hold a JSON object.")
    return value


def _open_clip(name: str | os.PathLike, options: HubOptions, allow_pickle: bool) -> Foreign:
    source = str(name)
    settings = _read_json(resolve_stored_file(name, open_clip.CONFIG_FILE, options), open_clip.CONFIG_FILE)
    config = open_clip.hub_config(settings, source)
    preprocessor = open_clip.preprocess(settings, config["vision_config"])
    text_cfg = settings["model_cfg"]["text_cfg"]
    tokenizer, tokenizer_file, tokenizer_options = _open_clip_tokenizer(
        name, options, text_cfg.get("hf_tokenizer_name")
    )
    config["text_config"].update(pad_token_id=0 if tokenizer_file == "tokenizer.json" else 1, eos_token_id=1)

    def read() -> dict[str, torch.Tensor]:
        state = _open_clip_state(name, options, allow_pickle)
        table = open_clip.rules(config["model_type"] == "siglip2")
        return namemap.to_hub(table, open_clip.towers(config), state.__getitem__, set(state), source)

    missing = (
        f"set model_cfg.text_cfg.hf_tokenizer_name in {open_clip.CONFIG_FILE} to a folder or Hub id with the "
        f"tokenizer, or put its files (spiece.model or tokenizer.json) beside the weights"
    )
    return Foreign(
        "open_clip", source, config, preprocessor, tokenizer, tokenizer_file, read, missing, tokenizer_options
    )


def _open_clip_state(name: str | os.PathLike, options: HubOptions, allow_pickle: bool) -> dict[str, torch.Tensor]:
    safe, pickle = open_clip.WEIGHT_FILES
    path = resolve_stored_file(name, safe, options, required=False)
    if path is not None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path} is not a valid safetensors file ({error}).") from None
    path = resolve_stored_file(name, pickle, options, required=False)
    if path is None:
        raise CheckpointError(f"{name} has {open_clip.CONFIG_FILE} but neither {safe} nor {pickle}.")
    if not allow_pickle:
        raise UnsafeCheckpointError(
            f"{name} only has {pickle}, a pickle that could run code when loaded. Pass allow_pickle=True "
            f"(--allow-pickle) to read it with torch.load(weights_only=True), or convert it to safetensors."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise CheckpointError(f"{path} could not be loaded with weights_only=True ({type(error).__name__}).") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a dict of tensors.")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _open_clip_tokenizer(
    name: str | os.PathLike, options: HubOptions, hf_tokenizer_name: str | None
) -> tuple[str | None, str, HubOptions]:
    """Where the tokenizer is (the folder itself, else text_cfg.hf_tokenizer_name) and which file it reads.

    Its own tokenizer_config.json says which: a Gemma class means tokenizer.json, a T5 / SigLIP class the
    SentencePiece spiece.model; without one, the file present decides.
    """
    for candidate, candidate_options in ((name, options), (hf_tokenizer_name, HubOptions())):
        if not candidate:
            continue
        try:  # an unreachable hf_tokenizer_name leaves the model loadable; the tokenizer then says what is missing
            found = {
                filename: resolve_stored_file(candidate, filename, candidate_options, required=False)
                for filename in ("tokenizer_config.json", "spiece.model", "tokenizer.json")
            }
        except CheckpointNotFoundError:
            continue
        if not any(found.values()):
            continue
        config_path = found["tokenizer_config.json"]
        cls = str(_read_json(config_path, "tokenizer_config.json").get("tokenizer_class", "")) if config_path else ""
        gemma = "Gemma" in cls or "Siglip2" in cls or (not cls and found["spiece.model"] is None)
        return str(candidate), "tokenizer.json" if gemma else "spiece.model", candidate_options
    return None, "spiece.model", HubOptions()


# ---- big_vision -------------------------------------------------------------------------------------------
def _npz_path(name: str | os.PathLike) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        (path,) = sorted(path.glob("*.npz"))
    return path


def _big_vision(name: str | os.PathLike, variant_name: str | None) -> Foreign:
    path = _npz_path(name)
    source = str(path)
    variant = big_vision.parse_variant(variant_name or path.name)
    reader = big_vision.NpzReader(source)
    config = big_vision.hub_config(reader.shapes, variant, source)
    vision = config["vision_config"]
    if variant.naflex:
        preprocessor = {
            "image_processor_type": "Siglip2ImageProcessor",
            "patch_size": vision["patch_size"],
            "max_num_patches": vision["num_patches"],
            "resample": 2,
        }
    else:  # bicubic, as the Hub's conversions of these releases
        size = vision["image_size"]
        preprocessor = {
            "image_processor_type": "SiglipImageProcessor",
            "size": {"height": size, "width": size},
            "resample": 3,
            "image_mean": [0.5] * 3,
            "image_std": [0.5] * 3,
        }
    folder = path.parent
    tokenizer = str(folder) if (folder / variant.tokenizer_file).is_file() else None

    def read() -> dict[str, torch.Tensor]:
        return namemap.to_hub(
            big_vision.rules(variant.naflex), big_vision.towers(config), reader.read, set(reader.shapes), source
        )

    vocabulary = {
        "en": "the English c4 SentencePiece model (as spiece.model, 32k pieces)",
        "i18n": "the multilingual mc4 SentencePiece model (as spiece.model, 250k pieces)",
        "gemma": "the Gemma tokenizer (as tokenizer.json, 256k pieces)",
    }[variant.vocabulary]
    missing = (
        f"big_vision .npz files carry no tokenizer: put {vocabulary} beside {path.name}, or convert with "
        f"`siglip convert {path} --out DIR --tokenizer FOLDER_OR_HUB_ID`"
    )
    return Foreign("big_vision", source, config, preprocessor, tokenizer, variant.tokenizer_file, read, missing)
