"""The reference API as a real process: `manage.py runauthapi` over real HTTP.

Every Set-Cookie header is read one by one from urllib3's raw headers, never
from requests' comma-joined string (which splits wrongly inside Expires).
"""

from email.utils import parsedate_to_datetime

import pytest
import requests

from authapi.demo import DEMO_USERS
from tests.cookies import parse_set_cookie
from tests.servers import running_authapi

ADMIN = DEMO_USERS[0]


@pytest.fixture(scope="module")
def authapi(tmp_path_factory):
    with running_authapi(tmp_path_factory.mktemp("authapi")) as server:
        yield server


def set_cookies(response: requests.Response) -> dict[str, object]:
    headers = response.raw.headers.getlist("Set-Cookie")
    cookies = {c.name: c for c in map(parse_set_cookie, headers)}
    assert len(cookies) == len(headers), headers
    return cookies


def test_login_me_refresh_logout_over_real_http(authapi):
    http = requests.Session()
    before = authapi.stats()

    login = http.post(
        f"{authapi.url}/auth/login",
        json={"email": ADMIN.email, "password": ADMIN.password},
        timeout=10,
    )
    assert login.status_code == 201
    cookies = set_cookies(login)
    assert set(cookies) == {"access_token", "refresh_token"}
    for cookie in cookies.values():
        assert cookie.attributes["Path"] == "/"
        assert cookie.attributes["HttpOnly"] is True
        assert cookie.attributes["Secure"] is True
        assert cookie.attributes["SameSite"] == "None"
        assert parsedate_to_datetime(cookie.attributes["Expires"]).year >= 2026
    # The joined header requests offers is exactly what must not be split on ", ".
    assert login.headers["Set-Cookie"].count(",") >= 3
    access, refresh = cookies["access_token"].value, cookies["refresh_token"].value

    me = requests.get(f"{authapi.url}/users/me", cookies={"access_token": access}, timeout=10)
    assert me.status_code == 200
    assert me.json()["email"] == ADMIN.email
    bearer = requests.get(
        f"{authapi.url}/users/me", headers={"Authorization": f"Bearer {access}"}, timeout=10
    )
    assert bearer.json()["roles"] == ["admin"]

    rotated = requests.post(
        f"{authapi.url}/auth/refresh", cookies={"refresh_token": refresh}, timeout=10
    )
    assert rotated.status_code == 200
    new = set_cookies(rotated)
    new_refresh = new["refresh_token"].value
    assert new_refresh != refresh
    assert new["access_token"].value != access

    logout = requests.post(
        f"{authapi.url}/auth/logout", cookies={"refresh_token": new_refresh}, timeout=10
    )
    assert logout.status_code == 200
    assert {c.attributes["Max-Age"] for c in set_cookies(logout).values()} == {"0"}
    after_logout = requests.post(
        f"{authapi.url}/auth/refresh", cookies={"refresh_token": new_refresh}, timeout=10
    )
    assert after_logout.status_code == 401

    after = authapi.stats()
    assert after["login"] - before["login"] == 1
    assert after["refresh"] - before["refresh"] == 1
    assert after["reuse_detected"] == before["reuse_detected"]


def test_reuse_over_real_http_revokes_the_family(authapi):
    login = requests.post(
        f"{authapi.url}/auth/login",
        json={"email": ADMIN.email, "password": ADMIN.password},
        timeout=10,
    )
    first = set_cookies(login)["refresh_token"].value
    second = set_cookies(
        requests.post(f"{authapi.url}/auth/refresh", cookies={"refresh_token": first}, timeout=10)
    )["refresh_token"].value
    before = authapi.stats()["reuse_detected"]

    replay = requests.post(
        f"{authapi.url}/auth/refresh", cookies={"refresh_token": first}, timeout=10
    )

    assert replay.status_code == 401
    assert authapi.stats()["reuse_detected"] == before + 1
    newest = requests.post(
        f"{authapi.url}/auth/refresh", cookies={"refresh_token": second}, timeout=10
    )
    assert newest.status_code == 401
    assert "reuse detected" in authapi.log()


def test_serves_only_the_api_and_answers_json(authapi):
    for path in ("/", "/admin/", "/accounts/login/"):
        response = requests.get(f"{authapi.url}{path}", timeout=10)
        assert response.status_code == 404
        assert response.json()["statusCode"] == 404
    garbage = requests.post(
        f"{authapi.url}/auth/login",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert garbage.status_code == 400
    assert garbage.json()["message"] == "Body must be valid JSON"


def test_keeps_connections_alive(authapi):
    http = requests.Session()
    first = http.get(f"{authapi.url}/users/me", timeout=10)
    assert first.status_code == 401
    assert first.headers.get("Connection", "").lower() != "close"
    assert int(first.headers["Content-Length"]) == len(first.content)
