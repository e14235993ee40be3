"""`siglip quantize MODEL --calibration IMAGES... --out DIR`: a calibrated int8 model folder for CPU inference.

The encoder linears get int8 weights and static activation scales measured on the calibration images (and on
`--text` prompts, or the built-in captions, for the text tower); the folder holds the int8 safetensors, config
and processor files, and every command loads it with `-m DIR` (int8 comes back from its config.json).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InputError
from .common import DEFAULT_MODEL, check_positive, warn

REST_DTYPES = ("auto", "fp32", "bf16")


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "quantize",
        help="write a calibrated int8 copy of a model for fast CPU inference",
        description="Quantise the encoder linears to int8 with static activation scales calibrated on a few of your "
        "images, and write the model (int8 safetensors), config and processor files into DIR.",
    )
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL", help="Hub id or local folder")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument(
        "--calibration",
        nargs="+",
        required=True,
        metavar="IMAGE",
        help="images or folders of images like those the model will see (a few dozen are enough)",
    )
    parser.add_argument("--max-images", type=int, default=32, help="calibration images used (default: %(default)s)")
    parser.add_argument(
        "--text", nargs="+", default=None, metavar="TEXT", help="calibration prompts (default: built-in captions)"
    )
    parser.add_argument(
        "--rest-dtype",
        default="auto",
        choices=REST_DTYPES,
        help="dtype of what stays float (LayerNorm, attention, heads): auto = bf16 where the CPU has it natively",
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..encode import load_rgb
    from ..export.files import copy_companion_files
    from ..hub import HubOptions
    from ..image.batches import expand_image_paths
    from ..quantization.calibration import calibration_batch
    from ..runtime import DTYPES, load_model_and_processor, load_options

    check_positive(args.max_images, "--max-images")
    paths = expand_image_paths(args.calibration)
    if not paths:
        raise InputError(f"no image files found in {args.calibration}")
    if len(paths) > args.max_images:
        step = len(paths) / args.max_images  # spread over the whole list, not its first folder
        paths = [paths[int(i * step)] for i in range(args.max_images)]
    rest = load_options("int8")["dtype"] if args.rest_dtype == "auto" else DTYPES[args.rest_dtype]
    model, processor = load_model_and_processor(args.model, dtype=rest, device="cpu", revision=args.revision)
    images = [load_rgb(path) for path in paths]
    model.quantize("int8", calibration=calibration_batch(model, processor, images, args.text))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    copy_companion_files(args.model, out, HubOptions(revision=args.revision))
    model.save_pretrained(out)  # after the copies: its config.json records the quantization
    if len(images) < 8:
        warn(f"calibrated on {len(images)} image(s) only: a few dozen typical images give safer scales")
    record = model.config.quantization_config
    steps = "".join(
        f", {len(record[key])} linears {what}" for key, what in (("dynamic_layers", "on per-call scales"),
        ("float_layers", "kept float")) if record.get(key)
    )  # fmt: skip
    print(
        f"wrote {out}/ (int8, static scales from {len(images)} images{steps}, float parts in "
        f"{str(rest).removeprefix('torch.')}); use: -m {out}"
    )
    return 0
