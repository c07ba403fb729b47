"""The single-flight refresh service (accounts/refresh.py) against a stubbed backend."""

import threading
import time

import pytest
import requests
import responses

from accounts import refresh
from accounts.exceptions import BackendUnavailable, RefreshPending, RefreshRejected
from tests import fakes


@pytest.fixture
def service(backend, locmem_cache, settings):
    settings.AUTH_REFRESH_WAIT = 3.0
    settings.AUTH_REFRESH_GRACE = 20
    fakes.stub_me(backend, "admin")
    return backend


def refresh_calls(rsps) -> list:
    return [c for c in rsps.calls if c.request.url.endswith("/auth/refresh")]


def values(outcome) -> dict[str, str]:
    return {c.name: c.value for c in outcome.cookies}


def slow_refresh(rsps, seconds: float, new_refresh="refresh-2"):
    headers = fakes.token_headers(fakes.access_jwt(), new_refresh)

    def answer(request):
        time.sleep(seconds)
        return (200, headers, '{"ok": true}')

    rsps.add_callback(responses.POST, f"{fakes.BASE}/auth/refresh", callback=answer)


def test_concurrent_callers_share_one_backend_call(service):
    slow_refresh(service, 0.3)
    results, errors = [], []

    def worker():
        try:
            results.append(values(refresh.refresh_tokens("refresh-1")))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 12
    assert all(r == results[0] for r in results)
    assert results[0]["refresh_token"] == "refresh-2"
    assert len(refresh_calls(service)) == 1
    assert fakes.sent_cookie(refresh_calls(service)[0], "refresh_token") == "refresh-1"


def test_late_caller_with_the_spent_token_gets_the_same_cookies(service):
    fakes.stub_refresh(service)
    first = refresh.refresh_tokens("refresh-1")
    again = refresh.refresh_tokens("refresh-1")
    assert values(again) == values(first)
    assert len(refresh_calls(service)) == 1


def test_the_profile_is_read_once_with_the_new_tokens(service):
    fakes.stub_refresh(service)
    outcome = refresh.refresh_tokens("refresh-1")
    assert outcome.profile.email == "admin@example.com"
    me = [c for c in service.calls if c.request.url.endswith("/users/me")]
    assert len(me) == 1
    assert fakes.sent_cookie(me[0], "access_token") == values(outcome)["access_token"]
    refresh.refresh_tokens("refresh-1")
    assert len([c for c in service.calls if c.request.url.endswith("/users/me")]) == 1


def test_the_cache_holds_no_readable_token(service, locmem_cache):
    fakes.stub_refresh(service, refresh="refresh-2-secret")
    outcome = refresh.refresh_tokens("refresh-1-secret")
    access = values(outcome)["access_token"]
    key = f"{refresh.CACHE_PREFIX}:result:{refresh.token_key('refresh-1-secret')}"
    sealed = locmem_cache.get(key)
    assert isinstance(sealed, bytes)
    for secret in (b"refresh-2-secret", b"refresh-1-secret", access.encode()):
        assert secret not in sealed
    assert "refresh-1-secret" not in key


def test_a_dead_lock_holder_lets_the_next_caller_refresh(service, locmem_cache, settings):
    settings.AUTH_REFRESH_LOCK_TTL = 1
    lock = f"{refresh.CACHE_PREFIX}:lock:{refresh.token_key('refresh-1')}"
    locmem_cache.add(lock, "a-worker-that-died", 1)
    fakes.stub_refresh(service)

    started = time.monotonic()
    outcome = refresh.refresh_tokens("refresh-1")

    assert values(outcome)["refresh_token"] == "refresh-2"
    assert time.monotonic() - started >= 0.5
    assert len(refresh_calls(service)) == 1


def test_waiters_time_out_into_refresh_pending(service, locmem_cache, settings):
    settings.AUTH_REFRESH_WAIT = 0.3
    lock = f"{refresh.CACHE_PREFIX}:lock:{refresh.token_key('refresh-1')}"
    locmem_cache.add(lock, "another-server", 30)
    with pytest.raises(RefreshPending):
        refresh.refresh_tokens("refresh-1")
    assert refresh_calls(service) == []


def test_a_timed_out_refresh_is_not_abandoned(service, settings):
    settings.AUTH_REFRESH_WAIT = 0.2
    slow_refresh(service, 0.8)
    with pytest.raises(RefreshPending):
        refresh.refresh_tokens("refresh-1")
    time.sleep(1.0)  # the backend answers while nobody waits
    settings.AUTH_REFRESH_WAIT = 3.0

    outcome = refresh.refresh_tokens("refresh-1")

    assert values(outcome)["refresh_token"] == "refresh-2"
    assert len(refresh_calls(service)) == 1


def test_a_refusal_is_shared(service):
    fakes.stub_refresh(service, status=401, json={"message": "reused"})
    with pytest.raises(RefreshRejected):
        refresh.refresh_tokens("refresh-1")
    with pytest.raises(RefreshRejected):
        refresh.refresh_tokens("refresh-1")
    assert len(refresh_calls(service)) == 1


def test_transient_failures_are_not_cached(service):
    service.post(f"{fakes.BASE}/auth/refresh", body=requests.ConnectionError())
    fakes.stub_refresh(service)
    with pytest.raises(BackendUnavailable):
        refresh.refresh_tokens("refresh-1")
    assert values(refresh.refresh_tokens("refresh-1"))["refresh_token"] == "refresh-2"
    assert len(refresh_calls(service)) == 2


def test_an_expired_cached_pair_renews_its_successor_not_the_spent_token(service):
    fakes.stub_refresh(service, access=fakes.access_jwt(ttl=-5), refresh="refresh-2")
    fakes.stub_refresh(service, access=fakes.access_jwt(), refresh="refresh-3")
    refresh.refresh_tokens("refresh-1")

    outcome = refresh.refresh_tokens("refresh-1")

    calls = refresh_calls(service)
    assert [fakes.sent_cookie(c, "refresh_token") for c in calls] == ["refresh-1", "refresh-2"]
    assert values(outcome)["refresh_token"] == "refresh-3"


def test_a_non_rotating_backend_never_gets_an_expired_pair_back(service):
    fakes.stub_refresh(service, access=fakes.access_jwt(ttl=-5), refresh="refresh-1")
    fakes.stub_refresh(service, access=fakes.access_jwt(ttl=600), refresh="refresh-1")
    expired = refresh.refresh_tokens("refresh-1")

    fresh = refresh.refresh_tokens("refresh-1")

    assert values(fresh)["access_token"] != values(expired)["access_token"]
    assert [fakes.sent_cookie(c, "refresh_token") for c in refresh_calls(service)] == [
        "refresh-1",
        "refresh-1",
    ]


def test_an_access_only_answer_keeps_the_refresh_cookie_out(service):
    service.post(
        f"{fakes.BASE}/auth/refresh",
        headers=[("Set-Cookie", fakes.express_cookie("access_token", fakes.access_jwt(), 1800))],
    )
    outcome = refresh.refresh_tokens("refresh-1")
    assert set(values(outcome)) == {"access_token"}


def test_the_lock_is_renewed_while_a_slow_call_runs(service, locmem_cache, settings):
    settings.AUTH_REFRESH_LOCK_TTL = 0.9
    settings.AUTH_REFRESH_WAIT = 3.0
    slow_refresh(service, 1.8)  # twice the lock's lifetime
    lock = f"{refresh.CACHE_PREFIX}:lock:{refresh.token_key('refresh-1')}"
    seen = []

    def watch():
        for _ in range(12):  # 1.44 s, all while the call runs
            time.sleep(0.12)
            seen.append(locmem_cache.get(lock))

    watcher = threading.Thread(target=watch)
    watcher.start()
    refresh.refresh_tokens("refresh-1")
    watcher.join()

    assert all(seen), "the lock never lapsed while its holder was alive"
    assert locmem_cache.get(lock) is None, "released once the call returned"
    assert len(refresh_calls(service)) == 1
