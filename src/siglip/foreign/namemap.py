"""Declarative weight-name maps: one table of rules per format, applied in both directions.

A rule pairs Hub names with another format's names. `{}` in a name stands for the layer index and expands over
the tower's layers. Several names on one side are concatenated along dim 0 in torch's (out, in) layout: the
reference's separate q/k/v projections against open_clip's packed `qkv`, or the MAP head's packed `in_proj`
against open_clip's `q` + `kv` (`parts=(1, 2)`: kv is twice q). `layout` says how the other format stores a
tensor relative to torch (see LAYOUTS); each layout is a pair of inverse functions, so one table serves both
`to_hub` and `from_hub`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from ..errors import CheckpointError

Tensor = torch.Tensor


@dataclass(frozen=True)
class Rule:
    hub: tuple[str, ...]  # Hub names; several = concatenated on dim 0 (equal parts)
    other: tuple[str, ...]  # the other format's names; several = concatenated on dim 0 (sized by `parts`)
    layout: str = "same"  # how the other format stores each tensor relative to torch (a key of LAYOUTS)
    tower: str | None = None  # "text" / "vision": whose layer count expands `{}` and whose heads reshape
    parts: tuple[int, ...] | None = None  # relative sizes of the `other` names (default: equal)


def rule(hub: str | tuple[str, ...], other: str | tuple[str, ...], layout: str = "same", **kw) -> Rule:
    return Rule(_names(hub), _names(other), layout, **kw)


def _names(names: str | tuple[str, ...]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


def pair(
    hub: str, other_weight: str, other_bias: str, layout: str = "same", bias_layout: str = "same", **kw
) -> list[Rule]:
    """The rules of one layer's `hub`.weight and `hub`.bias."""
    return [rule(f"{hub}.weight", other_weight, layout, **kw), rule(f"{hub}.bias", other_bias, bias_layout, **kw)]


# layout -> (other -> torch, torch -> other); `heads` is the tower's attention head count.
LAYOUTS: dict[str, tuple[Callable[[Tensor, int], Tensor], Callable[[Tensor, int], Tensor]]] = {
    "same": (lambda t, h: t, lambda t, h: t),
    # a leading batch axis of 1: (1, N, D) position tables against (N, D)
    "squeeze0": (lambda t, h: t.reshape(t.shape[1:]), lambda t, h: t.unsqueeze(0)),
    # a 0-d scalar (open_clip's logit_scale) against shape (1,)
    "scalar": (lambda t, h: t.reshape(1), lambda t, h: t.reshape(())),
    # a square grid of positions (n, n, D) against (n * n, D)
    "grid": (
        lambda t, h: t.reshape(-1, t.shape[-1]),
        lambda t, h: t.reshape(round(t.shape[0] ** 0.5), -1, t.shape[-1]),
    ),
    # a batch axis of 1 and a square grid (1, n, n, D) (timm's NaFlexVit) against (n * n, D)
    "batch_grid": (
        lambda t, h: t.reshape(-1, t.shape[-1]),
        lambda t, h: t.reshape(1, round(t.shape[0] ** 0.5), -1, t.shape[-1]),
    ),
    # flax Dense kernel (in, out) against torch Linear (out, in)
    "dense": (lambda t, h: t.T, lambda t, h: t.T),
    # attention q/k/v kernel (in, heads, head_dim) against (heads * head_dim, in)
    "heads_in": (lambda t, h: t.reshape(t.shape[0], -1).T, lambda t, h: t.T.reshape(t.shape[1], h, -1)),
    # attention q/k/v bias (heads, head_dim) against (heads * head_dim,)
    "heads_bias": (lambda t, h: t.reshape(-1), lambda t, h: t.reshape(h, -1)),
    # attention output kernel (heads, head_dim, out) against (out, heads * head_dim)
    "heads_out": (lambda t, h: t.reshape(-1, t.shape[-1]).T, lambda t, h: t.T.reshape(h, -1, t.shape[0])),
    # flax Conv kernel HWIO (ph, pw, in, out) against torch OIHW (out, in, ph, pw)
    "conv_hwio": (lambda t, h: t.permute(3, 2, 0, 1), lambda t, h: t.permute(2, 3, 1, 0)),
}


@dataclass(frozen=True)
class Towers:
    """What expands a table: each tower's layer count and attention heads (from the config)."""

    layers: dict[str, int]
    heads: dict[str, int]


def expand(rules: Iterable[Rule], towers: Towers) -> list[tuple[Rule, tuple[str, ...], tuple[str, ...]]]:
    """Each rule with concrete names, once per layer where its names hold `{}`."""
    out = []
    for item in rules:
        templated = any("{}" in name for name in item.hub + item.other)
        if not templated:
            out.append((item, item.hub, item.other))
            continue
        for index in range(towers.layers[item.tower]):
            out.append((item, tuple(n.format(index) for n in item.hub), tuple(n.format(index) for n in item.other)))
    return out


def _split(tensor: Tensor, parts: tuple[int, ...], what: str) -> list[Tensor]:
    total = sum(parts)
    if tensor.shape[0] % total:
        raise CheckpointError(f"{what}: dim 0 ({tensor.shape[0]}) does not split into parts {parts}.")
    unit = tensor.shape[0] // total
    return list(torch.split(tensor, [unit * p for p in parts], dim=0))


def to_hub(
    rules: Iterable[Rule], towers: Towers, read: Callable[[str], Tensor], names: set[str], source: str
) -> dict[str, Tensor]:
    """Hub state dict from another format's tensors (`read(name)`); every name in `names` must be used."""
    state: dict[str, Tensor] = {}
    used: set[str] = set()
    for item, hub_names, other_names in expand(rules, towers):
        absent = [name for name in other_names if name not in names]
        if absent:
            raise CheckpointError(f"{source} has no tensor {absent[0]} (needed for {hub_names[0]}).")
        forward = LAYOUTS[item.layout][0]
        heads = towers.heads.get(item.tower or "", 1)
        try:
            joined = torch.cat([forward(read(name), heads) for name in other_names], dim=0)
        except RuntimeError as error:
            raise CheckpointError(f"{source}: {', '.join(other_names)} do not fit together ({error}).") from None
        for name, tensor in zip(hub_names, _split(joined, (1,) * len(hub_names), other_names[0])):
            state[name] = tensor.clone(memory_format=torch.contiguous_format)  # owns its storage
        used.update(other_names)
    unused = sorted(names - used)
    if unused:
        shown = ", ".join(unused[:10]) + (f", ... ({len(unused)} in all)" if len(unused) > 10 else "")
        raise CheckpointError(f"{source} holds tensors that no SigLIP parameter takes: {shown}.")
    return state


def from_hub(rules: Iterable[Rule], towers: Towers, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """The other format's tensors from a Hub state dict; every Hub tensor must be placed."""
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for item, hub_names, other_names in expand(rules, towers):
        absent = [name for name in hub_names if name not in state]
        if absent:
            raise CheckpointError(f"{source} has no tensor {absent[0]}.")
        backward = LAYOUTS[item.layout][1]
        heads = towers.heads.get(item.tower or "", 1)
        joined = torch.cat([state[name] for name in hub_names], dim=0)
        pieces = _split(joined, item.parts or (1,) * len(other_names), hub_names[0])
        for name, tensor in zip(other_names, pieces):
            out[name] = backward(tensor, heads).clone(memory_format=torch.contiguous_format)
        used.update(hub_names)
    unused = sorted(set(state) - used)
    if unused:
        raise CheckpointError(f"{source}: no place in the target format for {', '.join(unused[:10])}.")
    return out
