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


#: Part size for the in-process fakeredis variant. fakeredis parses one command in time
#: quadratic in its argument count: a 3 MB object in 64-byte parts (49,000 keys in one MSET)
#: takes over a minute there, 1.6 s on real Redis. The real and cluster variants keep the
#: tiny parts; this one still splits every object over 1 KB.
FAKE_PART = 1024


class TestFakeRedisSplit(TestFakeRedis):
    @pytest.fixture
    def store(self, fake_conn: RedisConnection) -> Iterator[RedisStore]:
        with RedisStore("fake-split", connection=fake_conn, part_size=FAKE_PART) as store:
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
