"""The fine-tuner against real Kafka: resume from committed offsets, never learn twice."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from streamrec.client import EventConsumer, EventProducer
from streamrec.config import Settings
from streamrec.metrics import PROCESS_PORT_OFFSETS
from streamrec.models.registry import ModelRegistry
from streamrec.online.finetuner import FineTuner
from tests.conftest import LiveStack
from tests.helpers import metric_value, metrics_port_block, streamrec_process, wait_for
from tests.online.conftest import tiny_model

pytestmark = pytest.mark.integration


def _send(settings: Settings, start: int, count: int) -> None:
    with EventProducer(settings) as producer:
        for n in range(start, start + count):
            producer.send(
                {
                    "event_id": f"ft-{n}",
                    "user_id": f"u{n % 17}",
                    "session_id": f"s{n % 17}",
                    "item_id": f"i{(n * 7) % 30}" if n < 400 else f"new{n % 3}",
                    "type": "click",
                    "timestamp": 1_700_000_000 + n,
                }
            )


@pytest.fixture
def settings(live_stack: LiveStack, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    from streamrec.client import create_topics
    from streamrec.data.sequences import Vocabulary

    vocab = Vocabulary([f"i{n}" for n in range(30)])
    registry = ModelRegistry(tmp_path / "models")
    registry.promote(registry.save(tiny_model(vocab.n_items), vocab, {"dataset": "synthetic"}))
    settings = live_stack.settings(
        home=tmp_path,
        online={"registry_dir": str(registry.root), "checkpoint_every_s": 3600.0},
    )
    create_topics(settings)
    return settings


def test_resumes_from_committed_offsets_and_never_learns_an_event_twice(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _send(settings, 0, 150)
    first = FineTuner(settings)
    first.run(idle_timeout_s=3)
    first.close()
    assert first.learner.examples_seen == 150

    _send(settings, 150, 150)
    second = FineTuner(settings)
    assert second.learner.examples_seen == 150, "state restored from the checkpoint"
    second.run(idle_timeout_s=3)
    second.close()
    assert second.learner.examples_seen == 300
    assert second.learner.steps > first.learner.steps

    # A crash after the checkpoint but before the offset commit: Kafka redelivers, the
    # fine-tuner skips what its checkpoint already holds.
    _send(settings, 300, 100)
    crashing = FineTuner(settings)

    def crash(self: EventConsumer) -> None:
        raise RuntimeError("killed between checkpoint and commit")

    monkeypatch.setattr(EventConsumer, "commit", crash)
    with pytest.raises(RuntimeError, match="killed"):
        crashing.run(idle_timeout_s=3)
    crashing.close()
    assert crashing.learner.examples_seen == 400
    monkeypatch.undo()

    _send(settings, 400, 30)  # three items never seen before
    resumed = FineTuner(settings)
    assert resumed.learner.examples_seen == 400
    resumed.run(idle_timeout_s=3)
    resumed.close()
    assert resumed.learner.examples_seen == 430, "redelivered events were learnt again"
    assert all(f"new{n}" in resumed.learner.vocab for n in range(3))
    assert resumed.learner.candidate.n_items == 34


def test_a_resent_event_is_learnt_once_also_across_a_restart(settings: Settings) -> None:
    """A replayed log (or a producer's retry) resends event ids at new offsets: the worker's
    state dedups them by id, and so does the fine-tuner, checkpoint included."""
    _send(settings, 0, 120)
    _send(settings, 0, 60)  # the first 60 again, at new offsets
    first = FineTuner(settings)
    first.run(idle_timeout_s=3)
    first.close()
    assert first.learner.examples_seen == 120
    assert first.duplicates == 60

    _send(settings, 60, 80)  # 60 already learnt, 20 new
    second = FineTuner(settings)
    second.run(idle_timeout_s=3)
    second.close()
    assert second.learner.examples_seen == 140
    assert second.duplicates == 60


def test_sigterm_stops_the_process_with_a_final_checkpoint(
    settings: Settings, tmp_path: Path
) -> None:
    """`kill`, systemd and Kubernetes stop with SIGTERM: the fine-tuner trains what is
    pending, checkpoints and commits, so the next start learns exactly the rest."""
    _send(settings, 0, 150)
    base = metrics_port_block()
    log_path = tmp_path / "finetune.log"
    with streamrec_process(["finetune"], settings, log_path, metrics_port=base) as proc:
        port = base + PROCESS_PORT_OFFSETS["finetune"]

        def trained() -> bool:
            try:
                return metric_value(port, "streamrec_finetune_loss") > 0
            except OSError:
                return False

        wait_for(trained, timeout=90)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-2000:]
    state_dir = settings.data_path / "finetune" / settings.online.group_id
    assert (state_dir / "CURRENT").is_file(), "no checkpoint on SIGTERM"
    _send(settings, 150, 50)
    resumed = FineTuner(settings)
    learnt_before = resumed.learner.examples_seen
    assert 0 < learnt_before <= 150
    resumed.run(idle_timeout_s=3)
    resumed.close()
    assert resumed.learner.examples_seen == 200
