"""`TrainConfig`: every training option, in one dataclass that also defines the command-line flags.

Each field becomes `--field-name` (booleans become switches); the help text is the field's `help` metadata.
The Python API (`siglip.train.train(TrainConfig(...))`) and the CLI therefore cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError


def option(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class TrainConfig:
    """Options of one training run (see `siglip train --help`)."""

    # ---- what to train -------------------------------------------------------------------------------------
    output_dir: str = option(None, "where the model, checkpoints/ and train_log.jsonl go (required)")
    model: str | None = option(None, "Hub id or local checkpoint to fine-tune (loads its processor too)")
    config: str | None = option(None, "config.json of a model to train from scratch (instead of --model)")
    tokenizer: str | None = option(None, "spiece.model (or a folder with tokenizer files) for a from-scratch model")
    lock_image: bool = option(False, "LiT: freeze the image tower (eval mode, no gradients)")
    logit_scale_init: float = option(math.log(10.0), "initial log logit scale, from scratch (paper: log 10)")
    logit_bias_init: float = option(-10.0, "initial logit bias, from scratch (paper: -10)")
    text_attention_init_scale: float = option(
        1.0, "from scratch: multiply the text tower's query/key weights by this at init (sharper attention)"
    )
    lock_text_steps: int = option(
        0, "keep the text tower at its initial weights for the first N steps (small-batch collapse: docs/training.md)"
    )
    # ---- data ----------------------------------------------------------------------------------------------
    data: str = option(
        None, "captions .csv/.jsonl (or its folder), tar shards (dir, glob, a-{000..009}.tar) or 'synthetic'"
    )
    image_root: str | None = option(None, "folder that image paths in a caption file are relative to")
    eval_data: str | None = option(None, "held-out data for the evaluation hook (same forms; 'synthetic:eval')")
    eval_samples: int = option(512, "evaluation images")
    eval_every: int = option(0, "evaluate every N steps (0: only at the end when --eval-data is given)")
    num_workers: int = option(0, "DataLoader worker processes per rank")
    # ---- optimisation --------------------------------------------------------------------------------------
    steps: int = option(1000, "optimizer steps")
    batch_size: int = option(64, "micro-batch size per rank (the loss sees negatives within it)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr: float = option(1e-3, "peak learning rate")
    min_lr_ratio: float = option(0.0, "final learning rate as a fraction of --lr (cosine floor)")
    warmup_steps: int = option(100, "linear warm-up steps")
    weight_decay: float = option(1e-4, "decoupled weight decay (AdamW); not applied to biases, norms, logit params")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.95, "AdamW beta2")
    eps: float = option(1e-8, "AdamW epsilon")
    clip_grad: float = option(1.0, "clip the global gradient norm to this (0: off)")
    precision: str = option(
        "fp32",
        "fp32, or bf16 autocast (fast on CPUs with AMX and on recent GPUs); --precision is the old name",
        choices=("fp32", "bf16"),  # runtime.DTYPES names; the Python API takes their long names too
        flags=("--dtype", "--precision"),  # --dtype as in every other command
    )
    grad_checkpointing: bool = option(False, "recompute encoder layers in backward (less memory, ~30%% slower)")
    loss_block_size: int | None = option(None, "compute the sigmoid loss in blocks of this many rows (memory-bounded)")
    # ---- runtime -------------------------------------------------------------------------------------------
    parallel: str = option("ddp", "under torchrun: ddp (replicate) or fsdp (FSDP2 sharding)", choices=("ddp", "fsdp"))
    device: str = option("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    seed: int = option(0, "seed of weights, data order and RNG streams")
    deterministic: bool = option(False, "deterministic kernels (bit-exact resume; slower)")
    threads: int | None = option(None, "torch intra-op threads per process (default: torch's)")
    # ---- checkpoints and logs ------------------------------------------------------------------------------
    save_every: int = option(500, "write checkpoints/last.pt every N steps (0: only at the end)")
    resume: str | None = option(None, "continue from a checkpoint file/folder, or 'auto' (the output dir's last one)")
    stop_at: int | None = option(
        None, "stop after this step (checkpoint written, no final model): a planned interruption"
    )
    log_every: int = option(10, "log a line every N steps")
    quiet: bool = option(False, "no progress bar and no stdout log lines (the JSONL log is still written)")

    def check(self) -> TrainConfig:
        """Raise `InputError` for inconsistent options; returns self."""
        if not self.output_dir:
            raise InputError("--output-dir is required.")
        if not self.data:
            raise InputError("--data is required (a caption file, tar shards or 'synthetic').")
        if (self.model is None) == (self.config is None):
            raise InputError("give exactly one of --model (fine-tune) or --config (train from scratch).")
        if self.config is not None and self.tokenizer is None:
            raise InputError("training from scratch (--config) needs --tokenizer (a SentencePiece spiece.model).")
        for option in dataclasses.fields(self):  # nan or inf in any float option (--lr nan) is refused first
            value = getattr(self, option.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise InputError(f"--{option.name.replace('_', '-')} must be a finite number, got {value}.")
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}.")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise InputError("--warmup-steps must be >= 0 and --lr > 0.")
        if self.lock_text_steps < 0 or self.text_attention_init_scale <= 0:
            raise InputError("--lock-text-steps must be >= 0 and --text-attention-init-scale > 0.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}.")
        if self.num_workers < 0:
            raise InputError(f"--num-workers must be >= 0 (0: load data in the main process), got {self.num_workers}.")
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise InputError(f"--output-dir {self.output_dir!r} is a file, not a folder.")
        _check_device(self.device)
        return self

    def notes(self) -> list[str]:
        """Legal but probably unintended settings, worth a warning before a run starts."""
        notes = []
        if self.warmup_steps >= self.steps:
            notes.append(
                f"--warmup-steps {self.warmup_steps} >= --steps {self.steps}: the learning rate never reaches "
                f"--lr {self.lr:g} (it is still warming up when the run ends)"
            )
        return notes

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one flag per field to `parser`."""
        for item in dataclasses.fields(cls):
            flag = "--" + item.name.replace("_", "-")
            kwargs = {key: value for key, value in item.metadata.items()}
            flags = kwargs.pop("flags", (flag,))
            if item.type in ("bool", bool):
                parser.add_argument(*flags, action="store_true", dest=item.name, **kwargs)
                continue
            kind = _argument_type(str(item.type))
            parser.add_argument(*flags, type=kind, default=item.default, dest=item.name, **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        return cls(**{item.name: getattr(args, item.name) for item in dataclasses.fields(cls)}).check()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_device(device: str) -> None:
    """`InputError` for a device that is not auto/cpu/cuda/cuda:N, or CUDA on a machine without it."""
    kind, _, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}.")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"--device {device} was asked for, but CUDA is not available on this machine.")
        if index and int(index) >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices.")


def _argument_type(annotation: str) -> type:
    for name, kind in (("int", int), ("float", float)):
        if annotation.startswith(name):
            return kind
    return str
