"""What a bulk job embeds: the items of a folder tree, a text file, a CSV/Parquet column or webdataset tars.

Every item has a *key*, its identity inside a collection: a folder's files by their path relative to the
folder (so a collection does not depend on the working directory it was made from), a table's rows by `key`
column (default: the embedded value), a text file's lines by their text, a tar member by `TAR/MEMBER`. Keys
are unique (a repeated text gets an occurrence suffix). The order is fixed: folders are walked fully and sorted
by path (every file, so that unsupported ones are listed in the manifest too); texts and tables keep their order.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import read_text, special_file_reason
from ..image.batches import IMAGE_SUFFIXES
from .items import KEY_SEPARATOR, SourceItems, list_folder, unique_keys  # noqa: F401 - their old home

TABLE_SUFFIXES = (".csv", ".parquet")
MAX_SOURCE_BYTES = 4 << 30  # largest text or table source read (bytes)


def unreadable_reason(located: str) -> str | None:
    """Why the file `located` cannot be read as an item (a FIFO, a device such as /dev/zero behind a symlink, a
    directory), or None for a regular file or a missing one (the decoder then records it as corrupt): such
    items are recorded as "unsupported", never opened."""
    if not os.path.exists(located):
        return None
    reason = special_file_reason(located)
    return None if reason is None else f"{os.path.basename(located)} {reason}"


def is_supported_image(path: str) -> bool:
    """Whether a file's suffix names an image format the job tries to decode (others are "unsupported")."""
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def read_table(path: Path) -> dict[str, list[Any]]:
    """Columns of a CSV (with a header row), Parquet or JSON-lines file, in row order."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            from ..errors import DependencyError

            raise DependencyError("reading a .parquet source needs pyarrow: pip install 'siglip[parquet]'") from None
        reason = special_file_reason(path)
        if reason is not None:
            raise InputError(f"table {path} {reason}.")
        return pq.read_table(path).to_pydict()
    text = read_text(path, MAX_SOURCE_BYTES, "table", InputError)  # a regular file only, bounded
    try:
        if suffix in (".jsonl", ".json"):
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
            if not all(isinstance(record, dict) for record in records):
                raise ValueError("every line must hold a JSON object")
            names = list(dict.fromkeys(name for record in records for name in record))
            return {name: [record.get(name) for record in records] for name in names}
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        return {name: [row[name] for row in rows] for name in reader.fieldnames or []}
    except (ValueError, RecursionError, csv.Error) as error:
        raise InputError(f"cannot read table {path}: {error}") from None


def table_column(table: dict[str, list[Any]], column: str, path: Path) -> list[str]:
    """One column of `read_table`'s result as strings ('' for missing values)."""
    if column not in table:
        raise InputError(f"{path} has no column {column!r}; columns: {', '.join(table)}")
    return ["" if value is None else str(value) for value in table[column]]


def read_column(path: Path, column: str) -> list[str]:
    """The values of one column of a CSV (with a header row) or Parquet file, as strings, in row order."""
    return table_column(read_table(path), column, path)


def list_source(
    source: str | os.PathLike,
    *,
    column: str | None = None,
    kind: str = "auto",
    exclude: Path | None = None,
    key: str | None = None,
) -> SourceItems:
    """List a bulk job's source.

    Args:
        source: a folder (images, or webdataset `.tar` shards when it holds only tars), a `.tar` file, a text
            file (one text per line) or a .csv/.parquet file (with `column`).
        column: the column of a table source to embed.
        kind: "image", "text" or "auto": folders hold images, text files texts, and a column holds texts
            unless `kind="image"` (then its values are image paths, relative ones taken from the table's folder).
        exclude: a folder left out of a folder walk (the job's own output folder when it lies inside the source).
        key: a table's row-key column (default: the embedded column itself): a sync matches rows by it.
    """
    from .webdataset import is_webdataset, list_webdataset

    path = Path(source)
    if not path.exists():
        raise InputError(f"source {path} does not exist: give a folder of images, a text file or a CSV/Parquet file")
    if key is not None and path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"--key names a row-key column of a CSV/Parquet source, got {path}")
    if is_webdataset(path, exclude):
        if kind == "text":
            raise InputError(f"source {path} holds webdataset tars: their images are embedded, not texts")
        return list_webdataset(path)
    if path.is_dir():
        if kind == "text":
            raise InputError(f"source {path} is a folder: folders are embedded as images, not texts")
        return SourceItems("image", list_folder(path, exclude), root=os.path.abspath(path))
    if path.suffix.lower() in TABLE_SUFFIXES:
        if column is None:
            raise InputError(f"source {path} is a table: name the column to embed with --column")
        table = read_table(path)
        values = table_column(table, column, path)
        keys = unique_keys(table_column(table, key, path) if key is not None else values)
        others = [name for name in table if name != column]
        meta = [json.dumps({name: table[name][i] for name in others}, default=str) for i in range(len(values))]
        if kind == "image":
            return SourceItems("image", values, root=os.path.abspath(path.parent), keys=keys, meta=meta)
        return SourceItems("text", values, keys=keys, meta=meta)
    if column is not None:
        raise InputError(f"--column needs a .csv or .parquet source, got {path}")
    if kind == "image":
        raise InputError(f"source {path} is a file: give a folder of images, or a CSV/Parquet column of paths")
    return SourceItems("text", read_text(path, MAX_SOURCE_BYTES, "text source", InputError).splitlines())
