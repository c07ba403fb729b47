"""The reference API as a real process: `manage.py runauthapi` over real HTTP.

Every Set-Cookie header is read one by one from urllib3's raw headers, never
from requests' comma-joined string (which splits wrongly inside Expires).
"""

import threading
import time
from email.utils import parsedate_to_datetime

import pytest
import requests

from authapi.demo import DEMO_USERS
from tests.cookies import parse_set_cookie
from tests.servers import running_authapi

ADMIN = DEMO_USERS[0]
EVALUATOR = DEMO_USERS[1]


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


def sign_in(authapi, user=ADMIN) -> tuple[str, str]:
    """Sign `user` in over HTTP; return (access token, refresh token)."""
    response = requests.post(
        f"{authapi.url}/auth/login",
        json={"email": user.email, "password": user.password},
        timeout=10,
    )
    assert response.status_code == 201
    cookies = set_cookies(response)
    return cookies["access_token"].value, cookies["refresh_token"].value


def post_refresh(authapi, refresh: str) -> requests.Response:
    return requests.post(
        f"{authapi.url}/auth/refresh", cookies={"refresh_token": refresh}, timeout=30
    )


@pytest.fixture
def faults_restored(authapi):
    """Give the test the module's API and put its faults back afterwards."""
    yield authapi
    authapi.set_faults(refresh_delay=None)


def test_runtime_refresh_delay_stalls_the_running_process(faults_restored):
    api = faults_restored
    assert api.faults()["refresh_delay"] == 0.0
    _, refresh = sign_in(api)

    assert api.set_faults(refresh_delay=0.5)["refresh_delay"] == 0.5
    assert api.faults()["refresh_delay"] == 0.5
    started = time.monotonic()
    response = post_refresh(api, refresh)
    assert time.monotonic() - started >= 0.5
    assert response.status_code == 200

    # None goes back to AUTHAPI_REFRESH_DELAY (0 here).
    assert api.set_faults(refresh_delay=None)["refresh_delay"] == 0.0


def test_bad_fault_values_answer_400(faults_restored):
    with pytest.raises(requests.HTTPError) as caught:
        faults_restored.set_faults(refresh_delay=-1)
    assert caught.value.response.status_code == 400
    assert faults_restored.faults()["refresh_delay"] == 0.0


def test_refresh_calls_counts_each_call_to_the_backend(faults_restored):
    """Concurrent refreshes with one token: 3 calls counted, 1 rotation, reuse detected."""
    api = faults_restored
    _, refresh = sign_in(api)
    api.set_faults(refresh_delay=0.3)  # all of them are inside the view together
    before = api.stats()
    statuses = []

    def call():
        statuses.append(post_refresh(api, refresh).status_code)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    after = api.stats()
    assert sorted(statuses) == [200, 401, 401]
    assert after["refresh_calls"] - before["refresh_calls"] == 3
    assert after["refresh"] - before["refresh"] == 1
    assert after["refresh_rejected"] - before["refresh_rejected"] == 2
    # The first loser detects the reuse; the second may find the family already revoked.
    assert after["reuse_detected"] - before["reuse_detected"] in (1, 2)


def test_apiuser_changes_the_running_api(authapi):
    access, refresh = sign_in(authapi, EVALUATOR)
    try:
        out = authapi.apiuser("disable", EVALUATOR.email)
        assert out.startswith(f"Disabled {EVALUATOR.email}")
        me = requests.get(f"{authapi.url}/users/me", cookies={"access_token": access}, timeout=10)
        assert me.status_code == 401
        assert post_refresh(authapi, refresh).status_code == 401
    finally:
        authapi.apiuser("enable", EVALUATOR.email)

    access, refresh = sign_in(authapi, EVALUATOR)
    try:
        authapi.apiuser("roles", EVALUATOR.email, "evaluator,auditor")
        me = requests.get(f"{authapi.url}/users/me", cookies={"access_token": access}, timeout=10)
        assert me.json()["roles"] == ["evaluator", "auditor"]
    finally:
        authapi.apiuser("roles", EVALUATOR.email, "evaluator")

    assert authapi.apiuser("revoke", EVALUATOR.email).startswith("Revoked ")
    assert post_refresh(authapi, refresh).status_code == 401
    with pytest.raises(RuntimeError, match="No account with email"):
        authapi.apiuser("disable", "ghost@example.com")


def test_scoped_refresh_cookie_in_a_real_cookie_jar(tmp_path):
    """With Path=/auth/refresh a client sends the refresh token there and nowhere else."""
    with running_authapi(
        tmp_path, AUTHAPI_REFRESH_COOKIE_PATH="/auth/refresh", AUTHAPI_COOKIE_SECURE="0"
    ) as api:
        jar = requests.Session()
        login = jar.post(
            f"{api.url}/auth/login",
            json={"email": ADMIN.email, "password": ADMIN.password},
            timeout=10,
        )
        cookies = set_cookies(login)
        assert cookies["refresh_token"].attributes["Path"] == "/auth/refresh"
        assert cookies["access_token"].attributes["Path"] == "/"

        me = jar.get(f"{api.url}/users/me", timeout=10)
        assert me.status_code == 200
        assert "refresh_token" not in me.request.headers["Cookie"]

        rotated = jar.post(f"{api.url}/auth/refresh", timeout=10)
        assert "refresh_token=" in rotated.request.headers["Cookie"]
        assert rotated.status_code == 200
        assert set_cookies(rotated)["refresh_token"].attributes["Path"] == "/auth/refresh"
        newest = jar.cookies.get("refresh_token", path="/auth/refresh")

        logout = jar.post(f"{api.url}/auth/logout", timeout=10)
        assert logout.status_code == 200
        assert "refresh_token" not in logout.request.headers["Cookie"]
        # Cleared on its own path, so the jar really drops it.
        assert set_cookies(logout)["refresh_token"].attributes["Path"] == "/auth/refresh"
        assert "refresh_token" not in jar.cookies
        # Logout revoked the sign-in through the access token's family.
        assert post_refresh(api, newest).status_code == 401
