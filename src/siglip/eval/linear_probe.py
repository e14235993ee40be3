"""Linear probe: multinomial logistic regression on frozen image features, in torch.

Features are the mean of the vision tower's last hidden states (what `SiglipForImageClassification` classifies),
standardised with the training set's mean and standard deviation. The fit is full-batch L-BFGS (strong-Wolfe line
search) on mean cross-entropy + `weight_decay` * ||W||^2 / 2; the weight decay is picked from a log grid on a
held-out split of the training data (fitted from the strongest to the weakest, each warm-started from the last),
then the probe is refitted on all of it. k-shot probes sample k training images per class per seed and pick
their weight decay on held-out training images outside the sample. `save_probe` folds the standardisation into
the classifier and writes a checkpoint that `from_pretrained` loads as `SiglipForImageClassification`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError
from .zero_shot import ClassificationMetrics, classification_metrics

WEIGHT_DECAYS = tuple(10.0**e for e in range(-6, 2))  # 1e-6 ... 10
DEFAULT_SHOTS = (1, 2, 4, 8, 16)
DEFAULT_SEEDS = (0, 1, 2)
SWEEP_FIT, SWEEP_HELD, SWEEP_ITERATIONS = 10_000, 5_000, 30  # the weight-decay sweep's sample and steps
SWEEP_PATIENCE = 2  # the sweep stops after this many values in a row below its best held-out accuracy
FINAL_ITERATIONS = 100
SMALL_FIT = 1 << 22  # features x classes below which a fit runs on one thread


@dataclass
class Probe:
    """A fitted probe: logits = ((x - mean) / std) @ weight.T + bias."""

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    weight_decay: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.float() - self.mean) / self.std) @ self.weight.t() + self.bias

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the same affine map on raw features: what the saved classifier holds."""
        weight = self.weight / self.std
        return weight, self.bias - weight @ self.mean


def fit_logistic(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (C, H), bias (C,)) minimising mean cross-entropy + weight_decay * ||weight||^2 / 2."""
    weight = (init[0].clone() if init else torch.zeros(num_classes, features.shape[1])).requires_grad_(True)
    bias = (init[1].clone() if init else torch.zeros(num_classes)).requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=10, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight.t() + bias, labels) + weight_decay / 2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad(), _threads_for(features.numel() * num_classes):
        optimizer.step(closure)
    return weight.detach(), bias.detach()


@contextmanager
def _threads_for(work: int) -> Iterator[None]:
    """One intra-op thread for small fits (k-shot, tiny data): their ops take microseconds, and waking a second
    thread costs more than it saves (on a loaded 2-core machine, 50x more: 7 s instead of 0.13 s for 24 images)."""
    threads = torch.get_num_threads()
    if work >= SMALL_FIT or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def standardizer(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = features.mean(dim=0)
    std = features.std(dim=0, unbiased=False).clamp_min(1e-6) if len(features) > 1 else torch.ones_like(mean)
    return mean, std


def held_out_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, held-out) indices: `fraction` of each class held out (none of a class with one image)."""
    generator = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = int(round(len(members) * fraction)) if len(members) > 1 else 0
        count = min(max(count, 1 if len(members) > 1 else 0), len(members) - 1)
        held.append(members[:count])
        fit.append(members[count:])
    return torch.cat(fit).sort().values, torch.cat(held).sort().values


def train_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    held_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    fraction: float = 0.2,
    seed: int = 0,
) -> Probe:
    """Pick the weight decay on held-out data (given, else `fraction` of `features` per class), refit on all.

    The sweep sees at most `SWEEP_FIT` fitting and `SWEEP_HELD` held-out images (a seeded sample) with
    `SWEEP_ITERATIONS` L-BFGS steps per value, warm-started, from the strongest value down; it stops once
    `SWEEP_PATIENCE` values in a row score below its best. The final fit starts from the chosen sweep weights."""
    features, labels = features.float(), torch.as_tensor(labels, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    if held_out is None:
        fit, held = held_out_split(labels, fraction, seed)
        held_x, held_y, fit_x, fit_y = features[held], labels[held], features[fit], labels[fit]
    else:
        held_x, held_y = held_out[0].float(), torch.as_tensor(held_out[1], dtype=torch.long)
        fit_x, fit_y = features, labels
    if len(fit_y) > SWEEP_FIT:
        keep = torch.randperm(len(fit_y), generator=generator)[:SWEEP_FIT]
        fit_x, fit_y = fit_x[keep], fit_y[keep]
    if len(held_y) > SWEEP_HELD:
        keep = torch.randperm(len(held_y), generator=generator)[:SWEEP_HELD]
        held_x, held_y = held_x[keep], held_y[keep]
    mean, std = standardizer(features)
    best, init = max(weight_decays), None
    if len(held_y) and len(weight_decays) > 1:
        fit_x, held_x = (fit_x - mean) / std, (held_x - mean) / std
        scores, weights = {}, {}
        for weight_decay in sorted(weight_decays, reverse=True):
            init = fit_logistic(fit_x, fit_y, num_classes, weight_decay, init, max_iter=SWEEP_ITERATIONS)
            weights[weight_decay] = init
            scores[weight_decay] = float(((held_x @ init[0].t() + init[1]).argmax(-1) == held_y).float().mean())
            trail = [scores[wd] for wd in sorted(scores)][:SWEEP_PATIENCE]  # the weakest values fitted so far
            if len(trail) == SWEEP_PATIENCE and max(trail) < max(scores.values()):
                break  # held-out accuracy fell for the last values: weaker ones only overfit more (and fit slowest)
        best = max(scores, key=lambda wd: (scores[wd], wd))  # ties: the stronger regularisation
        init = weights[best]
    weight, bias = fit_logistic((features - mean) / std, labels, num_classes, best, init, max_iter=FINAL_ITERATIONS)
    return Probe(weight, bias, mean, std, best)


def sample_shots(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """`shots` training indices per class (all of a class that has fewer), drawn with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(picked).sort().values


@dataclass
class LinearProbeResult:
    """The full-data probe's metrics and weight decay, and per k-shot the accuracy of each seed."""

    full: ClassificationMetrics
    probe: Probe
    k_shot: dict[int, list[float]] = field(default_factory=dict)  # k -> top-1 per seed

    def k_shot_summary(self) -> dict[int, tuple[float, float]]:
        """k -> (mean, standard deviation) of top-1 over seeds."""
        out = {}
        for k, values in self.k_shot.items():
            tensor = torch.tensor(values, dtype=torch.float64)
            out[k] = (float(tensor.mean()), float(tensor.std(unbiased=False)) if len(values) > 1 else 0.0)
        return out


def fit_probes(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    classnames: Sequence[str],
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
) -> LinearProbeResult:
    """Fit the probe on all training features and per (k, seed) on k-shot samples; metrics on the test set."""
    train_labels = torch.as_tensor(train_labels, dtype=torch.long)
    if not len(train_labels) or not len(test_labels):
        raise InputError("the linear probe needs training and test images (a train/test split by folder or column)")
    num_classes = len(classnames)
    probe = train_probe(train_features, train_labels, num_classes, weight_decays=weight_decays)
    full = classification_metrics(probe.logits(test_features), test_labels, classnames)
    result = LinearProbeResult(full, probe)
    test_labels = torch.as_tensor(test_labels, dtype=torch.long)
    for k in shots:
        if k < 1:
            raise InputError(f"k-shot counts must be >= 1, got {k}")
        for seed in seeds:
            picked = sample_shots(train_labels, k, seed)
            rest = torch.ones(len(train_labels), dtype=torch.bool)
            rest[picked] = False
            held = (train_features[rest], train_labels[rest]) if rest.any() else None
            k_probe = train_probe(
                train_features[picked], train_labels[picked], num_classes, weight_decays=weight_decays, held_out=held
            )
            accuracy = float((k_probe.logits(test_features).argmax(-1) == test_labels).double().mean())
            result.k_shot.setdefault(k, []).append(accuracy)
    return result


def save_probe(
    probe: Probe,
    classnames: Sequence[str],
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    revision: str | None = None,
) -> Path:
    """Write the probe as a `SiglipForImageClassification` (`Siglip2...`) checkpoint in `out`: the base model's
    weights in fp32 (its text tower too, so that `AutoModel` and every `siglip` command load the folder), the
    classifier with the standardisation folded in, `id2label` from `classnames`, and the model's processor."""
    from ..auto import IMAGE_CLASSIFICATION_CLASSES, import_class
    from ..encode import load_processor
    from ..runtime import load_model

    base = load_model(model, dtype="float32", device="cpu", revision=revision)
    config = copy.deepcopy(base.config)
    config.id2label = dict(enumerate(classnames))
    config.label2id = {name: index for index, name in enumerate(classnames)}
    classifier_class = import_class(IMAGE_CLASSIFICATION_CLASSES[config.model_type])
    with torch.device("meta"):
        classifier = classifier_class(config)
    weight, bias = probe.folded()
    state = {name: tensor for name, tensor in base.state_dict().items()}
    state["classifier.weight"], state["classifier.bias"] = weight.contiguous(), bias.contiguous()
    owned = {name: state[name] for name in classifier.state_dict()}
    classifier.load_state_dict(owned, strict=True, assign=True)
    out = Path(out)
    classifier.save_pretrained(out, state_dict=state)
    load_processor(str(model), revision=revision).save_pretrained(out)
    return out
