"""Build a Hugging Face Hub cache folder by hand (the layout huggingface_hub reads), for offline tests."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def add_to_hub_cache(cache: Path, repo_id: str, folder: Path, revision: str | None = None) -> str:
    """Store every file of `folder` as a snapshot of `repo_id` in `cache` and point refs/main at it.

    Layout: models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main}.
    Returns the commit hash used.
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = revision or hashlib.sha1(repo_id.encode() + str(sorted(os.listdir(folder))).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit
