"""The token-refresh middleware, the client's 401 replay and the browser's refresh endpoint."""

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from accounts.session import RequestAuth
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from accounts.middleware import TokenRefreshMiddleware
from tests import fakes
from tests.fakes import calls_to, make_user


class TestNeedsRefresh:
    def decide(self, cookies: dict, settings=None) -> bool:
        request = RequestFactory().get("/")
        request.COOKIES.update(cookies)
        request.user = AnonymousUser()
        request.auth = RequestAuth(request)
        return TokenRefreshMiddleware(lambda r: None).needs_refresh(request)

    def test_missing_access_token(self):
        assert self.decide({"refresh_token": "r"}) is True

    def test_expiring_access_token(self):
        assert self.decide({"access_token": fakes.access_jwt(ttl=30), "refresh_token": "r"})

    def test_fresh_access_token(self):
        assert not self.decide({"access_token": fakes.access_jwt(ttl=600), "refresh_token": "r"})

    def test_expired_access_token(self):
        assert self.decide({"access_token": fakes.access_jwt(ttl=-10), "refresh_token": "r"})

    def test_leeway_is_capped_at_half_the_lifetime(self, settings):
        settings.AUTH_REFRESH_LEEWAY = 60
        # A 20 s token with 15 s left: 60 s of leeway would refresh on every request.
        now = int(time.time())
        token = fakes.jwt.encode({"iat": now - 5, "exp": now + 15}, "k" * 32, algorithm="HS256")
        assert not self.decide({"access_token": token, "refresh_token": "r"})
        token = fakes.jwt.encode({"iat": now - 12, "exp": now + 8}, "k" * 32, algorithm="HS256")
        assert self.decide({"access_token": token, "refresh_token": "r"})

    def test_non_jwt_access_token_is_refreshed_only_when_missing(self):
        assert not self.decide({"access_token": "opaque-token", "refresh_token": "r"})

    def test_nothing_to_refresh_with(self):
        assert not self.decide({"access_token": fakes.access_jwt(ttl=-10)})


class TestBeforeTheView:
    def test_expired_access_refreshes_once_and_the_view_sees_the_new_token(
        self, signed_in, backend
    ):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        new_access = fakes.access_jwt(ttl=1800)
        fakes.stub_refresh(backend, access=new_access, refresh="refresh-2")
        fakes.stub_me(backend, "admin")

        response = client.get("/api/users/me")

        assert response.status_code == 200
        assert len(calls_to(backend, "/auth/refresh")) == 1
        # The proxied call already carried the new token: no 401 round trip.
        assert fakes.sent_cookie(calls_to(backend, "/users/me")[-1], "access_token") == new_access
        assert response.cookies["access_token"].value == new_access
        assert response.cookies["refresh_token"].value == "refresh-2"
        assert response.cookies["refresh_token"]["httponly"] is True

    def test_new_cookies_ride_on_redirects_and_403s(self, signed_in, backend):
        client = signed_in("evaluator", access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, "evaluator")
        response = client.get("/dashboard/admin/")
        assert response.status_code == 403
        assert response.cookies["refresh_token"].value == "refresh-2"

    def test_fresh_access_token_makes_no_backend_call(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=1800))
        assert client.get("/dashboard/").status_code == 200
        assert len(backend.calls) == 0

    def test_profile_and_roles_are_updated_after_refresh(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, json={**fakes.PROFILES["admin"], "roles": ["admin", "evaluator"]})
        body = client.get("/dashboard/").content.decode()
        assert '<dd id="profile-roles">admin, evaluator</dd>' in body

    def test_a_user_who_lost_every_allowed_role_is_signed_out(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, json={**fakes.PROFILES["admin"], "roles": ["viewer"]})
        response = client.get("/dashboard/")
        assert response.status_code == 302
        assert urlsplit(response["Location"]).path == "/accounts/login/"
        assert SESSION_KEY not in client.session
        assert response.cookies["refresh_token"].value == ""

    def test_a_backend_naming_another_user_ends_the_session(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, "evaluator")
        assert client.get("/dashboard/").status_code == 302
        assert SESSION_KEY not in client.session

    def test_session_without_token_cookies_is_signed_out(self, signed_in, backend):
        client = signed_in(access=None, refresh=None)
        response = client.get("/dashboard/")
        assert response.status_code == 302
        assert SESSION_KEY not in client.session
        assert len(backend.calls) == 0

    def test_refused_refresh_sends_pages_to_login_with_next(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, status=401, json={"message": "reused"})

        response = client.get("/dashboard/evaluations/?tab=1")

        assert response.status_code == 302
        location = urlsplit(response["Location"])
        assert location.path == "/accounts/login/"
        assert parse_qs(location.query)["next"] == ["/dashboard/evaluations/?tab=1"]
        assert SESSION_KEY not in client.session
        for name in ("access_token", "refresh_token"):
            assert response.cookies[name].value == ""
            assert response.cookies[name]["max-age"] == 0

    def test_refused_refresh_gives_scripts_401_json(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, status=401)
        response = client.get("/dashboard/", HTTP_ACCEPT="application/json")
        assert response.status_code == 401
        assert response.json()["error"] == "signed_out"

    def test_public_pages_stay_public_after_a_refused_refresh(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, status=401)
        response = client.get("/")
        assert response.status_code == 200
        assert "Sign in" in response.content.decode()

    @pytest.mark.parametrize(
        "failure",
        [requests.ConnectionError(), requests.ReadTimeout()],
        ids=["refused", "timeout"],
    )
    def test_transient_failure_keeps_the_session(self, signed_in, backend, failure):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        backend.post(f"{fakes.BASE}/auth/refresh", body=failure)

        page = client.get("/dashboard/")
        api = client.get("/api/users/me")

        assert page.status_code == 200  # served from what the app knows
        assert api.status_code == 503  # needs the backend
        assert api.json()["error"] == "backend_unavailable"
        assert SESSION_KEY in client.session
        assert "refresh_token" not in page.cookies and "refresh_token" not in api.cookies

    def test_5xx_refresh_keeps_the_session(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_refresh(backend, status=502)
        assert client.get("/dashboard/").status_code == 200
        assert SESSION_KEY in client.session

    def test_logout_is_exempt_from_refresh(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-10))
        fakes.stub_logout(backend)
        client.post("/accounts/logout/")
        assert calls_to(backend, "/auth/refresh") == []

    def test_requires_the_auth_middleware_before_it(self, rf):
        from django.core.exceptions import ImproperlyConfigured

        with pytest.raises(ImproperlyConfigured, match="AuthenticationMiddleware"):
            TokenRefreshMiddleware(lambda r: None)(rf.get("/"))


class TestReplayOn401:
    def test_get_is_replayed_with_the_new_token(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=1800))
        fakes.stub_me(backend, status=401)
        fakes.stub_refresh(backend, access="new.access.token", refresh="refresh-2")
        fakes.stub_me(backend, "admin")  # the profile re-read after the refresh
        fakes.stub_me(backend, "admin")  # the replay

        response = client.get("/api/users/me")

        assert response.status_code == 200
        me = calls_to(backend, "/users/me")
        assert fakes.sent_cookie(me[-1], "access_token") == "new.access.token"
        assert len(calls_to(backend, "/auth/refresh")) == 1
        assert response.cookies["refresh_token"].value == "refresh-2"

    def test_post_body_is_replayed(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=1800))
        notes = f"{fakes.BASE}/users/notes"
        backend.post(notes, status=401)
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, "admin")
        backend.post(notes, status=201, json={"id": 9})

        response = client.post(
            "/api/users/notes?draft=1",
            data=json.dumps({"text": "hi"}),
            content_type="application/json",
        )

        assert response.status_code == 201
        sent = calls_to(backend, "/users/notes")
        assert len(sent) == 2
        assert sent[0].request.body == sent[1].request.body == b'{"text": "hi"}'
        assert sent[1].request.headers["Content-Type"] == "application/json"
        assert sent[1].request.url.endswith("?draft=1")

    def test_second_401_ends_the_session(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=1800))
        fakes.stub_me(backend, status=401)
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, "admin")
        fakes.stub_me(backend, status=401)

        response = client.get("/api/users/me")

        assert response.status_code == 401
        assert response.json()["error"] == "signed_out"
        assert SESSION_KEY not in client.session


class TestBrowserRefresh:
    def test_returns_the_new_expiry(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=1800))
        new_access = fakes.access_jwt(ttl=1800)
        fakes.stub_refresh(backend, access=new_access)
        fakes.stub_me(backend, "admin")

        response = client.post("/accounts/refresh/")

        assert response.status_code == 200
        body = response.json()
        assert body["ok"] is True
        assert body["access_expires_at"].endswith("+00:00")
        assert response.cookies["access_token"].value == new_access
        assert len(calls_to(backend, "/auth/refresh")) == 1

    def test_refreshes_once_when_the_middleware_already_did(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=-1))
        fakes.stub_refresh(backend)
        fakes.stub_me(backend, "admin")
        assert client.post("/accounts/refresh/").status_code == 200
        assert len(calls_to(backend, "/auth/refresh")) == 1

    def test_refused_is_401_json(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt(ttl=1800))
        fakes.stub_refresh(backend, status=401)
        response = client.post("/accounts/refresh/")
        assert response.status_code == 401
        assert response.json() == {
            "ok": False,
            "error": "signed_out",
            "message": "Your session has ended; please sign in again.",
        }

    def test_anonymous_is_401_json(self, client, db, backend):
        assert client.post("/accounts/refresh/").status_code == 401

    def test_get_is_405(self, signed_in):
        assert signed_in(access=fakes.access_jwt()).get("/accounts/refresh/").status_code == 405

    def test_requires_csrf_and_says_so_in_json(self, csrf_client, locmem_cache, backend):
        csrf_client.force_login(make_user("admin"))
        csrf_client.cookies["refresh_token"] = "refresh-1"
        csrf_client.cookies["access_token"] = fakes.access_jwt()
        response = csrf_client.post("/accounts/refresh/", HTTP_ACCEPT="application/json")
        assert response.status_code == 403
        assert response.json()["error"] == "csrf"
        assert calls_to(backend, "/auth/refresh") == []
