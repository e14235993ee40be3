"""Name or folder -> local files.

`from_pretrained` everywhere in the library accepts either a local folder or a Hugging Face Hub id
(`org/name`). `resolve_file` finds a file in either (hub_files.py: folders as they are, Hub ids through
`huggingface_hub` and its cache); for an open_clip folder or a big_vision `.npz` the Hub metadata files come
from the source's Hub view (siglip/foreign). Nothing here loads weights: see `weights.py`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from .errors import CheckpointNotFoundError
from .hub_files import HUB_ID, HubOptions, is_local, resolve_stored_file

__all__ = ["HUB_ID", "HubOptions", "is_local", "resolve_file", "resolve_stored_file", "store_in_cache"]


def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    options: HubOptions | None = None,
    *,
    required: bool = True,
) -> Path | None:
    """Return the local path of `filename` inside a folder or Hub repo.

    For an open_clip folder or a big_vision `.npz` the Hub metadata files (config.json, the processor and
    tokenizer files) come from its Hub view (siglip/foreign), so every loader reads such sources unchanged.
    """
    from .foreign.view import VIEW_FILES, hub_view  # on first use: the format readers import torch

    if filename in VIEW_FILES and (view := hub_view(name_or_path, options)) is not None:
        folder, foreign = view
        if (folder / filename).is_file():
            return folder / filename
        if required:
            raise CheckpointNotFoundError(
                f"{name_or_path} ({foreign.format} format) has no {filename}: {foreign.missing_tokenizer}."
            )
        return None
    return resolve_stored_file(name_or_path, filename, options, required=required)


def store_in_cache(
    folder: str | os.PathLike, repo_id: str, cache_dir: str | os.PathLike, revision: str | None = None
) -> str:
    """Copy a saved checkpoint folder into a Hub-layout cache as a snapshot of `repo_id`; returns the commit.

    Layout, as huggingface_hub reads it: `models--org--name/blobs/<sha256>`,
    `snapshots/<commit>/<file> -> ../../blobs/<sha256>` and `refs/main` holding the commit. Useful to ship
    a model to an offline machine (set HF_HUB_CACHE to `cache_dir`) and to test the Hub code path.
    """
    source = Path(folder)
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    files = sorted(p for p in source.rglob("*") if p.is_file())
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    commit = revision or hashlib.sha1("".join(sorted(digests.values())).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for path, digest in digests.items():
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit
