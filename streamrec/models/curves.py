"""Training curves: ``curves.csv`` and ``curves.png`` (matplotlib with the Agg backend)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_curves"]

logger = logging.getLogger(__name__)


def write_curves(history: Sequence[dict[str, float]], directory: str | Path) -> None:
    """Write per-epoch rows to ``directory/curves.csv`` and plot loss and validation NDCG."""
    if not history:
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    columns = list(history[0])
    with (directory / "curves.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [row["loss"] for row in history], marker=".")
    loss_axis.set(xlabel="epoch", ylabel="training loss", title="loss")
    for name in columns:
        if name.startswith("val_") and ("ndcg" in name or "hr" in name):
            metric_axis.plot(epochs, [row[name] for row in history], marker=".", label=name[4:])
    metric_axis.set(xlabel="epoch", title="validation (full ranking)")
    metric_axis.legend()
    figure.tight_layout()
    figure.savefig(directory / "curves.png", dpi=100)
    plt.close(figure)
