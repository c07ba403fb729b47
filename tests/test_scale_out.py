"""Scale-out: two gunicorn servers (2 workers each) behind a round-robin client,
sharing PostgreSQL (a throwaway database) and Redis, the reference API a third
process. Sign in on one server, browse on both, let the access token expire
across them: nobody is signed out, each expiry costs exactly one refresh, and
the API never detects a reused token."""

import itertools
import threading
import time
import uuid

import pytest
import requests

from accounts.tokens import access_token_expiry
from authapi.demo import DEMO_USERS
from tests.flows import (
    adopt_burst_cookies,
    burst,
    post_login,
    sign_in,
    sign_in_as,
    wait_until_access_expired,
)
from tests.servers import (
    postgres_available,
    redis_available,
    running_app,
    running_authapi,
    throwaway_database,
)
from tests.services import require

EVALUATOR = DEMO_USERS[1]
EXPIRIES = 3
ACCESS_TTL = 6
LEEWAY = 1
PAGES = ["/dashboard/", "/api/users/me", "/dashboard/evaluations/", "/dashboard/profile/"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require(postgres_available(), "PostgreSQL is not running on 127.0.0.1:5432")
    require(redis_available(), "Redis is not running on 127.0.0.1:6379")
    workdir = tmp_path_factory.mktemp("scale-out")
    with throwaway_database("tokenauth_scale", migrated=True) as database_url:
        shared = {
            "DATABASE_URL": database_url,
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CACHE_KEY_PREFIX": f"scale-{uuid.uuid4().hex[:8]}",
            # A refresh is due in the access token's last second (not its last half),
            # so the fresh phase below ends 2 s before any request may renew the pair.
            "AUTH_REFRESH_LEEWAY": str(LEEWAY),
        }
        with (
            running_authapi(
                workdir, AUTHAPI_ACCESS_TTL=str(ACCESS_TTL), AUTHAPI_REFRESH_DELAY="0.3"
            ) as api,
            running_app(workdir, api_url=api.url, workers=2, name="a", **shared) as a,
            running_app(workdir, api_url=api.url, workers=2, name="b", **shared) as b,
        ):
            yield a, b, api


def test_round_robin_across_two_servers_through_several_expiries(cluster):
    a, b, api = cluster
    balancer = itertools.cycle([a.url, b.url])
    browser = sign_in(a.url)
    before = api.stats()
    statuses = []
    # Every refresh token the browser holds, in order: each refresh the API
    # made must reach the browser (none wasted, none presented twice).
    held = [browser.cookies.get("refresh_token")]

    def note_held() -> None:
        if browser.cookies.get("refresh_token") != held[-1]:
            held.append(browser.cookies.get("refresh_token"))

    for _ in range(EXPIRIES):
        # While the token is fresh: request by request, alternating servers.
        expires_at = access_token_expiry(browser.cookies.get("access_token")).timestamp()
        fresh_until = expires_at - LEEWAY - 2
        for path in itertools.cycle(PAGES):
            if time.time() >= fresh_until:
                break
            response = browser.get(f"{next(balancer)}{path}", allow_redirects=False, timeout=30)
            statuses.append(response.status_code)
            note_held()
        # The token expires; a burst lands on both servers at once.
        wait_until_access_expired(browser)
        urls = [f"{next(balancer)}{PAGES[i % len(PAGES)]}" for i in range(12)]
        responses = burst(urls, browser)
        statuses += [getattr(r, "status_code", repr(r)) for r in responses]
        renewed = {r.cookies.get("refresh_token") for r in responses} - {None}
        assert len(renewed) == 1
        adopt_burst_cookies(browser, responses)
        note_held()

    after = api.stats()
    assert set(statuses) == {200}, statuses
    # One refresh per expiry. A request of the fresh phase that reaches a
    # server more than 2 s late (a loaded machine) finds the token inside the
    # refresh leeway and renews it early: that renewal is an expiry of its
    # own, and the browser holds its pair, so count the pairs it went through.
    renewals = len(held) - 1
    assert len(set(held)) == len(held)
    assert renewals >= EXPIRIES
    assert after["refresh"] - before["refresh"] == renewals
    assert after["reuse_detected"] - before["reuse_detected"] == 0
    assert after["refresh_rejected"] - before["refresh_rejected"] == 0
    # Still signed in on both servers with the last cookies.
    for server in (a, b):
        page = browser.get(f"{server.url}/dashboard/", allow_redirects=False, timeout=10)
        assert page.status_code == 200
        assert "Ada Admin" in page.text


def test_sign_out_on_one_server_is_sign_out_on_both(cluster):
    a, b, api = cluster
    browser = sign_in(b.url)
    refresh_token = browser.cookies.get("refresh_token")
    form = browser.get(f"{a.url}/dashboard/", timeout=10)
    csrf = browser.cookies.get("csrftoken")
    assert form.status_code == 200
    old_cookies = browser.cookies.get_dict()
    assert {"sessionid", "access_token", "refresh_token"} <= set(old_cookies)

    out = browser.post(
        f"{a.url}/accounts/logout/",
        headers={"X-CSRFToken": csrf, "Referer": f"{a.url}/dashboard/"},
        allow_redirects=False,
        timeout=10,
    )

    assert out.status_code == 302
    assert browser.get(f"{b.url}/dashboard/", allow_redirects=False, timeout=10).status_code == 302
    # The client's jar was cleared by the answer; replay what it held before
    # (session and token cookies, as a copy or an attacker would) at the other server.
    replay = requests.Session()
    replay.cookies.update(old_cookies)
    page = replay.get(f"{b.url}/dashboard/", allow_redirects=False, timeout=10)
    assert page.status_code == 302
    assert "/accounts/login/" in page.headers["Location"]
    api_call = replay.get(f"{b.url}/api/users/me", allow_redirects=False, timeout=10)
    assert api_call.status_code == 401
    direct = requests.post(
        f"{api.url}/auth/refresh", cookies={"refresh_token": refresh_token}, timeout=10
    )
    assert direct.status_code == 401


def test_simultaneous_first_sign_ins_of_one_person(cluster):
    """Two tabs (or two people sharing an account) signing in at once, on two
    servers, both creating the user's mirror row: no IntegrityError, no 500."""
    a, b, _ = cluster
    results = [None] * 8

    def one(index: int) -> None:
        browser = sign_in_as([a.url, b.url][index % 2], EVALUATOR)
        results[index] = browser.get(
            f"{[a.url, b.url][index % 2]}/dashboard/evaluations/", allow_redirects=False, timeout=10
        ).status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * len(results)


def test_sign_in_throttling_is_shared_by_both_servers(cluster):
    """Failures of one (email, client) pair counted on one server stop the pair's next
    attempt on the other, before the API: the counters are rows in the shared database."""
    a, b, api = cluster
    victim = "throttle-target@example.com"
    # AUTH_LOGIN_MAX_FAILURES = 5 for the pair (this email from 127.0.0.1), alternating servers
    for server in (a, b, a, b, a):
        assert post_login(server.url, victim, "guess")[1].status_code == 200
    before = api.stats()

    response = post_login(b.url, victim, "guess")[1]

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    after = api.stats()
    assert after["login_failed"] == before["login_failed"], "the API never saw the attempt"
    assert after["login_throttled"] == before["login_throttled"]
