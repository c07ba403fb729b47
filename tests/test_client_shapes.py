"""The client against other backend shapes: tokens in JSON bodies, a clock that is off."""

import json
import time
from email.utils import formatdate

import pytest

from accounts import clock
from accounts.client import AuthApiClient, Tokens
from accounts.exceptions import BackendProtocolError
from accounts.pacing import AtMostEvery
from accounts.record import access_expiry
from tests import fakes


@pytest.fixture
def body(settings, backend):
    settings.AUTH_BACKEND_TOKEN_TRANSPORT = "body"
    return backend


def bodies(rsps, path) -> list[dict]:
    return [json.loads(c.request.body) for c in rsps.calls if c.request.url.endswith(path)]


class TestTokensInTheBody:
    def test_login_reads_the_pair_from_json_with_lifetimes_from_exp(self, body):
        access = fakes.access_jwt(ttl=600, lifetime=600)
        body.post(f"{fakes.BASE}/auth/login", json={"accessToken": access, "refreshToken": "r-1"})
        issued = {c.name: c for c in AuthApiClient().login("a@example.com", "pw")}
        assert issued["access_token"].value == access
        assert 595 <= issued["access_token"].max_age <= 600
        assert issued["refresh_token"].value == "r-1"
        assert issued["refresh_token"].max_age == 604800  # AUTH_BODY_REFRESH_LIFETIME

    def test_refresh_sends_the_token_in_the_body_and_no_cookie(self, body, settings):
        settings.AUTH_BODY_ACCESS_FIELD = "access_token"
        settings.AUTH_BODY_REFRESH_FIELD = "refresh_token"
        body.post(
            f"{fakes.BASE}/auth/refresh", json={"access_token": "opaque-a", "refresh_token": "r-2"}
        )
        issued = {c.name: c for c in AuthApiClient().refresh("r-1")}
        assert bodies(body, "/auth/refresh") == [{"refresh_token": "r-1"}]
        sent = body.calls[0].request.headers
        assert "Cookie" not in sent and "Authorization" not in sent
        assert issued["access_token"].value == "opaque-a"
        assert issued["access_token"].max_age == 1800  # AUTH_BODY_ACCESS_LIFETIME: no exp
        assert issued["refresh_token"].value == "r-2"

    def test_a_field_left_out_is_skipped_and_the_next_one_still_read(self, body):
        from accounts.client import BackendAnswer

        answer = BackendAnswer(200, b'{"refreshToken": "r-2"}', {}, [])
        assert [(c.name, c.value) for c in AuthApiClient().tokens_from(answer, "refresh")] == [
            ("refresh_token", "r-2")
        ]

    def test_a_refresh_without_rotation_hands_out_the_access_token_only(self, body):
        body.post(f"{fakes.BASE}/auth/refresh", json={"accessToken": fakes.access_jwt()})
        assert [c.name for c in AuthApiClient().refresh("r-1")] == ["access_token"]

    def test_me_and_logout_use_bearer_and_the_body(self, body):
        body.get(f"{fakes.BASE}/users/me", json=fakes.PROFILES["admin"])
        body.post(f"{fakes.BASE}/auth/logout", json={"ok": True})
        client = AuthApiClient()
        client.me(Tokens(access="a-1", refresh="r-1"))
        client.logout(Tokens(access="a-1", refresh="r-1"))
        me, logout = (call.request for call in body.calls)
        assert me.headers["Authorization"] == "Bearer a-1" and "Cookie" not in me.headers
        assert logout.headers["Authorization"] == "Bearer a-1"
        assert json.loads(logout.body) == {"refreshToken": "r-1"}

    @pytest.mark.parametrize(
        "answer",
        [
            {"json": {"ok": True}},
            {"json": {"accessToken": 42, "refreshToken": "r"}},
            {"json": {"accessToken": "has space", "refreshToken": "r"}},
            {"json": {"accessToken": "a", "refreshToken": "has space"}},
            {"json": {"accessToken": "", "refreshToken": "r"}},
            {"json": ["accessToken"]},
            {"body": "<html>not json</html>"},
        ],
    )
    def test_an_unusable_answer_is_a_protocol_error_that_may_have_spent_the_token(
        self, body, answer
    ):
        body.post(f"{fakes.BASE}/auth/refresh", **answer)
        with pytest.raises(BackendProtocolError) as info:
            AuthApiClient().refresh("r-1")
        assert info.value.maybe_processed is True
        assert "POST /auth/refresh " in str(info.value)
        assert "r-1" not in str(info.value)

    def test_json_token_fields_in_a_proxied_answer_are_just_data(self, body):
        body.get(f"{fakes.BASE}/users/list", json={"accessToken": "not ours"})
        answer = AuthApiClient().request(
            "GET", "/users/list", auth=Tokens(access="a-1"), exact=True
        )
        assert answer.cookies == []


class TestClockSkew:
    def dated(self, backend, offset: float, path="/users/me"):
        backend.get(
            f"{fakes.BASE}{path}",
            json=fakes.PROFILES["admin"],
            headers={"Date": formatdate(time.time() + offset, usegmt=True)},
        )
        AuthApiClient().me(Tokens(access="a-1"))

    @pytest.mark.parametrize("offset", [300, -300, 90])
    def test_the_date_header_measures_the_skew(self, backend, offset):
        self.dated(backend, offset)
        assert abs(clock.skew() - offset) < 2

    def test_a_second_off_is_no_skew(self, backend):
        self.dated(backend, 1)
        assert clock.skew() == 0.0

    @pytest.mark.parametrize("date", [None, "garbage", "Mon, 99 Foo 9999 99:99:99 GMT"])
    def test_a_missing_or_unreadable_date_changes_nothing(self, backend, monkeypatch, date):
        monkeypatch.setattr(clock, "_skew", 42.0)
        headers = {"Date": date} if date else {}
        backend.get(f"{fakes.BASE}/users/me", json=fakes.PROFILES["admin"], headers=headers)
        AuthApiClient().me(Tokens(access="a-1"))
        assert clock.skew() == 42.0

    def test_a_jwt_exp_from_a_clock_behind_is_read_on_ours(self, monkeypatch):
        # The backend is five minutes behind: its token for 60 s says exp = now - 240.
        monkeypatch.setattr(clock, "_skew", -300.0)
        token = fakes.access_jwt(ttl=-240, lifetime=60)
        expires = access_expiry(None, token)
        assert 55 <= expires - time.time() <= 61

    def test_a_cookie_expires_from_a_clock_ahead_is_read_on_ours(self, backend):
        ahead = 300
        backend.get(
            f"{fakes.BASE}/users/me",
            json=fakes.PROFILES["admin"],
            headers={"Date": formatdate(time.time() + ahead, usegmt=True)},
        )
        AuthApiClient().me(Tokens(access="a-1"))
        expires_on_backend_clock = formatdate(time.time() + ahead + 60, usegmt=True)
        backend.post(
            f"{fakes.BASE}/auth/refresh",
            headers=[
                ("Date", formatdate(time.time() + ahead, usegmt=True)),
                ("Set-Cookie", f"access_token=a-2; Path=/; Expires={expires_on_backend_clock}"),
                ("Set-Cookie", "refresh_token=r-2; Max-Age=600; Path=/"),
            ],
        )
        issued = {c.name: c for c in AuthApiClient().refresh("r-1")}
        left = issued["access_token"].expires_at.timestamp() - time.time()
        assert 55 <= left <= 62
        assert 595 <= issued["refresh_token"].expires_at.timestamp() - time.time() <= 600


def test_body_is_a_known_transport(settings):
    from accounts.checks import check_auth_settings

    settings.AUTH_BACKEND_TOKEN_TRANSPORT = "body"
    assert "accounts.E003" not in [e.id for e in check_auth_settings()]
    settings.AUTH_BACKEND_TOKEN_TRANSPORT = "json"
    assert "accounts.E003" in [e.id for e in check_auth_settings()]


@pytest.mark.parametrize(
    ("overrides", "needs"),
    [
        ({"AUTH_ACCESS_COOKIE": "__Secure-a"}, "AUTH_COOKIE_SECURE=True"),
        (
            {"AUTH_REFRESH_COOKIE": "__Host-r", "AUTH_COOKIE_PATH": "/app/"},
            "AUTH_COOKIE_SECURE=True, AUTH_COOKIE_PATH=/",
        ),
        (
            {"AUTH_REFRESH_COOKIE": "__Host-r", "AUTH_COOKIE_DOMAIN": "example.com"},
            "no AUTH_COOKIE_DOMAIN",
        ),
    ],
)
def test_a_prefixed_cookie_name_its_attributes_break_is_an_error(settings, overrides, needs):
    from accounts.checks import check_auth_settings

    settings.AUTH_COOKIE_SECURE = False
    for name, value in overrides.items():
        setattr(settings, name, value)
    errors = [e for e in check_auth_settings() if e.id == "accounts.E008"]
    assert len(errors) == 1 and needs in errors[0].msg
    settings.AUTH_COOKIE_SECURE = True
    settings.AUTH_COOKIE_PATH, settings.AUTH_COOKIE_DOMAIN = "/", None
    assert [e for e in check_auth_settings() if e.id == "accounts.E008"] == []


class TestClockObserve:
    """accounts/clock.py on exact timestamps (`Date` has whole seconds)."""

    DATE = "Thu, 01 Jan 1970 00:16:40 GMT"  # 1000 s after the epoch

    @pytest.mark.parametrize(
        ("local", "skew"),
        [
            (998.4, 2.1),  # Date truncates: the backend was at 1000.5 on average
            (998.5, 2.0),  # exactly SIGNIFICANT counts
            (998.6, 0.0),  # under it: whole-second noise
            (1002.5, -2.0),
        ],
    )
    def test_the_skew_is_measured_against_the_middle_of_the_call(self, local, skew):
        clock.observe(self.DATE, sent_at=local - 0.1, received_at=local + 0.1)
        assert clock.skew() == pytest.approx(skew)

    @pytest.mark.parametrize(("took", "skew"), [(2.0, 5.0), (2.1, 0.0), (8.0, 0.0)])
    def test_a_slow_answer_measures_nothing(self, monkeypatch, took, skew):
        """A `Date` written somewhere in a long call says nothing of the clock; the last
        measurement stands."""
        monkeypatch.setattr(clock, "_skew", 0.0)
        local = 1000.5 - 5.0 - took / 2  # the middle of the call is 5 s behind the Date
        clock.observe(self.DATE, sent_at=local, received_at=local + took)
        assert clock.skew() == pytest.approx(skew)

    def test_a_skew_is_logged_once_a_minute_and_none_is_not(self, caplog, monkeypatch):
        monkeypatch.setattr(clock, "_report", AtMostEvery(60.0))
        with caplog.at_level("WARNING", logger="accounts.clock"):
            clock.observe(self.DATE, sent_at=1000.5, received_at=1000.5)
            assert caplog.messages == []
            clock.observe(self.DATE, sent_at=700.5, received_at=700.5)
            clock.observe(self.DATE, sent_at=700.5, received_at=700.5)
        assert caplog.messages == [
            "The auth backend's clock is +300 s off this server's; token expiries are read "
            "on this server's clock"
        ]


def test_a_body_token_already_expired_lives_zero_seconds():
    from accounts.client import _lifetime

    assert _lifetime(fakes.access_jwt(ttl=-30), 1800) == 0
    assert _lifetime("opaque", 1800) == 1800
