"""Batched torch SigLIP preprocessing: same settings and inputs as `SiglipImageProcessor`, several times faster.

Decoding and RGB conversion are shared with the exact processor (PIL, through `ImageProcessorBase`). Then,
per group of same-sized images, uint8 `interpolate(antialias=True)` calls resize them (Pillow's bicubic and
bilinear filters, computed by torch in fixed point on CPU), and a fused multiply-add applies rescale and
normalisation together: ``x * (rescale_factor / std) + (-mean / std)``. On CPU the usual batch (same-sized uint8
images) is split over the worker threads, each resizing and normalising its slice into the output, because
torch's uint8 resize runs on one core per call.

Deviation from the exact path (= the reference), measured by `tests/test_image_processing.py`: torch's uint8
resampler rounds a few pixels differently from Pillow's. Downscaling (every fixture photo to 224x224, default
settings): at most one uint8 level, max |diff| = 2/255 ~= 0.0078 after normalisation, mean |diff| 1e-6 .. 3e-5
per image (2.6e-5 on astronaut.png). Upscaling (e.g. 30x20 -> 224x224): at most two levels (0.0157), mean
~6e-5. Same-size and 1-pixel-wide inputs agree to float rounding (< 2e-5). Decoded RGB/grey images at least
`REDUCING_GAP` (4) times the output on both sides are first box-reduced by an exact divisor of both sides (12 MP
photos: 2x): the mean |diff| then rises to ~1e-3 to 2e-3, max one uint8 level on the 12 MP benchmark photos and
two on a smooth upscaled photo (tested). Filters torch lacks (LANCZOS, BOX,
HAMMING) use the exact Pillow resize; NEAREST maps to torch's "nearest-exact". On a non-CPU `device` the resize runs in float32 on the device
and is rounded and clipped to 0-255, like Pillow's 8-bit output.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..batch import BatchFeature
from ..errors import InputError
from ..threads import default_workers
from .processing import (
    ImageProcessorBase,
    SiglipImageProcessor,
    map_in_threads,
    output_size,
    pack_outputs,
    pil_resize,
    to_uint8_for_pil,
)

# Pillow filter -> torch interpolate mode; filters missing here are resized with Pillow.
TORCH_MODES = {
    int(Image.Resampling.BICUBIC): "bicubic",
    int(Image.Resampling.BILINEAR): "bilinear",
    int(Image.Resampling.NEAREST): "nearest-exact",
}


# A decoded PIL image at least this many times the output size on both sides is first averaged over factor x factor
# pixel blocks by Pillow (`Image.reduce`, on Pillow's own storage), then resized by torch: converting a 12 MP image to
# numpy alone takes ~55 ms, its 2x reduction ~12 ms and the smaller conversion ~4 ms.
REDUCING_GAP = 4


def reduction_factor(in_width: int, in_height: int, out_width: int, out_height: int) -> int:
    """The largest factor >= 2 that divides both input sides and leaves >= REDUCING_GAP x the output; else 1.

    Only exact divisors: a partial last block would be averaged over fewer pixels and shift the geometry
    (measured: up to 24 uint8 levels at the border of a 12 MP photo reduced 3x)."""
    bound = min(in_width // (REDUCING_GAP * out_width), in_height // (REDUCING_GAP * out_height))
    for factor in range(bound, 1, -1):
        if in_width % factor == 0 and in_height % factor == 0:
            return factor
    return 1


def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack CPU tensors with numpy (one single-threaded copy) and others with torch.

    torch.stack runs one parallel region per input; on a busy shared CPU each region waits for a time slice,
    which made batching slower than not batching. numpy's copy has no such barrier.
    """
    if len(tensors) == 1:
        return tensors[0][None]
    if tensors[0].device.type != "cpu":
        return torch.stack(tensors)
    out = np.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].numpy().dtype)  # C order, whatever the inputs
    return torch.from_numpy(np.stack([tensor.numpy() for tensor in tensors], out=out))


def resize_batch(images: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """Resize a uint8 N x H x W x C batch to N x C x height x width (antialiased, uint8 out, like Pillow)."""
    images = images.permute(0, 3, 1, 2)  # NCHW view in channels_last memory
    if images.shape[-2:] == (height, width) and mode != "nearest-exact":
        return images
    antialias = mode != "nearest-exact"
    if images.device.type == "cpu":
        return F.interpolate(images, size=(height, width), mode=mode, antialias=antialias)
    resized = F.interpolate(images.float(), size=(height, width), mode=mode, antialias=antialias)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


class SiglipImageProcessorFast(SiglipImageProcessor):
    """`SiglipImageProcessor` with a batched torch resize and a fused affine rescale+normalise.

    Same parameters, plus `device` (where resizing and normalising run; outputs stay there). Returns torch
    tensors (a list of them when `return_tensors` is None). See the module docstring for its deviation from
    the exact path: at most one uint8 level before normalisation.
    """

    runtime_defaults: ClassVar[dict[str, Any]] = {**SiglipImageProcessor.runtime_defaults, "device": None}
    config_type = "SiglipImageProcessorFast"

    _finish = ImageProcessorBase._finish

    def _prepare(self, image: Any, settings: dict[str, Any], input_data_format: str | None) -> np.ndarray:
        """In a worker thread: convert as the base class does (resizing is batched in `_preprocess`), after a
        Pillow box reduction of RGB/grey images at least `REDUCING_GAP` times the output on both sides."""
        if isinstance(image, Image.Image) and image.mode in ("RGB", "L") and settings["do_resize"]:
            if settings["resample"] in TORCH_MODES and settings["resample"] != int(Image.Resampling.NEAREST):
                height, width = output_size(image.height, image.width, settings["size"])
                factor = reduction_factor(image.width, image.height, width, height)
                if factor > 1:
                    image = image.reduce(factor)
        return ImageProcessorBase._prepare(self, image, settings, input_data_format)

    def _preprocess(
        self, images: list[np.ndarray], settings: dict[str, Any], return_tensors: str | None, data_format: str | None
    ) -> BatchFeature:
        device = torch.device(settings["device"] or "cpu")
        if device.type == "cpu" and settings["do_resize"]:
            batch = self._resize_and_normalize_in_threads(images, settings)
            if batch is not None:
                return pack_outputs(batch, return_tensors, data_format)
        if settings["do_resize"]:
            tensors, scales = self._resize_all(images, settings, device)
        else:
            tensors = [torch.from_numpy(np.ascontiguousarray(image)).to(device) for image in images]
            scales = [1.0] * len(images)
        outputs = self._rescale_and_normalize(tensors, scales, settings)
        if return_tensors == "np":
            outputs = [output.cpu() for output in outputs]
        return pack_outputs(outputs, return_tensors, data_format)

    def _resize_all(
        self, images: list[np.ndarray], settings: dict[str, Any], device: torch.device
    ) -> tuple[list[torch.Tensor], list[float]]:
        """Resize every image; same-shaped images go through one interpolate call. Returns uint8 CHW tensors
        and, per image, the extra factor (1/255) the reference applies after resizing [0, 1] float inputs."""
        mode = TORCH_MODES.get(settings["resample"])
        resized: list[torch.Tensor | None] = [None] * len(images)
        scales = [1.0] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        prepared: list[torch.Tensor | None] = [None] * len(images)
        for index, image in enumerate(images):
            height, width = output_size(image.shape[1], image.shape[2], settings["size"])
            if mode is None:  # a filter torch lacks: Pillow, exactly as the reference
                exact = pil_resize(image, height, width, settings["resample"])
                resized[index] = torch.from_numpy(np.ascontiguousarray(exact)).to(device)
                continue
            hwc, scaled = to_uint8_for_pil(image)  # channels-last: Pillow's layout, read by torch without a transpose
            prepared[index] = torch.from_numpy(hwc if hwc.flags.writeable else hwc.copy())
            scales[index] = 1 / 255 if scaled else 1.0
            groups.setdefault((*prepared[index].shape, height, width), []).append(index)
        for (_, _, _, height, width), indices in groups.items():
            batch = stack([prepared[i] for i in indices])
            out = resize_batch(batch.to(device), height, width, mode)
            for position, index in enumerate(indices):
                resized[index] = out[position]
        return resized, scales  # type: ignore[return-value]

    def _resize_and_normalize_in_threads(
        self, images: list[np.ndarray], settings: dict[str, Any]
    ) -> torch.Tensor | None:
        """The usual CPU case in one pass per worker thread: same-shaped uint8 images, a torch filter, rescale and
        normalise on. Each thread stacks, resizes and normalises a slice of the batch straight into the output
        (torch's uint8 antialiased resize runs on one core per call). Same values as `_resize_all` followed by
        `_rescale_and_normalize`. Returns None when the batch does not fit this case."""
        mode = TORCH_MODES.get(settings["resample"])
        if mode is None or not (settings["do_rescale"] and settings["do_normalize"]) or not images:
            return None
        shape = images[0].shape
        if images[0].dtype != np.uint8 or any(image.shape != shape or image.dtype != np.uint8 for image in images):
            return None
        channels = shape[0]
        height, width = output_size(shape[1], shape[2], settings["size"])
        mean, std, factor = _affine_terms(settings, channels)
        scale = (factor / std).astype(np.float32)[:, None, None]
        shift = (-mean / std).astype(np.float32)[:, None, None]
        output = np.empty((len(images), channels, height, width), dtype=np.float32)
        workers = min(settings.get("num_workers") or default_workers(), len(images))
        bounds = np.linspace(0, len(images), workers + 1).astype(int)

        def run(start: int, end: int) -> None:
            hwc = np.stack([np.moveaxis(image, 0, -1) for image in images[start:end]])
            resized = resize_batch(torch.from_numpy(hwc), height, width, mode).contiguous().numpy()
            np.add(np.multiply(resized, scale, out=output[start:end]), shift, out=output[start:end])

        map_in_threads(lambda span: run(*span), list(zip(bounds[:-1], bounds[1:])), workers)
        return torch.from_numpy(output)

    @staticmethod
    def _rescale_and_normalize(
        tensors: list[torch.Tensor], scales: list[float], settings: dict[str, Any]
    ) -> list[torch.Tensor] | torch.Tensor:
        """One multiply-add per same-shaped group: x * (factor / std) + (-mean / std), in float32.

        Returns one stacked N x C x H x W tensor when all images share a shape (the usual case), else a list.
        """
        do_rescale, do_normalize = settings["do_rescale"], settings["do_normalize"]
        if not (do_rescale or do_normalize or any(scale != 1.0 for scale in scales)):
            return tensors
        mean, std, factor = _affine_terms(settings, tensors[0].shape[0] if tensors else 3)
        groups: dict[tuple[tuple[int, ...], torch.device], list[int]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault((tuple(tensor.shape), tensor.device), []).append(index)
        outputs: list[torch.Tensor | None] = [None] * len(tensors)
        for (_, device), indices in groups.items():
            # Resized batches come channels-last in memory: made plain N x C x H x W while still uint8, the
            # multiply-add below vectorises over whole rows (6x faster than on the strided view + a float copy).
            batch = stack([tensors[i] for i in indices]).contiguous()
            per_image = torch.tensor([scales[i] * factor for i in indices], dtype=torch.float64)
            weight = (per_image[:, None] / torch.from_numpy(std)[None]).float()[..., None, None]
            bias = torch.from_numpy(-mean / std).float()[None, :, None, None]
            if device.type == "cpu":  # numpy: vectorised uint8 -> float32 casts and no thread barriers
                values = np.multiply(batch.numpy(), weight.numpy(), dtype=np.float32)
                result = torch.from_numpy(np.add(values, bias.numpy(), out=values))
            else:
                result = torch.addcmul(bias.to(device), batch, weight.to(device))
            if len(groups) == 1:
                return result
            for position, index in enumerate(indices):
                outputs[index] = result[position]
        return outputs  # type: ignore[return-value]


def _affine_terms(settings: dict[str, Any], channels: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, std, rescale factor) of the fused rescale+normalise, neutral where a step is off."""
    normalize = settings["do_normalize"]
    mean = _per_channel(settings["image_mean"], channels) if normalize else np.zeros(channels)
    std = _per_channel(settings["image_std"], channels) if normalize else np.ones(channels)
    return mean, std, settings["rescale_factor"] if settings["do_rescale"] else 1.0


def _per_channel(value: float | list[float], channels: int) -> np.ndarray:
    array = np.asarray([value] * channels if np.isscalar(value) else value, dtype=np.float64)
    if array.shape != (channels,):
        raise InputError(f"image_mean and image_std need {channels} values, got {value!r}.")
    return array
