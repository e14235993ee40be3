"""The files that travel with exported graphs: config, tokenizer and image-processor files of the checkpoint.

With them the export folder is a whole model for ONNX Runtime, transformers.js or this library's own processors
(`siglip.AutoProcessor.from_pretrained(out_dir)` works on it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..foreign.view import hub_view
from ..formats.convert import write_normalised_processor
from ..hub import HubOptions, resolve_file

# Every non-weight file a SigLIP / SigLIP2 checkpoint may carry; those present are copied.
COMPANION_FILES = (
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "tokenizer.model",
    "tokenizer.json",
)


def copy_companion_files(
    name_or_path: str | os.PathLike, out_dir: Path, options: HubOptions | None = None
) -> list[Path]:
    """Copy the checkpoint's config, tokenizer and processor files that exist into `out_dir`; returns them.

    An open_clip / big_vision source with a tokenizer gets the files `siglip convert` writes for it: its Hub view's
    config, and the processor and tokenizer files as our classes save them (normalised, e.g. a SigLIP2
    tokenizer.json with its lower-casing), so the folder reads the same in any tool.
    """
    view = hub_view(name_or_path, options)
    if view is not None and view[1].tokenizer is not None:
        before = set(out_dir.iterdir())
        shutil.copyfile(view[0] / "config.json", out_dir / "config.json")
        write_normalised_processor(view[0], out_dir)
        return sorted((set(out_dir.iterdir()) - before) | {out_dir / "config.json"})
    copied = []
    for filename in COMPANION_FILES:
        source = resolve_file(name_or_path, filename, options, required=False)
        if source is not None:
            target = out_dir / filename
            shutil.copyfile(source, target)
            copied.append(target)
    return copied
