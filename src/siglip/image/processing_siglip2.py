"""SigLIP2 NaFlex image processors: aspect-preserving resize to a patch budget, then a padded sequence of patches.

Each image is resized (aspect ratio kept) to the largest size whose sides are multiples of `patch_size` and
whose patch count stays within `max_num_patches`, found by the reference's binary search over the scale
(`get_image_size_for_max_num_patches`, eps 1e-5). It is then rescaled, normalised, cut into patches flattened
in (patch row, patch column, channel) order and padded with zero patches to exactly `max_num_patches`. The
output holds

- `pixel_values`: (batch, max_num_patches, patch_size * patch_size * 3) float32,
- `pixel_attention_mask`: (batch, max_num_patches) int32, 1 for real patches and 0 for padding,
- `spatial_shapes`: (batch, 2) int64, the (rows, columns) patch grid of each image.

`Siglip2ImageProcessor` is the exact path: Pillow bilinear resize, bit-equal to transformers' PIL backend.
`Siglip2ImageProcessorFast` resizes with `torch.nn.functional.interpolate` (bilinear + antialias), batching
images of equal size, optionally on an accelerator. Its resized pixels differ from Pillow's by at most two 8-bit
levels (measured on CPU over 150 random crops of the fixture photos and budgets 64-1024: at most one level
except when upscaling a 1:8 strip, on 1% of the values on average, up to ~23% for some scale ratios), i.e. at
most 4/255 = 0.0157 after normalisation. Masks and spatial shapes are identical.
"""

from __future__ import annotations

import math
from itertools import groupby
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..batch import BatchFeature
from ..errors import InputError
from .processing import ImageProcessorBase, normalize, pil_resize


def get_image_size_for_max_num_patches(
    image_height: int, image_width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5
) -> tuple[int, int]:
    """(height, width) for the NaFlex resize: multiples of `patch_size`, at least one patch, <= the budget.

    The reference bisects the scale factor in [eps / 10, 100] until the interval is narrower than `eps`; each
    side is `ceil(side * scale / patch_size) * patch_size`. The same arithmetic gives the same sizes.
    """

    def scaled(scale: float, side: int) -> int:
        return max(patch_size, math.ceil(side * scale / patch_size) * patch_size)

    low, high = eps / 10, 100.0
    while high - low >= eps:
        scale = (low + high) / 2
        patches = (scaled(scale, image_height) / patch_size) * (scaled(scale, image_width) / patch_size)
        if patches <= max_num_patches:
            low = scale
        else:
            high = scale
    return scaled(low, image_height), scaled(low, image_width)


Array = np.ndarray | torch.Tensor


def patchify(pixels: Array, patch_size: int) -> Array:
    """(..., C, H, W) -> (..., H/P * W/P, P * P * C), patches in row-major order, each flattened (ph, pw, c).

    Works on numpy arrays (the exact path, like the reference) and torch tensors (the batched path).
    """
    *batch, channels, height, width = pixels.shape
    rows, columns = height // patch_size, width // patch_size
    grid = pixels.reshape(*batch, channels, rows, patch_size, columns, patch_size)
    lead = list(range(len(batch)))
    order = [*lead, len(batch) + 1, len(batch) + 3, len(batch) + 2, len(batch) + 4, len(batch)]  # rows, cols, P, P, C
    grid = grid.permute(order) if isinstance(grid, torch.Tensor) else grid.transpose(order)
    return grid.reshape(*batch, rows * columns, patch_size * patch_size * channels)


def pad_patches(patches: Array, max_num_patches: int) -> tuple[Array, Array]:
    """Zero-pad the patch axis (-2) to `max_num_patches`; returns (patches, int32 mask of real patches)."""
    count = patches.shape[-2]
    if count > max_num_patches:
        raise InputError(
            f"the image has {count} patches, more than max_num_patches={max_num_patches}: keep do_resize=True "
            f"or raise max_num_patches."
        )
    shape = (*patches.shape[:-2], max_num_patches, patches.shape[-1])
    if isinstance(patches, torch.Tensor):
        padded = patches.new_zeros(shape)
        mask = torch.zeros(shape[:-1], dtype=torch.int32, device=patches.device)
    else:
        padded, mask = np.zeros(shape, dtype=patches.dtype), np.zeros(shape[:-1], dtype=np.int32)
    padded[..., :count, :] = patches
    mask[..., :count] = 1
    return padded, mask


def pack_patches(
    pixel_values: list[Array], masks: list[Array], shapes: list[tuple[int, int]], return_tensors: str | None
) -> BatchFeature:
    """Per-image padded patches -> BatchFeature: stacked for "pt"/"np", lists of numpy arrays for None."""
    numpy = [np.asarray(values) for values in pixel_values], [np.asarray(mask) for mask in masks]
    if return_tensors is None:
        return BatchFeature({"pixel_values": numpy[0], "pixel_attention_mask": numpy[1], "spatial_shapes": shapes})
    data = {
        "pixel_values": np.stack(numpy[0]),
        "pixel_attention_mask": np.stack(numpy[1]),
        "spatial_shapes": np.asarray(shapes, dtype=np.int64).reshape(len(shapes), 2),
    }
    return BatchFeature(data, tensor_type=return_tensors)


class Siglip2ImageProcessor(ImageProcessorBase):
    """SigLIP2 NaFlex preprocessing, numerically identical to transformers' PIL backend.

    Args:
        patch_size: side of a square patch (16).
        max_num_patches: patch budget per image, and the padded sequence length (256).
        do_resize / resample: resize to the budget's size with this `PIL.Image.Resampling` (BILINEAR).
        do_rescale / rescale_factor: multiply by 1/255 (computed in float64, stored as float32).
        do_normalize / image_mean / image_std: (x - mean) / std per channel in float32 (0.5 / 0.5).
        do_convert_rgb: convert to RGB first (True). The reference leaves images as they are, so it rejects
            grayscale (1 channel against a 3-value mean) and RGBA input; here grayscale is repeated to three
            channels and transparency composited onto white (`image.loading.to_rgb`), which is what the reference
            gives for `image.convert("RGB")` / an alpha-composited image. Set False to keep the reference's
            behaviour (then such images raise `InputError`).

    `preprocess(images, max_num_patches=..., patch_size=..., return_tensors="pt")` overrides settings per call.
    """

    defaults: ClassVar[dict[str, Any]] = {
        "do_resize": True,
        "resample": int(Image.Resampling.BILINEAR),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
        "patch_size": 16,
        "max_num_patches": 256,
    }
    model_input_names: ClassVar[list[str]] = ["pixel_values", "pixel_attention_mask", "spatial_shapes"]
    config_type = "Siglip2ImageProcessor"

    def _target_size(self, height: int, width: int, settings: dict[str, Any]) -> tuple[int, int]:
        if not settings["do_resize"]:
            return height, width
        return get_image_size_for_max_num_patches(height, width, settings["patch_size"], settings["max_num_patches"])

    @staticmethod
    def _check_channels(image: np.ndarray, settings: dict[str, Any]) -> None:
        mean = settings["image_mean"]
        if settings["do_normalize"] and not np.isscalar(mean) and image.shape[0] != len(mean):
            raise InputError(
                f"the image has {image.shape[0]} channels but image_mean has {len(mean)} values: keep "
                f"do_convert_rgb=True to convert grayscale/RGBA images to RGB."
            )

    def _preprocess(
        self, images: list[np.ndarray], settings: dict[str, Any], return_tensors: str | None, data_format: str | None
    ) -> BatchFeature:
        patch_size = settings["patch_size"]
        pixel_values, masks, shapes = [], [], []
        for image in images:
            self._check_channels(image, settings)
            height, width = self._target_size(image.shape[1], image.shape[2], settings)
            if settings["do_resize"]:
                image = pil_resize(image, height, width, settings["resample"])
            if settings["do_rescale"]:
                image = (image.astype(np.float64) * settings["rescale_factor"]).astype(np.float32)
            if settings["do_normalize"]:
                image = normalize(image, settings["image_mean"], settings["image_std"])
            padded, mask = pad_patches(patchify(image, patch_size), settings["max_num_patches"])
            pixel_values.append(padded)
            masks.append(mask)
            shapes.append((height // patch_size, width // patch_size))
        return pack_patches(pixel_values, masks, shapes, return_tensors)


class Siglip2ImageProcessorFast(Siglip2ImageProcessor):
    """Batched torch variant of `Siglip2ImageProcessor`: same settings, config file and outputs.

    Images are turned into uint8 tensors, grouped by (input size, target size) and resized one group at a
    time with `F.interpolate(mode="bilinear", antialias=True)`; the group is patchified while still uint8, and
    rescale + normalise become an exact 256-entry lookup per channel. On CPU the uint8 kernel follows Pillow's algorithm but rounds differently in places: resized
    pixels differ from the exact path by at most two 8-bit levels, usually one, on ~1% of the values on
    average (see the module docstring). On another `device` the resize runs in float32 and is rounded to 8 bits
    afterwards (not measured here: no accelerator on the development machine). Masks and spatial shapes are
    always identical. Inputs that are not uint8 (float or int arrays/tensors) go through the exact path one by
    one, so they are quantised exactly as the reference does.

    Extra runtime option: `device` (where the work runs; outputs come back on that device).
    """

    runtime_defaults: ClassVar[dict[str, Any]] = {"device": None}
    config_type = "Siglip2ImageProcessorFast"

    def _preprocess(
        self, images: list[np.ndarray], settings: dict[str, Any], return_tensors: str | None, data_format: str | None
    ) -> BatchFeature:
        device = torch.device(settings["device"] or "cpu")
        patch_size, budget = settings["patch_size"], settings["max_num_patches"]
        results: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] = {}
        exact = [index for index, image in enumerate(images) if image.dtype != np.uint8]
        if exact:  # float/int arrays: the exact path decides how they are quantised (rare; not batched)
            feature = super()._preprocess([images[i] for i in exact], settings, "pt", data_format)
            for row, index in enumerate(exact):
                shape = tuple(feature["spatial_shapes"][row].tolist())
                results[index] = (feature["pixel_values"][row], feature["pixel_attention_mask"][row], shape)
        keyed = []
        for index, image in enumerate(images):
            if image.dtype == np.uint8:
                self._check_channels(image, settings)
                keyed.append(((tuple(image.shape), self._target_size(image.shape[1], image.shape[2], settings)), index))
        keyed.sort()
        for (_, target), group in groupby(keyed, key=lambda item: item[0]):
            indices = [index for _, index in group]
            batch = torch.from_numpy(np.stack([images[i] for i in indices])).to(device)
            pixels = self._resize(batch, target) if settings["do_resize"] else batch
            padded, masks = pad_patches(self._lookup(patchify(pixels, patch_size), settings), budget)
            if isinstance(padded, torch.Tensor):
                padded, masks = padded.cpu(), masks.cpu()
            for row, index in enumerate(indices):
                results[index] = (padded[row], masks[row], (target[0] // patch_size, target[1] // patch_size))
        ordered = [results[index] for index in range(len(images))]
        feature = pack_patches(*map(list, zip(*ordered)), return_tensors) if ordered else pack_patches([], [], [], None)
        return feature.to(device) if return_tensors == "pt" and device.type != "cpu" else feature

    @staticmethod
    def _resize(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bilinear + antialias resize; uint8 kernel on CPU, float32 elsewhere, rounded back to uint8."""
        if tuple(batch.shape[-2:]) == tuple(size):
            return batch
        if batch.device.type == "cpu":
            return F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
        resized = F.interpolate(batch.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        return resized.round_().clamp_(0, 255).to(torch.uint8)

    @staticmethod
    def _value_table(settings: dict[str, Any], channels: int) -> np.ndarray:
        """(channels, 256) float32: what rescale + normalise make of each 8-bit level, by the exact path's ops.

        Looking values up is exact by construction and replaces the float64 pass over every pixel.
        """
        levels = np.tile(np.arange(256, dtype=np.uint8), (channels, 1))[:, :, None]  # a (C, 256, 1) "image"
        if settings["do_rescale"]:
            levels = (levels.astype(np.float64) * settings["rescale_factor"]).astype(np.float32)
        if settings["do_normalize"]:
            levels = normalize(levels, settings["image_mean"], settings["image_std"])
        return levels[:, :, 0].astype(np.float32)

    def _lookup(self, patches: torch.Tensor, settings: dict[str, Any]) -> np.ndarray | torch.Tensor:
        """uint8 patches (..., P*P*C) -> float32 values; columns cycle through the channels (ph, pw, c order)."""
        channels = len(settings["image_mean"]) if not np.isscalar(settings["image_mean"]) else 3
        table = self._value_table(settings, channels).reshape(-1)
        offsets = (np.arange(patches.shape[-1]) % channels) * 256
        if patches.device.type == "cpu":
            return table[offsets + patches.numpy()]
        device = patches.device
        return torch.from_numpy(table).to(device)[torch.from_numpy(offsets).to(device) + patches.long()]
