"""The same training code on a local multi-node Ray cluster (ray.cluster_utils)."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ppo_iteration_on_a_two_node_cluster(tmp_path) -> None:
    from ray.cluster_utils import Cluster

    from agents.config import RLSettings
    from agents.train import train_ppo

    ray.shutdown()  # a local instance from an earlier test would be reused otherwise
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        settings = RLSettings(
            env_config={"synthetic": True, "n_candidates": 10},
            train_batch_size=200,
            minibatch_size=100,
            num_epochs=1,
            num_env_runners=1,
        )
        outcome = train_ppo(settings, iterations=1, out_dir=tmp_path, ray_address=cluster.address)
        assert len(ray.nodes()) == 2
        assert outcome.policy_dir is not None and (outcome.policy_dir / "policy.json").is_file()
    finally:
        ray.shutdown()
        cluster.shutdown()
