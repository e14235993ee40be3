"""Reading files that someone else wrote (regular files only, bounded reads, depth-limited JSON), and writing
ours all or nothing (`atomic_write`).

Every reader of a user's or a model folder's file (images, `--text-file`, bulk sources, config.json,
preprocessor_config.json, tokenizer configs, shard indexes) goes through `open_regular`, so that:

- the path is resolved (symlinks followed) and `stat`-ed first: a FIFO, a socket, a character or block device
  (`/dev/zero`, `/dev/urandom`) or a directory is refused with the caller's typed error, before any read;
- the open itself uses `O_NONBLOCK` (a FIFO swapped in after the stat cannot block the open) and the opened
  descriptor is `fstat`-ed again (the check holds for what was opened, not for what the name meant earlier);
- reads are capped (`read_regular(max_bytes=...)`), so a file growing while it is read cannot exhaust memory.

JSON documents are parsed by `read_json`, which refuses nesting deeper than `MAX_JSON_DEPTH` (a deeply nested
config would otherwise reach a RecursionError in the parser or in later copies) with the same typed error.

Every file the library writes for later (collection shards and manifests, weights, checkpoints, exported graphs,
embedding files, reports) goes through `atomic_write`: a reader, or a run resumed after a kill or a power cut,
sees the old file or the new one, never a part of one.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import SiglipError

# Largest JSON nesting accepted (SigLIP configs nest 3 deep, tokenizer.json about 6).
MAX_JSON_DEPTH = 64
# Default cap on a JSON file read (a Gemma tokenizer.json is ~35 MB).
MAX_JSON_BYTES = 256 * 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def special_file_reason(path: str | os.PathLike) -> str | None:
    """Why `path` (symlinks followed) is not a readable regular file, or None when it is one."""
    try:
        info = os.stat(path)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if stat.S_ISREG(info.st_mode):
        return None
    resolved = os.path.realpath(path)
    target = f" ({resolved})" if resolved != os.path.abspath(path) else ""
    return f"is {_kind(info.st_mode)}{target}, not a regular file"


def open_regular(path: str | os.PathLike, what: str = "file", error: type[SiglipError] | None = None) -> IO[bytes]:
    """Open `path` for binary reading if it is a regular file (after following symlinks), else raise `error`
    (default `InputError`) naming `what` and the path. The open never blocks (O_NONBLOCK)."""
    from .errors import InputError

    error = error or InputError
    reason = special_file_reason(path)
    if reason is not None:
        raise error(f"{what} {path} {reason}.")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as failure:
        raise error(f"cannot read {what} {path}: {failure.strerror or failure}.") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is {_kind(info.st_mode)}, not a regular file.")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular(
    path: str | os.PathLike, max_bytes: int, what: str = "file", error: type[SiglipError] | None = None
) -> bytes:
    """The bytes of the regular file `path`, refused with `error` when it holds more than `max_bytes`."""
    from .errors import InputError

    error = error or InputError
    with open_regular(path, what, error) as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as failure:
            raise error(f"cannot read {what} {path}: {failure.strerror or failure}.") from None
    if len(data) > max_bytes:
        raise error(f"{what} {path} is larger than the limit of {max_bytes} bytes; refused.")
    return data


def read_text(
    path: str | os.PathLike, max_bytes: int, what: str = "file", error: type[SiglipError] | None = None
) -> str:
    """`read_regular` decoded as UTF-8 (a decoding failure is `error` too)."""
    from .errors import InputError

    error = error or InputError
    data = read_regular(path, max_bytes, what, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as failure:
        raise error(f"{what} {path} is not UTF-8 text ({failure}).") from None


def read_json(
    path: str | os.PathLike,
    what: str = "JSON file",
    error: type[SiglipError] | None = None,
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Parse the JSON file `path` (a regular file of at most `max_bytes`, nesting at most `max_depth`)."""
    from .errors import ConfigError

    error = error or ConfigError
    return parse_json(read_text(path, max_bytes, what, error), f"{what} {path}", error, max_depth=max_depth)


def parse_json(text: str, name: str, error: type[SiglipError], *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads(text)` with a depth limit; every failure is `error` naming `name`."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{name} nests deeper than {max_depth} levels; refused.") from None
    except ValueError as failure:
        raise error(f"cannot read {name}: not valid JSON ({failure}).") from None
    if json_depth(value, max_depth) > max_depth:
        raise error(f"{name} nests deeper than {max_depth} levels; refused.")
    return value


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), counted iteratively; stops past `limit`."""
    deepest = 0
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


# A temporary that `atomic_write` left behind when killed: `.NAME.tmp-PID-RANDOM`, beside NAME.
TEMPORARY_GLOB = ".*.tmp-*"


def left_by_ended_process(temporary: Path) -> bool:
    """Whether a temporary of `atomic_write` (`TEMPORARY_GLOB`) was left by a process that no longer runs on this
    machine, so that removing it cannot pull a file from under a writer still at work."""
    try:
        pid = int(temporary.name.rsplit(".tmp-", 1)[1].split("-")[0])
    except (IndexError, ValueError):
        return True  # not a name atomic_write gives
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        pass
    return False


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write `path` all or nothing; returns it as a Path.

    `write(temporary)` fills a temporary file in the same folder; it is fsynced, renamed onto `path` in one
    `os.replace` (atomic on POSIX), and the folder is fsynced so that the rename itself survives a power cut.
    The temporary is removed if `write` fails; a killed process leaves it behind, under `TEMPORARY_GLOB`."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_folder(path.parent)
    return path


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make the entries of `folder` (a rename into it) durable; a no-op where folders cannot be opened or synced."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(descriptor)
