from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import pytest
import torch
from modelkit import tiny_model, tiny_vocab

from streamrec.models.checkpoint import save_checkpoint
from streamrec.models.registry import LoadedModel, ModelRegistry
from streamrec.serving.ranker import History, RankContext, Ranked, Ranker
from streamrec.serving.sequence_ranker import SequenceRanker


class _Constant:
    """A fallback ranker that records what it was asked."""

    name = "constant"
    version = "1"

    def __init__(self) -> None:
        self.calls: list[list[History]] = []

    def rank(
        self, histories: Sequence[History], contexts: Sequence[RankContext], k: int
    ) -> list[Ranked]:
        self.calls.append(list(histories))
        return [Ranked(["fallback"], [1.0]) for _ in histories]


@pytest.fixture()
def loaded() -> LoadedModel:
    model = tiny_model("sasrec").eval()
    model.item_popularity.copy_(torch.arange(21, dtype=torch.float32))  # item20 most popular
    return LoadedModel(model, tiny_vocab(), {}, "v0007")


def _ctx(n: int) -> list[RankContext]:
    return [RankContext() for _ in range(n)]


def test_is_a_ranker_with_name_and_version(loaded: LoadedModel) -> None:
    ranker = SequenceRanker(loaded)
    assert isinstance(ranker, Ranker)
    assert (ranker.name, ranker.version) == ("sasrec", "v0007")


def test_masks_seen_and_skips_unknown(loaded: LoadedModel) -> None:
    ranker = SequenceRanker(loaded)
    history = History(items=["item1", "not-in-vocab", "item2", "item3"])
    [ranked] = ranker.rank([history], _ctx(1), k=20)
    assert len(ranked.item_ids) == 17  # 20 items minus the 3 known seen ones
    assert not {"item1", "item2", "item3", "not-in-vocab"} & set(ranked.item_ids)
    assert ranked.scores == sorted(ranked.scores, reverse=True)
    # The unknown id changes nothing: same result as without it.
    [clean] = ranker.rank([History(items=["item1", "item2", "item3"])], _ctx(1), k=20)
    assert clean.item_ids == ranked.item_ids


def test_explicit_exclude_set(loaded: LoadedModel) -> None:
    ranker = SequenceRanker(loaded)
    [ranked] = ranker.rank([History(items=["item1"], exclude=frozenset({"item5"}))], _ctx(1), 20)
    assert "item5" not in ranked.item_ids and "item1" in ranked.item_ids


def test_batch_equals_one_by_one(loaded: LoadedModel) -> None:
    ranker = SequenceRanker(loaded)
    histories = [History(items=[f"item{i}" for i in range(1, n + 1)]) for n in (1, 4, 9)]
    batched = ranker.rank(histories, _ctx(3), k=5)
    for history, together in zip(histories, batched, strict=True):
        [alone] = ranker.rank([history], _ctx(1), k=5)
        assert alone.item_ids == together.item_ids
        assert alone.scores == pytest.approx(together.scores, abs=1e-5)


def test_a_model_trained_on_first_interactions_reads_each_item_once(loaded: LoadedModel) -> None:
    """`train --repeats first` models see histories as they were trained: each item once, at
    its first occurrence. Other models see the history as it is."""
    repeated = History(items=["item1", "item2", "item1", "item3", "item2"])
    first_only = History(items=["item1", "item2", "item3"])
    as_trained = SequenceRanker(replace(loaded, meta={"repeats": "first"}))
    [with_repeats] = as_trained.rank([repeated], _ctx(1), k=5)
    [without] = as_trained.rank([first_only], _ctx(1), k=5)
    assert with_repeats.item_ids == without.item_ids
    assert with_repeats.scores == pytest.approx(without.scores, abs=1e-6)
    [kept] = SequenceRanker(loaded).rank([repeated], _ctx(1), k=5)
    assert kept.scores != pytest.approx(without.scores, abs=1e-6)


def test_empty_histories_use_fallback(loaded: LoadedModel) -> None:
    fallback = _Constant()
    ranker = SequenceRanker(loaded, fallback=fallback)
    results = ranker.rank(
        [History(items=[]), History(items=["item2"]), History(items=["only-unknown"])], _ctx(3), k=3
    )
    assert results[0].item_ids == ["fallback"] and results[2].item_ids == ["fallback"]
    assert len(results[1].item_ids) == 3 and len(fallback.calls) == 1
    # Records say who answered: the fallback's version, not the model's.
    assert results[0].answered_by == results[2].answered_by == "1"
    assert results[1].answered_by is None


def test_empty_history_without_fallback_uses_popularity(loaded: LoadedModel) -> None:
    ranker = SequenceRanker(loaded)
    [ranked] = ranker.rank([History(items=["nope"], exclude=frozenset({"item20"}))], _ctx(1), 3)
    assert ranked.item_ids == ["item19", "item18", "item17"]
    assert ranked.answered_by == f"{ranker.version}:popular"


def test_explanations_come_from_history(loaded: LoadedModel) -> None:
    ranker = SequenceRanker(loaded, explain=True)
    history = History(items=["item3", "item4", "item5", "unknown"])
    [ranked] = ranker.rank([history], _ctx(1), k=4)
    assert ranked.explanations is not None and len(ranked.explanations) == 4
    for reasons in ranked.explanations:
        assert reasons and set(reasons) <= {"item3", "item4", "item5"}
    [plain] = ranker.rank([history], _ctx(1), k=4, explain=False)
    assert plain.explanations is None


def test_gru4rec_ranker(loaded: LoadedModel) -> None:
    model = tiny_model("gru4rec").eval()
    ranker = SequenceRanker(LoadedModel(model, tiny_vocab(), {}, "g1"), explain=True)
    [ranked] = ranker.rank([History(items=["item1", "item2"])], _ctx(1), k=5)
    assert ranker.name == "gru4rec" and len(ranked.item_ids) == 5 and ranked.explanations


def test_from_registry_hot_reload(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    for seed in (1, 2):
        model = tiny_model("sasrec")
        torch.manual_seed(seed)
        torch.nn.init.normal_(model.item_embedding.weight)
        registry.register(save_checkpoint(tmp_path / f"c{seed}", model, tiny_vocab(), {}))
    registry.promote("v0001")
    ranker = SequenceRanker.from_registry(registry.root, check_interval_s=0.0)
    history = [History(items=["item1", "item2"])]
    first = ranker.rank(history, _ctx(1), k=5)
    assert ranker.version == "v0001"
    registry.promote("v0002")
    second = ranker.rank(history, _ctx(1), k=5)
    assert ranker.version == "v0002" and first[0].scores != second[0].scores


def test_from_checkpoint(tmp_path) -> None:
    save_checkpoint(tmp_path / "ck", tiny_model("gru4rec"), tiny_vocab(), {})
    ranker = SequenceRanker.from_checkpoint(tmp_path / "ck")
    assert ranker.version == "ck"
    assert len(ranker.rank([History(items=["item4"])], _ctx(1), k=2)[0].item_ids) == 2


def test_no_request_fails_while_promotions_swap_models(tmp_path) -> None:
    import threading

    registry = ModelRegistry(tmp_path / "reg")
    for seed in (1, 2):
        model = tiny_model("gru4rec")
        torch.manual_seed(seed)
        torch.nn.init.normal_(model.item_embedding.weight)
        registry.register(save_checkpoint(tmp_path / f"c{seed}", model, tiny_vocab(), {}))
    registry.promote("v0001")
    ranker = SequenceRanker.from_registry(registry.root, check_interval_s=0.0)
    errors: list[BaseException] = []
    sizes: list[int] = []

    def serve() -> None:
        try:
            for _ in range(40):
                [ranked] = ranker.rank([History(items=["item1", "item3"])], _ctx(1), k=5)
                sizes.append(len(ranked.item_ids))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=serve) for _ in range(4)]
    for worker in workers:
        worker.start()
    for round_ in range(10):
        registry.promote("v0002" if round_ % 2 == 0 else "v0001")
    for worker in workers:
        worker.join()
    assert not errors and sizes == [5] * 160


def _with_new_items(counts: dict[int, float]) -> LoadedModel:
    """Items 16-20 are new (learned after offline training); their events as in ``counts``."""
    model = tiny_model("sasrec").eval()
    popularity = torch.full((21,), 500.0)
    for index in range(16, 21):
        popularity[index] = counts.get(index, 0.0)
    model.item_popularity.copy_(popularity)
    meta = {"offline_n_items": 16, "new_item_min_events": 3}
    return LoadedModel(model, tiny_vocab(), meta, "v0100")


def test_new_item_slot_shows_the_best_young_new_item_for_each_user() -> None:
    # item16: too few events; item17/18: young; item19: no longer young; item20: none.
    loaded = _with_new_items({16: 2.0, 17: 5.0, 18: 5.0, 19: 500.0})
    plain = SequenceRanker(loaded)
    slotted = SequenceRanker(loaded, new_item_slots=1, new_item_max_events=100)
    histories = [History(items=["item1", "item2"]), History(items=["item3", "item17"])]
    base = plain.rank(histories, _ctx(2), k=5)
    with_slot = slotted.rank(histories, _ctx(2), k=5)
    model = loaded.model
    changed = 0
    for history, before, after in zip(histories, base, with_slot, strict=True):
        young = [i for i in ("item17", "item18") if i not in history.excluded()]
        with torch.no_grad():
            encoded = torch.tensor([loaded.vocab.encode(history.items)])
            scores = model.scores(model.last_hidden(encoded))[0]
        best = max(young, key=lambda item: float(scores[loaded.vocab.encode([item])[0]]))
        if best in before.item_ids:  # made the list by itself: nothing changes
            assert after.item_ids == before.item_ids
        else:
            assert after.item_ids == [*before.item_ids[:4], best]
            changed += 1
        assert "item16" not in after.item_ids  # not ready (2 < 3 events)
    assert changed, "no list had room for a new item; the test shows nothing"
    # item17 is seen by the second user, so only item18 can take that user's slot.
    assert with_slot[1].item_ids[-1] in ("item18", *base[1].item_ids)


def test_no_new_item_slot_without_young_items_or_when_off() -> None:
    loaded = _with_new_items({19: 500.0, 20: 1000.0})
    history = [History(items=["item1"])]
    off = SequenceRanker(loaded).rank(history, _ctx(1), k=5)
    on = SequenceRanker(loaded, new_item_slots=2).rank(history, _ctx(1), k=5)
    assert on == off
    offline_only = LoadedModel(tiny_model("sasrec").eval(), tiny_vocab(), {}, "v1")
    assert SequenceRanker(offline_only, new_item_slots=1).rank(history, _ctx(1), k=5) == (
        SequenceRanker(offline_only).rank(history, _ctx(1), k=5)
    )
    with pytest.raises(ValueError, match="new_item_slots"):
        SequenceRanker(loaded, new_item_slots=-1)


def test_sampled_new_item_slot_explores_every_young_item_and_favours_better_ones() -> None:
    loaded = _with_new_items({16: 5.0, 17: 5.0, 18: 5.0, 19: 5.0, 20: 5.0})
    history = History(items=["item1", "item2", "item18"])  # item18 seen: never drawn
    ranker = SequenceRanker(loaded, new_item_slots=1, new_item_temperature=1.0, seed=0)
    greedy = SequenceRanker(loaded, new_item_slots=1)
    base = SequenceRanker(loaded).rank([history], _ctx(1), k=3)[0].item_ids
    young = [f"item{n}" for n in (16, 17, 19, 20) if f"item{n}" not in base]
    draws = Counter(
        ranked.item_ids[-1] for ranked in ranker.rank([history] * 2000, _ctx(2000), k=3)
    )
    assert "item18" not in draws
    assert set(young) <= set(draws)  # every eligible young item gets exposure
    best = greedy.rank([history], _ctx(1), k=3)[0].item_ids[-1]
    assert draws.most_common(1)[0][0] == best  # the best-scored one most often
    first, second = (
        SequenceRanker(loaded, new_item_slots=1, new_item_temperature=1.0, seed=7) for _ in range(2)
    )
    assert first.rank([history] * 50, _ctx(50), k=3) == second.rank([history] * 50, _ctx(50), 3)
