"""Training checkpoints: one file holding everything a run needs to continue exactly, written atomically.

Contents: model and optimizer state (full, unsharded tensors), scheduler state, the optimizer step, the data
position (micro-batches consumed per rank), the RNG states of torch, numpy and python for every rank, and the
training config (to warn when a resume changes it). The file is written by `files.atomic_write` (a temporary in
the same folder renamed over the target), so a crash mid-write leaves either the old checkpoint or the new one,
never a truncated file. It is read back with `torch.load(weights_only=True)`: no pickled code runs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import TEMPORARY_GLOB, atomic_write

LAST = "last.pt"


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain Python values (loadable with weights_only=True)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def atomic_save(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """`torch.save` to `path` all or nothing (`files.atomic_write`), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as stream:
            torch.save(payload, stream)

    return atomic_write(path, write)


# What a resume reads from a training checkpoint (written by the loop's save_checkpoint).
REQUIRED_ENTRIES = ("model", "optimizer", "scheduler", "step", "batches_seen", "rng")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint written by `atomic_save` (tensors and plain values only).

    Anything else raises `CheckpointError`: a corrupt or truncated file, a pickle holding code or other objects
    (refused by `weights_only=True`, never executed), or a dict lacking one of `REQUIRED_ENTRIES`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...: all a bad file
        raise CheckpointError(
            f"cannot read the training checkpoint {path} ({type(error).__name__}): it is corrupt, truncated, or "
            f"holds objects other than tensors and plain values (e.g. code, which was not run)."
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"the training checkpoint {path} holds a {type(state).__name__}, not a dict.")
    missing = [key for key in REQUIRED_ENTRIES if key not in state]
    if missing:
        raise CheckpointError(
            f"the training checkpoint {path} has no {', '.join(repr(k) for k in missing)} entr"
            f"{'y' if len(missing) == 1 else 'ies'}: it was not written by `siglip train`, or is damaged."
        )
    return state


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that an `atomic_save` killed mid-write left in `folder` (`files.TEMPORARY_GLOB`, and
    the `.<name>.*.tmp` of earlier versions); returns them.

    Called when training starts (only one process writes checkpoints, and none is writing yet)."""
    patterns = (TEMPORARY_GLOB, f".{LAST}.*.tmp")
    stale = sorted({p for pattern in patterns for p in Path(folder).glob(pattern)}) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def find_resume_path(resume: str, output_dir: str | os.PathLike) -> Path | None:
    """`--resume auto` -> output_dir/checkpoints/last.pt if it exists (else None: a fresh start);
    `--resume PATH` -> that file (or PATH/last.pt for a folder), which must exist."""
    if resume == "auto":
        candidate = Path(output_dir) / "checkpoints" / LAST
        return candidate if candidate.is_file() else None
    path = Path(resume)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise CheckpointError(f"--resume {resume}: no checkpoint file at {path}.")
    return path
