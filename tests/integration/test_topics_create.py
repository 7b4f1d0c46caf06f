"""`create_topics` on a broker where the events topic already exists with another partition
count than the settings give it: reported as it is, not as the settings' count."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.client import create_topics
from tests.conftest import LiveStack

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("actual", [1, 8])
def test_an_existing_events_topic_reports_its_own_partition_count(
    live_stack: LiveStack, actual: int
) -> None:
    settings = live_stack.settings()  # events topic: 4 partitions
    admin = AdminClient(settings.kafka.librdkafka())
    for future in admin.create_topics([NewTopic(settings.topics.events, actual, 1)]).values():
        future.result(30)
    result = create_topics(settings)
    assert result[settings.topics.events] == (
        f"exists with {actual} partition(s), not 4 (STREAMREC_TOPICS__PARTITIONS)"
    )
    assert result[settings.topics.recommendations] == "created"
    assert create_topics(settings)[settings.topics.recommendations] == "exists"
