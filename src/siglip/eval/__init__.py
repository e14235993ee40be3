"""Evaluation of models and precisions on the user's own data: zero-shot classification, image-text retrieval and
linear probes, with confidence intervals, comparisons, CLIP_benchmark-style JSON and charts (`siglip eval`).

    from siglip.eval import ModelSpec, evaluate, format_table, read_dataset
    data = read_dataset("shapes/")                      # DIR/CLASS/*.png (or DIR/train|test/CLASS/...)
    results = evaluate("zero-shot", data, [ModelSpec("models/siglip-demo-shapes")])
    print(format_table(results))

`datasets` reads the formats, `cache` embeds images once (resumable, on the bulk machinery), `zero_shot`,
`retrieval` and `linear_probe` compute the metrics, `stats` their intervals and comparisons, `report` the table
and JSON, `plot` the charts (matplotlib, imported only there).
"""

from .cache import ImageFeatures, ModelSpec, default_cache_dir, image_features
from .datasets import EvalData, read_dataset
from .linear_probe import Probe, fit_probes, save_probe, train_probe
from .report import comparisons, format_table, to_json, write_json
from .retrieval import RetrievalMetrics, retrieval_metrics
from .run import TASKS, EvalResult, evaluate
from .stats import Comparison, bootstrap_ci, compare, mcnemar
from .zero_shot import ClassificationMetrics, class_embeddings, classification_metrics

__all__ = [
    "TASKS",
    "ClassificationMetrics",
    "Comparison",
    "EvalData",
    "EvalResult",
    "ImageFeatures",
    "ModelSpec",
    "Probe",
    "RetrievalMetrics",
    "bootstrap_ci",
    "class_embeddings",
    "classification_metrics",
    "compare",
    "comparisons",
    "default_cache_dir",
    "evaluate",
    "format_table",
    "image_features",
    "fit_probes",
    "mcnemar",
    "read_dataset",
    "retrieval_metrics",
    "save_probe",
    "to_json",
    "train_probe",
    "write_json",
]


def plot_results(*args, **kwargs):
    """`plot.plot_results` (imports matplotlib: the `[eval]` extra)."""
    from .plot import plot_results as plot

    return plot(*args, **kwargs)
