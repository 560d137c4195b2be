"""A list topic on a cluster reports a restart of its list's node (real 3-master cluster).

A restart without persistence empties the node's lists. Standalone, a list subscriber
tells it by the server's run id; on a cluster it did not look (each node has its own
run), so 40 queued messages vanished and the consumer ended as if nothing was lost.
It now follows the run id of the node that holds the topic's list.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import MessageLossError
from framework.pubsub import RedisQueuePublisher, RedisQueueSubscriber
from framework.stream import StreamConsumer, StreamProducer
from tests.pubsub._cluster import LocalCluster, slot_of

TOPIC = "lst"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(require_redis_cluster: None) -> Iterator[LocalCluster]:
    """Three masters without replicas: a killed master comes back empty, not failed over."""
    with LocalCluster(replicas=0) as local:
        yield local


def test_a_restart_of_the_lists_node_is_reported_as_a_possible_loss(
    cluster: LocalCluster,
) -> None:
    with (
        RedisConnection.from_url(cluster.url) as conn,
        RedisConnection.from_url(cluster.url) as producing,
    ):
        subscriber = RedisQueueSubscriber(conn, TOPIC, timeout=20)
        consumer = StreamConsumer[Any](subscriber, timeout=60)
        producer = StreamProducer[Any](RedisQueuePublisher(producing))
        for i in range(10):
            producer.send(TOPIC, i)
        got = [consumer.next_object() for _ in range(10)]
        for i in range(10, 50):
            producer.send(TOPIC, i)  # waiting in the list when its node restarts
        node = cluster.owner(slot_of(conn.keys.queue(TOPIC)))
        assert node is not None
        cluster.restart(node)
        for i in range(50, 60):
            producer.send(TOPIC, i)
        producer.close(topics=[TOPIC])
        losses: list[MessageLossError] = []
        while True:
            try:
                got.extend(consumer.iter_objects())
                break
            except MessageLossError as loss:  # before: never raised, 40 gone in silence
                losses.append(loss)
        consumer.close()
    assert got == [*range(10), *range(50, 60)]
    assert [loss.possible for loss in losses] == [True]
    assert "run id changed" in str(losses[0])
