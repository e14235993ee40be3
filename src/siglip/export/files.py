"""The files that travel with exported graphs: config, tokenizer and image-processor files of the checkpoint.

With them the export folder is a whole model for ONNX Runtime, transformers.js or this library's own processors
(`siglip.AutoProcessor.from_pretrained(out_dir)` works on it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
    """Copy the checkpoint's config, tokenizer and processor files that exist into `out_dir`; returns them."""
    copied = []
    for filename in COMPANION_FILES:
        source = resolve_file(name_or_path, filename, options, required=False)
        if source is not None:
            target = out_dir / filename
            shutil.copyfile(source, target)
            copied.append(target)
    return copied
