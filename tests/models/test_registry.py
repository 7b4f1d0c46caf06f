import json
import threading

import pytest
import torch
from modelkit import tiny_model, tiny_vocab

from streamrec.errors import ModelError
from streamrec.models.checkpoint import save_checkpoint
from streamrec.models.registry import ModelHandle, ModelRegistry


def _register(registry: ModelRegistry, tmp_path, seed: int) -> str:
    model = tiny_model("sasrec")
    torch.manual_seed(seed)
    torch.nn.init.normal_(model.item_embedding.weight)  # make versions distinguishable
    source = save_checkpoint(
        tmp_path / f"ckpt{seed}",
        model,
        tiny_vocab(),
        {"dataset": "toy", "metrics": {"test": {"ndcg@10": seed / 10}}},
    )
    return registry.register(source)


def test_versions_promote_and_rollback(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    assert registry.current() is None and registry.list() == []
    first, second, third = (_register(registry, tmp_path, seed) for seed in (1, 2, 3))
    assert (first, second, third) == ("v0001", "v0002", "v0003")
    registry.promote(first)
    registry.promote(second)
    registry.promote(third)
    assert registry.current() == third
    assert [info.is_current for info in registry.list()] == [False, False, True]
    assert registry.rollback() == second and registry.current() == second
    assert registry.rollback() == first
    with pytest.raises(ModelError, match="roll back"):
        registry.rollback()
    actions = [entry["action"] for entry in registry.history()]
    assert actions == ["promote", "promote", "promote", "rollback", "rollback"]
    with pytest.raises(ModelError, match="no version"):
        registry.promote("v0042")
    info = registry.list()[0]
    assert info.kind == "sasrec" and info.dataset == "toy" and info.vocab_hash


def test_pointer_is_replaced_atomically(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    version = _register(registry, tmp_path, 1)
    registry.promote(version)
    inode = registry.pointer_path.stat().st_ino
    registry.promote(_register(registry, tmp_path, 2))
    assert registry.pointer_path.stat().st_ino != inode  # a new file was renamed over it
    assert json.loads(registry.pointer_path.read_text())["version"] == "v0002"
    assert not [p for p in registry.root.iterdir() if p.name.endswith(".tmp")]
    assert not [p for p in registry.versions_dir.iterdir() if p.name.startswith(".staging")]


def test_concurrent_registrations_get_distinct_versions(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    source = save_checkpoint(tmp_path / "c", tiny_model("gru4rec"), tiny_vocab(), {})
    versions: list[str] = []
    threads = [
        threading.Thread(target=lambda: versions.append(registry.register(source)))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == [f"v{i:04d}" for i in range(1, 7)]


def test_handle_hot_reloads_and_keeps_old_snapshot(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.promote(_register(registry, tmp_path, 1))
    handle = ModelHandle(registry, check_interval_s=0.0)
    in_flight = handle.get()
    assert in_flight.version == "v0001"
    registry.promote(_register(registry, tmp_path, 2))
    fresh = handle.get()
    assert fresh.version == "v0002" and handle.version == "v0002"
    # The request that started before the swap still holds a complete, working model.
    item_seq = torch.tensor([[1, 2, 3]])
    assert in_flight.model.last_hidden(item_seq).shape == (1, 16)
    assert not torch.equal(in_flight.model.item_embedding.weight, fresh.model.item_embedding.weight)
    registry.rollback()
    assert handle.get().version == "v0001"


def test_handle_background_watcher(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.promote(_register(registry, tmp_path, 1))
    handle = ModelHandle(registry, check_interval_s=0.05)
    handle.start()
    try:
        registry.promote(_register(registry, tmp_path, 2))
        for _ in range(100):
            if handle.version == "v0002":
                break
            threading.Event().wait(0.05)
        assert handle.version == "v0002"
    finally:
        handle.stop()


def test_handle_without_promotion(tmp_path) -> None:
    handle = ModelHandle(tmp_path / "empty")
    with pytest.raises(ModelError, match="no version"):
        handle.get()
