"""One family of typed errors. Every input mistake surfaces as a subclass of `SiglipError`.

Most of them are also `ValueError` (or `FileNotFoundError`) so that code written against transformers,
which catches those, keeps working.
"""

from __future__ import annotations


class SiglipError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(SiglipError, ValueError):
    """A configuration is invalid: unknown model_type, inconsistent sizes, unreadable config.json."""


class CheckpointNotFoundError(SiglipError, FileNotFoundError):
    """A model id or folder could not be resolved to local files (offline, missing, misspelt)."""


class CheckpointError(SiglipError, ValueError):
    """A checkpoint exists but cannot be loaded: corrupt file, missing/unexpected keys, wrong shapes."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle checkpoint was found and the caller did not opt in to loading it."""


class InputError(SiglipError, ValueError):
    """A model, tokenizer or processor input has the wrong type, shape or content."""


class ImageError(InputError):
    """An image cannot be read or converted: corrupt, truncated, unsupported, too large, zero-size."""


class FetchError(InputError):
    """A URL could not be downloaded: bad scheme, refused redirect or address, HTTP error, too big, too slow."""


class DependencyError(SiglipError, ImportError):
    """An optional dependency (flash-attn, pyarrow, ...) or a device (CUDA) needed by a feature is missing."""


class ExportError(SiglipError):
    """An export (ONNX) failed or produced a file that disagrees with the model; no file is left behind."""
