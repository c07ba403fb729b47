"""The admin's health page (`/dashboard/admin/`): charts of the last hour, tables, now.

In process: a page rendered from a seeded timeline (accounts/ops/timeline.py).
Over real HTTP: traffic through the app under gunicorn and the reference API,
then the page in Chromium, as the admin and as an evaluator.
"""

import os
import re
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from accounts.ops import charts, timeline
from accounts.ops.timeline import TimelineBuffer
from accounts.pacing import AtMostEvery
from accounts.usersessions.models import UserSession
from authapi.demo import DEMO_USERS
from tests import fakes
from tests.browser import chromium, sign_in
from tests.flows import burst, post_login, sign_in_as, sign_out, wait_until_access_expired
from tests.servers import running_app, running_authapi

ADMIN_USER, EVALUATOR_USER, _ = DEMO_USERS
SVG_NS = "{http://www.w3.org/2000/svg}"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "health-page.png"


class Tables(HTMLParser):
    """Every <table id=…> of a page as rows of cell texts (header row included)."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table(html: str, id: str) -> dict[str, dict[str, str]]:
    """Return a table as {row heading: {column: cell}}."""
    head, *rows = Tables(html).tables[id]
    return {row[0]: dict(zip(head[1:], row[1:], strict=True)) for row in rows}


def chart_svg(html: str, id: str) -> ET.Element:
    """Return a chart's <svg>, parsed as XML (badly escaped markup fails here)."""
    block = re.search(rf'<section class="chart-block" id="chart-{id}".*?</section>', html, re.S)
    assert block, f"no chart {id}"
    return ET.fromstring(re.search(r"<svg.*?</svg>", block[0], re.S)[0])  # noqa: S314 - our page


def bars(svg: ET.Element, colour: str | None = None) -> list[float]:
    """Return the heights of a chart's bars (of one colour class)."""
    return [
        float(rect.get("height"))
        for rect in svg.iter(f"{SVG_NS}rect")
        if "bar" in rect.get("class", "").split()
        and (colour is None or colour in rect.get("class").split())
    ]


# --- in process -------------------------------------------------------------------------


@pytest.fixture
def fresh_timeline(monkeypatch, locmem_cache):
    """An empty process buffer over a private cache; returns a writer standing for a worker."""
    monkeypatch.setattr(timeline, "_buffer", TimelineBuffer(interval=3600))
    monkeypatch.setattr(timeline, "_warn", AtMostEvery(60))
    return locmem_cache


@pytest.fixture
def admin(client, db, fresh_timeline, backend):
    fakes.stub_me(backend, "admin")  # AUTH_HEALTH_PATH is /users/me: the ping's answer
    return fakes.sign_in_client(client, "admin", access=fakes.access_jwt())


def seed(now: float) -> None:
    """Two workers' traffic: this minute and two minutes ago."""
    one = TimelineBuffer(clock=lambda: now, interval=3600)
    two = TimelineBuffer(clock=lambda: now, interval=3600)
    earlier = TimelineBuffer(clock=lambda: now - 120, interval=3600)
    one.count("refresh", "ok", 2)
    two.count("refresh", "ok")
    two.count("refresh", "refused")
    one.count("refresh_served", "shared", 2)
    two.count("refresh_served", "waited")
    earlier.count("refresh", "ok")
    one.count("sign_in", "ok", 2)
    two.count("sign_in", "wrong_password")
    one.count("sign_out", "user")
    two.count("sign_out", "backchannel", 2)
    one.count("throttle", "allowed", 3)
    two.count("throttle", "refused")
    for _ in range(10):
        one.observe("latency", "refresh", 0.02)
    two.observe("latency", "refresh", 0.3)
    for _ in range(3):
        two.observe("latency", "login", 0.05)
    one.count("proxy", "200", 4)
    two.count("proxy", "503")
    one.observe("refresh_wait", "all", 0.2)
    two.observe("refresh_wait", "all", 0.4)
    for buffer in (one, two, earlier):
        buffer.flush()


def minute_now(now: float) -> str:
    return charts.minute_label(timeline.minute_of(now))


def test_the_page_draws_the_seeded_hour_and_its_tables_say_the_same(admin):
    now = time.time()
    seed(now)

    response = admin.get("/dashboard/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    this, before = minute_now(now), minute_now(now - 120)
    refreshes = table(html, "refreshes-table")
    assert refreshes[this] == {
        "ok": "3",
        "refused": "1",
        "transient": "0",
        "unknown": "0",
        "coalesced (shared + waited)": "3",
    }
    assert refreshes[before]["ok"] == "1" and len(refreshes) == 2
    svg = chart_svg(html, "refreshes")
    assert len(bars(svg, "s0")) == 2 and len(bars(svg, "s1")) == 1  # ok twice, refused once
    assert all(height > 0 for height in bars(svg))
    assert svg.find(f"{SVG_NS}polyline") is not None  # the coalesced line

    assert table(html, "sign-ins-table")[this] == {"ok": "2", "wrong password": "1"}
    assert table(html, "sign-outs-table")[this] == {"user": "1", "backchannel": "2"}
    assert table(html, "throttle-table")[this] == {"allowed": "3", "refused": "1"}
    assert table(html, "proxy-table")[this] == {"200": "4", "503": "1"}
    waits = table(html, "refresh-wait-table")[this]
    assert waits["waits"] == "2"
    assert re.fullmatch(r"\d+ ms", waits["p50"]) and 100 < int(waits["p50"][:-3]) <= 500
    assert len(bars(chart_svg(html, "sign-ins"))) == 2

    latency = table(html, "latency-refresh-table")[this]
    assert latency["calls"] == "11"
    assert re.fullmatch(r"1\d(\.\d)? ms|2\d ms", latency["p50"]), latency  # in (10, 25] ms
    assert re.fullmatch(r"\d+ ms", latency["p95"]) and latency["p95"] != latency["p50"]
    assert table(html, "latency-login-table")[this]["calls"] == "3"
    assert len(chart_svg(html, "latency-login").findall(f"{SVG_NS}circle")) == 2  # p50, p95
    hour = table(html, "latency-summary")
    assert hour["refresh"]["Calls"] == "11" and hour["login"]["Calls"] == "3"
    assert hour["refresh"]["p50"] == latency["p50"]  # one minute: the hour is that minute


def test_every_chart_is_an_accessible_image_with_its_title(admin):
    seed(time.time())
    html = admin.get("/dashboard/admin/").content.decode()

    ids = re.findall(r'<section class="chart-block" id="chart-([a-z0-9-]+)"', html)
    assert {
        "refreshes",
        "sign-ins",
        "sign-outs",
        "throttle",
        "proxy",
        "latency-refresh",
        "refresh-wait",
    } <= set(ids)
    for id in ids:
        svg = chart_svg(html, id)
        assert svg.get("role") == "img"
        assert svg.get("aria-labelledby") == f"{id}-title {id}-desc"
        assert svg.find(f"{SVG_NS}title").get("id") == f"{id}-title"
        assert svg.find(f"{SVG_NS}desc").text
    described = chart_svg(html, "refreshes").find(f"{SVG_NS}desc").text
    assert described == (
        "4 ok, 1 refused, 0 transient, 0 unknown, 3 coalesced (shared + waited) in the last hour"
    )


def test_the_page_keeps_the_strict_csp_and_has_no_inline_style_or_script(admin):
    seed(time.time())
    page = admin.get("/dashboard/admin/")
    home = admin.get("/")

    assert page["Content-Security-Policy"] == home["Content-Security-Policy"]
    policy = page["Content-Security-Policy"]
    assert "style-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    html = page.content.decode()
    assert not re.search(r"\sstyle=", html)
    assert "<style" not in html and "<script" not in html
    assert not re.search(r"\son[a-z]+=", html)


def test_now_shows_the_active_sessions_and_the_backend(admin, backend):
    fakes.make_user("evaluator")
    html = admin.get("/dashboard/admin/").content.decode()

    sessions = re.search(r'<dd id="active-sessions">(.*?)</dd>', html, re.S)[1]
    signed_in = UserSession.objects.live().count()
    assert sessions.startswith(f"{signed_in} (")
    assert "with tokens in" in sessions
    health = re.search(r'<dd id="backend-health">(.*?)</dd>', html, re.S)[1]
    assert re.search(r">reachable</span> \(HTTP 200 in \d+ ms;", health)
    # The existing parts stay: who is signed in, with a link to their sessions.
    assert Tables(html).tables["signed-in-users"][1][0] == "Ada Admin"


def test_the_page_and_the_auth_sessions_gauge_count_the_same_rows(admin, settings):
    from datetime import timedelta

    from django.utils import timezone

    from tests.test_metrics import samples

    settings.AUTH_METRICS = True
    evaluator, later = fakes.make_user("evaluator"), timezone.now() + timedelta(hours=1)
    for key, storage, expires in [
        ("s" * 32, "session", later),
        ("u" * 32, "", later),  # signed in another way
        ("x" * 32, "cookies", timezone.now() - timedelta(seconds=1)),  # expired
    ]:
        UserSession.objects.create(
            session_key=key, user=evaluator, expires_at=expires, token_storage=storage
        )

    admin.get("/dashboard/")  # as the sign-in's own response does, records where its tokens are
    html = admin.get("/dashboard/admin/").content.decode()
    gauge = {
        dict(labels)["storage"]: value
        for (name, labels), value in samples(admin.get("/metrics").content.decode()).items()
        if name == "auth_sessions"
    }

    assert gauge == {"cookies": 1, "session": 1, "other": 1}  # the admin's, and two above
    sessions = re.search(r'<dd id="active-sessions">(.*?)</dd>', html, re.S)[1]
    assert sessions == (
        "3 (1 with tokens in the browser's cookies, 1 with tokens in the session, "
        "1 with tokens in an unknown place)"
    )


def test_a_401_from_the_health_path_reads_as_reachable_not_ok(client, db, fresh_timeline, backend):
    fakes.sign_in_client(client, "admin", access=fakes.access_jwt())
    backend.get(f"{fakes.BASE}/users/me", status=401)

    html = client.get("/dashboard/admin/").content.decode()

    health = re.search(r'<dd id="backend-health">(.*?)</dd>', html, re.S)[1]
    assert re.search(r">reachable</span> \(HTTP 401 in \d+ ms: the health path answered", health)
    assert "not that sign-in works" in health
    assert ">ok<" not in health
    assert "<title>Sign-in health · Token auth demo</title>" in html


def test_a_backend_that_is_down_leaves_the_page_saying_so(client, db, fresh_timeline, backend):
    fakes.sign_in_client(client, "admin", access=fakes.access_jwt())
    backend.get(f"{fakes.BASE}/users/me", body=requests.ConnectionError("refused"))

    response = client.get("/dashboard/admin/")

    assert response.status_code == 200
    health = re.search(r'<dd id="backend-health">(.*?)</dd>', response.content.decode(), re.S)[1]
    assert re.search(r">down</span> \(GET /users/me: ConnectionError; after \d+ ms\)", health)


def test_a_cache_that_cannot_be_read_leaves_the_page_saying_so(admin, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("the cache is down")

    monkeypatch.setattr(timeline, "_get_many", broken)
    response = admin.get("/dashboard/admin/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="timeline-unavailable"' in html
    assert "No refreshes in the last hour." in html


def test_an_hour_without_events_draws_empty_charts_without_tables(admin):
    html = admin.get("/dashboard/admin/").content.decode()

    assert not bars(chart_svg(html, "refreshes"))
    assert "No refreshes in the last hour." in html
    assert "No sign-outs in the last hour." in html
    assert "No calls through the /api/ proxy in the last hour." in html
    assert "refreshes-table" not in html
    assert 'id="chart-refresh-wait"' not in html  # drawn once a request waited


def test_an_evaluator_gets_403_and_nobody_signed_in_goes_to_sign_in(client, db, fresh_timeline):
    fakes.sign_in_client(client, "evaluator", access=fakes.access_jwt())
    assert client.get("/dashboard/admin/").status_code == 403

    client.logout()
    response = client.get("/dashboard/admin/")
    location = urlsplit(response["Location"])
    assert (response.status_code, location.path) == (302, "/accounts/login/")
    assert parse_qs(location.query)["next"] == ["/dashboard/admin/"]


def test_chart_labels_are_escaped_into_valid_svg():
    minutes = (1, 2)
    chart = charts.bar_chart(
        id="x",
        title='Odd <title> & "quotes"',
        minutes=minutes,
        bars=[charts.Line("<b>&", (1, 0), "s0")],
        nothing="none",
    )
    svg = ET.fromstring(str(chart.svg))  # noqa: S314 - markup made by the test
    assert svg.find(f"{SVG_NS}title").text == 'Odd <title> & "quotes"'
    assert "&lt;b&gt;&amp;" in str(chart.svg)
    assert chart.rows == ((charts.minute_label(1), ("1",)),)


def test_nice_ceiling_and_latency_labels():
    assert [charts.nice_ceiling(v) for v in (0, 1, 3, 7, 11, 0.0075)] == [1, 1, 5, 10, 20, 0.01]
    assert charts.milliseconds(0.0075) == "7.5 ms"
    assert charts.milliseconds(0.25) == "250 ms"
    assert charts.milliseconds(2.5) == "2.5 s"
    assert charts.milliseconds(None) == "–"


# --- over real HTTP, in Chromium ----------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("health-page")
    with (
        running_authapi(workdir, AUTHAPI_ACCESS_TTL="3") as api,
        running_app(workdir, api_url=api.url, workers=2) as app,
    ):
        yield app, api


def make_traffic(base_url: str) -> None:
    """Sign-ins (one with a wrong password), a refresh shared by a burst, a sign-out."""
    _, wrong = post_login(base_url, ADMIN_USER.email, "not-the-password")
    assert wrong.status_code == 200  # the form again, with the error
    browser = sign_in_as(base_url, ADMIN_USER)
    wait_until_access_expired(browser)
    # Four tabs at once with the expired pair, each calling the backend through the proxy
    # (a page that needs no token would not wait): one refresh call, the others served
    # its result.
    answers = burst([f"{base_url}/api/users/me"] * 4, browser)
    assert [getattr(a, "status_code", repr(a)) for a in answers] == [200] * 4
    for _ in range(2):  # the late tab: moved on to the new pair without another call
        assert browser.get(f"{base_url}/dashboard/", timeout=30).status_code == 200
    assert browser.get(f"{base_url}/", timeout=30).status_code == 200
    assert sign_out(browser, base_url).status_code == 302
    other = sign_in_as(base_url, EVALUATOR_USER)
    assert other.get(f"{base_url}/dashboard/", timeout=30).status_code == 200


@pytest.mark.services
def test_the_admin_sees_the_hour_in_chromium_and_an_evaluator_gets_403(servers, tmp_path):
    app, _ = servers
    make_traffic(app.url)

    with chromium() as browser:
        context = browser.new_context(base_url=app.url, viewport={"width": 1100, "height": 900})
        context.set_default_timeout(15_000)
        page = context.new_page()
        console = []
        page.on("console", lambda message: console.append(message.text))
        sign_in(page, ADMIN_USER)
        page.wait_for_url(re.compile(r"/dashboard/$"))
        time.sleep(timeline.FLUSH_INTERVAL + 0.5)  # each worker writes its counts within that
        response = page.goto("/dashboard/admin/")
        assert response.status == 200

        assert page.get_by_role("heading", name="The last hour").is_visible()
        for id in ("refreshes", "sign-ins", "sign-outs", "throttle"):
            assert page.locator(f"#chart-{id} svg[role=img]").count() == 1
        assert page.locator("#chart-refreshes rect.bar").count() > 0
        assert page.locator("#chart-sign-ins rect.bar").count() > 0
        refreshes = table(page.content(), "refreshes-table")
        assert sum(int(row["ok"]) for row in refreshes.values()) >= 1
        coalesced = "coalesced (shared + waited)"
        assert sum(int(row[coalesced]) for row in refreshes.values()) >= 1
        sign_ins = table(page.content(), "sign-ins-table")
        assert sum(int(row["ok"]) for row in sign_ins.values()) >= 3
        assert sum(int(row["wrong password"]) for row in sign_ins.values()) >= 1
        sign_outs = table(page.content(), "sign-outs-table")
        assert sum(int(row["user"]) for row in sign_outs.values()) >= 1
        assert page.locator("#latency-refresh-table").count() == 1
        assert ">reachable</span>" in page.locator("#backend-health").inner_html()
        # A chart drawn under the page's CSP: nothing blocked, nothing inline.
        assert not [text for text in console if "Content Security Policy" in text], console
        if os.environ.get("SAVE_SCREENSHOT") == "1":
            page.screenshot(path=SCREENSHOT, full_page=True)
        page.screenshot(path=tmp_path / "health-page.png", full_page=True)
        context.close()

        context = browser.new_context(base_url=app.url)
        page = context.new_page()
        sign_in(page, EVALUATOR_USER)
        page.wait_for_url(re.compile(r"/dashboard/$"))
        assert page.goto("/dashboard/admin/").status == 403
        context.close()
