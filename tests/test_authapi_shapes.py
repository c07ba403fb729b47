"""The reference API's backend shapes (AUTHAPI_* switches; docs/settings.md, "Its shapes").

Each switch turns the reference API into another common NestJS backend, so the
app can be tested against it: cookie names of the backend's choice, a refresh
without rotation, reuse detection off, tokens in JSON bodies with
`Authorization: Bearer`, a clock that is off; and the shapes of real
open-source backends (NocoDB, brocoders/nestjs-boilerplate): versioned paths,
the access token in JSON with the refresh token as a cookie, nested fields, a
named access header, the refresh token as Bearer, cookies without `Max-Age`,
opaque hex refresh tokens, 422 on a wrong password, a guest `/me`, roles
spelt five ways, logout's status.
"""

import json
import time
from email.utils import parsedate_to_datetime

import jwt
import pytest
from django.core.exceptions import ImproperlyConfigured

from authapi import stats
from authapi.conf import api_settings
from authapi.models import ApiUser, TokenFamily
from tests.cookies import parse_set_cookie
from tests.test_authapi import ADMIN, EVALUATOR, login, post_json, raw_set_cookies


def cookies_of(response) -> dict[str, str]:
    return {c.name: c.value for c in map(parse_set_cookie, raw_set_cookies(response))}


def counts() -> dict[str, int]:
    return stats.snapshot()


class TestCookieNames:
    @pytest.fixture(autouse=True)
    def prefixed(self, settings):
        settings.AUTHAPI_ACCESS_COOKIE = "__Host-access"
        settings.AUTHAPI_REFRESH_COOKIE = "__Secure-refresh"
        settings.AUTHAPI_REFRESH_COOKIE_PATH = "/auth/refresh"

    def test_the_tokens_come_and_go_under_the_configured_names(self, api_client):
        response = login(api_client)
        assert set(cookies_of(response)) == {"__Host-access", "__Secure-refresh"}
        headers = dict(h.split("=", 1)[0:2] for h in raw_set_cookies(response))
        assert "Path=/auth/refresh" in headers["__Secure-refresh"]
        tokens = cookies_of(response)
        api_client.cookies.clear()
        assert (
            api_client.get("/users/me", HTTP_COOKIE=f"__Host-access={tokens['__Host-access']}")
        ).status_code == 200
        assert (
            api_client.get("/users/me", HTTP_COOKIE=f"access_token={tokens['__Host-access']}")
        ).status_code == 401
        refreshed = api_client.post(
            "/auth/refresh", HTTP_COOKIE=f"__Secure-refresh={tokens['__Secure-refresh']}"
        )
        assert refreshed.status_code == 200
        assert set(cookies_of(refreshed)) == {"__Host-access", "__Secure-refresh"}

    @pytest.mark.parametrize(
        ("setting", "value", "message"),
        [
            ("AUTHAPI_ACCESS_COOKIE", "bad name", "is not a cookie name"),
            ("AUTHAPI_ACCESS_COOKIE", "", "is not a cookie name"),
            ("AUTHAPI_REFRESH_COOKIE", "__Host-refresh", "needs Path=/"),
            ("AUTHAPI_COOKIE_SECURE", False, "needs AUTHAPI_COOKIE_SECURE"),
        ],
    )
    def test_a_name_its_attributes_break_is_refused(self, settings, setting, value, message):
        setattr(settings, setting, value)
        with pytest.raises(ImproperlyConfigured, match=message):
            assert api_settings.access_cookie and api_settings.refresh_cookie


class TestNoRotation:
    def test_a_refresh_renews_only_the_access_token_and_keeps_the_refresh_token(
        self, api_client, settings
    ):
        settings.AUTHAPI_ROTATE_REFRESH = False
        before = counts()
        first = cookies_of(login(api_client))
        for _ in range(3):
            api_client.cookies.clear()
            response = api_client.post(
                "/auth/refresh", HTTP_COOKIE=f"refresh_token={first['refresh_token']}"
            )
            assert response.status_code == 200
            assert set(cookies_of(response)) == {"access_token"}
            assert cookies_of(response)["access_token"] != first["access_token"]
        assert counts()["spent_presented"] == before["spent_presented"]


class TestReuseDetection:
    def spend_twice(self, api_client) -> list[int]:
        first = cookies_of(login(api_client))
        statuses = []
        for _ in range(2):
            api_client.cookies.clear()
            statuses.append(
                api_client.post(
                    "/auth/refresh", HTTP_COOKIE=f"refresh_token={first['refresh_token']}"
                ).status_code
            )
        return statuses

    def test_on_a_spent_token_revokes_the_sign_in(self, api_client):
        before = counts()
        assert self.spend_twice(api_client) == [200, 401]
        assert counts()["spent_presented"] - before["spent_presented"] == 1
        assert counts()["reuse_detected"] - before["reuse_detected"] == 1
        assert TokenFamily.objects.get().revoked_reason == "reuse"

    def test_off_a_spent_token_is_accepted_but_still_counted(self, api_client, settings):
        settings.AUTHAPI_REUSE_DETECTION = False
        before = counts()
        assert self.spend_twice(api_client) == [200, 200]
        assert counts()["spent_presented"] - before["spent_presented"] == 1
        assert counts()["reuse_detected"] - before["reuse_detected"] == 0
        assert TokenFamily.objects.get().revoked_at is None


class TestTokensInTheBody:
    @pytest.fixture(autouse=True)
    def body(self, settings):
        settings.AUTHAPI_TOKEN_TRANSPORT = "body"

    def test_login_answers_the_pair_in_json_and_sets_no_cookie(self, api_client):
        response = login(api_client)
        assert response.status_code == 201
        assert raw_set_cookies(response) == []
        assert set(response.json()) == {"accessToken", "refreshToken"}

    def test_users_me_takes_bearer_only(self, api_client):
        access = login(api_client).json()["accessToken"]
        api_client.cookies.clear()
        assert api_client.get("/users/me", HTTP_COOKIE=f"access_token={access}").status_code == 401
        bearer = api_client.get("/users/me", HTTP_AUTHORIZATION=f"Bearer {access}")
        assert bearer.status_code == 200
        assert bearer.json()["email"] == ADMIN.email

    def test_refresh_takes_the_token_in_the_body_and_answers_the_next_pair(self, api_client):
        pair = login(api_client).json()
        api_client.cookies.clear()
        as_cookie = f"refresh_token={pair['refreshToken']}"
        assert api_client.post("/auth/refresh", HTTP_COOKIE=as_cookie).status_code in (400, 401)
        response = post_json(api_client, "/auth/refresh", {"refreshToken": pair["refreshToken"]})
        assert response.status_code == 200
        assert raw_set_cookies(response) == []
        new = response.json()
        assert set(new) == {"accessToken", "refreshToken"}
        assert new["refreshToken"] != pair["refreshToken"]

    def test_logout_takes_the_token_in_the_body(self, api_client):
        pair = login(api_client).json()
        assert post_json(
            api_client, "/auth/logout", {"refreshToken": pair["refreshToken"]}
        ).json() == {"ok": True}
        again = post_json(api_client, "/auth/refresh", {"refreshToken": pair["refreshToken"]})
        assert again.status_code == 401

    def test_field_names_and_no_rotation_are_configurable(self, api_client, settings):
        settings.AUTHAPI_ACCESS_FIELD = "access_token"
        settings.AUTHAPI_REFRESH_FIELD = "refresh_token"
        settings.AUTHAPI_ROTATE_REFRESH = False
        pair = login(api_client).json()
        assert set(pair) == {"access_token", "refresh_token"}
        again = post_json(api_client, "/auth/refresh", {"refresh_token": pair["refresh_token"]})
        assert set(again.json()) == {"access_token"}

    @pytest.mark.parametrize("body", [b"", b"[]", b'{"refreshToken": 7}', b"{not json"])
    def test_a_refresh_without_a_usable_token_is_a_4xx(self, api_client, body):
        response = api_client.post("/auth/refresh", body, content_type="application/json")
        assert response.status_code in (400, 401)
        assert json.loads(response.content)["statusCode"] == response.status_code


class TestClockOffset:
    @pytest.mark.parametrize("offset", [300, -300])
    def test_iat_exp_expires_and_date_follow_the_api_clock(self, api_client, settings, offset):
        settings.AUTHAPI_CLOCK_OFFSET = offset
        settings.AUTHAPI_ACCESS_TTL = 60
        response = login(api_client)
        now = time.time()
        access = cookies_of(response)["access_token"]
        claims = jwt.decode(access, options={"verify_signature": False})
        assert abs(claims["iat"] - (now + offset)) < 5
        assert claims["exp"] - claims["iat"] == 60
        assert abs(parsedate_to_datetime(response["Date"]).timestamp() - (now + offset)) < 5
        header = next(h for h in raw_set_cookies(response) if h.startswith("access_token="))
        expires = parsedate_to_datetime(parse_set_cookie(header).attr("expires")).timestamp()
        assert abs(expires - (now + offset + 60)) < 5
        # Valid on its own clock, though behind or ahead of the real one.
        api_client.cookies.clear()
        assert api_client.get("/users/me", HTTP_COOKIE=f"access_token={access}").status_code == 200

    def test_without_an_offset_the_date_is_the_servers_own(self, api_client):
        assert "Date" not in login(api_client)  # the WSGI server adds the true one


def delta(before: dict[str, int]) -> dict[str, int]:
    """The counters that moved since `before`."""
    return {name: n - before[name] for name, n in counts().items() if n != before[name]}


def expired_access(access: str, secret: str) -> str:
    """`access` re-signed with its `exp` in the past: valid but for its age."""
    claims = jwt.decode(access, secret, algorithms=["HS256"])
    claims.update(iat=claims["iat"] - 100, exp=claims["iat"] - 10)
    return jwt.encode(claims, secret, algorithm="HS256")


V1 = {
    "AUTHAPI_LOGIN_PATH": "/api/v1/auth/email/login",
    "AUTHAPI_REFRESH_PATH": "/api/v1/auth/refresh",
    "AUTHAPI_LOGOUT_PATH": "/api/v1/auth/logout",
    "AUTHAPI_ME_PATH": "/api/v1/auth/me",
}


def login_at(client, path, user=ADMIN):
    return post_json(client, path, {"email": user.email, "password": user.password})


class TestEndpointPaths:
    def test_the_four_endpoints_move_and_the_default_paths_answer_404(self, api_client, settings):
        for name, value in V1.items():
            setattr(settings, name, value)
        settings.AUTHAPI_EXPOSE_STATS = True
        assert login(api_client).status_code == 404
        response = login_at(api_client, "/api/v1/auth/email/login")
        assert response.status_code == 201
        tokens = cookies_of(response)
        api_client.cookies.clear()
        access = f"access_token={tokens['access_token']}"
        assert api_client.get("/users/me", HTTP_COOKIE=access).status_code == 404
        assert api_client.get("/api/v1/auth/me", HTTP_COOKIE=access).json()["email"] == ADMIN.email
        refreshed = api_client.post(
            "/api/v1/auth/refresh", HTTP_COOKIE=f"refresh_token={tokens['refresh_token']}"
        )
        assert refreshed.status_code == 200
        assert api_client.post("/auth/logout").status_code == 404
        assert api_client.post("/api/v1/auth/logout").status_code == 200
        assert api_client.get("/_stats").json()["refresh"] >= 1
        assert api_client.get("/_faults").status_code == 200

    def test_a_path_changed_after_a_request_is_served_at_once(self, api_client, settings):
        assert login(api_client).status_code == 201
        settings.AUTHAPI_LOGIN_PATH = "/api/v1/auth/user/signin"
        assert login(api_client).status_code == 404
        assert login_at(api_client, "/api/v1/auth/user/signin").status_code == 201
        settings.AUTHAPI_LOGIN_PATH = "/auth/login"
        assert login(api_client).status_code == 201

    def test_a_path_is_matched_literally(self, api_client, settings):
        settings.AUTHAPI_ME_PATH = "/api/v1.0/me"
        assert api_client.get("/api/v1x0/me").status_code == 404
        assert api_client.get("/api/v1.0/me").status_code == 401

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("auth/login", "must be a URL path"),
            ("/", "must be a URL path"),
            ("/auth//login", "must be a URL path"),
            ("/auth/log in", "must be a URL path"),
            ("/auth/<int:id>", "must be a URL path"),
            ("/auth/login?x=1", "must be a URL path"),
            ("/_stats", "must be a URL path"),
            ("/auth/refresh", "four different paths"),
        ],
    )
    def test_a_path_that_is_not_one_is_refused(self, settings, value, message):
        settings.AUTHAPI_LOGIN_PATH = value
        with pytest.raises(ImproperlyConfigured, match=message):
            assert api_settings.endpoint_paths


class TestMixedTransport:
    """NocoDB: `{"token": …}` in the answer, the refresh token as an HttpOnly cookie."""

    @pytest.fixture(autouse=True)
    def mixed(self, settings):
        settings.AUTHAPI_TOKEN_TRANSPORT = "mixed"
        settings.AUTHAPI_ACCESS_FIELD = "token"

    def test_login_answers_the_access_token_in_json_and_only_the_refresh_cookie(self, api_client):
        response = login(api_client)
        assert response.status_code == 201
        assert set(response.json()) == {"token"}
        assert set(cookies_of(response)) == {"refresh_token"}
        cookie = parse_set_cookie(raw_set_cookies(response)[0])
        assert cookie.attr("HttpOnly") is True
        assert cookie.attr("Path") == "/"
        assert cookie.attr("Expires")
        claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
        assert claims["email"] == ADMIN.email

    def test_users_me_takes_bearer_only(self, api_client):
        access = login(api_client).json()["token"]
        api_client.cookies.clear()
        assert api_client.get("/users/me", HTTP_COOKIE=f"access_token={access}").status_code == 401
        bearer = api_client.get("/users/me", HTTP_AUTHORIZATION=f"Bearer {access}")
        assert bearer.json()["email"] == ADMIN.email

    def test_refresh_takes_the_cookie_not_a_body_field(self, api_client):
        response = login(api_client)
        refresh = cookies_of(response)["refresh_token"]
        api_client.cookies.clear()
        before = counts()
        in_body = post_json(api_client, "/auth/refresh", {"refreshToken": refresh})
        assert in_body.status_code == 401
        assert in_body.json()["message"] == "Missing refresh token"
        refreshed = api_client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh}")
        assert refreshed.status_code == 200
        assert set(refreshed.json()) == {"token"}
        assert refreshed.json()["token"] != response.json()["token"]
        assert set(cookies_of(refreshed)) == {"refresh_token"}
        assert cookies_of(refreshed)["refresh_token"] != refresh
        assert delta(before) == {"refresh_calls": 2, "refresh": 1, "refresh_rejected": 1}

    def test_without_rotation_a_refresh_answers_the_access_token_and_sets_no_cookie(
        self, api_client, settings
    ):
        settings.AUTHAPI_ROTATE_REFRESH = False
        refresh = cookies_of(login(api_client))["refresh_token"]
        api_client.cookies.clear()
        refreshed = api_client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh}")
        assert set(refreshed.json()) == {"token"}
        assert raw_set_cookies(refreshed) == []

    def test_logout_revokes_the_cookies_sign_in_and_clears_only_that_cookie(self, api_client):
        response = login(api_client)
        refresh, access = cookies_of(response)["refresh_token"], response.json()["token"]
        api_client.cookies.clear()
        out = api_client.post("/auth/logout", HTTP_COOKIE=f"refresh_token={refresh}")
        assert out.status_code == 200
        assert cookies_of(out) == {"refresh_token": ""}
        assert api_client.get("/users/me", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 401


class TestNestedFields:
    @pytest.fixture(autouse=True)
    def nested(self, settings):
        settings.AUTHAPI_ACCESS_FIELD = "data.tokens.access"
        settings.AUTHAPI_REFRESH_FIELD = "data.tokens.refresh"

    def test_body_transport_writes_and_reads_them_nested(self, api_client, settings):
        settings.AUTHAPI_TOKEN_TRANSPORT = "body"
        pair = login(api_client).json()
        assert set(pair) == {"data"}
        assert set(pair["data"]["tokens"]) == {"access", "refresh"}
        refresh = pair["data"]["tokens"]["refresh"]
        flat = post_json(api_client, "/auth/refresh", {"data.tokens.refresh": refresh})
        assert flat.status_code == 401
        nested = post_json(api_client, "/auth/refresh", {"data": {"tokens": {"refresh": refresh}}})
        assert nested.status_code == 200
        assert nested.json()["data"]["tokens"]["refresh"] != refresh

    def test_mixed_transport_nests_the_access_token(self, api_client, settings):
        settings.AUTHAPI_TOKEN_TRANSPORT = "mixed"
        response = login(api_client)
        assert set(response.json()["data"]["tokens"]) == {"access"}
        assert set(cookies_of(response)) == {"refresh_token"}

    @pytest.mark.parametrize(
        ("access", "refresh", "message"),
        [
            ("data", "data.refresh", "neither inside the other"),
            ("token", "token", "neither inside the other"),
            ("data..access", "refresh", "dotted path"),
            ("", "refresh", "dotted path"),
            ("access", "refresh.", "dotted path"),
        ],
    )
    def test_fields_one_answer_cannot_hold_are_refused(self, settings, access, refresh, message):
        settings.AUTHAPI_ACCESS_FIELD = access
        settings.AUTHAPI_REFRESH_FIELD = refresh
        with pytest.raises(ImproperlyConfigured, match=message):
            assert api_settings.access_field_path


class TestAccessHeader:
    """NocoDB's `xc-auth: <token>`: the named header only, its raw value."""

    @pytest.mark.parametrize("transport", ["cookies", "body", "mixed"])
    def test_only_the_named_header_is_read(self, api_client, settings, transport):
        settings.AUTHAPI_TOKEN_TRANSPORT = transport
        response = login(api_client)
        access = cookies_of(response).get("access_token") or response.json()["accessToken"]
        settings.AUTHAPI_ACCESS_HEADER = "xc-auth"
        api_client.cookies.clear()
        expected = {
            "xc-auth": 200,
            "bearer": 401,
            "cookie": 401,
            "xc-auth with a scheme": 401,
        }
        got = {
            "xc-auth": api_client.get("/users/me", HTTP_XC_AUTH=access).status_code,
            "bearer": api_client.get(
                "/users/me", HTTP_AUTHORIZATION=f"Bearer {access}"
            ).status_code,
            "cookie": api_client.get("/users/me", HTTP_COOKIE=f"access_token={access}").status_code,
            "xc-auth with a scheme": api_client.get(
                "/users/me", HTTP_XC_AUTH=f"Bearer {access}"
            ).status_code,
        }
        assert got == expected

    def test_logout_by_the_access_token_reads_the_named_header(self, api_client, settings):
        settings.AUTHAPI_ACCESS_HEADER = "xc-auth"
        access, refresh = cookies_of(login(api_client)).values()
        api_client.cookies.clear()
        assert api_client.post("/auth/logout", HTTP_XC_AUTH=access).status_code == 200
        again = api_client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh}")
        assert again.status_code == 401

    @pytest.mark.parametrize("name", ["xc auth", "xc-auth:", "é"])
    def test_a_name_that_is_no_header_is_refused(self, settings, name):
        settings.AUTHAPI_ACCESS_HEADER = name
        with pytest.raises(ImproperlyConfigured, match="AUTHAPI_ACCESS_HEADER"):
            assert api_settings.access_header


class TestRefreshInBearer:
    """brocoders/nestjs-boilerplate: `Authorization: Bearer <refresh token>` to refresh."""

    @pytest.fixture(autouse=True)
    def bearer(self, settings):
        settings.AUTHAPI_TOKEN_TRANSPORT = "body"
        settings.AUTHAPI_ACCESS_FIELD = "token"
        settings.AUTHAPI_REFRESH_IN = "bearer"

    def test_refresh_reads_only_the_bearer_header(self, api_client):
        refresh = login(api_client).json()["refreshToken"]
        before = counts()
        in_body = post_json(api_client, "/auth/refresh", {"refreshToken": refresh})
        assert in_body.status_code == 401
        assert in_body.json()["message"] == "Missing refresh token"
        as_cookie = api_client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh}")
        assert as_cookie.json()["message"] == "Missing refresh token"
        refreshed = api_client.post("/auth/refresh", HTTP_AUTHORIZATION=f"Bearer {refresh}")
        assert refreshed.status_code == 200
        assert set(refreshed.json()) == {"token", "refreshToken"}
        reused = api_client.post("/auth/refresh", HTTP_AUTHORIZATION=f"Bearer {refresh}")
        assert reused.status_code == 401
        assert delta(before) == {
            "refresh_calls": 4,
            "refresh": 1,
            "refresh_rejected": 3,
            "spent_presented": 1,
            "reuse_detected": 1,
        }

    def test_in_cookie_transport_too_the_cookie_is_ignored(self, api_client, settings):
        settings.AUTHAPI_TOKEN_TRANSPORT = "cookies"
        refresh = cookies_of(login(api_client))["refresh_token"]
        api_client.cookies.clear()
        as_cookie = api_client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh}")
        assert as_cookie.status_code == 401
        bearer = api_client.post("/auth/refresh", HTTP_AUTHORIZATION=f"Bearer {refresh}")
        assert bearer.status_code == 200

    def test_logout_is_guarded_by_the_access_token(self, api_client):
        pair = login(api_client).json()
        before = counts()
        refresh_as_bearer = f"Bearer {pair['refreshToken']}"
        assert api_client.post("/auth/logout").status_code == 401
        assert (
            api_client.post("/auth/logout", HTTP_AUTHORIZATION=refresh_as_bearer).status_code == 401
        )
        assert (
            post_json(
                api_client, "/auth/logout", {"refreshToken": pair["refreshToken"]}
            ).status_code
            == 401
        )
        assert delta(before) == {}
        out = api_client.post("/auth/logout", HTTP_AUTHORIZATION=f"Bearer {pair['token']}")
        assert out.status_code == 200
        assert delta(before) == {"logout": 1}
        assert TokenFamily.objects.get().revoked_reason == "logout"
        assert (
            api_client.post("/auth/refresh", HTTP_AUTHORIZATION=refresh_as_bearer).status_code
            == 401
        )

    def test_logout_with_an_expired_access_token_is_refused(self, api_client, settings):
        pair = login(api_client).json()
        stale = expired_access(pair["token"], settings.AUTHAPI_JWT_SECRET)
        assert (
            api_client.post("/auth/logout", HTTP_AUTHORIZATION=f"Bearer {stale}").status_code == 401
        )
        assert TokenFamily.objects.get().revoked_at is None

    def test_logout_reads_the_named_access_header(self, api_client, settings):
        settings.AUTHAPI_ACCESS_HEADER = "xc-auth"
        access = login(api_client).json()["token"]
        assert (
            api_client.post("/auth/logout", HTTP_AUTHORIZATION=f"Bearer {access}").status_code
            == 401
        )
        assert api_client.post("/auth/logout", HTTP_XC_AUTH=access).status_code == 200


class TestCookieMaxAge:
    def test_off_cookies_carry_expires_only_also_when_cleared(self, api_client, settings):
        settings.AUTHAPI_COOKIE_MAX_AGE = False
        settings.AUTHAPI_REFRESH_TTL = 3600
        response = login(api_client)
        now = time.time()
        issued = [parse_set_cookie(h) for h in raw_set_cookies(response)]
        assert {c.name for c in issued} == {"access_token", "refresh_token"}
        for cookie in issued:
            assert cookie.attr("Max-Age") is None
        refresh = next(c for c in issued if c.name == "refresh_token")
        expires = parsedate_to_datetime(refresh.attr("Expires")).timestamp()
        assert abs(expires - (now + 3600)) < 5
        out = api_client.post("/auth/logout")
        cleared = [parse_set_cookie(h) for h in raw_set_cookies(out)]
        assert {c.name: c.value for c in cleared} == {"access_token": "", "refresh_token": ""}
        for cookie in cleared:
            assert cookie.attr("Max-Age") is None
            assert parsedate_to_datetime(cookie.attr("Expires")).year == 1970

    def test_on_by_default(self, api_client):
        for header in raw_set_cookies(login(api_client)):
            assert parse_set_cookie(header).attr("Max-Age")


class TestRefreshFormat:
    def test_hex_is_an_opaque_80_hex_digit_token_that_refreshes(self, api_client, settings):
        settings.AUTHAPI_REFRESH_FORMAT = "hex"
        refresh = cookies_of(login(api_client))["refresh_token"]
        assert len(refresh) == 80
        assert set(refresh) <= set("0123456789abcdef")
        api_client.cookies.clear()
        refreshed = api_client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh}")
        assert refreshed.status_code == 200
        assert len(cookies_of(refreshed)["refresh_token"]) == 80

    def test_urlsafe_by_default(self, api_client):
        refresh = cookies_of(login(api_client))["refresh_token"]
        assert len(refresh) == 43
        assert not set(refresh) <= set("0123456789abcdef")


class TestLoginFailureStatus:
    def wrong(self, api_client, email=ADMIN.email):
        return post_json(api_client, "/auth/login", {"email": email, "password": "wrong"})

    def test_422_answers_brocoders_error_body(self, api_client, settings):
        settings.AUTHAPI_LOGIN_FAILURE_STATUS = 422
        response = self.wrong(api_client)
        assert response.status_code == 422
        assert response.json() == {"status": 422, "errors": {"password": "incorrectPassword"}}
        unknown = self.wrong(api_client, "nobody@example.com")
        assert unknown.json() == {"status": 422, "errors": {"email": "notFound"}}

    @pytest.mark.parametrize("status", [400, 403])
    def test_others_answer_the_nestjs_error_shape(self, api_client, settings, status):
        settings.AUTHAPI_LOGIN_FAILURE_STATUS = status
        response = self.wrong(api_client)
        assert response.status_code == status
        assert response.json()["statusCode"] == status
        assert response.json()["message"] == "Invalid credentials"

    def test_throttling_stays_429(self, api_client, settings):
        settings.AUTHAPI_LOGIN_FAILURE_STATUS = 422
        settings.AUTHAPI_LOGIN_MAX_FAILURES_PER_ACCOUNT = 2
        statuses = [self.wrong(api_client).status_code for _ in range(3)]
        assert statuses == [422, 422, 429]

    def test_a_malformed_sign_in_is_still_400(self, api_client, settings):
        settings.AUTHAPI_LOGIN_FAILURE_STATUS = 422
        assert post_json(api_client, "/auth/login", {"email": ADMIN.email}).status_code == 400


class TestMeGuest:
    @pytest.fixture(autouse=True)
    def guest(self, settings):
        settings.AUTHAPI_ME_GUEST = True

    def test_without_a_valid_token_me_answers_a_guest_and_counts_a_rejection(
        self, api_client, settings
    ):
        access = cookies_of(login(api_client))["access_token"]
        stale = expired_access(access, settings.AUTHAPI_JWT_SECRET)
        api_client.cookies.clear()
        before = counts()
        for cookie in ("", "access_token=garbage", f"access_token={stale}"):
            response = api_client.get("/users/me", HTTP_COOKIE=cookie)
            assert response.status_code == 200
            assert response.json() == {"roles": {"guest": True}}
        assert delta(before) == {"me_rejected": 3}
        signed_in = api_client.get("/users/me", HTTP_COOKIE=f"access_token={access}")
        assert signed_in.json()["id"]
        assert delta(before) == {"me_rejected": 3, "me": 1}

    def test_a_revoked_sign_in_reads_as_a_guest(self, api_client):
        access = cookies_of(login(api_client))["access_token"]
        api_client.post("/auth/logout")
        api_client.cookies.clear()
        response = api_client.get("/users/me", HTTP_COOKIE=f"access_token={access}")
        assert response.json() == {"roles": {"guest": True}}


def me_body(api_client) -> dict:
    access = cookies_of(login(api_client))["access_token"]
    api_client.cookies.clear()
    return api_client.get("/users/me", HTTP_COOKIE=f"access_token={access}").json()


class TestMeRoles:
    @pytest.mark.parametrize(
        ("shape", "expected"),
        [
            ("list", {"roles": ["admin"]}),
            ("string", {"roles": "admin"}),
            ("object", {"role": {"id": 1, "name": "admin"}}),
            ("objects", {"roles": [{"id": 1, "name": "admin"}]}),
            ("map", {"roles": {"admin": True}}),
            ("none", {}),
        ],
    )
    def test_me_spells_the_roles_as_configured(self, api_client, settings, shape, expected):
        settings.AUTHAPI_ME_ROLES = shape
        body = me_body(api_client)
        roles = {key: body.pop(key) for key in ("roles", "role") if key in body}
        assert roles == expected
        assert set(body) == {"id", "firstName", "lastName", "email"}

    def test_roles_only_in_the_token_still_reach_its_claims(self, api_client, settings):
        settings.AUTHAPI_ME_ROLES = "none"
        access = cookies_of(login(api_client))["access_token"]
        assert jwt.decode(access, options={"verify_signature": False})["roles"] == ["admin"]

    def test_role_ids_are_stable_and_the_demo_ones_fixed(self, api_client, settings):
        settings.AUTHAPI_ME_ROLES = "objects"
        ApiUser.objects.filter(email=ADMIN.email).update(roles=["admin", "viewer", "auditor"])
        ids = [role["id"] for role in me_body(api_client)["roles"]]
        assert ids[:2] == [1, 3]
        assert ids[2] not in (1, 2, 3)
        assert [role["id"] for role in me_body(api_client)["roles"]] == ids

    def test_an_account_without_roles(self, api_client, settings):
        ApiUser.objects.filter(email=ADMIN.email).update(roles=[])
        settings.AUTHAPI_ME_ROLES = "object"
        assert me_body(api_client)["role"] is None
        settings.AUTHAPI_ME_ROLES = "map"
        assert me_body(api_client)["roles"] == {}

    def test_the_login_answers_profile_has_the_same_shape(self, api_client, settings):
        settings.AUTHAPI_ME_ROLES = "map"
        assert login(api_client).json()["roles"] == {"admin": True}


class TestRoleCase:
    def test_title_spells_roles_in_me_and_in_the_token(self, api_client, settings):
        settings.AUTHAPI_ROLE_CASE = "title"
        response = login(api_client, EVALUATOR)
        access = cookies_of(response)["access_token"]
        claims = jwt.decode(access, settings.AUTHAPI_JWT_SECRET, algorithms=["HS256"])
        assert claims["roles"] == ["Evaluator"]
        assert set(claims) == {"sub", "sid", "email", "roles", "iat", "exp", "jti", "typ"}
        api_client.cookies.clear()
        me = api_client.get("/users/me", HTTP_COOKIE=f"access_token={access}")
        assert me.json()["roles"] == ["Evaluator"]
        settings.AUTHAPI_ME_ROLES = "object"
        me = api_client.get("/users/me", HTTP_COOKIE=f"access_token={access}")
        assert me.json()["role"] == {"id": 2, "name": "Evaluator"}

    def test_as_is_by_default(self, api_client):
        assert me_body(api_client)["roles"] == ["admin"]


class TestLogoutStatus:
    def test_201_answers_ok(self, api_client, settings):
        settings.AUTHAPI_LOGOUT_STATUS = 201
        login(api_client)
        response = api_client.post("/auth/logout")
        assert response.status_code == 201
        assert response.json() == {"ok": True}

    def test_204_answers_no_body_but_still_revokes_and_clears(self, api_client, settings):
        settings.AUTHAPI_LOGOUT_STATUS = 204
        refresh = cookies_of(login(api_client))["refresh_token"]
        response = api_client.post("/auth/logout")
        assert response.status_code == 204
        assert response.content == b""
        assert "Content-Type" not in response
        assert "Content-Length" not in response
        assert cookies_of(response) == {"access_token": "", "refresh_token": ""}
        api_client.cookies.clear()
        again = api_client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh}")
        assert again.status_code == 401


class TestLoginAnswerUser:
    @pytest.fixture(autouse=True)
    def brocoders(self, settings):
        settings.AUTHAPI_LOGIN_ANSWER_USER = True
        settings.AUTHAPI_ACCESS_FIELD = "token"

    @pytest.mark.parametrize("transport", ["body", "mixed"])
    def test_login_adds_token_expires_and_the_user(self, api_client, settings, transport):
        settings.AUTHAPI_TOKEN_TRANSPORT = transport
        settings.AUTHAPI_ME_ROLES = "object"
        body = login(api_client).json()
        tokens = {"token", "refreshToken"} if transport == "body" else {"token"}
        assert set(body) == tokens | {"tokenExpires", "user"}
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert body["tokenExpires"] == claims["exp"] * 1000
        assert body["user"]["email"] == ADMIN.email
        assert body["user"]["role"] == {"id": 1, "name": "admin"}

    def test_refresh_adds_token_expires_only(self, api_client, settings):
        settings.AUTHAPI_TOKEN_TRANSPORT = "body"
        refresh = login(api_client).json()["refreshToken"]
        body = post_json(api_client, "/auth/refresh", {"refreshToken": refresh}).json()
        assert set(body) == {"token", "refreshToken", "tokenExpires"}

    def test_nested_they_sit_next_to_the_access_token(self, api_client, settings):
        settings.AUTHAPI_TOKEN_TRANSPORT = "body"
        settings.AUTHAPI_ACCESS_FIELD = "data.token"
        settings.AUTHAPI_REFRESH_FIELD = "data.refreshToken"
        body = login(api_client).json()
        assert set(body["data"]) == {"token", "refreshToken", "tokenExpires", "user"}

    def test_cookie_transport_keeps_the_profile_answer(self, api_client):
        assert set(login(api_client).json()) == {"id", "firstName", "lastName", "email", "roles"}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("AUTHAPI_TOKEN_TRANSPORT", "header"),
        ("AUTHAPI_REFRESH_IN", "query"),
        ("AUTHAPI_REFRESH_FORMAT", "base64"),
        ("AUTHAPI_LOGIN_FAILURE_STATUS", 418),
        ("AUTHAPI_LOGIN_FAILURE_STATUS", "422"),
        ("AUTHAPI_ME_ROLES", "set"),
        ("AUTHAPI_ROLE_CASE", "upper"),
        ("AUTHAPI_LOGOUT_STATUS", 202),
    ],
)
def test_a_value_outside_a_switchs_choices_is_refused_by_name(settings, setting, value):
    setattr(settings, setting, value)
    attribute = setting.removeprefix("AUTHAPI_").lower()
    with pytest.raises(ImproperlyConfigured, match=f"{setting} must be one of"):
        assert getattr(api_settings, attribute)


class TestBackendsInTheWild:
    """Whole sign-in lifetimes against two real backends' sets of switches."""

    def test_nocodb(self, api_client, settings):
        settings.AUTHAPI_TOKEN_TRANSPORT = "mixed"
        settings.AUTHAPI_ACCESS_FIELD = "token"
        settings.AUTHAPI_ACCESS_HEADER = "xc-auth"
        settings.AUTHAPI_COOKIE_MAX_AGE = False
        settings.AUTHAPI_REFRESH_FORMAT = "hex"
        settings.AUTHAPI_ME_ROLES = "map"
        settings.AUTHAPI_ME_GUEST = True
        settings.AUTHAPI_LOGIN_PATH = "/api/v1/auth/user/signin"
        before = counts()
        response = login_at(api_client, "/api/v1/auth/user/signin")
        access = response.json()["token"]
        api_client.cookies.clear()
        assert api_client.get("/users/me").json() == {"roles": {"guest": True}}
        assert api_client.get("/users/me", HTTP_XC_AUTH=access).json()["roles"] == {"admin": True}
        refresh = cookies_of(response)["refresh_token"]
        refreshed = api_client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh}")
        assert len(cookies_of(refreshed)["refresh_token"]) == 80
        reused = api_client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh}")
        assert reused.status_code == 401
        assert delta(before) == {
            "login_calls": 1,
            "login": 1,
            "me": 1,
            "me_rejected": 1,
            "refresh_calls": 2,
            "refresh": 1,
            "refresh_rejected": 1,
            "spent_presented": 1,
            "reuse_detected": 1,
        }

    def test_brocoders(self, api_client, settings):
        for name, value in V1.items():
            setattr(settings, name, value)
        settings.AUTHAPI_TOKEN_TRANSPORT = "body"
        settings.AUTHAPI_ACCESS_FIELD = "token"
        settings.AUTHAPI_REFRESH_IN = "bearer"
        settings.AUTHAPI_LOGIN_FAILURE_STATUS = 422
        settings.AUTHAPI_ME_ROLES = "object"
        settings.AUTHAPI_ROLE_CASE = "title"
        settings.AUTHAPI_LOGOUT_STATUS = 204
        settings.AUTHAPI_LOGIN_ANSWER_USER = True
        before = counts()
        wrong = post_json(
            api_client, V1["AUTHAPI_LOGIN_PATH"], {"email": ADMIN.email, "password": "x"}
        )
        assert wrong.json()["errors"] == {"password": "incorrectPassword"}
        pair = login_at(api_client, V1["AUTHAPI_LOGIN_PATH"]).json()
        assert pair["user"]["role"] == {"id": 1, "name": "Admin"}
        refreshed = api_client.post(
            V1["AUTHAPI_REFRESH_PATH"], HTTP_AUTHORIZATION=f"Bearer {pair['refreshToken']}"
        ).json()
        me = api_client.get(
            V1["AUTHAPI_ME_PATH"], HTTP_AUTHORIZATION=f"Bearer {refreshed['token']}"
        )
        assert me.json()["role"]["name"] == "Admin"
        out = api_client.post(
            V1["AUTHAPI_LOGOUT_PATH"], HTTP_AUTHORIZATION=f"Bearer {refreshed['token']}"
        )
        assert out.status_code == 204
        after_logout = api_client.post(
            V1["AUTHAPI_REFRESH_PATH"], HTTP_AUTHORIZATION=f"Bearer {refreshed['refreshToken']}"
        )
        assert after_logout.status_code == 401
        assert delta(before) == {
            "login_calls": 2,
            "login_failed": 1,
            "login": 1,
            "refresh_calls": 2,
            "refresh": 1,
            "refresh_rejected": 1,
            "me": 1,
            "logout": 1,
        }
