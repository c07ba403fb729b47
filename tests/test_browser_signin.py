"""The sign-in path in a real browser: headless Chromium driven by Playwright,
against the app under gunicorn and the reference API, both real processes.

Every test runs once per AUTH_TOKEN_STORAGE value (the module's servers take
`storage_mode`): the pages behave the same; only where the tokens live differs.
"""

import contextlib
import re

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from authapi.demo import DEMO_USERS
from tests.browser import chromium, sign_in
from tests.servers import running_app, running_authapi

ADMIN, EVALUATOR, VIEWER = DEMO_USERS
TOKEN_COOKIES = {"access_token", "refresh_token"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, storage_mode):
    workdir = tmp_path_factory.mktemp(f"browser-signin-{storage_mode}")
    with (
        running_authapi(workdir) as api,
        running_app(workdir, api_url=api.url, AUTH_TOKEN_STORAGE=storage_mode) as app,
    ):
        yield app, api


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, servers):
    app, _ = servers
    context = browser.new_context(base_url=app.url)
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def assert_tokens_out_of_reach(page, storage_mode):
    """Cookie mode: both token cookies, HttpOnly. Session mode: no token cookie at all.

    Either way no page script can read a token through `document.cookie`.
    """
    held = {c["name"]: c for c in page.context.cookies() if c["name"] in TOKEN_COOKIES}
    if storage_mode == "cookies":
        assert set(held) == TOKEN_COOKIES
        assert all(cookie["httpOnly"] for cookie in held.values())
    else:
        assert held == {}
    visible = page.evaluate("document.cookie")
    assert "access_token" not in visible and "refresh_token" not in visible


def test_admin_signs_in_sees_dashboard_opens_admin_and_signs_out(page, storage_mode, tmp_path):
    page.goto("/")
    page.get_by_role("link", name="Sign in").first.click()
    sign_in(page, ADMIN, path=page.url)

    page.wait_for_url(re.compile(r"/dashboard/$"))
    assert page.locator("#profile-name").inner_text() == "Ada Admin"
    assert page.locator("#profile-roles").inner_text() == "admin"
    # The countdown script turned the expiry into a local time and a live count.
    assert re.match(
        r"\(in \d+m \d+s\)", page.locator('.countdown[data-for="access-expiry"]').inner_text()
    )
    # Cookie mode: the browser holds both tokens and page scripts can read neither;
    # session mode: the browser holds no token at all.
    assert_tokens_out_of_reach(page, storage_mode)
    page.screenshot(path=tmp_path / "dashboard.png")

    page.get_by_role("link", name="Admin", exact=True).click()
    # The click starts a navigation; wait for the page, not just its address.
    expect(page.get_by_role("heading", name="Sign-in health")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/$"))
    assert page.get_by_text("You have been signed out.").is_visible()
    assert not [c for c in page.context.cookies() if c["name"] in TOKEN_COOKIES]
    page.goto("/dashboard/")
    assert "/accounts/login/?next=/dashboard/" in page.url


def test_evaluator_gets_a_403_that_says_why(page):
    sign_in(page, EVALUATOR)
    page.wait_for_url(re.compile(r"/dashboard/$"))
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Evaluations").is_visible()
    assert nav.get_by_role("link", name="Admin", exact=True).count() == 0

    response = page.goto("/dashboard/admin/")
    assert response.status == 403
    assert page.locator("#denied-reason").inner_text() == "This page needs the role “admin”."


def test_viewer_is_refused(page):
    sign_in(page, VIEWER)
    assert page.get_by_role("alert").inner_text().startswith("This account does not have access.")
    assert "/accounts/login/" in page.url
    assert not [c for c in page.context.cookies() if c["name"].endswith("_token")]


def test_next_is_carried_through_sign_in(page):
    page.goto("/dashboard/evaluations/")
    assert "next=/dashboard/evaluations/" in page.url
    sign_in(page, EVALUATOR, path=page.url)
    page.wait_for_url(re.compile(r"/dashboard/evaluations/$"))
    assert page.get_by_role("heading", name="Evaluations").is_visible()


def dashboard_tab_signed_out_elsewhere(page):
    """Sign in, open the dashboard in a second tab, sign out in the first; return the second."""
    sign_in(page, ADMIN)
    page.wait_for_url(re.compile(r"/dashboard/$"))
    other = page.context.new_page()
    other.goto("/dashboard/")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/$"))
    return other


def test_a_signed_out_tab_lands_on_login_with_next(page):
    other = dashboard_tab_signed_out_elsewhere(page)

    # The other tab still shows the dashboard; its next click finds the session over.
    other.get_by_role("link", name="Evaluations").click()
    other.wait_for_url(re.compile(r"/accounts/login/\?next="))
    assert other.url.endswith("/accounts/login/?next=/dashboard/evaluations/")
    # Signing in again from there goes where the click meant to go.
    other.get_by_label("Email").fill(ADMIN.email)
    other.get_by_label("Password").fill(ADMIN.password)
    other.get_by_role("button", name="Sign in").click()
    other.wait_for_url(re.compile(r"/dashboard/evaluations/$"))


def test_the_dashboard_script_sends_a_signed_out_tab_to_login(page):
    other = dashboard_tab_signed_out_elsewhere(page)

    other.locator("#profile-browser").click()  # fetch /api/users/me → 401 JSON

    other.wait_for_url(re.compile(r"/accounts/login/\?next="))
    assert other.url.endswith("/accounts/login/?next=%2Fdashboard%2F")


def test_the_browser_enforces_the_content_security_policy(page):
    """An injected inline script does not run: the CSP in a real browser, not only a header."""
    sign_in(page, ADMIN)
    page.wait_for_url(re.compile(r"/dashboard/$"))
    violations = []
    page.on("console", lambda message: violations.append(message.text))
    # Playwright may also report the blocked tag as an error; either way it must not run.
    with contextlib.suppress(PlaywrightError):
        page.add_script_tag(content="window.__injected = document.cookie;")
    assert page.evaluate("typeof window.__injected") == "undefined"
    assert any("Content Security Policy" in text for text in violations)
