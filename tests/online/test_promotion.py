from __future__ import annotations

from pathlib import Path

from streamrec.config import Settings
from streamrec.data.sequences import Vocabulary
from streamrec.models.registry import ModelRegistry
from streamrec.online.finetuner import FineTuner
from streamrec.online.prequential import RollingMetrics
from streamrec.online.promotion import PromotionGuard


def _metrics(ranks: list[int]) -> RollingMetrics:
    metrics = RollingMetrics(window=len(ranks))
    metrics.add(ranks)
    return metrics


def test_guard_refuses_a_worse_or_equal_candidate_and_too_little_evidence() -> None:
    guard = PromotionGuard(margin=0.05, min_events=10)
    good, bad = _metrics([0] * 10), _metrics([100] * 5 + [0] * 5)
    assert guard.should_promote(bad, good).action == "keep"
    assert guard.should_promote(good, good).action == "keep"  # needs a 5 % gain
    assert guard.should_promote(good, bad).action == "promote"
    assert PromotionGuard(min_events=11).should_promote(good, bad).action == "keep"


def test_guard_judges_a_promotion_on_the_same_events() -> None:
    guard = PromotionGuard(margin=0.05, min_events=4)
    assert guard.judge(_metrics([0] * 3), _metrics([0] * 3)).action == "keep"  # too early
    assert guard.judge(_metrics([1] * 4), _metrics([1] * 4)).action == "confirm"
    decision = guard.judge(_metrics([1, 50, 50, 50]), _metrics([1] * 4))
    assert decision.action == "rollback"
    assert "same events" in decision.reason


def _tuner(tmp_path: Path, registry: ModelRegistry) -> FineTuner:
    settings = Settings(
        home=tmp_path,
        online={"registry_dir": registry.root, "promote_min_events": 20, "promote_margin": 0.0},  # type: ignore[arg-type]
    )
    return FineTuner(settings)


def test_review_promotes_through_the_registry_then_rolls_back(
    tmp_path: Path, registry: ModelRegistry, vocab: Vocabulary
) -> None:
    tuner = _tuner(tmp_path, registry)
    first = registry.current()
    learner = tuner.learner
    # The candidate ranked better than serving on the window: promote.
    learner.candidate_metrics.add([0] * 30)
    learner.serving_metrics.add([5] * 30)
    decision = tuner.review()
    assert decision.action == "promote"
    second = registry.current()
    assert second != first and learner.serving_version == second
    assert registry.load(second).meta["parent"] == first
    assert learner.previous_version == first  # the replaced version is shadowed
    # On the events after the promotion the new version does worse: roll back to the old one.
    learner.since_promotion.add([40] * 30)
    learner.previous_metrics.add([1] * 30)
    decision = tuner.review()
    assert decision.action == "rollback"
    assert registry.current() == first
    assert learner.serving_version == first and learner.previous is None
    log = (registry.root / "promotions.jsonl").read_text().splitlines()
    assert '"action": "promote"' in log[0]
    assert '"action": "rollback"' in log[1] and "same events" in log[1]


def test_review_confirms_a_promotion_that_holds_up(tmp_path: Path, registry: ModelRegistry) -> None:
    tuner = _tuner(tmp_path, registry)
    tuner.learner.candidate_metrics.add([0] * 30)
    tuner.learner.serving_metrics.add([5] * 30)
    assert tuner.review().action == "promote"
    promoted = registry.current()
    tuner.learner.since_promotion.add([2] * 30)
    tuner.learner.previous_metrics.add([2] * 30)
    assert tuner.review().action == "confirm"
    assert registry.current() == promoted and tuner.learner.previous is None


def test_review_promotes_again_right_after_confirming(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    tuner = _tuner(tmp_path, registry)
    learner = tuner.learner
    learner.candidate_metrics.add([0] * 30)
    learner.serving_metrics.add([5] * 30)
    assert tuner.review().action == "promote"
    first_promoted = registry.current()
    learner.since_promotion.add([2] * 30)
    learner.previous_metrics.add([2] * 30)
    # The candidate kept learning and is ahead of the version just confirmed.
    learner.serving_metrics.add([2] * 30)
    learner.candidate_metrics.add([0] * 30)
    assert tuner.review().action == "promote"
    assert registry.current() != first_promoted
    assert learner.previous_version == first_promoted
    actions = [
        line.split('"action": "')[1].split('"')[0]
        for line in (registry.root / "promotions.jsonl").read_text().splitlines()
    ]
    assert actions == ["promote", "confirm", "promote"]


def test_review_refuses_a_worse_candidate(tmp_path: Path, registry: ModelRegistry) -> None:
    tuner = _tuner(tmp_path, registry)
    before = [info.version for info in registry.list()]
    tuner.learner.candidate_metrics.add([40] * 30)
    tuner.learner.serving_metrics.add([0] * 30)
    assert tuner.review().action == "keep"
    assert [info.version for info in registry.list()] == before


def test_promotion_compares_both_models_on_the_same_newest_events() -> None:
    """After a promotion the serving window restarts while the candidate's still holds the
    events before it: only the newest events both ranked may decide."""
    from streamrec.online.prequential import RollingMetrics
    from streamrec.online.promotion import PromotionGuard

    candidate, serving = RollingMetrics(1000), RollingMetrics(1000)
    candidate.add([0] * 500)  # before the promotion: the candidate looked far better
    candidate.add([3] * 100)  # since then, on the same 100 events as serving ...
    serving.add([1] * 100)  # ... serving ranked them higher
    decision = PromotionGuard(margin=0.0, min_events=50).should_promote(candidate, serving)
    assert decision.action == "keep", decision.reason
    assert decision.events == 100


def test_a_promotion_made_outside_the_fine_tuner_is_followed_not_overridden(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    """Someone promotes a model trained on another log (another vocabulary) while the
    fine-tuner runs, and again while it is down: it fine-tunes that version from then on."""
    from tests.online.conftest import tiny_model

    tuner = _tuner(tmp_path, registry)
    tuner.learner.observe([("u1", "i3"), ("u1", "i4"), ("u2", "i5")])
    other = Vocabulary([f"x{n}" for n in range(10)] + ["i4", "i3"])
    outside = registry.save(tiny_model(other.n_items, seed=1), other, {"dataset": "other"})
    registry.promote(outside)
    tuner.learner.candidate_metrics.add([0] * 30)  # the candidate looks better ...
    tuner.learner.serving_metrics.add([5] * 30)
    decision = tuner.review()  # ... but it descends from the replaced version
    assert decision.action == "follow"
    assert registry.current() == outside
    learner = tuner.learner
    assert learner.serving_version == outside and learner.vocab.ids == other.ids
    assert learner.vocab.decode(learner.histories["u1"]) == ["i3", "i4"]  # carried by id
    assert learner.candidate.n_items == other.n_items + 1

    # Down, then promoted again from outside: the checkpoint's candidate is not resumed.
    tuner.offsets = {"t:0": 7}
    tuner.checkpoint()
    again = registry.save(tiny_model(other.n_items, seed=2), other, {"dataset": "other"})
    registry.promote(again)
    restarted = _tuner(tmp_path, registry)
    assert restarted.learner.serving_version == again
    assert restarted.offsets == {"t:0": 7}
    assert restarted.learner.vocab.decode(restarted.learner.histories["u1"]) == ["i3", "i4"]
    promoted = restarted.registry.load(again).model.state_dict()
    for name, value in restarted.learner.candidate.state_dict().items():
        assert (value == promoted[name]).all(), name


def test_a_promotion_not_judged_before_a_restart_is_judged_after_it(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    tuner = _tuner(tmp_path, registry)
    first = registry.current()
    tuner.learner.candidate_metrics.add([0] * 30)
    tuner.learner.serving_metrics.add([5] * 30)
    assert tuner.review().action == "promote"
    promoted = registry.current()
    tuner.checkpoint()  # stopped before the verdict

    restarted = _tuner(tmp_path, registry)
    learner = restarted.learner
    assert learner.serving_version == promoted
    assert learner.previous_version == first  # shadowed again
    learner.since_promotion.add([40] * 30)
    learner.previous_metrics.add([1] * 30)
    assert restarted.review().action == "rollback"
    assert registry.current() == first and learner.serving_version == first


def test_the_fine_tuner_learns_as_the_served_model_was_trained_on_repeats(
    tmp_path: Path, vocab: Vocabulary
) -> None:
    """A model trained with `--repeats first` is fine-tuned on first interactions only, and
    the versions the fine-tuner writes say so, for serving."""
    from tests.online.conftest import tiny_model

    registry = ModelRegistry(tmp_path / "first-models")
    first = registry.save(tiny_model(vocab.n_items), vocab, {"dataset": "x", "repeats": "first"})
    registry.promote(first)
    tuner = _tuner(tmp_path, registry)
    assert tuner.learner.config.repeats == "first"
    tuner.learner.observe([("u1", "i3"), ("u1", "i4"), ("u1", "i3")])
    assert tuner.learner.vocab.decode(tuner.learner.histories["u1"]) == ["i3", "i4"]
    tuner.learner.candidate_metrics.add([0] * 30)
    tuner.learner.serving_metrics.add([5] * 30)
    assert tuner.review().action == "promote"
    assert registry.load(registry.current()).meta["repeats"] == "first"


def test_the_fine_tuner_keeps_the_items_users_had_through_restarts_and_follows(
    tmp_path: Path, vocab: Vocabulary
) -> None:
    """With repeats=first, a return to an item that left the kept history is still a repeat
    after a restart, and after following a version promoted from outside."""
    from tests.online.conftest import tiny_model

    registry = ModelRegistry(tmp_path / "first-models")
    first = registry.save(tiny_model(vocab.n_items), vocab, {"dataset": "x", "repeats": "first"})
    registry.promote(first)
    settings = Settings(
        home=tmp_path,
        online={"registry_dir": registry.root, "context_len": 2},  # type: ignore[arg-type]
    )
    tuner = FineTuner(settings, histories={"u": ["i1", "i2", "i3"]})
    assert tuner.learner.vocab.decode(tuner.learner.histories["u"]) == ["i2", "i3"]
    tuner.checkpoint()
    # A restart resumes the checkpoint; the seed histories are not applied over it.
    restarted = FineTuner(settings, histories={"u": ["i9"]})
    assert restarted.resumed
    restarted.learner.observe([("u", "i1"), ("u", "i4")])
    assert restarted.learner.vocab.decode(restarted.learner.histories["u"]) == ["i3", "i4"]
    assert restarted.learner.examples_seen == 1

    other = Vocabulary([f"i{n}" for n in range(30)][::-1])
    outside = registry.save(tiny_model(other.n_items, seed=1), other, {"repeats": "first"})
    registry.promote(outside)
    assert restarted.review().action == "follow"
    learner = restarted.learner
    learner.observe([("u", "i2"), ("u", "i5")])
    assert learner.vocab.decode(learner.histories["u"]) == ["i4", "i5"]
    # and down, then promoted again from outside: carried from the checkpoint by item id
    restarted.checkpoint()
    again = registry.save(tiny_model(other.n_items, seed=2), other, {"repeats": "first"})
    registry.promote(again)
    third = FineTuner(settings)
    third.learner.observe([("u", "i1"), ("u", "i6")])
    assert third.learner.vocab.decode(third.learner.histories["u"]) == ["i5", "i6"]
