"""The app against every common NestJS backend shape, in both token storage modes, over real
HTTP (issues 11 and 20).

For each shape the reference API runs as its own process with that shape's
AUTHAPI_* switches (docs/settings.md, "Its shapes"), and two apps run
under gunicorn against it with the settings that shape needs, and nothing
else (no AUTH_CLIENT_CLASS): one per AUTH_TOKEN_STORAGE (`cookies`,
`session`). A `requests` session plays the browser. Each test runs its
scenario in both modes in one go, so the servers are started once per shape
and the waits for an access token to expire are shared.

Each shape goes through sign-in, no refresh while the access token is valid,
the transparent refresh, a late tab holding the pair just replaced (in
session mode: a second request with the same `sessionid`), the `/api/` proxy
at that shape's profile path, a wrong password, the admin-only page and
sign-out; the backend's counters must show no refresh token presented twice
(`spent_presented`, counted even where the backend would not notice).
"""

import contextlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from accounts.tokens import access_token_expiry
from authapi.demo import DEMO_USERS
from tests.flows import csrf_headers, sealed_pair
from tests.servers import AuthApiProcess, ServerProcess, running_app, running_authapi

ADMIN, EVALUATOR, _ = DEMO_USERS
MODES = ("cookies", "session")
SHORT = 3  # seconds an access token lives in the refresh tests (its `iat` is whole seconds)
APP_COOKIES = {"sessionid", "csrftoken", "messages"}
WRONG_PASSWORD = "Invalid email or password"  # accounts/forms.py, "invalid_login"

ENDPOINTS = {
    "login": "/auth/login",
    "refresh": "/auth/refresh",
    "logout": "/auth/logout",
    "me": "/users/me",
}


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

    def path(self, endpoint: str) -> str:
        """The API's path of `endpoint` (login, refresh, logout, me)."""
        return self.api.get(f"AUTHAPI_{endpoint.upper()}_PATH", ENDPOINTS[endpoint])

    @property
    def proxied_me(self) -> str:
        """The app's `/api/` path that reaches the backend's profile."""
        return f"/api{self.path('me')}"

    @property
    def rotates(self) -> bool:
        return self.api.get("AUTHAPI_ROTATE_REFRESH") != "False"

    @property
    def roles_from_token(self) -> bool:
        return self.app.get("AUTH_ROLES_FROM") == "token"

    def present_refresh(self, api_url: str, refresh: str) -> requests.Response:
        """Present `refresh` to the API's refresh endpoint the way this shape takes it."""
        url = f"{api_url}{self.path('refresh')}"
        if self.api.get("AUTHAPI_REFRESH_IN") == "bearer":
            return requests.post(url, headers={"Authorization": f"Bearer {refresh}"}, timeout=10)
        if self.api.get("AUTHAPI_TOKEN_TRANSPORT") == "body":
            body: dict = {}
            *parents, leaf = self.api.get("AUTHAPI_REFRESH_FIELD", "refreshToken").split(".")
            node = body
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = refresh
            return requests.post(url, json=body, timeout=10)
        cookie = self.api.get("AUTHAPI_REFRESH_COOKIE", "refresh_token")
        return requests.post(url, headers={"Cookie": f"{cookie}={refresh}"}, timeout=10)


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
    Shape(
        # nestjs-boilerplate: versioned paths, `token` in JSON, the refresh token as Bearer,
        # 422 for a wrong password, `role: {"id", "name": "Admin"}`, a 204 logout.
        "brocoders",
        api={
            "AUTHAPI_LOGIN_PATH": "/api/v1/auth/email/login",
            "AUTHAPI_REFRESH_PATH": "/api/v1/auth/refresh",
            "AUTHAPI_LOGOUT_PATH": "/api/v1/auth/logout",
            "AUTHAPI_ME_PATH": "/api/v1/auth/me",
            **BODY,
            "AUTHAPI_ACCESS_FIELD": "token",
            "AUTHAPI_REFRESH_IN": "bearer",
            "AUTHAPI_LOGIN_FAILURE_STATUS": "422",
            "AUTHAPI_ME_ROLES": "object",
            "AUTHAPI_ROLE_CASE": "title",
            "AUTHAPI_LOGOUT_STATUS": "204",
            "AUTHAPI_LOGIN_ANSWER_USER": "True",
        },
        app={
            "AUTH_LOGIN_PATH": "/api/v1/auth/email/login",
            "AUTH_REFRESH_PATH": "/api/v1/auth/refresh",
            "AUTH_LOGOUT_PATH": "/api/v1/auth/logout",
            "AUTH_ME_PATH": "/api/v1/auth/me",
            "AUTH_BACKEND_TOKEN_TRANSPORT": "body",
            "AUTH_BODY_ACCESS_FIELD": "token",
            # Sign-out then sends only the access token as Bearer (one Authorization header).
            "AUTH_REFRESH_TOKEN_TO": "bearer",
            "AUTH_ME_ROLES_PATH": "role",
            "AUTH_ALLOWED_ROLES": "Admin,Evaluator",
            "AUTH_SUPERUSER_ROLES": "Admin",
            "DEMO_ADMIN_ROLES": "Admin",
            "DEMO_EVALUATION_ROLES": "Evaluator,Admin",
            "AUTH_PROXY_PREFIXES": "api/v1/auth/",
        },
    ),
    Shape(
        # NocoDB: the access token in JSON (`token`) and back in `xc-auth`, the refresh
        # token an opaque 80-hex HttpOnly cookie with `Expires` only; roles as a map;
        # `/me` without a valid token is a 200 guest.
        "nocodb, mixed transport",
        api={
            "AUTHAPI_LOGIN_PATH": "/api/v1/auth/user/signin",
            "AUTHAPI_REFRESH_PATH": "/api/v1/auth/token/refresh",
            "AUTHAPI_LOGOUT_PATH": "/api/v1/auth/user/signout",
            "AUTHAPI_ME_PATH": "/api/v1/auth/user/me",
            "AUTHAPI_TOKEN_TRANSPORT": "mixed",
            "AUTHAPI_ACCESS_FIELD": "token",
            "AUTHAPI_ACCESS_HEADER": "xc-auth",
            "AUTHAPI_COOKIE_MAX_AGE": "False",
            "AUTHAPI_COOKIE_SECURE": "False",
            "AUTHAPI_COOKIE_SAMESITE": "",
            "AUTHAPI_REFRESH_FORMAT": "hex",
            "AUTHAPI_ME_ROLES": "map",
            "AUTHAPI_ME_GUEST": "True",
        },
        app={
            "AUTH_LOGIN_PATH": "/api/v1/auth/user/signin",
            "AUTH_REFRESH_PATH": "/api/v1/auth/token/refresh",
            "AUTH_LOGOUT_PATH": "/api/v1/auth/user/signout",
            "AUTH_ME_PATH": "/api/v1/auth/user/me",
            "AUTH_ACCESS_TOKEN_FROM": "json:token",
            "AUTH_REFRESH_TOKEN_FROM": "cookie:refresh_token",
            "AUTH_ACCESS_TOKEN_TO": "header:xc-auth",
            "AUTH_PROXY_PREFIXES": "api/v1/auth/user/",
        },
    ),
    Shape(
        "nested JSON, roles as a list of objects",
        api={
            **BODY,
            "AUTHAPI_ACCESS_FIELD": "data.accessToken",
            "AUTHAPI_REFRESH_FIELD": "data.refreshToken",
            "AUTHAPI_ME_ROLES": "objects",
        },
        app={
            "AUTH_BACKEND_TOKEN_TRANSPORT": "body",
            "AUTH_BODY_ACCESS_FIELD": "data.accessToken",
            "AUTH_BODY_REFRESH_FIELD": "data.refreshToken",
        },
    ),
    Shape(
        "roles only in the access token",
        api={"AUTHAPI_ME_ROLES": "none"},
        app={"AUTH_ROLES_FROM": "token"},
    ),
    Shape(
        # "Admin" from the backend, the default (lower-case) allowed and demo roles in the app.
        "roles as a single string, case-insensitive",
        api={"AUTHAPI_ME_ROLES": "string", "AUTHAPI_ROLE_CASE": "title"},
        app={"AUTH_ROLES_CASE_INSENSITIVE": "True"},
    ),
]


@dataclass
class Deployment:
    """One shape's API and its two apps, one per token storage mode."""

    shape: Shape
    api: AuthApiProcess
    apps: dict[str, ServerProcess]
    databases: dict[str, Path]

    def stats(self) -> dict[str, int]:
        return self.api.stats()

    def calls(self) -> int:
        return self.stats()["refresh_calls"]


@contextlib.contextmanager
def running_apps(work: Path, api_url: str, settings: dict):
    """Start one app per storage mode at once (their migrations overlap); yield them by mode."""
    managers = {
        mode: running_app(
            work,
            api_url=api_url,
            workers=1,
            name=f"app-{mode}",
            database=f"app-{mode}",
            AUTH_TOKEN_STORAGE=mode,
            **settings,
        )
        for mode in MODES
    }
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(len(managers)) as pool:
            started = {mode: pool.submit(cm.__enter__) for mode, cm in managers.items()}
        apps, failure = {}, None
        for mode, future in started.items():
            try:
                apps[mode] = future.result()
            except Exception as exc:  # noqa: BLE001 - stop the other one, then raise
                failure = failure or exc
            else:
                stack.push(managers[mode].__exit__)
        if failure is not None:
            raise failure
        yield apps


@pytest.fixture(scope="module", params=SHAPES, ids=[s.name for s in SHAPES])
def deployment(request, tmp_path_factory):
    shape = request.param
    work = tmp_path_factory.mktemp("shape")
    with (
        running_authapi(work, **shape.api) as api,
        running_apps(work, api.url, shape.app) as apps,
    ):
        yield Deployment(shape, api, apps, {mode: work / f"app-{mode}.sqlite3" for mode in MODES})
        # Whatever each test did: no refresh token ever went out twice.
        assert api.stats()["spent_presented"] == 0
        assert api.stats()["reuse_detected"] == 0


@pytest.fixture(autouse=True)
def lifetime(deployment):
    deployment.api.set_faults(access_ttl=None)
    yield
    deployment.api.set_faults(access_ttl=None)


class Browser(requests.Session):
    """A cookie jar that sends Secure cookies back over plain HTTP, as a browser does to
    http://localhost (requests would keep them for https only)."""

    def send(self, request, **kwargs):
        response = super().send(request, **kwargs)
        for cookie in self.cookies:
            cookie.secure = False
        return response


def post_login(app: ServerProcess, email: str, password: str) -> tuple[Browser, requests.Response]:
    browser = Browser()
    form = browser.get(f"{app.url}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
    response = browser.post(
        f"{app.url}/accounts/login/",
        data={"email": email, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{app.url}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    return browser, response


def sign_in(app: ServerProcess, user=ADMIN) -> Browser:
    browser, response = post_login(app, user.email, user.password)
    assert response.status_code == 302, response.text[:500]
    assert response.headers["Location"] == "/dashboard/"
    return browser


def late_tab(browser: Browser) -> Browser:
    """A second tab: the same cookies, sent before the first tab's answers land."""
    late = Browser()
    late.cookies.update(browser.cookies)
    return late


def token_cookies(browser: requests.Session) -> dict[str, str]:
    """The jar's cookies other than the app's own, with a value."""
    return {c.name: c.value for c in browser.cookies if c.name not in APP_COOKIES and c.value}


def pair(deployment: Deployment, mode: str, browser: requests.Session) -> tuple[str, str]:
    """The (access, refresh) pair this browser's sign-in holds.

    Cookie mode: the jar's token cookies. Session mode: the pair sealed in the
    session row (the browser holds none).
    """
    if mode == "cookies":
        shape = deployment.shape
        return (
            browser.cookies.get(shape.access_cookie),
            browser.cookies.get(shape.refresh_cookie),
        )
    sealed = sealed_pair(deployment.databases[mode], browser)
    return sealed.access, sealed.refresh


def get(app: ServerProcess, browser: requests.Session, path: str) -> requests.Response:
    return browser.get(f"{app.url}{path}", allow_redirects=False, timeout=30)


def test_sign_in_keeps_the_pair_where_the_storage_mode_says(deployment):
    shape = deployment.shape
    for mode, app in deployment.apps.items():
        browser = sign_in(app)
        access, refresh = pair(deployment, mode, browser)
        assert access and refresh, mode
        page = get(app, browser, "/dashboard/")
        assert page.status_code == 200, mode
        assert "Ada Admin" in page.text, mode
        assert access not in page.text and refresh not in page.text, mode
        if mode == "cookies":
            # Relayed in the app's own cookies, exactly the pair the session keeps.
            assert token_cookies(browser) == {
                shape.access_cookie: access,
                shape.refresh_cookie: refresh,
            }
            sealed = sealed_pair(deployment.databases[mode], browser)
            assert (sealed.access, sealed.refresh) == (access, refresh)
        else:
            assert token_cookies(browser) == {}, "a token reached the browser in session mode"


def test_no_refresh_while_the_access_token_is_valid(deployment):
    deployment.api.set_faults(access_ttl=120)  # refreshed 60 s before expiry: not in this test
    paths = ("/dashboard/", "/dashboard/profile/", deployment.shape.proxied_me, "/dashboard/")
    browsers = {mode: sign_in(app) for mode, app in deployment.apps.items()}
    before = deployment.calls()
    for mode, app in deployment.apps.items():
        for path in paths:
            assert get(app, browsers[mode], path).status_code == 200, (mode, path)
    assert deployment.calls() == before, "a valid access token was refreshed"


def test_an_expired_access_token_is_refreshed_once_and_a_late_tab_gets_the_new_pair(deployment):
    shape = deployment.shape
    deployment.api.set_faults(access_ttl=SHORT)
    first = {mode: sign_in(app) for mode, app in deployment.apps.items()}
    late = {mode: late_tab(browser) for mode, browser in first.items()}
    old = {mode: pair(deployment, mode, browser) for mode, browser in first.items()}
    # Until both modes' access tokens have expired, on this machine's clock: their `exp`
    # is on the API's, AUTHAPI_CLOCK_OFFSET ahead.
    offset = float(shape.api.get("AUTHAPI_CLOCK_OFFSET", 0))
    expired_at = max(access_token_expiry(access).timestamp() for access, _ in old.values())
    time.sleep(max(0.0, expired_at - offset - time.time()) + 0.3)

    for mode, app in deployment.apps.items():
        before = deployment.stats()
        # A call that needs the token waits for the refresh (a page that needs none
        # would be served at once, the new pair following when ready).
        assert get(app, first[mode], shape.proxied_me).status_code == 200, mode
        assert deployment.calls() == before["refresh_calls"] + 1, mode
        new_access, new_refresh = pair(deployment, mode, first[mode])
        old_access, old_refresh = old[mode]
        assert new_access != old_access, mode
        assert (new_refresh != old_refresh) is shape.rotates, mode

        answer = get(app, late[mode], "/dashboard/")
        assert answer.status_code == 200, f"{mode}: the late tab was signed out"
        assert deployment.calls() == before["refresh_calls"] + 1, (
            f"{mode}: the late tab's spent token went out again"
        )
        if mode == "cookies":
            assert pair(deployment, mode, late[mode]) == (new_access, new_refresh)
        else:
            # One session, one pair: nothing to hand out, no token cookie.
            assert token_cookies(late[mode]) == {}
            assert pair(deployment, mode, late[mode]) == (new_access, new_refresh)
        if shape.roles_from_token:
            assert deployment.stats()["me"] == before["me"] + 1, (
                f"{mode}: the refresh re-read /me though roles come from the access token "
                "(the one read allowed is the proxied call's)"
            )

        me = get(app, first[mode], shape.proxied_me)
        assert me.status_code == 200, mode
        assert me.json()["email"] == ADMIN.email, mode
        assert deployment.calls() == before["refresh_calls"] + 1, mode


def test_the_proxy_answers_as_the_signed_in_user(deployment):
    for mode, app in deployment.apps.items():
        answer = get(app, sign_in(app), deployment.shape.proxied_me)
        assert answer.status_code == 200, mode
        assert answer.json()["email"] == ADMIN.email, mode
        assert answer.headers["Content-Security-Policy"].startswith("sandbox"), mode


def test_a_wrong_password_is_the_forms_error(deployment):
    for mode, app in deployment.apps.items():
        refused = deployment.stats()["login_failed"]
        browser, answer = post_login(app, ADMIN.email, "not the password")
        assert answer.status_code == 200, f"{mode}: {answer.status_code} {answer.text[:300]}"
        assert WRONG_PASSWORD in answer.text, mode
        assert 'name="password"' in answer.text, mode
        assert deployment.stats()["login_failed"] == refused + 1, mode
        assert token_cookies(browser) == {}, mode


def test_only_the_admin_opens_the_admin_page(deployment):
    for mode, app in deployment.apps.items():
        admin, evaluator = sign_in(app, ADMIN), sign_in(app, EVALUATOR)
        assert get(app, admin, "/dashboard/admin/").status_code == 200, mode
        assert get(app, evaluator, "/dashboard/admin/").status_code == 403, mode
        assert get(app, evaluator, "/dashboard/evaluations/").status_code == 200, mode


def test_sign_out_revokes_the_refresh_token_at_the_backend(deployment):
    shape = deployment.shape
    for mode, app in deployment.apps.items():
        browser = sign_in(app)
        _, refresh = pair(deployment, mode, browser)
        logouts = deployment.stats()["logout"]
        response = browser.post(
            f"{app.url}/accounts/logout/",
            headers=csrf_headers(browser, app.url),
            allow_redirects=False,
            timeout=30,
        )
        assert response.status_code == 302, mode
        assert token_cookies(browser) == {}, mode
        assert get(app, browser, "/dashboard/").status_code == 302, mode
        assert deployment.stats()["logout"] == logouts + 1, f"{mode}: the backend was not told"
        again = shape.present_refresh(deployment.api.url, refresh)
        assert again.status_code == 401, f"{mode}: the refresh token still works"


def test_a_sign_in_the_backend_revoked_ends_at_the_next_profile_read(deployment):
    """`/me` refuses the revoked token (401, or NocoDB's guest answer: 200 without an id):
    the app renews once, the refresh is refused, the session ends (never a guest's page)."""
    browsers = {mode: sign_in(app, EVALUATOR) for mode, app in deployment.apps.items()}
    before = deployment.stats()
    deployment.api.apiuser("revoke", EVALUATOR.email)
    for mode, app in deployment.apps.items():
        answer = browsers[mode].get(
            f"{app.url}/dashboard/profile/",
            headers={"Accept": "application/json"},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 401, f"{mode}: {answer.status_code} {answer.text[:200]}"
        assert get(app, browsers[mode], "/dashboard/").status_code == 302, mode
    after = deployment.stats()
    assert after["me_rejected"] >= before["me_rejected"] + 2, "the guest answers"
    assert after["refresh_rejected"] == before["refresh_rejected"] + 2, "one renewal each"
