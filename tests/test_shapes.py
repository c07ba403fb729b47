"""The app against every common NestJS backend shape, over real HTTP (issue 11).

For each shape the reference API runs as its own process with that shape's
AUTHAPI_* switches (README, "The reference API's shapes") and the app under
gunicorn with the settings that shape needs; a `requests` session plays the
browser. Each shape goes through sign-in, the transparent refresh, a late tab
holding the pair just replaced (the grace case), the `/api/` proxy and
sign-out, and the backend's counters must show no refresh token presented
twice (`spent_presented`, counted even where the backend would not notice).
"""

import re
import time
from dataclasses import dataclass, field

import pytest
import requests

from authapi.demo import DEMO_USERS
from tests.flows import csrf_headers
from tests.servers import running_app, running_authapi

ADMIN = DEMO_USERS[0]
SHORT = 3  # seconds an access token lives in the refresh tests (its `iat` is whole seconds)


@dataclass(frozen=True)
class Shape:
    name: str
    api: dict = field(default_factory=dict)
    app: dict = field(default_factory=dict)

    @property
    def access_cookie(self) -> str:
        return self.app.get("AUTH_ACCESS_COOKIE", "access_token")

    @property
    def refresh_cookie(self) -> str:
        return self.app.get("AUTH_REFRESH_COOKIE", "refresh_token")

    @property
    def in_body(self) -> bool:
        return self.api.get("AUTHAPI_TOKEN_TRANSPORT") == "body"

    @property
    def refresh_field(self) -> str:
        return self.api.get("AUTHAPI_REFRESH_FIELD", "refreshToken")


BODY = {"AUTHAPI_TOKEN_TRANSPORT": "body"}
SHAPES = [
    Shape("cookies"),
    Shape(
        "scoped and prefixed cookies",
        api={
            "AUTHAPI_ACCESS_COOKIE": "__Host-access",
            "AUTHAPI_REFRESH_COOKIE": "__Secure-refresh",
            "AUTHAPI_REFRESH_COOKIE_PATH": "/auth/refresh",
        },
        app={
            "AUTH_ACCESS_COOKIE": "__Host-access",
            "AUTH_REFRESH_COOKIE": "__Secure-refresh",
            "AUTH_COOKIE_SECURE": "True",
        },
    ),
    Shape("no rotation", api={"AUTHAPI_ROTATE_REFRESH": "False"}),
    Shape("tokens in the body", api=BODY, app={"AUTH_BACKEND_TOKEN_TRANSPORT": "body"}),
    Shape(
        "body, snake_case fields, no rotation",
        api={
            **BODY,
            "AUTHAPI_ACCESS_FIELD": "access_token",
            "AUTHAPI_REFRESH_FIELD": "refresh_token",
            "AUTHAPI_ROTATE_REFRESH": "False",
        },
        app={
            "AUTH_BACKEND_TOKEN_TRANSPORT": "body",
            "AUTH_BODY_ACCESS_FIELD": "access_token",
            "AUTH_BODY_REFRESH_FIELD": "refresh_token",
        },
    ),
    Shape(
        "slow refresh, reuse detection off",
        api={"AUTHAPI_REFRESH_DELAY": "1", "AUTHAPI_REUSE_DETECTION": "False"},
    ),
    Shape("clock 5 minutes behind", api={"AUTHAPI_CLOCK_OFFSET": "-300"}),
    Shape(
        "clock 5 minutes ahead, tokens in the body",
        api={**BODY, "AUTHAPI_CLOCK_OFFSET": "300"},
        app={"AUTH_BACKEND_TOKEN_TRANSPORT": "body"},
    ),
]


@dataclass
class Setup:
    shape: Shape
    api: object
    app: object


@pytest.fixture(scope="module", params=SHAPES, ids=[s.name for s in SHAPES])
def setup(request, tmp_path_factory):
    shape = request.param
    work = tmp_path_factory.mktemp("shape")
    with (
        running_authapi(work, **shape.api) as api,
        running_app(work, api_url=api.url, workers=1, name="app", **shape.app) as app,
    ):
        yield Setup(shape, api, app)
        # Whatever each test did: no refresh token ever went out twice.
        assert api.stats()["spent_presented"] == 0
        assert api.stats()["reuse_detected"] == 0


@pytest.fixture(autouse=True)
def lifetime(setup):
    setup.api.set_faults(access_ttl=None)
    yield
    setup.api.set_faults(access_ttl=None)


class Browser(requests.Session):
    """A cookie jar that sends Secure cookies back over plain HTTP, as a browser does to
    http://localhost (requests would keep them for https only)."""

    def send(self, request, **kwargs):
        response = super().send(request, **kwargs)
        for cookie in self.cookies:
            cookie.secure = False
        return response


def browser() -> requests.Session:
    return Browser()


def sign_in(setup: Setup) -> requests.Session:
    session = browser()
    base = setup.app.url
    form = session.get(f"{base}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
    response = session.post(
        f"{base}/accounts/login/",
        data={"email": ADMIN.email, "password": ADMIN.password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text[:500]
    assert response.headers["Location"] == "/dashboard/"
    return session


def tokens(setup: Setup, session: requests.Session) -> tuple[str | None, str | None]:
    return (
        session.cookies.get(setup.shape.access_cookie),
        session.cookies.get(setup.shape.refresh_cookie),
    )


def get(setup: Setup, session: requests.Session, path: str) -> requests.Response:
    return session.get(f"{setup.app.url}{path}", allow_redirects=False, timeout=30)


def calls(setup: Setup) -> int:
    return setup.api.stats()["refresh_calls"]


def short_lived(setup: Setup) -> None:
    setup.api.set_faults(access_ttl=SHORT)


def test_sign_in_relays_the_pair_in_the_apps_own_cookies(setup):
    session = sign_in(setup)
    access, refresh = tokens(setup, session)
    assert access and refresh
    page = get(setup, session, "/dashboard/")
    assert page.status_code == 200
    assert "Ada Admin" in page.text
    assert access not in page.text and refresh not in page.text
    token_cookies = {c.name for c in session.cookies} - {"sessionid", "csrftoken"}
    assert token_cookies == {setup.shape.access_cookie, setup.shape.refresh_cookie}


def test_no_refresh_while_the_access_token_is_valid(setup):
    setup.api.set_faults(access_ttl=120)  # refreshed 60 s before expiry: not in this test
    session = sign_in(setup)
    before = calls(setup)
    for path in ("/dashboard/", "/dashboard/profile/", "/api/users/me", "/dashboard/"):
        assert get(setup, session, path).status_code == 200
    assert calls(setup) == before, "a valid access token was refreshed"


def test_an_expired_access_token_is_refreshed_once_transparently(setup):
    short_lived(setup)
    session = sign_in(setup)
    old_access, old_refresh = tokens(setup, session)
    before = calls(setup)
    time.sleep(SHORT + 0.5)
    page = get(setup, session, "/dashboard/")
    assert page.status_code == 200
    assert calls(setup) == before + 1
    new_access, new_refresh = tokens(setup, session)
    assert new_access != old_access
    rotates = setup.shape.api.get("AUTHAPI_ROTATE_REFRESH") != "False"
    assert (new_refresh != old_refresh) is rotates
    assert get(setup, session, "/api/users/me").json()["email"] == ADMIN.email
    assert calls(setup) == before + 1


def test_a_late_tab_holding_the_replaced_pair_gets_the_new_one(setup):
    short_lived(setup)
    first = sign_in(setup)
    late = browser()
    late.cookies.update(first.cookies)
    time.sleep(SHORT + 0.5)
    before = calls(setup)
    assert get(setup, first, "/dashboard/").status_code == 200
    assert calls(setup) == before + 1
    page = get(setup, late, "/dashboard/")
    assert page.status_code == 200, "the late tab was signed out"
    assert calls(setup) == before + 1, "the late tab's spent token went out again"
    assert tokens(setup, late)[0] == tokens(setup, first)[0]


def test_the_proxy_answers_as_the_signed_in_user(setup):
    session = sign_in(setup)
    answer = get(setup, session, "/api/users/me")
    assert answer.status_code == 200
    assert answer.json()["email"] == ADMIN.email
    assert answer.headers["Content-Security-Policy"].startswith("sandbox")


def test_sign_out_revokes_the_refresh_token_at_the_backend(setup):
    session = sign_in(setup)
    _, refresh = tokens(setup, session)
    response = session.post(
        f"{setup.app.url}/accounts/logout/",
        headers=csrf_headers(session, setup.app.url),
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 302
    assert tokens(setup, session) == (None, None)
    assert get(setup, session, "/dashboard/").status_code == 302
    shape = setup.shape
    if shape.in_body:
        again = requests.post(
            f"{setup.api.url}/auth/refresh", json={shape.refresh_field: refresh}, timeout=10
        )
    else:
        again = requests.post(
            f"{setup.api.url}/auth/refresh",
            headers={"Cookie": f"{shape.refresh_cookie}={refresh}"},
            timeout=10,
        )
    assert again.status_code == 401
