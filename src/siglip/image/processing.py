"""Image processors: settings + preprocessor_config.json (`ImageProcessorBase`) and the exact SigLIP path.

`SiglipImageProcessor` reproduces the reference's PIL backend numerically (same pixels, float32, bit-equal on
every input we test): convert to RGB, resize with Pillow, rescale by 1/255 (in float64, cast to float32),
normalise with mean = std = 0.5. Its quirks are kept on purpose, because they decide the numbers:

- arrays and tensors are turned into uint8 PIL images before resizing; float arrays whose values are not all
  integers must lie in [0, 1] and are multiplied by 255 and *truncated* to uint8, then divided by 255 after the
  resize; float arrays holding integer values (0.0, 1.0, 17.0, ...) are taken as 0-255 and not rescaled;
- an int ``size`` means ``{"shortest_edge": size}`` (aspect kept), like the reference's `default_to_square=False`;
- file paths and URLs handed to the processor are loaded the reference's way: EXIF orientation applied and a
  plain ``convert("RGB")`` (alpha dropped, not composited). PIL images, e.g. from `image.loading.load_image`, keep
  their mode until `image.loading.to_rgb` composites transparency onto white.

The base class holds what every image processor shares (settings, overrides, input flattening, RGB
conversion, output size, output packing, save/load), so the batched `SiglipImageProcessorFast` and the SigLIP2
NaFlex processor only implement `_preprocess`.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..batch import BatchFeature
from ..config_validation import config_file
from ..errors import ConfigError, InputError
from ..files import read_json
from ..hub import HubOptions, resolve_file
from ..threads import default_workers, shared_pool
from .loading import load_image, to_rgb
from .settings_check import check_setting

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
# Keys describing the file itself, never settings.
SERVICE_KEYS = ("image_processor_type",)
# Per-call options that are not settings and are never saved.
CALL_OPTIONS = ("return_tensors", "data_format", "input_data_format")


def _is_image(item: Any) -> bool:
    return isinstance(item, (Image.Image, np.ndarray, torch.Tensor, str, os.PathLike))


def flatten_images(images: Any) -> list[Any]:
    """One image, a list, a nested list or a 4-D batch array/tensor -> a flat list of single images."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    if _is_image(images):
        return [images]
    if isinstance(images, (list, tuple)):
        flat: list[Any] = []
        for item in images:
            flat.extend(flatten_images(item) if isinstance(item, (list, tuple)) or _is_4d(item) else [item])
        if flat and all(_is_image(item) for item in flat):
            return flat
    raise InputError(
        f"images must be PIL images, numpy arrays, torch tensors, file paths/URLs or (nested) lists of them; "
        f"got {type(images).__name__}."
    )


def _is_4d(item: Any) -> bool:
    return isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 4


def infer_channels_first(array: np.ndarray, channel_counts: Sequence[int] = (1, 3, 4)) -> bool:
    """The reference's rule: channels first when the first axis could be channels (ties go to first)."""
    if array.ndim != 3:
        raise InputError(f"an image array must have 2 or 3 dimensions, got shape {tuple(array.shape)}.")
    if array.shape[0] in channel_counts:
        return True
    if array.shape[-1] in channel_counts:
        return False
    raise InputError(
        f"cannot tell the channel axis of an image of shape {tuple(array.shape)}: pass input_data_format="
        f"'channels_first' or 'channels_last', with 1, 3 or 4 channels."
    )


def _array_to_rgb(hwc: np.ndarray) -> np.ndarray:
    """Channels-last array -> RGB: grey repeated, RGBA composited onto white (rounded for integer dtypes)."""
    channels = hwc.shape[-1]
    if channels == 1:
        return np.repeat(hwc, 3, axis=-1)
    if channels != 4:
        return hwc
    integer = np.issubdtype(hwc.dtype, np.integer)
    if not integer and (hwc.min() < 0.0 or hwc.max() > 1.0):
        raise InputError(f"a float RGBA image must lie in [0, 1], got [{hwc.min()}, {hwc.max()}].")
    white = 255 if integer else 1.0
    alpha = hwc[..., 3:4] / white
    blended = alpha * hwc[..., :3] + (1 - alpha) * white
    return np.round(blended).astype(hwc.dtype) if integer else blended.astype(hwc.dtype)


def to_channels_first(image: Any, do_convert_rgb: bool, input_data_format: str | None = None) -> np.ndarray:
    """A PIL image, array or tensor -> a channels-first numpy array (a view where possible), RGB if asked."""
    if isinstance(image, Image.Image):
        array = np.array(to_rgb(image) if do_convert_rgb else image)  # writable, so torch can share it
        return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:  # H x W grey
        array = array[None]
        input_data_format = "channels_first"
    if input_data_format not in (None, "channels_first", "channels_last"):
        raise InputError(f"input_data_format must be 'channels_first' or 'channels_last', got {input_data_format!r}")
    first = infer_channels_first(array) if input_data_format is None else input_data_format == "channels_first"
    hwc = np.moveaxis(array, 0, -1) if first else array
    if do_convert_rgb:
        hwc = _array_to_rgb(hwc)
    return np.moveaxis(hwc, -1, 0)


def normalize_size(size: Any) -> dict[str, int]:
    """`size` as a dict: {"height", "width"}, {"shortest_edge"} or {"shortest_edge", "longest_edge"}."""
    if isinstance(size, int):
        return {"shortest_edge": size}
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    if isinstance(size, dict) and set(size) in (
        {"height", "width"},
        {"shortest_edge"},
        {"shortest_edge", "longest_edge"},
    ):
        return {key: int(value) for key, value in size.items()}
    raise ConfigError(
        f"size must be an int, (height, width) or a dict with keys height+width, shortest_edge, or "
        f"shortest_edge+longest_edge; got {size!r}."
    )


def output_size(height: int, width: int, size: dict[str, int]) -> tuple[int, int]:
    """(height, width) after resizing, with the reference's integer truncation for aspect-keeping sizes."""
    if "height" in size:
        return size["height"], size["width"]
    target, longest = size["shortest_edge"], size.get("longest_edge")
    if longest is None:  # shortest edge -> target, long edge scaled and truncated
        if width <= height:
            return int(target * height / width), target
        return target, int(target * width / height)
    # shortest edge -> target unless that makes the long edge exceed `longest`
    raw = None
    short_side, long_side = float(min(height, width)), float(max(height, width))
    if long_side / short_side * target > longest:
        raw = longest * short_side / long_side
        target = int(round(raw))
    if (height <= width and height == target) or (width <= height and width == target):
        return height, width
    scale = raw if raw is not None else target
    if width < height:
        return int(scale * height / width), target
    return target, int(scale * width / height)


def to_uint8_for_pil(chw: np.ndarray) -> tuple[np.ndarray, bool]:
    """A channels-first array -> (uint8 channels-last array, whether it was scaled by 255), as the reference.

    uint8 passes through; arrays of integer values in [0, 255] are cast; other floats must be in [0, 1] and
    are scaled by 255 (float64, then float32) and truncated.
    """
    hwc = np.moveaxis(chw, 0, -1)
    if hwc.dtype == np.uint8:
        return hwc, False
    scaled = False
    if np.allclose(hwc, hwc.astype(int)):
        if hwc.min() < 0 or hwc.max() > 255:
            raise InputError(f"image values must lie in [0, 255], got [{hwc.min()}, {hwc.max()}].")
    elif hwc.min() >= 0 and hwc.max() <= 1:
        hwc, scaled = (hwc.astype(np.float64) * 255).astype(np.float32), True
    else:
        raise InputError(f"float image values must lie in [0, 1] (or be whole 0-255), got [{hwc.min()}, {hwc.max()}].")
    return hwc.astype(np.uint8), scaled


def pil_resize(chw: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """Resize a channels-first array with Pillow, exactly as the reference (uint8 out, or float32 if scaled)."""
    hwc, scaled = to_uint8_for_pil(chw)
    image = Image.fromarray(hwc[..., 0] if hwc.shape[-1] == 1 else np.ascontiguousarray(hwc))
    resized = np.asarray(image.resize((width, height), resample=resample))
    resized = np.moveaxis(resized[..., None] if resized.ndim == 2 else resized, -1, 0)
    return (resized.astype(np.float64) / 255).astype(np.float32) if scaled else resized


def pack_outputs(
    pixel_values: list[Any] | torch.Tensor, return_tensors: str | None, data_format: str | None = "channels_first"
) -> BatchFeature:
    """Channels-first images (a list, or an already stacked N x C x H x W tensor) -> BatchFeature.

    Stacked into one array/tensor when `return_tensors` is "pt" or "np", a list of per-image arrays otherwise.
    """
    if data_format not in (None, "channels_first", "channels_last"):
        raise InputError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
    if isinstance(pixel_values, torch.Tensor):
        if data_format == "channels_last":
            pixel_values = pixel_values.permute(0, 2, 3, 1)
        pixel_values = pixel_values.contiguous()
        return BatchFeature(
            {"pixel_values": list(pixel_values) if return_tensors is None else pixel_values}, return_tensors
        )
    if data_format == "channels_last":
        pixel_values = [
            v.permute(1, 2, 0) if isinstance(v, torch.Tensor) else v.transpose(1, 2, 0) for v in pixel_values
        ]
    if return_tensors is not None and pixel_values:
        if len({tuple(v.shape) for v in pixel_values}) > 1:
            raise InputError(
                "images of different output sizes cannot be stacked: use a fixed {'height', 'width'} size "
                "or return_tensors=None."
            )
        stack = torch.stack if isinstance(pixel_values[0], torch.Tensor) else np.stack
        pixel_values = stack(pixel_values)
    return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)


class ImageProcessorBase:
    """Settings, per-call overrides and preprocessor_config.json I/O shared by every image processor.

    Subclasses declare `defaults` (their documented parameters) and implement `_preprocess(images, settings,
    return_tensors, data_format)`, where `images` is the flat list from `flatten_images` with paths loaded.
    Unknown keys of a loaded config are kept in `extra_config` and written back on save.
    """

    defaults: ClassVar[dict[str, Any]] = {}
    # Runtime-only parameters: accepted by __init__ and preprocess, never saved.
    runtime_defaults: ClassVar[dict[str, Any]] = {}
    model_input_names: ClassVar[list[str]] = ["pixel_values"]
    # Name written as image_processor_type (the reference's name, so transformers maps it back).
    config_type: ClassVar[str | None] = None

    def __init__(self, **kwargs: Any) -> None:
        for key, default in {**self.defaults, **self.runtime_defaults}.items():
            value = kwargs.pop(key, None)
            setattr(self, key, self._standardize(key, copy.deepcopy(default) if value is None else value))
        for key in SERVICE_KEYS:
            kwargs.pop(key, None)
        self.extra_config: dict[str, Any] = kwargs

    @staticmethod
    def _standardize(key: str, value: Any) -> Any:
        check_setting(key, value)  # type and range (ConfigError naming the setting)
        if key == "size" and value is not None:
            return normalize_size(value)
        if key in ("image_mean", "image_std") and isinstance(value, tuple):
            return list(value)
        if key == "resample" and value is not None:
            return int(value)
        return value

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The processor's settings with per-call `overrides` applied (None keeps the stored value)."""
        known = {**self.defaults, **self.runtime_defaults}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise InputError(
                f"{type(self).__name__} got unknown preprocessing options {unknown}; known: {sorted(known)}"
            )
        merged = {key: getattr(self, key) for key in known}
        merged.update({k: self._standardize(k, v) for k, v in overrides.items() if v is not None})
        return merged

    def fetch_image(self, image: Any, draft_size: tuple[int, int] | None = None) -> Any:
        """Paths and URLs -> PIL images the reference's way (EXIF applied, plain RGB convert); others unchanged.

        `draft_size` turns on approximate JPEG decoding at a reduced scale (see `image.loading.load_image`)."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image, honor_exif=True, draft_size=draft_size)
            return image if image.mode == "RGB" else image.convert("RGB")
        if isinstance(image, Image.Image):
            return load_image(image)  # size and memory caps; a lazily opened file decodes with typed errors
        return image

    def preprocess(
        self,
        images: Any,
        return_tensors: str | None = None,
        data_format: str | None = "channels_first",
        input_data_format: str | None = None,
        **overrides: Any,
    ) -> BatchFeature:
        """Preprocess one image or a batch; keyword `overrides` replace settings for this call only.

        Images are loaded and prepared (`_prepare`) in parallel threads (`num_workers`, where the processor has
        that option), then combined by `_finish`."""
        settings = self.settings(**overrides)
        fast = settings.get("fast_decode") and settings.get("do_resize")
        draft = self.draft_size(**overrides) if fast else None
        flat = flatten_images(images)
        seen: set[int] = set()
        for image in flat:  # a lazily opened image listed twice must not be decoded by two threads at once
            if isinstance(image, Image.Image) and (id(image) in seen or seen.add(id(image))):
                load_image(image)

        def prepare(image: Any) -> Any:
            return self._prepare(self.fetch_image(image, draft), settings, input_data_format)

        prepared = map_in_threads(prepare, flat, settings.get("num_workers"))
        return self._finish(prepared, settings, return_tensors, data_format)

    def _prepare(self, image: Any, settings: dict[str, Any], input_data_format: str | None) -> Any:
        """One loaded image -> a channels-first array (RGB if asked), in a worker thread."""
        return to_channels_first(image, settings.get("do_convert_rgb", True), input_data_format)

    def _finish(
        self, prepared: list[Any], settings: dict[str, Any], return_tensors: str | None, data_format: str | None
    ) -> BatchFeature:
        return self._preprocess(prepared, settings, return_tensors, data_format)

    def __call__(self, images: Any = None, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def _preprocess(
        self, images: list[np.ndarray], settings: dict[str, Any], return_tensors: str | None, data_format: str | None
    ) -> BatchFeature:
        raise NotImplementedError

    # ---- preprocessor_config.json -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The reference's config format: every setting, unknown keys kept, image_processor_type last."""
        config = {**self.extra_config, **{key: copy.deepcopy(getattr(self, key)) for key in self.defaults}}
        config["image_processor_type"] = self.config_type or type(self).__name__
        return config

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json_string(), encoding="utf-8")

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        """Write preprocessor_config.json (loadable by transformers) into `save_directory`."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PREPROCESSOR_CONFIG_NAME
        self.to_json_file(path)
        return [str(path)]

    @classmethod
    def from_dict(cls, config: dict[str, Any], **kwargs: Any):
        """Build from a config dict; `kwargs` naming known parameters override it, others are ignored."""
        known = {**cls.defaults, **cls.runtime_defaults}
        return cls(**{**config, **{key: value for key, value in kwargs.items() if key in known}})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **kwargs: Any):
        config = read_json(path, "image processor config", ConfigError, max_bytes=16 * 1024 * 1024)
        if not isinstance(config, dict):
            raise ConfigError(f"{path} must hold a JSON object, got {type(config).__name__}.")
        with config_file(path):
            return cls.from_dict(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        """Load preprocessor_config.json from a folder or Hub id (Hub kwargs: revision, cache_dir, token, ...)."""
        kwargs = dict(kwargs)
        options = HubOptions.from_kwargs(kwargs)
        path = resolve_file(pretrained_model_name_or_path, PREPROCESSOR_CONFIG_NAME, options)
        return cls.from_json_file(path, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


_UINT8_TABLES: dict[str, np.ndarray] = {}  # SiglipImageProcessor._uint8_table, per setting values


class SiglipImageProcessor(ImageProcessorBase):
    """SigLIP preprocessing, numerically identical to the reference's PIL backend.

    Args:
        do_resize: resize to `size` with `resample` (Pillow).
        size: {"height": 224, "width": 224}; an int means shortest edge (aspect kept), as in the reference.
        resample: a `PIL.Image.Resampling` value (default BICUBIC).
        do_rescale / rescale_factor: multiply by 1/255 (computed in float64, stored as float32).
        do_normalize / image_mean / image_std: (x - mean) / std per channel, in float32.
        do_convert_rgb: convert to RGB first (None means True, the reference's default).
    """

    defaults: ClassVar[dict[str, Any]] = {
        "do_resize": True,
        "size": {"height": 224, "width": 224},
        "resample": int(Image.Resampling.BICUBIC),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    }
    # fast_decode: decode JPEG paths at a reduced DCT scale (approximate; see `draft_size`). num_workers: threads
    # that load and preprocess images in parallel (None: up to 4, one per core; 1: serial). Neither is saved.
    runtime_defaults: ClassVar[dict[str, Any]] = {"fast_decode": False, "num_workers": None}
    config_type = "SiglipImageProcessor"

    def draft_size(self, **overrides: Any) -> tuple[int, int]:
        """The (width, height) that fast decoding must not go below: every side of the resize target, so that a
        JPEG is never decoded smaller than the output in either dimension, whatever its aspect or orientation."""
        size = self.settings(**overrides)["size"]
        side = max(value for key, value in size.items() if key != "longest_edge")
        return side, side

    def _prepare(self, image: Any, settings: dict[str, Any], input_data_format: str | None) -> np.ndarray:
        """One image -> its output array, in a worker thread. A PIL image is resized by Pillow directly (the same
        pixels the reference gets through its numpy round trip) and rescaled and normalised by table lookup."""
        if isinstance(image, Image.Image) and settings["do_convert_rgb"] is not False and settings["do_resize"]:
            rgb = to_rgb(image)
            if rgb.mode == "RGB" and (settings["do_rescale"] or settings["do_normalize"]):
                height, width = output_size(rgb.height, rgb.width, settings["size"])
                resized = np.asarray(rgb.resize((width, height), resample=settings["resample"]))
                table = self._uint8_table(settings)
                out = np.empty((3, height, width), dtype=table.dtype)
                for channel in range(3):
                    np.take(table[channel], resized[..., channel], out=out[channel])
                return out
        return self._process_array(super()._prepare(image, settings, input_data_format), settings)

    def _uint8_table(self, settings: dict[str, Any]) -> np.ndarray:
        """(3, 256): each channel's output for each uint8 value, computed by `_process_array` itself, so a
        lookup is bit-equal to the arithmetic (float64 rescale, float32 normalise) it replaces. Cached per
        setting values (read-only)."""
        keys = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")
        key = repr([settings[k] for k in keys])
        table = _UINT8_TABLES.get(key)
        if table is None:
            values = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 1, 256))
            table = self._process_array(values, {**settings, "do_resize": False})[:, 0, :]
            table.flags.writeable = False
            _UINT8_TABLES[key] = table
        return table

    def _finish(
        self, prepared: list[np.ndarray], settings: dict[str, Any], return_tensors: str | None, data_format: str | None
    ) -> BatchFeature:
        return pack_outputs(prepared, return_tensors, data_format)

    def _preprocess(
        self, images: list[np.ndarray], settings: dict[str, Any], return_tensors: str | None, data_format: str | None
    ) -> BatchFeature:
        return pack_outputs([self._process_array(image, settings) for image in images], return_tensors, data_format)

    @staticmethod
    def _process_array(image: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
        """The reference's steps on one channels-first array: Pillow resize, float64 rescale, float32 normalise."""
        if settings["do_resize"]:
            height, width = output_size(image.shape[1], image.shape[2], settings["size"])
            image = pil_resize(image, height, width, settings["resample"])
        if settings["do_rescale"]:
            image = (image.astype(np.float64) * settings["rescale_factor"]).astype(np.float32)
        if settings["do_normalize"]:
            image = normalize(image, settings["image_mean"], settings["image_std"])
        return image


def map_in_threads(function: Any, items: list[Any], workers: int | None = None) -> list[Any]:
    """`[function(item) for item in items]` on a shared pool of `workers` threads (None: one per core, at most
    4). Pillow releases the GIL while decoding and resizing, so images scale over cores without processes."""
    workers = workers or default_workers()
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    return list(shared_pool("images", workers).map(function, items))


def normalize(chw: np.ndarray, mean: float | Sequence[float], std: float | Sequence[float]) -> np.ndarray:
    """(x - mean) / std per channel in the image's float dtype (float32 for integer images), as the reference."""
    if not np.issubdtype(chw.dtype, np.floating):
        chw = chw.astype(np.float32)
    channels = chw.shape[0]
    mean_arr = np.asarray([mean] * channels if np.isscalar(mean) else mean, dtype=chw.dtype)
    std_arr = np.asarray([std] * channels if np.isscalar(std) else std, dtype=chw.dtype)
    if mean_arr.shape != (channels,) or std_arr.shape != (channels,):
        raise InputError(f"image_mean and image_std need {channels} values, got {mean!r} and {std!r}.")
    return (chw - mean_arr[:, None, None]) / std_arr[:, None, None]
