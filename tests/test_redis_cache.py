"""accounts.cache.RedisCache: Django's Redis cache, one redis-py client per pool."""

import threading
import uuid

import pytest
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

from accounts.cache import RedisCache
from tests.servers import redis_available
from tests.services import require


@pytest.fixture
def cache():
    require(redis_available(), "Redis is not running on 127.0.0.1:6379")
    cache = RedisCache(
        "redis://127.0.0.1:6379/0", {"KEY_PREFIX": f"redis-cache-{uuid.uuid4().hex[:8]}"}
    )
    yield cache
    cache.clear()
    cache.close()


def test_every_operation_uses_the_same_client(cache):
    cache.set("k", "ü€")
    first = cache._cache.get_client("k", write=True)
    assert cache.get("k") == "ü€"
    assert cache.add("other", 1) is True
    assert cache._cache.get_client("other") is first
    # Django's own builds a new client for every call.
    plain = DjangoRedisCache("redis://127.0.0.1:6379/0", {})
    assert plain._cache.get_client(write=True) is not plain._cache.get_client(write=True)


def test_the_shared_client_serves_many_threads(cache):
    errors = []

    def work(n: int):
        try:
            for i in range(50):
                key = f"t{n}-{i}"
                cache.set(key, {"n": n, "i": i})
                assert cache.get(key) == {"n": n, "i": i}
                assert cache.add(key, "again") is False
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache._cache._clients) == 1
