"""``streamrec models ...``: train, evaluate and manage the model registry.

Mounted by the main CLI; usable alone with ``python -m streamrec.models.cli``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streamrec.config import get_settings
from streamrec.data.loaders import LogFormat, load_dataset
from streamrec.data.sequences import REPEATS, Vocabulary, build_sequences
from streamrec.errors import DataError, ModelError, StreamrecError
from streamrec.log_options import ColumnsOption, NamesOption, SepOption, log_format
from streamrec.models.checkpoint import Checkpoint, load_checkpoint
from streamrec.models.evaluate import evaluate_model
from streamrec.models.registry import ModelRegistry
from streamrec.models.train import TrainConfig, train

__all__ = ["app"]

app = typer.Typer(help="Next-item models: train, evaluate, registry.", no_args_is_help=True)
registry_app = typer.Typer(help="Versioned models: list, promote, rollback.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
console = Console()

RegistryOption = Annotated[
    Path | None,
    typer.Option("--registry", help="Registry directory (default: <data dir>/models)."),
]


def _registry(path: Path | None) -> ModelRegistry:
    return ModelRegistry(path or get_settings().data_path / "models")


def _fail(exc: StreamrecError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=1)


@app.command("train")
def train_command(
    model: Annotated[str, typer.Option(help="sasrec or gru4rec.")] = "sasrec",
    dataset: Annotated[str, typer.Option(help="ml-1m or a path to an interaction log.")] = "ml-1m",
    epochs: Annotated[int, typer.Option(min=1)] = 200,
    time_budget: Annotated[
        float | None, typer.Option(help="Training time limit, seconds (> 0; default: none).")
    ] = None,
    seed: int = 42,
    loss: Annotated[str, typer.Option(help="ce, gbce or bpr-max.")] = "ce",
    max_users: Annotated[
        int | None,
        typer.Option(min=1, help="Only N users (the first in user-id order), after filtering."),
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads.")] = None,
    lr: Annotated[float | None, typer.Option(help="> 0. Default: the model's recipe.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Default: the recipe's (64).")
    ] = None,
    lr_schedule: Annotated[
        str | None, typer.Option(help="constant, linear or plateau (default: plateau).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Checkpoint directory (default: <data dir>/checkpoints/<model>)."),
    ] = None,
    registry: RegistryOption = None,
    promote: Annotated[bool, typer.Option(help="Promote the registered version.")] = False,
    min_item_events: Annotated[
        int, typer.Option(min=1, help="Drop items with fewer interactions (first).")
    ] = 5,
    min_user_events: Annotated[
        int, typer.Option(min=3, help="Then drop users with fewer (leave-one-out needs 3).")
    ] = 5,
    repeats: Annotated[
        str,
        typer.Option(
            help="keep, or first: keep a user's first interaction with an item only (serving "
            "never shows an item already in the history)."
        ),
    ] = "keep",
    columns: ColumnsOption = None,
    sep: SepOption = None,
    names: NamesOption = None,
) -> None:
    """Train a model, write a checkpoint, optionally register and promote it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if model not in ("sasrec", "gru4rec"):
        raise typer.BadParameter("--model must be sasrec or gru4rec")
    if repeats not in REPEATS:
        raise typer.BadParameter(f"--repeats must be one of {', '.join(REPEATS)}")
    if time_budget is not None and not time_budget > 0:
        raise typer.BadParameter("--time-budget must be > 0 seconds (leave it out for none)")
    if lr is not None and not lr > 0:
        raise typer.BadParameter("--lr must be > 0")
    chosen = {"lr": lr, "batch_size": batch_size, "lr_schedule": lr_schedule}
    config = TrainConfig.recipe(
        model,  # type: ignore[arg-type]
        # a log's absolute path: `evaluate` finds it from any directory
        dataset=str(Path(dataset).resolve()) if Path(dataset).is_file() else dataset,
        log_format=log_format(columns, sep, names).to_dict(),
        epochs=epochs,
        time_budget_s=time_budget,
        seed=seed,
        max_users=max_users,
        num_threads=threads,
        model_params={"loss": loss},
        min_item_interactions=min_item_events,
        min_user_interactions=min_user_events,
        repeats=repeats,
        **{key: value for key, value in chosen.items() if value is not None},
    )
    out = out or get_settings().data_path / "checkpoints" / model
    try:
        result = train(config, out_dir=out)
        console.print(
            f"test {json.dumps(result.test.metrics)} "
            f"({result.train_seconds:.0f}s, best epoch {result.best_epoch}) "
            f"-> {Path(out).resolve()}"
        )
        if registry is not None or promote:
            models = _registry(registry)
            version = models.register(out)
            console.print(f"registered {version} in {models.root.resolve()}")
            if promote:
                models.promote(version)
                console.print(f"promoted {version}")
    except StreamrecError as exc:
        raise _fail(exc) from exc


@app.command("evaluate")
def evaluate_command(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint directory.")] = None,
    version: Annotated[str | None, typer.Option(help="Registry version (default current).")] = None,
    registry: RegistryOption = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="ml-1m or a log path (default: the log the model was trained on, read the "
            "same way, as its metadata records)."
        ),
    ] = None,
    exclude_seen: Annotated[bool, typer.Option(help="Drop seen items from the ranking.")] = True,
    split: Annotated[str, typer.Option(help="test or validation.")] = "test",
    k: Annotated[int, typer.Option(min=1, help="Cut-off of the metrics.")] = 10,
    columns: ColumnsOption = None,
    sep: SepOption = None,
    names: NamesOption = None,
) -> None:
    """Full-ranking leave-one-out metrics of a checkpoint or registry version."""
    if split not in ("test", "validation"):
        raise typer.BadParameter("--split must be test or validation")
    formatting = log_format(columns, sep, names)
    try:
        models = None
        if checkpoint is not None:
            loaded: Checkpoint = load_checkpoint(checkpoint)
            model, vocab, meta = loaded.model, loaded.vocab, loaded.meta
        else:
            models = _registry(registry)
            snapshot = models.load(version)
            model, vocab, meta = snapshot.model, snapshot.vocab, snapshot.meta
        trained_on: dict[str, Any] = {}
        try:
            trained_on = _train_config(meta, models)
        except (DataError, ModelError):  # no record, or an ancestor no longer in the registry
            if dataset is None:
                raise
        # Any log is filtered as the model's own was (minimums, repeats), when recorded.
        if dataset is None:
            dataset = str(trained_on["dataset"])
            if columns is None and sep is None and names is None:
                formatting = LogFormat.from_dict(trained_on.get("log_format") or {})
            console.print(f"dataset: {dataset} (the model's training log)")
        frame = load_dataset(dataset, log_format=formatting)
        data = build_sequences(  # filtered as for training (when known)
            frame,
            vocab=Vocabulary(vocab.ids),
            min_item_interactions=int(trained_on.get("min_item_interactions", 5)),
            min_user_interactions=int(trained_on.get("min_user_interactions", 5)),
            # a fine-tuned version's own meta says how it reads histories, as serving does
            repeats=str(trained_on.get("repeats", meta.get("repeats", "keep"))),
        )
        if data.vocab.size != vocab.size:
            console.print(
                f"[yellow]{data.vocab.size - vocab.size} dataset items are unknown to "
                "the model; their targets count as misses[/yellow]"
            )
        inputs, targets = data.test_split() if split == "test" else data.validation_split()
        known = targets < vocab.size
        inputs = [seq[seq < vocab.size] for seq in inputs]
        targets = targets.copy()
        targets[~known] = 0
        result = evaluate_model(model, inputs, targets, k=k, exclude_seen=exclude_seen)
    except StreamrecError as exc:
        raise _fail(exc) from exc
    metrics = {name: round(value, 4) for name, value in result.metrics.items()}
    console.print(
        f"{split} ({'excluding' if exclude_seen else 'including'} seen items, "
        f"{result.n_users} users): {json.dumps(metrics)}"
    )


def _train_config(meta: dict[str, Any], models: ModelRegistry | None) -> dict[str, Any]:
    """The training configuration behind a model: its own, or (a version fine-tuned from the
    stream) its nearest ancestor's in the registry."""
    seen: set[str] = set()
    while "train_config" not in meta:
        parent = meta.get("parent")
        if models is None or not parent or parent in seen:
            raise DataError(
                "the model's metadata does not say which log it was trained on "
                f"(dataset: {meta.get('dataset', 'unknown')!r}); pass --dataset"
            )
        seen.add(parent)
        meta = json.loads((models.path(parent) / "meta.json").read_text())
    return dict(meta["train_config"])


@registry_app.command("list")
def registry_list(registry: RegistryOption = None) -> None:
    """Registered versions; the promoted one is starred."""
    models = _registry(registry)
    if not models.root.is_dir():
        raise _fail(ModelError(f"no model registry at {models.root}"))
    table = Table("", "version", "kind", "dataset", "created", "test ndcg@10", "test recall@10")
    for info in models.list():
        test = info.metrics.get("test", {})
        table.add_row(
            "*" if info.is_current else "",
            info.version,
            info.kind or "",
            info.dataset or "",
            info.created_at or "",
            f"{test.get('ndcg@10', float('nan')):.4f}",
            f"{test.get('recall@10', float('nan')):.4f}",
        )
    console.print(table)


@registry_app.command("promote")
def registry_promote(version: str, registry: RegistryOption = None) -> None:
    """Serve VERSION from now on."""
    try:
        _registry(registry).promote(version)
    except StreamrecError as exc:
        raise _fail(exc) from exc
    console.print(f"promoted {version}")


@registry_app.command("rollback")
def registry_rollback(registry: RegistryOption = None) -> None:
    """Go back to the previously promoted version."""
    try:
        version = _registry(registry).rollback()
    except StreamrecError as exc:
        raise _fail(exc) from exc
    console.print(f"rolled back to {version}")


if __name__ == "__main__":
    app()
