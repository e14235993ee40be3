"""The Hub view of a foreign checkpoint: the metadata files a Hub folder would hold, written from the I/O tier.

`hub.resolve_file` serves these files in place of the source's own, so every loader (config, image processor,
tokenizer, Auto classes) reads an open_clip folder or a big_vision `.npz` as a Hub folder. The view holds plain
files: the config and preprocessor dicts as JSON, the tokenizer files copied as stored and a
`tokenizer_config.json` that says what to build from them (the class, the text length, no attention mask). The
tokenizer classes read it as they read any Hub folder; `siglip convert` writes their normalised files
(formats/convert.py).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import sentencepiece as spm

from ..errors import ConfigError, SiglipError
from ..files import read_json, read_regular
from ..hub_files import HubOptions, resolve_stored_file
from . import Foreign, detect, open_clip, open_foreign

# Files a foreign source's view supplies (in place of whatever the source holds under these names).
VIEW_FILES = frozenset(
    {
        "config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "spiece.model",
        "tokenizer.json",
    }
)
MAX_TOKENIZER_BYTES = 256 * 1024 * 1024  # the tokenizer classes' own cap (Gemma's tokenizer.json is ~35 MB)

_VIEWS: dict[tuple, tuple[Path, Foreign]] = {}
_VIEW_ROOT: list[Path] = []


def hub_view(
    name_or_path: str | os.PathLike, options: HubOptions | None = None, variant: str | None = None
) -> tuple[Path, Foreign] | None:
    """A folder with the Hub metadata files of a foreign source (made once per process), or None for Hub sources."""
    options = options or HubOptions()
    if detect(name_or_path, options) == "hub":
        return None
    path = Path(name_or_path).expanduser()
    # a local source is re-read when it or its config changed (an edited file leaves the folder's mtime alone)
    stamp = tuple(p.stat().st_mtime_ns for p in (path, path / open_clip.CONFIG_FILE) if p.exists())
    key = (str(path.resolve()) if path.exists() else str(name_or_path), stamp, options.revision, variant)
    if key not in _VIEWS:
        foreign = open_foreign(name_or_path, options, variant=variant)  # weights are not read here
        assert foreign is not None
        if not _VIEW_ROOT:
            _VIEW_ROOT.append(Path(tempfile.mkdtemp(prefix="siglip-formats-")))
            atexit.register(shutil.rmtree, _VIEW_ROOT[0], ignore_errors=True)
        folder = _VIEW_ROOT[0] / str(len(_VIEWS))
        write_view(foreign, folder)
        _VIEWS[key] = (folder, foreign)
    return _VIEWS[key]


def write_view(foreign: Foreign, folder: Path, tokenizer: str | None = None) -> None:
    """config.json, preprocessor_config.json and the tokenizer files (from `tokenizer` if given) into `folder`.

    Warns when the tokenizer's vocabulary and the text embedding differ in size (a tokenizer of another model)."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", foreign.config, sort_keys=True)
    _write_json(folder / "preprocessor_config.json", foreign.preprocessor)
    source = tokenizer or foreign.tokenizer
    options = foreign.tokenizer_options if tokenizer is None else HubOptions()
    gemma = foreign.tokenizer_file == "tokenizer.json"
    # The class the tokenizer files are read with; padded to the text length with no attention mask, as open_clip
    # and big_vision run the text tower.
    settings: dict[str, Any] = {"tokenizer_class": "Siglip2Tokenizer" if gemma else "SiglipTokenizer"}
    if source is None:  # the class only: loading it then fails on its missing file, saying where to get it
        _write_json(folder / "tokenizer_config.json", settings, indent=None)
        return
    stored = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json") if gemma else ("spiece.model",)
    for filename in stored:  # the source's own files, as stored (not through a view)
        found = resolve_stored_file(source, filename, options, required=filename in ("tokenizer.json", "spiece.model"))
        if found is not None:
            shutil.copyfile(found, folder / filename)
    if gemma and (folder / "tokenizer_config.json").is_file():  # the Gemma files' own settings, overridden below
        settings = {**_read_object(folder / "tokenizer_config.json"), **settings}
    length = foreign.config["text_config"]["max_position_embeddings"]
    settings.update(model_max_length=length, model_input_names=["input_ids"])
    _write_json(folder / "tokenizer_config.json", settings, sort_keys=True)
    count, rows = _vocabulary_size(folder, gemma, settings), foreign.config["text_config"]["vocab_size"]
    if count is not None and count != rows:  # e.g. a 250k multilingual tokenizer beside a 256k Gemma model
        warnings.warn(
            f"{foreign.source}: the tokenizer from {source} has {count} tokens but the text embedding "
            f"has {rows} rows; check that it is this model's tokenizer.",
            stacklevel=2,
        )


def _vocabulary_size(folder: Path, gemma: bool, settings: dict[str, Any]) -> int | None:
    """Tokens in the view's tokenizer files (pieces, or the BPE vocabulary with its added tokens); None when they
    cannot be read (the tokenizer class says why once it is loaded). A special token that only the class adds
    (a default missing from the files, such as Gemma's `<mask>`) is not counted."""
    try:
        if not gemma:
            model = spm.SentencePieceProcessor()
            model.LoadFromSerializedProto(read_regular(folder / "spiece.model", MAX_TOKENIZER_BYTES))
            return model.get_piece_size()
        data = read_json(folder / "tokenizer.json", max_bytes=MAX_TOKENIZER_BYTES)
        tokens = set(data["model"]["vocab"])
        tokens.update(token["content"] for token in data.get("added_tokens") or [])
        tokens.update(token["content"] for token in (settings.get("added_tokens_decoder") or {}).values())
        return len(tokens)
    except (SiglipError, RuntimeError, OSError, KeyError, TypeError, AttributeError):
        return None


def _read_object(path: Path) -> dict[str, Any]:
    value = read_json(path, "the tokenizer settings")
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(value).__name__}.")
    return value


def _write_json(path: Path, value: dict[str, Any], *, indent: int | None = 2, sort_keys: bool = False) -> None:
    path.write_text(json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n", encoding="utf-8")
