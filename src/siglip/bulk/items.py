"""The items of a bulk source (`SourceItems`) and how they are named and found: unique keys, a folder's files.

`sources` lists them for every kind of source and `webdataset` for tar shards; both build on this module.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY_SEPARATOR = "\x1f"  # between a repeated text and its occurrence number in its key


@dataclass
class SourceItems:
    """The items of a source: `kind` is "image" (items are file paths, relative to `root` when it is set) or
    "text" (items are the texts). `keys` name the items in a collection; `meta` holds a table row's other
    columns (JSON) for `siglip search --where`. `sizes`, `mtimes` and `hashes` are filled by a sync's scan."""

    kind: str
    items: list[str]
    root: str = ""
    keys: list[str] = field(default_factory=list)
    meta: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes: list[int] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = unique_keys(self.items)
        if not self.meta:
            self.meta = [""] * len(self.items)

    def locate(self, position: int) -> str:
        """What to read for item `position`: an absolute path (image items) or the text."""
        item = self.items[position]
        return os.path.join(self.root, item) if self.kind == "image" and self.root and item else item

    def fingerprint(self) -> str:
        """A digest of the ordered items: a resumed job checks it to be sure it continues the same work."""
        digest = hashlib.sha256(self.kind.encode())
        for position, item in enumerate(self.items):
            digest.update(b"\0" + item.encode("utf-8", "surrogatepass"))
            if self.hashes:
                digest.update(b"\1" + self.hashes[position].encode())
        return digest.hexdigest()

    def subset(self, positions: list[int]) -> SourceItems:
        """The items at `positions`, with their keys, metadata and scan results."""

        def pick(values: list[Any]) -> list[Any]:
            return [values[p] for p in positions] if values else []

        return SourceItems(
            self.kind,
            pick(self.items),
            self.root,
            pick(self.keys),
            pick(self.meta),
            pick(self.sizes),
            pick(self.mtimes),
            pick(self.hashes),
        )


def unique_keys(values: list[str]) -> list[str]:
    """`values` made unique: the n-th repeat (n >= 2) of a value gets `KEY_SEPARATOR` + n appended."""
    seen: Counter[str] = Counter()
    keys = []
    for value in values:
        seen[value] += 1
        keys.append(value if seen[value] == 1 else f"{value}{KEY_SEPARATOR}{seen[value]}")
    return keys


def list_folder(folder: Path, exclude: Path | None = None) -> list[str]:
    """Every regular file under `folder` (hidden files and the `exclude` tree left out), relative to `folder`,
    sorted."""
    found = []
    excluded = os.path.realpath(exclude) if exclude is not None else None
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) != excluded]
        relative = os.path.relpath(root, folder)
        prefix = "" if relative == "." else relative + os.sep
        found.extend(prefix + name for name in files if not name.startswith("."))
    return sorted(found)
