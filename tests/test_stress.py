"""Stress: 40 sessions needing a refresh at once, through a refresh pool that is full.

Issue 9, failure 2: with more sessions refreshing than the pool has threads
and a backend slower than the refresh lock's TTL, the lock of a queued call
lapsed before its holder started renewing it, the user's next click queued a
second call with the same token, and the backend revoked the sign-in.

Here the app runs under gunicorn, 2 workers x 4 threads, with
AUTH_REFRESH_POOL_SIZE=4 and AUTH_REFRESH_LOCK_TTL=1 s; the reference API
stalls every refresh 2.5 s. 40 sign-ins (the two demo users, each sign-in its
own cookie jar) wait for their access tokens to expire, then every user
clicks three times, 0.5 s apart, the second time a burst of three parallel
requests with the same jar, while the calls queue. When the API has gone
quiet every user opens the dashboard. Expected: exactly one backend call per
refresh token (40 calls, 40 refreshes), no reuse, no refusal, everyone
signed in, no token value in either server's log. The figures are printed
(`pytest -s`).
"""

import os
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from authapi.demo import DEMO_USERS
from tests.flows import adopt_cookies, sign_in_as, wait_until_all_expired
from tests.servers import (
    postgres_available,
    redis_available,
    running_app,
    running_authapi,
    shared_storage,
    wait_for_quiet,
)
from tests.services import require

SESSIONS = 40
ACCESS_TTL = 30  # no new token falls due (leeway 2 s) while the users click
SIGN_IN_TTL = 5  # the sign-ins' own tokens: all expired soon after the last sign-in
REFRESH_DELAY = 2.5  # the backend's stall: longer than the lock TTL
LOCK_TTL = 1
POOL_SIZE = 4
ROUNDS = 3
BURST = 3
PATHS = ["/dashboard/", "/api/users/me", "/dashboard/evaluations/"]
TOKEN_COOKIES = ("access_token", "refresh_token")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.environ.get("REQUIRE_SERVICES") == "1":
        require(postgres_available(), "PostgreSQL is not running on 127.0.0.1:5432")
        require(redis_available(), "Redis is not running on 127.0.0.1:6379")
    workdir = tmp_path_factory.mktemp("stress")
    with (
        shared_storage("auto", "stress") as (storage, shared),
        running_authapi(
            workdir,
            AUTHAPI_ACCESS_TTL=str(ACCESS_TTL),
            AUTHAPI_REFRESH_DELAY=str(REFRESH_DELAY),
        ) as api,
        running_app(
            workdir,
            api_url=api.url,
            workers=2,
            gunicorn_args=("--threads", "4"),
            AUTH_REFRESH_LOCK_TTL=str(LOCK_TTL),
            AUTH_REFRESH_POOL_SIZE=str(POOL_SIZE),
            AUTH_REFRESH_WAIT="1",
            AUTH_REFRESH_LEEWAY="2",
            **shared,
        ) as app,
    ):
        yield app, api, storage


class User:
    """One signed-in browser: its jar, and what it saw."""

    def __init__(self, base_url: str, who):
        self.base_url = base_url
        self.who = who
        self.browser = sign_in_as(base_url, who)
        # A new connection per request: gunicorn drops idle keep-alive connections after
        # 5 s, and `requests` (unlike a browser) does not retry one that died in use.
        # The sign-in's own connection goes too: the first click, about 5 s later, would
        # otherwise be sent into it as gunicorn closes it (a ConnectionError).
        self.browser.headers["Connection"] = "close"
        self.browser.close()
        self.seen: list[tuple[int | str, float]] = []  # (status, seconds)
        self.tokens: set[str] = set()
        self._remember_jar()

    def _remember_jar(self) -> None:
        self.tokens.update(v for n in TOKEN_COOKIES if (v := self.browser.cookies.get(n)))

    def get(self, session: requests.Session, path: str) -> requests.Response | None:
        started = time.monotonic()
        try:
            response = session.get(f"{self.base_url}{path}", allow_redirects=False, timeout=90)
        except requests.RequestException as exc:
            self.seen.append((type(exc).__name__, time.monotonic() - started))
            return None
        self.seen.append((response.status_code, time.monotonic() - started))
        self.tokens.update(v for n in TOKEN_COOKIES if (v := response.cookies.get(n)))
        return response

    def click(self, path: str) -> None:
        self.get(self.browser, path)  # the jar takes whatever cookies come back
        self._remember_jar()

    def burst(self, paths: list[str]) -> None:
        """Send len(paths) requests at once, each with the jar's cookies as they are now."""
        barrier = threading.Barrier(len(paths))
        answers: list = [None] * len(paths)

        def one(index: int) -> None:
            session = requests.Session()
            session.headers["Connection"] = "close"
            session.cookies.update(self.browser.cookies)
            barrier.wait()
            answers[index] = self.get(session, paths[index])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for answer in answers:
            if answer is not None and any(answer.cookies.get(n) for n in TOKEN_COOKIES):
                adopt_cookies(self.browser, answer)
        self._remember_jar()


def test_forty_sessions_refreshing_at_once_through_a_full_pool(cluster):
    app, api, storage = cluster
    started = time.monotonic()
    api.set_faults(access_ttl=SIGN_IN_TTL)  # not ACCESS_TTL: nothing to wait 30 s for
    try:
        with ThreadPoolExecutor(8) as pool:
            users = list(pool.map(lambda i: User(app.url, DEMO_USERS[i % 2]), range(SESSIONS)))
    finally:
        api.set_faults(access_ttl=None)  # the refreshed tokens live ACCESS_TTL
    signing_in = time.monotonic() - started
    wait_until_all_expired([u.browser for u in users])
    before = api.stats()

    gate = threading.Barrier(SESSIONS)

    def behave(index: int, user: User) -> None:
        gate.wait()
        for round_ in range(ROUNDS):
            if round_ == 1:
                user.burst([PATHS[(index + k) % len(PATHS)] for k in range(BURST)])
            else:
                user.click(PATHS[(index + round_) % len(PATHS)])
            if round_ < ROUNDS - 1:
                time.sleep(0.5)

    in_flight: list[int] = []  # refresh calls at the API at once, sampled
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            stats = api.stats()
            in_flight.append(stats["refresh_calls"] - stats["refresh"] - stats["refresh_rejected"])
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clicking_from = time.monotonic()
    threads = [threading.Thread(target=behave, args=(i, u)) for i, u in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clicking = time.monotonic() - clicking_from

    quiet = wait_for_quiet(api, quiet_for=1.5, timeout=150)
    draining = time.monotonic() - clicking_from
    sampling.set()
    sampler.join()
    changes = {name: quiet[name] - before[name] for name in quiet}

    finals: list = [None] * SESSIONS

    def final(index: int) -> None:
        user = users[index]
        response = user.get(user.browser, "/dashboard/")
        user._remember_jar()
        finals[index] = response

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(final, range(SESSIONS)))
    after = wait_for_quiet(api, quiet_for=1.0, timeout=60)

    during = [seen for user in users for seen in user.seen[:-1]]
    statuses = Counter(status for status, _ in during)
    latencies = sorted(seconds for _, seconds in during)
    final_statuses = Counter(user.seen[-1][0] for user in users)
    issued = set().union(*(user.tokens for user in users))
    print(
        f"\nstress ({storage}; gunicorn 2 workers x 4 threads, refresh pool {POOL_SIZE}/worker, "
        f"lock TTL {LOCK_TTL}s, backend refresh {REFRESH_DELAY}s):"
        f"\n  {SESSIONS} sign-ins in {signing_in:.1f}s; {len(during)} requests while refreshing,"
        f" clicks over {clicking:.1f}s, API quiet {draining:.1f}s after the first click"
        f"\n  backend: refresh_calls={changes['refresh_calls']} refresh={changes['refresh']}"
        f" refresh_rejected={changes['refresh_rejected']}"
        f" reuse_detected={changes['reuse_detected']}; at most {max(in_flight)} calls at once"
        f" (after the final page loads: calls={after['refresh_calls'] - before['refresh_calls']})"
        f"\n  statuses while refreshing: {dict(sorted(statuses.items(), key=str))}"
        f"\n  latency: median {statistics.median(latencies):.2f}s,"
        f" p95 {latencies[int(0.95 * (len(latencies) - 1))]:.2f}s, max {latencies[-1]:.2f}s"
        f"\n  final GET /dashboard/: {dict(final_statuses)}"
    )

    assert changes["refresh_calls"] == SESSIONS, changes
    assert changes["refresh"] == SESSIONS, changes
    assert changes["refresh_rejected"] == 0, changes
    assert changes["reuse_detected"] == 0, changes
    assert set(statuses) <= {200, 503}, statuses
    assert max(in_flight) <= 2 * POOL_SIZE, "never more calls at once than the pools have threads"
    assert final_statuses == {200: SESSIONS}, final_statuses
    for user, response in zip(users, finals, strict=True):
        assert f"{user.who.first_name} {user.who.last_name}" in response.text
    # The final page loads may start a refresh or two of the new tokens (their leeway is
    # near on a slow run): each answered, none refused, none a reuse.
    assert after["refresh_calls"] - quiet["refresh_calls"] == after["refresh"] - quiet["refresh"]
    assert after["reuse_detected"] == before["reuse_detected"]
    assert after["refresh_rejected"] == before["refresh_rejected"]
    assert "ended: unknown_outcome" not in app.log()

    # Every value issued (two per sign-in, two per refresh) and none in a log.
    assert len(issued) >= 4 * SESSIONS, len(issued)
    for server in (app, api):
        text = server.log()
        assert text
        assert not [v[:8] for v in issued if v in text], f"a token value in {server.log_path}"
