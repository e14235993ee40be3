"""Convert a checkpoint between the Hub layout, open_clip and big_vision `.npz` (`siglip convert`).

Every direction goes through the Hub's names: a source in another format is read with `open_foreign`, a Hub
source as it is; the target format's table (foreign/open_clip.py, foreign/big_vision.py) renames and reshapes.
The output folder always carries the tokenizer and image-processor files, so that it loads on its own.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, InputError
from ..foreign import Foreign, big_vision, namemap, open_clip, open_foreign
from ..foreign.view import write_view
from ..hub import HUB_ID, HubOptions, is_local, resolve_file

TARGETS = ("hub", "open_clip", "big_vision")


def convert(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    to: str = "hub",
    variant: str | None = None,
    tokenizer: str | None = None,
    allow_pickle: bool = False,
    revision: str | None = None,
) -> list[Path]:
    """Write `source` into the folder `out` in the `to` format; returns the files written.

    `variant` names a big_vision model when the `.npz` file name does not; `tokenizer` (a folder or Hub id)
    supplies the tokenizer of a source that has none (big_vision files never do).
    """
    if to not in TARGETS:
        raise InputError(f"unknown target format {to!r}; choose one of {TARGETS}.")
    options = HubOptions(revision=revision)
    foreign = open_foreign(source, options, allow_pickle=allow_pickle, variant=variant)
    folder = Path(out)
    if folder.is_file():
        raise InputError(f"{folder} is a file; --out needs a folder.")
    if foreign is not None and foreign.tokenizer is None and tokenizer is None:
        raise ConfigError(f"{source} has no tokenizer: {foreign.missing_tokenizer}.")
    hub_folder = folder if to == "hub" else folder / ".hub-staging"
    written = _write_hub(source, foreign, hub_folder, options, tokenizer, allow_pickle) if foreign else None
    if to == "hub":
        if foreign is None:
            raise InputError(f"{source} is already in the Hub layout; pick --to open_clip or --to big_vision.")
        return written or []
    hub_source: str | os.PathLike = hub_folder if foreign is not None else source
    try:
        return _write_other(hub_source, folder, to, options if foreign is None else HubOptions(), source, allow_pickle)
    finally:
        if foreign is not None:
            for path in sorted(hub_folder.glob("*")):
                path.unlink()
            hub_folder.rmdir()


def _write_hub(
    source: Any, foreign: Foreign, folder: Path, options: HubOptions, tokenizer: str | None, allow_pickle: bool
) -> list[Path]:
    from ..config import config_from_dict
    from ..weights import save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None and foreign.tokenizer is None:
        foreign.tokenizer = tokenizer
    with tempfile.TemporaryDirectory(prefix="siglip-convert-") as staging:
        write_view(foreign, Path(staging), tokenizer)
        write_normalised_processor(Path(staging), folder)
    weights = foreign.weights()
    config = config_from_dict(foreign.config, source=str(source))
    config.dtype = str(next(iter(weights.values())).dtype).removeprefix("torch.")
    config.save_pretrained(folder)
    save_safetensors(weights, folder)
    return sorted(path for path in folder.iterdir() if path.is_file())


def write_normalised_processor(view: Path, folder: Path) -> None:
    """A Hub view's processor and tokenizer, read back by our own classes, saved into `folder` as they write them
    (normalised: the files transformers and transformers.js read, not the source's as stored)."""
    from ..auto import AutoImageProcessor, AutoTokenizer

    AutoImageProcessor.from_pretrained(view).save_pretrained(folder)
    AutoTokenizer.from_pretrained(view).save_pretrained(folder)


def _hub_state(source: Any, options: HubOptions, allow_pickle: bool) -> dict[str, torch.Tensor]:
    from ..weights import find_weight_files, iter_checkpoint_tensors

    files = find_weight_files(source, options, allow_pickle)
    return {
        name: tensor.float()
        for name, tensor in iter_checkpoint_tensors(files, torch.device("cpu"))
        if not name.endswith("position_ids")
    }


def _read(source: Any, filename: str, options: HubOptions, required: bool = True) -> dict[str, Any]:
    path = resolve_file(source, filename, options, required=required)
    return json.loads(path.read_text(encoding="utf-8")) if path is not None else {}


def _write_other(
    hub_source: Any, folder: Path, to: str, options: HubOptions, original: Any, allow_pickle: bool
) -> list[Path]:
    from ..auto import AutoTokenizer

    config = _read(hub_source, "config.json", options)
    state = _hub_state(hub_source, options, allow_pickle)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(hub_source, revision=options.revision)
    tokenizer.save_pretrained(folder)
    gemma = (folder / "tokenizer.json").is_file()
    written: list[Path] = []
    if to == "open_clip":
        preprocessor = _read(hub_source, "preprocessor_config.json", options, required=False)
        name = str(original) if HUB_ID.fullmatch(str(original)) and not is_local(original) else str(folder.resolve())
        settings = open_clip.open_clip_config(config, preprocessor, name)
        table = open_clip.rules(config.get("model_type") == "siglip2")
        tensors = namemap.from_hub(table, open_clip.towers(config), state, str(original))
        from safetensors.torch import save_file

        target = folder / open_clip.WEIGHT_FILES[0]
        save_file(tensors, str(target), metadata={"format": "pt"})
        (folder / open_clip.CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        written += [target, folder / open_clip.CONFIG_FILE]
    else:
        naflex = config.get("model_type") == "siglip2"
        vocab = config["text_config"]["vocab_size"]
        family = (
            ("siglip2-naflex" if naflex else "siglip2") if gemma else ("siglip-i18n" if vocab == 250000 else "siglip")
        )
        if naflex and not gemma:
            raise ConfigError("a NaFlex (siglip2) model needs the Gemma tokenizer (tokenizer.json).")
        tensors = namemap.from_hub(big_vision.rules(naflex), big_vision.towers(config), state, str(original))
        target = folder / f"{family}.npz"
        big_vision.write_npz(tensors, str(target))
        written.append(target)
    return sorted({*written, *(p for p in folder.iterdir() if p.is_file())})
