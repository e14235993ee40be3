"""Checkpoint files: safetensors (single or sharded) in and out, pickles only on request.

Our parameter names are the reference's names, so a checkpoint maps onto a model with no renaming. The one
translation is the tower prefix: a composite checkpoint stores the vision tower under `vision_model.` while a
standalone `SiglipVisionModel` (transformers 5.x layout) stores it bare. `align_keys` accepts both; saving
writes the bare 5.x layout, which transformers 4.x and 5.x load.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError
from .files import atomic_write, read_json
from .hub import HubOptions, resolve_file

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"
# Keys some older checkpoints carry for non-persistent buffers; never parameters.
IGNORED_KEY_PATTERN = re.compile(r"(^|\.)position_ids$")


@dataclass
class CheckpointFiles:
    """The weight files of one checkpoint, in load order."""

    paths: list[Path]
    is_pickle: bool = False
    # Sharded checkpoints: tensor name -> the shard file the index names. The index is authoritative: a tensor
    # that a shard holds but the index does not name for that shard (a stale duplicate, or a name the index
    # lacks) is a CheckpointError, never silently read or skipped.
    owners: dict[str, Path] | None = None

    def check_owner(self, name: str, path: Path) -> None:
        """Raise CheckpointError unless `name` is to be read from `path` (always true for one unsharded file)."""
        if self.owners is None or self.owners.get(name) == path:
            return
        named = self.owners.get(name)
        where = f"names {named.name} for it" if named is not None else "does not list it"
        raise CheckpointError(
            f"{path} holds the tensor {name!r} but the shard index {where}: the checkpoint is inconsistent "
            f"(a stale or foreign shard). Re-save it, or fix model.safetensors.index.json."
        )


def find_weight_files(name_or_path: str | os.PathLike, options: HubOptions, allow_pickle: bool) -> CheckpointFiles:
    """Locate model.safetensors, or the shards its index lists, or (opt-in) pytorch_model.bin."""
    index = resolve_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, options, required=False)
    if index is not None:
        document = read_json(index, "the shard index", CheckpointError, max_bytes=64 * 1024 * 1024)
        if not isinstance(document, dict) or "weight_map" not in document:
            raise CheckpointError(f"the shard index {index} has no weight_map (want tensor name -> file name).")
        weight_map = document["weight_map"]
        if (
            not isinstance(weight_map, dict)
            or not weight_map
            or not all(isinstance(key, str) and isinstance(value, str) for key, value in weight_map.items())
        ):
            raise CheckpointError(
                f"the shard index {index} has a malformed weight_map (want tensor name -> file name)."
            )
        shards = {shard: resolve_file(name_or_path, shard, options) for shard in sorted(set(weight_map.values()))}
        owners = {name: shards[shard] for name, shard in weight_map.items()}
        return CheckpointFiles(list(shards.values()), owners=owners)  # type: ignore[arg-type]
    single = resolve_file(name_or_path, SAFE_WEIGHTS_NAME, options, required=False)
    if single is not None:
        return CheckpointFiles([single])
    pickle = resolve_file(name_or_path, PICKLE_WEIGHTS_NAME, options, required=False)
    if pickle is not None:
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"{name_or_path} only has {PICKLE_WEIGHTS_NAME}, a pickle that could run code when loaded. "
                f"Pass allow_pickle=True to load it anyway (with torch.load(weights_only=True)), or convert it "
                f"to safetensors."
            )
        return CheckpointFiles([pickle], is_pickle=True)
    raise CheckpointNotFoundError(
        f"{name_or_path} has no {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME} or {PICKLE_WEIGHTS_NAME}."
    )


def iter_checkpoint_tensors(files: CheckpointFiles, device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one tensor at a time, so that a checkpoint is never held twice in memory."""
    if files.is_pickle:
        yield from _read_pickle(files.paths[0]).items()
        return
    from safetensors import SafetensorError, safe_open

    for path in files.paths:
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as reader:
                for name in reader.keys():
                    files.check_owner(name, path)
                    yield name, reader.get_tensor(name)
        except CheckpointError:
            raise
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path} is not a valid safetensors file ({error}).") from None


def read_checkpoint_keys(files: CheckpointFiles) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype name) without reading tensor data (pickles are read whole)."""
    if files.is_pickle:
        return {name: (tuple(t.shape), str(t.dtype)) for name, t in _read_pickle(files.paths[0]).items()}
    from safetensors import SafetensorError, safe_open

    keys: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in files.paths:
        try:
            with safe_open(str(path), framework="pt") as reader:
                for name in reader.keys():
                    files.check_owner(name, path)
                    view = reader.get_slice(name)
                    keys[name] = (tuple(view.get_shape()), view.get_dtype())
        except CheckpointError:
            raise
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path} is not a valid safetensors file ({error}).") from None
    return keys


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise CheckpointError(
            f"{path} could not be loaded with weights_only=True ({type(error).__name__}): it contains objects "
            f"other than tensors, or is corrupt. It was not executed."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors.")
    return state


@dataclass
class KeyAlignment:
    """How checkpoint names map onto a model's names, and what does not fit."""

    mapping: dict[str, str] = field(default_factory=dict)  # checkpoint name -> model name
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def align_keys(
    checkpoint: dict[str, tuple[tuple[int, ...], str]],
    model_shapes: dict[str, tuple[int, ...]],
    prefix: str,
    foreign_prefixes: Iterable[str],
    integer_tensors: dict[str, str] | None = None,
) -> KeyAlignment:
    """Match checkpoint names to model names.

    `prefix` is how a composite checkpoint names this model ("vision_model." for a vision tower, "" for a
    full model). Names under `foreign_prefixes` belong to parts of a larger model that this class does not
    have (e.g. the text tower when loading only the vision tower) and are skipped, as the reference does.
    `integer_tensors` names the model's non-float tensors (an int8 model's weights) with their safetensors
    dtype ("I8", "I32"), which the checkpoint must match exactly.
    """
    alignment = KeyAlignment()
    foreign = tuple(foreign_prefixes)
    for name, (shape, dtype) in checkpoint.items():
        target = name if name in model_shapes else None
        if target is None and prefix and name.startswith(prefix) and name[len(prefix) :] in model_shapes:
            target = name[len(prefix) :]
        if target is None:
            if not (IGNORED_KEY_PATTERN.search(name) or name.startswith(foreign)):
                alignment.unexpected.append(name)
            continue
        if tuple(shape) != tuple(model_shapes[target]):
            alignment.mismatched.append(f"{name}: checkpoint {tuple(shape)} vs model {tuple(model_shapes[target])}")
            continue
        if integer_tensors and target in integer_tensors:
            if dtype != integer_tensors[target]:
                alignment.mismatched.append(
                    f"{name}: checkpoint dtype {dtype}, the model needs {integer_tensors[target]}"
                )
                continue
        elif not _is_float_dtype(dtype):  # every float tensor of the SigLIP family
            alignment.mismatched.append(f"{name}: checkpoint dtype {dtype}, the model needs a floating-point tensor")
            continue
        alignment.mapping[name] = target
    covered = set(alignment.mapping.values())
    alignment.missing = sorted(key for key in model_shapes if key not in covered)
    return alignment


# safetensors' names of the integer dtypes a model's state may hold.
SAFETENSORS_INTEGER_DTYPES = {torch.int8: "I8", torch.int32: "I32", torch.int64: "I64"}


def integer_dtypes(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """name -> safetensors dtype ("I8", "I32") of every non-float tensor of a model's state: `align_keys`'s
    `integer_tensors`."""
    return {
        name: SAFETENSORS_INTEGER_DTYPES.get(tensor.dtype, str(tensor.dtype))
        for name, tensor in state.items()
        if not tensor.is_floating_point()
    }


def _is_float_dtype(name: str) -> bool:
    """safetensors names (F32, BF16, F8_E4M3, I64, BOOL) and torch names (torch.float16) alike."""
    if name.upper().startswith(("F", "BF")):
        return True
    dtype = getattr(torch, name.removeprefix("torch."), None)
    return isinstance(dtype, torch.dtype) and dtype.is_floating_point


def parse_size(size: int | str) -> int:
    """'5GB' / '500MB' / 1_000_000 -> bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)\s*", size, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"cannot parse shard size {size!r}; use e.g. '5GB' or a number of bytes.")
    units = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    return int(float(match.group(1)) * units[match.group(2).lower()])


def save_safetensors(
    state_dict: dict[str, torch.Tensor], directory: Path, max_shard_size: int | str = "5GB"
) -> list[Path]:
    """Write `model.safetensors`, or shards plus `model.safetensors.index.json` beyond `max_shard_size`.

    Each file is written to a temporary name and renamed, so a crash never leaves a half-written checkpoint
    under the real name. Stale weight files from an earlier save are removed.
    """
    from safetensors.torch import save_file

    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for name, tensor in state_dict.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and shard_bytes + size > limit:
            shards.append({})
            shard_bytes = 0
        shards[-1][name] = tensor.detach().contiguous().cpu()
        shard_bytes += size
    for stale in [*directory.glob("model-*-of-*.safetensors"), directory / SAFE_WEIGHTS_INDEX_NAME]:
        stale.unlink(missing_ok=True)
    names = (
        [SAFE_WEIGHTS_NAME]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    written = []
    for name, shard in zip(names, shards):
        atomic_write(directory / name, lambda tmp, shard=shard: save_file(shard, str(tmp), metadata={"format": "pt"}))
        written.append(directory / name)
    if len(shards) > 1:
        (directory / SAFE_WEIGHTS_NAME).unlink(missing_ok=True)
        total = sum(t.numel() * t.element_size() for t in state_dict.values())
        index = {
            "metadata": {"total_size": total},
            "weight_map": {key: name for name, shard in zip(names, shards) for key in shard},
        }
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        atomic_write(directory / SAFE_WEIGHTS_INDEX_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return written
