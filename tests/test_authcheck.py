"""`manage.py authcheck` against every reference API shape and a deliberately broken backend."""

import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command

from authapi.demo import DEMO_USERS
from tests.servers import running_authapi

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
}
EXPECTED_WARNINGS = {
    # An opaque refresh token in a body says nothing of its lifetime.
    "tokens in the body": {"token lifetimes"},
    "body, snake_case fields": {"token lifetimes"},
    "no rotation": {"rotation", "reuse detection"},
    "slow refresh, reuse detection off": {"reuse detection"},
    "clock 5 minutes behind": {"clock"},
    "clock 5 minutes ahead, tokens in the body": {"clock", "token lifetimes"},
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_reference_shape_passes_with_the_right_settings(name, tmp_path, db):
    api_env, expected_env = SHAPES[name]
    with running_authapi(tmp_path, **api_env) as api:
        code, result, output = run_json(api.url)
        stats = api.stats()
    assert code == 0, result
    assert result["ok"] is True
    found = statuses(result)
    warned = {check for check, status in found.items() if status == "WARN"}
    assert warned == EXPECTED_WARNINGS.get(name, set()), result["checks"]
    for setting, value in expected_env.items():
        assert result["env"][setting] == value, result["env"]
    assert result["env"]["API_BASEURL"] == api.url
    assert ADMIN.password not in output
    assert stats["login"] == 2, "the check's sign-in and the reuse probe's"
    assert stats["login_failed"] == 1, "one wrong password"


def test_a_table_and_the_env_lines_by_default(tmp_path, db):
    with running_authapi(tmp_path) as api:
        code, out, err = authcheck(
            "--base-url", api.url, "--email", ADMIN.email, "--password", ADMIN.password
        )
    assert code == 0
    assert "| sign-in | PASS | 201; tokens in cookies access_token, refresh_token |" in out
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
    assert statuses(result)["reuse detection"] == "WARN"
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

    def answer(self, status: int, body: dict, cookies: str | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if cookies:
            self.send_header("Set-Cookie", cookies)
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
    assert found["one Set-Cookie header per cookie"] == "FAIL"
    assert found["sign-out"] == "FAIL"
    assert found["wrong password"] == "FAIL"
    assert found["access cookie"] == "WARN" and found["refresh cookie"] == "WARN"
    assert found["rotation"] == "WARN"
    by_name = {check["name"]: check for check in result["checks"]}
    assert "no HttpOnly" in by_name["access cookie"]["saw"]
    assert "Set HttpOnly" in by_name["access cookie"]["advice"]
    assert "own Set-Cookie header" in by_name["one Set-Cookie header per cookie"]["advice"]
    assert "still refreshes" in by_name["sign-out"]["saw"]
    assert "Answer 401" in by_name["wrong password"]["advice"]
    assert BROKEN_PASSWORD not in output


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
