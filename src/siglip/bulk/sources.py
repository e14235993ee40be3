"""What a bulk job embeds: the items of a folder tree, a text file or a CSV/Parquet column, in a fixed order.

The order is the job's identity: shards are cut from it, so listing the same source twice must give the
same list. Folders are walked fully and sorted by path (every file, so that unsupported ones are listed in
the manifest too); text files keep their line order; table columns keep their row order.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..image.batches import IMAGE_SUFFIXES

TABLE_SUFFIXES = (".csv", ".parquet")


@dataclass
class SourceItems:
    """The items of a source: `kind` is "image" (items are file paths) or "text" (items are the texts)."""

    kind: str
    items: list[str]

    def fingerprint(self) -> str:
        """A digest of the ordered items: a resumed job checks it to be sure it continues the same work."""
        digest = hashlib.sha256(self.kind.encode())
        for item in self.items:
            digest.update(b"\0" + item.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()


def is_supported_image(path: str) -> bool:
    """Whether a file's suffix names an image format the job tries to decode (others are "unsupported")."""
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def list_folder(folder: Path, exclude: Path | None = None) -> list[str]:
    """Every regular file under `folder` (hidden files and the `exclude` tree left out), sorted by path."""
    found = []
    excluded = os.path.realpath(exclude) if exclude is not None else None
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) != excluded]
        found.extend(os.path.join(root, name) for name in files if not name.startswith("."))
    return sorted(found)


def read_column(path: Path, column: str) -> list[str]:
    """The values of one column of a CSV (with a header row) or Parquet file, as strings, in row order."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            from ..errors import DependencyError

            raise DependencyError("reading a .parquet source needs pyarrow: pip install 'siglip[parquet]'") from None
        table = pq.read_table(path)
        if column not in table.column_names:
            raise InputError(f"{path} has no column {column!r}; columns: {', '.join(table.column_names)}")
        return ["" if value is None else str(value) for value in table.column(column).to_pylist()]
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if column not in (reader.fieldnames or []):
            raise InputError(f"{path} has no column {column!r}; columns: {', '.join(reader.fieldnames or [])}")
        return [row[column] or "" for row in reader]


def list_source(
    source: str | os.PathLike, *, column: str | None = None, kind: str = "auto", exclude: Path | None = None
) -> SourceItems:
    """List a bulk job's source.

    Args:
        source: a folder (images), a text file (one text per line) or a .csv/.parquet file (with `column`).
        column: the column of a table source to embed.
        kind: "image", "text" or "auto": folders hold images, text files texts, and a column holds texts
            unless `kind="image"` (then its values are image paths, relative ones taken from the table's folder).
        exclude: a folder left out of a folder walk (the job's own output folder when it lies inside the source).
    """
    path = Path(source)
    if not path.exists():
        raise InputError(f"source {path} does not exist: give a folder of images, a text file or a CSV/Parquet file")
    if path.is_dir():
        if kind == "text":
            raise InputError(f"source {path} is a folder: folders are embedded as images, not texts")
        return SourceItems("image", list_folder(path, exclude))
    if path.suffix.lower() in TABLE_SUFFIXES:
        if column is None:
            raise InputError(f"source {path} is a table: name the column to embed with --column")
        values = read_column(path, column)
        if kind == "image":
            return SourceItems("image", [str(path.parent / value) if value else value for value in values])
        return SourceItems("text", values)
    if column is not None:
        raise InputError(f"--column needs a .csv or .parquet source, got {path}")
    if kind == "image":
        raise InputError(f"source {path} is a file: give a folder of images, or a CSV/Parquet column of paths")
    try:
        return SourceItems("text", path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read text source {path}: {error}") from None
