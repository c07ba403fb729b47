"""Both token storage modes over real HTTP: the app under gunicorn, the reference API as its
own process. Every test taking `servers` runs once per AUTH_TOKEN_STORAGE value; the last
ones switch the setting on a running deployment (two servers, one database)."""

import re
import sqlite3
import time

import pytest
import requests

from authapi.demo import DEMO_USERS
from tests.flows import (
    burst,
    csrf_headers,
    jar_values,
    post_login,
    sealed_pair,
    set_cookie_headers,
    sign_in_as,
    sign_out,
)
from tests.servers import running_app, running_authapi

ADMIN, EVALUATOR, VIEWER = DEMO_USERS
TOKEN_COOKIES = {"access_token", "refresh_token"}
ACCESS_TTL = 3


@pytest.fixture(scope="module")
def servers(tmp_path_factory, storage_mode):
    workdir = tmp_path_factory.mktemp(f"storage-{storage_mode}")
    with (
        running_authapi(workdir, AUTHAPI_ACCESS_TTL=str(ACCESS_TTL)) as api,
        running_app(
            workdir,
            api_url=api.url,
            workers=2,
            gunicorn_args=("--threads", "8"),
            AUTH_TOKEN_STORAGE=storage_mode,
        ) as app,
    ):
        yield app, api, workdir / "app.sqlite3"


def assert_holds(browser: requests.Session, storage: str) -> None:
    """The jar holds the tokens in cookie mode and none of them in session mode."""
    held = TOKEN_COOKIES & {name for name, value in jar_values(browser).items() if value}
    assert held == (TOKEN_COOKIES if storage == "cookies" else set()), held


def wait_for_expiry() -> None:
    time.sleep(ACCESS_TTL + 0.5)


def test_sign_in_roles_and_the_proxy(servers, storage_mode):
    app, _, _ = servers
    admin = sign_in_as(app.url, ADMIN, storage=storage_mode)
    evaluator = sign_in_as(app.url, EVALUATOR, storage=storage_mode)

    assert admin.get(f"{app.url}/dashboard/admin/", timeout=10).status_code == 200
    denied = evaluator.get(f"{app.url}/dashboard/admin/", timeout=10)
    assert denied.status_code == 403
    assert "This page needs the role “admin”." in denied.text
    me = evaluator.get(f"{app.url}/api/users/me", timeout=10)
    assert me.status_code == 200
    assert me.json()["email"] == EVALUATOR.email
    _, refused = post_login(app.url, VIEWER.email, VIEWER.password)
    assert refused.status_code == 200
    assert "does not have access" in refused.text
    assert_holds(admin, storage_mode)


def test_an_expired_access_token_is_refreshed_once_for_a_burst(servers, storage_mode):
    app, api, database = servers
    browser = sign_in_as(app.url, ADMIN, storage=storage_mode)
    first = sealed_pair(database, browser)
    wait_for_expiry()
    before = api.stats()

    paths = ["/dashboard/", "/api/users/me", "/dashboard/evaluations/"]
    answers = burst([f"{app.url}{paths[i % 3]}" for i in range(12)], browser)

    after = api.stats()
    assert [getattr(r, "status_code", repr(r)) for r in answers] == [200] * 12
    assert after["refresh"] - before["refresh"] == 1
    assert after["reuse_detected"] == before["reuse_detected"]
    renewed = sealed_pair(database, browser)
    assert renewed.refresh != first.refresh
    handed = {r.cookies.get("refresh_token") for r in answers} - {None}
    # Cookie mode hands every answer the one new pair; session mode hands out none.
    assert handed == ({renewed.refresh} if storage_mode == "cookies" else set())


def test_a_late_tab_is_moved_on_without_a_second_refresh(servers, storage_mode):
    app, api, database = servers
    browser = sign_in_as(app.url, ADMIN, storage=storage_mode)
    late_tab = requests.Session()
    late_tab.cookies.update(browser.cookies)  # sent before the new cookies landed
    wait_for_expiry()
    # A view that calls the backend: it waits for the refresh, and the pair moves on.
    assert browser.get(f"{app.url}/dashboard/profile/", timeout=10).status_code == 200
    before = api.stats()

    answer = late_tab.get(f"{app.url}/dashboard/", timeout=10, allow_redirects=False)

    assert answer.status_code == 200
    assert api.stats()["refresh"] == before["refresh"]
    assert api.stats()["reuse_detected"] == before["reuse_detected"]
    current = sealed_pair(database, browser)
    if storage_mode == "cookies":
        assert answer.cookies.get("refresh_token") == current.refresh  # the grace path
    else:
        assert not TOKEN_COOKIES & set(answer.cookies)  # one session, one pair: no grace


def test_the_browser_refresh_endpoint(servers, storage_mode):
    app, api, database = servers
    browser = sign_in_as(app.url, ADMIN, storage=storage_mode)
    before = api.stats()

    def ask() -> requests.Response:
        return browser.post(
            f"{app.url}/accounts/refresh/", headers=csrf_headers(browser, app.url), timeout=10
        )

    # A pair just issued and not yet due is kept, however often a script asks.
    assert [ask().status_code for _ in range(5)] == [200] * 5
    assert api.stats()["refresh"] == before["refresh"]
    wait_for_expiry()

    answer = ask()

    assert answer.status_code == 200
    assert answer.json()["ok"] is True
    assert re.match(r"\d{4}-\d\d-\d\dT", answer.json()["access_expires_at"])
    assert api.stats()["refresh"] - before["refresh"] == 1
    assert_holds(browser, storage_mode)
    assert browser.get(f"{app.url}/dashboard/", timeout=10).status_code == 200
    assert sealed_pair(database, browser).refresh


def test_sign_out_revokes_the_pair_at_the_backend(servers, storage_mode):
    app, api, database = servers
    browser = sign_in_as(app.url, ADMIN, storage=storage_mode)
    pair = sealed_pair(database, browser)

    answer = sign_out(browser, app.url)

    assert answer.status_code == 302
    after = browser.get(f"{app.url}/dashboard/", timeout=10, allow_redirects=False)
    assert after.status_code == 302
    assert after.headers["Location"].startswith("/accounts/login/")
    assert not {n for n, v in jar_values(browser).items() if v} & TOKEN_COOKIES
    # The backend refuses the refresh token the session held.
    spent = requests.post(
        f"{api.url}/auth/refresh", cookies={"refresh_token": pair.refresh}, timeout=10
    )
    assert spent.status_code == 401


# --- switching AUTH_TOKEN_STORAGE on a running deployment ---------------------------------


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory):
    """Two app servers on one database (sessions and cache), one in each mode."""
    workdir = tmp_path_factory.mktemp("storage-switch")
    with (
        running_authapi(workdir, AUTHAPI_ACCESS_TTL=str(ACCESS_TTL)) as api,
        running_app(
            workdir,
            api_url=api.url,
            workers=1,
            name="cookie-server",
            database="shared",
            AUTH_TOKEN_STORAGE="cookies",
        ) as cookie_server,
        running_app(
            workdir,
            api_url=api.url,
            workers=1,
            name="session-server",
            database="shared",
            AUTH_TOKEN_STORAGE="session",
        ) as session_server,
    ):
        yield cookie_server, session_server, api


@pytest.mark.parametrize("first", ["cookies", "session"])
def test_switching_the_setting_signs_nobody_out(both_modes, first):
    cookie_server, session_server, api = both_modes
    servers = {"cookies": cookie_server, "session": session_server}
    other = "session" if first == "cookies" else "cookies"
    browser = sign_in_as(servers[first].url, ADMIN, storage=first)
    before = api.stats()

    # Each request lands on the other mode's server: the pair moves, nobody is signed out,
    # and across the expiries it is refreshed as usual, each token presented once.
    for step in range(6):
        mode = (other, first)[step % 2]
        # The first request after the expiry needs the token, so it waits for the refresh.
        path = "/dashboard/profile/" if step == 3 else "/dashboard/"
        answer = browser.get(f"{servers[mode].url}{path}", timeout=10, allow_redirects=False)
        assert answer.status_code == 200, (step, mode, answer.headers.get("Location"))
        assert_holds(browser, mode)
        if step == 2:
            wait_for_expiry()

    after = api.stats()
    assert after["refresh"] - before["refresh"] >= 1
    assert after["reuse_detected"] == before["reuse_detected"]
    assert after["refresh_rejected"] == before["refresh_rejected"]


def test_a_sign_in_records_its_browser_and_backend_sid(servers, storage_mode):
    app, _, database = servers
    browser = sign_in_as(app.url, ADMIN, storage=storage_mode)
    with sqlite3.connect(database) as db:
        row = db.execute(
            "SELECT device, address, backend_sid, signed_in_at, last_seen, token_storage "
            "FROM usersessions_usersession WHERE session_key = ?",
            (browser.cookies.get("sessionid"),),
        ).fetchone()
    device, address, sid, signed_in_at, last_seen, token_storage = row
    assert device.startswith("python-requests ")
    assert address == "127.0.0.1"
    assert sid.isdigit()  # the reference API's access tokens carry the sign-in's family id
    assert signed_in_at and last_seen
    assert token_storage == storage_mode  # the sign-in response's own touch wrote it


def test_another_users_token_cookies_never_act_for_them(servers, storage_mode):
    """Cookie tossing: cookie mode ends the session; session mode ignores the cookies (and
    deletes them). In neither does the proxy speak for the other user."""
    app, _, database = servers
    admin = sign_in_as(app.url, ADMIN, storage=storage_mode)
    evaluator = sign_in_as(app.url, EVALUATOR, storage=storage_mode)
    theirs = sealed_pair(database, evaluator)
    for name, value in (("access_token", theirs.access), ("refresh_token", theirs.refresh)):
        admin.cookies.set(name, value, path="/")

    me = admin.get(f"{app.url}/api/users/me", timeout=10)

    if storage_mode == "cookies":
        assert me.status_code == 401
        assert me.json()["error"] == "signed_out"
    else:
        assert me.status_code == 200
        assert me.json()["email"] == ADMIN.email
        deleted = [h for h in set_cookie_headers(me) if "Max-Age=0" in h]
        assert sorted(h.split("=")[0] for h in deleted) == sorted(TOKEN_COOKIES)
    assert evaluator.get(f"{app.url}/api/users/me", timeout=10).json()["email"] == EVALUATOR.email
