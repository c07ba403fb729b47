"""Sign-out, role gates, navigation, the dashboard and /healthz."""

import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import SESSION_KEY
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpResponse
from django.test import RequestFactory
from django.views import View

from accounts.roles import RoleRequiredMixin, missing_role_message, role_required, user_has_role
from tests import fakes
from tests.fakes import make_user


@pytest.fixture
def as_user(client, db):
    def sign_in(who: str, access: str | None = None):
        return fakes.sign_in_client(client, who, access=access or fakes.access_jwt())

    return sign_in


class TestLogout:
    def test_revokes_at_backend_flushes_session_and_deletes_cookies(self, as_user, backend):
        client = as_user("admin", access="acc-1")
        logout = fakes.stub_logout(backend)

        response = client.post("/accounts/logout/")

        assert response.status_code == 302
        assert response["Location"] == "/"
        assert SESSION_KEY not in client.session
        for name in ("access_token", "refresh_token"):
            assert response.cookies[name].value == ""
            assert response.cookies[name]["max-age"] == 0
        assert logout.calls[0].request.headers["Cookie"] == (
            "access_token=acc-1; refresh_token=refresh-1"
        )
        assert "You have been signed out." in client.get("/").content.decode()

    def test_signs_out_even_when_the_backend_is_down(self, as_user, backend):
        client = as_user("admin")
        backend.post(f"{fakes.BASE}/auth/logout", body=requests.ConnectionError())
        response = client.post("/accounts/logout/")
        assert response.status_code == 302
        assert SESSION_KEY not in client.session
        assert response.cookies["refresh_token"].value == ""

    def test_get_asks_and_signs_nobody_out(self, as_user, backend):
        client = as_user("admin")
        response = client.get("/accounts/logout/")
        assert response.status_code == 200
        body = response.content.decode()
        assert '<form method="post" action="/accounts/logout/"' in body
        assert "csrfmiddlewaretoken" in body
        assert SESSION_KEY in client.session
        assert len(backend.calls) == 0

    def test_requires_csrf(self, csrf_client, backend):
        csrf_client.force_login(make_user("admin"))
        assert csrf_client.post("/accounts/logout/").status_code == 403
        assert SESSION_KEY in csrf_client.session


class TestRoleGates:
    @pytest.mark.parametrize(
        ("who", "path", "status"),
        [
            ("admin", "/dashboard/", 200),
            ("admin", "/dashboard/admin/", 200),
            ("admin", "/dashboard/evaluations/", 200),
            ("evaluator", "/dashboard/", 200),
            ("evaluator", "/dashboard/admin/", 403),
            ("evaluator", "/dashboard/evaluations/", 200),
        ],
    )
    def test_status_by_role(self, as_user, who, path, status):
        assert as_user(who).get(path).status_code == status

    def test_403_page_names_the_role_needed(self, as_user):
        response = as_user("evaluator").get("/dashboard/admin/")
        assert "This page needs the role “admin”." in response.content.decode()

    @pytest.mark.parametrize(
        "path", ["/dashboard/", "/dashboard/admin/", "/dashboard/evaluations/"]
    )
    def test_anonymous_goes_to_login_with_next(self, client, db, path):
        response = client.get(path)
        location = urlsplit(response["Location"])
        assert (response.status_code, location.path) == (302, "/accounts/login/")
        assert parse_qs(location.query)["next"] == [path]

    def test_mixin_matches_the_decorator(self, db):
        class Evaluations(RoleRequiredMixin, View):
            required_roles = ("evaluator", "admin")

            def get(self, request):
                return HttpResponse("ok")

        request = RequestFactory().get("/x/")
        request.user = make_user("evaluator")
        assert Evaluations.as_view()(request).status_code == 200
        request.user = make_user("viewer")
        with pytest.raises(PermissionDenied) as info:
            Evaluations.as_view()(request)
        assert str(info.value) == "This page needs one of the roles “evaluator” or “admin”."

    def test_mixin_and_decorator_need_roles(self):
        with pytest.raises(ImproperlyConfigured):
            role_required()

    def test_user_has_role(self, db):
        admin = make_user("admin")
        assert user_has_role(admin, "admin")
        assert user_has_role(admin, "evaluator", "admin")
        assert not user_has_role(admin, "evaluator")
        assert str(missing_role_message(["a", "b", "c"])) == (
            "This page needs one of the roles “a”, “b”, “c”."
        )


class TestNavigation:
    def nav(self, client) -> str:
        body = client.get("/").content.decode()
        return body[body.index("<nav") : body.index("</nav>")]

    def test_admin_sees_every_page(self, as_user):
        nav = self.nav(as_user("admin"))
        assert all(
            p in nav for p in ("/dashboard/", "/dashboard/evaluations/", "/dashboard/admin/")
        )

    def test_evaluator_does_not_see_admin(self, as_user):
        nav = self.nav(as_user("evaluator"))
        assert "/dashboard/evaluations/" in nav
        assert "/dashboard/admin/" not in nav

    def test_anonymous_sees_sign_in(self, client, db):
        body = client.get("/").content.decode()
        assert "/dashboard/" not in self.nav(client)
        assert 'href="/accounts/login/"' in body
        assert "Sign out" not in body

    def test_signed_in_sees_name_and_sign_out_form(self, as_user):
        body = as_user("evaluator").get("/").content.decode()
        assert "Eve Evaluator" in body
        assert 'action="/accounts/logout/"' in body
        assert "csrfmiddlewaretoken" in body


class TestDashboard:
    def test_shows_profile_roles_and_access_expiry(self, as_user):
        access = fakes.access_jwt(ttl=900)
        body = as_user("admin", access=access).get("/dashboard/").content.decode()
        assert "Ada Admin" in body
        assert "admin@example.com" in body
        assert '<dd id="profile-roles">admin</dd>' in body
        expected = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 900))
        assert f'id="access-expiry" class="expiry" datetime="{expected}' in body
        assert "js/dashboard.js" in body

    def test_never_renders_token_values(self, as_user):
        access = fakes.access_jwt()
        body = as_user("admin", access=access).get("/dashboard/").content.decode()
        assert access not in body
        assert "refresh-1" not in body

    def test_expiries_come_from_the_session_record(self, as_user):
        """New contract: the record's expiries as issued (an opaque token's cookie Max-Age
        counts); only a record that knows none shows "unknown"."""
        client = as_user("admin", access="opaque-token")
        body = client.get("/dashboard/").content.decode()
        expected = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 1800))
        assert f'id="access-expiry" class="expiry" datetime="{expected}' in body
        expected = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 604800))
        assert f'id="refresh-expiry" class="expiry" datetime="{expected}' in body
        fakes.edit_record(client, access_expires_at=None, refresh_expires_at=None)
        body = client.get("/dashboard/").content.decode()
        assert '<span id="access-expiry">unknown</span>' in body
        assert '<span id="refresh-expiry">unknown</span>' in body


class TestHealthz:
    def test_ok(self, client, db, backend):
        fakes.stub_me(backend, status=401)
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "database": "ok",
            "cache": "ok",
            "backend": "ok",
        }

    @pytest.mark.parametrize(
        "failure", [requests.ConnectionError(), requests.ReadTimeout()], ids=["refused", "timeout"]
    )
    def test_backend_down_is_503(self, client, db, backend, failure):
        backend.get(f"{fakes.BASE}/users/me", body=failure)
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["backend"] == "unavailable"
        assert response.json()["database"] == "ok"


class TestSystemChecks:
    def ids(self):
        from accounts.checks import check_auth_settings

        return [error.id for error in check_auth_settings()]

    def test_default_configuration_is_clean(self):
        assert self.ids() == []

    @pytest.mark.parametrize(
        ("setting", "value", "error"),
        [
            ("AUTH_ACCESS_COOKIE", "sessionid", "accounts.E001"),
            ("AUTH_REFRESH_COOKIE", "access_token", "accounts.E002"),
            ("AUTH_BACKEND_TOKEN_TRANSPORT", "header", "accounts.E003"),
            ("API_BASEURL", "127.0.0.1:8001", "accounts.E004"),
            ("AUTH_COOKIE_SAMESITE", "lax-ish", "accounts.E005"),
        ],
    )
    def test_misconfiguration_is_reported(self, settings, setting, value, error):
        setattr(settings, setting, value)
        assert error in self.ids()


class TestDemoActions:
    def test_refresh_on_the_server_redirects_back_with_new_cookies(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        fakes.stub_refresh(backend, refresh="refresh-2")
        fakes.stub_me(backend, "admin")
        response = client.post("/dashboard/refresh/")
        assert response.status_code == 302
        assert response["Location"] == "/dashboard/"
        assert response.cookies["refresh_token"].value == "refresh-2"
        assert "Tokens refreshed on the server." in client.get("/dashboard/").content.decode()

    def test_refresh_on_the_server_when_the_backend_is_down(self, signed_in, backend, settle):
        """New contract: only a refresh that certainly never reached the backend (refused
        connection) leaves the session unchanged."""
        client = signed_in(access=fakes.access_jwt())
        backend.post(f"{fakes.BASE}/auth/refresh", body=fakes.connection_refused())
        response = client.post("/dashboard/refresh/", follow=True)
        assert "did not answer; your session is unchanged" in response.content.decode()
        assert SESSION_KEY in client.session

    def test_refresh_on_the_server_with_an_unknown_outcome_signs_out(
        self, signed_in, backend, settle
    ):
        """A read timeout may have spent the token: the session ends, and says why."""
        client = signed_in(access=fakes.access_jwt())
        backend.post(f"{fakes.BASE}/auth/refresh", body=requests.ReadTimeout())
        response = client.post("/dashboard/refresh/", follow=True)
        assert response.redirect_chain[-1][0].startswith("/accounts/login/")
        assert "We could not confirm your sign-in" in response.content.decode()
        assert SESSION_KEY not in client.session

    def test_profile_through_the_client(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        fakes.stub_me(backend, "admin")
        response = client.get("/dashboard/profile/")
        assert response.json()["email"] == "admin@example.com"

    def test_profile_through_the_client_when_the_backend_is_down(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me", body=requests.ConnectionError())
        response = client.get("/dashboard/profile/", HTTP_ACCEPT="application/json")
        assert response.status_code == 503
        assert SESSION_KEY in client.session

    def test_dashboard_has_the_demo_buttons_and_no_inline_script(self, signed_in):
        body = signed_in(access=fakes.access_jwt()).get("/dashboard/").content.decode()
        for button in ("refresh-browser", "refresh-server", "profile-server", "profile-browser"):
            assert f'id="{button}"' in body
        assert "<script>" not in body


class TestUserCache:
    def test_a_deactivated_user_is_signed_out_at_the_next_request(self, signed_in):
        client = signed_in(access=fakes.access_jwt())
        assert client.get("/dashboard/").status_code == 200  # the user is cached now
        user = make_user("admin")
        user.is_active = False
        user.save()
        assert client.get("/dashboard/").status_code == 302

    def test_a_renamed_user_shows_at_once(self, signed_in):
        client = signed_in(access=fakes.access_jwt())
        client.get("/dashboard/")
        user = make_user("admin")
        user.first_name = "Adele"
        user.save()
        assert "Adele Admin" in client.get("/dashboard/").content.decode()


class TestBackendThrottlingInViews:
    def test_the_profile_endpoint_answers_json_whatever_the_accept_header(self, signed_in, backend):
        """New contract: /dashboard/profile/ is a `json_view` (the demo button's fetch), so
        its errors are JSON even for Accept: text/html. The 429 *page* for page views is
        tested on the middleware directly (test_middleware.TestProcessException)."""
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me", status=429, headers={"Retry-After": "12"})
        response = client.get("/dashboard/profile/", HTTP_ACCEPT="text/html")
        assert response.status_code == 429
        assert response["Retry-After"] == "12"
        assert response.json()["error"] == "throttled"
        assert SESSION_KEY in client.session

    def test_a_script_gets_429_json(self, signed_in, backend):
        client = signed_in(access=fakes.access_jwt())
        backend.get(f"{fakes.BASE}/users/me", status=429, headers={"Retry-After": "12"})
        response = client.get("/dashboard/profile/", HTTP_ACCEPT="application/json")
        assert response.status_code == 429
        assert response.json()["error"] == "throttled"
