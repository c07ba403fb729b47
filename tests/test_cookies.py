"""The cookie relay: parsing each backend Set-Cookie and writing it on our response."""

import logging
from datetime import UTC, datetime

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from accounts import cookies
from accounts.cookies import CookieParseError, parse_set_cookie, parse_set_cookies
from tests.fakes import express_cookie

EXPRESS_PAIR = [
    express_cookie("access_token", "aaa.bbb.ccc", 1800),
    express_cookie("refresh_token", "r1-token", 604800),
]


def relayed(headers, **request_kwargs) -> HttpResponse:
    request = RequestFactory().get("/")
    cookies.remember(request, parse_set_cookies(headers))
    response = HttpResponse()
    cookies.relay(request, response)
    return response


class TestParse:
    def test_expires_with_a_comma_stays_inside_one_cookie(self):
        cookie = parse_set_cookie(EXPRESS_PAIR[0])
        assert (cookie.name, cookie.value, cookie.max_age, cookie.path) == (
            "access_token",
            "aaa.bbb.ccc",
            1800,
            "/",
        )
        assert cookie.httponly is True
        assert cookie.expires.tzinfo is not None

    def test_attribute_names_are_case_insensitive(self):
        cookie = parse_set_cookie(
            "access_token=v; mAx-AgE=60; PATH=/app; eXpIrEs=Fri, 27 Nov 2026 10:31:00 GMT; "
            "HTTPONLY; secure; SAMESITE=none"
        )
        assert cookie.max_age == 60
        assert cookie.path == "/app"
        assert cookie.httponly is True
        assert cookie.expires == datetime(2026, 11, 27, 10, 31, tzinfo=UTC)

    def test_max_age_wins_over_expires(self):
        cookie = parse_set_cookie("a=b; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=60")
        assert cookie.deletes is False

    @pytest.mark.parametrize(
        "header",
        [
            "",
            "novalue",
            "=value",
            "bad name=v",
            "name=has space",
            'name=has"quote',
            "name=v; Max-Age=soon",
            "name=v; Expires=not a date",
            "name=\x00",
            "name=é",
            "a=" + "x" * 9000,
        ],
    )
    def test_unusable_headers_raise(self, header):
        with pytest.raises(CookieParseError):
            parse_set_cookie(header)

    def test_errors_never_carry_the_value(self):
        with pytest.raises(CookieParseError) as info:
            parse_set_cookie("access_token=secret value")
        assert "secret" not in str(info.value)


class TestRelay:
    def test_two_express_headers_become_two_cookies(self, settings):
        settings.AUTH_COOKIE_SECURE = True
        settings.AUTH_COOKIE_SAMESITE = "Lax"
        response = relayed(EXPRESS_PAIR)

        assert set(response.cookies) == {"access_token", "refresh_token"}
        access = response.cookies["access_token"]
        assert access.value == "aaa.bbb.ccc"
        assert access["max-age"] == 1800
        assert access["path"] == "/"
        assert access["httponly"] is True
        assert access["secure"] is True
        assert access["samesite"] == "Lax"
        assert response.cookies["refresh_token"]["max-age"] == 604800

    def test_secure_and_samesite_come_from_settings(self, settings):
        settings.AUTH_COOKIE_SECURE = False
        settings.AUTH_COOKIE_SAMESITE = "Strict"
        access = relayed(EXPRESS_PAIR).cookies["access_token"]
        assert access["secure"] == ""
        assert access["samesite"] == "Strict"

    def test_httponly_is_forced_even_when_the_backend_forgets_it(self):
        response = relayed(["access_token=v; Max-Age=60; Path=/"])
        assert response.cookies["access_token"]["httponly"] is True

    def test_backend_domain_is_dropped(self):
        response = relayed([express_cookie("access_token", "v", 60, Domain="api.example.com")])
        assert response.cookies["access_token"]["domain"] == ""

    def test_domain_setting_replaces_it(self, settings):
        settings.AUTH_COOKIE_DOMAIN = ".example.org"
        response = relayed([express_cookie("access_token", "v", 60, Domain="api.example.com")])
        assert response.cookies["access_token"]["domain"] == ".example.org"

    @pytest.mark.parametrize(
        "header",
        [
            "refresh_token=; Max-Age=0; Path=/",
            "refresh_token=gone; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "refresh_token=gone; Max-Age=-1",
        ],
    )
    def test_max_age_zero_or_past_expires_deletes(self, header):
        morsel = relayed([header]).cookies["refresh_token"]
        assert morsel.value == ""
        assert morsel["max-age"] == 0
        assert "1970" in morsel["expires"]

    def test_garbage_header_is_skipped_and_logged_without_its_value(self, caplog):
        caplog.set_level(logging.WARNING, logger="accounts.cookies")
        response = relayed(["access_token=top secret; Path=/", EXPRESS_PAIR[1]])
        assert set(response.cookies) == {"refresh_token"}
        assert "Skipped a Set-Cookie header" in caplog.text
        assert "top secret" not in caplog.text

    @pytest.mark.parametrize("name", ["sessionid", "csrftoken", "tracking"])
    def test_never_sets_the_apps_own_or_unknown_cookies(self, name, caplog):
        response = relayed([f"{name}=attacker; Max-Age=600; Path=/", EXPRESS_PAIR[0]])
        assert name not in response.cookies
        assert "access_token" in response.cookies
        assert "attacker" not in caplog.text

    def test_session_cookie_stays_protected_when_misconfigured(self, settings):
        settings.AUTH_ACCESS_COOKIE = "sessionid"
        response = relayed(["sessionid=attacker; Max-Age=600; Path=/"])
        assert "sessionid" not in response.cookies

    def test_relay_without_queued_cookies_touches_nothing(self):
        response = HttpResponse()
        cookies.relay(RequestFactory().get("/"), response)
        assert not response.cookies
