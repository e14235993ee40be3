"""Webdataset tars as a source: `shard-000.tar` files whose members `KEY.jpg`, `KEY.txt`, ... form samples.

An image item is named `TAR::MEMBER` (TAR relative to the source folder); `read_member` reads its bytes
straight from the tar at the offset found when the tar was first indexed (once per tar and process), so
decoding workers never scan a tar per item. A sample's caption is its `.txt` member (or the "caption"/"text"
field of its `.json`), which is what `siglip score` pairs an image with.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
from pathlib import Path

from ..errors import InputError
from ..files import open_regular, special_file_reason
from ..image.batches import IMAGE_SUFFIXES
from .items import SourceItems, list_folder

MEMBER_SEPARATOR = "::"
_OFFSETS: dict[str, dict[str, tuple[int, int, int]]] = {}  # tar path -> member -> (data offset, size, mtime)
_LOCK = threading.Lock()


def list_tars(path: Path, exclude: Path | None = None) -> list[Path]:
    """The `.tar` file `path`, or the `.tar`s under the folder `path` (`exclude` left out), sorted."""
    if path.is_file():
        return [path] if path.suffix == ".tar" else []
    excluded = os.path.realpath(exclude) if exclude is not None else None
    found = [p for p in path.rglob("*.tar") if excluded is None or not os.path.realpath(p).startswith(excluded)]
    return sorted(found)


def is_webdataset(path: Path, exclude: Path | None = None) -> bool:
    """A `.tar` file, or a folder whose files (hidden ones and `exclude` left out) are all `.tar`s."""
    if path.is_file():
        return path.suffix == ".tar"
    if not path.is_dir():
        return False
    files = list_folder(path, exclude)
    return bool(files) and all(name.endswith(".tar") for name in files)


def index_tar(tar: str) -> dict[str, tuple[int, int, int]]:
    """member name -> (data offset, size, mtime in ns) of the regular files of `tar` (cached per process and
    version of the tar: a rewritten tar is indexed again)."""
    try:
        stat = os.stat(tar)
    except OSError as error:
        raise InputError(f"cannot read webdataset tar {tar}: {error}") from None
    version = f"{tar}\0{stat.st_size}\0{stat.st_mtime_ns}"
    with _LOCK:
        if version in _OFFSETS:
            return _OFFSETS[version]
    reason = special_file_reason(tar)
    if reason is not None:
        raise InputError(f"webdataset tar {tar} {reason}.")
    try:
        with tarfile.open(tar, "r:") as archive:
            members = {m.name: (m.offset_data, m.size, int(m.mtime * 1e9)) for m in archive.getmembers() if m.isfile()}
    except (OSError, tarfile.TarError) as error:
        raise InputError(f"cannot read webdataset tar {tar}: {error}") from None
    with _LOCK:
        _OFFSETS[version] = members
    return members


def split_member(located: str) -> tuple[str, str] | None:
    """(tar path, member) of a `TAR::MEMBER` item, None for a plain path."""
    tar, separator, member = located.partition(MEMBER_SEPARATOR)
    return (tar, member) if separator and tar.endswith(".tar") else None


def read_member(located: str) -> bytes | None:
    """The bytes of a `TAR::MEMBER` item (None when `located` is a plain path)."""
    parts = split_member(located)
    if parts is None:
        return None
    tar, member = parts
    offset, size, _ = index_tar(tar)[member]
    with open_regular(tar, "webdataset tar") as handle:
        handle.seek(offset)
        return handle.read(size)


def samples(tar: Path) -> dict[str, dict[str, str]]:
    """sample key -> {extension: member name} of one tar, in member order."""
    grouped: dict[str, dict[str, str]] = {}
    for name in index_tar(str(tar)):
        base = os.path.basename(name)
        if base.startswith("."):
            continue
        stem, _, extension = base.partition(".")
        key = os.path.join(os.path.dirname(name), stem)
        grouped.setdefault(key, {})[extension.lower()] = name
    return grouped


def image_member(members: dict[str, str]) -> str | None:
    """The sample's image member (the first image extension found)."""
    for extension, name in members.items():
        if f".{extension.rsplit('.', 1)[-1]}" in IMAGE_SUFFIXES:
            return name
    return None


def caption(tar: str, members: dict[str, str]) -> str:
    """The sample's text: its `.txt` member, else the "caption" or "text" field of its `.json` ('' if none)."""
    if "txt" in members:
        return (read_member(f"{tar}{MEMBER_SEPARATOR}{members['txt']}") or b"").decode("utf-8", "replace")
    if "json" in members:
        try:
            record = json.loads(read_member(f"{tar}{MEMBER_SEPARATOR}{members['json']}") or b"{}")
        except ValueError:
            return ""
        return str(record.get("caption", record.get("text", ""))) if isinstance(record, dict) else ""
    return ""


def list_webdataset(path: Path) -> SourceItems:
    """The image members of every sample of the tars at `path`, keyed `TAR::MEMBER`; stat is the member's."""
    root = path.parent if path.is_file() else path
    items = []
    for tar in list_tars(path):
        relative = os.path.relpath(tar, root)
        for members in samples(tar).values():
            name = image_member(members)
            if name is not None:
                items.append(f"{relative}{MEMBER_SEPARATOR}{name}")
    return SourceItems("image", items, root=os.path.abspath(root))


def member_stat(located: str) -> tuple[int, int] | None:
    """(size, mtime ns) of a `TAR::MEMBER` item, None for a plain path."""
    parts = split_member(located)
    if parts is None:
        return None
    offset_size_mtime = index_tar(parts[0]).get(parts[1])
    return (offset_size_mtime[1], offset_size_mtime[2]) if offset_size_mtime else (-1, -1)
