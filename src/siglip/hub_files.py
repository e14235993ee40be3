"""A folder's or Hub repo's files as they are stored: `HubOptions`, Hub ids, the local and Hub look-ups.

Folders are read as they are; Hub ids go through `huggingface_hub`, which owns the cache layout
(`models--org--name/snapshots/<rev>/...`) and honours `HF_HUB_OFFLINE`, `HF_HOME` and `HF_HUB_CACHE`. Loaders
call `hub.resolve_file`, which serves a foreign checkpoint's metadata files from its Hub view and every other
file from here.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, CheckpointNotFoundError
from .files import special_file_reason

# A Hub repo id: "name" or "org/name", letters, digits, "-", "_", "." (no "--" or ".." runs, no leading "." or "-").
HUB_ID = re.compile(r"(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


@dataclass(frozen=True)
class HubOptions:
    """Where and how to look for a checkpoint's files. Mirrors the reference's `from_pretrained` kwargs."""

    revision: str | None = None
    cache_dir: str | os.PathLike | None = None
    local_files_only: bool = False
    token: str | bool | None = None
    subfolder: str = ""

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> HubOptions:
        """Pop the Hub-related keys out of a `from_pretrained(**kwargs)` dict."""
        return cls(
            revision=kwargs.pop("revision", None),
            cache_dir=kwargs.pop("cache_dir", None),
            local_files_only=bool(kwargs.pop("local_files_only", False)),
            token=kwargs.pop("token", None),
            subfolder=kwargs.pop("subfolder", "") or "",
        )


def is_local(name_or_path: str | os.PathLike) -> bool:
    """True when `name_or_path` names an existing local folder."""
    return Path(name_or_path).expanduser().is_dir()


def resolve_stored_file(
    name_or_path: str | os.PathLike,
    filename: str,
    options: HubOptions | None = None,
    *,
    required: bool = True,
) -> Path | None:
    """Return the local path of `filename` as stored inside a folder or Hub repo.

    With `required=False` a missing file gives `None` (used for optional files such as a sharded index or
    a tokenizer file that only some checkpoints carry). A missing required file, an unknown repo or an
    offline miss raise `CheckpointNotFoundError` naming the id and how to pass a local folder instead.
    """
    options = options or HubOptions()
    relative = f"{options.subfolder}/{filename}" if options.subfolder else filename
    check_relative_name(relative, name_or_path)
    if is_local(name_or_path):
        folder = Path(name_or_path).expanduser()
        path = folder / relative
        if path.is_file():
            check_inside(path, folder, name_or_path)
            return path
        if os.path.lexists(path):  # a FIFO, a device, a directory or a dangling link under a model file's name
            raise CheckpointError(
                f"{path} {special_file_reason(path)}; refused (a model folder must hold regular files only)."
            )
        if required:
            raise CheckpointNotFoundError(f"{path} does not exist: the folder {name_or_path} has no {relative}.")
        return None
    check_hub_id(name_or_path)
    return _download(str(name_or_path), filename, options, required)


def check_relative_name(relative: str, source: str | os.PathLike) -> None:
    """A file name inside a checkpoint (shard, subfolder/file) must stay inside it: no absolute path, no `..`."""
    parts = relative.replace("\\", "/").split("/")
    if len(relative) > 1024 or any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in parts):
        raise CheckpointError(
            f"{source}: the file name {relative[:60]!r}... is too long ({len(relative)} characters; at most 255 "
            f"bytes a part, 1024 characters in all); refused."
        )
    if relative.startswith(("/", "\\")) or Path(relative).is_absolute() or ".." in parts or ":" in parts[0]:
        raise CheckpointError(
            f"{source}: the file name {relative!r} points outside the checkpoint folder (absolute or with '..'); "
            f"refused."
        )


def check_inside(path: Path, folder: Path, source: str | os.PathLike) -> None:
    """Refuse a file (after following symlinks) that lies outside `folder` (after following symlinks)."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise CheckpointError(f"{source}: {path} is a link to {path.resolve()}, outside the model folder; refused.")


def check_hub_id(name: str | os.PathLike) -> None:
    """Fail fast, before any Hub request, for a name meant as a local path that does not exist.

    A name is a path when it starts with `/`, `.` or `~`, has more than one `/` or a backslash, does not have
    the Hub id form, or its first part is an existing local folder (`models/x` while `./models` exists)."""
    text = str(name)
    first = text.split("/", 1)[0]
    looks_like_path = (
        text.startswith(("/", ".", "~"))
        or "\\" in text
        or text.count("/") > 1
        or not HUB_ID.fullmatch(text)
        or ("/" in text and Path(first).is_dir())
    )
    if not looks_like_path:
        return
    path = Path(text).expanduser()
    message = f"no folder {text} exists"
    parent = path.parent if str(path.parent) else Path(".")
    if parent.is_dir():
        try:
            names = [entry.name for _, entry in zip(range(2000), os.scandir(parent)) if entry.is_dir()]
        except OSError:
            names = []
        close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.7)
        if close:
            message += f" (close: {', '.join(str(parent / c) for c in close)})"
    elif parent != path:
        message += f" ({parent} does not exist either)"
    raise CheckpointNotFoundError(
        f"{message}, and it is not a Hub id (org/name): pass the path of a folder holding config.json and "
        f"the weights, or a Hub id."
    )


def _download(repo_id: str, filename: str, options: HubOptions, required: bool) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = hf_hub_download(
            repo_id,
            filename,
            subfolder=options.subfolder or None,
            revision=options.revision,
            cache_dir=options.cache_dir,
            local_files_only=options.local_files_only,
            token=options.token,
        )
        return Path(path)
    except HFValidationError as error:
        raise CheckpointNotFoundError(
            f"{repo_id!r} is neither a local folder nor a valid Hub id (org/name): {error}"
        ) from None
    except LocalEntryNotFoundError:
        # Offline (HF_HUB_OFFLINE=1 or local_files_only=True) and not in the cache. For optional files we
        # cannot tell "absent from the repo" from "never downloaded", so they are treated as absent.
        if not required:
            return None
        raise CheckpointNotFoundError(
            f"{filename} of {repo_id!r} is not in the local Hub cache and downloading is disabled or "
            f"impossible (offline). Download it once while online, set HF_HUB_CACHE/HF_HOME to a cache that "
            f"holds it, or pass the path of a local folder that contains config.json and the weights."
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(
            f"{repo_id!r} is not a local folder and no Hub repository of that name is accessible "
            f"(misspelt, private or gated without a token). Pass a local folder path or a valid Hub id."
        ) from None
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(f"revision {options.revision!r} of {repo_id!r} does not exist.") from None
    except EntryNotFoundError:
        if not required:
            return None
        raise CheckpointNotFoundError(f"the Hub repository {repo_id!r} has no file {filename}.") from None
    except OSError as error:  # network failures surface as OSError subclasses
        if not required:
            return None
        raise CheckpointNotFoundError(
            f"could not fetch {filename} of {repo_id!r} ({type(error).__name__}: {error}). "
            f"If you are offline, pass a local folder or set HF_HUB_OFFLINE=1 with a populated cache."
        ) from None
