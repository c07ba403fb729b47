"""The "Your sessions" page and the admin's view of anyone's sessions (accounts/usersessions/).

In process: how a User-Agent becomes a device name, the public ids, and the
views through Django's test client against a `responses`-stubbed backend.
Over real HTTP, in both token storage modes: the reference API as its own
process and the app under gunicorn, started once per module; browsers are
`requests` jars with their own User-Agent, and what reached the API is read
from its `/_stats` and by presenting the revoked tokens to it. Last, a
scenario of its own: a session ended while the API is down is queued and
revoked once it is back.
"""

import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.utils import timezone

from accounts import vault
from accounts.models import PendingRevocation, Session
from accounts.usersessions import signins
from accounts.usersessions.models import UserSession
from accounts.usersessions.signins import SIGN_IN_KEY
from authapi.demo import DEMO_USERS
from tests import fakes
from tests.flows import csrf_headers, sealed_pair
from tests.servers import manage, reserve_port, running_app, running_authapi, server_env

ADMIN, EVALUATOR, VIEWER = DEMO_USERS

CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
)
EDGE_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86"
)
CURL = "curl/8.5.0"


# --- reading the pages -----------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of a sessions page."""

    id: str
    device: str
    current: bool
    action: str  # where its "Sign out" button posts
    html: str


def session_rows(page: str) -> list[Row]:
    """Return the rows of a sessions page, in page order."""
    rows = []
    for match in re.finditer(
        r'<tr id="session-(?P<id>[0-9a-f]+)" class="(?P<cls>[^"]*)">(?P<html>.*?)</tr>',
        page,
        re.S,
    ):
        html = match["html"]
        device = re.search(r'class="device">([^<]*?)\s*(?:<strong|</th>)', html)[1]
        action = re.search(r'<form method="post" action="([^"]+)"', html)[1]
        rows.append(Row(match["id"], device, "current" in match["cls"].split(), action, html))
    return rows


@dataclass(frozen=True)
class SignedInUser:
    """One line of the admin page's "Signed in now"."""

    user_id: int
    name: str
    email: str
    roles: str
    count: int


def signed_in_users(page: str) -> dict[str, SignedInUser]:
    """Return the admin page's signed-in users by email."""
    found = {}
    for match in re.finditer(
        r'<tr id="user-\d+">\s*<th scope="row"><a href="/accounts/sessions/users/(?P<id>\d+)/">'
        r"(?P<name>[^<]*)</a></th>\s*<td>(?P<email>[^<]*)</td>\s*<td>(?P<roles>[^<]*)</td>\s*"
        r'<td class="count">(?P<count>\d+)</td>',
        page,
    ):
        found[match["email"]] = SignedInUser(
            int(match["id"]), match["name"], match["email"], match["roles"], int(match["count"])
        )
    return found


def message_of(page: str) -> list[str]:
    return re.findall(r'<li class="message[^"]*">([^<]*)</li>', page)


# --- signins.summarise, public ids ------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "device"),
    [
        (CHROME_LINUX, "Chrome 131 on Linux"),
        (FIREFOX_WINDOWS, "Firefox 133 on Windows"),
        (SAFARI_IPHONE, "Safari 17 on iPhone"),
        (EDGE_WINDOWS, "Edge 131 on Windows"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.6 Safari/605.1.15",
            "Safari 17 on macOS",
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Mobile Safari/537.36",
            "Chrome 131 on Android",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
            "Chrome 131 on iPhone",
        ),
        (CURL, "curl 8"),
        ("python-requests/2.32.3", "python-requests 2"),
        ("", "Unknown device"),
        ("   ", "Unknown device"),
        ("\x00\x01 %%%% ;;;", "Unknown device"),
        ("Googlebot\x07/2.1\x00", "Googlebot"),
        ("<script>alert(1)</script>", "<script>alert(1)</script>"),  # escaped by the page
    ],
)
def test_summarise_names_browser_and_system(user_agent, device):
    assert signins.summarise(user_agent) == device


def test_summarise_reads_a_utf8_header_that_wsgi_decoded_as_latin1():
    # PEP 3333: header bytes arrive as a Latin-1 str; the page shows what was sent.
    sent = "Браузер/1.0 (☃)".encode().decode("latin-1")
    assert signins.summarise(sent) == "Браузер/1.0"
    assert signins.summarise("Navigateur\xe9/2") == "Navigateuré/2"  # Latin-1 stays as it is


def test_summarise_keeps_non_ascii_printable_and_short():
    assert signins.summarise("Мой браузер (Linux) " + "x" * 5000) == "Linux"
    assert signins.summarise("ü" * 5000) == "ü" * 60
    assert signins.summarise("\u2028\u200b") == "Unknown device"  # separators, no words


def test_summarise_never_returns_control_characters():
    for text in ("\x00", "a\x00b", "\x1b[31mred", "line\r\nbreak", "\x85\x9f"):
        assert signins.summarise(text).isprintable()


def test_public_id_is_stable_short_and_never_the_key():
    key = "k" * 32
    assert signins.public_id(key) == signins.public_id(key)
    assert re.fullmatch(r"[0-9a-f]{20}", signins.public_id(key))
    assert key not in signins.public_id(key)
    assert signins.public_id(key) != signins.public_id("j" * 32)


# --- in process: sessions made as a sign-in makes them ---------------------------


def describe(browser: Client, *, device: str, address: str = "203.0.113.9", ago: float = 600):
    """Give a signed-in test client's session the sign-in entry and the row signins.record
    writes."""
    session = browser.session
    at = time.time() - ago
    session[SIGN_IN_KEY] = {"at": at, "device": device, "address": address}
    session.save()
    UserSession.objects.update_or_create(
        session_key=session.session_key,
        defaults={
            "user_id": int(session[SESSION_KEY]),
            "signed_in_at": datetime.fromtimestamp(at, UTC),
            "device": device,
            "address": address,
            "last_seen": timezone.now(),
            "expires_at": session.get_expiry_date(),
        },
    )
    return browser


def another_browser(who: str = "admin", *, device: str, refresh: str) -> Client:
    """Sign a second test client in as `who`, holding its own pair."""
    browser = fakes.sign_in_client(Client(), who, access=fakes.access_jwt(), refresh=refresh)
    return describe(browser, device=device, address="198.51.100.7")


def key_of(browser: Client) -> str:
    return browser.session.session_key


def row_exists(browser: Client) -> bool:
    """Whether the browser's session is still signed in: indexed and in its store."""
    return key_of(browser) in fakes.live_session_keys()


@pytest.fixture
def admin(signed_in):
    """The admin's test client (this browser: Chrome on Linux)."""
    client = signed_in("admin", access=fakes.access_jwt())
    return describe(client, device="Chrome 131 on Linux")


def test_find_returns_only_the_users_own_rows(admin):
    other = another_browser("evaluator", device="Safari 17 on iPhone", refresh="refresh-e")
    admin_user = fakes.make_user("admin")
    evaluator = fakes.make_user("evaluator")

    assert signins.find(admin_user, signins.public_id(key_of(admin))).session_key == key_of(admin)
    assert signins.find(evaluator, signins.public_id(key_of(other))).session_key == key_of(other)
    assert signins.find(admin_user, signins.public_id(key_of(other))) is None
    assert signins.find(admin_user, key_of(admin)) is None  # the key itself is no id
    assert signins.find(admin_user, "") is None


def test_sessions_of_marks_the_current_one_and_hides_the_keys(admin):
    another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    listed = signins.sessions_of(fakes.make_user("admin"), current_key=key_of(admin))
    assert sorted(s.device for s in listed) == ["Chrome 131 on Linux", "Firefox 133 on Windows"]
    assert [s.device for s in listed if s.current] == ["Chrome 131 on Linux"]
    assert key_of(admin) not in {s.id for s in listed}


def test_anonymous_is_sent_to_sign_in(client, db):
    for method, path in [
        ("get", "/accounts/sessions/"),
        ("post", "/accounts/sessions/end-others/"),
        ("post", f"/accounts/sessions/{'0' * 20}/end/"),
        ("get", "/accounts/sessions/users/1/"),
        ("post", "/accounts/sessions/users/1/end-all/"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 302, path
        location = urlsplit(response["Location"])
        assert location.path == "/accounts/login/"
        assert parse_qs(location.query) == {"next": [path]}


def test_the_page_lists_each_browser_and_marks_this_one(admin, backend):
    another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    another_browser("evaluator", device="Safari 17 on iPhone", refresh="refresh-e")

    response = admin.get("/accounts/sessions/")

    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    page = response.content.decode()
    rows = session_rows(page)
    assert sorted(r.device for r in rows) == ["Chrome 131 on Linux", "Firefox 133 on Windows"]
    assert page.count("This browser") == 1
    (current,) = [r for r in rows if r.current]
    assert current.device == "Chrome 131 on Linux"
    assert current.action == "/accounts/logout/"
    (other,) = [r for r in rows if not r.current]
    assert other.action == f"/accounts/sessions/{other.id}/end/"
    assert "198.51.100.7" in other.html
    signed_in_at, last_seen = re.findall(
        r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000">[^<]+</time> '
        r'<span class="ago">\(([^)]*)\)</span>',
        other.html,
    )
    assert (signed_in_at, last_seen) == ("10\xa0minutes ago", "just now")
    assert 'action="/accounts/sessions/end-others/"' in page
    assert "Sign out everywhere else" in page
    assert page.count("csrfmiddlewaretoken") >= 4  # header, two rows, everywhere else
    for session in Session.objects.all():
        assert session.session_key not in page
    assert not backend.calls


def test_the_navigation_links_the_page_for_signed_in_users(admin):
    nav = admin.get("/").content.decode().split("<nav", 1)[1].split("</nav>", 1)[0]
    assert '<a href="/accounts/sessions/">Sessions</a>' in nav
    assert 'href="/accounts/sessions/"' not in Client().get("/").content.decode()


def test_a_sign_in_nothing_is_known_of_shows_as_unknown(admin):
    UserSession.objects.filter(pk=key_of(admin)).update(
        device="", address="", signed_in_at=None, last_seen=None
    )
    response = admin.get("/accounts/sessions/")
    assert response.status_code == 200
    (row,) = session_rows(response.content.decode())
    assert row.device == "Unknown device"
    assert '<td class="address" data-label="Address">unknown</td>' in row.html
    assert '<span class="ago">unknown</span>' in row.html  # signed in: unknown


def test_ending_another_browser_revokes_its_pair_and_deletes_its_row(admin, backend):
    other = another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    other_access = vault.tokens_of(other.session).access
    logout = fakes.stub_logout(backend)
    other_id = signins.public_id(key_of(other))

    response = admin.post(f"/accounts/sessions/{other_id}/end/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/sessions/"
    assert len(logout.calls) == 1
    assert logout.calls[0].request.headers["Cookie"] == (
        f"access_token={other_access}; refresh_token=refresh-9"
    )
    assert not row_exists(other)
    assert row_exists(admin)
    page = admin.get("/accounts/sessions/").content.decode()
    assert message_of(page) == ["Signed out Firefox 133 on Windows."]
    assert [r.device for r in session_rows(page)] == ["Chrome 131 on Linux"]
    gone = other.get("/dashboard/")
    assert gone.status_code == 302
    assert urlsplit(gone["Location"]).path == "/accounts/login/"
    assert not PendingRevocation.objects.exists()


def test_ending_a_session_while_the_backend_is_down_queues_the_revocation(admin, backend):
    other = another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())

    response = admin.post(f"/accounts/sessions/{signins.public_id(key_of(other))}/end/")

    assert response.status_code == 302
    assert not row_exists(other)
    (pending,) = PendingRevocation.objects.all()
    assert pending.backend_user_id == "1"
    assert "refresh-9" not in pending.sealed
    assert message_of(admin.get("/accounts/sessions/").content.decode()) == [
        "Signed out Firefox 133 on Windows."
    ]


def test_another_users_session_id_is_404_and_ends_nothing(admin, backend):
    other = another_browser("evaluator", device="Safari 17 on iPhone", refresh="refresh-e")
    other_id = signins.public_id(key_of(other))

    assert admin.post(f"/accounts/sessions/{other_id}/end/").status_code == 404
    assert admin.post(f"/accounts/sessions/{'0' * 20}/end/").status_code == 404
    assert row_exists(other)
    assert not backend.calls
    assert other.get("/dashboard/").status_code == 200


def test_the_posts_answer_405_to_get(admin, backend):
    other = another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    assert admin.get(f"/accounts/sessions/{signins.public_id(key_of(other))}/end/").status_code == (
        405
    )
    assert admin.get("/accounts/sessions/end-others/").status_code == 405
    assert row_exists(other)


def test_ending_this_browser_by_its_id_is_signing_out(admin, backend):
    logout = fakes.stub_logout(backend)
    own_id = signins.public_id(key_of(admin))

    response = admin.post(f"/accounts/sessions/{own_id}/end/")

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert SESSION_KEY not in admin.session
    assert response.cookies["refresh_token"].value == ""
    assert fakes.sent_cookie(logout.calls[0], "refresh_token") == "refresh-1"
    assert "You have been signed out." in admin.get("/").content.decode()


def test_everywhere_else_ends_the_users_other_sessions_only(admin, backend):
    firefox = another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    safari = another_browser(device="Safari 17 on iPhone", refresh="refresh-8")
    evaluator = another_browser("evaluator", device="Edge 131 on Windows", refresh="refresh-e")
    logout = fakes.stub_logout(backend)

    response = admin.post("/accounts/sessions/end-others/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/sessions/"
    assert sorted(fakes.sent_cookie(c, "refresh_token") for c in logout.calls) == [
        "refresh-8",
        "refresh-9",
    ]
    assert not row_exists(firefox)
    assert not row_exists(safari)
    assert row_exists(evaluator)
    page = admin.get("/accounts/sessions/").content.decode()
    assert message_of(page) == ["Signed out 2 other browsers."]
    assert [r.current for r in session_rows(page)] == [True]
    assert "Sign out everywhere else" not in page  # nobody else is left


def test_a_backend_that_is_down_is_called_once_for_everywhere_else(admin, backend):
    others = [
        another_browser(device=f"Firefox {n} on Windows", refresh=f"refresh-{n}") for n in (7, 8, 9)
    ]
    down = backend.post(f"{fakes.BASE}/auth/logout", body=fakes.connection_refused())

    response = admin.post("/accounts/sessions/end-others/")

    assert response.status_code == 302
    assert len(down.calls) == 1  # then the rest are queued without waiting on it again
    assert PendingRevocation.objects.count() == 3
    assert not any(row_exists(other) for other in others)


def test_an_expired_session_cannot_be_found_to_end(admin):
    other = another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    UserSession.objects.filter(pk=key_of(other)).update(expires_at=timezone.now())

    assert signins.find(fakes.make_user("admin"), signins.public_id(key_of(other))) is None


def test_scripts_get_json(admin, backend):
    other = another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    fakes.stub_logout(backend)
    other_id = signins.public_id(key_of(other))

    ended = admin.post(f"/accounts/sessions/{other_id}/end/", HTTP_ACCEPT="application/json")
    again = admin.post(f"/accounts/sessions/{other_id}/end/", HTTP_ACCEPT="application/json")
    others = admin.post("/accounts/sessions/end-others/", HTTP_ACCEPT="application/json")

    assert (ended.status_code, ended.json()) == (
        200,
        {"ok": True, "ended": 1, "message": "Signed out Firefox 133 on Windows."},
    )
    assert again.status_code == 404
    assert again.json()["error"] == "not_found"
    assert others.json() == {"ok": True, "ended": 0, "message": "No other browser was signed in."}


def test_the_posts_need_the_csrf_token(csrf_client, locmem_cache, backend):
    fakes.sign_in_client(csrf_client, "admin", access=fakes.access_jwt())
    other = another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    evaluator = another_browser("evaluator", device="Safari 17 on iPhone", refresh="refresh-e")
    evaluator_user = fakes.make_user("evaluator")
    other_id = signins.public_id(key_of(other))
    evaluator_id = signins.public_id(key_of(evaluator))

    for path in [
        f"/accounts/sessions/{other_id}/end/",
        "/accounts/sessions/end-others/",
        f"/accounts/sessions/users/{evaluator_user.pk}/{evaluator_id}/end/",
        f"/accounts/sessions/users/{evaluator_user.pk}/end-all/",
    ]:
        assert csrf_client.post(path).status_code == 403, path
    assert csrf_client.post(
        "/accounts/sessions/end-others/", HTTP_ACCEPT="application/json"
    ).json() == {
        "ok": False,
        "error": "csrf",
        "message": "CSRF verification failed; reload the page and try again.",
    }
    assert row_exists(other)
    assert row_exists(evaluator)
    assert not backend.calls

    # The page's own form carries the token.
    fakes.stub_logout(backend)
    page = csrf_client.get("/accounts/sessions/").content.decode()
    (row,) = [r for r in session_rows(page) if not r.current]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', row.html)[1]
    assert csrf_client.post(row.action, {"csrfmiddlewaretoken": token}).status_code == 302
    assert not row_exists(other)


# --- in process: the admin's pages -----------------------------------------------


def test_the_admin_page_lists_who_is_signed_in_and_links_their_sessions(admin):
    another_browser("evaluator", device="Safari 17 on iPhone", refresh="refresh-e")
    another_browser("evaluator", device="Firefox 133 on Windows", refresh="refresh-f")
    evaluator = fakes.make_user("evaluator")

    users = signed_in_users(admin.get("/dashboard/admin/").content.decode())

    assert users["evaluator@example.com"] == SignedInUser(
        evaluator.pk, "Eve Evaluator", "evaluator@example.com", "evaluator", 2
    )
    assert users["admin@example.com"].count == 1
    assert "viewer@example.com" not in users


def test_an_admin_sees_and_ends_anyones_sessions(admin, backend):
    safari = another_browser("evaluator", device="Safari 17 on iPhone", refresh="refresh-e")
    firefox = another_browser("evaluator", device="Firefox 133 on Windows", refresh="refresh-f")
    evaluator = fakes.make_user("evaluator")
    logout = fakes.stub_logout(backend)
    url = f"/accounts/sessions/users/{evaluator.pk}/"

    page = admin.get(url).content.decode()
    rows = session_rows(page)
    assert sorted(r.device for r in rows) == ["Firefox 133 on Windows", "Safari 17 on iPhone"]
    assert "This browser" not in page
    assert {r.action for r in rows} == {f"{url}{r.id}/end/" for r in rows}
    assert f'action="{url}end-all/"' in page

    safari_row = next(r for r in rows if r.device == "Safari 17 on iPhone")
    response = admin.post(safari_row.action)
    assert response.status_code == 302
    assert response["Location"] == url
    assert not row_exists(safari)
    assert row_exists(firefox)
    assert message_of(admin.get(url).content.decode()) == ["Signed out Safari 17 on iPhone."]

    response = admin.post(f"{url}end-all/")
    assert response.status_code == 302
    assert response["Location"] == url
    assert not row_exists(firefox)
    assert row_exists(admin)
    assert sorted(fakes.sent_cookie(c, "refresh_token") for c in logout.calls) == [
        "refresh-e",
        "refresh-f",
    ]
    page = admin.get(url).content.decode()
    assert message_of(page) == ["Signed Eve Evaluator out of 1 browser."]
    assert "Eve Evaluator is not signed in anywhere." in page


def test_an_admin_ending_their_own_sessions_there_is_signed_out(admin, backend):
    firefox = another_browser(device="Firefox 133 on Windows", refresh="refresh-9")
    logout = fakes.stub_logout(backend)
    me = fakes.make_user("admin")

    page = admin.get(f"/accounts/sessions/users/{me.pk}/").content.decode()
    assert page.count("This browser") == 1
    response = admin.post(f"/accounts/sessions/users/{me.pk}/end-all/")

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert SESSION_KEY not in admin.session
    assert not row_exists(firefox)
    assert not Session.objects.filter(user=me).exists()
    assert not UserSession.objects.filter(user=me).exists()
    assert sorted(fakes.sent_cookie(c, "refresh_token") for c in logout.calls) == [
        "refresh-1",
        "refresh-9",
    ]


def test_an_admin_ending_their_own_current_session_there_is_signed_out(admin, backend):
    logout = fakes.stub_logout(backend)
    me = fakes.make_user("admin")

    response = admin.post(
        f"/accounts/sessions/users/{me.pk}/{signins.public_id(key_of(admin))}/end/"
    )

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert SESSION_KEY not in admin.session
    assert [fakes.sent_cookie(c, "refresh_token") for c in logout.calls] == ["refresh-1"]


def test_others_get_403_naming_the_role(signed_in, backend):
    evaluator_client = signed_in("evaluator", access=fakes.access_jwt(sub="2"))
    admin_browser = another_browser(device="Chrome 131 on Linux", refresh="refresh-a")
    admin_user = fakes.make_user("admin")
    admin_id = signins.public_id(key_of(admin_browser))

    for method, path in [
        ("get", "/dashboard/admin/"),
        ("get", f"/accounts/sessions/users/{admin_user.pk}/"),
        ("post", f"/accounts/sessions/users/{admin_user.pk}/end-all/"),
        ("post", f"/accounts/sessions/users/{admin_user.pk}/{admin_id}/end/"),
        ("get", f"/accounts/sessions/users/{admin_user.pk}/end-all/"),
    ]:
        denied = getattr(evaluator_client, method)(path)
        assert denied.status_code == 403, path
        assert "This page needs the role “admin”." in denied.content.decode()
    assert row_exists(admin_browser)
    assert not backend.calls
    assert evaluator_client.get("/accounts/sessions/").status_code == 200


def test_an_unknown_user_is_404(admin):
    assert admin.get("/accounts/sessions/users/999999/").status_code == 404
    assert admin.post("/accounts/sessions/users/999999/end-all/").status_code == 404


# --- over real HTTP, both storage modes ------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory, storage_mode):
    workdir = tmp_path_factory.mktemp(f"sessions-{storage_mode}")
    with (
        running_authapi(workdir, AUTHAPI_ACCESS_TTL="600") as api,
        running_app(workdir, api_url=api.url, AUTH_TOKEN_STORAGE=storage_mode) as app,
    ):
        yield app, api, workdir / "app.sqlite3"


def sign_in_from(base_url: str, user, agent: str, *, storage: str) -> requests.Session:
    """Sign in through the app's form from a browser that sends `agent`; return its jar."""
    browser = requests.Session()
    browser.headers["User-Agent"] = agent
    form = browser.get(f"{base_url}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
    response = browser.post(
        f"{base_url}/accounts/login/",
        data={"email": user.email, "password": user.password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base_url}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text[:500]
    assert browser.cookies.get("sessionid")
    assert bool(browser.cookies.get("refresh_token")) == (storage == "cookies")
    return browser


def press(browser: requests.Session, base_url: str, action: str) -> requests.Response:
    """Press a button of the sessions page (a same-origin form POST); do not follow."""
    return browser.post(
        f"{base_url}{action}",
        headers=csrf_headers(browser, base_url, "/accounts/sessions/"),
        allow_redirects=False,
        timeout=30,
    )


def session_row_exists(database: Path, browser: requests.Session) -> bool:
    with sqlite3.connect(database) as db:
        return bool(
            db.execute(
                "SELECT count(*) FROM accounts_session WHERE session_key = ?",
                (browser.cookies.get("sessionid"),),
            ).fetchone()[0]
        )


def signed_out(base_url: str, browser: requests.Session) -> bool:
    """Whether the jar's next dashboard visit is sent to the sign-in page."""
    answer = browser.get(f"{base_url}/dashboard/", allow_redirects=False, timeout=10)
    if answer.status_code == 200:
        return False
    assert answer.status_code == 302, answer.status_code
    assert answer.headers["Location"] == "/accounts/login/?next=/dashboard/"
    return True


def refused_by_api(api, refresh_token: str) -> bool:
    """Whether the API refuses the refresh token (only ever ask about one meant to be dead)."""
    answer = requests.post(
        f"{api.url}/auth/refresh", cookies={"refresh_token": refresh_token}, timeout=10
    )
    return answer.status_code == 401


def test_three_browsers_one_signed_out_then_everywhere_else(servers, storage_mode):
    app, api, database = servers
    chrome = sign_in_from(app.url, ADMIN, CHROME_LINUX, storage=storage_mode)
    # Other tests of this module may have left the admin signed in elsewhere.
    assert press(chrome, app.url, "/accounts/sessions/end-others/").status_code == 302
    firefox = sign_in_from(app.url, ADMIN, FIREFOX_WINDOWS, storage=storage_mode)
    safari = sign_in_from(app.url, ADMIN, SAFARI_IPHONE, storage=storage_mode)
    pairs = {name: sealed_pair(database, jar) for name, jar in [("f", firefox), ("s", safari)]}

    page = chrome.get(f"{app.url}/accounts/sessions/", timeout=10).text
    rows = {r.device: r for r in session_rows(page)}

    assert sorted(rows) == ["Chrome 131 on Linux", "Firefox 133 on Windows", "Safari 17 on iPhone"]
    assert page.count("This browser") == 1
    assert rows["Chrome 131 on Linux"].current
    assert rows["Chrome 131 on Linux"].action == "/accounts/logout/"
    assert all("127.0.0.1" in row.html for row in rows.values())
    for jar in (chrome, firefox, safari):
        assert jar.cookies.get("sessionid") not in page

    firefox_cookie = firefox.cookies.get("refresh_token")
    before = api.stats()
    answer = press(chrome, app.url, rows["Firefox 133 on Windows"].action)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/accounts/sessions/"
    page = chrome.get(f"{app.url}/accounts/sessions/", timeout=10).text
    assert message_of(page) == ["Signed out Firefox 133 on Windows."]
    assert sorted(r.device for r in session_rows(page)) == [
        "Chrome 131 on Linux",
        "Safari 17 on iPhone",
    ]
    assert signed_out(app.url, firefox)
    assert api.stats()["logout"] - before["logout"] == 1
    assert refused_by_api(api, pairs["f"].refresh)
    if storage_mode == "cookies":
        assert firefox_cookie == pairs["f"].refresh  # the very token the browser held
    assert not signed_out(app.url, safari)

    answer = press(chrome, app.url, "/accounts/sessions/end-others/")
    assert answer.status_code == 302
    page = chrome.get(f"{app.url}/accounts/sessions/", timeout=10).text
    assert message_of(page) == ["Signed out 1 other browser."]
    assert [(r.device, r.current) for r in session_rows(page)] == [("Chrome 131 on Linux", True)]
    assert signed_out(app.url, safari)
    assert api.stats()["logout"] - before["logout"] == 2
    assert refused_by_api(api, pairs["s"].refresh)
    assert not signed_out(app.url, chrome)
    assert chrome.get(f"{app.url}/api/users/me", timeout=10).json()["email"] == ADMIN.email


def test_an_admin_signs_a_user_out_everywhere(servers, storage_mode):
    app, api, database = servers
    admin = sign_in_from(app.url, ADMIN, EDGE_WINDOWS, storage=storage_mode)
    laptop = sign_in_from(app.url, EVALUATOR, FIREFOX_WINDOWS, storage=storage_mode)
    script = sign_in_from(app.url, EVALUATOR, CURL, storage=storage_mode)
    pairs = [sealed_pair(database, jar) for jar in (laptop, script)]

    users = signed_in_users(admin.get(f"{app.url}/dashboard/admin/", timeout=10).text)
    eve = users[EVALUATOR.email]
    assert (eve.name, eve.roles, eve.count) == ("Eve Evaluator", "evaluator", 2)
    assert users[ADMIN.email].count >= 1
    user_url = f"/accounts/sessions/users/{eve.user_id}/"
    page = admin.get(f"{app.url}{user_url}", timeout=10).text
    rows = session_rows(page)
    assert sorted(r.device for r in rows) == ["Firefox 133 on Windows", "curl 8"]
    assert "This browser" not in page

    # The evaluator may not open any of it.
    for method, path in [
        ("GET", user_url),
        ("POST", f"{user_url}end-all/"),
        ("POST", rows[0].action),
        ("GET", "/dashboard/admin/"),
    ]:
        denied = laptop.request(
            method,
            f"{app.url}{path}",
            headers=csrf_headers(laptop, app.url, "/accounts/sessions/"),
            allow_redirects=False,
            timeout=10,
        )
        assert denied.status_code == 403, path
        assert "This page needs the role “admin”." in denied.text
    assert len(session_rows(laptop.get(f"{app.url}/accounts/sessions/", timeout=10).text)) == 2

    before = api.stats()
    answer = press(admin, app.url, f"{user_url}end-all/")

    assert answer.status_code == 302
    assert answer.headers["Location"] == user_url
    page = admin.get(f"{app.url}{user_url}", timeout=10).text
    assert message_of(page) == ["Signed Eve Evaluator out of 2 browsers."]
    assert session_rows(page) == []
    assert signed_out(app.url, laptop)
    assert signed_out(app.url, script)
    assert api.stats()["logout"] - before["logout"] == 2
    assert all(refused_by_api(api, pair.refresh) for pair in pairs)
    users = signed_in_users(admin.get(f"{app.url}/dashboard/admin/", timeout=10).text)
    assert EVALUATOR.email not in users
    assert not signed_out(app.url, admin)


# --- a session ended while the backend is down -----------------------------------


def pending_revocations(database: Path) -> list[tuple[str, int, str]]:
    with sqlite3.connect(database) as db:
        return db.execute(
            "SELECT backend_user_id, attempts, last_error FROM accounts_pendingrevocation"
        ).fetchall()


def test_a_session_ended_while_the_api_is_down_is_revoked_when_it_is_back(tmp_path):
    """The API is stopped (its own, not the module's), then started again on the same port
    and database: the same API with the same tokens."""
    port = reserve_port()
    api_url = f"http://127.0.0.1:{port}"
    database = tmp_path / "app.sqlite3"
    # Retries only through `manage.py revocations`, so the test decides when one happens.
    with running_app(tmp_path, api_url=api_url, AUTH_REVOCATION_RETRY_INTERVAL="0") as app:
        with running_authapi(tmp_path, port=port, AUTHAPI_ACCESS_TTL="600"):
            here = sign_in_from(app.url, ADMIN, CHROME_LINUX, storage="cookies")
            there = sign_in_from(app.url, ADMIN, FIREFOX_WINDOWS, storage="cookies")
            pair = sealed_pair(database, there)
        page = here.get(f"{app.url}/accounts/sessions/", timeout=10).text
        (row,) = [r for r in session_rows(page) if not r.current]

        answer = press(here, app.url, row.action)

        assert answer.status_code == 302
        page = here.get(f"{app.url}/accounts/sessions/", timeout=10).text
        assert message_of(page) == ["Signed out Firefox 133 on Windows."]
        assert not session_row_exists(database, there)
        ((backend_user, attempts, error),) = pending_revocations(database)
        assert backend_user and attempts == 1 and error
        assert signed_out(app.url, there)

        with running_authapi(tmp_path, port=port, AUTHAPI_ACCESS_TTL="600") as api:
            env = server_env(database, API_BASEURL=api_url)
            out = manage("revocations", "--flush", env=env)
            assert pending_revocations(database) == [], out
            assert api.stats()["logout"] == 1
            assert refused_by_api(api, pair.refresh)
            assert not signed_out(app.url, here)
