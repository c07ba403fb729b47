"""The token middleware (accounts/middleware.py): directly and through the real MIDDLEWARE."""

import json
import logging
import threading
import time
from concurrent.futures import wait

import pytest
import requests
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory
from django.urls import resolve

from accounts import refresh, renewal
from accounts.exceptions import (
    BackendProtocolError,
    BackendUnavailable,
    RefreshPending,
    SessionEnded,
    Throttled,
    TokensRefused,
)
from accounts.middleware import TokenRefreshMiddleware
from accounts.models import User
from accounts.reasons import Reason
from accounts.record import token_hash
from tests import fakes
from tests.fakes import assert_signed_out, calls_to, edit_record, record_of
from tests.refreshing import refreshed_in_advance

pytestmark = pytest.mark.usefixtures("settle")
SIGNED_OUT = {
    "ok": False,
    "error": "signed_out",
    "message": "Your session has ended; please sign in again.",
}
UNAVAILABLE = {
    "ok": False,
    "error": "backend_unavailable",
    "message": "The sign-in service did not answer; try again.",
}


def scripted(path="/dashboard/", **headers):
    request = RequestFactory().get(path, HTTP_ACCEPT="application/json", **headers)
    request.resolver_match = resolve(path.split("?")[0])
    return request


def page(path="/dashboard/?tab=2"):
    request = RequestFactory().get(path, HTTP_ACCEPT="text/html")
    request.resolver_match = resolve(path.split("?")[0])
    return request


class Raising(TokenRefreshMiddleware):
    """The middleware with `process_signed_in` replaced, to reach each branch of process_view."""

    def __init__(self, failure):
        super().__init__(lambda request: None)
        self.failure, self.ran = failure, 0

    def process_signed_in(self, state):
        self.ran += 1
        if self.failure is not None:
            raise self.failure


class TestProcessView:
    @pytest.fixture
    def signed_in_request(self, signed_in):
        def make(request):
            client = signed_in(access="acc-1")
            request.session = client.session
            request.user = User.objects.get(backend_id="1")
            return request

        return make

    def test_requires_the_auth_middleware_before_it(self):
        with pytest.raises(ImproperlyConfigured) as info:
            TokenRefreshMiddleware(lambda r: None)(RequestFactory().get("/"))
        assert str(info.value) == (
            "TokenRefreshMiddleware requires django.contrib.auth.middleware."
            "AuthenticationMiddleware before it in MIDDLEWARE."
        )

    def test_ends_and_scripts_get_401_json(self, signed_in_request):
        middleware = Raising(SessionEnded("refused"))
        response = middleware.process_view(signed_in_request(scripted()), None, (), {})
        assert response.status_code == 401
        assert json.loads(response.content) == SIGNED_OUT

    def test_tokens_a_view_had_refused_end_the_session_here(self, signed_in_request, caplog):
        """The client only raises; the middleware ends the session and answers for it."""
        request = signed_in_request(scripted())
        refused = TokensRefused(Reason.REJECTED_TWICE)
        response = TokenRefreshMiddleware(lambda r: None).process_exception(request, refused)
        assert (response.status_code, json.loads(response.content)) == (401, SIGNED_OUT)
        assert SESSION_KEY not in request.session
        assert "Session of backend user 1 ended: rejected_twice" in caplog.messages

    def test_tokens_a_page_had_refused_send_it_to_sign_in(self, signed_in_request):
        request = signed_in_request(page())
        refused = TokensRefused(Reason.REFUSED)
        response = TokenRefreshMiddleware(lambda r: None).process_exception(request, refused)
        assert response["Location"] == "/accounts/login/?next=/dashboard/%3Ftab%3D2"
        assert SESSION_KEY not in request.session

    def test_ends_and_pages_go_on_as_anonymous(self, signed_in_request):
        assert (
            Raising(SessionEnded("refused")).process_view(signed_in_request(page()), None, (), {})
            is None
        )

    def test_a_transient_failure_serves_the_view(self, signed_in_request, caplog):
        middleware = Raising(BackendUnavailable("GET /users/me answered 502"))
        assert middleware.process_view(signed_in_request(scripted()), None, (), {}) is None
        assert caplog.messages == [
            "Auth backend failed transiently (GET /users/me answered 502); keeping the session"
        ]

    def test_exempt_views_and_anonymous_requests_are_left_alone(self, signed_in_request, db):
        middleware = Raising(None)
        logout = signed_in_request(RequestFactory().post("/accounts/logout/"))
        logout.resolver_match = resolve("/accounts/logout/")
        # Sign-out is marked token_exempt (accounts/decorators.py), whatever its URL's name.
        assert middleware.process_view(logout, logout.resolver_match.func, (), {}) is None
        anonymous = page()
        anonymous.session, anonymous.user = {}, AnonymousUser()
        assert middleware.process_view(anonymous, None, (), {}) is None
        assert middleware.ran == 0
        middleware.process_view(signed_in_request(page()), None, (), {})
        assert middleware.ran == 1

    def test_a_projects_view_marked_token_exempt_is_left_alone(self, signed_in_request):
        from accounts.decorators import token_exempt

        @token_exempt
        def probe(request):
            return "probed"

        middleware = Raising(SessionEnded(Reason.REFUSED))
        assert middleware.process_view(signed_in_request(page()), probe, (), {}) is None
        assert middleware.ran == 0
        assert probe(None) == "probed"  # the view itself is unchanged
        middleware.process_view(signed_in_request(page()), lambda r: None, (), {})
        assert middleware.ran == 1  # an unmarked view is checked

    def test_an_unresolved_request_is_checked_too(self, signed_in_request):
        request = signed_in_request(page())
        request.resolver_match = None
        middleware = Raising(None)
        middleware.process_view(request, None, (), {})
        assert middleware.ran == 1


class TestProcessException:
    def answer(self, request, exception):
        return TokenRefreshMiddleware(lambda r: None).process_exception(request, exception)

    def test_session_ended_is_401_json_for_scripts(self):
        response = self.answer(scripted(), SessionEnded("refused"))
        assert (response.status_code, json.loads(response.content)) == (401, SIGNED_OUT)

    def test_session_ended_sends_pages_to_sign_in_with_next(self):
        response = self.answer(page(), SessionEnded("refused"))
        assert response.status_code == 302
        assert response["Location"] == "/accounts/login/?next=/dashboard/%3Ftab%3D2"

    def test_throttled_is_429_json_for_scripts(self):
        response = self.answer(scripted(), Throttled("GET /users/me answered 429", retry_after=12))
        assert response.status_code == 429
        assert response["Retry-After"] == "12"
        assert json.loads(response.content) == {
            "ok": False,
            "error": "throttled",
            "message": "Too many requests; try again later.",
        }

    def test_throttled_is_a_429_page(self, db):
        request = page()
        request.user = fakes.make_user("admin")
        response = self.answer(request, Throttled("GET /users/me answered 429", retry_after=12))
        assert (response.status_code, response["Retry-After"]) == (429, "12")
        body = response.content.decode()
        assert "Please try again in 12 seconds; you are still signed in." in body
        assert "Ada Admin" in body  # rendered with the request: the navigation knows the user

    @pytest.mark.parametrize(
        "failure", [BackendUnavailable("x"), BackendProtocolError("x"), RefreshPending("x")]
    )
    def test_backend_errors_are_503_json_for_scripts(self, failure, caplog):
        response = self.answer(scripted(), failure)
        assert (response.status_code, response["Retry-After"]) == (503, "5")
        assert json.loads(response.content) == UNAVAILABLE
        assert caplog.messages == ["Auth backend unavailable for /dashboard/: x"]

    def test_backend_errors_are_a_503_page(self, db):
        request = page()
        request.user = fakes.make_user("admin")
        response = self.answer(request, BackendUnavailable("x"))
        assert (response.status_code, response["Retry-After"]) == (503, "5")
        assert "You are still signed in" in response.content.decode()
        assert "Ada Admin" in response.content.decode()

    def test_other_exceptions_are_not_its_business(self):
        assert self.answer(scripted(), ValueError("bug")) is None


class TestThroughTheStack:
    def test_a_refused_refresh_gives_scripts_401_json_and_public_pages_stay_public(
        self, signed_in, backend
    ):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, status=401)
        response = client.get("/api/users/me", HTTP_ACCEPT="application/json")
        assert (response.status_code, response.json()) == (401, SIGNED_OUT)
        home = client.get("/")
        assert home.status_code == 200
        assert "Your session has ended; please sign in again." in home.content.decode()

    @pytest.mark.parametrize(
        "failure",
        [fakes.connection_refused(), requests.ConnectTimeout()],
        ids=["refused", "connect-timeout"],
    )
    def test_a_never_sent_refresh_keeps_the_session(self, signed_in, backend, failure):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        backend.post(f"{fakes.BASE}/auth/refresh", body=failure)

        page_response = client.get("/dashboard/")
        api = client.get("/api/users/me")

        assert page_response.status_code == 200  # served from what the app knows
        assert (api.status_code, api.json()) == (503, UNAVAILABLE)
        assert SESSION_KEY in client.session
        assert "refresh_token" not in page_response.cookies
        assert "refresh_token" not in api.cookies

    def test_a_never_sent_refresh_is_tried_once_per_request(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        backend.post(f"{fakes.BASE}/auth/refresh", body=fakes.connection_refused())
        assert client.get("/api/users/me").status_code == 503
        assert len(calls_to(backend, "/auth/refresh")) == 1

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_a_5xx_refresh_keeps_the_session(self, signed_in, backend, status):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, status=status)
        assert client.get("/dashboard/").status_code == 200
        assert SESSION_KEY in client.session

    def test_new_cookies_ride_on_redirects_and_403s(self, signed_in, backend, settle):
        client = signed_in("evaluator", access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, "evaluator")
        refreshed_in_advance(client, settle)
        response = client.get("/dashboard/admin/")
        assert response.status_code == 403
        assert response.cookies["refresh_token"].value == "refresh-2"

    def test_a_local_model_backend_session_is_left_alone(self, client, db, backend, settings):
        settings.AUTHENTICATION_BACKENDS = [
            "accounts.backends.AuthApiBackend",
            "django.contrib.auth.backends.ModelBackend",
        ]
        root = User.objects.create_superuser("root", "root@example.com", "pw")
        client.force_login(root, backend="django.contrib.auth.backends.ModelBackend")
        client.cookies["access_token"] = "garbage"
        assert client.get("/dashboard/").status_code == 200
        assert client.get("/admin/").status_code == 200
        assert SESSION_KEY in client.session
        assert len(backend.calls) == 0

    def test_exempt_urls_are_a_setting(self, signed_in, backend, settings):
        client = signed_in(access="acc-1")
        client.cookies["access_token"] = "forged"
        settings.AUTH_EXEMPT_URLS = ["dashboard:index"]
        assert client.get("/dashboard/").status_code == 200
        assert SESSION_KEY in client.session
        settings.AUTH_EXEMPT_URLS = []
        assert client.get("/dashboard/").status_code == 302

    def test_sign_out_is_exempt_from_refresh(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_logout(backend)
        assert client.post("/accounts/logout/").status_code == 302
        assert calls_to(backend, "/auth/refresh") == []
        assert SESSION_KEY not in client.session

    def test_sign_out_deletes_the_cookies_at_every_recorded_path(self, signed_in, backend):
        client = signed_in(access="acc-1")
        edit_record(client, cookie_paths=["/auth/refresh"])
        fakes.stub_logout(backend)
        response = client.post("/accounts/logout/")
        deleted = {(m.key, m["path"]) for m in response.cookies.values() if m["max-age"] == 0}
        assert ("refresh_token", "/auth/refresh") in deleted

    def test_foreign_cookies_delete_the_cookies_at_every_recorded_path(self, signed_in, backend):
        client = signed_in(access="acc-1")
        edit_record(client, cookie_paths=["/auth/refresh"])
        client.cookies["access_token"] = "forged"
        response = client.get("/dashboard/")
        deleted = {(m.key, m["path"]) for m in response.cookies.values() if m["max-age"] == 0}
        assert {("refresh_token", "/auth/refresh"), ("access_token", "/")} <= deleted


def judged_a_minute_late(monkeypatch, method: str) -> None:
    """Make `Renewal.<method>` judge a 401 as if it came a minute after the call went out."""
    import types

    judged = getattr(renewal.Renewal, method)
    later = types.SimpleNamespace(time=lambda: time.time() + 60)

    def a_minute_on(self):
        monkeypatch.setattr(renewal, "time", later)
        try:
            return judged(self)
        finally:
            monkeypatch.setattr(renewal, "time", time)

    monkeypatch.setattr(renewal.Renewal, method, a_minute_on)


class TestOneRefreshPerRequest:
    def test_a_401_after_the_middlewares_refresh_ends_the_session(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, status=401)
        response = client.get("/api/users/me")
        assert (response.status_code, response.json()["error"]) == (401, "signed_out")
        assert SESSION_KEY not in client.session
        assert len(calls_to(backend, "/auth/refresh")) == 1

    def test_a_second_401_ends_the_session(self, signed_in, backend, caplog):
        old, new = fakes.access_jwt(), fakes.access_jwt(ttl=1700)
        client = signed_in(access=old)
        fakes.stub_refresh(backend, access=new)
        fakes.stub_me_by_token(backend, {})
        response = client.get("/api/users/me")
        assert response.status_code == 401
        assert "Session of backend user 1 ended: rejected_twice" in caplog.messages
        assert len(calls_to(backend, "/auth/refresh")) == 1


    def test_a_401_for_a_renewed_token_that_expired_on_the_way_keeps_the_session(
        self, signed_in, backend, monkeypatch
    ):
        """A backend working through a queue after a stall answers the renewed call after
        the new short-lived access token has expired: slow, not a sign-out (503)."""
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, access=fakes.access_jwt(ttl=30))
        fakes.stub_me(backend, status=401)
        judged_a_minute_late(monkeypatch, "renew_after_rejection")

        response = client.get("/api/users/me")

        assert response.status_code == 503
        assert SESSION_KEY in client.session  # still signed in, on the renewed pair
        assert len(calls_to(backend, "/auth/refresh")) == 1


    def test_a_replay_refused_after_its_renewed_token_expired_on_the_way_keeps_the_session(
        self, signed_in, backend, monkeypatch
    ):
        """The call went out with a valid token and got a 401; the renewed pair's replay
        got one too, but only after that pair had expired: slow, not a sign-out (503)."""
        client = signed_in(access=fakes.access_jwt(ttl=30))
        fakes.stub_refresh(backend, access=fakes.access_jwt(ttl=30))
        # The call, the profile the refresh reads with the new pair, the replay.
        for status in (401, 200, 401):
            fakes.stub_me(backend, status=status)
        judged_a_minute_late(monkeypatch, "refused_after_renewal")

        response = client.get("/api/users/me")

        assert response.status_code == 503
        assert SESSION_KEY in client.session
        assert len(calls_to(backend, "/auth/refresh")) == 1
        assert len(calls_to(backend, "/users/me")) == 3

    def test_a_replay_refused_while_its_renewed_token_lives_ends_the_session(
        self, signed_in, backend
    ):
        client = signed_in(access=fakes.access_jwt(ttl=30))
        fakes.stub_refresh(backend, access=fakes.access_jwt(ttl=30))
        # The call, the profile the refresh reads with the new pair, the replay.
        for status in (401, 200, 401):
            fakes.stub_me(backend, status=status)

        response = client.get("/api/users/me")

        assert response.status_code == 401
        assert SESSION_KEY not in client.session
        assert len(calls_to(backend, "/auth/refresh")) == 1
        assert len(calls_to(backend, "/users/me")) == 3


class TestRereadingTheUser:
    """After each refresh and every AUTH_REVALIDATE_INTERVAL, the user is read again."""

    def test_a_profile_read_with_the_refresh_is_not_read_again(self, signed_in, backend, settle):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, json={**fakes.PROFILES["admin"], "firstName": "Adele"})
        # Pair and profile are both kept before the request comes to collect them (a
        # request that collects the pair in between reads the profile itself).
        binding = record_of(client).binding
        refresh.outcome("refresh-1", binding=binding, keep_for=600, deadline=time.monotonic() + 3)
        wait(settle, timeout=5)
        body = client.get("/dashboard/").content.decode()
        assert "Adele Admin" in body
        assert len(calls_to(backend, "/users/me")) == 1

    def test_without_one_the_request_reads_it(self, signed_in, backend, settle):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend)
        adele = json.dumps({**fakes.PROFILES["admin"], "firstName": "Adele"})

        def me(request):  # the refresh pool's read fails, the request's own succeeds
            if threading.current_thread().name.startswith("token-refresh"):
                return (503, [], "")
            return (200, [("Content-Type", "application/json")], adele)

        backend.add_callback("GET", f"{fakes.BASE}/users/me", callback=me)
        client.get("/dashboard/")  # starts the refresh
        wait(settle, timeout=5)
        assert "Adele Admin" in client.get("/dashboard/").content.decode()
        assert len(calls_to(backend, "/users/me")) == 2
        assert record_of(client).validated_at == pytest.approx(time.time(), abs=5)

    def test_a_failed_read_keeps_the_session(self, signed_in, backend, settle):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, status=503)
        assert client.get("/dashboard/").status_code == 200
        wait(settle, timeout=5)
        assert client.get("/dashboard/").status_code == 200
        assert record_of(client).refresh_hash == token_hash("refresh-2")

    @pytest.mark.parametrize("after", ["refresh", "interval"])
    @pytest.mark.parametrize(
        ("profile", "reason"),
        [
            ({**fakes.PROFILES["admin"], "roles": ["viewer"]}, "lost_role"),
            (fakes.PROFILES["evaluator"], "other_user"),
        ],
    )
    def test_a_user_who_changed_is_signed_out(
        self, signed_in, backend, settings, caplog, settle, after, profile, reason
    ):
        access = fakes.access_jwt(ttl=-10 if after == "refresh" else 1800)
        client = signed_in(access=access)
        me = fakes.stub_me(backend, json=profile)
        if after == "refresh":
            fakes.stub_refresh(backend, access="acc-2")
            refreshed_in_advance(client, settle)
        else:
            settings.AUTH_REVALIDATE_INTERVAL = 0
        assert_signed_out(client, client.get("/dashboard/"))
        assert f"Session of backend user 1 ended: {reason}" in caplog.messages
        sent = "acc-2" if after == "refresh" else access
        assert fakes.sent_cookie(me.calls[0], "access_token") == sent
        shown = client.get("/").content.decode()
        assert ("Your account no longer has access to this site." in shown) is (
            reason == "lost_role"
        )

    def test_a_fresh_profile_is_applied_every_interval(self, signed_in, backend, settings):
        settings.AUTH_REVALIDATE_INTERVAL = 0
        client = signed_in(access=fakes.access_jwt())
        edit_record(client, validated_at=100.0)
        fakes.stub_me(backend, json={**fakes.PROFILES["admin"], "firstName": "Adele"})
        assert "Adele Admin" in client.get("/dashboard/").content.decode()
        assert record_of(client).validated_at == pytest.approx(time.time(), abs=5)

    def test_not_before_the_interval(self, signed_in, backend, settings):
        client = signed_in(access=fakes.access_jwt())
        edit_record(client, validated_at=time.time() - 290)
        assert client.get("/dashboard/").status_code == 200
        edit_record(client, validated_at=time.time() - 301)
        fakes.stub_me(backend)
        assert client.get("/dashboard/").status_code == 200
        assert len(calls_to(backend, "/users/me")) == 1

    def test_a_transient_failure_keeps_the_session_and_retries_later(
        self, signed_in, backend, settings, caplog
    ):
        settings.AUTH_REVALIDATE_INTERVAL = 100
        client = signed_in(access=fakes.access_jwt())
        edit_record(client, validated_at=0)
        fakes.stub_me(backend, status=503)
        assert client.get("/dashboard/").status_code == 200
        assert SESSION_KEY in client.session
        assert record_of(client).validated_at == pytest.approx(time.time() - 70, abs=5)
        assert "User not re-read (GET /users/me answered 503); trying again in 30s" in (
            caplog.messages
        )
        client.get("/dashboard/")
        assert len(calls_to(backend, "/users/me")) == 1


def test_the_session_lives_as_long_as_its_refresh_token(signed_in, backend, settle):
    client = signed_in(access=fakes.access_jwt(ttl=-10))
    backend.post(
        f"{fakes.BASE}/auth/refresh",
        headers=[
            ("Set-Cookie", fakes.express_cookie("access_token", fakes.access_jwt(), 1800)),
            ("Set-Cookie", fakes.express_cookie("refresh_token", "refresh-2", 3600)),
        ],
    )
    fakes.stub_me(backend)
    refreshed_in_advance(client, settle)
    response = client.get("/dashboard/")
    assert 3590 <= client.session.get_expiry_age() <= 3600
    assert 3590 <= response.cookies["sessionid"]["max-age"] <= 3600


class TestBrowserRefresh:
    """`POST /accounts/refresh/`: the same single flight, once per request, JSON only."""

    def test_returns_the_new_expiry_and_cookies(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        edit_record(client, renewed_at=time.time() - renewal.BROWSER_REFRESH_MIN_AGE - 1)
        new = fakes.access_jwt(ttl=900)
        fakes.stub_refresh(backend, access=new)
        fakes.stub_me(backend)
        response = client.post("/accounts/refresh/")
        assert response.status_code == 200
        assert response.json()["ok"] is True
        assert response.json()["access_expires_at"].endswith("+00:00")
        assert response.cookies["access_token"].value == new
        assert len(calls_to(backend, "/auth/refresh")) == 1

    def test_a_script_calling_again_and_again_refreshes_once(self, signed_in, backend):
        """However often a script asks, a pair far from expiry is renewed once in
        BROWSER_REFRESH_MIN_AGE: the backend's token table and the cache stay small."""
        client = signed_in(access=fakes.access_jwt())
        edit_record(client, renewed_at=time.time() - renewal.BROWSER_REFRESH_MIN_AGE - 1)
        fakes.stub_refresh(backend, access=fakes.access_jwt(ttl=900))
        fakes.stub_me(backend)
        answers = [client.post("/accounts/refresh/") for _ in range(100)]
        assert {a.status_code for a in answers} == {200}
        assert len(calls_to(backend, "/auth/refresh")) == 1
        assert len({a.json()["access_expires_at"] for a in answers[1:]}) == 1

    def test_a_young_pair_is_kept_until_it_is_due(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=900, lifetime=900))
        assert client.post("/accounts/refresh/").status_code == 200
        assert len(calls_to(backend, "/auth/refresh")) == 0
        edit_record(client, access_expires_at=time.time() + 30)  # inside the 60 s leeway
        fakes.stub_refresh(backend)
        fakes.stub_me(backend)
        assert client.post("/accounts/refresh/").status_code == 200
        assert len(calls_to(backend, "/auth/refresh")) == 1

    def test_refreshes_once_when_the_middleware_already_did(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-1))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend)
        assert client.post("/accounts/refresh/").status_code == 200
        assert len(calls_to(backend, "/auth/refresh")) == 1

    @pytest.mark.parametrize(
        ("answer", "status", "body"),
        [({"status": 401}, 401, SIGNED_OUT), ({"body": fakes.connection_refused()}, 503, None)],
    )
    def test_failures_are_json(self, signed_in, backend, answer, status, body):
        client = signed_in(access=fakes.access_jwt())
        edit_record(client, renewed_at=time.time() - renewal.BROWSER_REFRESH_MIN_AGE - 1)
        backend.post(f"{fakes.BASE}/auth/refresh", **answer)
        response = client.post("/accounts/refresh/")
        assert response.status_code == status
        assert response.json() == (body or UNAVAILABLE)

    def test_anonymous_get_and_missing_csrf(self, client, csrf_client, locmem_cache, backend):
        assert client.post("/accounts/refresh/").json() == SIGNED_OUT
        assert client.get("/accounts/refresh/").status_code == 405
        fakes.sign_in_client(csrf_client, access=fakes.access_jwt())
        response = csrf_client.post("/accounts/refresh/", HTTP_ACCEPT="application/json")
        assert (response.status_code, response.json()["error"]) == (403, "csrf")
        assert len(backend.calls) == 0


class TestCookieValuesOutsideCookieOctets:
    """Invariant 3: values a browser or an attacker may send count as absent, never a 5xx."""

    VALUES = ["é€", "a b", "a,b", 'a"b']

    def send(self, client, path, access, refresh, method="get"):
        cookie = f"sessionid={client.cookies['sessionid'].value}; "
        cookie += f"access_token={access}; refresh_token={refresh}"
        # A WSGI server hands the header's (UTF-8) bytes over as a latin-1 str.
        return getattr(client, method)(path, HTTP_COOKIE=cookie.encode().decode("latin-1"))

    @pytest.mark.parametrize("value", VALUES)
    def test_as_both_tokens_they_end_the_session(self, signed_in, backend, value):
        client = signed_in(access="acc-1")
        response = self.send(client, "/api/users/me", value, value)
        assert (response.status_code, response.json()) == (401, SIGNED_OUT)
        assert len(backend.calls) == 0

    @pytest.mark.parametrize("value", VALUES)
    def test_as_the_access_token_it_is_refreshed(self, signed_in, backend, value):
        client = signed_in(access="acc-1")
        fakes.stub_refresh(backend, access="acc-2")
        fakes.stub_me_by_token(backend, {"acc-2": "admin"})
        response = self.send(client, "/api/users/me", value, "refresh-1")
        assert response.status_code == 200
        assert fakes.sent_cookie(calls_to(backend, "/users/me")[-1], "access_token") == "acc-2"

    @pytest.mark.parametrize("value", VALUES)
    def test_sign_out_with_them_completes(self, signed_in, backend, value):
        client = signed_in(access="acc-1")
        logout = fakes.stub_logout(backend)
        response = self.send(client, "/accounts/logout/", value, value, method="post")
        assert response.status_code == 302
        assert SESSION_KEY not in client.session
        assert response.cookies["refresh_token"]["max-age"] == 0
        assert len(logout.calls) == 0, "nothing usable to revoke"


class TestNoTokenLeaks:
    def test_no_token_value_reaches_a_log_record_or_an_exception(self, signed_in, backend, caplog):
        caplog.set_level(logging.DEBUG, logger="accounts")
        caplog.set_level(logging.DEBUG, logger="django")
        old, new = fakes.access_jwt(ttl=-10), fakes.access_jwt()
        secrets = [old, new, "refresh-secret-1", "refresh-secret-2", "forged-secret"]
        client = signed_in(access=old, refresh="refresh-secret-1")
        fakes.stub_refresh(backend, access=new, refresh="refresh-secret-2")
        fakes.stub_me_by_token(backend, {new: "admin"})
        client.get("/api/users/me")  # refresh before the view
        client.cookies["access_token"] = old  # a late tab
        client.cookies["refresh_token"] = "refresh-secret-1"
        client.get("/dashboard/")
        client.cookies["access_token"] = "forged-secret"  # foreign: signed out
        client.get("/api/users/me")
        client.raise_request_exception = False
        fakes.stub_logout(backend)
        client.post("/accounts/logout/")

        assert any("refresh" in r.name or "renewal" in r.name for r in caplog.records)
        for record in caplog.records:
            shown = " ".join(
                [record.getMessage(), repr(record.args), str(record.exc_info)]
                + [record.exc_text or ""]
            )
            for secret in secrets:
                assert secret not in shown, f"{record.name}: {record.msg}"


class TestProxyAnswersAreReported:
    def heard(self, client, path):
        from accounts import signals

        with fakes.heard(signals.proxy_answered, "status") as statuses:
            client.get(path)
        return statuses

    def test_a_proxied_call_reports_its_status(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        fakes.stub_me(backend)
        assert self.heard(client, "/api/users/me") == [200]

    def test_other_pages_report_nothing(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        assert self.heard(client, "/dashboard/") == []


def test_with_another_session_store_the_user_is_read_as_django_reads_it(db, rf):
    """A store without the one-join read (Django's signed cookies here): the middleware
    reads the user as django.contrib.auth does, with a query of its own."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY
    from django.contrib.sessions.backends.signed_cookies import SessionStore

    from accounts.middleware import AuthenticationMiddleware

    user = User.objects.create(backend_id="7", email="seven@example.com")
    request = rf.get("/")
    request.session = SessionStore()
    request.session[SESSION_KEY] = str(user.pk)
    request.session[BACKEND_SESSION_KEY] = "accounts.backends.AuthApiBackend"
    request.session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    AuthenticationMiddleware(lambda r: None).process_request(request)
    assert request.user == user
