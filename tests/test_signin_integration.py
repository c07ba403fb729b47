"""The whole browser path over real HTTP: the app (Django's test client) talks to
the reference API running as its own process."""

import socket

import pytest
import requests
from django.contrib.auth import SESSION_KEY

from authapi.demo import DEMO_USERS
from tests.servers import running_authapi

ADMIN, EVALUATOR, VIEWER = DEMO_USERS


@pytest.fixture(scope="module")
def authapi(tmp_path_factory):
    with running_authapi(tmp_path_factory.mktemp("signin")) as server:
        yield server


@pytest.fixture
def app(client, db, settings, authapi):
    settings.API_BASEURL = authapi.url
    return client


def sign_in(client, user, next_url=""):
    return client.post(
        "/accounts/login/", {"email": user.email, "password": user.password, "next": next_url}
    )


def test_admin_signs_in_and_opens_every_page(app, authapi):
    response = sign_in(app, ADMIN)

    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert app.cookies["access_token"].value.count(".") == 2
    assert app.cookies["refresh_token"]["httponly"] is True
    dashboard = app.get("/dashboard/")
    assert dashboard.status_code == 200
    body = dashboard.content.decode()
    assert "Ada Admin" in body
    assert '<dd id="profile-roles">admin</dd>' in body
    assert app.get("/dashboard/admin/").status_code == 200
    assert app.get("/dashboard/evaluations/").status_code == 200


def test_evaluator_is_denied_the_admin_page_with_the_reason(app):
    assert sign_in(app, EVALUATOR, "/dashboard/evaluations/")["Location"] == (
        "/dashboard/evaluations/"
    )
    assert app.get("/dashboard/evaluations/").status_code == 200
    denied = app.get("/dashboard/admin/")
    assert denied.status_code == 403
    assert "This page needs the role “admin”." in denied.content.decode()


def test_viewer_is_refused_and_its_tokens_revoked(app, authapi):
    before = authapi.stats()
    response = sign_in(app, VIEWER)

    assert response.status_code == 200
    assert "This account does not have access" in response.content.decode()
    assert SESSION_KEY not in app.session
    assert "access_token" not in response.cookies
    after = authapi.stats()
    assert after["login"] - before["login"] == 1
    assert after["logout"] - before["logout"] == 1


def test_wrong_password(app):
    response = app.post("/accounts/login/", {"email": ADMIN.email, "password": "wrong"})
    assert response.status_code == 200
    assert "Invalid email or password" in response.content.decode()
    assert SESSION_KEY not in app.session


def test_sign_out_revokes_the_refresh_token_at_the_api(app, authapi):
    sign_in(app, ADMIN)
    refresh_token = app.cookies["refresh_token"].value

    response = app.post("/accounts/logout/")

    assert response.status_code == 302
    assert SESSION_KEY not in app.session
    assert app.get("/dashboard/").status_code == 302
    direct = requests.post(
        f"{authapi.url}/auth/refresh", cookies={"refresh_token": refresh_token}, timeout=10
    )
    assert direct.status_code == 401


def test_dead_backend_is_a_503_page(client, db, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.API_BASEURL = f"http://127.0.0.1:{closed_port}"
    response = sign_in(client, ADMIN)
    assert response.status_code == 503
    assert "Sign-in service unavailable" in response.content.decode()
    assert SESSION_KEY not in client.session
