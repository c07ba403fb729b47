"""The sign-in page against a stubbed backend: every answer maps to the right page."""

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import Group

from accounts.models import User
from tests import fakes

LOGIN = "/accounts/login/"
ADMIN_FORM = {"email": "admin@example.com", "password": "admin-demo-pass"}


def sign_in(client, form=ADMIN_FORM, **extra):
    return client.post(LOGIN, {**form, **extra})


@pytest.fixture
def admin_backend(backend):
    fakes.stub_login(backend)
    fakes.stub_me(backend, "admin")
    return backend


def assert_nothing_set(client, response):
    assert SESSION_KEY not in client.session
    assert "access_token" not in response.cookies
    assert "refresh_token" not in response.cookies


class TestSuccess:
    def test_signs_in_relays_both_cookies_and_redirects_to_dashboard(
        self, client, db, admin_backend
    ):
        response = sign_in(client)

        assert response.status_code == 302
        assert response["Location"] == "/dashboard/"
        assert {"access_token", "refresh_token"} <= set(response.cookies)
        assert response.cookies["refresh_token"].value == "refresh-1"
        assert response.cookies["access_token"]["httponly"] is True
        user = User.objects.get(pk=client.session[SESSION_KEY])
        assert (user.backend_id, user.email, user.roles) == ("1", "admin@example.com", ["admin"])

    def test_me_is_called_with_the_new_cookies(self, client, db, admin_backend):
        sign_in(client)
        me_call = next(c for c in admin_backend.calls if c.request.url.endswith("/users/me"))
        assert me_call.request.headers["Cookie"].startswith("access_token=ey")

    def test_session_key_changes_at_sign_in(self, client, db, admin_backend):
        client.get(LOGIN)
        session = client.session
        session["planted"] = "before"
        session.save()
        fixed_key = session.session_key
        client.cookies["sessionid"] = fixed_key

        sign_in(client)

        assert client.session.session_key != fixed_key
        assert SESSION_KEY in client.session

    def test_user_mirror_maps_roles_to_groups_and_admin_to_superuser(
        self, client, db, admin_backend
    ):
        sign_in(client)
        user = User.objects.get(backend_id="1")
        assert list(user.groups.values_list("name", flat=True)) == ["admin"]
        assert user.is_staff and user.is_superuser
        assert not user.has_usable_password()

    def test_profile_and_roles_are_updated_at_every_sign_in(self, client, db, backend):
        fakes.stub_login(backend)
        fakes.stub_me(backend, "admin")
        sign_in(client)
        hash_before = User.objects.get(backend_id="1").get_session_auth_hash()
        renamed = {**fakes.PROFILES["admin"], "firstName": "Ada B.", "roles": ["evaluator"]}
        backend.replace(responses.GET, f"{fakes.BASE}/users/me", json=renamed)

        sign_in(client)

        user = User.objects.get(backend_id="1")
        assert user.first_name == "Ada B."
        assert user.roles == ["evaluator"]
        assert not user.is_superuser
        assert Group.objects.get(name="evaluator").user_set.filter(pk=user.pk).exists()
        assert not user.groups.filter(name="admin").exists()
        # Other sessions of this user stay valid: the auth hash did not change.
        assert user.get_session_auth_hash() == hash_before

    def test_the_form_carries_next_from_the_url(self, client, db):
        response = client.get(LOGIN + "?next=/dashboard/evaluations/")
        assert 'name="next" value="/dashboard/evaluations/"' in response.content.decode()

    def test_safe_next_is_followed(self, client, db, admin_backend):
        response = sign_in(client, next="/dashboard/evaluations/?tab=2")
        assert response["Location"] == "/dashboard/evaluations/?tab=2"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example",
        "http://evil.example/dashboard/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        " //evil.example",
        "https:evil.example",
        "/%2F%2Fevil.example",
    ],
)
def test_open_redirect_attempts_land_on_this_host(client, db, admin_backend, target):
    response = sign_in(client, next=target)
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.scheme == "" and location.netloc == ""
    assert response["Location"].startswith("/")
    assert not response["Location"].startswith("//")


@pytest.mark.parametrize(
    "target",
    # Django takes each of these as naming this very host, so it would let them through;
    # a browser reads a leading backslash as a slash, so they start like a host.
    ["/\\testserver/dashboard/", "\\\\testserver/dashboard/"],
)
def test_a_next_starting_like_a_host_is_refused_even_naming_this_host(
    client, db, admin_backend, target
):
    response = sign_in(client, next=target)
    assert response["Location"] == "/dashboard/"


def test_an_absolute_next_on_this_host_is_followed(client, db, admin_backend):
    response = sign_in(client, next="http://testserver/dashboard/evaluations/")
    assert response["Location"] == "http://testserver/dashboard/evaluations/"


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("http://testserver/dashboard/evaluations/", "/dashboard/"),
        ("https://testserver/dashboard/evaluations/", "https://testserver/dashboard/evaluations/"),
    ],
)
def test_a_sign_in_over_https_never_goes_on_over_plain_http(
    client, db, admin_backend, target, location
):
    response = client.post(LOGIN, {**ADMIN_FORM, "next": target}, secure=True)
    assert response["Location"] == location


class TestRefusals:
    def test_wrong_password_shows_the_form_again(self, client, db, backend):
        fakes.stub_login(backend, status=401, json={"message": "Invalid credentials, user 7"})
        response = sign_in(client)

        assert response.status_code == 200
        body = response.content.decode()
        assert "Invalid email or password" in body
        assert "user 7" not in body
        assert 'value="admin@example.com"' in body
        assert_nothing_set(client, response)

    def test_viewer_is_refused_and_its_fresh_tokens_revoked(self, client, db, backend):
        fakes.stub_login(
            backend, headers=fakes.token_headers(fakes.access_jwt(sub="3"), "viewer-refresh")
        )
        fakes.stub_me(backend, "viewer")
        logout = fakes.stub_logout(backend)

        response = sign_in(client, {"email": "viewer@example.com", "password": "x"})

        assert response.status_code == 200
        assert "This account does not have access" in response.content.decode()
        assert_nothing_set(client, response)
        assert len(logout.calls) == 1
        assert "refresh_token=viewer-refresh" in logout.calls[0].request.headers["Cookie"]
        assert not User.objects.filter(backend_id="3").exists()

    def test_viewer_refusal_survives_a_failing_logout(self, client, db, backend):
        fakes.stub_login(backend)
        fakes.stub_me(backend, "viewer")
        backend.post(f"{fakes.BASE}/auth/logout", body=requests.ConnectionError())
        response = sign_in(client)
        assert "This account does not have access" in response.content.decode()
        assert_nothing_set(client, response)

    def test_allowed_roles_setting_is_honoured(self, client, db, backend, settings):
        settings.AUTH_ALLOWED_ROLES = ["viewer"]
        fakes.stub_login(backend)
        fakes.stub_me(backend, "viewer")
        assert sign_in(client).status_code == 302

    def test_throttled_gets_a_429_page_saying_when(self, client, db, backend):
        fakes.stub_login(backend, status=429, headers=[("Retry-After", "37")])
        response = sign_in(client)

        assert response.status_code == 429
        assert response["Retry-After"] == "37"
        body = response.content.decode()
        assert "Too many sign-in attempts" in body
        assert "37 seconds" in body
        assert_nothing_set(client, response)

    @pytest.mark.parametrize(
        "stub",
        [
            lambda b: fakes.stub_login(b, status=500),
            lambda b: fakes.stub_login(b, status=503),
            lambda b: b.post(f"{fakes.BASE}/auth/login", body=requests.ReadTimeout()),
            lambda b: b.post(f"{fakes.BASE}/auth/login", body=requests.ConnectionError()),
            lambda b: (fakes.stub_login(b), fakes.stub_me(b, status=500)),
        ],
        ids=["500", "503", "timeout", "refused", "me-500"],
    )
    def test_backend_down_is_a_503_page_and_nothing_half_set(self, client, db, backend, stub):
        fakes.stub_logout(backend)
        stub(backend)
        response = sign_in(client)

        assert response.status_code == 503
        assert "Sign-in service unavailable" in response.content.decode()
        assert_nothing_set(client, response)

    @pytest.mark.parametrize(
        "stub",
        [
            lambda b: fakes.stub_login(b, headers=[("Set-Cookie", "nonsense")], body="<html>"),
            lambda b: fakes.stub_login(b, status=302, headers=[("Location", "/elsewhere")]),
            lambda b: (fakes.stub_login(b), fakes.stub_me(b, body="not json")),
            lambda b: (fakes.stub_login(b), fakes.stub_me(b, body='{"id": 1, "email": "a@b.c"}')),
        ],
        ids=["no-cookies", "redirect", "me-garbage", "me-no-roles"],
    )
    def test_an_answer_that_does_not_fit_is_a_502_page_and_nothing_half_set(
        self, client, db, backend, stub, caplog
    ):
        fakes.stub_logout(backend)
        stub(backend)
        response = sign_in(client)

        assert response.status_code == 502
        body = response.content.decode()
        assert "answered in a way this site could not use" in body
        assert "could not reach" not in body
        assert_nothing_set(client, response)
        assert any(r.name == "accounts.views" and r.levelname == "ERROR" for r in caplog.records)

    def test_tokens_are_revoked_when_the_profile_cannot_be_read(self, client, db, backend):
        fakes.stub_login(backend)
        fakes.stub_me(backend, status=500)
        logout = fakes.stub_logout(backend)
        sign_in(client)
        assert len(logout.calls) == 1

    @pytest.mark.parametrize(
        "form",
        [
            {},
            {"email": "admin@example.com"},
            {"email": "not-an-email", "password": "x"},
            {"email": "admin@example.com", "password": "p" * 5000},
        ],
    )
    def test_invalid_forms_never_reach_the_backend(self, client, db, backend, form):
        response = client.post(LOGIN, form)
        assert response.status_code == 200
        assert len(backend.calls) == 0
        assert SESSION_KEY not in client.session


def test_login_post_requires_csrf(csrf_client, backend):
    response = csrf_client.post(LOGIN, ADMIN_FORM)
    assert response.status_code == 403
    assert len(backend.calls) == 0


def test_anonymous_dashboard_redirects_to_login_with_next(client, db):
    response = client.get("/dashboard/evaluations/?x=1")
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == LOGIN
    assert parse_qs(location.query) == {"next": ["/dashboard/evaluations/?x=1"]}
