"""X-Forwarded-For and X-Request-ID believed only from AUTH_TRUSTED_PROXIES (accounts/forwarded.py).

Over real HTTP the app runs under gunicorn at 127.0.0.1 with one trusted
proxy, 127.0.0.1: requests sent from 127.0.0.1 come "through the proxy",
requests sent from 127.0.0.2 (also the loopback interface) come from a
client that reached gunicorn directly, past it.
"""

import logging
import re
import sqlite3

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from requests.adapters import HTTPAdapter

from accounts import forwarded
from accounts.pacing import AtMostEvery
from accounts.requestid import RequestIdMiddleware
from authapi.demo import DEMO_USERS
from tests.servers import running_app, running_authapi

PROXY, DIRECT = "127.0.0.1", "127.0.0.2"
DIRECT_SIGNING_IN = "127.0.0.3"  # apart from DIRECT, which a test locks out of sign-in
LOGIN = "/accounts/login/"
EVALUATOR = DEMO_USERS[1]


# --- The decision, on RequestFactory requests ---------------------------------------


@pytest.fixture
def behind_one_proxy(settings):
    settings.AUTH_TRUSTED_PROXY_COUNT = 1
    settings.AUTH_TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.1"]


@pytest.mark.usefixtures("behind_one_proxy")
class TestClientIp:
    @pytest.mark.parametrize("peer", ["10.1.2.3", "192.0.2.1", "::ffff:10.1.2.3"])
    def test_a_trusted_proxy_names_the_client(self, rf, peer):
        request = rf.get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.5")
        assert forwarded.from_trusted_proxy(request)
        assert forwarded.client_ip(request) == "203.0.113.5"

    @pytest.mark.parametrize("peer", ["192.0.2.2", "11.0.0.1", "::1", "", "garbage"])
    def test_anyone_else_is_known_by_their_own_address(self, rf, peer):
        request = rf.get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR="127.0.0.1")
        assert not forwarded.from_trusted_proxy(request)
        assert forwarded.client_ip(request) == peer

    def test_without_a_proxy_count_nobody_is_a_proxy(self, rf, settings):
        settings.AUTH_TRUSTED_PROXY_COUNT = 0
        request = rf.get("/", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="203.0.113.5")
        assert not forwarded.from_trusted_proxy(request)
        assert forwarded.client_ip(request) == "10.1.2.3"

    def test_empty_trusted_proxies_trust_nobody(self, rf, settings):
        settings.AUTH_TRUSTED_PROXIES = []
        request = rf.get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5")
        assert forwarded.client_ip(request) == "127.0.0.1"

    def test_a_header_from_an_untrusted_peer_is_logged_once_a_minute(self, rf, monkeypatch, caplog):
        once = AtMostEvery(60)
        monkeypatch.setattr(forwarded, "_untrusted_peer_warning", once)
        caplog.set_level(logging.WARNING, logger="accounts.forwarded")
        request = rf.get("/", REMOTE_ADDR="198.51.100.4", HTTP_X_FORWARDED_FOR="127.0.0.1")

        for _ in range(3):
            forwarded.client_ip(request)
        forwarded.client_ip(rf.get("/", REMOTE_ADDR="198.51.100.4"))  # no header: nothing to say

        assert [r.getMessage() for r in caplog.records] == [
            "X-Forwarded-For from 198.51.100.4 ignored: that peer is not in "
            "AUTH_TRUSTED_PROXIES (list the proxies' addresses there, or a client reached "
            "the app past them)"
        ]
        once._last -= 61
        forwarded.client_ip(request)
        assert len(caplog.records) == 2


def test_a_malformed_trusted_proxies_entry_stops_the_app_at_start(settings):
    settings.AUTH_TRUSTED_PROXIES = ["10.0.0.1", "10.0.0.0/33"]
    with pytest.raises(ImproperlyConfigured, match=r"AUTH_TRUSTED_PROXIES: '10\.0\.0\.0/33'"):
        RequestIdMiddleware(lambda request: HttpResponse())


# --- Over real HTTP ---------------------------------------------------------------


class FromAddress(HTTPAdapter):
    """Connect from a chosen local address (any of 127.0.0.0/8 reaches a loopback server)."""

    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def browser_at(source: str, *, forwarded_for: str | None = None) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(source))
    if forwarded_for:
        session.headers["X-Forwarded-For"] = forwarded_for
    return session


def sign_in(base_url: str, session: requests.Session, email: str, password: str):
    form = session.get(f"{base_url}{LOGIN}", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
    return session.post(
        f"{base_url}{LOGIN}",
        data={"email": email, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base_url}{LOGIN}"},
        allow_redirects=False,
        timeout=30,
    )


@pytest.fixture(scope="module")
def authapi(tmp_path_factory):
    with running_authapi(tmp_path_factory.mktemp("proxies-api")) as api:
        yield api


@pytest.fixture(scope="module")
def app(authapi, tmp_path_factory):
    with running_app(
        tmp_path_factory.mktemp("proxies-app"),
        api_url=authapi.url,
        workers=1,
        AUTH_TRUSTED_PROXY_COUNT="1",
        AUTH_TRUSTED_PROXIES=PROXY,
        AUTH_METRICS="1",
        AUTH_LOGIN_MAX_FAILURES_PER_IP="3",
    ) as server:
        yield server


def api_failures_recorded_from(authapi, email: str) -> list[str]:
    """The client addresses the reference API was told for `email`'s failed sign-ins."""
    database = authapi.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT ip FROM authapi_loginfailure WHERE email = ?", (email,))
        return [row[0] for row in rows]


def test_the_peers_reach_the_app_from_their_own_addresses(app):
    """The premise of the tests below: the app sees 127.0.0.2 as a peer of its own."""
    assert metrics_status(app, DIRECT) == 403  # AUTH_METRICS_ALLOWED_IPS is 127.0.0.1,::1
    assert metrics_status(app, PROXY) == 200


def metrics_status(app, source: str, forwarded_for: str | None = None) -> int:
    browser = browser_at(source, forwarded_for=forwarded_for)
    return browser.get(f"{app.url}/metrics", timeout=10).status_code


class TestMetricsAccess:
    def test_a_direct_client_claiming_loopback_is_refused(self, app):
        assert metrics_status(app, DIRECT, "127.0.0.1") == 403

    def test_through_the_proxy_the_named_client_decides(self, app):
        assert metrics_status(app, PROXY, "203.0.113.9") == 403
        assert metrics_status(app, PROXY, "127.0.0.1") == 200


class TestSessionsPageAddress:
    def address_shown(self, app, session) -> str:
        page = session.get(f"{app.url}/accounts/sessions/", timeout=10)
        assert page.status_code == 200
        return re.search(r'<td class="address"[^>]*>([^<]*)</td>', page.text)[1]

    def test_a_direct_client_is_shown_with_its_own_address(self, app):
        browser = browser_at(DIRECT_SIGNING_IN, forwarded_for="198.51.100.23")
        assert sign_in(app.url, browser, EVALUATOR.email, EVALUATOR.password).status_code == 302
        assert self.address_shown(app, browser) == DIRECT_SIGNING_IN

    def test_through_the_proxy_the_named_client_is_shown(self, app):
        browser = browser_at(PROXY, forwarded_for="198.51.100.24")
        assert sign_in(app.url, browser, EVALUATOR.email, EVALUATOR.password).status_code == 302
        assert self.address_shown(app, browser) == "198.51.100.24"


class TestThrottleAndBackend:
    """AUTH_LOGIN_MAX_FAILURES_PER_IP=3 in the app; the API is told the client's address."""

    def test_a_direct_client_cannot_rotate_past_the_per_client_throttle(self, app, authapi):
        statuses = []
        for n in range(4):
            browser = browser_at(DIRECT, forwarded_for=f"192.0.2.{n + 10}")
            statuses.append(sign_in(app.url, browser, f"d{n}@example.com", "guess").status_code)
        assert statuses == [200, 200, 200, 429]
        # What went to the backend is the address the app saw, not the invented one.
        assert api_failures_recorded_from(authapi, "d0@example.com") == [DIRECT]

    def test_through_the_proxy_each_named_client_counts_apart(self, app, authapi):
        statuses = []
        for n in range(4):
            browser = browser_at(PROXY, forwarded_for=f"192.0.2.{n + 20}")
            statuses.append(sign_in(app.url, browser, f"p{n}@example.com", "guess").status_code)
        assert statuses == [200, 200, 200, 200]
        assert api_failures_recorded_from(authapi, "p0@example.com") == ["192.0.2.20"]
