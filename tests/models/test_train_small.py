"""End to end on a slice of real MovieLens-1M: train, evaluate, checkpoint, CLI, registry."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from streamrec.data.loaders import load_movielens_1m
from streamrec.data.sequences import SequenceData, build_sequences
from streamrec.models.checkpoint import load_checkpoint
from streamrec.models.cli import app
from streamrec.models.evaluate import evaluate_model, evaluate_popularity
from streamrec.models.registry import ModelRegistry
from streamrec.models.train import TrainConfig, train


@pytest.fixture(scope="module")
def ml1m_slice() -> pd.DataFrame:
    frame = load_movielens_1m()
    users = sorted(frame["user_id"].unique())[:200]
    return frame[frame["user_id"].isin(users)]


@pytest.fixture(scope="module")
def slice_data(ml1m_slice: pd.DataFrame) -> SequenceData:
    return build_sequences(ml1m_slice)


def _random_hr(data: SequenceData, k: int) -> float:
    inputs, _ = data.test_split()
    return float(np.mean([k / (data.vocab.n_items - len(set(seq))) for seq in inputs]))


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_train_and_evaluate_beats_random(
    tmp_path: Path, slice_data: SequenceData, kind: str
) -> None:
    config = TrainConfig(
        model=kind,
        epochs=2,
        batch_size=16,
        lr=1e-2,
        num_threads=1,
        progress=False,
        lr_schedule="linear",
        model_params={"max_len": 50, "hidden": 32},
    )
    result = train(config, data=slice_data, out_dir=tmp_path / kind)
    metrics = result.test.metrics
    assert all(math.isfinite(value) for value in metrics.values())
    assert result.test.exclude_seen and result.test.n_users == slice_data.n_users
    # Beats random ranking: more hits, and the held-out item sits far above the middle.
    assert metrics["hr@10"] > _random_hr(slice_data, 10)
    assert np.median(result.test.ranks) < 0.4 * slice_data.vocab.n_items
    assert len(result.history) == 2 and result.best_epoch in (1, 2)
    # Checkpoint, curves and metadata.
    directory = tmp_path / kind
    for name in ("model.safetensors", "meta.json", "vocab.json", "curves.csv", "curves.png"):
        assert (directory / name).is_file(), name
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["vocab_hash"] == slice_data.vocab.content_hash()
    assert meta["metrics"]["test"]["ndcg@10"] == pytest.approx(metrics["ndcg@10"])
    reloaded = load_checkpoint(directory)
    inputs, targets = slice_data.test_split()
    again = evaluate_model(reloaded.model, inputs, targets)
    assert again.metrics["ndcg@10"] == pytest.approx(metrics["ndcg@10"], abs=1e-6)


def test_exclude_seen_option_and_popularity(slice_data: SequenceData) -> None:
    inputs, targets = slice_data.test_split()
    excluded = evaluate_popularity(inputs, inputs, targets, slice_data.vocab.size)
    included = evaluate_popularity(
        inputs, inputs, targets, slice_data.vocab.size, exclude_seen=False
    )
    assert excluded.exclude_seen and not included.exclude_seen
    assert excluded.metrics["hr@10"] >= included.metrics["hr@10"]
    assert 0 < excluded.metrics["coverage@10"] <= 1


def test_time_budget_stops_training(slice_data: SequenceData) -> None:
    config = TrainConfig(
        model="gru4rec",
        epochs=50,
        time_budget_s=0.01,
        num_threads=1,
        progress=False,
        model_params={"max_len": 20, "hidden": 16},
    )
    result = train(config, data=slice_data)
    assert len(result.history) == 1


def test_cli_train_evaluate_registry(tmp_path: Path, ml1m_slice: pd.DataFrame) -> None:
    log = tmp_path / "log.csv"
    ml1m_slice.head(6000).to_csv(log, index=False)
    registry = tmp_path / "registry"
    runner = CliRunner()
    for out in ("a", "b"):
        trained = runner.invoke(
            app,
            [
                "train",
                "--model",
                "gru4rec",
                "--dataset",
                str(log),
                "--epochs",
                "1",
                "--threads",
                "1",
                "--out",
                str(tmp_path / out),
                "--registry",
                str(registry),
                "--promote",
            ],
        )
        assert trained.exit_code == 0, trained.output
    assert ModelRegistry(registry).current() == "v0002"
    evaluated = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "a"),
            "--dataset",
            str(log),
            "--no-exclude-seen",
        ],
    )
    assert evaluated.exit_code == 0 and "including seen" in evaluated.output
    evaluated = runner.invoke(app, ["evaluate", "--registry", str(registry), "--dataset", str(log)])
    assert evaluated.exit_code == 0 and "ndcg@10" in evaluated.output
    # Without --dataset: the log the model was trained on (not ML-1M), read the same way.
    evaluated = runner.invoke(app, ["evaluate", "--registry", str(registry)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "training log" in evaluated.output and "unknown" not in evaluated.output
    assert log.name in evaluated.output.replace("\n", "")
    # A version fine-tuned from the stream names its parent: the log is the parent's.
    models = ModelRegistry(registry)
    parent = models.load("v0002")
    tuned = models.save(parent.model, parent.vocab, {"dataset": "stream", "parent": "v0002"})
    evaluated = runner.invoke(app, ["evaluate", "--registry", str(registry), "--version", tuned])
    assert evaluated.exit_code == 0, evaluated.output
    assert log.name in evaluated.output.replace("\n", "")
    orphan = models.save(parent.model, parent.vocab, {"dataset": "somewhere"})
    evaluated = runner.invoke(app, ["evaluate", "--registry", str(registry), "--version", orphan])
    assert evaluated.exit_code != 0 and "pass --dataset" in evaluated.output
    listed = runner.invoke(app, ["registry", "list", "--registry", str(registry)])
    assert listed.exit_code == 0 and "v0001" in listed.output
    assert runner.invoke(app, ["registry", "rollback", "--registry", str(registry)]).exit_code == 0
    assert ModelRegistry(registry).current() == "v0001"
    assert (
        runner.invoke(app, ["registry", "promote", "v0002", "--registry", str(registry)]).exit_code
        == 0
    )
    failed = runner.invoke(app, ["registry", "promote", "v0099", "--registry", str(registry)])
    assert failed.exit_code == 1 and "no version" in failed.output
    typo = runner.invoke(app, ["registry", "list", "--registry", str(tmp_path / "regsitry")])
    assert typo.exit_code == 1 and "no model registry" in typo.output


def test_plateau_schedule_lowers_the_lr_when_validation_stalls(slice_data: SequenceData) -> None:
    # An lr far too small to move validation NDCG: every epoch after the first is a stall.
    config = TrainConfig(
        model="sasrec",
        epochs=5,
        batch_size=32,
        lr=1e-6,
        lr_schedule="plateau",
        plateau_patience=1,
        min_lr_ratio=0.3,
        patience=10,
        num_threads=1,
        progress=False,
        model_params={"max_len": 20, "hidden": 16, "n_layers": 1},
    )
    result = train(config, data=slice_data.subset(60))
    lrs = [row["lr"] for row in result.history]
    assert lrs[:2] == [pytest.approx(1e-6)] * 2
    assert lrs[2] == pytest.approx(5e-7)  # halved after two epochs without a gain
    assert lrs[3] == pytest.approx(5e-7)  # the count of stalled epochs starts again
    assert lrs[4] == pytest.approx(3e-7)  # and the lr never goes below min_lr_ratio * lr


def test_unknown_lr_schedule_is_refused(slice_data: SequenceData) -> None:
    with pytest.raises(Exception, match="lr_schedule must be"):
        train(TrainConfig(lr_schedule="cosine", progress=False), data=slice_data.subset(20))


def test_sampled_validation_holdout_trains_on_the_other_users_validation_items(
    slice_data: SequenceData,
) -> None:
    data = slice_data.subset(60)
    base = {
        "model": "gru4rec",
        "epochs": 1,
        "num_threads": 1,
        "progress": False,
        "val_users": 20,
        "model_params": {"max_len": 20, "hidden": 16},
    }
    held_all = train(TrainConfig(**base), data=data)
    held_sampled = train(TrainConfig(**base, validation_holdout="sampled"), data=data)
    # item_popularity counts the training targets' items: 40 users gained one each
    total = int(sum(len(seq) for seq in data.sequences))
    assert int(held_all.model.item_popularity.sum()) == total - 2 * 60
    assert int(held_sampled.model.item_popularity.sum()) == total - 60 - 20
    # validated on the same 20 users either way
    assert held_sampled.validation.n_users == held_all.validation.n_users == 20
    # a sample of everyone holds everyone's validation item out
    everyone = train(
        TrainConfig(**{**base, "val_users": None}, validation_holdout="sampled"), data=data
    )
    assert int(everyone.model.item_popularity.sum()) == total - 2 * 60


def test_unknown_validation_holdout_is_refused(slice_data: SequenceData) -> None:
    with pytest.raises(Exception, match="validation_holdout must be"):
        train(TrainConfig(progress=False, validation_holdout="some"), data=slice_data.subset(20))


def test_cli_reads_a_log_with_its_own_columns_and_separator(
    tmp_path: Path, ml1m_slice: pd.DataFrame
) -> None:
    log = tmp_path / "log.txt"
    renamed = ml1m_slice.head(3000).rename(
        columns={"user_id": "who", "item_id": "what", "timestamp": "when"}
    )
    renamed[["who", "what", "when"]].to_csv(log, index=False, sep="|")
    options = ["--dataset", str(log), "--columns", "user=who,item=what,time=when", "--sep", "|"]
    runner = CliRunner()
    out = tmp_path / "ck"
    command = ["train", "--model", "gru4rec", "--epochs", "1", "--threads", "1", "--out", str(out)]
    trained = runner.invoke(app, [*command, *options])
    assert trained.exit_code == 0, trained.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_config"]["log_format"] == {
        "user_col": "who", "item_col": "what", "time_col": "when", "sep": "|"
    }  # fmt: skip
    evaluated = runner.invoke(app, ["evaluate", "--checkpoint", str(out), *options])
    assert evaluated.exit_code == 0 and "ndcg@10" in evaluated.output, evaluated.output
    unnamed = runner.invoke(app, ["evaluate", "--checkpoint", str(out), "--dataset", str(log)])
    assert unnamed.exit_code == 1 and "lacks columns for user_id" in unnamed.output
    bad = runner.invoke(app, ["evaluate", "--checkpoint", str(out), *options, "--columns", "u=x"])
    assert bad.exit_code == 2 and "bad --columns" in bad.output


def test_cli_train_a_sparse_log_with_lower_minimums(tmp_path: Path) -> None:
    """Every item of this log has about 2 interactions: the default minimum of 5 leaves
    nothing, and says which options to lower; lowered, it trains, and `evaluate` filters the
    log the same way."""
    rng = np.random.default_rng(0)
    rows = [
        (f"u{user}", f"sku-{rng.integers(0, 120)}", 1_700_000_000 + 60 * (user * 4 + n))
        for user in range(60)
        for n in range(4)
    ]
    log = tmp_path / "sparse.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(log, index=False)
    runner = CliRunner()
    base = ["train", "--model", "gru4rec", "--dataset", str(log), "--epochs", "1"]
    refused = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 1
    assert "--min-item-events" in refused.output.replace("\n", "")
    trained = runner.invoke(
        app,
        [*base, "--out", str(tmp_path / "b"), "--min-item-events", "1", "--min-user-events", "3"],
    )
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "b")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "60 users" in evaluated.output


def test_cli_train_with_repeats_first_and_evaluate_filters_the_same_way(tmp_path: Path) -> None:
    """A log where every user views items again: `--repeats first` trains on first views only,
    records it, and `evaluate` (on the training log, or on another log passed with --dataset)
    drops the repeats too, so no test target is an item already in its history."""
    rng = np.random.default_rng(1)
    rows = []
    for user in range(40):
        items = [f"sku-{i}" for i in rng.choice(30, size=6, replace=False)]
        views = [*items, items[0], items[2], items[-1]]  # the last view is a repeat
        rows += [
            (f"u{user}", item, 1_700_000_000 + 60 * (user * 10 + n)) for n, item in enumerate(views)
        ]
    log = tmp_path / "repeats.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(log, index=False)
    runner = CliRunner()
    base = ["train", "--model", "gru4rec", "--dataset", str(log), "--epochs", "1"]
    base += ["--min-item-events", "1", "--min-user-events", "3", "--out", str(tmp_path / "m")]
    refused = runner.invoke(app, [*base, "--repeats", "last"])
    assert refused.exit_code != 0 and "--repeats" in refused.output
    trained = runner.invoke(app, [*base, "--repeats", "first"])
    assert trained.exit_code == 0, trained.output
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["train_config"]["repeats"] == meta["repeats"] == "first"  # serving reads it
    kept = runner.invoke(app, [*base[:-1], str(tmp_path / "k")])  # repeats kept (default)
    assert kept.exit_code == 0, kept.output

    def ndcg(checkpoint: str, *extra: str) -> float:
        result = runner.invoke(
            app, ["evaluate", "--checkpoint", str(tmp_path / checkpoint), *extra]
        )
        assert result.exit_code == 0, result.output
        assert "40 users" in result.output
        return float(json.loads(result.output[result.output.index("{") :])["ndcg@10"])

    # kept, every test target is a repeat, so a miss; with first views only, 10 of the 24
    # unseen items are shown, so some hit whatever the model
    assert ndcg("k") == 0.0
    assert ndcg("m") > 0.0
    assert ndcg("m", "--dataset", str(log)) == ndcg("m")
    # A fine-tuned version: no train_config, its ancestor gone from the registry, its own
    # meta saying how it reads histories. With --dataset it is evaluated as it serves.
    from streamrec.models.registry import ModelRegistry

    trained_m = load_checkpoint(tmp_path / "m")
    registry = ModelRegistry(tmp_path / "reg")
    tuned = registry.save(
        trained_m.model,
        trained_m.vocab,
        {"dataset": "stream", "parent": "v0999", "repeats": "first"},
    )
    result = runner.invoke(
        app,
        ["evaluate", "--registry", str(registry.root), "--version", tuned, "--dataset", str(log)],
    )
    assert result.exit_code == 0, result.output
    assert float(json.loads(result.output[result.output.index("{") :])["ndcg@10"]) > 0.0
    refused = runner.invoke(app, ["evaluate", "--registry", str(registry.root), "--version", tuned])
    assert refused.exit_code == 1 and "v0999" in refused.output  # no log to read: say why


def test_cli_refuses_bad_numbers_and_a_log_with_nothing_to_train_on(tmp_path: Path) -> None:
    three = tmp_path / "three.csv"  # every user has exactly 3 events: none left to train on
    pd.DataFrame(
        [
            (f"u{u}", f"i{(u + n) % 7}", 1_700_000_000 + 60 * (u * 3 + n))
            for u in range(30)
            for n in range(3)
        ],
        columns=["user_id", "item_id", "timestamp"],
    ).to_csv(three, index=False)
    runner = CliRunner()
    base = ["train", "--model", "gru4rec", "--dataset", str(three), "--epochs", "1"]
    base += ["--min-item-events", "1", "--min-user-events", "3", "--out", str(tmp_path / "m")]
    empty = runner.invoke(app, base)
    assert empty.exit_code == 1 and "nothing to train on" in empty.output, empty.output
    assert not (tmp_path / "m").exists()
    for extra, named in [
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1"], "--lr"),
        (["--max-users", "-1"], "--max-users"),
        (["--time-budget", "0"], "--time-budget"),
    ]:
        refused = runner.invoke(app, [*base, *extra])
        assert refused.exit_code == 2 and named in refused.output, (extra, refused.output)
    for extra, named in [(["--k", "0"], "--k"), (["--split", "foo"], "--split")]:
        refused = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path), *extra])
        assert refused.exit_code == 2 and named in refused.output, (extra, refused.output)
