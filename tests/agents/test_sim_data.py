"""The simulator's data from any interaction log: explicit ratings on any scale, implicit
event types, no feedback at all, logs too small, and ``prepare`` from a CSV path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from agents.cli import app
from agents.envs import make_env, prepare_simulator
from agents.envs.data import build_simulator_data, feedback_weights
from streamrec.data.loaders import LogFormat, load_movielens_1m
from streamrec.errors import DataError


@pytest.fixture(scope="module")
def ml1m_slice() -> pd.DataFrame:
    """Real ML-1M ratings of 600 users."""
    frame = load_movielens_1m()
    users = sorted(frame["user_id"].unique())[:600]
    return frame[frame["user_id"].isin(users)].reset_index(drop=True)


def test_ratings_on_another_scale_give_the_same_world(ml1m_slice) -> None:
    """Stars 1..5 and the same stars as 12..20 are one taste and one quality per item."""
    stars = build_simulator_data(ml1m_slice, dim=12)
    rescaled = build_simulator_data(ml1m_slice.assign(value=ml1m_slice["value"] * 2 + 10), dim=12)
    np.testing.assert_allclose(rescaled.user_taste, stars.user_taste, atol=1e-6)
    np.testing.assert_allclose(rescaled.item_quality, stars.item_quality, atol=1e-6)
    # ML-1M's quality is the mean star mapped from [1, 5] to [0, 1]
    item = stars.vocab.ids[0]
    mean_stars = ml1m_slice.loc[ml1m_slice["item_id"].astype(str) == item, "value"].mean()
    assert stars.item_quality[1] == pytest.approx((mean_stars - 1) / 4, abs=1e-5)


def test_an_implicit_log_weighs_event_types_like_rewards(ml1m_slice) -> None:
    """No values: a purchase is worth what the worker's reward table says, a view nothing."""
    log = ml1m_slice.drop(columns=["value"]).assign(
        type=np.where(ml1m_slice["value"] == 5, "purchase", "view")
    )
    quality, taste, kind = feedback_weights(log)
    assert kind == "implicit"
    assert set(np.unique(quality)) == {0.0, 1.0}
    assert set(np.unique(taste)) == {1.0, 11.0}  # 1 + reward (purchase 10, view 0)

    data = build_simulator_data(log, dim=12)
    share = (
        log.assign(purchase=log["type"] == "purchase")
        .groupby(log["item_id"].astype(str))["purchase"]
        .mean()
    )
    expected = np.array([share[item] for item in data.vocab.ids])
    np.testing.assert_allclose(data.item_quality[1:], expected, atol=1e-6)
    assert np.allclose(np.linalg.norm(data.user_taste, axis=1), 1.0, atol=1e-5)
    # tastes still tell users apart
    assert float(np.std(data.user_taste @ data.user_taste[0])) > 0.05


def test_a_log_without_value_or_type_has_one_quality(ml1m_slice) -> None:
    log = ml1m_slice[["user_id", "item_id", "timestamp"]]
    data = build_simulator_data(log, dim=12)
    assert np.unique(data.item_quality[1:]).size == 1
    assert np.isfinite(data.user_taste).all()


def test_simulated_users_fit_the_affinity_budget(ml1m_slice) -> None:
    data = build_simulator_data(ml1m_slice, dim=12)
    small = build_simulator_data(ml1m_slice, dim=12, affinity_budget_bytes=2 * data.n_rows * 7)
    assert data.n_users == 120  # every 5th of 600
    assert small.n_users == 7
    assert [s.tolist() for s in small.observed] == [s.tolist() for s in data.observed[:7]]


def test_a_log_too_small_is_a_clear_error() -> None:
    log = pd.DataFrame(
        {
            "user_id": [str(u) for u in range(6) for _ in range(5)],
            "item_id": [str(i) for _ in range(6) for i in range(5)],
            "timestamp": list(range(30)),
        }
    )
    with pytest.raises(DataError, match="needs held-out and training users"):
        build_simulator_data(log, heldout_every=1)


def test_prepare_builds_a_world_from_a_csv_log_and_refuses_to_mix_logs(
    ml1m_slice, tmp_path
) -> None:
    """A headered CSV with its own column names, no ratings: prepared, steppable, and not
    silently reused for another log."""
    path = tmp_path / "log.csv"
    ml1m_slice.head(40_000).assign(
        type=np.where(ml1m_slice["value"].head(40_000) >= 4, "click", "view")
    ).rename(columns={"user_id": "visitor", "timestamp": "ts"})[
        ["visitor", "item_id", "ts", "type"]
    ].to_csv(path, index=False)
    sim_dir = tmp_path / "sim"
    prepare_simulator(
        sim_dir,
        dataset=str(path),
        log_format=LogFormat(user_col="visitor"),
        candidate_budget_s=2,
        response_budget_s=2,
    )
    env = make_env({"sim_dir": str(sim_dir)})
    env.reset(seed=0)
    _, reward, *_ = env.step(0)
    assert np.isfinite(reward)
    assert len(env.data.vocab.ids) == env.data.n_rows - 1

    with pytest.raises(DataError, match="built from"):
        prepare_simulator(sim_dir, dataset="ml-1m")
    result = CliRunner().invoke(app, ["prepare", "--sim-dir", str(sim_dir), "--dataset", "ml-1m"])
    assert result.exit_code == 2
    assert "built from" in result.output


def test_prepare_reports_a_missing_log(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["prepare", "--sim-dir", str(tmp_path), "--dataset", str(tmp_path / "none.csv")]
    )
    assert result.exit_code == 2
    assert "no such file" in result.output
