"""The reference auth API's contract (SPEC §1-2), over Django's test client.

The client gets the API's own URLconf and no middleware, exactly as
`runauthapi` serves it. Raw Set-Cookie headers are read the way the WSGI
handler writes them: one `Morsel.output(header="")` per cookie.
"""

import json
import time
from datetime import timedelta
from email.utils import parsedate_to_datetime
from types import SimpleNamespace

import jwt
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.models import F

from authapi import faults, stats, views
from authapi.conf import api_settings
from authapi.demo import DEMO_USERS
from authapi.models import ApiUser, RefreshToken, TokenFamily
from tests.cookies import parse_set_cookie

ADMIN = DEMO_USERS[0]
EVALUATOR = DEMO_USERS[1]


@pytest.fixture(autouse=True)
def _no_runtime_faults():
    """Faults live in this process's memory: never leak one into the next test."""
    faults.reset()
    yield
    faults.reset()


def raw_set_cookies(response) -> list[str]:
    return [morsel.output(header="") for morsel in response.cookies.values()]


def post_json(client, path, payload, **extra):
    body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    return client.post(path, body, content_type="application/json", **extra)


def login(client, user=ADMIN, **extra):
    return post_json(
        client, "/auth/login", {"email": user.email, "password": user.password}, **extra
    )


def tokens_of(response) -> tuple[str, str]:
    cookies = {c.name: c.value for c in map(parse_set_cookie, raw_set_cookies(response))}
    return cookies["access_token"], cookies["refresh_token"]


def refresh_with(client, refresh_token):
    client.cookies.clear()
    return client.post("/auth/refresh", HTTP_COOKIE=f"refresh_token={refresh_token}")


def me_with(client, access_token, *, bearer=False):
    client.cookies.clear()
    if bearer:
        return client.get("/users/me", HTTP_AUTHORIZATION=f"Bearer {access_token}")
    return client.get("/users/me", HTTP_COOKIE=f"access_token={access_token}")


def assert_json_error(response, status):
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["statusCode"] == status
    assert body["message"]
    return body


class TestLogin:
    def test_sets_exactly_two_express_style_cookies(self, api_client):
        before = time.time()
        response = login(api_client)

        assert response.status_code == 201
        headers = raw_set_cookies(response)
        assert len(headers) == 2
        cookies = {c.name: c for c in map(parse_set_cookie, headers)}
        assert set(cookies) == {"access_token", "refresh_token"}
        for name, ttl in (("access_token", 1800), ("refresh_token", 604800)):
            cookie = cookies[name]
            assert cookie.value
            # Express's order and casing, attribute names exactly as it writes them.
            assert cookie.order == ["Max-Age", "Path", "Expires", "HttpOnly", "Secure", "SameSite"]
            assert cookie.attributes["Max-Age"] == str(ttl)
            assert cookie.attributes["Path"] == "/"
            assert cookie.attributes["SameSite"] == "None"
            expires = cookie.attributes["Expires"]
            assert "," in expires
            assert abs(parsedate_to_datetime(expires).timestamp() - (before + ttl)) < 5

    def test_access_token_is_a_signed_jwt_with_exp(self, api_client, settings):
        access, _ = tokens_of(login(api_client))
        claims = jwt.decode(access, settings.AUTHAPI_JWT_SECRET, algorithms=["HS256"])
        assert claims["exp"] - claims["iat"] == 1800
        assert claims["email"] == ADMIN.email

    def test_refresh_token_is_stored_only_as_a_hash(self, api_client):
        _, refresh = tokens_of(login(api_client))
        stored = list(RefreshToken.objects.values_list("token_hash", flat=True))
        assert len(stored) == 1
        assert refresh not in stored[0]
        assert len(stored[0]) == 64

    def test_body_is_the_profile(self, api_client):
        body = login(api_client).json()
        assert body["email"] == ADMIN.email
        assert body["roles"] == ["admin"]

    @pytest.mark.parametrize("email", [ADMIN.email, "nobody@example.com"])
    def test_wrong_password_and_unknown_email_look_the_same(self, api_client, email):
        response = post_json(api_client, "/auth/login", {"email": email, "password": "wrong"})
        body = assert_json_error(response, 401)
        assert body["message"] == "Invalid credentials"
        assert not response.cookies

    def test_email_is_case_insensitive(self, api_client):
        response = post_json(
            api_client,
            "/auth/login",
            {"email": "  Admin@Example.COM ", "password": ADMIN.password},
        )
        assert response.status_code == 201


class TestMe:
    def test_with_access_cookie(self, api_client):
        access, _ = tokens_of(login(api_client))
        response = me_with(api_client, access)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"id", "firstName", "lastName", "email", "roles"}
        assert (body["firstName"], body["lastName"]) == (ADMIN.first_name, ADMIN.last_name)
        assert body["roles"] == list(ADMIN.roles)

    def test_with_bearer_header(self, api_client):
        access, _ = tokens_of(login(api_client, EVALUATOR))
        response = me_with(api_client, access, bearer=True)
        assert response.status_code == 200
        assert response.json()["email"] == EVALUATOR.email

    def test_without_token(self, api_client):
        api_client.cookies.clear()
        assert_json_error(api_client.get("/users/me"), 401)

    @pytest.mark.parametrize(
        "forge",
        [
            lambda claims: jwt.encode(claims, "another-secret-of-enough-length-32b", "HS256"),
            lambda claims: jwt.encode(claims, None, algorithm="none"),
            lambda claims: "not.a.jwt",
            lambda claims: "x" * 5000,
        ],
        ids=["wrong-key", "alg-none", "garbage", "huge"],
    )
    def test_forged_tokens_are_refused(self, api_client, settings, forge):
        access, _ = tokens_of(login(api_client))
        claims = jwt.decode(access, settings.AUTHAPI_JWT_SECRET, algorithms=["HS256"])
        assert_json_error(me_with(api_client, forge(claims)), 401)

    def test_expired_access_token(self, api_client, settings):
        settings.AUTHAPI_ACCESS_TTL = 1
        access, _ = tokens_of(login(api_client))
        assert me_with(api_client, access).status_code == 200
        settings.AUTHAPI_CLOCK_OFFSET = 1.2  # 1.2 s later on the API's clock
        assert_json_error(me_with(api_client, access), 401)


class TestRefresh:
    def test_rotates_both_tokens_and_spends_the_old_one(self, api_client):
        access1, refresh1 = tokens_of(login(api_client))

        response = refresh_with(api_client, refresh1)
        assert response.status_code == 200
        assert len(raw_set_cookies(response)) == 2
        access2, refresh2 = tokens_of(response)
        assert refresh2 != refresh1
        assert access2 != access1
        assert me_with(api_client, access2).status_code == 200

        assert_json_error(refresh_with(api_client, refresh1), 401)

    def test_reuse_of_a_spent_token_revokes_the_family(self, api_client):
        _, refresh1 = tokens_of(login(api_client))
        other_access, other_refresh = tokens_of(login(api_client))  # another sign-in
        access2, refresh2 = tokens_of(refresh_with(api_client, refresh1))
        reuse_before = stats.snapshot()["reuse_detected"]

        assert_json_error(refresh_with(api_client, refresh1), 401)

        assert stats.snapshot()["reuse_detected"] == reuse_before + 1
        # The newest token of the family and its access token are dead too.
        assert_json_error(refresh_with(api_client, refresh2), 401)
        assert_json_error(me_with(api_client, access2), 401)
        assert TokenFamily.objects.filter(revoked_reason="reuse").count() == 1
        # The other sign-in of the same user is untouched.
        assert me_with(api_client, other_access).status_code == 200
        assert refresh_with(api_client, other_refresh).status_code == 200

    def test_expired_refresh_token(self, api_client, settings):
        settings.AUTHAPI_REFRESH_TTL = 1
        _, refresh = tokens_of(login(api_client))
        # 1.2 s later: the stored expiry is read on the database's clock, so move the row.
        RefreshToken.objects.update(expires_at=F("expires_at") - timedelta(seconds=1.2))
        assert_json_error(refresh_with(api_client, refresh), 401)
        assert not TokenFamily.objects.filter(revoked_at__isnull=False).exists()

    @pytest.mark.parametrize("cookie", ["", "refresh_token=", "refresh_token=unknown-token"])
    def test_missing_or_unknown_token(self, api_client, cookie):
        api_client.cookies.clear()
        assert_json_error(api_client.post("/auth/refresh", HTTP_COOKIE=cookie), 401)

    def test_inactive_user_cannot_refresh(self, api_client):
        _, refresh = tokens_of(login(api_client))
        ApiUser.objects.filter(email=ADMIN.email).update(is_active=False)
        assert_json_error(refresh_with(api_client, refresh), 401)


class TestLogout:
    def test_revokes_and_clears_cookies(self, api_client):
        access, refresh = tokens_of(login(api_client))
        api_client.cookies.clear()
        response = api_client.post(
            "/auth/logout", HTTP_COOKIE=f"access_token={access}; refresh_token={refresh}"
        )

        assert response.status_code == 200
        cleared = [parse_set_cookie(h) for h in raw_set_cookies(response)]
        assert {c.name for c in cleared} == {"access_token", "refresh_token"}
        for cookie in cleared:
            assert cookie.value == ""
            assert cookie.attributes["Max-Age"] == "0"
            assert parsedate_to_datetime(cookie.attributes["Expires"]).year == 1970
        assert_json_error(refresh_with(api_client, refresh), 401)
        assert_json_error(me_with(api_client, access), 401)

    def test_with_only_the_access_token_revokes_its_family(self, api_client):
        access, refresh = tokens_of(login(api_client))
        api_client.cookies.clear()
        response = api_client.post("/auth/logout", HTTP_AUTHORIZATION=f"Bearer {access}")
        assert response.status_code == 200
        assert_json_error(refresh_with(api_client, refresh), 401)

    def test_without_cookies_is_harmless(self, api_client):
        api_client.cookies.clear()
        assert api_client.post("/auth/logout").status_code == 200


class TestThrottling:
    def test_per_account_answers_429_with_retry_after(self, api_client, settings):
        settings.AUTHAPI_LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
        settings.AUTHAPI_LOGIN_WINDOW = 120
        wrong = {"email": ADMIN.email, "password": "wrong"}
        for _ in range(3):
            assert post_json(api_client, "/auth/login", wrong).status_code == 401

        response = post_json(api_client, "/auth/login", wrong)
        assert_json_error(response, 429)
        assert 1 <= int(response["Retry-After"]) <= 120
        # Locked even with the right password, until the window passes.
        assert login(api_client).status_code == 429
        # Other accounts are not affected.
        assert login(api_client, EVALUATOR).status_code == 201

    def test_success_clears_account_failures(self, api_client, settings):
        settings.AUTHAPI_LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
        wrong = {"email": ADMIN.email, "password": "wrong"}
        for _ in range(2):
            post_json(api_client, "/auth/login", wrong)
        assert login(api_client).status_code == 201
        for _ in range(2):
            assert post_json(api_client, "/auth/login", wrong).status_code == 401

    def test_per_ip_counts_failures_across_accounts(self, api_client, settings):
        settings.AUTHAPI_LOGIN_MAX_FAILURES_PER_IP = 3
        attacker = {"HTTP_X_FORWARDED_FOR": "203.0.113.7"}
        for n in range(3):
            payload = {"email": f"guess{n}@example.com", "password": "x"}
            assert post_json(api_client, "/auth/login", payload, **attacker).status_code == 401

        response = login(api_client, **attacker)
        assert_json_error(response, 429)
        assert int(response["Retry-After"]) >= 1
        assert login(api_client, HTTP_X_FORWARDED_FOR="198.51.100.9").status_code == 201

    def test_forwarded_for_is_ignored_from_untrusted_peers(self, api_client, settings):
        settings.AUTHAPI_LOGIN_MAX_FAILURES_PER_IP = 2
        settings.AUTHAPI_TRUSTED_PROXIES = []
        for n in range(2):
            post_json(
                api_client,
                "/auth/login",
                {"email": f"g{n}@example.com", "password": "x"},
                HTTP_X_FORWARDED_FOR=f"192.0.2.{n}",
            )
        # Both failures were counted against the real peer, 127.0.0.1.
        assert login(api_client, HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 429


class TestBadInput:
    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"\xff\xfe\x00garbage",
            b"",
            b"[]",
            b"null",
            b'"a string"',
            {"email": ADMIN.email},
            {"password": ADMIN.password},
            {"email": 12, "password": ADMIN.password},
            {"email": ADMIN.email, "password": ["x"]},
            {"email": ADMIN.email, "password": None},
            {"email": "   ", "password": "x"},
            {"email": ADMIN.email, "password": "p" * 10_240},
            {"email": "e" * 300 + "@example.com", "password": "x"},
        ],
    )
    def test_malformed_login_answers_400_json(self, api_client, body):
        response = post_json(api_client, "/auth/login", body)
        assert_json_error(response, 400)
        assert not response.cookies

    def test_ten_kilobyte_password_says_why(self, api_client):
        response = post_json(
            api_client, "/auth/login", {"email": ADMIN.email, "password": "p" * 10_240}
        )
        assert response.json()["message"] == [
            "password must be shorter than or equal to 1024 characters"
        ]

    def test_oversized_body_answers_413_json(self, api_client, settings):
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
        response = post_json(api_client, "/auth/login", {"email": "a", "password": "p" * 4096})
        assert_json_error(response, 413)

    @pytest.mark.parametrize(
        ("method", "path"),
        [("get", "/auth/login"), ("get", "/auth/refresh"), ("post", "/users/me")],
    )
    def test_wrong_method_answers_405_json(self, api_client, method, path):
        response = getattr(api_client, method)(path)
        assert_json_error(response, 405)

    @pytest.mark.parametrize("path", ["/", "/admin/", "/accounts/login/", "/auth/nope"])
    def test_paths_outside_the_api_answer_404_json(self, api_client, path):
        assert_json_error(api_client.get(path), 404)

    def test_stats_are_hidden_unless_enabled(self, api_client, settings):
        settings.AUTHAPI_EXPOSE_STATS = False
        assert_json_error(api_client.get("/_stats"), 404)
        settings.AUTHAPI_EXPOSE_STATS = True
        assert set(api_client.get("/_stats").json()) >= {"refresh", "reuse_detected"}


def cookies_of(response) -> dict:
    return {c.name: c for c in map(parse_set_cookie, raw_set_cookies(response))}


def replace_sleep(monkeypatch, sleep) -> None:
    """Make the refresh view call `sleep(seconds)` instead of sleeping."""
    monkeypatch.setattr(views, "time", SimpleNamespace(sleep=sleep))


class TestRefreshCookiePath:
    @pytest.fixture
    def scoped(self, settings):
        settings.AUTHAPI_REFRESH_COOKIE_PATH = "/auth/refresh"

    def test_login_scopes_only_the_refresh_cookie(self, api_client, scoped):
        cookies = cookies_of(login(api_client))
        assert cookies["refresh_token"].attributes["Path"] == "/auth/refresh"
        assert cookies["access_token"].attributes["Path"] == "/"
        # Still Express's attribute order, only the value changed.
        assert cookies["refresh_token"].order == [
            "Max-Age",
            "Path",
            "Expires",
            "HttpOnly",
            "Secure",
            "SameSite",
        ]

    def test_refresh_reads_the_cookie_and_rewrites_it_scoped(self, api_client, scoped):
        _, refresh = tokens_of(login(api_client))
        response = refresh_with(api_client, refresh)
        assert response.status_code == 200
        cookies = cookies_of(response)
        assert cookies["refresh_token"].attributes["Path"] == "/auth/refresh"
        assert cookies["refresh_token"].value not in ("", refresh)
        assert cookies["access_token"].attributes["Path"] == "/"

    def test_logout_clears_it_on_the_same_path(self, api_client, scoped):
        access, refresh = tokens_of(login(api_client))
        api_client.cookies.clear()
        # A browser sends no scoped refresh cookie to /auth/logout, only the access one.
        response = api_client.post("/auth/logout", HTTP_COOKIE=f"access_token={access}")
        assert response.status_code == 200
        cleared = cookies_of(response)
        assert cleared["refresh_token"].attributes["Path"] == "/auth/refresh"
        assert cleared["refresh_token"].attributes["Max-Age"] == "0"
        assert cleared["access_token"].attributes["Path"] == "/"
        assert_json_error(refresh_with(api_client, refresh), 401)

    def test_read_at_use_time(self, api_client, settings):
        settings.AUTHAPI_REFRESH_COOKIE_PATH = "/api/v1/auth/refresh"
        assert cookies_of(login(api_client))["refresh_token"].attributes["Path"] == (
            "/api/v1/auth/refresh"
        )
        settings.AUTHAPI_REFRESH_COOKIE_PATH = "/"
        assert cookies_of(login(api_client))["refresh_token"].attributes["Path"] == "/"

    @pytest.mark.parametrize(
        "path", ["auth/refresh", "", "/auth; Domain=evil.test", "/auth refresh", "/a\r\nX: y"]
    )
    def test_a_path_that_would_break_the_header_is_refused(self, settings, path):
        settings.AUTHAPI_REFRESH_COOKIE_PATH = path
        with pytest.raises(ImproperlyConfigured, match="AUTHAPI_REFRESH_COOKIE_PATH"):
            api_settings.refresh_cookie_path  # noqa: B018


class TestFaults:
    @pytest.fixture
    def exposed(self, settings):
        settings.AUTHAPI_EXPOSE_STATS = True

    @pytest.fixture
    def sleeps(self, monkeypatch):
        """Record what the refresh view sleeps instead of sleeping."""
        slept = []
        replace_sleep(monkeypatch, slept.append)
        return slept

    @pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
    @pytest.mark.parametrize("path", ["/_faults", "/_stats"])
    def test_hidden_for_every_method_unless_enabled(self, api_client, settings, method, path):
        settings.AUTHAPI_EXPOSE_STATS = False
        body = json.dumps({"refresh_delay": 5})
        response = api_client.generic(method, path, body, content_type="application/json")
        assert_json_error(response, 404)
        assert faults.refresh_delay() == 0

    def test_get_reports_the_setting_until_overridden(self, api_client, settings, exposed):
        settings.AUTHAPI_REFRESH_DELAY = 0.25
        assert api_client.get("/_faults").json()["refresh_delay"] == 0.25

        response = post_json(api_client, "/_faults", {"refresh_delay": 1.5})
        assert response.status_code == 200
        assert response.json()["refresh_delay"] == 1.5
        assert api_client.get("/_faults").json()["refresh_delay"] == 1.5
        # The override wins over the setting, also when the setting changes.
        settings.AUTHAPI_REFRESH_DELAY = 0.75
        assert api_client.get("/_faults").json()["refresh_delay"] == 1.5

        restored = post_json(api_client, "/_faults", {"refresh_delay": None}).json()
        assert restored["refresh_delay"] == 0.75

    def test_zero_overrides_a_configured_delay(self, api_client, settings, exposed, sleeps):
        settings.AUTHAPI_REFRESH_DELAY = 3
        _, refresh = tokens_of(login(api_client))
        post_json(api_client, "/_faults", {"refresh_delay": 0})
        assert refresh_with(api_client, refresh).status_code == 200
        assert sleeps == []

    def test_refresh_sleeps_the_runtime_value(self, api_client, exposed, sleeps):
        _, refresh = tokens_of(login(api_client))
        post_json(api_client, "/_faults", {"refresh_delay": 0.4})
        assert refresh_with(api_client, refresh).status_code == 200
        assert sleeps == [0.4]

    def test_the_delay_really_stalls_the_refresh(self, api_client, exposed):
        _, refresh = tokens_of(login(api_client))
        post_json(api_client, "/_faults", {"refresh_delay": 0.3})
        started = time.monotonic()
        response = refresh_with(api_client, refresh)
        assert time.monotonic() - started >= 0.3
        assert response.status_code == 200

    @pytest.mark.parametrize(
        "body",
        [
            {"refresh_delay": -1},
            {"refresh_delay": "1"},
            {"refresh_delay": True},
            {"refresh_delay": [1]},
            {"refresh_delay": 3600},
            {"refresh_dealy": 1},
            {"refresh_delay": 0.2, "unknown": 1},
            b"[]",
            b"not json",
            b"",
        ],
    )
    def test_bad_values_are_refused_and_change_nothing(self, api_client, exposed, body):
        post_json(api_client, "/_faults", {"refresh_delay": 0.1})
        assert_json_error(post_json(api_client, "/_faults", body), 400)
        assert api_client.get("/_faults").json()["refresh_delay"] == 0.1

    def test_other_methods_answer_405(self, api_client, exposed):
        response = api_client.delete("/_faults")
        assert_json_error(response, 405)
        assert response["Allow"] == "GET, POST"


class TestStats:
    def test_reports_refresh_reuse_and_refresh_calls(self, api_client, settings):
        settings.AUTHAPI_EXPOSE_STATS = True
        assert set(api_client.get("/_stats").json()) >= {
            "refresh",
            "reuse_detected",
            "refresh_calls",
        }

    def test_refresh_calls_counts_every_refresh_that_reached_the_view(self, api_client):
        _, refresh = tokens_of(login(api_client))
        before = stats.snapshot()

        assert refresh_with(api_client, refresh).status_code == 200
        assert_json_error(refresh_with(api_client, refresh), 401)  # reuse
        assert_json_error(refresh_with(api_client, "unknown"), 401)
        api_client.cookies.clear()
        assert_json_error(api_client.post("/auth/refresh"), 401)  # no cookie
        assert_json_error(api_client.get("/auth/refresh"), 405)  # never reached the view

        after = stats.snapshot()
        assert after["refresh_calls"] - before["refresh_calls"] == 4
        assert after["refresh"] - before["refresh"] == 1
        assert after["refresh_rejected"] - before["refresh_rejected"] == 3
        assert after["reuse_detected"] - before["reuse_detected"] == 1

    def test_refresh_calls_counts_before_the_delay(self, api_client, settings, monkeypatch):
        counted = []
        replace_sleep(monkeypatch, lambda _: counted.append(stats.snapshot()["refresh_calls"]))
        settings.AUTHAPI_REFRESH_DELAY = 0.5
        _, refresh = tokens_of(login(api_client))
        before = stats.snapshot()["refresh_calls"]
        refresh_with(api_client, refresh)
        assert counted == [before + 1]
