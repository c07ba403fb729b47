"""`manage.py authcheck` against every reference API shape and a deliberately broken backend."""

import contextlib
import io
import json
import re
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command

from authapi.demo import DEMO_USERS
from tests.flows import sign_out
from tests.servers import running_app, running_authapi
from tests.test_shapes import Browser

ADMIN = DEMO_USERS[0]


def authcheck(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("authcheck", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, out.getvalue(), err.getvalue()


def run_json(url: str, password: str = ADMIN.password, *extra: str) -> tuple[int, dict, str]:
    code, out, err = authcheck(
        "--base-url", url, "--email", ADMIN.email, "--password", password, "--json", *extra
    )
    return code, json.loads(out), out + err


def statuses(result: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in result["checks"]}


SHAPES = {
    "cookies": (
        {},
        {"AUTH_BACKEND_TOKEN_TRANSPORT": "cookie", "AUTH_ACCESS_COOKIE": "access_token"},
    ),
    "scoped and prefixed cookies": (
        {
            "AUTHAPI_ACCESS_COOKIE": "__Host-access",
            "AUTHAPI_REFRESH_COOKIE": "__Secure-refresh",
            "AUTHAPI_REFRESH_COOKIE_PATH": "/auth/refresh",
        },
        {
            "AUTH_ACCESS_COOKIE": "__Host-access",
            "AUTH_REFRESH_COOKIE": "__Secure-refresh",
            "AUTH_COOKIE_SECURE": "True",
        },
    ),
    "no rotation": ({"AUTHAPI_ROTATE_REFRESH": "False"}, {"AUTH_REFRESH_COOKIE": "refresh_token"}),
    "tokens in the body": (
        {"AUTHAPI_TOKEN_TRANSPORT": "body"},
        {
            "AUTH_BACKEND_TOKEN_TRANSPORT": "body",
            "AUTH_BODY_ACCESS_FIELD": "accessToken",
            "AUTH_BODY_REFRESH_FIELD": "refreshToken",
            "AUTH_BODY_REFRESH_LIFETIME": "604800",
        },
    ),
    "body, snake_case fields": (
        {
            "AUTHAPI_TOKEN_TRANSPORT": "body",
            "AUTHAPI_ACCESS_FIELD": "access_token",
            "AUTHAPI_REFRESH_FIELD": "refresh_token",
        },
        {"AUTH_BODY_ACCESS_FIELD": "access_token", "AUTH_BODY_REFRESH_FIELD": "refresh_token"},
    ),
    "slow refresh, reuse detection off": (
        {"AUTHAPI_REUSE_DETECTION": "False", "AUTHAPI_REFRESH_DELAY": "1"},
        {},
    ),
    "clock 5 minutes behind": ({"AUTHAPI_CLOCK_OFFSET": "-300"}, {}),
    "clock 5 minutes ahead, tokens in the body": (
        {"AUTHAPI_CLOCK_OFFSET": "300", "AUTHAPI_TOKEN_TRANSPORT": "body"},
        {"AUTH_BACKEND_TOKEN_TRANSPORT": "body"},
    ),
    # The shapes of real open-source NestJS backends (SPEC §1, "MUST (turn 3)").
    "brocoders": (
        {
            "AUTHAPI_LOGIN_PATH": "/api/v1/auth/email/login",
            "AUTHAPI_REFRESH_PATH": "/api/v1/auth/refresh",
            "AUTHAPI_LOGOUT_PATH": "/api/v1/auth/logout",
            "AUTHAPI_ME_PATH": "/api/v1/auth/me",
            "AUTHAPI_TOKEN_TRANSPORT": "body",
            "AUTHAPI_ACCESS_FIELD": "token",
            "AUTHAPI_REFRESH_IN": "bearer",
            "AUTHAPI_LOGIN_FAILURE_STATUS": "422",
            "AUTHAPI_ME_ROLES": "object",
            "AUTHAPI_ROLE_CASE": "title",
            "AUTHAPI_LOGOUT_STATUS": "204",
            "AUTHAPI_LOGIN_ANSWER_USER": "True",
        },
        {
            "AUTH_ACCESS_TOKEN_FROM": "json:token",
            "AUTH_REFRESH_TOKEN_FROM": "json:refreshToken",
            "AUTH_ACCESS_TOKEN_TO": "bearer",
            "AUTH_REFRESH_TOKEN_TO": "bearer",
            "AUTH_LOGOUT_ACCESS_TOKEN_TO": "bearer",
            "AUTH_LOGOUT_REFRESH_TOKEN_TO": "none",
            "AUTH_ME_ROLES_PATH": "role",
            "AUTH_ALLOWED_ROLES": "Admin,Evaluator",
            "DEMO_ADMIN_ROLES": "Admin",
        },
    ),
    "nocodb": (
        {
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
            "AUTHAPI_LOGIN_FAILURE_STATUS": "400",
            "AUTHAPI_ME_ROLES": "map",
            "AUTHAPI_ME_GUEST": "True",
        },
        {
            "AUTH_ACCESS_TOKEN_FROM": "json:token",
            "AUTH_REFRESH_TOKEN_FROM": "cookie:refresh_token",
            "AUTH_ACCESS_TOKEN_TO": "header:xc-auth",
            "AUTH_REFRESH_TOKEN_TO": "cookie:refresh_token",
            "AUTH_ME_ROLES_PATH": "roles",
        },
    ),
    "nested JSON, roles as objects": (
        {
            "AUTHAPI_TOKEN_TRANSPORT": "body",
            "AUTHAPI_ACCESS_FIELD": "data.accessToken",
            "AUTHAPI_REFRESH_FIELD": "data.refreshToken",
            "AUTHAPI_ME_ROLES": "objects",
        },
        {
            "AUTH_ACCESS_TOKEN_FROM": "json:data.accessToken",
            "AUTH_REFRESH_TOKEN_FROM": "json:data.refreshToken",
            "AUTH_REFRESH_TOKEN_TO": "json:data.refreshToken",
        },
    ),
    "roles only in the access token": (
        {"AUTHAPI_ME_ROLES": "none"},
        {"AUTH_ROLES_FROM": "token", "AUTH_TOKEN_ROLES_CLAIM": "roles"},
    ),
    "one role as a string, spelled Admin": (
        {"AUTHAPI_ME_ROLES": "string", "AUTHAPI_ROLE_CASE": "title"},
        {
            "AUTH_ME_ROLES_PATH": "roles",
            "AUTH_ALLOWED_ROLES": "Admin,Evaluator",
            "AUTH_SUPERUSER_ROLES": "Admin",
            "DEMO_ADMIN_ROLES": "Admin",
            "DEMO_EVALUATION_ROLES": "Evaluator,Admin",
        },
    ),
}
# The app runs from authcheck's lines for these (the others' settings are the
# defaults or shorthands that tests/test_shapes.py runs with already).
RUN_THE_APP = {
    "cookies",
    "tokens in the body",
    "brocoders",
    "nocodb",
    "nested JSON, roles as objects",
    "roles only in the access token",
    "one role as a string, spelled Admin",
}
EXPECTED_WARNINGS = {
    # An opaque refresh token in a body says nothing of its lifetime.
    "tokens in the body": {"token lifetimes"},
    "body, snake_case fields": {"token lifetimes"},
    "no rotation": {"rotation"},
    "slow refresh, reuse detection off": {"reuse detection"},
    "clock 5 minutes behind": {"clock"},
    "clock 5 minutes ahead, tokens in the body": {"clock", "token lifetimes"},
    "brocoders": {"token lifetimes"},
    # No Secure on the backend's refresh cookie.
    "nocodb": {"refresh cookie"},
    "nested JSON, roles as objects": {"token lifetimes"},
}
EXPECTED_SKIPS = {"no rotation": {"reuse detection"}}


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_reference_shape_passes_and_its_env_lines_alone_run_the_app(name, tmp_path, db):
    """authcheck → its `.env` lines → the app signs in, refreshes, proxies and signs out."""
    api_env, expected_env = SHAPES[name]
    with running_authapi(tmp_path, **api_env) as api:
        code, result, output = run_json(api.url)
        stats = api.stats()
        assert live_sign_ins(tmp_path) == 0, "a sign-in authcheck made is still alive"
        if code == 0 and name in RUN_THE_APP:
            app_signs_in_refreshes_proxies_and_signs_out(tmp_path, api, result["env"])
    assert code == 0, result
    assert result["ok"] is True
    found = statuses(result)
    warned = {check for check, status in found.items() if status == "WARN"}
    assert warned == EXPECTED_WARNINGS.get(name, set()), result["checks"]
    skipped = {check for check, status in found.items() if status == "SKIP"}
    assert skipped == EXPECTED_SKIPS.get(name, set()), result["checks"]
    for setting, value in expected_env.items():
        assert result["env"][setting] == value, result["env"]
    assert result["env"]["API_BASEURL"] == api.url
    assert ADMIN.password not in output
    assert stats["login"] == 2, "the check's sign-in and the reuse probe's"
    assert stats["login_failed"] == 1, "one wrong password"
    assert stats["logout"] >= 2, "every sign-in it made is signed out"


def live_sign_ins(workdir) -> int:
    """Token families not revoked in the reference API's database."""
    with contextlib.closing(sqlite3.connect(workdir / "authapi.sqlite3")) as db:
        return db.execute(
            "SELECT COUNT(*) FROM authapi_tokenfamily WHERE revoked_at IS NULL"
        ).fetchone()[0]


def app_signs_in_refreshes_proxies_and_signs_out(tmp_path, api, env: dict) -> None:
    """The app configured only from authcheck's env (plus the proxy's prefix, the adopter's
    own choice): one sign-in, one transparent refresh, the proxy, a sign-out that revokes."""
    me_path = env["AUTH_ME_PATH"]
    prefix = me_path.lstrip("/").rsplit("/", 1)[0] + "/"
    app_env = {k: v for k, v in env.items() if k != "API_BASEURL"}
    with running_app(
        tmp_path, api_url=api.url, workers=1, AUTH_PROXY_PREFIXES=prefix, **app_env
    ) as app:
        api.set_faults(access_ttl=3)
        spent = api.stats()["spent_presented"]  # authcheck's own reuse probe presented one
        browser = Browser()
        form = browser.get(f"{app.url}/accounts/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
        signed_in = browser.post(
            f"{app.url}/accounts/login/",
            data={"email": ADMIN.email, "password": ADMIN.password, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{app.url}/accounts/login/"},
            allow_redirects=False,
            timeout=10,
        )
        assert signed_in.status_code == 302, signed_in.text[:300]
        before = api.stats()
        time.sleep(3.5)
        # The proxied call needs the token: it waits for the refresh the middleware starts.
        proxied = browser.get(f"{app.url}/api{me_path}", allow_redirects=False, timeout=30)
        assert proxied.status_code == 200 and ADMIN.email in proxied.text
        page = browser.get(f"{app.url}/dashboard/", allow_redirects=False, timeout=30)
        assert page.status_code == 200 and "Ada" in page.text
        admin_page = browser.get(f"{app.url}/dashboard/admin/", allow_redirects=False, timeout=30)
        assert admin_page.status_code == 200, "the demo's admin page, as the backend spells it"
        assert api.stats()["refresh"] == before["refresh"] + 1, "one transparent refresh"
        assert sign_out(browser, app.url).status_code == 302
        assert api.stats()["logout"] == before["logout"] + 1
        after = browser.get(f"{app.url}/dashboard/", allow_redirects=False, timeout=30)
        assert after.status_code == 302
        api.set_faults(access_ttl=None)
        assert api.stats()["spent_presented"] == spent, "the app presented a spent token"


def test_a_table_and_the_env_lines_by_default(tmp_path, db):
    with running_authapi(tmp_path) as api:
        code, out, err = authcheck(
            "--base-url", api.url, "--email", ADMIN.email, "--password", ADMIN.password
        )
    assert code == 0
    assert (
        "| sign-in | PASS | 201; access token from cookie:access_token, refresh token from "
        "cookie:refresh_token |"
    ) in out
    assert "cookie refresh_token (max-age=604800; path=/; expires=" in out
    assert "= <opaque, 43 chars>" in out, "token values are masked"
    assert "| reuse detection | PASS |" in out
    assert re.search(r"\| cookie size \| PASS \| largest access_token: \d{3} of 4096 bytes", out)
    assert "AUTH_TOKEN_STORAGE" not in out
    assert "Settings for this backend (.env):" in out
    assert "AUTH_REFRESH_LEEWAY=60" in out
    assert "Reuse probe: signing in once more" in err, "said before it runs"
    assert ADMIN.password not in out + err


def test_skip_destructive_leaves_out_the_reuse_probe(tmp_path, db):
    with running_authapi(tmp_path) as api:
        code, result, _ = run_json(api.url, ADMIN.password, "--skip-destructive")
        stats = api.stats()
    assert code == 0
    assert statuses(result)["reuse detection"] == "SKIP"
    assert stats["login"] == 1 and stats["reuse_detected"] == 0


def test_a_wrong_password_fails_at_sign_in(tmp_path, db):
    with running_authapi(tmp_path) as api:
        code, result, output = run_json(api.url, "nope-Ünïcode-secret")
    assert code == 1
    assert statuses(result) == {"sign-in": "FAIL"}
    assert "nope-Ünïcode-secret" not in output


def test_an_unreachable_backend_fails_clearly():
    code, result, _ = run_json("http://127.0.0.1:9")
    assert code == 1
    assert statuses(result) == {"backend reachable": "FAIL"}


def test_missing_credentials_without_a_terminal_say_so(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO())
    with pytest.raises(CommandError, match="Password missing"):
        call_command("authcheck", "--base-url", "http://127.0.0.1:9", "--email", "a@b.c")


# --- a deliberately broken backend ---------------------------------------------------

BROKEN_PASSWORD = "broken-backend-pässword-42"


class BrokenBackend(BaseHTTPRequestHandler):
    """Joins its cookies into one header, sets no HttpOnly, answers 500 to a wrong password,
    never rotates and ignores sign-out."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    joined = False

    def answer(self, status: int, body: dict, cookies: str | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if cookies and self.joined:
            self.send_header("Set-Cookie", cookies)
        elif cookies:
            for cookie in cookies.split(", refresh_token="):
                name = "" if cookie.startswith("access_token") else "refresh_token="
                self.send_header("Set-Cookie", name + cookie)
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_POST(self):  # noqa: N802 - http.server's name
        if self.path == "/auth/login":
            if self.body().get("password") != BROKEN_PASSWORD:
                return self.answer(500, {"statusCode": 500, "message": "Internal server error"})
            joined = (
                "access_token=acc-1; Max-Age=60; Path=/; Expires=Fri, 27 Nov 2026 10:31:00 GMT, "
                "refresh_token=ref-1; Max-Age=600; Path=/"
            )
            return self.answer(201, {"ok": True}, joined)
        if self.path == "/auth/refresh":
            if "refresh_token=ref-1" not in (self.headers.get("Cookie") or ""):
                return self.answer(401, {"statusCode": 401})
            return self.answer(200, {"ok": True}, "access_token=acc-2; Max-Age=60; Path=/")
        if self.path == "/auth/logout":
            return self.answer(200, {"ok": True})  # and forgets nothing
        return self.answer(404, {"statusCode": 404})

    def do_GET(self):  # noqa: N802
        if self.path == "/users/me" and "access_token=" in (self.headers.get("Cookie") or ""):
            return self.answer(200, {"id": 1, "email": ADMIN.email, "roles": ["admin"]})
        return self.answer(401, {"statusCode": 401})


@pytest.fixture
def broken():
    server = ThreadingHTTPServer(("127.0.0.1", 0), BrokenBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_broken_backend_gets_each_problem_named_and_exit_1(broken):
    code, result, output = run_json(broken, BROKEN_PASSWORD)
    assert code == 1
    assert result["ok"] is False
    found = statuses(result)
    assert found["one Set-Cookie header per cookie"] == "PASS"
    assert found["sign-out"] == "FAIL"
    assert found["wrong password"] == "FAIL"
    assert found["access cookie"] == "WARN" and found["refresh cookie"] == "WARN"
    assert found["rotation"] == "WARN"
    by_name = {check["name"]: check for check in result["checks"]}
    assert "no HttpOnly" in by_name["access cookie"]["saw"]
    assert "Set HttpOnly" in by_name["access cookie"]["advice"]
    assert "still refreshes" in by_name["sign-out"]["saw"]
    assert "Answer a wrong password with 401" in by_name["wrong password"]["advice"]
    assert "Sign-in service unavailable" in by_name["wrong password"]["advice"]
    assert BROKEN_PASSWORD not in output


class JoinedCookies(BrokenBackend):
    joined = True


def test_cookies_joined_into_one_header_fail_sign_in_and_say_why():
    code, result, _ = run_against(JoinedCookies)
    assert code == 1
    found = statuses(result)
    assert found["sign-in"] == "FAIL"
    assert found["one Set-Cookie header per cookie"] == "FAIL"
    by_name = {check["name"]: check for check in result["checks"]}
    assert "own Set-Cookie header" in by_name["one Set-Cookie header per cookie"]["advice"]


class BearerOnlyProfile(BrokenBackend):
    """Cookies for the pair, but `/users/me` reads `Authorization: Bearer` only; otherwise sound."""

    revoked: set = set()
    access = "acc-1"

    def do_POST(self):  # noqa: N802
        cookies = self.headers.get("Cookie") or ""
        if self.path == "/auth/login":
            ok = self.body().get("password") == BROKEN_PASSWORD
            if not ok:
                return self.answer(401, {"statusCode": 401})
            self.send_response(201)
            data = b"{}"
            self.send_header("Content-Length", str(len(data)))
            for cookie in (f"access_token={self.access}", "refresh_token=ref-1"):
                self.send_header("Set-Cookie", f"{cookie}; Max-Age=600; Path=/; HttpOnly; Secure")
            self.end_headers()
            return self.wfile.write(data)
        if self.path == "/auth/refresh":
            token = cookies.partition("refresh_token=")[2].split(";")[0]
            if not token or token in self.revoked:
                return self.answer(401, {"statusCode": 401})
            return self.answer(
                200, {"ok": True}, "access_token=acc-2; Max-Age=600; Path=/; HttpOnly; Secure"
            )
        if self.path == "/auth/logout":
            self.revoked.add(cookies.partition("refresh_token=")[2].split(";")[0])
            return self.answer(200, {"ok": True})
        return self.answer(404, {"statusCode": 404})

    def do_GET(self):  # noqa: N802
        if self.path == "/users/me" and self.headers.get("Authorization", "").startswith("Bearer "):
            return self.answer(200, {"id": 1, "email": ADMIN.email, "roles": ["admin"]})
        return self.answer(401, {"statusCode": 401})


def run_against(handler) -> tuple[int, dict, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return run_json(
            f"http://127.0.0.1:{server.server_address[1]}", BROKEN_PASSWORD, "--skip-destructive"
        )
    finally:
        server.shutdown()
        server.server_close()


def test_a_profile_read_with_bearer_only_suggests_the_bearer_transport():
    code, result, _ = run_against(BearerOnlyProfile)
    assert code == 0, result["checks"]
    assert statuses(result)["profile"] == "PASS"
    assert statuses(result)["sign-out"] == "PASS"
    assert result["env"]["AUTH_BACKEND_TOKEN_TRANSPORT"] == "bearer"
    assert result["env"]["AUTH_ACCESS_COOKIE"] == "access_token"


class OversizedAccessToken(BearerOnlyProfile):
    """Sound, but its access token is too large for a browser to keep as a cookie."""

    access = "acc-" + "x" * 4100
    revoked: set = set()  # its own: the parent's holds the other test's revoked token


def test_a_token_too_large_for_a_cookie_is_a_warning_that_suggests_session_storage():
    code, result, _ = run_against(OversizedAccessToken)

    assert code == 0, result["checks"]
    (check,) = [c for c in result["checks"] if c["name"] == "cookie size"]
    assert check["status"] == "WARN"
    assert "access_token cookie would be 42" in check["saw"]
    assert "AUTH_TOKEN_STORAGE=session" in check["advice"]
    assert result["env"]["AUTH_TOKEN_STORAGE"] == "session"


class OtherRoles(BearerOnlyProfile):
    """Sound, but its account's roles are none the app knows."""

    revoked: set = set()

    def do_GET(self):  # noqa: N802
        if self.path == "/users/me" and self.headers.get("Authorization", "").startswith("Bearer "):
            return self.answer(200, {"id": 1, "email": ADMIN.email, "roles": {"super": True}})
        return self.answer(401, {"statusCode": 401})


def test_roles_the_app_does_not_know_are_proposed_for_sign_in_and_the_demo_pages_only():
    code, result, _ = run_against(OtherRoles)
    assert code == 0, result["checks"]
    assert statuses(result)["allowed roles"] == "WARN"
    env = result["env"]
    assert env["AUTH_ALLOWED_ROLES"] == "super"
    assert env["DEMO_ADMIN_ROLES"] == env["DEMO_EVALUATION_ROLES"] == "super"
    assert "AUTH_SUPERUSER_ROLES" not in env, "who administers stays the operator's choice"
