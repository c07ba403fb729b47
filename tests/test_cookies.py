"""The cookie relay: parsing each backend Set-Cookie and writing it on our response."""

import logging
from datetime import UTC, datetime

import pytest
from django.http import HttpResponse

from accounts import cookies
from accounts.cookies import CookieParseError, parse_set_cookie, parse_set_cookies
from tests.fakes import express_cookie

EXPRESS_PAIR = [
    express_cookie("access_token", "aaa.bbb.ccc", 1800),
    express_cookie("refresh_token", "r1-token", 604800),
]


def written(headers) -> HttpResponse:
    response = HttpResponse()
    cookies.write(response, parse_set_cookies(headers))
    return response


def set_cookie_lines(response) -> list[str]:
    """Every Set-Cookie header the response sends, one per morsel."""
    return [morsel.OutputString() for morsel in response.cookies.values()]


class TestParse:
    def test_expires_with_a_comma_stays_inside_one_cookie(self):
        cookie = parse_set_cookie(EXPRESS_PAIR[0])
        assert (cookie.name, cookie.value, cookie.max_age, cookie.path) == (
            "access_token",
            "aaa.bbb.ccc",
            1800,
            "/",
        )
        assert cookie.expires.tzinfo is not None

    def test_attribute_names_are_case_insensitive(self):
        cookie = parse_set_cookie(
            "access_token=v; mAx-AgE=60; PATH=/app; eXpIrEs=Fri, 27 Nov 2026 10:31:00 GMT; "
            "HTTPONLY; secure; SAMESITE=none"
        )
        assert cookie.max_age == 60
        assert cookie.path == "/app"
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
        assert str(info.value) == "invalid characters in the value of access_token"
        with pytest.raises(CookieParseError) as info:
            parse_set_cookie("access_token=secret; Expires=secret date")
        assert str(info.value) == "unreadable Expires date"

    def test_an_expires_without_a_zone_is_utc(self):
        cookie = parse_set_cookie("a=b; Expires=Thu, 01 Jan 2099 00:00:00 -0000")
        assert cookie.expires == datetime(2099, 1, 1, tzinfo=UTC)
        assert cookie.deletes is False
        zoned = parse_set_cookie("a=b; Expires=Thu, 01 Jan 2099 02:00:00 +0200")
        assert zoned.expires == datetime(2099, 1, 1, tzinfo=UTC)  # the same moment, kept

    def test_a_relative_path_is_ignored(self):
        assert parse_set_cookie("a=b; Path=relative").path == "/"
        assert parse_set_cookie('a="quoted"').value == "quoted"

    def test_expiry_from_max_age_or_expires(self):
        cookie = parse_set_cookie("a=b; Max-Age=60")
        assert abs(cookie.expires_at.timestamp() - datetime.now(UTC).timestamp() - 60) < 2
        dated = parse_set_cookie("a=b; Expires=Thu, 01 Jan 2099 00:00:00 GMT")
        assert dated.expires_at == datetime(2099, 1, 1, tzinfo=UTC)
        assert parse_set_cookie("a=b").expires_at is None
        assert parse_set_cookie("a=b").deletes is False

    def test_repr_hides_the_value(self):
        cookie = parse_set_cookie("access_token=secret; Max-Age=60")
        assert repr(cookie) == "BackendCookie(name='access_token', value=<hidden>, max_age=60)"

    def test_unusable_headers_are_skipped_and_logged_without_their_value(self, caplog):
        caplog.set_level(logging.WARNING, logger="accounts.cookies")
        parsed = parse_set_cookies(["access_token=top secret; Path=/", EXPRESS_PAIR[1]])
        assert [c.name for c in parsed] == ["refresh_token"]
        assert [r.getMessage() for r in caplog.records] == [
            "Skipped a Set-Cookie header from the auth backend: "
            "invalid characters in the value of access_token"
        ]


class TestWrite:
    """`cookies.write`: the backend's token cookies on our response, on our terms."""

    def test_two_express_headers_become_two_cookies(self, settings):
        settings.AUTH_COOKIE_SECURE = True
        settings.AUTH_COOKIE_SAMESITE = "Lax"
        response = written(EXPRESS_PAIR)

        assert set(response.cookies) == {"access_token", "refresh_token"}
        access = response.cookies["access_token"]
        assert access.value == "aaa.bbb.ccc"
        assert access["max-age"] == 1800
        assert access["path"] == "/"
        assert access["httponly"] is True
        assert access["secure"] is True
        assert access["samesite"] == "Lax"
        assert response.cookies["refresh_token"]["max-age"] == 604800

    @pytest.mark.parametrize("cookie_path", ["/", "/app"])
    def test_written_at_the_cookie_path_whatever_the_backends_path(self, settings, cookie_path):
        settings.AUTH_COOKIE_PATH = cookie_path
        header = "refresh_token=r1; Max-Age=60; Path=/auth/refresh; HttpOnly"
        assert written([header]).cookies["refresh_token"]["path"] == cookie_path

    def test_secure_and_samesite_come_from_settings(self, settings):
        settings.AUTH_COOKIE_SECURE = False
        settings.AUTH_COOKIE_SAMESITE = "Strict"
        access = written(EXPRESS_PAIR).cookies["access_token"]
        assert access["secure"] == ""
        assert access["samesite"] == "Strict"
        settings.AUTH_COOKIE_SAMESITE = ""
        assert written(EXPRESS_PAIR).cookies["access_token"]["samesite"] == ""

    def test_httponly_is_forced_even_when_the_backend_forgets_it(self):
        response = written(["access_token=v; Max-Age=60; Path=/"])
        assert response.cookies["access_token"]["httponly"] is True

    def test_an_expires_date_without_max_age_is_kept(self):
        response = written(["access_token=v; Expires=Thu, 01 Jan 2099 00:00:00 GMT"])
        morsel = response.cookies["access_token"]
        assert morsel["expires"] == "Thu, 01 Jan 2099 00:00:00 GMT"

    def test_backend_domain_is_dropped(self):
        response = written([express_cookie("access_token", "v", 60, Domain="api.example.com")])
        assert response.cookies["access_token"]["domain"] == ""

    def test_domain_setting_replaces_it(self, settings):
        settings.AUTH_COOKIE_DOMAIN = ".example.org"
        response = written([express_cookie("access_token", "v", 60, Domain="api.example.com")])
        assert response.cookies["access_token"]["domain"] == ".example.org"

    @pytest.mark.parametrize(
        "header",
        [
            "refresh_token=; Max-Age=0; Path=/auth/refresh",
            "refresh_token=gone; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "refresh_token=gone; Max-Age=-1",
        ],
    )
    def test_max_age_zero_or_past_expires_deletes_at_the_cookie_path(self, header):
        response = written([header])
        morsel = response.cookies["refresh_token"]
        assert morsel.value == ""
        assert morsel["max-age"] == 0
        assert "1970" in morsel["expires"]
        assert set_cookie_lines(response) == [
            'refresh_token=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; '
            "SameSite=Lax"
        ]

    @pytest.mark.parametrize("name", ["sessionid", "csrftoken", "tracking"])
    def test_never_sets_the_apps_own_or_unknown_cookies(self, name, caplog):
        caplog.set_level(logging.WARNING, logger="accounts.cookies")
        response = written([f"{name}=attacker; Max-Age=600; Path=/", EXPRESS_PAIR[0]])
        assert set(response.cookies) == {"access_token"}
        assert [r.getMessage() for r in caplog.records] == [
            f"Refused to relay the auth backend's cookie {name!r}"
        ]

    @pytest.mark.parametrize("name", ["sessionid", "csrftoken"])
    def test_the_apps_own_cookies_stay_protected_when_misconfigured(self, settings, name):
        settings.AUTH_ACCESS_COOKIE = name
        response = written([f"{name}=attacker; Max-Age=600; Path=/"])
        assert name not in response.cookies

    def test_nothing_to_write_touches_nothing(self):
        response = HttpResponse()
        cookies.write(response, [])
        assert not response.cookies


class TestDelete:
    """`cookies.delete`: one Set-Cookie per name and path a copy may live at."""

    def test_at_the_cookie_path(self):
        response = HttpResponse()
        cookies.delete(response, ["access_token", "refresh_token"])
        assert set_cookie_lines(response) == [
            f'{name}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax'
            for name in ("access_token", "refresh_token")
        ]

    def test_at_every_other_path_once(self, settings):
        settings.AUTH_COOKIE_PATH = "/app"
        response = HttpResponse()
        cookies.delete(response, ["access_token"], ["/auth/refresh", "/", "/app"])
        lines = set_cookie_lines(response)
        paths = [line.split("Path=")[1].split(";")[0] for line in lines]
        assert paths == ["/app", "/", "/auth/refresh"]
        assert all(line.startswith('access_token="";') and "Max-Age=0" in line for line in lines)

    def test_default_path_with_backend_paths(self):
        response = HttpResponse()
        cookies.delete(response, ["refresh_token"], ("/auth/refresh",))
        lines = set_cookie_lines(response)
        assert [line.split("Path=")[1].split(";")[0] for line in lines] == ["/", "/auth/refresh"]

    def test_domain_and_samesite_from_settings_on_every_copy(self, settings):
        settings.AUTH_COOKIE_DOMAIN = ".example.org"
        settings.AUTH_COOKIE_SAMESITE = "Strict"
        response = HttpResponse()
        cookies.delete(response, ["access_token"], ["/x"])
        lines = set_cookie_lines(response)
        assert len(lines) == 2
        for line in lines:
            assert "Domain=.example.org" in line
            assert "SameSite=Strict" in line


class TestParseEdges:
    def test_a_value_may_hold_equals_signs(self):
        """Base64 padding: the name ends at the first `=`, the value keeps the rest."""
        cookie = parse_set_cookie("access_token=abc==; Path=/x=y")
        assert (cookie.name, cookie.value, cookie.path) == ("access_token", "abc==", "/x=y")

    def test_only_the_quotes_around_a_value_are_dropped(self):
        assert parse_set_cookie('refresh_token="XabcX"').value == "XabcX"

    def test_a_header_of_exactly_the_limit_is_read(self):
        name = "access_token="
        header = name + "a" * (cookies.MAX_COOKIE_LENGTH - len(name))
        assert parse_set_cookie(header).value == "a" * (cookies.MAX_COOKIE_LENGTH - len(name))
        with pytest.raises(CookieParseError, match="^header too long$"):
            parse_set_cookie(header + "a")

    @pytest.mark.parametrize(
        ("header", "message"),
        [
            ("=value", "missing or invalid cookie name"),
            ("no-equals-sign", "missing or invalid cookie name"),
            ("access_token=a b", "invalid characters in the value of access_token"),
            ("access_token=a; Max-Age=soon", "invalid Max-Age on access_token"),
            ("access_token=a; Expires=never", "unreadable Expires date"),
        ],
    )
    def test_each_refusal_says_why_without_the_value(self, header, message, caplog):
        with pytest.raises(CookieParseError, match=f"^{message}$"):
            parse_set_cookie(header)
        assert parse_set_cookies([header]) == []
        assert caplog.messages == [f"Skipped a Set-Cookie header from the auth backend: {message}"]


def test_a_deleted_cookie_does_not_stop_the_ones_after_it():
    response = written(
        ["access_token=; Max-Age=0; Path=/", "refresh_token=r-2; Max-Age=60; Path=/"]
    )
    assert response.cookies["access_token"]["max-age"] == 0
    assert response.cookies["refresh_token"].value == "r-2"


class TestBrowserLimit:
    """`too_large`: the token cookies a browser would drop (over 4096 bytes with attributes)."""

    @staticmethod
    def cookie_of_size(size: int, name: str = "access_token") -> cookies.BackendCookie:
        one = cookies.relayed_size(cookies.BackendCookie(name=name, value="x", max_age=60))
        overhead = one - 1  # an empty value would be rendered quoted
        return cookies.BackendCookie(name=name, value="x" * (size - overhead), max_age=60)

    def test_exactly_the_limit_is_kept_and_one_byte_more_is_not(self):
        at_limit, over = self.cookie_of_size(4096), self.cookie_of_size(4097)

        assert cookies.relayed_size(at_limit) == 4096
        assert cookies.too_large([at_limit]) == []
        assert cookies.too_large([over]) == [("access_token", 4097)]

    def test_only_token_cookies_that_are_set_count(self):
        other = self.cookie_of_size(5000, name="tracking")
        deleting = cookies.BackendCookie(name="refresh_token", value="x" * 5000, max_age=0)

        assert cookies.too_large([other, deleting]) == []
