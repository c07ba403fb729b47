"""The five failures of issue 9, over real HTTP: each must stay fixed.

The reference API runs as its own process (`runauthapi`), the app under
gunicorn (2 workers) on PostgreSQL + Redis when both run here, else SQLite and
the database cache. Every test asserts what a user notices (status, page,
cookies) and what reached the backend (its `/_stats` counters): after the
backend recovers everyone is still signed in and `reuse_detected` stays 0.

1. A slow backend: a refresh outlasting the request's wait, its result
   collected later than AUTH_REFRESH_GRACE by the same session.
2. A frozen backend (SIGSTOP): shorter than the refresh call's timeout, the
   session survives; longer, the session ends cleanly, the token never resent.
   And (found by tests/test_stress.py) a refresh never goes out on a pooled
   connection the backend is closing: it would be lost after sending.
3. Forged, garbage and foreign token cookies in a signed-in session; a user
   revoked or disabled at the backend while holding a valid access token.
4. A backend that scopes its refresh cookie to `/auth/refresh`.
5. Cookie values outside Latin-1, also with DEBUG=True.
6. No token value the tests saw issued appears in any server's log.

Servers start once per module; the last test scans all of their logs.
"""

import base64
import contextlib
import json
import os
import re
import time

import pytest
import requests

from accounts.tokens import access_token_claims, access_token_expiry
from authapi.demo import DEMO_USERS
from tests.cookies import parse_set_cookie
from tests.flows import (
    RawJar,
    cookie_header,
    csrf_headers,
    jar_values,
    post_login,
    raw_request,
    set_cookie_headers,
    sign_in_as,
    sign_out,
    wait_for,
    wait_until_access_expired,
    wait_until_all_expired,
)
from tests.servers import (
    SlowCloseProxy,
    postgres_available,
    redis_available,
    running_app,
    running_authapi,
    shared_storage,
    wait_for_log,
    wait_for_refreshes,
)
from tests.services import require

ADMIN, EVALUATOR = DEMO_USERS[0], DEMO_USERS[1]
TOKEN_COOKIES = ("access_token", "refresh_token")
GRACE = 2  # AUTH_REFRESH_GRACE of the slow-backend app
REVALIDATE = 2  # AUTH_REVALIDATE_INTERVAL of the app that checks cookies
SIGN_IN_TTL = 3  # access tokens of a sign-in a test waits out (signed_in_expiring)
UNKNOWN_MESSAGE = "We could not confirm your sign-in"

# Every token value the tests saw issued, and every server started: the last
# test scans the servers' logs for the values.
ISSUED: set[str] = set()
SERVERS: list = []


# --- servers ---------------------------------------------------------------------


def _storage_mode() -> str:
    if os.environ.get("REQUIRE_SERVICES") == "1":
        require(postgres_available(), "PostgreSQL is not running on 127.0.0.1:5432")
        require(redis_available(), "Redis is not running on 127.0.0.1:6379")
    return "auto"


@contextlib.contextmanager
def api_server(workdir, **env):
    with running_authapi(workdir, **env) as api:
        SERVERS.append(api)
        yield api


@contextlib.contextmanager
def app_server(workdir, api, name: str, *, workers: int = 2, **env):
    with (
        shared_storage(_storage_mode(), f"inv_{name}") as (_, shared),
        running_app(
            workdir, api_url=api.url, name=name, database=name, workers=workers, **shared, **env
        ) as app,
    ):
        SERVERS.append(app)
        yield app


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("invariants")


def api_in(workdir, name: str, **env: str):
    """Serve the reference API from its own directory under `workdir`."""
    directory = workdir / name
    directory.mkdir()
    return api_server(directory, **env)


@pytest.fixture(scope="module")
def api_short(workdir):
    """Access tokens of 6 s: long enough to collect a result after the grace window."""
    with api_in(workdir, "api-short", AUTHAPI_ACCESS_TTL="6") as api:
        yield api


@pytest.fixture(scope="module")
def api_long(workdir):
    """Access tokens of 5 minutes: nothing here expires during a test."""
    with api_in(workdir, "api-long", AUTHAPI_ACCESS_TTL="300") as api:
        yield api


@pytest.fixture(scope="module")
def api_scoped(workdir):
    """A backend writing its refresh cookie with `Path=/auth/refresh`, as many NestJS apps do."""
    with api_in(
        workdir, "api-scoped", AUTHAPI_ACCESS_TTL="4", AUTHAPI_REFRESH_COOKIE_PATH="/auth/refresh"
    ) as api:
        yield api


@pytest.fixture(scope="module")
def app_slow(workdir, api_short):
    """A request waits 1 s for a refresh; the refresh call itself waits 30 s."""
    with app_server(
        workdir,
        api_short,
        "slow",
        AUTH_REFRESH_WAIT="1",
        AUTH_REFRESH_TIMEOUT="30",
        AUTH_REFRESH_GRACE=str(GRACE),
        AUTH_BACKEND_TIMEOUT="2",
    ) as app:
        yield app


@pytest.fixture(scope="module")
def app_short_timeout(workdir, api_short):
    """The refresh call gives up after 3 s: shorter than the freeze it meets."""
    with app_server(
        workdir,
        api_short,
        "timeout",
        AUTH_REFRESH_WAIT="1",
        AUTH_REFRESH_TIMEOUT="3",
        AUTH_BACKEND_TIMEOUT="2",
    ) as app:
        yield app


@pytest.fixture(scope="module")
def app_behind_slow_close(workdir, api_short):
    """One worker talking to the API through a proxy that passes the API's close on 1.5 s late."""
    with (
        SlowCloseProxy(api_short.url, close_delay=1.5) as proxy,
        app_server(workdir, proxy, "slowclose", workers=1, AUTH_REFRESH_WAIT="3") as app,
    ):
        yield app


@pytest.fixture(scope="module")
def app_checked(workdir, api_long):
    """Re-reads each signed-in user from /users/me every 2 s."""
    with app_server(workdir, api_long, "checked", AUTH_REVALIDATE_INTERVAL=str(REVALIDATE)) as app:
        yield app


@pytest.fixture(scope="module")
def app_debug(workdir, api_long):
    """The development settings with DEBUG=True (the test settings force DEBUG off)."""
    with app_server(
        workdir, api_long, "debug", DJANGO_SETTINGS_MODULE="config.settings.dev", DEBUG="True"
    ) as app:
        yield app


@pytest.fixture(scope="module")
def app_scoped(workdir, api_scoped):
    with app_server(workdir, api_scoped, "scoped") as app:
        yield app


@pytest.fixture
def faults_reset(api_short):
    yield
    api_short.set_faults(refresh_delay=None)


# --- what a user and the backend see ------------------------------------------------


def remember(*sources) -> None:
    """Add the token values of jars, responses or Set-Cookie lists to ISSUED."""
    for source in sources:
        if isinstance(source, requests.Session):
            values = [source.cookies.get(name) for name in TOKEN_COOKIES]
        elif isinstance(source, requests.Response):
            headers = set_cookie_headers(source)
            values = [parse_set_cookie(h).value for h in headers]
            for earlier in source.history:
                values += [parse_set_cookie(h).value for h in set_cookie_headers(earlier)]
        else:
            values = [parse_set_cookie(h).value for h in source]
        ISSUED.update(v.strip('"') for v in values if v and len(v.strip('"')) >= 16)


def signed_in(base_url: str, user=ADMIN) -> requests.Session:
    """Sign in through the form; the jar then opens a new connection per request.

    (gunicorn closes idle keep-alive connections after 5 s; a client reusing
    one at that moment fails before the app sees the request. Browsers retry
    that; `requests` does not.)
    """
    browser = sign_in_as(base_url, user)
    browser.headers["Connection"] = "close"
    browser.close()  # the sign-in's own kept-alive connection too
    remember(browser)
    return browser


def get(browser: requests.Session, url: str, **kwargs) -> requests.Response:
    kwargs.setdefault("allow_redirects", False)
    response = browser.get(url, timeout=30, **kwargs)
    remember(response, browser)
    return response


def token_cookies_set(response: requests.Response) -> dict[str, str]:
    """Return name -> value of the token cookies a response sets (not deletes)."""
    found = {}
    for header in set_cookie_headers(response):
        cookie = parse_set_cookie(header)
        if cookie.name in TOKEN_COOKIES and cookie.value and cookie.attr("Max-Age") != "0":
            found[cookie.name] = cookie.value
    return found


def token_cookies_deleted(headers: list[str]) -> list[tuple[str, str]]:
    """Return (name, path) of every token cookie deletion among raw Set-Cookie headers."""
    deleted = []
    for header in headers:
        cookie = parse_set_cookie(header)
        if cookie.name in TOKEN_COOKIES and (
            cookie.attr("Max-Age") == "0" or not cookie.value.strip('"')
        ):
            deleted.append((cookie.name, cookie.attr("Path") or "/"))
    return deleted


def assert_not_signed_out(response: requests.Response, user=ADMIN) -> None:
    """A page or a 503 for a signed-in user; never the login page, never cookies deleted."""
    assert response.status_code in (200, 503), (response.status_code, response.text[:300])
    assert not token_cookies_deleted(set_cookie_headers(response)), set_cookie_headers(response)
    if response.status_code == 200 and "text/html" in response.headers.get("Content-Type", ""):
        assert f"{user.first_name} {user.last_name}" in response.text


def signed_in_expiring(base_url: str, api, user=ADMIN) -> requests.Session:
    """Sign in holding an access token of SIGN_IN_TTL s; the API's later tokens live as set.

    For a test that waits for the sign-in's token to expire: api_short's 6 s
    are for the refreshed token (collected after the grace window).
    """
    api.set_faults(access_ttl=SIGN_IN_TTL)
    try:
        return signed_in(base_url, user)
    finally:
        api.set_faults(access_ttl=None)


def assert_signed_in(browser: requests.Session, base_url: str, user=ADMIN) -> requests.Response:
    page = get(browser, f"{base_url}/dashboard/")
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    assert f"{user.first_name} {user.last_name}" in page.text
    return page


def delta(after: dict, before: dict) -> dict:
    return {name: after[name] - before[name] for name in after}


def send(url: str, cookies: dict[str, str], method: str = "GET", **kwargs) -> requests.Response:
    """One request with exactly these cookies (no jar), redirects not followed."""
    headers = {"Cookie": cookie_header(cookies), **kwargs.pop("headers", {})}
    response = requests.request(
        method, url, headers=headers, allow_redirects=False, timeout=30, **kwargs
    )
    remember(response)
    return response


def unsigned_jwt(like: str, **changes) -> str:
    """Return an `alg: none` JWT with the claims of `like`, changed as given."""

    def part(data: dict) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {**access_token_claims(like), **changes}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# --- 1. a slow backend ------------------------------------------------------------------


def test_slow_refresh_is_collected_later_by_the_same_session(app_slow, api_short, faults_reset):
    """Failure 1: a refresh slower than every wait of the app, collected after the grace window.

    The backend takes 6 s per refresh; a request waits 1 s. The user opens a
    page once the access token has expired (503 or a page, never a sign-out),
    comes back after the refresh finished and after AUTH_REFRESH_GRACE: the
    same session collects the new pair. The backend saw the token once.
    """
    api_short.set_faults(refresh_delay=6)
    browser = signed_in_expiring(app_slow.url, api_short)
    old = jar_values(browser)
    wait_until_access_expired(browser)
    before = api_short.stats()

    first = get(browser, f"{app_slow.url}/dashboard/")
    assert_not_signed_out(first)

    done = wait_for_refreshes(api_short, before["refresh"] + before["refresh_rejected"] + 1)
    time.sleep(GRACE + 0.5)  # nobody collects the result for longer than the grace window
    back = assert_signed_in(browser, app_slow.url)
    after = api_short.stats()

    renewed = token_cookies_set(back)
    assert set(renewed) == set(TOKEN_COOKIES), set_cookie_headers(back)
    assert renewed["access_token"] != old["access_token"]
    assert renewed["refresh_token"] != old["refresh_token"]
    assert delta(done, before)["refresh"] == 1
    changes = delta(after, before)
    assert changes["refresh_calls"] == 1, changes
    assert changes["refresh"] == 1, changes
    assert changes["refresh_rejected"] == 0, changes
    assert after["reuse_detected"] == 0


# --- 2. a frozen backend ------------------------------------------------------------------


def test_frozen_backend_shorter_than_the_call_timeout_keeps_everyone(app_slow, api_short):
    """Failure 1: SIGSTOP for longer than the request's wait and the backend timeout.

    Requests during the freeze answer 503 (or the page), never a sign-out;
    after SIGCONT the one refresh call in flight completes and the next
    request is signed in with the new pair.
    """
    browser = signed_in_expiring(app_slow.url, api_short)
    old = jar_values(browser)
    wait_until_access_expired(browser)
    before = api_short.stats()

    api_short.pause()
    try:
        frozen_at = time.monotonic()
        page = get(browser, f"{app_slow.url}/dashboard/")
        # Past AUTH_BACKEND_TIMEOUT (2 s) too, while the refresh call still waits.
        time.sleep(max(0.0, 2.6 - (time.monotonic() - frozen_at)))
        call = get(browser, f"{app_slow.url}/api/users/me")
        frozen_for = time.monotonic() - frozen_at
    finally:
        api_short.resume()

    assert_not_signed_out(page)
    assert call.status_code == 503, (call.status_code, call.text[:300])
    assert call.json()["error"] == "backend_unavailable"
    assert not token_cookies_deleted(set_cookie_headers(call))
    assert frozen_for > 2.0

    wait_for_refreshes(api_short, before["refresh"] + before["refresh_rejected"] + 1)
    back = assert_signed_in(browser, app_slow.url)
    after = api_short.stats()

    renewed = token_cookies_set(back)
    assert renewed.get("refresh_token") not in (None, old["refresh_token"])
    changes = delta(after, before)
    assert changes["refresh_calls"] == 1, changes
    assert changes["refresh_rejected"] == 0, changes
    assert after["reuse_detected"] == 0


def test_freeze_outlasting_the_call_timeout_ends_the_session_cleanly(app_short_timeout, api_short):
    """Failure 1: SIGSTOP for longer than AUTH_REFRESH_TIMEOUT (3 s), then SIGCONT.

    The call timed out after the backend may have received it: its outcome
    is unknown. The app never presents that token again; the session ends
    with a page that says why (and a 401 for a script), and the backend
    detects no reuse.
    """
    app = app_short_timeout
    page_user = signed_in_expiring(app.url, api_short)
    script_user = signed_in_expiring(app.url, api_short)
    wait_until_all_expired([page_user, script_user])
    unknown_before = len(re.findall("Refresh outcome unknown", app.log()))
    before = api_short.stats()

    api_short.pause()
    try:
        during = [
            get(page_user, f"{app.url}/dashboard/"),
            get(script_user, f"{app.url}/api/users/me"),
        ]
        # Both calls time out in the app (3 s) while the backend is still frozen.
        wait_for_log(app, "Refresh outcome unknown", count=unknown_before + 2, timeout=20)
    finally:
        api_short.resume()

    assert_not_signed_out(during[0])
    assert during[1].status_code == 503, (during[1].status_code, during[1].text[:300])

    # The backend, resumed, handles the two requests it had received.
    wait_for_refreshes(api_short, before["refresh"] + before["refresh_rejected"] + 2)

    landed = page_user.get(f"{app.url}/dashboard/", timeout=30)  # redirects followed
    remember(landed, page_user)
    assert landed.url.startswith(f"{app.url}/accounts/login/"), landed.url
    assert UNKNOWN_MESSAGE in landed.text
    assert landed.history and token_cookies_deleted(set_cookie_headers(landed.history[0]))
    assert get(page_user, f"{app.url}/dashboard/").status_code == 302

    script = get(script_user, f"{app.url}/api/users/me")
    assert script.status_code == 401, (script.status_code, script.text[:300])
    assert script.json()["error"] == "signed_out"

    after = api_short.stats()
    changes = delta(after, before)
    assert changes["refresh_calls"] == 2, f"a token was presented again: {changes}"
    assert changes["refresh_rejected"] == 0, changes
    assert after["reuse_detected"] == 0


def test_a_refresh_never_rides_a_connection_the_backend_is_closing(
    app_behind_slow_close, api_short
):
    """Failure 2's symptom without the pool filling up: a refresh lost on a dying connection.

    The backend closes each refresh connection after answering; a proxy
    passes that close on 1.5 s late (as a loaded server or a load balancer
    does). Two sessions of one worker refresh one after the other: the
    second call must go out on a new connection, reach the backend, and keep
    its user signed in.
    """
    app = app_behind_slow_close
    first = signed_in_expiring(app.url, api_short, ADMIN)
    second = signed_in_expiring(app.url, api_short, EVALUATOR)
    wait_until_all_expired([first, second])
    before = api_short.stats()

    # Views that call the backend, so each waits for its session's refresh.
    assert get(first, f"{app.url}/dashboard/profile/").status_code == 200
    page = get(second, f"{app.url}/dashboard/profile/")  # the next refresh, within the delay

    changes = delta(api_short.stats(), before)
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    assert changes["refresh_calls"] == changes["refresh"] == 2, changes
    assert_signed_in(second, app.url, EVALUATOR)
    assert api_short.stats()["reuse_detected"] == 0


# --- 3. cookies that are not the session's -------------------------------------------------

GATED = ["/dashboard/admin/", "/admin/", "/api/users/me"]
FAR_FUTURE = 10 * 365 * 86400


def assert_never_opens(app_url: str, cookies: dict[str, str], first: str) -> None:
    """Send `cookies` to every gated URL, `first` first (it meets them first): never a 200."""
    for path in [first, *[p for p in GATED if p != first]]:
        response = send(f"{app_url}{path}", cookies)
        assert response.status_code != 200, (path, response.text[:300])
        assert response.status_code < 500, (path, response.status_code)
        if path.startswith("/api/"):
            assert response.status_code == 401, (path, response.status_code)
            assert response.json()["error"] == "signed_out"


def alg_none(real: dict) -> dict:
    exp = int(time.time()) + FAR_FUTURE
    return {"access_token": unsigned_jwt(real["access_token"], exp=exp, roles=["admin"])}


def alg_none_with_refresh(real: dict) -> dict:
    return {**alg_none(real), "refresh_token": real["refresh_token"]}


def garbage(real: dict) -> dict:
    return {"access_token": "garbage"}


def garbage_with_refresh(real: dict) -> dict:
    return {"access_token": "garbage", "refresh_token": real["refresh_token"]}


@pytest.mark.parametrize("first", GATED)
@pytest.mark.parametrize("forge", [alg_none, alg_none_with_refresh, garbage, garbage_with_refresh])
def test_forged_token_cookies_never_open_a_gated_page(app_checked, api_long, forge, first):
    """Failure 3: the session cookie with a forged or garbage access token.

    An `alg: none` JWT with a far-future `exp` (with and without the real
    refresh cookie), or `garbage`: the first request ends the session and no
    gated page, the Django admin or the proxy ever answers 200. The real
    owner's cookies are then signed out too (the session is over), and the
    backend never saw the forged token.
    """
    browser = signed_in(app_checked.url)
    real = jar_values(browser)
    session = {k: v for k, v in real.items() if k not in TOKEN_COOKIES}
    before = api_long.stats()

    assert_never_opens(app_checked.url, {**session, **forge(real)}, first)

    assert get(browser, f"{app_checked.url}/dashboard/").status_code == 302
    after = api_long.stats()
    changes = delta(after, before)
    assert changes["me"] == changes["me_rejected"] == 0, "the proxy never called the backend"
    assert after["reuse_detected"] == 0


@pytest.mark.parametrize("first", GATED)
def test_another_users_token_cookies_end_the_session(app_checked, api_long, first):
    """Failure 3: cookie tossing. A's session cookie with B's token cookies.

    The session ends; the proxy never answers with B's profile (nor A's);
    no gated page shows. B's own sign-in is untouched.
    """
    admin = signed_in(app_checked.url, ADMIN)
    evaluator = signed_in(app_checked.url, EVALUATOR)
    a, b = jar_values(admin), jar_values(evaluator)
    mixed = {
        **{k: v for k, v in a.items() if k not in TOKEN_COOKIES},
        **{k: b[k] for k in TOKEN_COOKIES},
    }

    before = api_long.stats()
    for path in [first, *[p for p in GATED if p != first], "/dashboard/"]:
        response = send(f"{app_checked.url}{path}", mixed)
        assert response.status_code != 200, (path, response.text[:300])
        assert response.status_code < 500, (path, response.status_code)
        assert EVALUATOR.email not in response.text
        assert ADMIN.email not in response.text
    changes = delta(api_long.stats(), before)
    assert changes["me"] == changes["me_rejected"] == 0, "the proxy never acted as anyone"

    assert get(admin, f"{app_checked.url}/dashboard/").status_code == 302, "A's session ended"
    assert_signed_in(evaluator, app_checked.url, EVALUATOR)
    assert re.search(
        r"WARNING accounts\.signout Session of backend user \S+ ended: "
        r"foreign_cookies",
        app_checked.log(),
    )
    assert api_long.stats()["reuse_detected"] == 0


@pytest.mark.parametrize(
    ("user", "page", "action"),
    [
        pytest.param(ADMIN, "/dashboard/admin/", ("revoke",), id="revoked"),
        pytest.param(EVALUATOR, "/dashboard/evaluations/", ("disable",), id="disabled"),
    ],
)
def test_backend_side_revocation_closes_gated_pages_within_the_interval(
    app_checked, api_long, user, page, action
):
    """Failure 3 / invariant 2: a user revoked or disabled at the backend.

    The access token (5 minutes) stays valid by its own `exp`; within
    AUTH_REVALIDATE_INTERVAL (2 s) the app re-reads the user, and every gated
    page closes.
    """
    browser = signed_in(app_checked.url, user)
    assert get(browser, f"{app_checked.url}{page}").status_code == 200
    before = api_long.stats()
    try:
        api_long.apiuser(*action, user.email)
        changed_at = time.monotonic()
        closed = wait_for(
            lambda: get(browser, f"{app_checked.url}{page}").status_code != 200,
            timeout=10,
            interval=0.25,
            what=f"{page} to close after `apiuser {action[0]}`",
        )
        took = time.monotonic() - changed_at
    finally:
        if action[0] == "disable":
            api_long.apiuser("enable", user.email)

    assert closed
    print(f"\n{action[0]}: gated page closed after {took:.1f}s (interval {REVALIDATE}s)")
    expiry = access_token_expiry(browser.cookies.get("access_token"))
    assert expiry is None or expiry.timestamp() > time.time(), "it closed before the token expired"
    assert get(browser, f"{app_checked.url}{page}").status_code == 302
    assert get(browser, f"{app_checked.url}/api/users/me").status_code == 401
    after = api_long.stats()
    assert delta(after, before)["refresh"] == 0
    assert after["reuse_detected"] == 0


# --- 4. a refresh cookie scoped to the backend's path ----------------------------------------


def test_path_scoped_refresh_cookie_is_relayed_at_root_and_refreshes(app_scoped, api_scoped):
    """Failure 4: the backend writes `refresh_token` with `Path=/auth/refresh`.

    The app relays it at `Path=/` (AUTH_COOKIE_PATH), so the browser sends it
    to the app's pages, and the transparent refresh works after expiry.
    """
    app, api = app_scoped, api_scoped
    direct = requests.post(
        f"{api.url}/auth/login", json={"email": ADMIN.email, "password": ADMIN.password}, timeout=10
    )
    remember(direct)
    backend_paths = {
        parse_set_cookie(h).name: parse_set_cookie(h).attr("Path")
        for h in set_cookie_headers(direct)
    }
    assert backend_paths == {"access_token": "/", "refresh_token": "/auth/refresh"}

    browser, login = post_login(app.url, ADMIN.email, ADMIN.password)
    remember(login, browser)
    assert login.status_code == 302
    relayed = {parse_set_cookie(h).name: parse_set_cookie(h) for h in set_cookie_headers(login)}
    assert relayed["refresh_token"].attr("Path") == "/"
    assert relayed["access_token"].attr("Path") == "/"
    assert [c.path for c in browser.cookies if c.name == "refresh_token"] == ["/"]

    wait_until_access_expired(browser)
    before = api.stats()
    page = get(browser, f"{app.url}/dashboard/profile/")  # its call waits for the refresh
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    renewed = {
        parse_set_cookie(h).name: parse_set_cookie(h)
        for h in set_cookie_headers(page)
        if parse_set_cookie(h).name in TOKEN_COOKIES
    }
    assert set(renewed) == set(TOKEN_COOKIES), set_cookie_headers(page)
    assert {c.attr("Path") for c in renewed.values()} == {"/"}
    assert renewed["refresh_token"].value == browser.cookies.get("refresh_token")
    changes = delta(api.stats(), before)
    assert changes["refresh_calls"] == changes["refresh"] == 1, changes
    assert api.stats()["reuse_detected"] == 0


def test_sign_out_deletes_a_path_scoped_refresh_cookie_at_every_path(app_scoped, api_scoped):
    """Failure 4: sign-out deletes the refresh cookie at `/` and at `/auth/refresh`.

    A browser that ever stored the backend's cookie at `/auth/refresh` (or an
    earlier version of the app that relayed it there) must lose that copy too.
    """
    app, api = app_scoped, api_scoped
    browser = signed_in(app.url)
    assert_signed_in(browser, app.url)
    last_refresh = browser.cookies.get("refresh_token")

    out = sign_out(browser, app.url)
    remember(out)
    assert out.status_code == 302
    deleted = token_cookies_deleted(set_cookie_headers(out))
    assert ("refresh_token", "/") in deleted, set_cookie_headers(out)
    assert ("access_token", "/") in deleted, set_cookie_headers(out)
    assert get(browser, f"{app.url}/dashboard/").status_code == 302
    revoked = requests.post(
        f"{api.url}/auth/refresh", cookies={"refresh_token": last_refresh}, timeout=10
    )
    assert revoked.status_code == 401, "sign-out revoked the sign-in at the backend"
    assert api.stats()["reuse_detected"] == 0
    assert ("refresh_token", "/auth/refresh") in deleted, set_cookie_headers(out)


# --- 5. cookie values outside Latin-1 --------------------------------------------------------

NOT_LATIN_1 = "é€"
TARGETS = [
    ("GET", "/"),
    ("GET", "/dashboard/"),
    ("GET", "/api/users/me"),
    ("POST", "/accounts/refresh/"),
    ("POST", "/accounts/logout/"),
]


@pytest.mark.parametrize("bad", ["access_token", "refresh_token"])
@pytest.mark.parametrize("which", ["app_checked", "app_debug"])
def test_non_latin_1_cookie_values_never_give_5xx(request, api_long, which, bad):
    """Failure 5: `access_token=é€` or `refresh_token=é€` in a signed-in session.

    Sent as raw UTF-8 bytes (as a browser may), to pages, the proxy, the
    refresh endpoint and sign-out: never a 5xx; sign-out completes and the
    session is signed out afterwards. Under DEBUG=True no answer holds a
    token value that was issued.
    """
    app = request.getfixturevalue(which)
    debug = which == "app_debug"
    if debug:
        page = requests.get(f"{app.url}/no-such-page/", timeout=10)
        assert page.status_code == 404 and "URLconf" in page.text, "DEBUG is on"

    for method, path in TARGETS:
        browser = signed_in(app.url)
        jar = RawJar(jar_values(browser))
        original_refresh = jar["refresh_token"]
        headers = csrf_headers(browser, app.url) if method == "POST" else {}
        if path == "/api/users/me":
            headers["Accept"] = "application/json"

        answer = raw_request(
            app.url, method, path, cookie=jar.header({bad: NOT_LATIN_1}), headers=headers
        )
        remember(answer.set_cookies())
        assert answer.status < 500, (method, path, answer.status, answer.body[:500])
        jar.update_from(answer)
        if debug:
            leaked = [v for v in ISSUED if v.encode() in answer.body]
            assert not leaked, (method, path, "a token value in the body")

        # The browser goes on holding the odd cookie: still no 5xx anywhere.
        follow = raw_request(app.url, "GET", "/dashboard/", cookie=jar.header({bad: NOT_LATIN_1}))
        remember(follow.set_cookies())
        assert follow.status < 500, (method, path, "then /dashboard/", follow.status)
        jar.update_from(follow)
        if debug:
            assert not [v for v in ISSUED if v.encode() in follow.body]

        if path == "/accounts/logout/":
            assert answer.status == 302, answer.status
            assert follow.status == 302 and "/accounts/login/" in (follow.header("Location") or "")
            clean = raw_request(app.url, "GET", "/dashboard/", cookie=jar.header())
            assert clean.status == 302, "signed out, whatever cookies are left"
            revoked = requests.post(
                f"{api_long.url}/auth/refresh",
                cookies={"refresh_token": original_refresh},
                timeout=10,
            )
            assert revoked.status_code == 401, "sign-out reached the backend"
    assert api_long.stats()["reuse_detected"] == 0


# --- 6. no token in any log -----------------------------------------------------------------


def test_no_issued_token_value_in_any_server_log():
    """Scan the log file of every server this module started for every token value seen.

    Runs last: the values come from the jars and Set-Cookie headers of the
    tests above (access JWTs and refresh tokens), the logs are the servers'
    own files (stdout and stderr: gunicorn, Django's loggers, the API).
    """
    assert len(ISSUED) >= 20, f"only {len(ISSUED)} token values collected: did the tests run?"
    assert len(SERVERS) >= 4, f"only {len(SERVERS)} servers ran"
    logs = {str(server.log_path): server.log() for server in SERVERS}
    assert all(logs.values()), "every server wrote a log"
    assert any("Session of backend user" in text for text in logs.values()), (
        "the accounts loggers reach the log files"
    )
    needles = set()
    for value in ISSUED:
        needles.add(value)
        if value.count(".") == 2:  # a JWT: its signature alone identifies it
            needles.add(value.rsplit(".", 1)[1])
        else:
            needles.add(value[:16])
    found = {
        path: [n[:8] + "…" for n in needles if len(n) >= 16 and n in text]
        for path, text in logs.items()
    }
    found = {path: hits for path, hits in found.items() if hits}
    print(f"\nscanned {len(logs)} logs for {len(ISSUED)} token values: {len(found)} with hits")
    assert not found, found
