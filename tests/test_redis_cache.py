"""accounts.cache.RedisCache: Django's Redis cache, one redis-py client per pool."""

import threading
import time
import uuid

import pytest
import redis
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

from accounts.cache import RedisCache
from tests.servers import redis_available
from tests.services import require


@pytest.fixture
def cache():
    """A cache on the shared Redis whose keys carry a prefix of their own.

    Its keys are deleted one by one afterwards: `cache.clear()` is FLUSHDB,
    which would also wipe what other tests (and their servers) keep in db 0.
    """
    require(redis_available(), "Redis is not running on 127.0.0.1:6379")
    prefix = f"redis-cache-{uuid.uuid4().hex[:8]}"
    cache = RedisCache("redis://127.0.0.1:6379/0", {"KEY_PREFIX": prefix})
    yield cache
    cache.close()
    server = redis.Redis(host="127.0.0.1", port=6379)
    for key in server.scan_iter(match=f"{prefix}:*"):
        server.delete(key)
    server.close()


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


def test_threads_meeting_a_new_cache_share_one_pool_and_one_client(cache, monkeypatch):
    """Django makes a server's pool on first use without a lock; made slowly, two threads
    would each make one (a pool and a client each)."""
    shared = cache._cache
    pool_class = shared._pool_class
    real = pool_class.from_url

    def slow_from_url(*args, **kwargs):
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(pool_class, "from_url", slow_from_url)
    start = threading.Barrier(8)
    clients = []

    def first_use():
        start.wait()
        clients.append(shared.get_client(write=True))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in clients}) == 1
    assert len(shared._pools) == 1 and len(shared._clients) == 1
