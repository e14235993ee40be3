"""Type and range checks of image processor settings (preprocessor_config.json, constructor, per-call overrides).

A preprocessor_config.json is untrusted: a size of 100000 x 100000 would allocate tens of GB per image, a
`rescale_factor` of "x" fails deep in numpy. Each setting is checked when it is set, and refused as a
`ConfigError` naming it. Bounds are far above any released checkpoint (SigLIP: 224-512 px; NaFlex: 256-1024
patches of 16 px).
"""

from __future__ import annotations

import math
from typing import Any

from ..config_validation import check_float, check_int
from ..errors import ConfigError

MAX_SIDE = 8192  # largest output height / width / shortest_edge / longest_edge, in pixels
MAX_PATCHES = 1 << 16  # largest NaFlex max_num_patches
MAX_PATCH_SIZE = 1024
BOOL_SETTINGS = ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb", "fast_decode", "do_pad")
RESAMPLE_VALUES = range(6)  # PIL.Image.Resampling: NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING


def check_setting(key: str, value: Any) -> None:
    """Raise ConfigError when `value` is not a valid `key` setting (None always means "the default")."""
    if value is None:
        return
    if key in BOOL_SETTINGS:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}.")
    elif key == "size":
        _check_size(value)
    elif key == "resample":
        if isinstance(value, bool) or not isinstance(value, int) or value not in RESAMPLE_VALUES:
            raise ConfigError(f"resample must be a PIL resampling filter number 0-5 (3: bicubic), got {value!r}.")
    elif key == "rescale_factor":
        check_float("rescale_factor", value, 0.0, 1e6, low_inclusive=False)
    elif key in ("image_mean", "image_std"):
        _check_channels(key, value)
    elif key == "patch_size":
        check_int("patch_size", value, 1, MAX_PATCH_SIZE)
    elif key == "max_num_patches":
        check_int("max_num_patches", value, 1, MAX_PATCHES)
    elif key == "num_workers":
        check_int("num_workers", value, 1, 1024)


def _check_size(size: Any) -> None:
    if isinstance(size, (list, tuple)):
        sides = list(size)
    elif isinstance(size, dict):
        sides = list(size.values())
    else:
        sides = [size]
    for side in sides:
        check_int("size", side, 1, MAX_SIDE)


def _check_channels(key: str, value: Any) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(values) <= 4 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise ConfigError(f"{key} must be a number or a list of 1-4 finite numbers, got {value!r}.")
    if key == "image_std" and any(v == 0 for v in values):
        raise ConfigError(f"image_std must not hold a zero (it divides), got {value!r}.")
