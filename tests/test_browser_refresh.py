"""Token expiry is not a user-visible event: a real browser, 3-second access tokens.

Two tabs of one browser (one cookie jar) click around while the tokens expire
again and again; the dashboard's own script refreshes through
/accounts/refresh/ and reads /api/users/me. Nobody is signed out, no page or
call fails, and the reference API never sees a refresh token twice. Both run
once per AUTH_TOKEN_STORAGE value (the module's servers take `storage_mode`):
the same holds whether the browser carries the tokens or the session does.
"""

import re
import time

import pytest
from playwright.sync_api import expect

from authapi.demo import DEMO_USERS
from tests.browser import chromium, sign_in
from tests.servers import running_app, running_authapi

ADMIN = DEMO_USERS[0]
PAGES = ["/dashboard/", "/dashboard/evaluations/", "/dashboard/admin/", "/"]
TOKEN_COOKIES = {"access_token", "refresh_token"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, storage_mode):
    workdir = tmp_path_factory.mktemp(f"browser-refresh-{storage_mode}")
    with (
        running_authapi(workdir, AUTHAPI_ACCESS_TTL="3", AUTHAPI_REFRESH_DELAY="0.2") as api,
        running_app(
            workdir,
            api_url=api.url,
            workers=2,
            gunicorn_args=("--threads", "4"),
            AUTH_TOKEN_STORAGE=storage_mode,
        ) as app,
    ):
        yield app, api


@pytest.fixture
def context(servers):
    app, _ = servers
    with chromium() as browser:
        context = browser.new_context(base_url=app.url)
        context.set_default_timeout(20_000)
        yield context
        context.close()


def token_cookies(context) -> set[str]:
    """Return the names of the token cookies the browser holds (HttpOnly or not)."""
    return {c["name"] for c in context.cookies() if c["name"] in TOKEN_COOKIES}


def test_two_tabs_click_around_through_many_expiries(context, servers, storage_mode):
    _, api = servers
    first = context.new_page()
    sign_in(first, ADMIN)
    first.wait_for_url(re.compile(r"/dashboard/$"))
    second = context.new_page()
    before = api.stats()
    failures = []
    for page in (first, second):
        page.on(
            "response",
            lambda r: failures.append((r.status, r.url)) if r.status >= 400 else None,
        )

    deadline = time.monotonic() + 15  # five access-token lifetimes
    step = 0
    while time.monotonic() < deadline:
        for tab in (first, second):
            response = tab.goto(PAGES[step % len(PAGES)])
            assert response.status == 200, (tab.url, response.status)
            assert "/accounts/login/" not in tab.url
            if tab.url.endswith("/dashboard/"):
                tab.locator("#profile-browser").click()
                expect(tab.locator("#demo-output")).to_contain_text("→ 200")
        step += 1
        time.sleep(0.4)
    # The dashboard's script keeps its tab fresh on its own while it sits open:
    # during the wait no page is loaded, so every refresh at the API is the
    # script's doing (its POSTs to /accounts/refresh/ are counted too).
    first.goto("/dashboard/")
    script_refreshes = []
    first.on(
        "request",
        lambda r: script_refreshes.append(r.url) if r.url.endswith("/accounts/refresh/") else None,
    )
    quiet_before = api.stats()["refresh"]
    first.wait_for_timeout(7000)
    assert len(script_refreshes) >= 2
    assert api.stats()["refresh"] - quiet_before >= 2
    first.locator("#profile-server").click()
    expect(first.locator("#demo-output")).to_contain_text("→ 200")

    after = api.stats()
    assert failures == []
    assert after["refresh"] - before["refresh"] >= 4
    assert after["reuse_detected"] == before["reuse_detected"]
    assert after["refresh_rejected"] == before["refresh_rejected"]
    assert first.locator("#profile-name").inner_text() == "Ada Admin"
    # After all those refreshes the tokens are still where the mode keeps them.
    assert token_cookies(context) == (TOKEN_COOKIES if storage_mode == "cookies" else set())


def test_both_tabs_hit_pages_at_the_moment_of_expiry(context, servers, storage_mode):
    _, api = servers
    first = context.new_page()
    # Land on the home page: no dashboard script refreshing on its own meanwhile.
    sign_in(first, ADMIN, path="/accounts/login/?next=/")
    first.wait_for_url(re.compile(r"/$"))
    second = context.new_page()
    second.goto("/")
    before = api.stats()
    # The pair the refresh issues lives long: on a loaded machine the checks below can
    # outlast a 3-second token's half-life and count a second, legitimate refresh.
    api.set_faults(access_ttl=60)
    try:
        time.sleep(3.2)  # the access token has expired in both tabs' shared jar

        # Fire both navigations at once from the page side, then wait for both.
        first.evaluate("location.assign('/dashboard/evaluations/')")
        second.evaluate("location.assign('/dashboard/admin/')")
        first.wait_for_url(re.compile(r"/dashboard/evaluations/$"))
        second.wait_for_url(re.compile(r"/dashboard/admin/$"))

        expect(first.get_by_role("heading", name="Evaluations")).to_be_visible()
        expect(second.get_by_role("heading", name="Sign-in health")).to_be_visible()
        # The pages needed no backend call and did not wait; a call that needs the token
        # waits for the refresh they started.
        assert first.evaluate("fetch('/api/users/me').then(r => r.status)") == 200
    finally:
        api.set_faults(access_ttl=None)
    after = api.stats()
    assert after["refresh"] - before["refresh"] == 1
    assert after["reuse_detected"] == before["reuse_detected"]
    assert token_cookies(context) == (TOKEN_COOKIES if storage_mode == "cookies" else set())
