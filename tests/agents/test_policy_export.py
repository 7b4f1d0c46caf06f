"""Export / load of the plain-torch policy, and that serving needs no Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from agents.envs import make_env
from agents.policy import (
    N_CONTEXT,
    N_FEATURES,
    CandidateScorer,
    ItemTable,
    ScorerConfig,
    export_policy,
    load_policy,
)


def _table(env) -> ItemTable:
    return ItemTable(
        item_ids=list(env.data.vocab.ids),
        vectors=env.source.item_vectors(),
        popularity=env.data.item_popularity,
        quality=env.data.item_quality,
    )


def _trained_looking_scorer() -> CandidateScorer:
    torch.manual_seed(0)
    scorer = CandidateScorer(ScorerConfig(hidden=16))
    with torch.no_grad():
        for parameter in scorer.parameters():
            parameter.normal_(0.0, 0.5)
    return scorer


def test_round_trip_gives_identical_logits_and_item_table(tmp_path) -> None:
    env = make_env({"synthetic": True, "n_candidates": 10})
    observation, _ = env.reset(seed=0)
    scorer = _trained_looking_scorer().eval()
    export_policy(
        tmp_path,
        scorer,
        _table(env),
        n_slots=10,
        slate_size=3,
        horizon=30,
        meta={"algorithm": "test"},
    )
    loaded = load_policy(tmp_path)
    with torch.no_grad():
        expected = scorer.logits(
            torch.as_tensor(observation["candidates"])[None],
            torch.as_tensor(observation["context"])[None],
            torch.as_tensor(observation["action_mask"])[None],
        )[0].numpy()
    got = loaded.logits(
        observation["candidates"], observation["context"], observation["action_mask"]
    )
    np.testing.assert_array_equal(got, expected)
    assert loaded.items.item_ids == list(env.data.vocab.ids)
    np.testing.assert_array_equal(loaded.items.vectors, env.source.item_vectors())
    assert (loaded.n_slots, loaded.slate_size, loaded.horizon) == (10, 3, 30)
    assert loaded.meta == {"algorithm": "test"}
    assert not loaded.scorer.training


def test_masked_slots_get_the_masked_logit_and_scores_are_shared_across_slots() -> None:
    scorer = _trained_looking_scorer().eval()
    candidates = torch.randn(1, 5, N_FEATURES)
    candidates[0, 3] = candidates[0, 1]  # same features -> same score wherever it sits
    context = torch.randn(1, N_CONTEXT)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    with torch.no_grad():
        logits = scorer.logits(candidates, context, mask)[0]
        permuted = scorer.logits(candidates[:, [2, 0, 1, 3, 4]], context, mask)[0]
    assert logits[4] < -1e8
    assert float(logits[1]) == pytest.approx(float(logits[3]))
    assert torch.allclose(permuted[:4], logits[[2, 0, 1, 3]])


def test_export_is_safetensors_and_json_only(tmp_path) -> None:
    env = make_env({"synthetic": True})
    export_policy(tmp_path, CandidateScorer(), _table(env), n_slots=20, slate_size=3, horizon=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json", "policy.safetensors"]
    payload = json.loads((tmp_path / "policy.json").read_text())
    payload["features"] = ["something", "else"]
    (tmp_path / "policy.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="different features"):
        load_policy(tmp_path)


def test_policy_and_serving_modules_do_not_import_ray() -> None:
    code = (
        "import sys, agents.policy, streamrec.serving.policy_ranker; "
        "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
