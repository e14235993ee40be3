"""The training loop: build (or load) the model, stream data, optimise the sigmoid loss, checkpoint, evaluate.

    from siglip.train import TrainConfig, train
    summary = train(TrainConfig(output_dir="out", config="config.json", tokenizer="spiece.model", data="synthetic"))

Run plainly for one process, or under `torchrun --nproc_per_node N -m siglip.train ...` for DDP / FSDP2. The
result in `output_dir` is a normal checkpoint (config.json, model.safetensors, tokenizer and image-processor
files) that `from_pretrained`, the pipeline and every CLI command load.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import SiglipConfig
from ..encode import text_length
from ..errors import InputError
from ..loss import distributed_sigmoid_loss, sigmoid_loss
from ..modeling.model import l2_normalize
from ..runtime import DTYPES
from . import checkpoint as ckpt
from . import distributed
from .config import TrainConfig
from .data import Collator, build_loader, open_source
from .evaluate import EvalSet, build_eval_set, evaluate


class ContrastiveForward(nn.Module):
    """What one training forward computes: normalised image and text embeddings plus the logit parameters.

    Wrapping this (not the SiglipModel) in DDP/FSDP lets the loss, which may itself communicate across ranks,
    run outside the wrapper while every parameter still takes part in the wrapped forward. With
    `lock_image` (LiT) the image tower runs without gradients.
    """

    def __init__(self, model: nn.Module, lock_image: bool = False) -> None:
        super().__init__()
        self.model, self.lock_image = model, lock_image

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad() if self.lock_image else nullcontext():
            image = self.model.get_image_features(pixel_values=pixel_values)
        text = self.model.get_text_features(input_ids=input_ids)
        # Normalise in fp32 even under bf16 autocast: the loss is sensitive to the embeddings' norms.
        return l2_normalize(image.float()), l2_normalize(text.float()), self.model.logit_scale, self.model.logit_bias


def contrastive_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    distributed_run: bool,
    block_size: int | None,
) -> torch.Tensor:
    """The pairwise sigmoid loss; across ranks when distributed (every rank's texts serve as negatives).

    `distributed_sigmoid_loss` returns per-rank losses whose mean is the global-batch loss, with feature
    gradients W times the global ones: exactly what DDP's gradient averaging (and FSDP's) expects.
    """
    if distributed_run:
        return distributed_sigmoid_loss(image, text, scale, bias, block_size=block_size)
    return sigmoid_loss(image, text, scale, bias, block_size=block_size)


def build_model_and_processor(config: TrainConfig) -> tuple[nn.Module, Any]:
    """From scratch (config.json + spiece.model, logit scale/bias at the paper's values) or a checkpoint."""
    if config.model is not None:
        from ..runtime import load_model_and_processor

        model, processor = load_model_and_processor(config.model, dtype=torch.float32, device="cpu")
        return model, _ids_only(processor)
    from ..modeling.model import SiglipModel
    from ..processor import SiglipProcessor

    model_config = SiglipConfig.from_json_file(config.config)
    torch.manual_seed(config.seed)
    model = SiglipModel(model_config)
    with torch.no_grad():
        model.logit_scale.fill_(config.logit_scale_init)
        model.logit_bias.fill_(config.logit_bias_init)
        for layer in model.text_model.encoder.layers:  # sharper text attention at init (see TrainConfig)
            layer.self_attn.q_proj.weight.mul_(config.text_attention_init_scale)
            layer.self_attn.k_proj.weight.mul_(config.text_attention_init_scale)
    tokenizer = _load_tokenizer(config.tokenizer, model_config.text_config.max_position_embeddings)
    if len(tokenizer) > model_config.text_config.vocab_size:
        raise InputError(
            f"the tokenizer has {len(tokenizer)} tokens but the config's text vocab_size is "
            f"{model_config.text_config.vocab_size}; raise vocab_size in {config.config}."
        )
    side = model_config.vision_config.image_size
    from ..image.processing import SiglipImageProcessor

    return model, _ids_only(SiglipProcessor(SiglipImageProcessor(size={"height": side, "width": side}), tokenizer))


def _ids_only(processor: Any) -> Any:
    """The text tower trains on padded `input_ids` without an attention mask (as big_vision trained SigLIP); the
    saved tokenizer then returns no mask either, so the pipeline, the CLI and transformers feed the trained model
    exactly what it saw. (A mask changes the last-position pooling: the earlier 4000-step demo model scored 77 %
    colour x shape through the pipeline with one and 92 % without, on the same 200 images.)"""
    processor.tokenizer.model_input_names = ["input_ids"]
    return processor


def _load_tokenizer(path: str, max_length: int) -> Any:
    from ..text.tokenizer import SiglipTokenizer

    if Path(path).is_dir():
        from ..auto import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    return SiglipTokenizer(vocab_file=path, model_max_length=max_length)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay only on matrices (no biases, norms, logit scale/bias), decoupled from the lr."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 and "logit_" not in name else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)


def lr_multiplier(step: int, config: TrainConfig) -> float:
    """Linear warm-up to 1 over `warmup_steps`, then cosine decay to `min_lr_ratio` at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def set_train_mode(model: nn.Module, lock_image: bool) -> None:
    """Training mode everywhere, except a locked (LiT) image tower, which stays in eval mode."""
    model.train()
    if lock_image:
        model.vision_model.eval()


class Logger:
    """Rank 0 writes one JSON record per event to train_log.jsonl, and (unless quiet) a line to stdout."""

    def __init__(self, path: Path, enabled: bool, quiet: bool) -> None:
        self.path, self.enabled, self.quiet = path, enabled, quiet

    def log(self, record: dict[str, Any], bar: Any = None) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        if not self.quiet:
            line = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            (bar.write if bar is not None else print)(line)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one training job; returns a summary (steps, final loss, time, last evaluation metrics)."""
    config.check()
    # Process-wide switches this run changes; restored afterwards so that a library caller is left as it was.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if config.threads:
        torch.set_num_threads(config.threads)
    runtime = distributed.setup(config.device)
    try:
        return _train(config, runtime)
    finally:
        distributed.teardown(runtime)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(config: TrainConfig, runtime: distributed.Runtime) -> dict[str, Any]:
    output = Path(config.output_dir)
    if runtime.is_main:
        output.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed, config.deterministic)
    model, processor = build_model_and_processor(config)
    model.to(runtime.device)
    if config.lock_image:
        model.vision_model.requires_grad_(False)
    if config.grad_checkpointing:
        model.gradient_checkpointing_enable()
    set_train_mode(model, config.lock_image)
    bf16 = DTYPES.get(config.precision) == "bfloat16"
    parallel = config.parallel if runtime.distributed else "none"
    wrapped = distributed.wrap(ContrastiveForward(model, config.lock_image), runtime, config.parallel, mixed_bf16=bf16)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, config))

    step, batches_seen = 0, 0
    if runtime.is_main:
        ckpt.remove_stale_temporaries(output / "checkpoints")  # left by a kill during a checkpoint write
    resume_path = ckpt.find_resume_path(config.resume, output) if config.resume else None
    if resume_path is not None:
        state = ckpt.load_checkpoint(resume_path)
        distributed.load_full_state_dicts(wrapped, model, optimizer, state["model"], state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, batches_seen = state["step"], state["batches_seen"]
        rng_states = state["rng"]
        ckpt.restore_rng_state(rng_states[runtime.rank % len(rng_states)])

    image_size = model.config.vision_config.image_size
    source = open_source(config.data, config.image_root, config.seed, image_size)
    max_length = text_length(model.config)
    loader = build_loader(
        source,
        Collator(processor, max_length),
        config.batch_size,
        rank=runtime.rank,
        world_size=runtime.world_size,
        seed=config.seed,
        start_batch=batches_seen,
        num_workers=config.num_workers,
    )
    evaluating_ranks = runtime.distributed and parallel == "fsdp"  # sharded weights: every rank must take part
    eval_set: EvalSet | None = None
    if config.eval_data and (runtime.is_main or evaluating_ranks):
        eval_source = open_source(config.eval_data, config.image_root, config.seed + 1, image_size)
        eval_set = build_eval_set(eval_source, processor, config.eval_samples)

    logger = Logger(output / "train_log.jsonl", runtime.is_main, config.quiet)
    if step == 0 and runtime.is_main:
        (output / "train_log.jsonl").unlink(missing_ok=True)
    logger.log(
        {
            "event": "start",
            "resumed_from_step": step,
            "world_size": runtime.world_size,
            "parameters": model.num_parameters(),
            "trainable": model.num_parameters(only_trainable=True),
        }
    )
    autocast = (
        torch.autocast(runtime.device.type, dtype=torch.bfloat16) if bf16 and parallel != "fsdp" else nullcontext()
    )
    last_stop = min(config.steps, config.stop_at or config.steps)
    metrics: dict[str, float] = {}
    loss_value, started, window_start, window_samples = float("nan"), time.time(), time.time(), 0
    from tqdm.auto import tqdm

    bar = tqdm(
        total=last_stop,
        initial=step,
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=True if (config.quiet or not runtime.is_main) else None,
    )
    batches = iter(loader)
    while step < last_stop:
        total_loss = 0.0
        for micro in range(config.grad_accum):
            batch = {key: value.to(runtime.device) for key, value in next(batches).items()}
            batches_seen += 1
            sync = micro == config.grad_accum - 1 or parallel != "ddp"
            with nullcontext() if sync else wrapped.no_sync(), autocast:
                image, text, scale, bias = wrapped(batch["pixel_values"], batch["input_ids"])
            loss = contrastive_loss(image, text, scale, bias, runtime.distributed, config.loss_block_size)
            (loss / config.grad_accum).backward()
            total_loss += loss.item() / config.grad_accum
            window_samples += batch["input_ids"].shape[0] * runtime.world_size
        if step < config.lock_text_steps:  # the text tower keeps its initial weights (see TrainConfig)
            for parameter in model.text_model.parameters():
                parameter.grad = None
        if config.clip_grad > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad).item()
        else:
            grad_norm = float("nan")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        loss_value = distributed.mean_across_ranks(total_loss, runtime)
        if step % config.log_every == 0 or step == last_stop:
            now = time.time()
            logger.log(
                {
                    "step": step,
                    "loss": loss_value,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                    "samples_per_s": window_samples / max(now - window_start, 1e-9),
                    "logit_scale": _scalar(model.logit_scale).exp().item(),
                    "logit_bias": _scalar(model.logit_bias).item(),
                    "elapsed_s": now - started,
                },
                bar,
            )
            window_start, window_samples = now, 0
        if eval_set is not None and config.eval_every and step % config.eval_every == 0 and step < config.steps:
            metrics = _evaluate(model, eval_set, processor, bf16, config.lock_image)
            logger.log({"step": step, "eval": metrics}, bar)
        if (config.save_every and step % config.save_every == 0) or step == last_stop:
            save_checkpoint(output, wrapped, model, optimizer, scheduler, step, batches_seen, config, runtime)
    bar.close()

    if step >= config.steps:
        if eval_set is not None:
            metrics = _evaluate(model, eval_set, processor, bf16, config.lock_image)
            logger.log({"step": step, "eval": metrics}, bar)
        save_final(output, wrapped, model, optimizer, processor, parallel, runtime)
    logger.log({"event": "end", "step": step, "loss": loss_value, "time_s": time.time() - started})
    return {"step": step, "loss": loss_value, "time_s": time.time() - started, "eval": metrics}


def _scalar(parameter: torch.Tensor) -> torch.Tensor:
    """A logit parameter as a local tensor (FSDP holds it as a sharded DTensor)."""
    tensor = parameter.detach()
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _evaluate(model: nn.Module, eval_set: EvalSet, processor: Any, bf16: bool, lock_image: bool) -> dict[str, float]:
    metrics = evaluate(model, eval_set, processor, autocast_dtype=torch.bfloat16 if bf16 else None)
    set_train_mode(model, lock_image)
    return metrics


def save_checkpoint(
    output: Path,
    wrapped: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    batches_seen: int,
    config: TrainConfig,
    runtime: distributed.Runtime,
) -> None:
    """Write output/checkpoints/last.pt atomically (rank 0), with every rank's RNG state."""
    model_state, optimizer_state = distributed.full_state_dicts(wrapped, model, optimizer, config.parallel)
    rng = distributed.all_gather_objects(ckpt.capture_rng_state(), runtime)
    if runtime.is_main:
        payload = {
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": scheduler.state_dict(),
            "step": step,
            "batches_seen": batches_seen,
            "rng": rng,
            "world_size": runtime.world_size,
            "config": json.loads(json.dumps(config.to_dict())),
        }
        ckpt.atomic_save(payload, output / "checkpoints" / ckpt.LAST)
    distributed.barrier(runtime)


def save_final(
    output: Path,
    wrapped: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    processor: Any,
    parallel: str,
    runtime: distributed.Runtime,
) -> None:
    """save_pretrained (config.json + model.safetensors) and the processor files into `output`."""
    state = distributed.full_state_dicts(wrapped, model, optimizer, parallel)[0] if parallel == "fsdp" else None
    if runtime.is_main:
        model.save_pretrained(output, state_dict=state)
        processor.save_pretrained(output)
    distributed.barrier(runtime)
