"""The store contract on RedisStore: fakeredis, fakeredis over TCP, real Redis, a cluster.

The ``*Split`` variants use a tiny part size, so every object is split into several
Redis values (the path taken above Redis's 512 MB value limit).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from framework.connection import RedisConnection
from framework.store import RedisStore
from framework.testing import StoreContractTests

#: Part size that splits every test object into several values.
TINY_PART = 64


class TestFakeRedis(StoreContractTests):
    rebuildable = False  # an injected fakeredis client has no URL to rebuild from

    @pytest.fixture
    def store(self, fake_conn: RedisConnection) -> Iterator[RedisStore]:
        with RedisStore("fake", connection=fake_conn) as store:
            yield store


class TestFakeRedisSplit(TestFakeRedis):
    @pytest.fixture
    def store(self, fake_conn: RedisConnection) -> Iterator[RedisStore]:
        with RedisStore("fake-split", connection=fake_conn, part_size=TINY_PART) as store:
            yield store


class TestFakeRedisOverTcp(StoreContractTests):
    @pytest.fixture
    def store(self, fake_tcp_url: str) -> Iterator[RedisStore]:
        with (
            RedisConnection.from_url(fake_tcp_url) as conn,
            RedisStore("fake-tcp", connection=conn) as store,
        ):
            yield store


class TestRealRedis(StoreContractTests):
    @pytest.fixture
    def store(self, real_conn: RedisConnection) -> Iterator[RedisStore]:
        with RedisStore("real", connection=real_conn) as store:
            yield store


class TestRealRedisSplit(StoreContractTests):
    @pytest.fixture
    def store(self, real_conn: RedisConnection) -> Iterator[RedisStore]:
        with RedisStore("real-split", connection=real_conn, part_size=TINY_PART) as store:
            yield store


class TestCluster(StoreContractTests):
    @pytest.fixture
    def store(self, cluster_conn: RedisConnection) -> Iterator[RedisStore]:
        with RedisStore("cluster", connection=cluster_conn) as store:
            yield store


class TestClusterSplit(StoreContractTests):
    @pytest.fixture
    def store(self, cluster_conn: RedisConnection) -> Iterator[RedisStore]:
        with RedisStore("cluster-split", connection=cluster_conn, part_size=TINY_PART) as store:
            yield store
