"""Single flight over real HTTP: many requests, one expired access token, one refresh.

The reference API runs as a process with a 3-second access token and a
half-second stall in every refresh (to widen the race); the app runs under
gunicorn. Every variant sends 30 concurrent requests holding the same expired
access token and the same refresh token, and counts what reached the API.
"""

import time
import uuid

import pytest

from authapi.demo import DEMO_USERS
from tests.conftest import STORAGE_MODES
from tests.flows import (
    adopt_burst_cookies,
    burst,
    sign_in_as,
    wait_until_access_expired,
)
from tests.servers import (
    redis_available,
    reserve_port,
    running_app,
    running_authapi,
)
from tests.services import require

ADMIN = DEMO_USERS[0]
ACCESS_TTL = "3"
THREADS = 30
API_ENV = {"AUTHAPI_ACCESS_TTL": ACCESS_TTL, "AUTHAPI_REFRESH_DELAY": "0.5"}


@pytest.fixture(scope="module")
def authapi(tmp_path_factory):
    with running_authapi(tmp_path_factory.mktemp("concurrency-api"), **API_ENV) as server:
        yield server


def expire(browser, storage: str) -> None:
    """Wait until the access token the browser's sign-in holds has expired."""
    if storage == "cookies":
        wait_until_access_expired(browser)
    else:  # the token is not in the jar: it was issued just now for ACCESS_TTL seconds
        time.sleep(int(ACCESS_TTL) + 0.5)


def assert_one_refresh_for_a_burst(app_urls: list[str], authapi, storage="cookies") -> None:
    authapi.set_faults(access_ttl=None)
    browser = sign_in_as(app_urls[0], ADMIN, storage=storage)
    expire(browser, storage)
    authapi.set_faults(access_ttl=60)
    before = authapi.stats()

    paths = ["/api/users/me", "/dashboard/", "/dashboard/profile/"]
    urls = [f"{app_urls[i % len(app_urls)]}{paths[i % len(paths)]}" for i in range(THREADS)]
    responses = burst(urls, browser)

    after = authapi.stats()
    statuses = [getattr(r, "status_code", repr(r)) for r in responses]
    assert statuses == [200] * THREADS, statuses
    assert after["refresh"] - before["refresh"] == 1
    assert after["reuse_detected"] - before["reuse_detected"] == 0
    assert after["refresh_rejected"] - before["refresh_rejected"] == 0
    new_tokens = {r.cookies.get("refresh_token") for r in responses} - {None}
    # Cookie mode hands every request the same new refresh token; session mode none.
    assert len(new_tokens) == (1 if storage == "cookies" else 0), new_tokens

    # The browser takes the new cookies; they work, and while the new access
    # token is outside its leeway they cause no further refresh. The API was
    # told to issue it for a minute, so no slowness of this machine can make
    # it due (no race against the token's life).
    adopt_burst_cookies(browser, responses)
    assert browser.get(f"{app_urls[-1]}/api/users/me", timeout=10).status_code == 200
    final = authapi.stats()
    assert final["refresh"] == after["refresh"]
    assert final["reuse_detected"] == before["reuse_detected"]


def test_threads_of_one_worker(tmp_path, authapi):
    with running_app(
        tmp_path, api_url=authapi.url, workers=1, gunicorn_args=("--threads", "16")
    ) as app:
        assert_one_refresh_for_a_burst([app.url], authapi)


def test_four_worker_processes_sharing_the_database_cache(tmp_path, authapi):
    with running_app(tmp_path, api_url=authapi.url, workers=4) as app:
        assert_one_refresh_for_a_burst([app.url], authapi)


@pytest.mark.parametrize("storage", STORAGE_MODES)
def test_two_servers_sharing_redis(tmp_path, authapi, storage):
    require(redis_available(), "Redis is not running on 127.0.0.1:6379")
    shared = {
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
    }
    shared["AUTH_TOKEN_STORAGE"] = storage
    with (
        running_app(tmp_path, api_url=authapi.url, workers=2, name="one", **shared) as one,
        running_app(tmp_path, api_url=authapi.url, workers=2, name="two", **shared) as two,
    ):
        assert_one_refresh_for_a_burst([one.url, two.url], authapi, storage)


@pytest.mark.parametrize("storage", STORAGE_MODES)
def test_backend_down_at_expiry_keeps_the_session(tmp_path, storage):
    port = reserve_port()
    api_dir = tmp_path / "api"
    api_dir.mkdir()
    with (
        running_authapi(api_dir, port=port, **API_ENV) as api,
        running_app(tmp_path, api_url=api.url, workers=1, AUTH_TOKEN_STORAGE=storage) as app,
    ):
        browser = sign_in_as(app.url, ADMIN, storage=storage)
        # The API goes away; the access token expires meanwhile.
        api.process.terminate()
        api.process.wait(timeout=10)
        expire(browser, storage)

        down = browser.get(f"{app.url}/api/users/me", timeout=30)
        page = browser.get(f"{app.url}/dashboard/", timeout=30, allow_redirects=False)

        assert down.status_code == 503
        assert down.json()["error"] == "backend_unavailable"
        assert page.status_code == 200, "still signed in: the dashboard renders"
        assert "Ada Admin" in page.text

        with running_authapi(api_dir, port=port, **API_ENV) as api_again:
            back = browser.get(f"{app.url}/api/users/me", timeout=30)
            assert back.status_code == 200
            assert back.json()["email"] == ADMIN.email
            assert api_again.stats()["refresh"] == 1
            assert api_again.stats()["reuse_detected"] == 0
