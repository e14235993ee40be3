"""`from_pretrained` / `save_pretrained` and the other generic model methods of the reference's API.

Loading builds the model on the meta device (no memory, no init work), then assigns each checkpoint tensor
to its parameter as it is read: weights are never held twice. Loading is strict: missing, unexpected or
mis-shaped keys raise `CheckpointError` listing them. The one exception is a head the class adds on top of a
checkpoint that lacks it (a classifier over a SiglipModel checkpoint): it is initialised, with a warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from ..config import CONFIG_NAME, PretrainedConfig, read_config_dict
from ..config_validation import config_file
from ..errors import CheckpointError, ConfigError, InputError
from ..foreign import open_foreign
from ..hub import HubOptions, resolve_file
from ..kernels.switches import KernelSwitches
from ..quantization.hooks import LoadSteps, Quantizable
from ..weights import (
    align_keys,
    find_weight_files,
    integer_dtypes,
    iter_checkpoint_tensors,
    read_checkpoint_keys,
    save_safetensors,
)
from .layers import SiglipAttention, SiglipEncoder, check_attn_implementation

ModelT = TypeVar("ModelT", bound="SiglipPreTrainedModel")

# Top-level names of every part a SigLIP-family checkpoint can hold.
ALL_PARTS = ("text_model.", "vision_model.", "logit_scale", "logit_bias", "classifier.")


def resolve_dtype(dtype: Any, config: PretrainedConfig | None = None) -> torch.dtype | None:
    """torch dtype, its name ("bfloat16", "torch.float16"), "auto" or None -> a torch dtype (None = as stored)."""
    if dtype is None or dtype == "auto":
        dtype = config.dtype if config is not None and config.dtype else None
        if dtype is None:
            return None
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise InputError(f"dtype {dtype!r} is not a floating-point torch dtype (e.g. torch.bfloat16 or 'auto').")
    return resolved


def resolve_device(device: Any) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; anything torch.device accepts otherwise."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, dict):
        raise InputError("device_map as a dict is not supported; pass one device such as 'cuda', 'cpu' or 'auto'.")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"device {device!r} is not a valid torch device: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was requested but CUDA is not available on this machine.")
    return resolved


class SiglipPreTrainedModel(Quantizable, KernelSwitches, nn.Module):
    """Base of every model class: config handling, weight init, Hub I/O, attention and checkpointing switches.

    The methods that choose how the layers run on this machine come from the mixins it inherits, which the
    tiers below define.
    """

    config_class: ClassVar[type[PretrainedConfig]]
    # How a composite checkpoint names this model's weights ("" when the class is itself the composite).
    checkpoint_prefix: ClassVar[str] = ""
    # Parts that a checkpoint may lack for this class; they are initialised with a warning.
    optional_parts: ClassVar[tuple[str, ...]] = ()
    main_input_name: ClassVar[str] = "pixel_values"

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}."
            )
        self.config = config

    def post_init(self) -> None:
        """Initialise weights the way the reference does, then apply the configured attention kernel.

        Skipped on the meta device: `from_pretrained` builds there and assigns the checkpoint's tensors.
        """
        if not any(p.is_meta for p in self.parameters()):
            self.apply(self._init_weights)
        self.set_attn_implementation(self.config.attn_implementation)

    def _init_weights(self, module: nn.Module) -> None:
        """Reference-style initialisation (lecun-normal linears, xavier attention/MLP); towers extend it."""
        from .init import init_module

        init_module(module)

    def resolve_output_flags(
        self, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
    ) -> tuple[bool, bool, bool]:
        """Forward arguments left as None take the config's defaults, as in the reference."""
        config = self.config
        return (
            config.output_attentions if output_attentions is None else output_attentions,
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.return_dict if return_dict is None else return_dict,
        )

    # ---- switches ----------------------------------------------------------------------------------
    def set_attn_implementation(self, implementation: str | None) -> None:
        """Choose "sdpa" (default), "eager" or "flash_attention_2" for every attention layer."""
        implementation = check_attn_implementation(implementation)
        self.config.attn_implementation = implementation
        for sub_config in (
            getattr(self.config, "text_config", None),
            getattr(self.config, "vision_config", None),
        ):
            if sub_config is not None:
                sub_config.attn_implementation = implementation
        for module in self.modules():
            if isinstance(module, SiglipAttention):
                module.implementation = implementation

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each encoder layer in backward to save activation memory (training only)."""
        for module in self.modules():
            if isinstance(module, SiglipEncoder):
                module.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if isinstance(module, SiglipEncoder):
                module.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.parameters() if p.is_floating_point()).dtype

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    # ---- loading -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls: type[ModelT],
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        config: PretrainedConfig | None = None,
        dtype: Any = "auto",
        torch_dtype: Any = None,
        device: Any = None,
        device_map: Any = None,
        attn_implementation: str | None = None,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> ModelT:
        """Load a model from a local folder or a Hub id (`revision`, `cache_dir`, `local_files_only`, `token`).

        `dtype` (alias `torch_dtype`): "auto" keeps the checkpoint's dtype, or any floating torch dtype.
        `device` (alias `device_map`): "cpu", "cuda", "cuda:1", "auto". `allow_pickle=True` permits a
        `pytorch_model.bin` checkpoint, read with `torch.load(weights_only=True)`. Remaining keyword
        arguments override config fields, as in the reference.
        """
        steps = LoadSteps.pop(kwargs)  # keyword arguments that change the layers loaded, not the config
        options = HubOptions.from_kwargs(kwargs)
        source = str(pretrained_model_name_or_path)
        # An open_clip folder or big_vision .npz (siglip/foreign): its config and weights in the Hub's terms.
        foreign = open_foreign(
            pretrained_model_name_or_path, options, allow_pickle=allow_pickle, variant=kwargs.pop("variant", None)
        )
        if config is None and foreign is not None:
            config = cls.config_class.from_dict(cls.config_class.select_from(foreign.config, source), **kwargs)
            kwargs = {}
        if config is None:
            config_path = resolve_file(pretrained_model_name_or_path, CONFIG_NAME, options)
            with config_file(config_path):
                config_dict = read_config_dict(config_path)
                config = cls.config_class.from_dict(cls.config_class.select_from(config_dict, source), **kwargs)
        elif kwargs:
            raise InputError(f"unexpected keyword arguments {sorted(kwargs)} (config fields go in the config).")
        if attn_implementation is not None:
            config.attn_implementation = attn_implementation
        steps.read_config(config, source)
        target_device = resolve_device(steps.device(device_map if device is None else device))
        steps.check_device(target_device)  # before anything is read
        if foreign is not None:
            converted = foreign.weights()
            checkpoint_keys = {name: (tuple(t.shape), str(t.dtype)) for name, t in converted.items()}
            tensors = lambda: iter(converted.items())  # noqa: E731
        else:
            files = find_weight_files(pretrained_model_name_or_path, options, allow_pickle)
            checkpoint_keys = read_checkpoint_keys(files)
            tensors = lambda: iter_checkpoint_tensors(files, target_device)  # noqa: E731
        target_dtype = resolve_dtype(torch_dtype if torch_dtype is not None else dtype, config)
        if target_dtype is None:
            target_dtype = _stored_float_dtype(checkpoint_keys)

        # Normal tensors even when called inside torch.inference_mode(): inference tensors could never be used
        # with autograd later and carry no version counters (which the inference caches read).
        with torch.inference_mode(False):
            with torch.device("meta"):
                model = cls(config)
            keep_dtype = steps.build(model)  # tensors read in their stored dtype
            model_shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
            alignment = align_keys(
                checkpoint_keys,
                model_shapes,
                cls.checkpoint_prefix,
                _foreign_parts(cls, model_shapes),
                integer_dtypes(model.state_dict()),
            )
            newly_initialized = [k for k in alignment.missing if k.startswith(cls.optional_parts)]
            missing = [k for k in alignment.missing if k not in newly_initialized]
            if missing or alignment.unexpected or alignment.mismatched:
                raise CheckpointError(_describe_mismatch(source, cls.__name__, missing, alignment))

            state = {}
            for name, tensor in tensors():
                if name in alignment.mapping:
                    if tensor.is_floating_point() and alignment.mapping[name] not in keep_dtype:
                        tensor = tensor.to(target_dtype)
                    state[alignment.mapping[name]] = tensor.to(target_device)
            model.load_state_dict(state, strict=False, assign=True)
            del state
            if newly_initialized:
                model._materialize(newly_initialized, target_device, target_dtype)
                warnings.warn(
                    f"Some weights of {cls.__name__} were not in the checkpoint {source} and are newly initialized: "
                    f"{newly_initialized}. Train the model on a downstream task before using its predictions.",
                    stacklevel=2,
                )
        model.config.dtype = str(target_dtype).removeprefix("torch.")
        model.set_attn_implementation(config.attn_implementation)
        steps.finish(model)
        return model.eval()

    def _materialize(self, names: list[str], device: torch.device, dtype: torch.dtype) -> None:
        """Allocate and initialise the modules owning `names`, which are still on the meta device."""
        owners = {name.rsplit(".", 1)[0] for name in names}
        for owner in sorted(owners):
            module = self.get_submodule(owner)
            module.to_empty(device=device)
            module.apply(self._init_weights)
            module.to(dtype)

    # ---- saving ------------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        max_shard_size: int | str = "5GB",
        safe_serialization: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Write config.json and model.safetensors (sharded with an index past `max_shard_size`)."""
        if not safe_serialization:
            raise InputError("siglip writes safetensors only; pickle checkpoints are not produced.")
        directory = Path(save_directory)
        if directory.is_file():
            raise InputError(f"{directory} is a file; save_pretrained needs a directory.")
        directory.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [type(self).__name__]
        self.config.dtype = str(self.dtype).removeprefix("torch.")
        self.config.save_pretrained(directory)
        save_safetensors(state_dict if state_dict is not None else self.state_dict(), directory, max_shard_size)


def _foreign_parts(cls: type[SiglipPreTrainedModel], model_shapes: dict) -> tuple[str, ...]:
    """Checkpoint parts that belong to a larger model than `cls` (skipped rather than unexpected)."""
    owned = {part for part in ALL_PARTS if any(name.startswith(part) for name in model_shapes)}
    return tuple(part for part in ALL_PARTS if part not in owned and part != cls.checkpoint_prefix)


def _stored_float_dtype(checkpoint_keys: dict[str, tuple[tuple[int, ...], str]]) -> torch.dtype:
    names = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
    for _, dtype_name in checkpoint_keys.values():
        dtype = names.get(dtype_name) or getattr(torch, dtype_name.removeprefix("torch."), None)
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            return dtype
    return torch.float32


def _describe_mismatch(source: str, class_name: str, missing: list[str], alignment: Any) -> str:
    parts = [f"the checkpoint {source} does not fit {class_name}:"]
    for title, names in (
        ("missing", missing),
        ("unexpected", alignment.unexpected),
        ("wrong shape", alignment.mismatched),
    ):
        if names:
            shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
            parts.append(f"{title}: {shown}")
    parts.append("Check that config.json matches the weights (model_type, sizes) and that the files are complete.")
    return "\n".join(parts)
