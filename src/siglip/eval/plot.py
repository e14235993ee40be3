"""Charts of an evaluation (matplotlib, the `[eval]` extra, imported only here): the headline metric against
images/s for classification runs, recall@k curves for retrieval runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DependencyError
from .run import EvalResult


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DependencyError("--plot needs matplotlib: pip install 'siglip[eval]'") from None
    return plt


def plot_results(results: Sequence[EvalResult], path: str | os.PathLike) -> Path:
    """Write a PNG (or any format matplotlib knows by suffix) of the runs to `path`."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    if results and results[0].task == "zeroshot_retrieval":
        for result in results:
            ks = result.details.get("ks", [])
            for direction, style, title in (
                ("image_retrieval", "-", "text -> image"),
                ("text_retrieval", "--", "image -> text"),
            ):
                values = [result.metrics[f"{direction}_recall@{k}"] * 100 for k in ks]
                axes.plot(ks, values, style, marker="o", label=f"{result.label}, {title}")
        axes.set_xscale("log")
        axes.minorticks_off()
        ticks = results[0].details.get("ks", [])
        axes.set_xticks(ticks, [str(k) for k in ticks])
        axes.set_xlabel("k")
        axes.set_ylabel("recall@k (%)")
    else:
        for result in results:
            speed = result.images_per_second or 0.0
            value = result.metrics[result.headline] * 100
            low, high = (v * 100 for v in result.intervals.get(result.headline, (value / 100, value / 100)))
            axes.errorbar(
                [speed], [value], yerr=[[value - low], [high - value]], fmt="o", capsize=4, label=result.label
            )
        axes.set_xlabel("images/s (image pass)")
        axes.set_ylabel(f"{results[0].headline if results else ''} (%)")
    if results:
        axes.set_title(f"{results[0].dataset}: {results[0].task}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
