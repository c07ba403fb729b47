"""AUTH_TOKEN_STORAGE=session in a real browser: no token value ever reaches it.

The pair stays sealed in the server-side session (accounts/vault.py). Chromium
signs in as the demo admin, opens every page, clicks the dashboard's demo
buttons and lets the 3-second access token expire. Everything the browser could
see is kept as it arrives: its cookies, `document.cookie`, web storage, each
page's HTML, every request's and response's headers and every response body.
After each response the app's session rows are read from its SQLite database
and unsealed with the suite's SECRET_KEY (the servers run config.settings.test
too), so every pair the session held is known; none of those values, nor any
20-character slice of one, may appear in anything the browser saw.
"""

import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from accounts import vault
from accounts.client import Tokens
from accounts.sessions import SessionStore
from accounts.tokens import access_token_expiry
from authapi.demo import DEMO_USERS
from tests.browser import chromium, sign_in
from tests.servers import running_app, running_authapi

ADMIN = DEMO_USERS[0]
ACCESS_TTL = 3
# Every page, ending on the dashboard with its demo buttons.
PAGES = ["/", "/accounts/sessions/", "/dashboard/evaluations/", "/dashboard/admin/", "/dashboard/"]
# The dashboard's demo buttons that call the auth API through the app, and what
# #demo-output shows once the call has come back (static/js/dashboard.js).
DEMO_CALLS = [
    ("#profile-server", "GET /dashboard/profile/ → 200"),
    ("#profile-browser", "GET /api/users/me → 200"),
    ("#refresh-browser", "POST /accounts/refresh/ → 200"),
]
SLICE = 20  # a leak of this many characters of a token counts as a leak


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("browser-session-storage")
    with (
        running_authapi(workdir, AUTHAPI_ACCESS_TTL=str(ACCESS_TTL)) as api,
        running_app(workdir, api_url=api.url, AUTH_TOKEN_STORAGE="session") as app,
    ):
        yield app, api, workdir / "app.sqlite3"


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def watched(browser, servers):
    """Yield (page, Exposure): a fresh browser context whose every response is kept."""
    app, _, database = servers
    context = browser.new_context(base_url=app.url)
    context.set_default_timeout(15_000)
    exposure = Exposure(context, database)
    yield context.new_page(), exposure
    context.close()


def read_pairs(database: Path) -> dict[str, Tokens]:
    """Return the pair sealed in each of the app's session rows, by session key."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as db:
        rows = db.execute("SELECT session_key, session_data FROM accounts_session").fetchall()
    pairs = {}
    for key, data in rows:
        pair = vault.unseal(SessionStore().decode(data).get(vault.SESSION_KEY))
        if pair is not None:
            pairs[key] = pair
    return pairs


class Exposure:
    """What a browser context could see, and every token pair the app's sessions held meanwhile.

    Listens to the context's responses: each one's request and response headers
    and its body (redirects have none) are kept, then the session rows are read
    again, so a pair the app stored is known before the browser's next step.
    `look(page)` adds what a page script could read and the page's HTML.
    """

    def __init__(self, context, database: Path):
        self.context = context
        self.database = database
        self.seen: list[tuple[str, str]] = []  # (where, text)
        self.tokens: set[str] = set()
        self.failures: list[tuple[int, str]] = []
        self.read: set[tuple[str, str]] = set()  # (method, path) whose body was read
        self.unread: set[tuple[str, str]] = set()
        context.on("response", self._on_response)

    def _keep(self, where: str, text: str) -> None:
        self.seen.append((where, text))

    def _on_response(self, response) -> None:
        request = response.request
        where = f"{request.method} {response.url} → {response.status}"
        if response.status >= 400:
            self.failures.append((response.status, response.url))
        self._keep(f"request headers of {where}", _headers(request.headers_array()))
        self._keep(f"response headers of {where}", _headers(response.headers_array()))
        if not 300 <= response.status < 400:
            try:
                self._keep(f"body of {where}", response.body().decode("latin-1"))
            except PlaywrightError:
                # Chromium drops a body once its page has navigated away: the dashboard's
                # script refreshes on a timer, and a click may leave the page meanwhile.
                self.unread.add(_endpoint(response))
            else:
                self.read.add(_endpoint(response))
        self.collect_pairs()

    def collect_pairs(self) -> None:
        for pair in read_pairs(self.database).values():
            self.tokens.update(token for token in (pair.access, pair.refresh) if token)

    def session_pair(self) -> Tokens:
        """Return the pair sealed in the session of this context's `sessionid` cookie."""
        jar = {c["name"]: c["value"] for c in self.context.cookies()}
        assert jar.get("sessionid"), "the browser holds no session"
        pair = read_pairs(self.database).get(jar["sessionid"])
        assert pair is not None, "the browser's session holds no sealed pair"
        assert pair.access and pair.refresh, "the sealed pair is incomplete"
        self.collect_pairs()
        return pair

    def look(self, page) -> None:
        """Keep what page scripts can read, the page's HTML and the browser's cookie jar."""
        where = page.url
        self._keep(f"document.cookie on {where}", page.evaluate("document.cookie"))
        self._keep(
            f"web storage on {where}",
            page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])"),
        )
        self._keep(f"HTML of {where}", page.content())
        for cookie in self.context.cookies():
            self._keep(f"cookie {cookie['name']!r}", f"{cookie['name']}={cookie['value']}")

    def leaks(self) -> list[str]:
        """Return where any token, or a slice of one, was seen (never the value itself)."""
        slices = {
            token[start : start + SLICE]
            for token in self.tokens
            for start in range(max(1, len(token) - SLICE + 1))
        }
        found, searched = [], set()
        for where, text in self.seen:
            if text in searched:
                continue
            searched.add(text)
            windows = {text[start : start + SLICE] for start in range(len(text) - SLICE + 1)}
            if not slices.isdisjoint(windows):
                found.append(where)
        return found


def _endpoint(response) -> tuple[str, str]:
    return response.request.method, urlsplit(response.url).path


def _headers(pairs: list[dict[str, str]]) -> str:
    return "\n".join(f"{header['name']}: {header['value']}" for header in pairs)


def assert_no_token_reached_the_browser(exposure: Exposure) -> None:
    exposure.collect_pairs()
    assert exposure.leaks() == []
    # A body lost to a navigation was read on another occasion of the same call.
    assert exposure.unread <= exposure.read, exposure.unread - exposure.read
    assert exposure.failures == []
    # The jar: the session and the CSRF cookie, nothing that carries a token.
    assert {c["name"] for c in exposure.context.cookies()} == {"sessionid", "csrftoken"}


def test_no_token_reaches_the_browser_on_any_page_or_demo_call(watched):
    page, exposure = watched
    sign_in(page, ADMIN, path="/accounts/login/?next=/")
    page.wait_for_url(re.compile(r"/$"))
    first = exposure.session_pair()

    for path in PAGES:
        response = page.goto(path)
        assert response.status == 200, (path, response.status)
        exposure.look(page)

    for button, answer in DEMO_CALLS:
        page.locator(button).click()
        expect(page.locator("#demo-output")).to_contain_text(answer)
        exposure.look(page)
    # The admin's profile came back through both paths: the bodies were really read.
    profiles = {
        path: text
        for where, text in exposure.seen
        for path in re.findall(r"^body of GET \S+(/users/me|/profile/) ", where)
    }
    assert set(profiles) == {"/users/me", "/profile/"}
    assert all(ADMIN.email in text for text in profiles.values())
    page.locator("#refresh-server").click()
    expect(page.get_by_text("Tokens refreshed on the server.")).to_be_visible()
    exposure.look(page)

    last = exposure.session_pair()
    assert last.access != first.access and last.refresh != first.refresh
    assert len(exposure.tokens) >= 4  # at least two pairs were searched for
    assert_no_token_reached_the_browser(exposure)


def test_no_token_reaches_the_browser_when_the_access_token_expires(watched, servers):
    _, api, _ = servers
    page, exposure = watched
    # Land on the home page: no dashboard script refreshing on its own meanwhile.
    sign_in(page, ADMIN, path="/accounts/login/?next=/")
    page.wait_for_url(re.compile(r"/$"))
    exposure.look(page)
    first = exposure.session_pair()
    before = api.stats()
    time.sleep(max(0.0, access_token_expiry(first.access).timestamp() - time.time()) + 0.3)

    response = page.goto("/dashboard/evaluations/")
    assert response.status == 200
    # That page needed no backend call and did not wait; a call that needs the token
    # waits for the refresh it started.
    assert page.evaluate("fetch('/api/users/me').then(r => r.status)") == 200
    exposure.look(page)
    renewed = exposure.session_pair()
    assert renewed.access != first.access and renewed.refresh != first.refresh
    assert api.stats()["refresh"] - before["refresh"] == 1

    for path in PAGES:
        assert page.goto(path).status == 200, path
        exposure.look(page)
    page.locator("#profile-browser").click()  # the refreshed access token, at the API
    expect(page.locator("#demo-output")).to_contain_text("GET /api/users/me → 200")
    exposure.look(page)

    after = api.stats()
    assert after["reuse_detected"] == before["reuse_detected"]
    assert after["refresh_rejected"] == before["refresh_rejected"]
    assert_no_token_reached_the_browser(exposure)
