"""`siglip export MODEL --format onnx --out DIR`: the towers as verified ONNX files, with the processor files.

Each file is checked in ONNX Runtime against the torch model before it is kept (see siglip/export/onnx.py).
"""

from __future__ import annotations

import argparse
from typing import Any

FORMATS = ("onnx",)


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "export",
        help="export the text / vision towers to ONNX (verified in ONNX Runtime)",
        description="Write text_model.onnx / vision_model.onnx (unnormalised embeddings, dynamic batch) and the "
        "checkpoint's config, tokenizer and processor files into DIR. Needs siglip[onnx].",
    )
    parser.add_argument("model", metavar="MODEL", help="Hub id or local folder of a SigLIP / SigLIP2 checkpoint")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="export format (default: %(default)s)")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument(
        "--tower", default="both", choices=("text", "vision", "both"), help="which towers (default: %(default)s)"
    )
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=("fp32", "fp16", "int8"),
        help="fp32, fp16 (fp16 weights and compute, fp32 inputs/outputs) or int8 (dynamic quantisation) "
        "(default: %(default)s)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_onnx

    written = export_onnx(
        args.model, args.out, tower=args.tower, dtype=args.dtype, opset=args.opset, revision=args.revision
    )
    for item in written:
        inputs = ", ".join(item.input_names)
        check = (
            f"max diff {item.parity.max_abs_diff:.1e}"
            if item.dtype == "fp32"
            else f"min cosine {item.parity.min_cosine:.5f}"
        )
        if item.fp32_layers:
            check += f" (embeddings and first {item.fp32_layers} layer(s) kept fp32)"
        print(f"{item.path}  ({inputs}) -> {item.output_name}  {item.dtype}, vs torch fp32: {check}")
    return 0
