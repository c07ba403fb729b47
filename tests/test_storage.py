"""AUTH_TOKEN_STORAGE in process: where the pair goes, moving between the modes, a rotated
SECRET_KEY, and the cookie size guard (accounts/state.py, accounts/vault.py)."""

import json
import logging
import time
from dataclasses import replace

import jwt
import pytest
from django.contrib.auth import SESSION_KEY as USER_KEY

from accounts import vault
from accounts.client import Tokens
from accounts.cookies import BackendCookie, relayed_size
from accounts.models import Session
from accounts.state import TokenState
from tests import fakes

LOGIN = "/accounts/login/"
FORM = {"email": "admin@example.com", "password": "admin-demo-pass"}
TOKEN_COOKIES = ("access_token", "refresh_token")


@pytest.fixture
def session_mode(settings):
    settings.AUTH_TOKEN_STORAGE = "session"


def sealed(client) -> Tokens | None:
    return vault.tokens_of(client.session)


def refresh_calls(backend) -> list[str]:
    return [fakes.sent_cookie(c, "refresh_token") for c in fakes.calls_to(backend, "/auth/refresh")]


def assert_deletes_token_cookies(response):
    for name in TOKEN_COOKIES:
        assert response.cookies[name].value == ""
        assert response.cookies[name]["max-age"] == 0


def huge_access_token(size: int = 5000) -> str:
    return jwt.encode({"sub": "1", "pad": "x" * size}, fakes.JWT_KEY, algorithm="HS256")


class TestSessionMode:
    def test_sign_in_sets_no_token_cookie_and_seals_the_pair(
        self, client, db, locmem_cache, backend, session_mode
    ):
        access = fakes.access_jwt()
        fakes.stub_login(backend, headers=fakes.token_headers(access, "refresh-1"))
        fakes.stub_me(backend)

        response = client.post(LOGIN, FORM)

        assert response.status_code == 302
        assert not set(TOKEN_COOKIES) & set(response.cookies)
        assert fakes.record_of(client).storage == "session"
        assert sealed(client) == Tokens(access=access, refresh="refresh-1")
        # At rest the session row holds neither token in the clear.
        row = Session.objects.get(session_key=client.session.session_key)
        stored = json.dumps(Session.get_session_store_class()().decode(row.session_data))
        assert access not in stored and "refresh-1" not in stored

    def test_an_expired_pair_is_refreshed_from_the_session_without_a_cookie(
        self, client, db, settle, backend, session_mode
    ):
        fakes.sign_in_client(client, access=fakes.access_jwt(ttl=-5), storage="session")
        new_access = fakes.access_jwt()
        fakes.stub_refresh(backend, access=new_access, refresh="refresh-2")
        fakes.stub_me(backend)

        response = client.get("/api/users/me")  # waits for the new pair

        assert response.status_code == 200
        assert refresh_calls(backend) == ["refresh-1"]
        assert not set(TOKEN_COOKIES) & set(response.cookies)
        assert sealed(client) == Tokens(access=new_access, refresh="refresh-2")
        assert client.get("/dashboard/").status_code == 200
        assert refresh_calls(backend) == ["refresh-1"]

    def test_token_cookies_the_browser_sends_are_ignored_and_deleted(
        self, client, db, settle, backend, session_mode
    ):
        access = fakes.access_jwt()
        fakes.sign_in_client(client, access=access, storage="session")
        client.cookies["access_token"] = fakes.access_jwt(sub="2")
        client.cookies["refresh_token"] = "someone-elses"
        backend.get(f"{fakes.BASE}/users/me", json=fakes.PROFILES["admin"])

        response = client.get("/api/users/me")

        assert response.status_code == 200
        assert fakes.sent_token(fakes.calls_to(backend, "/users/me")[0].request) == access
        assert_deletes_token_cookies(response)
        assert client.get("/dashboard/").status_code == 200

    def test_sign_out_revokes_the_sealed_pair(self, client, db, settle, backend, session_mode):
        access = fakes.access_jwt()
        fakes.sign_in_client(client, access=access, storage="session")
        fakes.stub_logout(backend)

        client.post("/accounts/logout/")

        (call,) = fakes.calls_to(backend, "/auth/logout")
        assert fakes.sent_cookie(call, "refresh_token") == "refresh-1"
        assert fakes.sent_token(call.request) == access
        assert USER_KEY not in client.session

    def test_an_unreadable_sealed_pair_ends_the_session(
        self, client, db, settle, backend, session_mode
    ):
        fakes.sign_in_client(client, access=fakes.access_jwt(), storage="session")
        session = client.session
        session[vault.SESSION_KEY] = "not-a-fernet-token"
        session.save()

        response = client.get("/dashboard/")

        fakes.assert_signed_out(client, response)
        assert fakes.calls_to(backend, "/auth/refresh") == []


class TestSwitchingModes:
    """A running deployment changes AUTH_TOKEN_STORAGE: each session moves at its next request."""

    def test_a_pair_in_cookies_moves_into_the_session(self, client, db, settle, backend, settings):
        access = fakes.access_jwt()
        fakes.sign_in_client(client, access=access)
        settings.AUTH_TOKEN_STORAGE = "session"

        response = client.get("/dashboard/")

        assert response.status_code == 200
        assert_deletes_token_cookies(response)
        assert fakes.record_of(client).storage == "session"
        assert sealed(client) == Tokens(access=access, refresh="refresh-1")
        assert client.get("/dashboard/").status_code == 200  # the cookies are gone now
        assert len(backend.calls) == 0

    def test_a_pair_in_the_session_moves_into_cookies(self, client, db, settle, backend, settings):
        access = fakes.access_jwt(ttl=1000)
        fakes.sign_in_client(client, access=access, storage="session")
        settings.AUTH_TOKEN_STORAGE = "cookies"

        response = client.get("/dashboard/")

        assert response.status_code == 200
        assert response.cookies["access_token"].value == access
        assert response.cookies["refresh_token"].value == "refresh-1"
        assert 990 <= response.cookies["access_token"]["max-age"] <= 1000
        assert response.cookies["refresh_token"]["httponly"] is True
        assert fakes.record_of(client).storage == "cookies"
        again = client.get("/dashboard/")
        assert again.status_code == 200
        assert not set(TOKEN_COOKIES) & set(again.cookies)
        assert len(backend.calls) == 0

    def test_a_pair_without_known_expiries_moves_into_session_cookies(
        self, client, db, settle, backend, settings
    ):
        fakes.sign_in_client(client, access=fakes.access_jwt(), storage="session")
        fakes.edit_record(client, access_expires_at=None, refresh_expires_at=None)
        settings.AUTH_TOKEN_STORAGE = "cookies"

        response = client.get("/dashboard/")

        assert response.status_code == 200
        for name in TOKEN_COOKIES:
            assert response.cookies[name].value
            assert response.cookies[name]["max-age"] == ""  # a browser-session cookie

    def test_a_pair_about_to_expire_is_handed_over_for_at_least_a_second(self, rf, db, settings):
        request = fakes.direct_request(rf)
        state = TokenState.of(request)
        record = state.load()
        state.record = replace(record, access_expires_at=time.time() - 5)

        by_name = {c.name: c for c in state.delivery._pair_cookies()}

        assert by_name["access_token"].max_age == 1

    def test_a_session_moved_into_cookies_still_needs_them(
        self, client, db, settle, backend, settings
    ):
        fakes.sign_in_client(client, access=fakes.access_jwt(), storage="session")
        settings.AUTH_TOKEN_STORAGE = "cookies"
        client.get("/dashboard/")
        for name in TOKEN_COOKIES:
            del client.cookies[name]

        response = client.get("/dashboard/")

        fakes.assert_signed_out(client, response)

    def test_cookie_mode_keeps_the_pair_sealed_for_revocation_from_elsewhere(
        self, client, db, settle, backend
    ):
        access = fakes.access_jwt(ttl=-5)
        fakes.sign_in_client(client, access=access)
        new_access = fakes.access_jwt()
        fakes.stub_refresh(backend, access=new_access, refresh="refresh-2")
        fakes.stub_me(backend)

        response = client.get("/api/users/me")  # waits for the new pair

        assert response.cookies["refresh_token"].value == "refresh-2"
        assert sealed(client) == Tokens(access=new_access, refresh="refresh-2")


class TestRotatedSecretKey:
    def test_a_session_mode_user_stays_signed_in_and_is_resealed_under_the_new_key(
        self, client, db, locmem_cache, backend, settle, settings, session_mode
    ):
        fakes.stub_login(backend, headers=fakes.token_headers(fakes.access_jwt(), "refresh-1"))
        fakes.stub_me(backend)
        assert client.post(LOGIN, FORM).status_code == 302
        old = settings.SECRET_KEY
        settings.SECRET_KEY = "a-brand-new-secret-key-" + "x" * 40
        settings.SECRET_KEY_FALLBACKS = [old]

        assert client.get("/dashboard/").status_code == 200
        assert backend.calls[-1].request.url.endswith("/users/me")  # no refresh was needed

        fakes.edit_record(client, access_expires_at=0.0)
        fakes.stub_refresh(backend, refresh="refresh-2")
        assert client.get("/api/users/me").status_code == 200  # waits for the new pair
        assert refresh_calls(backend) == ["refresh-1"]
        settings.SECRET_KEY_FALLBACKS = []
        assert sealed(client).refresh == "refresh-2"

    def test_a_pair_sealed_for_another_purpose_does_not_open(self):
        from accounts import revocations

        assert vault.unseal(revocations.seal(Tokens(access="a", refresh="r"))) is None

    def test_a_sealed_pair_without_a_refresh_token_is_none(self):
        assert vault.unseal(vault.seal(Tokens(access="a", refresh=None))) is None

    def test_a_secret_key_no_longer_listed_opens_nothing(self, settings):
        sealed_value = vault.seal(Tokens(access="a", refresh="r"))
        settings.SECRET_KEY = "another-secret-key-" + "y" * 40

        assert vault.unseal(sealed_value) is None


@pytest.mark.parametrize(
    "value", [None, "", 42, "garbage", vault.seal.__name__], ids=["none", "empty", "int", "x", "y"]
)
def test_unseal_refuses_what_is_not_a_sealed_pair(value):
    assert vault.unseal(value) is None


class TestCookieSizeGuard:
    def test_sign_in_with_a_token_too_large_for_a_cookie_is_a_clear_page(
        self, client, db, locmem_cache, backend, caplog
    ):
        fakes.stub_login(backend, headers=fakes.token_headers(huge_access_token(), "refresh-1"))
        fakes.stub_me(backend)
        fakes.stub_logout(backend)

        with caplog.at_level(logging.ERROR, logger="accounts.backends"):
            response = client.post(LOGIN, FORM)

        assert response.status_code == 502
        assert "too large for your browser" in response.content.decode()
        assert USER_KEY not in client.session
        assert not set(TOKEN_COOKIES) & set(response.cookies)
        assert len(fakes.calls_to(backend, "/auth/logout")) == 1  # the tokens are revoked
        (message,) = [r.getMessage() for r in caplog.records if r.name == "accounts.backends"]
        assert "access_token cookie would be" in message
        assert "AUTH_TOKEN_STORAGE=session" in message
        size = int(message.split("would be ")[1].split()[0])
        assert size > 4096

    def test_the_same_token_signs_in_when_tokens_stay_in_the_session(
        self, client, db, locmem_cache, backend, session_mode
    ):
        huge = huge_access_token()
        fakes.stub_login(backend, headers=fakes.token_headers(huge, "refresh-1"))
        fakes.stub_me(backend)

        assert client.post(LOGIN, FORM).status_code == 302
        assert sealed(client).access == huge

    def test_a_cookie_just_under_the_limit_is_relayed(self, client, db, locmem_cache, backend):
        access = huge_access_token(size=2700)
        fakes.stub_login(backend, headers=fakes.token_headers(access, "refresh-1"))
        fakes.stub_me(backend)

        response = client.post(LOGIN, FORM)

        assert response.status_code == 302
        assert response.cookies["access_token"].value == access
        assert len(response.cookies["access_token"].OutputString()) <= 4096

    def test_a_refresh_too_large_for_a_cookie_keeps_the_pair_in_the_session(
        self, client, db, settle, backend, caplog
    ):
        fakes.sign_in_client(client, access=fakes.access_jwt(ttl=-5))
        huge = huge_access_token()
        fakes.stub_refresh(backend, access=huge, refresh="refresh-2")
        fakes.stub_me(backend)

        with caplog.at_level(logging.WARNING, logger="accounts.delivery"):
            response = client.get("/api/users/me")  # waits for the new pair
            said = [r.getMessage() for r in caplog.records if r.name == "accounts.delivery"]
            again = client.get("/dashboard/")

        assert response.status_code == 200
        assert_deletes_token_cookies(response)
        assert fakes.record_of(client).storage == "session"
        assert sealed(client) == Tokens(access=huge, refresh="refresh-2")
        size = relayed_size(BackendCookie(name="access_token", value=huge, max_age=1800))
        assert said == [
            f"The access_token cookie would be {size} bytes with its attributes; browsers drop "
            "cookies over 4096 bytes, so this session keeps its tokens on the server. Set "
            "AUTH_TOKEN_STORAGE=session to keep every session's tokens there."
        ]
        assert again.status_code == 200  # no cookies, still signed in
        assert refresh_calls(backend) == ["refresh-1"]
        later = [r for r in caplog.records if r.name == "accounts.delivery"]
        assert len(later) == 1, "said once for the session, not at every request"


@pytest.mark.parametrize(
    ("storage", "said"),
    [("cookies", "Both live in HttpOnly cookies"), ("session", "Both stay on the server")],
)
def test_the_dashboard_says_where_the_tokens_are(
    client, db, settle, backend, settings, storage, said
):
    settings.AUTH_TOKEN_STORAGE = storage
    fakes.sign_in_client(client, access=fakes.access_jwt(), storage=storage)

    page = client.get("/dashboard/").content.decode()

    assert said in page


def test_each_purpose_seals_under_a_key_of_its_own():
    """The pair sealed in a session and the pair queued for revocation are sealed under
    different keys derived from SECRET_KEY (HKDF `info`): one cannot open the other."""
    from cryptography.fernet import InvalidToken

    from accounts import revocations

    sealed = vault.seal(Tokens(access="a-1", refresh="r-1"))
    with pytest.raises(InvalidToken):
        revocations._sealer.open(sealed)
    opened = vault.Sealer(b"accounts.vault.tokens").open(sealed)
    assert opened == {"access": "a-1", "refresh": "r-1"}
