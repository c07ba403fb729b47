"""Hostile and broken input: never a 500, never a token leaked, never a session lost
to somebody else's garbage. Property-based where it fits (hypothesis)."""

import logging
import os
import re
import secrets
import sys
import time
import types
from urllib.parse import urljoin, urlsplit

import pytest
import requests
import responses
from django.contrib.auth import SESSION_KEY
from django.http import HttpResponse
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts import cookies
from accounts.cookies import parse_set_cookies
from tests import fakes
from tests.fakes import calls_to, make_user
from tests.refreshing import refreshed_in_advance

# Under `make mutate` every mutant reruns these: fewer examples there (mutmut
# sets MUTANT_UNDER_TEST before the tests are imported), Hypothesis's default 100
# in `make test` (each example is a whole sign-in: 300 cost 24 s of the suite's CPU).
EXAMPLES = 40 if "MUTANT_UNDER_TEST" in os.environ else 100
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PAGES = ["/", "/accounts/login/", "/dashboard/", "/dashboard/admin/", "/dashboard/evaluations/"]


class TestHeaders:
    @pytest.mark.parametrize("path", PAGES)
    def test_every_page_has_the_security_headers(self, signed_in, path):
        response = signed_in(access=fakes.access_jwt()).get(path)
        policy = response["Content-Security-Policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ):
            assert directive in policy
        assert "unsafe-inline" not in policy
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"

    @pytest.mark.parametrize("path", [*PAGES, "/nowhere/"])
    def test_no_page_has_inline_script_or_style(self, signed_in, path):
        body = signed_in("evaluator", access=fakes.access_jwt()).get(path).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body)
        assert "<style" not in body
        assert not re.search(r"\son[a-z]+=", body), "no inline event handlers"

    def test_token_cookies_are_httponly_and_secure_in_production(self, settings, db, backend):
        settings.AUTH_COOKIE_SECURE = True
        fakes.stub_login(backend)
        fakes.stub_me(backend)
        response = Client().post("/accounts/login/", {"email": "a@example.com", "password": "x"})
        for name in ("access_token", "refresh_token"):
            assert response.cookies[name]["httponly"] is True
            assert response.cookies[name]["secure"] is True


class TestCsrf:
    @pytest.mark.parametrize(
        "path", ["/accounts/login/", "/accounts/logout/", "/accounts/refresh/", "/api/users/me"]
    )
    def test_posts_without_csrf_are_refused(self, csrf_client, locmem_cache, backend, path):
        csrf_client.force_login(make_user("admin"))
        csrf_client.cookies["access_token"] = fakes.access_jwt()
        csrf_client.cookies["refresh_token"] = "refresh-1"
        response = csrf_client.post(path, {"email": "admin@example.com", "password": "x"})
        assert response.status_code == 403
        assert len(backend.calls) == 0
        assert SESSION_KEY in csrf_client.session


class TestSecretsHygiene:
    ACCESS = fakes.access_jwt()
    REFRESHED = fakes.access_jwt(ttl=1800, sub="1")

    def test_no_token_value_reaches_any_log(
        self, client, db, locmem_cache, backend, settle, caplog
    ):
        caplog.set_level(logging.DEBUG)
        fakes.stub_login(backend, headers=fakes.token_headers(self.ACCESS, "refresh-secret-1"))
        fakes.stub_me(backend)
        client.post("/accounts/login/", {"email": "admin@example.com", "password": "pw-secret"})
        # The access token expires (as the session recorded it): refresh before the view.
        fakes.edit_record(client, access_expires_at=time.time() - 5)
        fakes.stub_refresh(backend, access=self.REFRESHED, refresh="refresh-secret-2")
        client.get("/api/users/me")
        # A 401 from the backend, a refused refresh, garbage, and a dead backend.
        backend.replace(responses.GET, f"{fakes.BASE}/users/me", status=401)
        backend.replace(responses.POST, f"{fakes.BASE}/auth/refresh", status=401)
        client.get("/api/users/me")
        client.cookies["sessionid"] = ""
        fakes.stub_login(backend, headers=[("Set-Cookie", "access_token=bad value-secret")])
        client.post("/accounts/login/", {"email": "admin@example.com", "password": "pw-secret"})
        backend.replace(responses.POST, f"{fakes.BASE}/auth/login", body=requests.ConnectionError())
        client.post("/accounts/login/", {"email": "admin@example.com", "password": "pw-secret"})

        logged = caplog.text
        assert "Refresh" in logged or "refresh" in logged  # the flow was logged at all
        for secret in (
            self.ACCESS,
            self.REFRESHED,
            "refresh-secret-1",
            "refresh-secret-2",
            "pw-secret",
            "value-secret",
        ):
            assert secret not in logged

    def test_the_debug_page_hides_tokens(self, signed_in, backend, settings):
        """An unexpected crash deep in a proxied call, with DEBUG on: the page shows no token."""
        settings.DEBUG = True
        access = fakes.access_jwt()
        refresh = secrets.token_urlsafe(16)  # made at run time: not in any source excerpt
        client = signed_in(access=access, refresh=refresh)
        client.raise_request_exception = False

        def crash(request):
            raise RuntimeError("backend adapter exploded")

        backend.add_callback(responses.GET, f"{fakes.BASE}/users/me", callback=crash)
        response = client.get("/api/users/me", HTTP_ACCEPT="text/html")

        page = response.content.decode()
        assert response.status_code == 500
        assert "backend adapter exploded" in page  # it is the debug page
        assert access not in page
        assert refresh not in page

    def test_the_debug_page_hides_renamed_token_cookies(self, settings, rf):
        from django.views.debug import technical_500_response

        settings.DEBUG = True
        settings.AUTH_ACCESS_COOKIE, settings.AUTH_REFRESH_COOKIE = "at", "rt"
        value = secrets.token_urlsafe(16)

        def crash_page(request):  # its frame holds no token, only the request
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                return technical_500_response(request, *sys.exc_info()).content.decode()

        page = crash_page(rf.get("/", HTTP_COOKIE=f"at={value}; rt={value}"))
        assert "boom" in page
        assert value not in page

    def test_a_token_core_frame_shows_none_of_its_variables(self, settings, rf):
        """An error inside accounts/ (an unreadable Expires): none of the parser's locals,
        which hold the cookie's value, reach the page, while a frame outside the token core
        keeps its variables for the developer."""
        from django.views.debug import technical_500_response

        settings.DEBUG = True
        value = secrets.token_urlsafe(16)
        marker = secrets.token_hex(8)

        def header():  # the value stays out of crash_page's own variables
            return f"access_token={value}; Expires=never"

        def crash_page(request):
            outside = f"outside-{marker}"  # noqa: F841 - read from the debug page below
            try:
                cookies.parse_set_cookie(header())
            except Exception:  # noqa: BLE001 - any error will do, the page is under test
                return technical_500_response(request, *sys.exc_info()).content.decode()

        page = crash_page(rf.get("/"))
        assert "_parse_expires" in page  # the frame is on the page
        assert f"outside-{marker}" in page  # a frame outside accounts/ shows its variables
        assert value not in page

    def test_reprs_hide_values(self):
        from accounts.client import Tokens

        assert "abc" not in repr(Tokens(access="abc", refresh="abc"))
        assert "abc" not in repr(parse_set_cookies(["access_token=abc; Path=/"])[0])


# --- property-based ----------------------------------------------------------------

COOKIE_NAMES = st.sampled_from(["access_token", "refresh_token", "sessionid", "csrftoken", "x", ""])
HEADER = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda name, value, attrs: f"{name}={value}" + "".join(f"; {a}" for a in attrs),
        COOKIE_NAMES,
        st.text(max_size=80),
        st.lists(
            st.one_of(
                st.sampled_from(
                    [
                        "Max-Age=0",
                        "max-age=-1",
                        "Max-Age=99999999999999",
                        "Expires=Thu, 01 Jan 1970 00:00:00 GMT",
                        "Domain=evil.example",
                        "Path=/",
                        "Path=relative",
                        "HttpOnly",
                        "Secure",
                        "SameSite=None",
                    ]
                ),
                st.text(max_size=40),
            ),
            max_size=6,
        ),
    ),
)


@PROPERTY
@given(headers=st.lists(HEADER, max_size=5))
def test_writing_arbitrary_set_cookie_headers_never_raises_nor_sets_the_apps_cookies(headers):
    response = HttpResponse()
    cookies.write(response, parse_set_cookies(headers))
    assert set(response.cookies) <= {"access_token", "refresh_token"}
    for morsel in response.cookies.values():
        assert morsel["domain"] == ""
        assert morsel["path"] == "/"  # AUTH_COOKIE_PATH, whatever Path the header had
        if morsel["max-age"] != 0:  # a deletion needs no flags; a set cookie always has them
            assert morsel["httponly"] is True


COOKIE_VALUE = st.one_of(
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=";"),
        max_size=200,
    ),
    st.just("x" * 9000),
    st.just(fakes.jwt.encode({"sub": "1", "exp": 4102444800}, None, algorithm="none")),
    st.just(fakes.access_jwt(ttl=-60)),
    st.just(fakes.access_jwt()[:-20]),
    st.just("eyJ.eyJ.sig"),
)


@PROPERTY
@given(
    access=COOKIE_VALUE,
    refresh=COOKIE_VALUE,
    session=COOKIE_VALUE,
    path=st.sampled_from(
        ["/dashboard/", "/api/users/me", "/dashboard/profile/", "/", "/accounts/refresh/"]
    ),
)
def test_arbitrary_cookies_never_500_and_never_sign_anyone_in(
    db, settings, access, refresh, session, path
):
    settings.API_BASEURL = fakes.BASE
    client = Client(
        HTTP_COOKIE=f"access_token={access}; refresh_token={refresh}; sessionid={session}"
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as backend:
        response = client.post(path) if path.startswith("/accounts/") else client.get(path)
        assert len(backend.calls) == 0, "an anonymous request never spends a token"
    assert response.status_code < 500
    assert response.status_code in (200, 302, 401, 403)
    assert response.wsgi_request.user.is_authenticated is False


NEXT = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda prefix, host, rest: f"{prefix}{host}{rest}",
        st.sampled_from(
            [
                "//",
                "https://",
                "http:",
                "\\\\",
                "/\\",
                "\r\n//",
                " //",
                "%2F%2F",
                "/%09/",
                "javascript:",
                "JaVaScRiPt:",
                "data:text/html,",
                "/\t/",
                "///",
                "https:/",
                "\x00//",
            ]
        ),
        st.sampled_from(["evil.example", "testserver@evil.example", "evil.example:443", ""]),
        st.text(max_size=20),
    ),
)


def sign_in_with_next(settings, target: str):
    """Sign in (the backend stubbed) with `next=target`; return the answer."""
    settings.API_BASEURL = fakes.BASE
    with responses.RequestsMock(assert_all_requests_are_fired=False) as backend:
        fakes.stub_login(backend)
        fakes.stub_me(backend)
        response = Client().post(
            "/accounts/login/", {"email": "admin@example.com", "password": "pw", "next": target}
        )
    return response


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("// ", "/dashboard/"),  # Django judged "//" and sent "//%20": a host
        ("//\t", "/dashboard/"),
        (" /\\evil.example", "/dashboard/"),
        (" /dashboard/admin/ ", "/dashboard/admin/"),
    ],
)
def test_next_is_sent_as_judged(db, settings, target, expected):
    response = sign_in_with_next(settings, target)
    assert response["Location"] == expected


@PROPERTY
@given(target=NEXT)
def test_no_next_value_redirects_off_host(db, settings, target):
    response = sign_in_with_next(settings, target)
    assert response.status_code == 302
    location = response["Location"]
    parts = urlsplit(location)
    assert parts.scheme == "" and parts.netloc == ""
    assert not any(ord(c) < 0x20 for c in location)
    # Resolve it as a browser would (which also reads "\\" as "/"): still this host.
    resolved = urlsplit(urljoin("http://testserver/accounts/login/", location.replace("\\", "/")))
    assert (resolved.scheme, resolved.netloc) == ("http", "testserver")


class TestBadForms:
    def test_missing_fields(self, client, db, backend):
        response = client.post("/accounts/login/", {})
        assert response.status_code == 200
        assert "This field is required." in response.content.decode()

    def test_duplicated_fields_use_one_value(self, client, db, backend):
        fakes.stub_login(backend, status=401)
        response = client.post(
            "/accounts/login/",
            "email=a%40example.com&email=b%40example.com&password=x&password=y",
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code == 200
        assert len(calls_to(backend, "/auth/login")) == 1

    def test_non_utf8_fields(self, client, db, backend):
        response = client.post(
            "/accounts/login/",
            b"email=\xff\xfe%40example.com&password=\xc3\x28",
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code == 200
        assert len(backend.calls) == 0

    def test_oversized_body_is_a_400_page(self, client, db, backend, settings):
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
        response = client.post(
            "/accounts/login/", {"email": "a@example.com", "password": "p" * 20_000}
        )
        assert response.status_code == 400
        assert "Bad request" in response.content.decode()
        assert len(backend.calls) == 0

    def test_too_many_fields_is_a_400_page(self, client, db, backend):
        body = "&".join(f"f{i}=1" for i in range(1500))
        response = client.post(
            "/accounts/login/", body, content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 400


# --- a backend answering garbage at each of its four endpoints ----------------------

TEN_MB = b"x" * (10 * 1024 * 1024)
GARBAGE = {
    "bad-json": {"body": b"{not json", "content_type": "application/json"},
    "html": {"body": b"<html><body>Bad gateway</body></html>", "content_type": "text/html"},
    "ok-without-cookies": {"json": {"ok": True}},
    "redirect": {"status": 302, "headers": {"Location": "https://evil.example/"}},
    "ten-megabytes": {"body": TEN_MB},
    "timeout": {"body": requests.ReadTimeout()},
}


def answer(backend, method, path, kind):
    spec = dict(GARBAGE[kind])
    backend.add(method, f"{fakes.BASE}{path}", status=spec.pop("status", 200), **spec)


@pytest.mark.parametrize("kind", GARBAGE)
class TestGarbageFromTheBackend:
    def test_at_login_nothing_is_half_set(self, client, db, backend, kind):
        fakes.stub_logout(backend)
        answer(backend, "POST", "/auth/login", kind)
        response = client.post("/accounts/login/", {"email": "a@example.com", "password": "x"})
        # No answer: the service is unavailable; an answer that does not fit: unusable.
        assert response.status_code == (503 if kind == "timeout" else 502)
        title = "Sign-in service unavailable" if kind == "timeout" else "could not be completed"
        assert title in response.content.decode()
        assert SESSION_KEY not in client.session
        assert not {"access_token", "refresh_token"} & set(response.cookies)

    def test_at_users_me_during_login(self, client, db, backend, kind):
        fakes.stub_login(backend)
        logout = fakes.stub_logout(backend)
        answer(backend, "GET", "/users/me", kind)
        response = client.post("/accounts/login/", {"email": "a@example.com", "password": "x"})
        assert response.status_code == (503 if kind == "timeout" else 502)
        assert SESSION_KEY not in client.session
        assert not {"access_token", "refresh_token"} & set(response.cookies)
        assert len(logout.calls) == 1, "the tokens it did issue are revoked"

    def test_at_logout_the_user_is_signed_out_anyway(self, signed_in, backend, kind):
        client = signed_in(access=fakes.access_jwt())
        answer(backend, "POST", "/auth/logout", kind)
        response = client.post("/accounts/logout/")
        assert response.status_code == 302
        assert SESSION_KEY not in client.session
        assert response.cookies["refresh_token"].value == ""

    def test_at_users_me_through_the_client(self, signed_in, backend, kind):
        client = signed_in(access=fakes.access_jwt())
        answer(backend, "GET", "/users/me", kind)
        response = client.get("/dashboard/profile/", HTTP_ACCEPT="application/json")
        if kind == "ok-without-cookies":
            # 200 without an id is a guest answer: the token was not taken. The app
            # renews once (the refresh, unanswered here, may have spent the token).
            assert response.status_code == 401
            assert len(calls_to(backend, "/auth/refresh")) == 1
            return
        assert response.status_code == 503
        assert SESSION_KEY in client.session


# At refresh the question is whether the backend may have spent the token: every kind of
# garbage above reached it and came back unusable.
@pytest.mark.usefixtures("settle")
@pytest.mark.parametrize("kind", GARBAGE)
def test_at_refresh_an_unusable_answer_ends_the_session_cleanly(signed_in, backend, settle, kind):
    """New contract: a 2xx (or 3xx) answer without a usable pair, an oversized one, or a
    read timeout may have spent the token. The outcome is unknown: the session ends
    (reason unknown_outcome) and the token is never presented again."""
    client = signed_in(access=fakes.access_jwt(ttl=-5))
    answer(backend, "POST", "/auth/refresh", kind)
    refreshed_in_advance(client, settle)  # the outcome is known when the page asks

    page = client.get("/dashboard/")

    assert page.status_code == 302
    assert urlsplit(page["Location"]).path == "/accounts/login/"
    assert SESSION_KEY not in client.session
    assert page.cookies["refresh_token"]["max-age"] == 0
    assert "We could not confirm your sign-in" in client.get("/").content.decode()
    assert len(calls_to(backend, "/auth/refresh")) == 1


@pytest.mark.usefixtures("settle")
@pytest.mark.parametrize(
    "failure",
    [{"body": fakes.connection_refused()}, {"status": 500}, {"status": 502}, {"status": 503}],
    ids=["refused", "500", "502", "503"],
)
def test_at_refresh_a_failure_that_spent_nothing_keeps_the_session(signed_in, backend, failure):
    """Connection refused never left; a 5xx other than 504 did not act: pages are served,
    what needs the backend is 503, and the next request may try again."""
    client = signed_in(access=fakes.access_jwt(ttl=-5))
    backend.post(f"{fakes.BASE}/auth/refresh", **failure)
    page = client.get("/dashboard/")
    api = client.get("/api/users/me")
    assert page.status_code == 200
    assert api.status_code == 503
    assert api.json()["error"] == "backend_unavailable"
    assert SESSION_KEY in client.session
    assert "refresh_token" not in page.cookies and "refresh_token" not in api.cookies


def _holding_a_secret():
    secret = "a-token"  # noqa: F841 - read from the frame
    return sys._getframe()


def _frame_in(module: str):
    """A live frame of a function whose module is `module`, holding a local `secret`."""
    as_if_there = types.FunctionType(_holding_a_secret.__code__, {"__name__": module, "sys": sys})
    return as_if_there()


def test_the_package_hides_its_own_frames_and_the_demo_adds_the_reference_api():
    from accounts.debug import TokenSafeExceptionReporterFilter
    from config.debug import DemoExceptionReporterFilter

    package, demo = TokenSafeExceptionReporterFilter(), DemoExceptionReporterFilter()
    api_frame, core_frame = _frame_in("authapi.views"), _frame_in("accounts.client")
    hidden = package.cleansed_substitute
    assert dict(package.get_traceback_frame_variables(None, core_frame))["secret"] == hidden
    assert dict(demo.get_traceback_frame_variables(None, api_frame))["secret"] == hidden
    # The package knows nothing of the reference API: a project's own code is its business.
    shown = dict(package.get_traceback_frame_variables(None, api_frame))["secret"]
    assert shown == "a-token"
